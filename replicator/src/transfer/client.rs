//! The THL client: a replica's side of THL transfer.
//!
//! [`run`] connects to the master's THL server, answers its CHALLENGE with
//! a hello that proves the dataservice secret (HMAC over the server's
//! nonce, see `protocol.rs`) and says which `(seqno, epoch)` it stored
//! last, and appends every record it receives to the local
//! [`ThlWriter`] (checked: CRC, order). Records are buffered until the last
//! fragment of their transaction, so a lost connection never leaves half a
//! transaction in the log; appends are group-committed when the socket has
//! nothing more buffered (or every 500 transactions, or 50 ms). Progress leaves on a
//! `watch` ([`ClientProgress`]). A lost or silent master is retried with
//! back-off (100 ms doubling to 5 s); a refusal for diverged history ends
//! the run with [`TransferError::Diverged`].

use super::protocol::{self, typ, Accept, Challenge, FrameError, Heartbeat, Hello, Refuse};
use super::tls::Io;
use crate::thl::{format, ThlError, ThlEvent, ThlReader, ThlWriter};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Service name.
    pub service: String,
    /// This member's name.
    pub member: String,
    /// Master THL server `host:port`.
    pub master: String,
    /// Consider the master dead after this long without a frame.
    pub read_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// `(seqno, epoch)` to ask to continue after when the local THL is
    /// empty (the applied position of a replica restored from a backup and
    /// positioned with `dsctl set`).
    pub start_after: Option<(u64, u64)>,
    /// Connect with TLS, verifying the server's certificate.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// The dataservice secret the hello proves (`None`: an all-zero proof,
    /// accepted only by a master started with `--insecure-no-secret`).
    pub secret: Option<crate::auth::Secret>,
}

/// Published as the client runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientProgress {
    /// Streaming from the master.
    pub connected: bool,
    /// Lowest stored seqno.
    pub min_seqno: Option<u64>,
    /// Last durable stored seqno.
    pub last_seqno: Option<u64>,
    /// Its epoch.
    pub last_epoch: Option<u64>,
    /// Its eventid.
    pub last_eventid: Option<String>,
    /// Master's last seqno from its latest heartbeat.
    pub master_last_seqno: Option<u64>,
    /// Transactions received.
    pub transactions: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Last transient error.
    pub last_error: Option<String>,
}

/// Why the client stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The master refused our history.
    #[error("{0}")]
    Diverged(String),
    /// The local THL failed.
    #[error("THL: {0}")]
    Thl(#[from] ThlError),
    /// The master sent a record that does not decode.
    #[error("bad record from master {master}: {what}")]
    BadRecord {
        /// Master address.
        master: String,
        /// Detail.
        what: String,
    },
}

enum Session {
    Stopped,
    Lost(String),
}

/// Runs until `stop` turns true or a permanent error.
pub async fn run(
    cfg: &ClientConfig,
    writer: &mut ThlWriter,
    mut stop: watch::Receiver<bool>,
    progress: &watch::Sender<ClientProgress>,
) -> Result<(), TransferError> {
    let mut last = match writer.last_seqno() {
        Some(s) => {
            let ev = ThlReader::open(writer.dir())?.get(s)?;
            Some((s, ev.as_ref().map_or(0, |e| e.epoch)))
        }
        None => cfg.start_after,
    };
    let first = writer.index().first_seqno();
    progress.send_modify(|p| {
        p.min_seqno = first;
        p.last_seqno = last.map(|l| l.0);
        p.last_epoch = last.map(|l| l.1);
    });
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let outcome = tokio::select! {
            r = session(cfg, writer, &mut last, progress) => r,
            _ = stop.wait_for(|s| *s) => Ok(Session::Stopped),
        };
        // whatever happened, make what was appended durable
        commit(writer, progress, &mut 0)?;
        match outcome? {
            Session::Stopped => return Ok(()),
            Session::Lost(why) => {
                tracing::warn!(service = %cfg.service, master = %cfg.master, error = %why, "THL connection lost; retrying");
                progress.send_modify(|p| {
                    p.connected = false;
                    p.last_error = Some(why);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if progress.borrow().connected {
            backoff = Duration::from_millis(100);
        }
    }
}

fn commit(
    writer: &mut ThlWriter,
    progress: &watch::Sender<ClientProgress>,
    pending: &mut usize,
) -> Result<(), TransferError> {
    let durable = writer.commit()?;
    let n = std::mem::take(pending) as u64;
    let first = writer.index().first_seqno();
    progress.send_modify(|p| {
        p.last_seqno = durable.or(p.last_seqno);
        p.min_seqno = first;
        p.transactions += n;
    });
    Ok(())
}

async fn session(
    cfg: &ClientConfig,
    writer: &mut ThlWriter,
    last: &mut Option<(u64, u64)>,
    progress: &watch::Sender<ClientProgress>,
) -> Result<Session, TransferError> {
    let lost = |e: &dyn std::fmt::Display| Ok(Session::Lost(format!("{}: {e}", cfg.master)));
    let sock =
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.master)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return lost(&e),
            Err(_) => return lost(&"connect timed out"),
        };
    let _ = sock.set_nodelay(true);
    let stream: Box<dyn Io> = match &cfg.tls {
        None => Box::new(sock),
        Some(conn) => {
            let host = cfg
                .master
                .rsplit_once(':')
                .map_or(cfg.master.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = match rustls::pki_types::ServerName::try_from(host) {
                Ok(n) => n,
                Err(e) => return lost(&format!("TLS server name: {e}")),
            };
            match tokio::time::timeout(cfg.connect_timeout, conn.connect(name, sock)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => return lost(&format!("TLS handshake: {e}")),
                Err(_) => return lost(&"TLS handshake timed out"),
            }
        }
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let first = tokio::time::timeout(
        cfg.read_timeout,
        protocol::read_frame_max(&mut rd, protocol::MAX_PREAUTH_FRAME_LEN),
    )
    .await;
    let nonce = match first {
        Ok(Ok((typ::CHALLENGE, p))) => {
            let c: Challenge = match protocol::parse("challenge", &p) {
                Ok(c) => c,
                Err(e) => return lost(&e),
            };
            if c.protocol != protocol::PROTOCOL_VERSION {
                return lost(&format!(
                    "master {} speaks THL protocol {}, this replicator {}",
                    c.server,
                    c.protocol,
                    protocol::PROTOCOL_VERSION
                ));
            }
            match protocol::unhex(&c.nonce) {
                Some(n) if n.len() == crate::auth::NONCE_LEN => n,
                _ => return lost(&"bad nonce in the master's challenge"),
            }
        }
        Ok(Ok((typ::REFUSE, p))) => {
            return match protocol::parse::<Refuse>("refuse", &p) {
                Ok(r) => lost(&r.error),
                Err(e) => lost(&e),
            }
        }
        Ok(Ok((t, _))) => return lost(&format!("expected CHALLENGE, got frame type {t}")),
        Ok(Err(e)) => return lost(&e),
        Err(_) => {
            return lost(
                &"no CHALLENGE from the master (an older carbide speaking THL protocol 1?)",
            )
        }
    };
    let hello = Hello {
        service: cfg.service.clone(),
        client: cfg.member.clone(),
        last: *last,
    };
    let json = match serde_json::to_vec(&hello) {
        Ok(j) => j,
        Err(e) => return lost(&e),
    };
    let mut payload = crate::auth::hello_proof(cfg.secret.as_ref(), &nonce, &json).to_vec();
    payload.extend_from_slice(&json);
    let sent = async {
        protocol::write_frame(&mut wr, typ::HELLO, &payload).await?;
        tokio::io::AsyncWriteExt::flush(&mut wr).await?;
        Ok::<(), FrameError>(())
    };
    if let Err(e) = sent.await {
        return lost(&e);
    }
    let mut pending_frags: Vec<ThlEvent> = Vec::new();
    let mut pending = 0usize;
    let mut batch_start = std::time::Instant::now();
    let mut accepted = false;
    loop {
        let max = if accepted {
            protocol::MAX_FRAME_LEN
        } else {
            protocol::MAX_PREAUTH_FRAME_LEN
        };
        let frame =
            tokio::time::timeout(cfg.read_timeout, protocol::read_frame_max(&mut rd, max)).await;
        let (t, payload) = match frame {
            Ok(Ok(f)) => f,
            Ok(Err(FrameError::Io(e))) => return lost(&e),
            Ok(Err(e)) => return lost(&e),
            Err(_) => return lost(&format!("no data or heartbeat for {:?}", cfg.read_timeout)),
        };
        match t {
            typ::ACCEPT => {
                let a: Accept = match protocol::parse("accept", &payload) {
                    Ok(a) => a,
                    Err(e) => return lost(&e),
                };
                tracing::info!(service = %cfg.service, master = %a.server, from = a.from_seqno, "streaming THL from master");
                accepted = true;
                progress.send_modify(|p| {
                    p.connected = true;
                    p.last_error = None;
                });
            }
            typ::REFUSE => {
                let r: Refuse = match protocol::parse("refuse", &payload) {
                    Ok(r) => r,
                    Err(e) => return lost(&e),
                };
                if r.diverged {
                    return Err(TransferError::Diverged(r.error));
                }
                return lost(&r.error);
            }
            typ::HEARTBEAT => {
                if let Ok(h) = protocol::parse::<Heartbeat>("heartbeat", &payload) {
                    progress.send_modify(|p| p.master_last_seqno = h.last_seqno);
                }
                if pending > 0 {
                    commit(writer, progress, &mut pending)?;
                }
            }
            typ::RECORD if accepted => {
                let (ev, used) =
                    format::decode_record(&payload).map_err(|e| TransferError::BadRecord {
                        master: cfg.master.clone(),
                        what: e.to_string(),
                    })?;
                if used != payload.len() {
                    return Err(TransferError::BadRecord {
                        master: cfg.master.clone(),
                        what: format!("{} trailing bytes", payload.len() - used),
                    });
                }
                progress.send_modify(|p| p.bytes += payload.len() as u64);
                let whole = ev.last_frag;
                pending_frags.push(ev);
                if whole {
                    for rec in pending_frags.drain(..) {
                        writer.append_record(&rec)?;
                        *last = Some((rec.seqno, rec.epoch));
                        if rec.last_frag {
                            let id = rec.eventid.clone();
                            progress.send_modify(|p| {
                                p.last_epoch = Some(rec.epoch);
                                p.last_eventid = Some(id);
                            });
                        }
                    }
                    if pending == 0 {
                        batch_start = std::time::Instant::now();
                    }
                    pending += 1;
                    if pending >= 500
                        || rd.buffer().is_empty()
                        || batch_start.elapsed() >= Duration::from_millis(50)
                    {
                        commit(writer, progress, &mut pending)?;
                    }
                }
            }
            other => return lost(&format!("unexpected frame type {other}")),
        }
    }
}
