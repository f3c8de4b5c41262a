//! One manager: raft, monitors, the leader's policy loop and the partition
//! watch, wired together.
//!
//! [`Node::start`] opens the store, starts raft (initializing it with every
//! member and witness as voters when the store is new), the pre-vote
//! watchdog and three loops:
//! - **probe** (every probe-interval): probes every datasource, records its
//!   own [`Report`] and sends it to the leader;
//! - **leader** (every probe-interval, on the leader only): seeds the state
//!   from the config once, then commits what [`policy::evaluate`] decides;
//! - **partition watch** (every 100 ms): a process that has heard nothing
//!   from a majority for 4 × election-timeout puts its connector ONHOLD,
//!   and OFFLINE after `isolated-offline-ms`; back in contact, it follows
//!   the committed router state again.
//!
//! What leaves: every change of the committed state or of the local
//! partition verdict is published as a [`Local`] on a watch channel (the
//! root wiring turns it into the connector's routing table), and
//! [`Node::execute`] runs `cctrl` commands for the admin API.

use crate::cctrl::{self, format, Cmd, ReplicatorAction};
use crate::http::{Client, HttpError};
use crate::metrics::ManagerMetrics;
use crate::monitor::{ConnectorStats, Observation, Prober, Report};
use crate::policy::{self, Evidence, OperatorCommand, Settings};
use crate::raft::store::{self, LogStore, StateMachine};
use crate::raft::{network::Network, node_id, raft_config, watchdog, Raft};
use crate::state::{seed_from_config, Change, ClusterState, Command, Outcome};
use crate::view::{self, ClusterView};
use carbide_config::{Config, RouterState};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// Why a manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config cannot run a manager (names the key).
    #[error("{0}")]
    Config(String),
    /// The store or raft could not start.
    #[error("{0}")]
    Start(String),
}

/// What this process's connector follows: the committed state and, while
/// cut off from the majority, the router state the partition watch imposes.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// The committed cluster state.
    pub state: Arc<ClusterState>,
    /// ONHOLD or OFFLINE while cut off from the majority.
    pub isolated: Option<RouterState>,
    /// This manager's latest probes (applied latency per replica).
    pub observations: BTreeMap<String, Observation>,
}

/// Counters of this process's connector, asked for at every probe.
pub type ConnectorFn = Box<dyn Fn() -> ConnectorStats + Send + Sync>;

/// A running manager.
pub struct Node {
    /// Its member (or witness) name.
    pub name: String,
    config: Config,
    raft: Raft,
    client: Client,
    contact: Arc<watchdog::Contact>,
    reports: Mutex<BTreeMap<String, (Instant, Report)>>,
    started: Instant,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    local: watch::Sender<Local>,
    connector: Option<ConnectorFn>,
    settings: Settings,
    /// Every voter: (name, manager address).
    managers: Vec<(String, String)>,
    names: BTreeMap<u64, String>,
    /// Prometheus gauges.
    pub metrics: ManagerMetrics,
    /// Caught up with the coordinator since start (see `caught_up`).
    ready: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Starts the manager of member (or witness) `name`. `connector` gives
    /// this process's connector counters (None for a witness); the
    /// manager's gauges join `registry`.
    pub async fn start(
        config: Config,
        name: &str,
        connector: Option<ConnectorFn>,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Node>, StartError> {
        let secret = config
            .secret()
            .map_err(|e| StartError::Config(e.to_string()))?
            .ok_or_else(|| {
                StartError::Config(
                    "security.token-file: the manager needs the dataservice secret; create one with `carbide secret --out FILE` and set [security] token-file = \"FILE\"".into(),
                )
            })?;
        let mut managers: Vec<(String, String)> = config
            .members
            .iter()
            .map(|m| (m.name.clone(), m.manager.to_string()))
            .collect();
        managers.extend(
            config
                .witnesses
                .iter()
                .map(|w| (w.name.clone(), w.manager.to_string())),
        );
        if !managers.iter().any(|(n, _)| n == name) {
            let names: Vec<&str> = managers.iter().map(|(n, _)| n.as_str()).collect();
            return Err(StartError::Config(format!(
                "--member {name}: no such member or witness (there are: {})",
                names.join(", ")
            )));
        }
        let mut voters = BTreeMap::new();
        let mut names = BTreeMap::new();
        for (n, addr) in &managers {
            let id = node_id(n);
            if let Some(other) = names.insert(id, n.clone()) {
                return Err(StartError::Config(format!(
                    "member names '{other}' and '{n}' hash to the same node id; rename one"
                )));
            }
            voters.insert(id, BasicNode { addr: addr.clone() });
        }
        let id = node_id(name);
        let dir = config.resolve(&config.manager.data_dir).join(name);
        let db = store::open(&dir)
            .map_err(|e| StartError::Start(format!("manager.data-dir {}: {e}", dir.display())))?;
        let (state_tx, state_rx) = watch::channel(Arc::new(ClusterState::default()));
        let sm = StateMachine::new(db.clone(), state_tx)
            .map_err(|e| StartError::Start(format!("manager state in {}: {e}", dir.display())))?;
        let rcfg = raft_config(&config.service.name, &config.manager)
            .map_err(|e| StartError::Config(format!("[manager]: {e}")))?;
        let client = Client::new(&secret);
        let raft = Raft::new(
            id,
            Arc::new(rcfg),
            Network::new(
                client.clone(),
                managers
                    .iter()
                    .map(|(n, a)| (node_id(n), a.clone()))
                    .collect(),
            ),
            LogStore::new(db),
            sm,
        )
        .await
        .map_err(|e| StartError::Start(format!("raft: {e}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Start(format!("raft: {e}")))?;
        if !initialized {
            match raft.initialize(voters).await {
                Ok(()) => info!(
                    voters = managers.len(),
                    "raft initialized: a new dataservice"
                ),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Start(format!("raft initialize: {e}"))),
            }
        } else {
            info!(dir = %dir.display(), "raft restarted from its store");
        }
        let metrics = ManagerMetrics::new(registry)
            .map_err(|e| StartError::Start(format!("metrics: {e}")))?;
        let node = Arc::new(Node {
            name: name.to_string(),
            settings: Settings {
                service: config.service.name.clone(),
                probe_ms: config.timeouts.probe_interval_ms,
                grace_ms: config.timeouts.failover_grace_ms,
            },
            config,
            raft,
            client,
            contact: Arc::new(watchdog::Contact::default()),
            reports: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            state_rx,
            local: watch::Sender::new(Local::default()),
            connector,
            managers,
            names,
            metrics,
            ready: std::sync::atomic::AtomicBool::new(false),
        });
        let peers: Vec<(u64, String)> = node
            .managers
            .iter()
            .filter(|(n, _)| n != name)
            .map(|(n, a)| (node_id(n), a.clone()))
            .collect();
        tokio::spawn(watchdog::run(
            node.raft.clone(),
            id,
            node.contact.clone(),
            peers,
            node.client.clone(),
            node.election_timeout(),
        ));
        tokio::spawn(node.clone().probe_loop());
        tokio::spawn(node.clone().leader_loop());
        tokio::spawn(node.clone().partition_loop());
        Ok(node)
    }

    fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.config.manager.election_timeout_ms)
    }

    /// The committed state and the partition verdict, as they change.
    pub fn local(&self) -> watch::Receiver<Local> {
        self.local.subscribe()
    }

    /// The raft handle (metrics, tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The routes raft needs on the manager port.
    pub fn raft_routes(&self) -> axum::Router {
        crate::raft::server::routes(crate::raft::server::RaftState {
            raft: self.raft.clone(),
            contact: self.contact.clone(),
            timeout: self.election_timeout(),
        })
    }

    /// The current leader's name, if any.
    pub fn leader(&self) -> Option<String> {
        let id = self.raft.metrics().borrow().current_leader?;
        self.names.get(&id).cloned()
    }

    /// Whether this manager hears from a leader (or is one with a quorum):
    /// a follower cut off from the majority may still name its last leader,
    /// but must not forward to it.
    pub fn in_contact(&self) -> bool {
        self.cut_off_for() < self.election_timeout() * 2
    }

    /// Whether this manager is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The manager address of `name`.
    pub fn manager_addr(&self, name: &str) -> Option<&str> {
        self.managers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_str())
    }

    /// The client managers use to talk to each other.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stores a manager's report (its own, or one sent to this manager).
    pub fn record(&self, report: Report) {
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(report.observer.clone(), (Instant::now(), report));
    }

    /// The evidence as of now.
    pub fn evidence(&self) -> Evidence {
        let r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        Evidence {
            reports: r
                .iter()
                .map(|(n, (at, rep))| (n.clone(), (at.elapsed().as_millis() as u64, rep.clone())))
                .collect(),
            collecting_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// The view `cctrl ls` shows (meaningful on the leader).
    pub fn view(&self) -> ClusterView {
        let state = self.state_rx.borrow().clone();
        let mut v = view::build(
            &state,
            &self.evidence(),
            &self.name,
            self.settings.probe_ms,
            now_ms(),
        );
        v.coordinator = self.leader();
        v
    }

    /// Commits one change (on the leader).
    pub async fn propose(&self, change: Change, reason: String) -> Result<Outcome, String> {
        let what = change.to_string();
        let cmd = Command {
            change,
            reason: reason.clone(),
            by: self.name.clone(),
            at_ms: now_ms(),
        };
        let limit = Duration::from_secs(10);
        let written = tokio::time::timeout(limit, self.raft.client_write(cmd)).await;
        let Ok(written) = written else {
            return Err(format!(
                "'{what}' was not committed within {} s: the coordinator may have lost its majority (it may still commit)",
                limit.as_secs()
            ));
        };
        match written {
            Ok(r) => {
                match &r.data {
                    Outcome::Changed => {
                        info!(change = %what, reason = %reason, index = r.log_id.index, "committed")
                    }
                    Outcome::Unchanged => debug!(change = %what, "committed, nothing to change"),
                    Outcome::Refused(why) => {
                        info!(change = %what, why = %why, "committed but refused when applied")
                    }
                }
                Ok(r.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(format!(
                "this manager is no longer the coordinator (now: {}); try again",
                f.leader_id
                    .and_then(|id| self.names.get(&id).cloned())
                    .unwrap_or_else(|| "none yet".into())
            )),
            Err(e) => Err(format!("could not commit '{what}': {e}")),
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        let mut prober = Prober::new(&self.config, self.client.clone());
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.probe_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let observations = prober.probe_all().await;
            self.metrics.observe(&observations);
            let report = Report {
                observer: self.name.clone(),
                observations: observations.clone(),
                connector: self.connector.as_ref().map(|f| f()),
            };
            self.record(report.clone());
            self.local.send_modify(|l| l.observations = observations);
            let leader = self.leader();
            if let Some(leader) = leader.filter(|l| *l != self.name) {
                if let Some(addr) = self.manager_addr(&leader) {
                    let r: Result<serde_json::Value, HttpError> = self
                        .client
                        .post(
                            addr,
                            "/manager/report",
                            &report,
                            Duration::from_millis(self.settings.probe_ms),
                        )
                        .await;
                    if let Err(e) = r {
                        debug!(leader = %leader, error = %e, "report not delivered");
                    }
                }
            }
        }
    }

    async fn leader_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.probe_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            tick.tick().await;
            let leader = self.is_leader();
            if leader != was_leader {
                if leader {
                    info!(member = %self.name, "this manager is now the COORDINATOR (raft leader)");
                } else {
                    info!(member = %self.name, leader = ?self.leader(), "this manager is no longer the coordinator");
                }
                was_leader = leader;
            }
            if !leader || !self.in_contact() {
                // a leader cut off from the majority sees only its own side:
                // its evidence is not enough to judge anything
                continue;
            }
            let state = self.state_rx.borrow().clone();
            if !state.is_seeded() {
                let _ = self
                    .propose(
                        seed_from_config(&self.config),
                        "first start: topology from the config".into(),
                    )
                    .await;
                continue;
            }
            let ev = self.evidence();
            for d in policy::evaluate(&state, &ev, &self.name, &self.settings) {
                if d.failover {
                    error!(
                        change = %d.change, reason = %d.reason,
                        "the master has failed in AUTOMATIC policy, but automatic failover is not built yet: writes stay unavailable until an operator moves the master (trepctl setrole + config)"
                    );
                } else {
                    warn!(change = %d.change, reason = %d.reason, "policy: committing a datasource state change");
                }
                if let Err(e) = self.propose(d.change, d.reason).await {
                    warn!(error = %e, "policy change not committed");
                    break;
                }
            }
        }
    }

    /// How long this process has been cut off from a majority, if it is.
    fn cut_off_for(&self) -> Duration {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return Duration::from_millis(m.millis_since_quorum_ack.unwrap_or(0));
        }
        self.contact.age()
    }

    /// Whether this manager has caught up with the coordinator since it
    /// started: a leader accepted its log and it has applied all it holds.
    /// Until then its stored state may be behind what was committed while it
    /// was down (a router set OFFLINE, a datasource shunned), so its
    /// connector holds new work rather than route by it.
    /// Once true it stays true: afterwards a commit in flight (appended,
    /// not yet applied) is normal, and losing the leader is the partition
    /// watch's business.
    fn caught_up(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let m = self.raft.metrics().borrow().clone();
        let now = self.contact.heard() && m.last_applied.map(|l| l.index) >= m.last_log_index;
        if now {
            self.ready.store(true, Ordering::Relaxed);
            info!(applied = ?m.last_applied.map(|l| l.index), "caught up with the coordinator: the connector follows the committed state");
        }
        now
    }

    async fn partition_loop(self: Arc<Self>) {
        let onhold_after = self.election_timeout() * 4;
        let offline_after = Duration::from_millis(self.config.manager.isolated_offline_ms);
        let mut state_rx = self.state_rx.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last: Option<RouterState> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = state_rx.changed() => if r.is_err() { return },
            }
            let cut = self.cut_off_for();
            let isolated = if cut >= offline_after {
                Some(RouterState::Offline)
            } else if cut >= onhold_after || !self.caught_up() {
                Some(RouterState::OnHold)
            } else {
                None
            };
            if isolated != last {
                match isolated {
                    Some(s) if cut < onhold_after => info!(
                        connector = %s,
                        "catching up with the coordinator: the connector holds new work until this manager has the committed state"
                    ),
                    Some(s) => warn!(
                        cut_off_ms = cut.as_millis() as u64,
                        connector = %s,
                        "no contact with a majority of the managers: this process is in a non-primary partition; its connector is {s}"
                    ),
                    None => info!("in contact with the majority again: the connector follows the committed router state"),
                }
                last = isolated;
            }
            self.metrics.isolated.set(i64::from(isolated.is_some()));
            let state = state_rx.borrow_and_update().clone();
            self.metrics
                .refresh(&state, &self.raft.metrics().borrow(), self.is_leader());
            let changed = {
                let l = self.local.borrow();
                !Arc::ptr_eq(&l.state, &state) || l.isolated != isolated
            };
            if changed {
                self.local.send_modify(|l| {
                    l.state = state;
                    l.isolated = isolated;
                });
            }
        }
    }

    /// Runs one cctrl command (on the leader); the text to print, or a
    /// one-line error.
    pub async fn execute(&self, line: &str, expert: bool) -> Result<String, String> {
        let cmd = cctrl::parse(line)?;
        let state = self.state_rx.borrow().clone();
        match cmd {
            Cmd::Ls { long } => Ok(format::ls(&self.view(), long)),
            Cmd::Members => Ok(format::members(&self.view(), &self.managers)),
            Cmd::Ping => Ok(self.ping().await),
            Cmd::Help => Ok(format!("{}\n", cctrl::HELP)),
            Cmd::Use(s) if s == state.service => Ok(String::new()),
            Cmd::Use(s) => Err(format!(
                "no dataservice '{s}' here (this manager serves '{}')",
                state.service
            )),
            Cmd::Expert | Cmd::Exit => Err(format!("'{}' is a cctrl shell command", line.trim())),
            Cmd::SetPolicy(p) => {
                let old = state.policy();
                self.propose(Change::SetPolicy(p), format!("operator: set policy {p}"))
                    .await?;
                Ok(format::policy_done(p, old))
            }
            Cmd::Datasource { name, action } => {
                let op = OperatorCommand::Datasource {
                    name: name.clone(),
                    action,
                };
                self.operator(&state, op, expert, line).await?;
                Ok(format::datasource_done(&name, action, &state.service))
            }
            Cmd::Router { target, state: to } => {
                let op = OperatorCommand::Router {
                    target: target.clone(),
                    state: to,
                };
                self.operator(&state, op, expert, line).await?;
                let names: Vec<String> = match target {
                    crate::state::RouterTarget::All => state.routers.keys().cloned().collect(),
                    crate::state::RouterTarget::One(n) => vec![n],
                };
                Ok(format::router_done(&names, to))
            }
            Cmd::Replicator { name, action } => self.replicator(&state, &name, action).await,
            Cmd::ClusterHeartbeat => {
                let Some((master, _)) = state.primary() else {
                    return Err("no master in this dataservice".into());
                };
                let master = master.to_string();
                self.replicator_post(&master, "heartbeat?name=HEARTBEAT")
                    .await?;
                Ok(format!(
                    "HEARTBEAT 'HEARTBEAT' INSERTED ON MASTER '{master}@{}'\n",
                    state.service
                ))
            }
        }
    }

    async fn operator(
        &self,
        state: &ClusterState,
        op: OperatorCommand,
        expert: bool,
        line: &str,
    ) -> Result<(), String> {
        let change = policy::operator(
            state,
            &self.evidence(),
            &self.name,
            &self.settings,
            &op,
            expert,
        )?;
        match self
            .propose(change, format!("operator: {}", line.trim()))
            .await?
        {
            Outcome::Refused(why) => Err(why),
            _ => Ok(()),
        }
    }

    fn replicator_addr(&self, name: &str) -> Result<String, String> {
        self.config
            .member(name)
            .map(|m| m.replicator.to_string())
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .config
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                format!("no member '{name}' (members: {})", names.join(", "))
            })
    }

    async fn replicator_post(&self, name: &str, what: &str) -> Result<serde_json::Value, String> {
        let addr = self.replicator_addr(name)?;
        let path = format!("/services/{}/{what}", self.config.service.name);
        self.client
            .post::<_, serde_json::Value>(
                &addr,
                &path,
                &serde_json::json!({}),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| format!("replicator '{name}': {e}"))
    }

    async fn replicator(
        &self,
        state: &ClusterState,
        name: &str,
        action: ReplicatorAction,
    ) -> Result<String, String> {
        let svc = &state.service;
        match action {
            ReplicatorAction::Status => {
                let addr = self.replicator_addr(name)?;
                let v: serde_json::Value = self
                    .client
                    .get(
                        &addr,
                        &format!("/services/{svc}/status"),
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|e| format!("replicator '{name}': {e}"))?;
                Ok(format::replicator_status(&v))
            }
            ReplicatorAction::Online => {
                self.replicator_post(name, "online").await?;
                Ok(format::replicator_done(name, "ONLINE"))
            }
            ReplicatorAction::Offline => {
                self.replicator_post(name, "offline").await?;
                Ok(format::replicator_done(name, "OFFLINE"))
            }
        }
    }

    async fn ping(&self) -> String {
        let timeout = Duration::from_secs(2);
        let mut out = format!("NETWORK CONNECTIVITY: PING TIMEOUT={}\n", timeout.as_secs());
        for (name, addr) in &self.managers {
            if *name == self.name {
                out.push_str(&format!(
                    "NETWORK CONNECTIVITY: CHECKING MY OWN ('{name}') CONNECTIVITY\n"
                ));
            } else {
                out.push_str(&format!(
                    "NETWORK CONNECTIVITY: CHECKING CLUSTER MEMBER '{name}'\n"
                ));
            }
            let r: Result<serde_json::Value, HttpError> =
                self.client.get(addr, "/health", timeout).await;
            match r {
                Ok(_) => out.push_str(&format!("HOST {name}/{addr}: ALIVE\n")),
                Err(e) => out.push_str(&format!("HOST {name}/{addr}: NOT REACHABLE ({e})\n")),
            }
        }
        let ev = self.evidence();
        for m in &self.config.members {
            match ev.db(&self.name, &m.name) {
                Some(crate::monitor::DbHealth::Up { .. }) => {
                    out.push_str(&format!("DATA SERVER {}/{}: ALIVE\n", m.name, m.mysql))
                }
                Some(crate::monitor::DbHealth::Down { message, .. }) => out.push_str(&format!(
                    "DATA SERVER {}/{}: NOT REACHABLE ({message})\n",
                    m.name, m.mysql
                )),
                None => out.push_str(&format!(
                    "DATA SERVER {}/{}: NOT PROBED YET\n",
                    m.name, m.mysql
                )),
            }
        }
        out
    }
}
