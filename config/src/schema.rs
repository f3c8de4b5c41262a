//! The dataservice definition: the TOML schema carbide reads.
//!
//! One file describes one dataservice: its members (datasources with their
//! replicator and manager addresses), the connector's listeners, TLS files,
//! timeouts and the credentials carbide's own processes use. Keys are
//! kebab-case; unknown keys are errors (a typo must not be silently ignored).
//! Every field documents its default. `Config::load` parses and validates;
//! the example in `examples/sandbox.toml`-style configs written by
//! `scripts/sandbox.sh` is the reference.

use crate::addr::HostPort;
use crate::vocab::{PolicyMode, Role};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole dataservice definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// `[service]`: name and policy. Required.
    pub service: Service,
    /// `[credentials]`: the MariaDB account carbide's manager and replicator
    /// use on every member. Required.
    pub credentials: Credentials,
    /// `[timeouts]`: probe and failover timing. Defaults apply when absent.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `[connector]`: the proxy's listeners and routing limits.
    #[serde(default)]
    pub connector: Connector,
    /// `[tls]`: certificate files for TLS to clients. Absent: no TLS offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// `[replicator]`: THL storage settings shared by all members.
    #[serde(default)]
    pub replicator: Replicator,
    /// `[validate]`: thresholds used by `carbide validate`.
    #[serde(default)]
    pub validate: Validate,
    /// `[security]`: the dataservice secret every control path is
    /// authenticated with. Required by the manager (`carbide serve --member`).
    #[serde(default)]
    pub security: Security,
    /// `[manager]`: consensus timers and what a connector does when its
    /// manager is cut off from the majority.
    #[serde(default)]
    pub manager: Manager,
    /// `[[witness]]`: managers without a database that vote in elections, so
    /// that two database hosts and a witness keep a majority. Default none.
    #[serde(default, rename = "witness", skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<Witness>,
    /// `[[member]]`: the datasources, at least one; exactly one has
    /// `role = "master"`.
    #[serde(rename = "member")]
    pub members: Vec<Member>,
    /// Directory of the config file; relative paths in it resolve from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[service]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Service {
    /// Dataservice name (`alpha`): letters, digits and `_`, starting with a
    /// letter; it names the `tungsten_<name>` schema. Required.
    pub name: String,
    /// Policy mode at first start: `automatic` | `manual` | `maintenance`.
    /// Default `automatic`.
    #[serde(default = "default_policy")]
    pub policy: PolicyMode,
}

fn default_policy() -> PolicyMode {
    PolicyMode::Automatic
}

/// `[credentials]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Credentials {
    /// MariaDB user for the manager and replicator. Required.
    pub user: String,
    /// Its password. Default empty.
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[timeouts]` — all in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Timeouts {
    /// How often the manager probes each datasource. Default 1000.
    #[serde(default = "d_probe")]
    pub probe_interval_ms: u64,
    /// How long a primary may stay unreachable before automatic failover.
    /// Default 10000; must be at least 2 × probe-interval-ms.
    #[serde(default = "d_grace")]
    pub failover_grace_ms: u64,
    /// Time to connect to a MariaDB server or peer. Default 3000.
    #[serde(default = "d_connect")]
    pub connect_ms: u64,
    /// Time a client has to finish its handshake with the connector. Default 10000.
    #[serde(default = "d_handshake")]
    pub handshake_ms: u64,
    /// How long an OFFLINE connector (or a moved primary) waits for an open
    /// session to reach a transaction boundary before closing it. Default 5000.
    #[serde(default = "d_disconnect")]
    pub disconnect_ms: u64,
    /// How long new work waits while the router is ONHOLD or no primary is
    /// available, before the client gets an error. Default 30000.
    #[serde(default = "d_wait")]
    pub wait_if_unavailable_ms: u64,
}

fn d_probe() -> u64 {
    1000
}
fn d_grace() -> u64 {
    10_000
}
fn d_connect() -> u64 {
    3000
}
fn d_handshake() -> u64 {
    10_000
}
fn d_disconnect() -> u64 {
    5000
}
fn d_wait() -> u64 {
    30_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            probe_interval_ms: d_probe(),
            failover_grace_ms: d_grace(),
            connect_ms: d_connect(),
            handshake_ms: d_handshake(),
            disconnect_ms: d_disconnect(),
            wait_if_unavailable_ms: d_wait(),
        }
    }
}

/// `[connector]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connector {
    /// Read-write listener; sessions go to the primary. Default `0.0.0.0:3306`.
    #[serde(default = "d_rw")]
    pub rw_listen: HostPort,
    /// Read-only listener; sessions go to an ONLINE replica (the primary when
    /// none qualifies). Default `0.0.0.0:3307`.
    #[serde(default = "d_ro")]
    pub ro_listen: HostPort,
    /// Whether the read-only listener is opened. Default true.
    #[serde(default = "d_true")]
    pub enable_ro: bool,
    /// Most client sessions held at once; the next one gets MySQL error 1040.
    /// Default 10000.
    #[serde(default = "d_maxconn")]
    pub max_connections: u32,
    /// A replica lagging more than this is not chosen for read-only sessions.
    /// Default 15000.
    #[serde(default = "d_latency")]
    pub max_applied_latency_ms: u64,
    /// Path of a Tungsten-format `user.map` (relative paths are relative to
    /// the config file). Default: none (credentials pass through unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_map: Option<PathBuf>,
    /// Threads that run client sessions, each with its own event loop; a
    /// session stays on one thread. 0 means one per CPU core. Default 0.
    #[serde(default)]
    pub worker_threads: u32,
}

fn d_rw() -> HostPort {
    HostPort::new("0.0.0.0", 3306)
}
fn d_ro() -> HostPort {
    HostPort::new("0.0.0.0", 3307)
}
fn d_true() -> bool {
    true
}
fn d_maxconn() -> u32 {
    10_000
}
fn d_latency() -> u64 {
    15_000
}

impl Default for Connector {
    fn default() -> Self {
        Connector {
            rw_listen: d_rw(),
            ro_listen: d_ro(),
            enable_ro: true,
            max_connections: d_maxconn(),
            max_applied_latency_ms: d_latency(),
            user_map: None,
            worker_threads: 0,
        }
    }
}

/// `[tls]` — PEM files; relative paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain carbide presents to clients. Required in `[tls]`.
    pub cert: PathBuf,
    /// Its private key. Required in `[tls]`.
    pub key: PathBuf,
    /// CA bundle used to verify servers when `to-server = true`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Also use TLS from carbide to the MariaDB servers. Default false.
    #[serde(default)]
    pub to_server: bool,
}

/// `[replicator]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Replicator {
    /// Directory under which each member keeps its THL, in
    /// `<thl-root>/<member>/<service>` unless the member sets `thl-dir`.
    /// Relative paths are relative to the config file. Default
    /// `/var/lib/carbide/thl`.
    #[serde(default = "d_thl_root")]
    pub thl_root: PathBuf,
}

fn d_thl_root() -> PathBuf {
    PathBuf::from("/var/lib/carbide/thl")
}

impl Default for Replicator {
    fn default() -> Self {
        Replicator {
            thl_root: d_thl_root(),
        }
    }
}

/// `[validate]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Validate {
    /// Largest clock difference between members before an ERROR. Default 1000.
    #[serde(default = "d_skew")]
    pub max_clock_skew_ms: u64,
    /// Free space the THL directory needs. Default 1024 MiB.
    #[serde(default = "d_free")]
    pub min_thl_free_mb: u64,
}

fn d_skew() -> u64 {
    1000
}
fn d_free() -> u64 {
    1024
}

impl Default for Validate {
    fn default() -> Self {
        Validate {
            max_clock_skew_ms: d_skew(),
            min_thl_free_mb: d_free(),
        }
    }
}

/// `[security]` — the dataservice secret.
///
/// One secret authenticates every control path of the dataservice: the
/// manager's raft RPCs and mutating admin routes (a `Authorization: Bearer`
/// header), and the command-line tools read it from the same config. Give
/// either `token-file` (a file holding the secret; `carbide secret --out FILE`
/// writes one) or `token` inline; at least 16 characters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Security {
    /// File holding the secret (relative paths are relative to the config
    /// file); surrounding white space is ignored. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The secret itself, when it is not in a file. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `[manager]` — consensus timing and partition handling, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manager {
    /// How often the raft leader sends heartbeats. Default 150.
    #[serde(default = "d_heartbeat")]
    pub heartbeat_ms: u64,
    /// A follower that has heard nothing from a leader for a random time
    /// between this and twice this starts an election (after a pre-vote shows
    /// a majority has lost the leader too). Default 750; at least 3 ×
    /// heartbeat-ms.
    #[serde(default = "d_election")]
    pub election_timeout_ms: u64,
    /// A process that has heard nothing from a majority of the managers for
    /// 4 × election-timeout-ms puts its connector ONHOLD (new work waits),
    /// and OFFLINE once it has been cut off this long, so it never sends
    /// writes to a primary the majority may have replaced. Default 5000; at
    /// least 4 × election-timeout-ms.
    #[serde(default = "d_isolated")]
    pub isolated_offline_ms: u64,
    /// Where each manager keeps its raft log and state, in
    /// `<data-dir>/<member>/manager.redb` (relative paths are relative to the
    /// config file). Default `/var/lib/carbide/manager`.
    #[serde(default = "d_manager_dir")]
    pub data_dir: PathBuf,
}

fn d_manager_dir() -> PathBuf {
    PathBuf::from("/var/lib/carbide/manager")
}

fn d_heartbeat() -> u64 {
    150
}
fn d_election() -> u64 {
    750
}
fn d_isolated() -> u64 {
    5000
}

impl Default for Manager {
    fn default() -> Self {
        Manager {
            heartbeat_ms: d_heartbeat(),
            election_timeout_ms: d_election(),
            isolated_offline_ms: d_isolated(),
            data_dir: d_manager_dir(),
        }
    }
}

/// `[[witness]]` — a voting manager with no database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Witness {
    /// Its name, unique among members and witnesses. Required.
    pub name: String,
    /// Its manager address (`carbide serve --member NAME` runs it). Required.
    pub manager: HostPort,
}

/// `[[member]]` — one datasource host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Member {
    /// Member name (`db1`): unique, used in cctrl and as THL source id. Required.
    pub name: String,
    /// Its MariaDB server. Required.
    pub mysql: HostPort,
    /// Its replicator's admin API (default port 10000). Required.
    pub replicator: HostPort,
    /// Its replicator's THL server (default port 2112). Required.
    pub thl: HostPort,
    /// Its manager's admin/raft/metrics address (default port 11999). Required.
    pub manager: HostPort,
    /// Role at first start: `master` (exactly one member), `slave`, `relay`,
    /// `standby` or `witness`. Default `slave`.
    #[serde(default = "d_role")]
    pub role: Role,
    /// This member's THL directory. Default `<thl-root>/<name>/<service>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thl_dir: Option<PathBuf>,
    /// This member's connector read-write listener, when it differs from
    /// `connector.rw-listen` (several members on one host). Default: that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rw_listen: Option<HostPort>,
    /// This member's connector read-only listener, when it differs from
    /// `connector.ro-listen`. Default: that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro_listen: Option<HostPort>,
}

fn d_role() -> Role {
    Role::Slave
}
