//! The accept loops of the read-write and read-only listeners.
//!
//! One loop per listener `select!`s on accept versus the shutdown watch;
//! each accepted connection gets its own task running
//! [`session::serve`](crate::session::serve) on the next of the
//! [`Workers`] (the socket moves to that worker's runtime). Past `max-connections` open
//! sessions a new client gets MySQL error 1040 at once. Accept errors such
//! as EMFILE back off briefly instead of spinning.

use crate::routing::Access;
use crate::session::{self, code, Shared};
use crate::workers::Workers;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Counts open sessions across both listeners.
#[derive(Debug, Default)]
pub struct Limit {
    open: AtomicUsize,
    max: usize,
}

impl Limit {
    /// A limit of `max` open sessions.
    pub fn new(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

struct Permit(Arc<Limit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn acquire(limit: &Arc<Limit>) -> Option<Permit> {
    let mut cur = limit.open.load(Ordering::Relaxed);
    loop {
        if cur >= limit.max {
            return None;
        }
        match limit
            .open
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return Some(Permit(limit.clone())),
            Err(now) => cur = now,
        }
    }
}

/// Accepts sessions until shutdown, then waits for open sessions to end
/// (they close at their next transaction boundary or after the disconnect
/// timeout; anything left after `grace` is dropped).
pub async fn run(
    listener: TcpListener,
    access: Access,
    shared: Arc<Shared>,
    limit: Arc<Limit>,
    workers: Arc<Workers>,
    grace: Duration,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut sessions = JoinSet::new();
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(listener = access.as_str(), addr = %local, "listening");
    loop {
        tokio::select! {
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let Some(permit) = acquire(&limit) else {
                        shared.metrics.error(crate::metrics::ErrorKind::MaxConnections);
                        shared.metrics.listener(access).refused.inc();
                        warn!(client = %peer, max = limit.max, "too many connections; refused");
                        sessions.spawn(session::refuse(tcp, code::TOO_MANY_CONNECTIONS, "08004", "Too many connections (carbide connector max-connections reached)"));
                        continue;
                    };
                    let std_tcp = match tcp.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(client = %peer, error = %e, "cannot hand the connection to a worker");
                            continue;
                        }
                    };
                    let shared = shared.clone();
                    sessions.spawn_on(async move {
                        // still non-blocking: registers with this worker's reactor
                        match tokio::net::TcpStream::from_std(std_tcp) {
                            Ok(tcp) => session::serve(tcp, peer, access, shared).await,
                            Err(e) => warn!(client = %peer, error = %e, "cannot register the connection"),
                        }
                        drop(permit);
                    }, workers.next());
                }
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning
                    warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    info!(
        listener = access.as_str(),
        open = sessions.len(),
        "stopped accepting; draining sessions"
    );
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            listener = access.as_str(),
            left = sessions.len(),
            "sessions still open after the grace period; closing them"
        );
        sessions.abort_all();
    }
}
