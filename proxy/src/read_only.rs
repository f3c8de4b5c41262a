//! Sessions of the read-only listener are read-only, whatever the account.
//!
//! `read_only=ON` on a replica does not stop an account that holds
//! `READ_ONLY ADMIN` (MariaDB 10.11; `SUPER` before), and `GRANT ALL ON *.*`
//! includes it, so an application account could write to the one replica it
//! was routed to. carbide therefore makes each read-only-listener session
//! read-only on the server itself:
//!
//! - [`apply`]: after the server's auth OK has been relayed and before the
//!   client's first command, carbide sends [`STATEMENT`] as its own
//!   COM_QUERY (sequence id 0) and consumes the answer; the client never
//!   sees it. A write then fails with the server's own error 1792 ("Cannot
//!   execute statement in a READ ONLY transaction").
//! - [`ResetGuard`]: COM_RESET_CONNECTION and COM_CHANGE_USER reset the
//!   session's characteristics on the server. The pump feeds the guard the
//!   client's message starts and the tracker's completions; once such a
//!   command's response has been relayed the guard says to [`apply`] again,
//!   before anything more of the client reaches the server. A command the
//!   client pipelines behind one (sent before its answer) would run in
//!   between, so the guard refuses it and the session closes.
//!
//! Not covered: a client that itself runs `SET SESSION TRANSACTION READ
//! WRITE` (or `START TRANSACTION READ WRITE`, `SET tx_read_only=0`) has
//! asked for writes and gets them; statements outside transactions
//! (`SET GLOBAL`, `KILL`, `FLUSH`, `ANALYZE TABLE`) are not stopped by a
//! read-only transaction.

use crate::packet::{write_packet, MessageStart};
use crate::protocol::{self, com};
use crate::reader::{PacketReader, ReadErr};
use crate::tracker::Completed;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// What carbide runs on the server to make a session read-only.
pub const STATEMENT: &str = "SET SESSION TRANSACTION READ ONLY";

/// Why a session could not be made read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered [`STATEMENT`] with an error.
    Refused(u16, String),
    /// The server closed, sent something else than OK/ERR, or sent more.
    Backend(String),
    /// No answer within the time allowed.
    Timeout(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(code, msg) => write!(f, "the datasource refused it: {code} {msg}"),
            Failure::Backend(why) => write!(f, "{why}"),
            Failure::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
        }
    }
}

/// Runs [`STATEMENT`] on the server as carbide's own command and consumes
/// its answer. `leftover` holds server bytes already read past the last
/// relayed packet (normally none); whatever follows the answer is left
/// there. Anything but a single OK is a [`Failure`].
pub async fn apply<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    leftover: &mut Vec<u8>,
    within: Duration,
) -> Result<(), Failure> {
    let mut reader = PacketReader::with_buf(std::mem::take(leftover));
    let answer = tokio::time::timeout(within, async {
        let mut out = Vec::with_capacity(5 + STATEMENT.len());
        let mut payload = Vec::with_capacity(1 + STATEMENT.len());
        payload.push(com::QUERY);
        payload.extend_from_slice(STATEMENT.as_bytes());
        write_packet(&mut out, 0, &payload);
        server
            .write_all(&out)
            .await
            .map_err(|e| Failure::Backend(format!("datasource closed: {e}")))?;
        match reader.next(server).await {
            Ok(v) => Ok(v),
            Err(ReadErr::Eof | ReadErr::Io) => Err(Failure::Backend("datasource closed".into())),
            Err(ReadErr::TooLarge(n)) => Err(Failure::Backend(format!(
                "datasource answered with a packet of {n} bytes"
            ))),
        }
    })
    .await;
    let (seq, payload) = match answer {
        Ok(r) => r?,
        Err(_) => return Err(Failure::Timeout(within)),
    };
    *leftover = reader.buf;
    match payload.first() {
        Some(0x00) if seq == 1 && leftover.is_empty() => Ok(()),
        Some(0x00) => Err(Failure::Backend(format!(
            "unexpected answer (sequence id {seq}, {} more bytes)",
            leftover.len()
        ))),
        Some(0xff) => {
            let (code, msg) = protocol::parse_err(&payload).unwrap_or((0, String::new()));
            Err(Failure::Refused(code, msg))
        }
        _ => Err(Failure::Backend("answer is neither OK nor ERR".into())),
    }
}

/// The error carbide sends a client whose session cannot be made read-only.
const UNKNOWN_ERROR: u16 = 1105;

/// [`apply`]; when it fails, the client is told ([`tell`]) and the caller
/// closes the session.
pub async fn apply_or_tell<C, S>(
    client: &mut C,
    server: &mut S,
    leftover: &mut Vec<u8>,
    within: Duration,
) -> Result<(), Failure>
where
    C: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = apply(server, leftover, within).await;
    if let Err(e) = &r {
        tell(client, e).await;
    }
    r
}

/// Sends the client error 1105 saying why its read-only session closes, as
/// the answer to its next (or current) command: sequence id 1.
pub async fn tell<C: AsyncWrite + Unpin>(client: &mut C, why: &(dyn fmt::Display + Sync)) {
    let msg = format!(
        "carbide: the read-only port could not keep this session read-only ({why}); it is closed"
    );
    let mut out = Vec::new();
    write_packet(
        &mut out,
        1,
        &protocol::err_payload(UNKNOWN_ERROR, "HY000", &msg),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&out)).await;
}

/// A command the client sent before the answer to its
/// COM_RESET_CONNECTION / COM_CHANGE_USER (whose command byte is inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelined(pub u8);

impl fmt::Display for Pipelined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was sent before the answer to a session reset",
            protocol::command_name(self.0)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Stage {
    /// Read-only holds.
    #[default]
    Holding,
    /// A reset or change-user is on its way; its answer has not ended.
    Resetting,
    /// Its answer ended: read-only must be applied again.
    Reapply,
}

/// Follows one read-only session's resets: pure, fed by the pump.
#[derive(Debug, Clone, Default)]
pub struct ResetGuard {
    stage: Stage,
}

impl ResetGuard {
    /// A message start from the client. `Err` when a command comes while a
    /// reset is in flight or not yet followed by [`apply`].
    pub fn client_message(&mut self, m: &MessageStart<'_>) -> Result<(), Pipelined> {
        if m.seq != 0 {
            // auth answers of COM_CHANGE_USER, LOCAL INFILE data
            return Ok(());
        }
        let c = m.first_byte().unwrap_or(0);
        if self.stage != Stage::Holding {
            return Err(Pipelined(c));
        }
        if c == com::RESET_CONNECTION || c == com::CHANGE_USER {
            self.stage = Stage::Resetting;
        }
        Ok(())
    }

    /// A command's response ended (from the tracker). An ERR to
    /// COM_CHANGE_USER is treated like an OK: whatever the server did to the
    /// session, read-only is applied again.
    pub fn completed(&mut self, c: &Completed) {
        if self.stage == Stage::Resetting
            && (c.command == com::RESET_CONNECTION || c.command == com::CHANGE_USER)
        {
            self.stage = Stage::Reapply;
        }
    }

    /// True when [`apply`] must run before more client bytes go to the server.
    pub fn must_reapply(&self) -> bool {
        self.stage == Stage::Reapply
    }

    /// [`apply`] succeeded again.
    pub fn reapplied(&mut self) {
        self.stage = Stage::Holding;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Framer;

    /// Frames `payload` as one packet and hands its message start to `f`.
    fn message<R>(seq: u8, payload: &[u8], mut f: impl FnMut(&MessageStart<'_>) -> R) -> R {
        let mut bytes = Vec::new();
        write_packet(&mut bytes, seq, payload);
        let mut out = None;
        Framer::new().feed(&bytes, |m| out = Some(f(m)));
        out.expect("one message")
    }

    fn done(command: u8) -> Completed {
        Completed {
            command,
            error: false,
        }
    }

    #[test]
    fn queries_leave_the_guard_alone() {
        let mut g = ResetGuard::default();
        for _ in 0..3 {
            assert_eq!(message(0, b"\x03SELECT 1", |m| g.client_message(m)), Ok(()));
            g.completed(&done(com::QUERY));
            assert!(!g.must_reapply());
        }
    }

    #[test]
    fn a_reset_asks_for_read_only_again_after_its_answer() {
        for command in [com::RESET_CONNECTION, com::CHANGE_USER] {
            let mut g = ResetGuard::default();
            assert_eq!(message(0, &[command], |m| g.client_message(m)), Ok(()));
            assert!(!g.must_reapply(), "not before the answer");
            // change-user's auth answers (sequence id > 0) pass
            assert_eq!(message(3, b"scramble", |m| g.client_message(m)), Ok(()));
            g.completed(&done(command));
            assert!(g.must_reapply());
            g.reapplied();
            assert_eq!(message(0, b"\x03SELECT 1", |m| g.client_message(m)), Ok(()));
        }
    }

    #[test]
    fn a_failed_change_user_also_asks_for_read_only_again() {
        let mut g = ResetGuard::default();
        let _ = message(0, &[com::CHANGE_USER], |m| g.client_message(m));
        g.completed(&Completed {
            command: com::CHANGE_USER,
            error: true,
        });
        assert!(g.must_reapply());
    }

    #[test]
    fn a_command_pipelined_behind_a_reset_is_refused() {
        let mut g = ResetGuard::default();
        let _ = message(0, &[com::RESET_CONNECTION], |m| g.client_message(m));
        assert_eq!(
            message(0, b"\x03INSERT INTO t VALUES (1)", |m| g.client_message(m)),
            Err(Pipelined(com::QUERY))
        );
        // ...and still before read-only is back
        let mut g = ResetGuard::default();
        let _ = message(0, &[com::RESET_CONNECTION], |m| g.client_message(m));
        g.completed(&done(com::RESET_CONNECTION));
        assert!(message(0, b"\x03SELECT 1", |m| g.client_message(m)).is_err());
    }

    #[tokio::test]
    async fn apply_sends_the_statement_and_consumes_the_ok() {
        let (mut ours, mut server) = tokio::io::duplex(1024);
        let fake = tokio::spawn(async move {
            let mut r = PacketReader::default();
            let (seq, p) = r.next(&mut server).await.ok().expect("a command");
            let mut out = Vec::new();
            write_packet(&mut out, 1, &[0, 0, 0, 2, 0, 0, 0]);
            server.write_all(&out).await.expect("write");
            (seq, p)
        });
        let mut leftover = Vec::new();
        let r = apply(&mut ours, &mut leftover, Duration::from_secs(5)).await;
        assert_eq!(r, Ok(()));
        let (seq, p) = fake.await.expect("fake server");
        assert_eq!(seq, 0);
        assert_eq!(p[0], com::QUERY);
        assert_eq!(&p[1..], STATEMENT.as_bytes());
    }

    #[tokio::test]
    async fn apply_reports_an_err_and_a_silent_server() {
        let (mut ours, mut server) = tokio::io::duplex(1024);
        let mut out = Vec::new();
        write_packet(&mut out, 1, &protocol::err_payload(1227, "42000", "denied"));
        server.write_all(&out).await.expect("write");
        let r = apply(&mut ours, &mut Vec::new(), Duration::from_secs(5)).await;
        assert_eq!(r, Err(Failure::Refused(1227, "denied".into())));

        let (mut ours, _server) = tokio::io::duplex(1024);
        let r = apply(&mut ours, &mut Vec::new(), Duration::from_millis(50)).await;
        assert_eq!(r, Err(Failure::Timeout(Duration::from_millis(50))));
    }
}
