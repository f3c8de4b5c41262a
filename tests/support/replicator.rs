//! Running `carbide-replicator` daemons and `trepctl` as real processes.
//!
//! `Replicator::start(config, member, admin_port, log, extra_args)` builds the
//! replicator binaries on first use, starts the daemon under
//! `setpriv --pdeathsig KILL` and waits for its admin port; `kill9()` and
//! `spawn()` kill and restart it. `trepctl_ok(port, args)` runs `trepctl`
//! and returns its output; `status(port)` parses `trepctl status -json`.
//!
//! Test configs carry a dataservice secret like real ones: [`security`]
//! writes `DIR/secret` and returns the `[security]` table naming it, and
//! `trepctl(port, …)` passes `-conf` with the config the daemon on that
//! port was started with ([`register`]), so the tool reads the secret the
//! way an operator's would.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Path of a `carbide-replicator` package binary, built on first use.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "carbide-replicator", "--bins"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "building carbide-replicator binaries failed");
        dir
    });
    dir.join(name)
}

/// The `[security]` table for a test config in `dir`: writes `dir/secret`
/// (mode 600, 32 hex digits, different per call site and run) unless it
/// exists, so every config of one directory shares one secret.
pub fn security(dir: &Path) -> String {
    let path = dir.join("secret");
    if !path.exists() {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(dir.as_os_str().as_encoded_bytes());
        let a = h.finish();
        h.write_u64(a);
        let secret = format!("{a:016x}{:016x}", h.finish());
        std::fs::write(&path, secret).expect("write secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod secret");
    }
    "\n[security]\ntoken-file = \"secret\"\n".to_string()
}

/// The secret [`security`] wrote into `dir`.
pub fn secret_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("secret"))
        .expect("read secret")
        .trim()
        .to_string()
}

fn configs() -> &'static Mutex<HashMap<u16, PathBuf>> {
    static MAP: OnceLock<Mutex<HashMap<u16, PathBuf>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// Remembers that the replicator on admin `port` runs with `config`, for
/// [`trepctl`].
pub fn register(port: u16, config: &Path) {
    if let Ok(mut m) = configs().lock() {
        m.insert(port, config.to_path_buf());
    }
}

/// The config registered for admin `port`.
pub fn config_of(port: u16) -> Option<PathBuf> {
    configs().lock().ok().and_then(|m| m.get(&port).cloned())
}

/// One `carbide-replicator` process.
pub struct Replicator {
    child: Option<Child>,
    config: PathBuf,
    member: String,
    /// Admin API port.
    pub port: u16,
    log: PathBuf,
    extra: Vec<String>,
}

impl Replicator {
    /// Starts the daemon for `member` and waits for its admin port.
    pub fn start(config: &Path, member: &str, port: u16, log: &Path, extra: &[&str]) -> Self {
        let mut d = Replicator {
            child: None,
            config: config.to_path_buf(),
            member: member.into(),
            port,
            log: log.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        register(port, config);
        d.spawn();
        d
    }

    /// (Re)starts the process.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(bin("carbide-replicator"))
            .arg("--config")
            .arg(&self.config)
            .args(["--member", &self.member, "--heartbeat-period-ms", "500"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn carbide-replicator");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "replicator did not listen: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// [`Replicator::log_text`] without terminal colour codes (fields read
    /// `name=value`).
    pub fn log_plain(&self) -> String {
        let text = self.log_text();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // ESC [ parameters… final letter
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `trepctl [-conf CONFIG] -port PORT ARGS…` (`-conf` with the
/// config [`register`]ed for the port, which holds the secret).
pub fn trepctl(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("trepctl"));
    if let Some(c) = config_of(port) {
        cmd.arg("-conf").arg(c);
    }
    cmd.env_remove("CARBIDE_SECRET")
        .env_remove("CARBIDE_CONFIG")
        .args(["-host", "127.0.0.1", "-port", &port.to_string()])
        .args(args)
        .output()
        .expect("run trepctl")
}

/// Runs trepctl, asserts success, returns stdout.
pub fn trepctl_ok(port: u16, args: &[&str]) -> String {
    let out = trepctl(port, args);
    assert!(
        out.status.success(),
        "trepctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `trepctl status -json`.
pub fn status(port: u16) -> Value {
    serde_json::from_str(&trepctl_ok(port, &["status", "-json"])).expect("status JSON")
}

/// `trepctl -service SERVICE status -json` of a multi-service process.
pub fn service_status(port: u16, service: &str) -> Value {
    serde_json::from_str(&trepctl_ok(port, &["-service", service, "status", "-json"]))
        .expect("status JSON")
}

/// Waits until `f(status)` holds, up to `secs`; panics with the last status.
pub async fn wait_status(port: u16, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(port);
        if f(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A master and a read-only replica (no native replication between them),
/// [`master_slave_config`] for them in a temp dir, and the master's
/// replicator started and ONLINE. Destructure it in this field order, so
/// the replicator stops before the servers.
pub struct MasterSlave {
    pub master: super::MariaDb,
    pub replica: super::MariaDb,
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    /// Admin ports of the master's and the slave's replicator.
    pub pm: u16,
    pub ps: u16,
    pub d1: Replicator,
}

/// Starts a [`MasterSlave`].
pub async fn master_slave_online() -> MasterSlave {
    let master = super::MariaDb::start().await;
    let replica = super::MariaDb::builder()
        .arg("--read-only=ON")
        .start()
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (cfg, pm, ps) = master_slave_config(dir.path(), &master, &replica);
    let d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    MasterSlave {
        master,
        replica,
        dir,
        cfg,
        pm,
        ps,
        d1,
    }
}

/// Writes `dir/carbide.toml` for service `alpha`: member db1 (master) on
/// `master`, db2 (slave) on `replica`, THL under `dir/thl`, free ports for
/// everything else. Returns the path and the two replicator admin ports.
pub fn master_slave_config(
    dir: &Path,
    master: &super::MariaDb,
    replica: &super::MariaDb,
) -> (PathBuf, u16, u16) {
    use super::free_port;
    let (pm, ps) = (free_port(), free_port());
    let text = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n\
         [[member]]\nname = \"db1\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{pm}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"master\"\n\n\
         [[member]]\nname = \"db2\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{ps}\"\n\
         thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"slave\"\n{}",
        dir.join("thl").display(),
        master.port,
        free_port(),
        free_port(),
        replica.port,
        free_port(),
        free_port(),
        security(dir),
    );
    let p = dir.join("carbide.toml");
    std::fs::write(&p, text).expect("write config");
    (p, pm, ps)
}

/// The seqno named in an applier error ("apply failed at seqno N ...").
pub fn failed_seqno(error: &str) -> i64 {
    error
        .split("seqno ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seqno in {error:?}"))
}
