//! Connecting a session to a datasource: TCP connect and the server's
//! greeting, trying the next eligible datasource when one cannot be reached.
//!
//! The first datasource enters from the session's admission. Each attempt
//! has `timeouts.connect-ms` for the TCP connect and the greeting together,
//! and no more than what is left of the session's handshake budget. A failed
//! attempt (refused, no answer, no greeting) is logged, counted
//! (`carbide_connector_errors_total{kind="connect"}`) and reported to the
//! router ([`Router::connect_failed`](crate::routing::Router::connect_failed)),
//! which then names the next datasource to try
//! ([`Router::pick_next`](crate::routing::Router::pick_next)): for a
//! read-only session another eligible replica, then the primary; for a
//! read-write session none, as it has only the primary. A datasource that
//! connects is reported too, which clears its mark. What leaves: the
//! connected [`Backend`] with its greeting (which may be the server's own
//! refusal, relayed by the handshake), or the message of the error 2003 that
//! names every datasource tried.

use crate::metrics::ErrorKind;
use crate::reader::PacketReader;
use crate::routing::{Access, Datasource, SessionSlot};
use crate::session::Shared;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::warn;

/// A datasource that answered with a greeting.
pub(crate) struct Backend {
    /// Which one.
    pub(crate) ds: Datasource,
    /// The session counted on it.
    pub(crate) slot: SessionSlot,
    /// The connection.
    pub(crate) stream: TcpStream,
    /// Reads of the server side; holds whatever came after the greeting.
    pub(crate) reader: PacketReader,
    /// The greeting's sequence id and payload (an ERR when the server refuses).
    pub(crate) greeting: (u8, Vec<u8>),
}

/// Connects to `first`, then to the next datasources the router names, until
/// one answers or none is left or `deadline` passes.
pub(crate) async fn connect(
    first: (Datasource, SessionSlot),
    access: Access,
    shared: &Shared,
    deadline: Instant,
) -> Result<Backend, String> {
    let mut next = Some(first);
    let mut tried: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    while let Some((ds, slot)) = next.take() {
        let started = Instant::now();
        let budget =
            (shared.settings.connect_timeout).min(deadline.saturating_duration_since(started));
        match attempt(&ds, started + budget, budget.as_millis()).await {
            Ok((stream, reader, greeting)) => {
                shared
                    .metrics
                    .backend_connect_seconds
                    .observe(started.elapsed().as_secs_f64());
                shared.router.connect_succeeded(&ds.name);
                return Ok(Backend {
                    ds,
                    slot,
                    stream,
                    reader,
                    greeting,
                });
            }
            Err(why) => {
                drop(slot);
                shared.metrics.error(ErrorKind::BackendConnect);
                shared.router.connect_failed(&ds.name);
                warn!(datasource = %ds.name, addr = %ds.addr, error = %why, "cannot connect to datasource");
                failures.push(format!("{} ({}): {why}", ds.name, ds.addr));
                tried.push(ds.name);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        next = shared.router.pick_next(access, &tried);
    }
    Err(format!(
        "carbide: cannot connect to datasource {}",
        failures.join("; nor to ")
    ))
}

/// One datasource: TCP connect and its greeting, both by `until` (`ms`
/// after the start, for the message).
async fn attempt(
    ds: &Datasource,
    until: Instant,
    ms: u128,
) -> Result<(TcpStream, PacketReader, (u8, Vec<u8>)), String> {
    let connecting = TcpStream::connect((ds.addr.host.as_str(), ds.addr.port));
    let mut stream = match timeout_at(until, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer within {ms} ms")),
    };
    let _ = stream.set_nodelay(true);
    let mut reader = PacketReader::default();
    match timeout_at(until, reader.next(&mut stream)).await {
        Ok(Ok(greeting)) => Ok((stream, reader, greeting)),
        Ok(Err(_)) => Err("closed the connection instead of sending a greeting".into()),
        Err(_) => Err(format!("sent no greeting within {ms} ms")),
    }
}
