//! Follows the command/response conversation of one session, from the
//! message starts the [`Framer`](crate::packet::Framer)s report, so the
//! session knows when a command ends and whether a transaction is open.
//!
//! Client messages with sequence id 0 start commands (queued, since clients
//! may pipeline); other client messages are data (auth answers, LOCAL INFILE
//! content). Server messages advance the response state of the oldest
//! queued command: OK/ERR, result sets with or without EOF packets
//! (`CLIENT_DEPRECATE_EOF`), multi-result sets (`SERVER_MORE_RESULTS_EXISTS`),
//! LOCAL INFILE requests, COM_STMT_PREPARE's parameter and column
//! definitions, auth exchanges of COM_CHANGE_USER. The transaction state is
//! the `SERVER_STATUS_IN_TRANS` flag of the last OK/EOF. Pure: no IO.

use crate::packet::{MessageStart, MAX_PAYLOAD};
use crate::protocol::{
    com, eof_status, lenenc_int, ok_status, STATUS_IN_TRANS, STATUS_MORE_RESULTS,
};
use std::collections::VecDeque;

/// What a response looks like, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// OK / ERR / result set(s) / LOCAL INFILE (COM_QUERY, COM_STMT_EXECUTE).
    Results,
    /// COM_STMT_PREPARE.
    Prepare,
    /// Rows until EOF (COM_STMT_FETCH, COM_FIELD_LIST).
    RowsOnly,
    /// One packet of any kind (COM_STATISTICS).
    OnePacket,
    /// Auth exchange until OK or ERR (COM_CHANGE_USER).
    UntilOkErr,
    /// OK / ERR / EOF (everything else).
    Simple,
    /// Never ends (binlog dump).
    Stream,
}

fn kind_of(command: u8) -> Option<Kind> {
    Some(match command {
        com::STMT_SEND_LONG_DATA | com::STMT_CLOSE | com::QUIT => return None,
        com::QUERY | com::STMT_EXECUTE | com::STMT_BULK_EXECUTE => Kind::Results,
        com::STMT_PREPARE => Kind::Prepare,
        com::STMT_FETCH | com::FIELD_LIST => Kind::RowsOnly,
        com::STATISTICS => Kind::OnePacket,
        com::CHANGE_USER => Kind::UntilOkErr,
        com::BINLOG_DUMP | com::BINLOG_DUMP_GTID => Kind::Stream,
        _ => Kind::Simple,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resp {
    /// Expecting the first packet of a response (or of the next result).
    Start,
    /// `left` definition packets to go, then (classic EOF) one EOF, then `then`.
    Defs { left: u64, then: Then },
    /// One EOF packet ends a definition block, then `then`.
    DefsEof { then: Then },
    /// Rows until a terminator.
    Rows,
    /// After a LOCAL INFILE request: the next server packet is OK/ERR.
    Infile,
    /// Until OK or ERR.
    UntilOkErr,
    /// Endless.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Rows,
    /// Prepare: column definitions come next (count), or the end.
    PrepareColumns(u64),
    Done,
}

/// A command whose response just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Its command byte.
    pub command: u8,
    /// Whether the response ended in an ERR packet.
    pub error: bool,
}

/// The conversation state of one session.
#[derive(Debug, Clone)]
pub struct Tracker {
    deprecate_eof: bool,
    queue: VecDeque<(u8, Kind)>,
    resp: Resp,
    in_tx: bool,
    quit: bool,
}

impl Tracker {
    /// A tracker for a session whose negotiated capabilities include
    /// `CLIENT_DEPRECATE_EOF` or not.
    pub fn new(deprecate_eof: bool) -> Self {
        Tracker {
            deprecate_eof,
            queue: VecDeque::new(),
            resp: Resp::Start,
            in_tx: false,
            quit: false,
        }
    }

    /// True while a transaction is open on the server.
    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    /// True when no command is waiting for (the rest of) its response.
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// True after the client sent COM_QUIT.
    pub fn quit(&self) -> bool {
        self.quit
    }

    /// A message from the client. Returns the command byte when it starts a
    /// command.
    pub fn client_message(&mut self, m: &MessageStart) -> Option<u8> {
        if m.seq != 0 {
            return None;
        }
        let c = m.first_byte()?;
        if c == com::QUIT {
            self.quit = true;
        }
        if let Some(kind) = kind_of(c) {
            if self.queue.is_empty() {
                self.resp = match kind {
                    Kind::RowsOnly => Resp::Rows,
                    Kind::UntilOkErr => Resp::UntilOkErr,
                    Kind::Stream => Resp::Stream,
                    _ => Resp::Start,
                };
            }
            self.queue.push_back((c, kind));
        }
        Some(c)
    }

    /// A message from the server. Returns the command whose response it
    /// ended, if any.
    pub fn server_message(&mut self, m: &MessageStart) -> Option<Completed> {
        let &(command, kind) = self.queue.front()?;
        let p = m.prefix();
        let first = m.first_byte();
        let done = |error| Some(Completed { command, error });
        let result = match self.resp {
            Resp::Stream => None,
            Resp::UntilOkErr => match first {
                Some(0x00) => {
                    self.in_tx = false;
                    done(false)
                }
                Some(0xff) => done(true),
                _ => None,
            },
            Resp::Infile => match first {
                Some(0xff) => done(true),
                _ => self.after_ok(ok_status(p), command),
            },
            Resp::Start => match (kind, first) {
                (_, Some(0xff)) => done(true),
                (Kind::OnePacket, _) => done(false),
                (Kind::Simple, Some(0xfe)) => {
                    self.track_status(eof_status(p));
                    done(false)
                }
                (Kind::Simple, _) => {
                    if command == com::RESET_CONNECTION {
                        self.in_tx = false;
                    }
                    self.after_ok(ok_status(p), command)
                }
                (Kind::Prepare, Some(0x00)) => {
                    let num = |at: usize| {
                        p.get(at..at + 2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u64)
                    };
                    let cols = num(5).unwrap_or(0);
                    let params = num(7).unwrap_or(0);
                    if params > 0 {
                        self.resp = Resp::Defs {
                            left: params,
                            then: Then::PrepareColumns(cols),
                        };
                        None
                    } else if cols > 0 {
                        self.resp = Resp::Defs {
                            left: cols,
                            then: Then::Done,
                        };
                        None
                    } else {
                        done(false)
                    }
                }
                (_, Some(0x00)) => self.after_ok(ok_status(p), command),
                (Kind::Results, Some(0xfb)) => {
                    self.resp = Resp::Infile;
                    None
                }
                (_, _) => match lenenc_int(p) {
                    Some((0, _)) | None => done(false),
                    Some((n, _)) => {
                        self.resp = Resp::Defs {
                            left: n,
                            then: Then::Rows,
                        };
                        None
                    }
                },
            },
            Resp::Defs { left, then } => {
                if first == Some(0xff) {
                    done(true)
                } else if left > 1 {
                    self.resp = Resp::Defs {
                        left: left - 1,
                        then,
                    };
                    None
                } else if self.deprecate_eof {
                    self.enter(then, command)
                } else {
                    self.resp = Resp::DefsEof { then };
                    None
                }
            }
            Resp::DefsEof { then } => {
                if first == Some(0xff) {
                    done(true)
                } else {
                    self.enter(then, command)
                }
            }
            Resp::Rows => match first {
                Some(0xff) => done(true),
                Some(0xfe) if self.is_terminator(m) => {
                    let status = if self.deprecate_eof {
                        ok_status(p)
                    } else {
                        eof_status(p)
                    };
                    self.after_ok(status, command)
                }
                _ => None,
            },
        };
        if result.is_some() {
            self.queue.pop_front();
            self.resp = match self.queue.front() {
                Some((_, Kind::RowsOnly)) => Resp::Rows,
                Some((_, Kind::UntilOkErr)) => Resp::UntilOkErr,
                Some((_, Kind::Stream)) => Resp::Stream,
                _ => Resp::Start,
            };
        }
        result
    }

    fn is_terminator(&self, m: &MessageStart) -> bool {
        if self.deprecate_eof {
            m.first_len < MAX_PAYLOAD
        } else {
            m.first_len < 9
        }
    }

    fn enter(&mut self, then: Then, command: u8) -> Option<Completed> {
        match then {
            Then::Rows => {
                self.resp = Resp::Rows;
                None
            }
            Then::PrepareColumns(cols) if cols > 0 => {
                self.resp = Resp::Defs {
                    left: cols,
                    then: Then::Done,
                };
                None
            }
            Then::PrepareColumns(_) | Then::Done => Some(Completed {
                command,
                error: false,
            }),
        }
    }

    fn track_status(&mut self, status: Option<u16>) -> bool {
        match status {
            Some(s) => {
                self.in_tx = s & STATUS_IN_TRANS != 0;
                s & STATUS_MORE_RESULTS != 0
            }
            None => false,
        }
    }

    /// An OK (or final EOF) with these status flags: another result follows,
    /// or the command is complete.
    fn after_ok(&mut self, status: Option<u16>, command: u8) -> Option<Completed> {
        if self.track_status(status) {
            self.resp = Resp::Start;
            None
        } else {
            Some(Completed {
                command,
                error: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{write_packet, Framer};

    /// Feeds client packets then server packets; returns completions.
    struct Conv {
        t: Tracker,
        done: Vec<Completed>,
    }

    impl Conv {
        fn new(deprecate_eof: bool) -> Self {
            Conv {
                t: Tracker::new(deprecate_eof),
                done: Vec::new(),
            }
        }
        fn client(&mut self, seq: u8, payload: &[u8]) {
            let mut b = Vec::new();
            write_packet(&mut b, seq, payload);
            let mut f = Framer::new();
            let t = &mut self.t;
            f.feed(&b, |m| {
                t.client_message(m);
            });
        }
        fn server(&mut self, packets: &[&[u8]]) {
            let mut b = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                write_packet(&mut b, i as u8 + 1, p);
            }
            let mut f = Framer::new();
            let (t, done) = (&mut self.t, &mut self.done);
            f.feed(&b, |m| done.extend(t.server_message(m)));
        }
    }

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }
    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }
    fn ok_fe(status: u16) -> Vec<u8> {
        let mut p = ok(status);
        p[0] = 0xfe;
        p
    }
    const ERR: &[u8] = b"\xff\x28\x04#42000oops";

    #[test]
    fn ok_and_err_end_commands_and_track_transactions() {
        let mut c = Conv::new(false);
        c.client(0, b"\x03BEGIN");
        assert!(!c.t.idle());
        c.server(&[&ok(STATUS_IN_TRANS)]);
        assert!(c.t.idle() && c.t.in_transaction());
        c.client(0, b"\x03bad");
        c.server(&[ERR]);
        assert!(
            c.t.in_transaction(),
            "ERR leaves the transaction state alone"
        );
        c.client(0, b"\x03COMMIT");
        c.server(&[&ok(2)]);
        assert!(!c.t.in_transaction());
        assert_eq!(
            c.done.iter().map(|d| d.error).collect::<Vec<_>>(),
            vec![false, true, false]
        );
    }

    #[test]
    fn result_set_with_eof_packets() {
        let mut c = Conv::new(false);
        c.client(0, b"\x03SELECT a, b FROM t");
        // a row whose first value is the empty string starts with 0x00, and
        // one starting with 0xfe-like bytes must not end the result
        c.server(&[
            &[2],
            b"def-a",
            b"def-b",
            &eof(0),
            &[0, 1, b'x'],
            &[1, b'y', 0xfb],
            &eof(STATUS_IN_TRANS),
        ]);
        assert_eq!(c.done.len(), 1);
        assert!(c.t.idle() && c.t.in_transaction());
    }

    #[test]
    fn result_set_with_deprecate_eof() {
        let mut c = Conv::new(true);
        c.client(0, b"\x03SELECT a");
        c.server(&[&[1], b"def-a", &[1, b'x']]);
        assert!(!c.t.idle());
        c.server(&[&ok_fe(0)]);
        assert!(c.t.idle());
    }

    #[test]
    fn multi_results_continue_until_the_last() {
        let mut c = Conv::new(false);
        c.client(0, b"\x03SELECT 1; INSERT ...; SELECT 2");
        c.server(&[&[1], b"def", &eof(0), &[1, b'1'], &eof(STATUS_MORE_RESULTS)]);
        assert!(!c.t.idle());
        c.server(&[&ok(STATUS_MORE_RESULTS)]);
        assert!(!c.t.idle());
        c.server(&[&[1], b"def", &eof(0), &[1, b'2'], &eof(0)]);
        assert!(c.t.idle());
        assert_eq!(c.done.len(), 1);
    }

    #[test]
    fn local_infile_waits_for_the_final_ok() {
        let mut c = Conv::new(false);
        c.client(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
        c.server(&[b"\xfbf"]);
        assert!(!c.t.idle());
        c.client(2, b"1,2\n");
        c.client(3, b"");
        c.server(&[&ok(0)]);
        assert!(c.t.idle());
    }

    #[test]
    fn prepare_counts_params_and_columns() {
        let mut c = Conv::new(false);
        c.client(0, b"\x16SELECT ? , ?, a FROM t");
        // OK: status 0, stmt id 1, 1 column, 2 params
        c.server(&[
            &[0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0],
            b"p1",
            b"p2",
            &eof(0),
            b"c1",
        ]);
        assert!(!c.t.idle());
        c.server(&[&eof(0)]);
        assert!(c.t.idle());
        // no response for long data / close
        c.client(0, b"\x18\x01\x00\x00\x00\x00\x00data");
        c.client(0, b"\x19\x01\x00\x00\x00");
        assert!(c.t.idle());
        // binary result set
        c.client(0, b"\x17\x01\x00\x00\x00");
        c.server(&[&[1], b"c1", &eof(0), &[0, 0, 1], &eof(0)]);
        assert!(c.t.idle());
    }

    #[test]
    fn pipelined_commands_complete_in_order() {
        let mut c = Conv::new(false);
        c.client(0, b"\x0e");
        c.client(0, b"\x03SELECT 1");
        c.server(&[&ok(0)]);
        assert!(!c.t.idle());
        c.server(&[&[1], b"d", &eof(0), &[1, b'1'], &eof(0)]);
        assert!(c.t.idle());
        assert_eq!(
            c.done.iter().map(|d| d.command).collect::<Vec<_>>(),
            vec![com::PING, com::QUERY]
        );
    }

    #[test]
    fn change_user_ends_at_ok_after_auth_switch() {
        let mut c = Conv::new(false);
        c.client(0, b"\x03BEGIN");
        c.server(&[&ok(STATUS_IN_TRANS)]);
        c.client(0, b"\x11user\0...");
        c.server(&[b"\xfemysql_native_password\0scramble"]);
        assert!(!c.t.idle());
        c.client(3, b"answer");
        c.server(&[&ok(2)]);
        assert!(c.t.idle() && !c.t.in_transaction());
    }

    #[test]
    fn statistics_and_set_option_and_quit() {
        let mut c = Conv::new(false);
        c.client(0, b"\x09");
        c.server(&[b"Uptime: 5  Threads: 1"]);
        assert!(c.t.idle());
        c.client(0, b"\x1b\x00\x00");
        c.server(&[&eof(0)]);
        assert!(c.t.idle());
        c.client(0, b"\x01");
        assert!(c.t.quit() && c.t.idle());
    }

    #[test]
    fn server_data_with_no_command_is_ignored() {
        let mut c = Conv::new(false);
        c.server(&[&ok(STATUS_IN_TRANS)]);
        assert!(c.done.is_empty() && !c.t.in_transaction());
    }
}
