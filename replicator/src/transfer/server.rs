//! The THL server: serves one service's THL to replicas (port 2112).
//!
//! [`serve`] is the one accept loop (select on accept vs. shutdown, one task
//! per connection, at most [`ServerConfig::max_connections`] at a time, a
//! timeout on the hello, back-off on accept errors). A connection sends a
//! CHALLENGE (a fresh nonce), reads the client's [`Hello`] (at most
//! [`protocol::MAX_PREAUTH_FRAME_LEN`] bytes) and verifies its proof of the
//! dataservice secret before anything else (`check_proof`, pure); then it
//! checks the hello's `(seqno, epoch)` against the local log
//! (`check_hello`, pure), answers ACCEPT or REFUSE, and a blocking task
//! tails the log through the live writer's [`DurableWatch`] (published on
//! the service's `ThlHub`) and hands encoded records to the socket task,
//! which sends them (and heartbeats when idle). At most
//! [`SEND_BUFFER_BYTES`] of records wait for a slow client; the tail waits
//! for the socket beyond that. When the writer closes (service offline)
//! the connection ends and the client reconnects.

use super::protocol::{self, typ, Accept, Challenge, Heartbeat, Hello, Refuse};
use super::tls::Io;
use crate::auth::{self, Secret};
use crate::thl::{format, now_us, DurableWatch, ThlReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// Default most replicas connected to one THL server at a time.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Most bytes of encoded records queued for one client's socket.
pub const SEND_BUFFER_BYTES: usize = 16 << 20;

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
    /// The dataservice secret a hello must prove; `None` only for a daemon
    /// started with `--insecure-no-secret` (every hello is then accepted).
    pub secret: Option<Secret>,
    /// Most connections served at a time; more are refused at once.
    pub max_connections: usize,
}

/// Whether a hello's proof shows the secret: `Err` holds the reason given
/// to the client (and logged).
pub fn check_proof(
    secret: Option<&Secret>,
    service: &str,
    nonce: &[u8],
    hello_json: &[u8],
    proof: &[u8],
) -> Result<(), String> {
    let Some(secret) = secret else {
        return Ok(());
    };
    if auth::verify_hello_proof(secret, nonce, hello_json, proof) {
        return Ok(());
    }
    let what = if proof.iter().all(|b| *b == 0) {
        "missing"
    } else {
        "wrong"
    };
    Err(format!(
        "{what} dataservice secret in the THL hello for service '{service}' \
         (security.token-file of this dataservice); nothing is streamed"
    ))
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
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(service = %cfg.service, %peer, limit = cfg.max_connections, "too many THL connections; refusing");
                    tokio::spawn(refuse_busy(sock, cfg));
                    continue;
                };
                tokio::spawn(
                    async move {
                        let _slot = slot;
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

/// Tells a client over the limit why it is turned away (plain TCP only: a
/// TLS client is just closed, no handshake is spent on it).
async fn refuse_busy(mut sock: tokio::net::TcpStream, cfg: ServerConfig) {
    if cfg.tls.is_some() {
        return;
    }
    let r = Refuse {
        error: format!(
            "member {} already serves {} THL connections (the limit); try again later",
            cfg.member, cfg.max_connections
        ),
        diverged: false,
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        protocol::write_json(&mut sock, typ::REFUSE, &r),
    )
    .await;
}

enum Msg {
    /// Encoded record, holding its share of the send buffer.
    Record(Vec<u8>, OwnedSemaphorePermit),
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
    let refuse = |error: String, diverged: bool| Refuse { error, diverged };
    let nonce = auth::nonce().map_err(protocol::FrameError::Protocol)?;
    let challenge = Challenge {
        protocol: protocol::PROTOCOL_VERSION,
        server: cfg.member.clone(),
        nonce: protocol::hex(&nonce),
    };
    protocol::write_json(&mut wr, typ::CHALLENGE, &challenge).await?;
    let (t, p) = tokio::time::timeout(
        Duration::from_secs(10),
        protocol::read_frame_max(&mut rd, protocol::MAX_PREAUTH_FRAME_LEN),
    )
    .await
    .map_err(|_| protocol::FrameError::Protocol("no hello within 10 s".into()))??;
    if t != typ::HELLO {
        return Err(protocol::FrameError::Protocol(format!(
            "expected HELLO, got frame type {t}"
        )));
    }
    let (proof, json) = protocol::split_hello(&p)?;
    if let Err(error) = check_proof(cfg.secret.as_ref(), &cfg.service, &nonce, json, proof) {
        tracing::warn!(%error, "refusing replica: dataservice secret not proven");
        return protocol::write_json(&mut wr, typ::REFUSE, &refuse(error, false)).await;
    }
    let hello: Hello = protocol::parse("hello", json)?;
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
    let budget = Arc::new(Semaphore::new(SEND_BUFFER_BYTES));
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut tail = reader.tail(from, durable.clone());
        loop {
            let msg = match tail.next(hb) {
                Ok(Some(ev)) => {
                    let mut buf = Vec::new();
                    match format::encode_record(&ev, &mut buf) {
                        Ok(_) => {
                            // wait for the socket to drain what is queued
                            let n = buf.len().clamp(1, SEND_BUFFER_BYTES) as u32;
                            match rt.block_on(budget.clone().acquire_many_owned(n)) {
                                Ok(permit) => Msg::Record(buf, permit),
                                Err(_) => return,
                            }
                        }
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
            Some(Msg::Record(b, _permit)) => {
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

    proptest::proptest! {
        /// What the fuzz target `thl_hello` does, on stable: any HELLO
        /// payload goes through the pre-authentication path without a panic,
        /// and a random proof is never accepted.
        #[test]
        fn any_hello_payload_is_handled(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let secret = Secret::new("fuzzing-secret-0123456789");
            if let Ok((proof, json)) = protocol::split_hello(&data) {
                let r = check_proof(Some(&secret), "alpha", &[7u8; 32], json, proof);
                proptest::prop_assert!(r.is_err());
                let _ = protocol::parse::<Hello>("hello", json);
            }
        }
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_hellos_are_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let cfg = ServerConfig {
            service: "alpha".into(),
            member: "db1".into(),
            thl_dir: dir.path().to_path_buf(),
            heartbeat: Duration::from_millis(100),
            tls: None,
            secret: Some(Secret::new("0123456789abcdef")),
            max_connections: 1,
        };
        let (_hub, hub_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(l, cfg, hub_rx, stop_rx));
        let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (t, _) = protocol::read_frame(&mut first).await.expect("challenge");
        assert_eq!(t, typ::CHALLENGE);
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (t, p) = protocol::read_frame(&mut second).await.expect("refuse");
        assert_eq!(t, typ::REFUSE);
        let r: Refuse = protocol::parse("refuse", &p).expect("json");
        assert!(
            r.error.contains("already serves 1 THL connections"),
            "{r:?}"
        );
        // the first one announces a 1 GiB hello: cut off, and its slot freed
        let mut head = (1u32 << 30).to_le_bytes().to_vec();
        head.push(typ::HELLO);
        first.write_all(&head).await.expect("write");
        let mut b = [0u8; 8];
        let n = tokio::io::AsyncReadExt::read(&mut first, &mut b).await;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let mut third = None;
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (t, _) = protocol::read_frame(&mut s).await.expect("frame");
            if t == typ::CHALLENGE {
                third = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(third.is_some(), "the slot came back");
        let _ = stop.send(true);
    }

    #[test]
    fn proofs_are_checked_and_refusals_say_which() {
        let s = Secret::new("0123456789abcdef");
        let nonce = [9u8; 32];
        let good = auth::hello_proof(Some(&s), &nonce, b"{}");
        assert!(check_proof(Some(&s), "alpha", &nonce, b"{}", &good).is_ok());
        let e = check_proof(Some(&s), "alpha", &nonce, b"{}", &[0u8; 32]).unwrap_err();
        assert!(e.starts_with("missing dataservice secret"), "{e}");
        assert!(
            e.contains("security.token-file") && e.contains("alpha"),
            "{e}"
        );
        let other = auth::hello_proof(Some(&Secret::new("x123456789abcdef")), &nonce, b"{}");
        let e = check_proof(Some(&s), "alpha", &nonce, b"{}", &other).unwrap_err();
        assert!(e.starts_with("wrong dataservice secret"), "{e}");
        // a replayed proof over another nonce is wrong
        let e = check_proof(Some(&s), "alpha", &[8u8; 32], b"{}", &good).unwrap_err();
        assert!(e.starts_with("wrong"), "{e}");
        // no secret configured (--insecure-no-secret): anything goes
        assert!(check_proof(None, "alpha", &nonce, b"{}", &[0u8; 32]).is_ok());
    }

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
