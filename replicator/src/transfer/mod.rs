//! THL transfer: replicas pull THL from their master's replicator.
//!
//! `protocol.rs` documents and codes the wire format, `server.rs` serves a
//! service's log to replicas, `client.rs` pulls it into a replica's log,
//! `tls.rs` loads the optional TLS material (the whole exchange then runs
//! inside TLS; the client verifies the server's certificate).
//! The server follows whichever writer currently owns the service's THL
//! (the extractor on a master, the client on a slave or relay) through the
//! service's [`ThlHub`].

pub mod client;
pub mod protocol;
pub mod server;
pub mod tls;

pub use client::{ClientConfig, ClientProgress, TransferError};
pub use server::{serve, ServerConfig};

use crate::thl::DurableWatch;
use tokio::sync::watch;

/// The durable position of the writer that currently owns a service's THL
/// (`None` while no writer is open); published by the extractor or the
/// THL client, read by the THL server and the applier.
pub type ThlHub = watch::Sender<Option<DurableWatch>>;

/// `host:port` from `thl://host:port/` (or a bare `host:port`).
pub fn parse_thl_uri(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("thl://").unwrap_or(uri);
    let hp = rest.trim_end_matches('/');
    let (h, p) = hp.rsplit_once(':')?;
    if h.is_empty() || p.parse::<u16>().is_err() {
        return None;
    }
    Some(hp.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn thl_uris() {
        assert_eq!(
            super::parse_thl_uri("thl://db1:2112/").as_deref(),
            Some("db1:2112")
        );
        assert_eq!(
            super::parse_thl_uri("127.0.0.1:7").as_deref(),
            Some("127.0.0.1:7")
        );
        assert_eq!(super::parse_thl_uri("thl://db1/"), None);
    }
}
