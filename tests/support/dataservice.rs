//! A whole dataservice for end-to-end tests: N MariaDB servers, a
//! `carbide-replicator` and a `carbide serve --member` (manager + connector)
//! per member, on free loopback ports in a temp dir.
//!
//! `Dataservice::builder(3).start().await` writes one config per member
//! (each host has its own copy, as in production), starts everything and
//! waits until a coordinator is elected and every replicator is ONLINE.
//! With `.fault_proxies()` every manager-to-manager link goes through its
//! own [`FaultProxy`] (member i's config names member j's manager by the
//! proxy `i→j`), so `cut(i)` isolates member i's manager from the others
//! without root. Helpers run `cctrl` as an operator would, read a
//! connector's `/status`, and kill -9 / restart the processes.

use super::faultproxy::{FaultProxy, Mode};
use super::replicator::Replicator;
use super::{free_port, Cluster, MariaDb};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Ports of one member.
#[derive(Debug, Clone)]
pub struct Ports {
    /// Replicator admin API.
    pub replicator: u16,
    /// THL server.
    pub thl: u16,
    /// Manager (the carbide process binds it).
    pub manager: u16,
    /// Connector read-write listener.
    pub rw: u16,
    /// Connector read-only listener.
    pub ro: u16,
}

/// What to start.
pub struct Builder {
    n: usize,
    policy: &'static str,
    proxies: bool,
    probe_ms: u64,
    grace_ms: u64,
    raft: (u64, u64, u64),
    witness: bool,
}

impl Builder {
    /// Adds a `[[witness]]` named `w1`: a voting manager without a database
    /// (carbide process index `n`).
    pub fn witness(mut self) -> Self {
        self.witness = true;
        self
    }

    /// The default `[manager]` timers (heartbeat 150, election 750,
    /// isolated-offline 5000 ms) instead of the tests' faster ones.
    pub fn default_timers(mut self) -> Self {
        self.raft = (150, 750, 5000);
        self
    }

    /// Initial policy mode (`automatic`, `manual`, `maintenance`).
    pub fn policy(mut self, p: &'static str) -> Self {
        self.policy = p;
        self
    }

    /// Puts a fault proxy on every manager-to-manager link.
    pub fn fault_proxies(mut self) -> Self {
        self.proxies = true;
        self
    }

    /// Starts the servers, replicators and carbide processes.
    pub async fn start(self) -> Dataservice {
        let dbs = Cluster::new(self.n).start().await;
        for (i, db) in dbs.iter().enumerate() {
            if i > 0 {
                db.sql("SET GLOBAL read_only = ON").await;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("carbide-ds-")
            .tempdir()
            .expect("temp dir");
        let ports: Vec<Ports> = (0..self.n)
            .map(|_| Ports {
                replicator: free_port(),
                thl: free_port(),
                manager: free_port(),
                rw: free_port(),
                ro: free_port(),
            })
            .collect();
        let mut proxies = BTreeMap::new();
        if self.proxies {
            for i in 0..self.n {
                for (j, p) in ports.iter().enumerate() {
                    if i != j {
                        proxies.insert((i, j), FaultProxy::start(p.manager));
                    }
                }
            }
        }
        let mut ds = Dataservice {
            dbs,
            ports,
            proxies,
            configs: Vec::new(),
            carbides: Vec::new(),
            replicators: Vec::new(),
            dir,
            probe_ms: self.probe_ms,
            grace_ms: self.grace_ms,
            raft: self.raft,
            witness: self.witness.then(free_port),
        };
        for i in 0..self.n {
            let text = ds.config_text(i, self.policy);
            let p = ds.dir.path().join(format!("db{}.toml", i + 1));
            std::fs::write(&p, text).expect("write config");
            ds.configs.push(p);
        }
        for i in 0..self.n {
            let log = ds.dir.path().join(format!("replicator-db{}.log", i + 1));
            let r = Replicator::start(
                &ds.configs[i],
                &format!("db{}", i + 1),
                ds.ports[i].replicator,
                &log,
                &["--start", "earliest"],
            );
            ds.replicators.push(r);
        }
        for i in 0..self.n + usize::from(self.witness) {
            let c = ds.spawn_carbide(i);
            ds.carbides.push(Some(c));
        }
        ds.wait_coordinator(30);
        for i in 0..self.n {
            super::replicator::trepctl_ok(
                ds.ports[i].replicator,
                &["wait", "-state", "ONLINE", "-limit", "30"],
            );
        }
        ds
    }
}

/// A running dataservice.
pub struct Dataservice {
    /// The MariaDB servers, db1 first (the master).
    pub dbs: Vec<MariaDb>,
    /// Ports per member.
    pub ports: Vec<Ports>,
    /// Fault proxies by (from member index, to member index).
    pub proxies: BTreeMap<(usize, usize), FaultProxy>,
    /// Config file per member.
    pub configs: Vec<PathBuf>,
    carbides: Vec<Option<Child>>,
    /// Replicator per member.
    pub replicators: Vec<Replicator>,
    dir: tempfile::TempDir,
    /// `timeouts.probe-interval-ms`.
    pub probe_ms: u64,
    /// `timeouts.failover-grace-ms`.
    pub grace_ms: u64,
    raft: (u64, u64, u64),
    /// The witness `w1`'s manager port, when there is one.
    pub witness: Option<u16>,
}

/// The secret every test dataservice uses.
pub const SECRET: &str = "test-secret-0123456789abcdef";

impl Dataservice {
    /// A dataservice of `n` members (db1 the master).
    pub fn builder(n: usize) -> Builder {
        Builder {
            n,
            policy: "automatic",
            proxies: false,
            probe_ms: 300,
            grace_ms: 1500,
            raft: (100, 400, 2500),
            witness: false,
        }
    }

    fn config_text(&self, me: usize, policy: &str) -> String {
        let mut t = format!(
            "[service]\nname = \"test\"\npolicy = \"{policy}\"\n\n[credentials]\nuser = \"root\"\n\n\
             [security]\ntoken = \"{SECRET}\"\n\n\
             [timeouts]\nprobe-interval-ms = {}\nfailover-grace-ms = {}\nconnect-ms = 1000\ndisconnect-ms = 1000\nwait-if-unavailable-ms = 3000\n\n\
             [manager]\nheartbeat-ms = {}\nelection-timeout-ms = {}\nisolated-offline-ms = {}\ndata-dir = \"{}\"\n\n\
             [replicator]\nthl-root = \"{}\"\n\n[connector]\nmax-applied-latency-ms = 60000\n\n",
            self.probe_ms,
            self.grace_ms,
            self.raft.0,
            self.raft.1,
            self.raft.2,
            self.dir.path().join("manager").display(),
            self.dir.path().join("thl").display(),
        );
        for (j, db) in self.dbs.iter().enumerate() {
            let p = &self.ports[j];
            let manager = match self.proxies.get(&(me, j)) {
                Some(proxy) => proxy.port,
                None => p.manager,
            };
            t.push_str(&format!(
                "[[member]]\nname = \"db{}\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{}\"\n\
                 thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{manager}\"\nrole = \"{}\"\n\
                 rw-listen = \"127.0.0.1:{}\"\nro-listen = \"127.0.0.1:{}\"\n\n",
                j + 1,
                db.port,
                p.replicator,
                p.thl,
                if j == 0 { "master" } else { "slave" },
                p.rw,
                p.ro
            ));
        }
        if let Some(port) = self.witness {
            t.push_str(&format!(
                "[[witness]]\nname = \"w1\"\nmanager = \"127.0.0.1:{port}\"\n\n"
            ));
        }
        t
    }

    /// Name and manager port of carbide process i (members, then the witness).
    fn process(&self, i: usize) -> (String, u16) {
        match self.ports.get(i) {
            Some(p) => (format!("db{}", i + 1), p.manager),
            None => ("w1".to_string(), self.witness.expect("a witness")),
        }
    }

    fn spawn_carbide(&self, i: usize) -> Child {
        let (name, port) = self.process(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log file");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(env!("CARGO_BIN_EXE_carbide"))
            .args(["serve", "--member", &name, "--config"])
            .arg(&self.configs[i.min(self.configs.len() - 1)])
            .env("CARBIDE_LOG", "info,openraft=warn,carbide_control=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn carbide");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "carbide {name} did not listen:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("carbide-{}.log", self.process(i).0))
    }

    /// Member i's carbide log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `cctrl -e LINE` against member i's config (any manager answers).
    pub fn cctrl(&self, i: usize, line: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cctrl"))
            .arg("-c")
            .arg(&self.configs[i])
            .args(["-e", line])
            .output()
            .expect("run cctrl")
    }

    /// `cctrl -e LINE` with member 0's config, which must succeed; its
    /// standard output.
    pub fn cctrl_ok(&self, line: &str) -> String {
        self.cctrl_on(0, line)
    }

    /// `cctrl -e LINE` with member i's config, which must succeed.
    pub fn cctrl_on(&self, i: usize, line: &str) -> String {
        let o = self.cctrl(i, line);
        assert!(
            o.status.success(),
            "cctrl -e {line:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until `cctrl ls` satisfies `f`; returns that output.
    pub fn wait_ls(&self, secs: u64, what: &str, f: impl FnMut(&str) -> bool) -> String {
        self.wait_ls_on(0, secs, what, f)
    }

    /// [`Dataservice::wait_ls`] with member i's config.
    pub fn wait_ls_on(
        &self,
        i: usize,
        secs: u64,
        what: &str,
        mut f: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let o = self.cctrl(i, "ls");
            let last;
            if o.status.success() {
                last = String::from_utf8_lossy(&o.stdout).into_owned();
                if f(&last) {
                    return last;
                }
            } else {
                last = String::from_utf8_lossy(&o.stderr).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; last cctrl ls:\n{last}\ndb1 log tail:\n{}",
                tail(&self.log(0), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until some manager answers `cctrl ls` with a coordinator.
    pub fn wait_coordinator(&self, secs: u64) -> String {
        self.wait_ls(secs, "a coordinator elected and the state seeded", |o| {
            o.contains("COORDINATOR[") && !o.contains("COORDINATOR[NONE") && o.contains("(master:")
        })
    }

    /// The coordinator's name per `cctrl ls`.
    pub fn coordinator(&self) -> String {
        let ls = self.wait_coordinator(20);
        ls.split("COORDINATOR[")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .expect("coordinator in ls")
            .to_string()
    }

    /// GET member i's connector `/status` (open, no secret).
    pub fn status(&self, i: usize) -> serde_json::Value {
        let (code, body) = http(self.ports[i].manager, "GET", "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Member i's connector router state (`ONLINE`, `ONHOLD`, `OFFLINE`).
    pub fn router_state(&self, i: usize) -> String {
        self.status(i)["router_state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// kill -9 of member i's carbide.
    pub fn kill9_carbide(&mut self, i: usize) {
        if let Some(mut c) = self.carbides[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (STOP, CONT, ...) to carbide process i.
    pub fn signal(&self, i: usize, sig: rustix::process::Signal) {
        let pid = self.carbides[i].as_ref().expect("running").id();
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            rustix::process::kill_process(pid, sig).expect("signal");
        }
    }

    /// kill -9 of the coordinator's carbide; waits until `cctrl ls` (run
    /// every 20 ms with another member's config) shows another coordinator.
    /// Returns the old coordinator's index and how long that took.
    pub fn kill_coordinator(&mut self, secs: u64) -> (usize, Duration) {
        let leader = self.coordinator();
        let li: usize = leader
            .trim_start_matches("db")
            .parse::<usize>()
            .expect("member index")
            - 1;
        let other = (li + 1) % self.dbs.len();
        let start = Instant::now();
        self.kill9_carbide(li);
        loop {
            let o = self.cctrl(other, "ls");
            let text = String::from_utf8_lossy(&o.stdout);
            if o.status.success()
                && text.contains("COORDINATOR[db")
                && !text.contains(&format!("COORDINATOR[{leader}:"))
            {
                return (li, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no new coordinator {secs} s after kill -9 of {leader}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Who manager i sees as coordinator (`GET /health`).
    pub fn leader_seen_by(&self, i: usize) -> Option<String> {
        let (_, port) = self.process(i);
        let (code, body) = http(port, "GET", "/health", None);
        if code != 200 {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .get("leader")?
            .as_str()
            .map(str::to_string)
    }

    /// Starts member i's carbide again (after a kill).
    pub fn restart_carbide(&mut self, i: usize) {
        self.kill9_carbide(i);
        let c = self.spawn_carbide(i);
        self.carbides[i] = Some(c);
    }

    /// Cuts (or heals) every manager link of member i, both ways.
    pub fn cut(&self, i: usize, mode: Mode) {
        for ((from, to), p) in &self.proxies {
            if *from == i || *to == i {
                p.set(mode);
            }
        }
    }

    /// mysql_async options for member i's connector (rw or ro).
    pub fn opts(&self, i: usize, ro: bool) -> mysql_async::Opts {
        let port = if ro {
            self.ports[i].ro
        } else {
            self.ports[i].rw
        };
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("root"))
            .prefer_socket(false)
            .into()
    }
}

impl Drop for Dataservice {
    fn drop(&mut self) {
        for c in self.carbides.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in &mut self.replicators {
            r.kill9();
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.1 request to 127.0.0.1:port with an empty JSON body;
/// (status, body).
pub fn http(port: u16, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    http_body(port, method, path, bearer, "{}")
}

/// [`http`] with a JSON body.
pub fn http_body(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
