//! The connector's Prometheus metrics.
//!
//! Sessions update pre-resolved counters (no label lookups on the hot path);
//! [`Metrics::render`] turns the registry into the text format for
//! `/metrics`. Names start with `carbide_connector_`.

use crate::protocol::{command_index, COMMAND_NAMES};
use crate::routing::Access;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Kinds of failure counted in `carbide_connector_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Client sent bytes that are not a valid handshake.
    ClientMalformed,
    /// Client did not finish its handshake in time.
    ClientHandshakeTimeout,
    /// Client closed in the middle of a command or result.
    ClientVanished,
    /// TLS handshake with the client failed.
    ClientTls,
    /// No datasource could be reached.
    BackendConnect,
    /// Datasource closed or failed mid-session.
    BackendClosed,
    /// Datasource sent an unusable greeting.
    BackendMalformed,
    /// No datasource available for the session.
    NoDatasource,
    /// Refused: router OFFLINE.
    RouterOffline,
    /// Waited too long while ONHOLD.
    OnholdTimeout,
    /// Refused: max-connections reached.
    MaxConnections,
    /// Closed by carbide after the disconnect timeout, mid-transaction.
    ForcedDisconnect,
    /// A read-only-listener session could not be made (again) read-only.
    ReadOnlySetup,
}

impl ErrorKind {
    const ALL: [ErrorKind; 13] = [
        ErrorKind::ClientMalformed,
        ErrorKind::ClientHandshakeTimeout,
        ErrorKind::ClientVanished,
        ErrorKind::ClientTls,
        ErrorKind::BackendConnect,
        ErrorKind::BackendClosed,
        ErrorKind::BackendMalformed,
        ErrorKind::NoDatasource,
        ErrorKind::RouterOffline,
        ErrorKind::OnholdTimeout,
        ErrorKind::MaxConnections,
        ErrorKind::ForcedDisconnect,
        ErrorKind::ReadOnlySetup,
    ];

    /// (kind, side) labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            ErrorKind::ClientMalformed => ("malformed", "client"),
            ErrorKind::ClientHandshakeTimeout => ("handshake_timeout", "client"),
            ErrorKind::ClientVanished => ("vanished", "client"),
            ErrorKind::ClientTls => ("tls", "client"),
            ErrorKind::BackendConnect => ("connect", "backend"),
            ErrorKind::BackendClosed => ("closed", "backend"),
            ErrorKind::BackendMalformed => ("malformed", "backend"),
            ErrorKind::NoDatasource => ("no_datasource", "internal"),
            ErrorKind::RouterOffline => ("router_offline", "internal"),
            ErrorKind::OnholdTimeout => ("onhold_timeout", "internal"),
            ErrorKind::MaxConnections => ("max_connections", "internal"),
            ErrorKind::ForcedDisconnect => ("forced_disconnect", "internal"),
            ErrorKind::ReadOnlySetup => ("read_only_setup", "backend"),
        }
    }
}

/// Counters of one listener.
pub struct ListenerMetrics {
    /// Sessions accepted.
    pub accepted: IntCounter,
    /// Sessions open now.
    pub active: IntGauge,
    /// Sessions refused (offline, max connections, no datasource).
    pub refused: IntCounter,
    /// Bytes client → server.
    pub bytes_in: IntCounter,
    /// Bytes server → client.
    pub bytes_out: IntCounter,
    /// Commands by command byte.
    commands: Vec<IntCounter>,
}

impl ListenerMetrics {
    /// Counts one command.
    pub fn command(&self, c: u8) {
        if let Some(counter) = self.commands.get(command_index(c)) {
            counter.inc();
        }
    }
}

/// All connector metrics.
pub struct Metrics {
    registry: Registry,
    /// Read-write listener.
    pub rw: ListenerMetrics,
    /// Read-only listener.
    pub ro: ListenerMetrics,
    errors: Vec<IntCounter>,
    /// Time to connect to a datasource (TCP + greeting).
    pub backend_connect_seconds: Histogram,
    /// Time from a command's first byte to the end of its response.
    pub query_seconds: Histogram,
    /// Router state: 1 for the current state's label.
    pub router_state: IntGaugeVec,
    /// Current routing epoch.
    pub routing_epoch: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let v = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(v.clone()))?;
                Ok(v)
            };
        let accepted = counter_vec(
            "carbide_connector_connections_accepted_total",
            "Client sessions accepted.",
            &["listener"],
        )?;
        let refused = counter_vec(
            "carbide_connector_connections_refused_total",
            "Client sessions refused with an error (offline, max connections, no datasource).",
            &["listener"],
        )?;
        let bytes = counter_vec(
            "carbide_connector_bytes_total",
            "Bytes relayed, by direction (in = client to server).",
            &["listener", "direction"],
        )?;
        let commands = counter_vec(
            "carbide_connector_commands_total",
            "Commands by type.",
            &["listener", "command"],
        )?;
        let errors = counter_vec(
            "carbide_connector_errors_total",
            "Errors by kind and side (client, backend, internal).",
            &["kind", "side"],
        )?;
        let active = IntGaugeVec::new(
            Opts::new(
                "carbide_connector_connections_active",
                "Client sessions open now.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(active.clone()))?;
        let router_state = IntGaugeVec::new(
            Opts::new(
                "carbide_connector_router_state",
                "1 for the router's current state.",
            ),
            &["state"],
        )?;
        registry.register(Box::new(router_state.clone()))?;
        for s in carbide_config::RouterState::ALL {
            router_state
                .with_label_values(&[s.as_str()])
                .set((*s == carbide_config::RouterState::Online) as i64);
        }
        let routing_epoch = IntGauge::new(
            "carbide_connector_routing_epoch",
            "Epoch of the routing table in use.",
        )?;
        registry.register(Box::new(routing_epoch.clone()))?;
        let backend_connect_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "carbide_connector_backend_connect_seconds",
                "Time to connect to a datasource and read its greeting.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0,
            ]),
        )?;
        registry.register(Box::new(backend_connect_seconds.clone()))?;
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "carbide_connector_query_seconds",
                "Round trip of a command through the connector, first byte in to last byte out.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                5.0,
            ]),
        )?;
        registry.register(Box::new(query_seconds.clone()))?;
        let listener = |l: &str| ListenerMetrics {
            accepted: accepted.with_label_values(&[l]),
            active: active.with_label_values(&[l]),
            refused: refused.with_label_values(&[l]),
            bytes_in: bytes.with_label_values(&[l, "in"]),
            bytes_out: bytes.with_label_values(&[l, "out"]),
            commands: COMMAND_NAMES
                .iter()
                .map(|c| commands.with_label_values(&[l, c]))
                .collect(),
        };
        Ok(Metrics {
            rw: listener("rw"),
            ro: listener("ro"),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| {
                    let (kind, side) = k.labels();
                    errors.with_label_values(&[kind, side])
                })
                .collect(),
            backend_connect_seconds,
            query_seconds,
            router_state,
            routing_epoch,
            registry,
        })
    }

    /// The counters of a listener.
    pub fn listener(&self, a: Access) -> &ListenerMetrics {
        match a {
            Access::ReadWrite => &self.rw,
            Access::ReadOnly => &self.ro,
        }
    }

    /// Counts one error.
    pub fn error(&self, k: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|x| *x == k) {
            self.errors[i].inc();
        }
    }

    /// The registry, so other parts of the process can add theirs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the connector exports is documented in the README.
    #[test]
    fn readme_lists_every_metric() {
        let m = Metrics::new().unwrap();
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let names: std::collections::BTreeSet<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for n in names {
            assert!(
                readme.contains(&format!("| `{n}` |")),
                "README's metrics list lacks `{n}`"
            );
        }
    }
}
