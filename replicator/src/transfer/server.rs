//! The THL server: serves one service's THL to replicas (port 2112).
//!
//! [`serve`] is the one accept loop (select on accept vs. shutdown, one task
//! per connection, a timeout on the hello, back-off on accept errors). A
//! connection reads the client's [`Hello`], checks its `(seqno, epoch)`
//! against the local log (`check_hello`, pure), answers ACCEPT or REFUSE,
//! then a blocking task tails the log through the live writer's
//! [`DurableWatch`] (published on the service's `ThlHub`) and hands
//! encoded records to the socket task, which sends them (and heartbeats
//! when idle). When the writer closes (service offline) the connection
//! ends and the client reconnects.

use super::protocol::{self, typ, Accept, Heartbeat, Hello, Refuse};
use super::tls::Io;
use crate::thl::{format, now_us, DurableWatch, ThlReader};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What a THL server serves.
#[derive(Clone)]
pub struct ServerConfig {
    /// Service name (a hello for another service is refused).
    pub service: String,
    /// This member's name.
    pub member: String,
    /// THL directory.
    pub thl_dir: PathBuf,
    /// Send a heartbeat after this long without records.
    pub heartbeat: Duration,
    /// Serve over TLS with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Answer to a hello, decided from the local log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stream from this seqno.
    From(u64),
    /// Refuse; `diverged` = permanent.
    Refuse {
        /// Message for the client.
        error: String,
        /// Permanent.
        diverged: bool,
    },
}

/// Decides a hello. `first`/`last`: the local log's range; `epoch_of(s)`:
/// the stored epoch of seqno `s` if stored.
pub fn check_hello(
    hello: &Hello,
    me: &str,
    first: Option<u64>,
    last: Option<u64>,
    epoch_of: impl Fn(u64) -> Option<u64>,
) -> Decision {
    let Some((s, e)) = hello.last else {
        return Decision::From(first.unwrap_or(0));
    };
    let refuse = |error: String| Decision::Refuse {
        error,
        diverged: true,
    };
    if let Some(mine) = epoch_of(s) {
        if mine == e {
            return Decision::From(s.saturating_add(1));
        }
        return refuse(format!(
            "log epoch numbers do not match: client {} has seqno {s} with epoch {e}, \
             master {me} has seqno {s} with epoch {mine}",
            hello.client
        ));
    }
    match (first, last) {
        (Some(f), _) if s.saturating_add(1) == f => Decision::From(f),
        (Some(f), _) if s < f => refuse(format!(
            "client {} needs seqno {} but it was purged on master {me}: its THL starts at seqno {f}",
            hello.client,
            s.saturating_add(1)
        )),
        (_, Some(l)) => refuse(format!(
            "log epoch numbers do not match: client {} has seqno {s} but master {me}'s log \
             ends at seqno {l} (the client is ahead: diverged history)",
            hello.client
        )),
        (_, None) => refuse(format!(
            "log epoch numbers do not match: client {} has seqno {s} but master {me}'s log \
             is empty",
            hello.client
        )),
    }
}

/// Accepts replicas until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    cfg: ServerConfig,
    hub: watch::Receiver<Option<DurableWatch>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff = Duration::from_millis(10);
                let cfg = cfg.clone();
                let hub = hub.clone();
                let span = tracing::info_span!("thl-serve", service = %cfg.service, %peer);
                tokio::spawn(
                    async move {
                        let _ = sock.set_nodelay(true);
                        let stream: Box<dyn Io> = match &cfg.tls {
                            None => Box::new(sock),
                            Some(acc) => {
                                let hs =
                                    tokio::time::timeout(Duration::from_secs(10), acc.accept(sock))
                                        .await;
                                match hs {
                                    Ok(Ok(s)) => Box::new(s),
                                    Ok(Err(e)) => {
                                        tracing::warn!(error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::warn!("TLS handshake timed out");
                                        return;
                                    }
                                }
                            }
                        };
                        match connection(stream, &cfg, hub).await {
                            Ok(()) => tracing::debug!("replica connection closed"),
                            Err(e) => tracing::warn!(error = %e, "replica connection ended"),
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "THL accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

enum Msg {
    Record(Vec<u8>),
    Idle(Option<u64>),
    End(Option<String>),
}

async fn connection(
    stream: Box<dyn Io>,
    cfg: &ServerConfig,
    hub: watch::Receiver<Option<DurableWatch>>,
) -> Result<(), protocol::FrameError> {
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = tokio::io::BufReader::new(rd);
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    let (t, p) = tokio::time::timeout(Duration::from_secs(10), protocol::read_frame(&mut rd))
        .await
        .map_err(|_| protocol::FrameError::Protocol("no hello within 10 s".into()))??;
    if t != typ::HELLO {
        return Err(protocol::FrameError::Protocol(format!(
            "expected HELLO, got frame type {t}"
        )));
    }
    let hello: Hello = protocol::parse("hello", &p)?;
    let refuse = |error: String, diverged: bool| Refuse { error, diverged };
    if hello.service != cfg.service {
        let r = refuse(
            format!(
                "member {} serves service '{}', not '{}'",
                cfg.member, cfg.service, hello.service
            ),
            true,
        );
        return protocol::write_json(&mut wr, typ::REFUSE, &r).await;
    }
    let Some(durable) = hub.borrow().clone() else {
        let r = refuse(
            format!("service '{}' on {} is not online", cfg.service, cfg.member),
            false,
        );
        return protocol::write_json(&mut wr, typ::REFUSE, &r).await;
    };
    let dir = cfg.thl_dir.clone();
    let me = cfg.member.clone();
    let h2 = hello.clone();
    let decided = tokio::task::spawn_blocking(move || -> Result<(Decision, ThlReader), String> {
        let reader = ThlReader::open(&dir).map_err(|e| e.to_string())?;
        let d = check_hello(&h2, &me, reader.first_seqno(), reader.last_seqno(), |s| {
            reader.get(s).ok().flatten().map(|t| t.epoch)
        });
        Ok((d, reader))
    })
    .await
    .map_err(|e| protocol::FrameError::Protocol(e.to_string()))?;
    let (decision, reader) = match decided {
        Ok(x) => x,
        Err(e) => {
            let r = refuse(format!("cannot read the THL on {}: {e}", cfg.member), false);
            return protocol::write_json(&mut wr, typ::REFUSE, &r).await;
        }
    };
    let from = match decision {
        Decision::From(f) => f,
        Decision::Refuse { error, diverged } => {
            tracing::warn!(client = %hello.client, %error, "refusing replica");
            return protocol::write_json(&mut wr, typ::REFUSE, &refuse(error, diverged)).await;
        }
    };
    tracing::info!(client = %hello.client, from, "replica connected");
    protocol::write_json(
        &mut wr,
        typ::ACCEPT,
        &Accept {
            server: cfg.member.clone(),
            from_seqno: from,
        },
    )
    .await?;
    let (tx, mut rx) = mpsc::channel::<Msg>(512);
    let hb = cfg.heartbeat;
    tokio::task::spawn_blocking(move || {
        let mut tail = reader.tail(from, durable.clone());
        loop {
            let msg = match tail.next(hb) {
                Ok(Some(ev)) => {
                    let mut buf = Vec::new();
                    match format::encode_record(&ev, &mut buf) {
                        Ok(_) => Msg::Record(buf),
                        Err(e) => Msg::End(Some(format!("seqno {}: {e}", ev.seqno))),
                    }
                }
                Ok(None) if durable.is_closed() => Msg::End(None),
                Ok(None) => Msg::Idle(durable.seqno()),
                Err(e) => Msg::End(Some(e.to_string())),
            };
            let end = matches!(msg, Msg::End(_));
            if tx.blocking_send(msg).is_err() || end {
                return;
            }
        }
    });
    // The client never sends after the hello; a read returning means it left.
    let mut gone = Box::pin(async move {
        let mut b = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut rd, &mut b).await;
    });
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = &mut gone => return Ok(()),
        };
        match msg {
            Some(Msg::Record(b)) => {
                protocol::write_frame(&mut wr, typ::RECORD, &b).await?;
                if rx.is_empty() {
                    wr.flush().await?;
                }
            }
            Some(Msg::Idle(last)) => {
                let h = Heartbeat {
                    last_seqno: last,
                    tstamp_us: now_us(),
                };
                protocol::write_json(&mut wr, typ::HEARTBEAT, &h).await?;
            }
            Some(Msg::End(err)) => {
                wr.flush().await?;
                if let Some(e) = err {
                    let r = refuse(e, false);
                    let _ = protocol::write_json(&mut wr, typ::REFUSE, &r).await;
                }
                let _ = wr.shutdown().await;
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(last: Option<(u64, u64)>) -> Hello {
        Hello {
            service: "alpha".into(),
            client: "db2".into(),
            last,
        }
    }

    #[test]
    fn empty_client_starts_at_the_first_stored_seqno() {
        assert_eq!(
            check_hello(&hello(None), "db1", Some(3), Some(9), |_| None),
            Decision::From(3)
        );
        assert_eq!(
            check_hello(&hello(None), "db1", None, None, |_| None),
            Decision::From(0)
        );
    }

    #[test]
    fn matching_epoch_continues_after_it() {
        let d = check_hello(&hello(Some((5, 0))), "db1", Some(0), Some(9), |_| Some(0));
        assert_eq!(d, Decision::From(6));
    }

    #[test]
    fn epoch_mismatch_is_refused_for_good() {
        let d = check_hello(&hello(Some((5, 0))), "db1", Some(0), Some(9), |_| Some(4));
        match d {
            Decision::Refuse { error, diverged } => {
                assert!(diverged);
                assert!(error.contains("log epoch numbers do not match"), "{error}");
                assert!(error.contains("epoch 4"), "{error}");
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn purged_and_ahead_are_refused_with_both_names() {
        match check_hello(&hello(Some((2, 0))), "db1", Some(10), Some(20), |_| None) {
            Decision::Refuse { error, diverged } => {
                assert!(diverged);
                assert!(error.contains("purged") && error.contains("db1"), "{error}");
                assert!(
                    error.contains("db2") && error.contains("seqno 10"),
                    "{error}"
                );
            }
            d => panic!("{d:?}"),
        }
        // the next seqno is the first stored one: contiguous, accepted
        assert_eq!(
            check_hello(&hello(Some((9, 0))), "db1", Some(10), Some(20), |_| None),
            Decision::From(10)
        );
        match check_hello(&hello(Some((30, 0))), "db1", Some(10), Some(20), |_| None) {
            Decision::Refuse { error, .. } => assert!(error.contains("ahead"), "{error}"),
            d => panic!("{d:?}"),
        }
        // hostile seqnos do not overflow
        let d = check_hello(
            &hello(Some((u64::MAX, 0))),
            "db1",
            Some(0),
            Some(20),
            |_| None,
        );
        assert!(
            matches!(d, Decision::Refuse { diverged: true, .. }),
            "{d:?}"
        );
    }
}
