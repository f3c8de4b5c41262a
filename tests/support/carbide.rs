//! A real `carbide serve` process for end-to-end tests, with a config
//! written from the test's MariaDB servers on free ports.
//!
//! `CarbideConfig::new(&primary).replica(&r).set("timeouts", "disconnect-ms = 1000")`
//! builds the TOML; `.start()` spawns the binary and waits until both
//! listeners and the admin API accept. The helpers talk to it like users do:
//! MySQL clients on `rw`/`ro`, HTTP on the admin port, SIGHUP to reload.
//! Drop sends SIGTERM, then SIGKILL if it has not exited within 5 s.

use super::{free_port, MariaDb};
use mysql_async::{Opts, OptsBuilder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TOML of a dataservice for carbide, built up by a test.
#[derive(Clone)]
pub struct CarbideConfig {
    members: Vec<(String, u16, bool)>,
    tables: BTreeMap<String, Vec<String>>,
    pub rw: u16,
    pub ro: u16,
    pub admin: u16,
}

impl CarbideConfig {
    /// `primary` as member db1 (role master).
    pub fn new(primary: &MariaDb) -> Self {
        Self::with_primary_port(primary.port)
    }

    /// A primary at a bare port (which may have no server behind it).
    pub fn with_primary_port(port: u16) -> Self {
        CarbideConfig {
            members: vec![("db1".into(), port, true)],
            tables: BTreeMap::new(),
            rw: free_port(),
            ro: free_port(),
            admin: free_port(),
        }
    }

    /// Adds a replica member (db2, db3, ...).
    pub fn replica(mut self, r: &MariaDb) -> Self {
        let name = format!("db{}", self.members.len() + 1);
        self.members.push((name, r.port, false));
        self
    }

    /// Adds `line` (e.g. `disconnect-ms = 1000`) to `[table]`.
    pub fn set(mut self, table: &str, line: &str) -> Self {
        self.tables
            .entry(table.into())
            .or_default()
            .push(line.into());
        self
    }

    /// Adds a replica member at a bare port (a fault proxy, or nothing).
    pub fn replica_port(mut self, port: u16) -> Self {
        let name = format!("db{}", self.members.len() + 1);
        self.members.push((name, port, false));
        self
    }

    /// Makes member `name` the master and every other one a slave.
    pub fn promote(mut self, name: &str) -> Self {
        for m in &mut self.members {
            m.2 = m.0 == name;
        }
        self
    }

    /// The TOML text.
    pub fn text(&self) -> String {
        let mut t =
            String::from("[service]\nname = \"test\"\n\n[credentials]\nuser = \"root\"\n\n");
        let mut connector = vec![
            format!("rw-listen = \"127.0.0.1:{}\"", self.rw),
            format!("ro-listen = \"127.0.0.1:{}\"", self.ro),
        ];
        if let Some(extra) = self.tables.get("connector") {
            connector.extend(extra.iter().cloned());
        }
        t.push_str(&format!("[connector]\n{}\n\n", connector.join("\n")));
        for (table, lines) in &self.tables {
            if table != "connector" {
                t.push_str(&format!("[{table}]\n{}\n\n", lines.join("\n")));
            }
        }
        for (i, (name, port, master)) in self.members.iter().enumerate() {
            let manager = if i == 0 { self.admin } else { free_port() };
            t.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nmysql = \"127.0.0.1:{port}\"\nreplicator = \"127.0.0.1:{}\"\nthl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{manager}\"\nrole = \"{}\"\n\n",
                free_port(),
                free_port(),
                if *master { "master" } else { "slave" }
            ));
        }
        t
    }

    /// Writes the config and starts carbide on it.
    pub async fn start(self) -> Carbide {
        let dir = tempfile::Builder::new()
            .prefix("carbide-test-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("carbide.toml");
        std::fs::write(&path, self.text()).expect("write config");
        let log = dir.path().join("carbide.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_carbide"))
            .args(["serve", "--static-routing", "--member", "db1", "--config"])
            .arg(&path)
            .env("CARBIDE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn carbide");
        let mut c = Carbide {
            child,
            cfg: self,
            path,
            log,
            dir,
        };
        c.wait_ready();
        c
    }
}

/// A running carbide.
pub struct Carbide {
    child: Child,
    /// The config it runs with.
    pub cfg: CarbideConfig,
    /// Its config file.
    pub path: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Carbide {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        // probe each port until it answers; count the probes that connected
        let mut probes = [0u64; 2];
        for (i, port) in [(2, self.cfg.admin), (0, self.cfg.rw), (1, self.cfg.ro)] {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("carbide exited ({status}):\n{}", self.log_text());
                }
                if up(port) {
                    if i < 2 {
                        probes[i] += 1;
                    }
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "carbide did not start listening:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // the probes were sessions too: wait until carbide has accepted and
        // let go of every one, so tests start from zero open sessions
        loop {
            let m = self.metrics();
            let accepted = |l: &str| {
                let key =
                    format!("carbide_connector_connections_accepted_total{{listener=\"{l}\"}} ");
                m.lines()
                    .find_map(|x| x.strip_prefix(&key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if accepted("rw") == probes[0]
                && accepted("ro") == probes[1]
                && self.status()["open_sessions"].as_u64() == Some(0)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "probe sessions never closed:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its directory (config, log, certs a test puts there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// mysql_async options for the read-write listener.
    pub fn rw_opts(&self) -> Opts {
        opts(self.cfg.rw)
    }

    /// mysql_async options for the read-only listener.
    pub fn ro_opts(&self) -> Opts {
        opts(self.cfg.ro)
    }

    /// Open file descriptors of the carbide process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the carbide process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// A plain HTTP request to the admin API; returns (status, body).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        super::dataservice::http_body(self.cfg.admin, method, path, None, "")
    }

    /// Sets the router state through the admin API.
    pub fn router(&self, state: &str) {
        let (code, body) = self.http("POST", &format!("/router/{state}"));
        assert_eq!(code, 200, "{body}");
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.http("GET", "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        self.http("GET", "/metrics").1
    }

    /// Rewrites the config and sends SIGHUP; waits until the routing epoch moved.
    pub fn reload(&mut self, cfg: CarbideConfig) {
        let before = self.status()["routing_epoch"].as_u64().unwrap_or(0);
        let (rw, ro, admin) = (self.cfg.rw, self.cfg.ro, self.cfg.admin);
        self.cfg = CarbideConfig {
            rw,
            ro,
            admin,
            ..cfg
        };
        std::fs::write(&self.path, self.cfg.text()).expect("write config");
        signal(self.pid(), rustix::process::Signal::HUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status()["routing_epoch"].as_u64().unwrap_or(0) == before {
            assert!(
                Instant::now() < deadline,
                "SIGHUP not applied:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait for exit (up to `within`); returns whether it exited.
    pub fn stop(&mut self, within: Duration) -> bool {
        signal(self.pid(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn opts(port: u16) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .into()
}

impl Drop for Carbide {
    fn drop(&mut self) {
        if !self.stop(Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `carbide tls-certs --out dir` (a self-signed CA and a server
/// certificate for 127.0.0.1/localhost) and panics with its stderr if it fails.
pub fn tls_certs(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_carbide"))
        .args(["tls-certs", "--out"])
        .arg(dir)
        .output()
        .expect("run carbide tls-certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
