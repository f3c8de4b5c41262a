//! `carbide validate`: pre-flight checks of a dataservice against the real
//! servers and this host (what Tungsten's `tpm validate` does).
//!
//! Facts enter from each member's MariaDB (over mysql_async with the
//! configured credentials), from binding the listen ports of the members on
//! this host, and from the THL directories; [`checks::evaluate`] turns them
//! into one OK/WARN/ERROR line per check, printed to stdout.

pub mod checks;

use carbide_config::{Config, HostPort, Member};
use checks::{Check, Facts, PrivilegedAccount, ServerFacts};
use mysql_async::prelude::Queryable;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Gathers the facts and evaluates them. `members` names the members that
/// run on this host (their ports and THL directories are checked); empty
/// means every member whose addresses are on loopback.
pub async fn run(config: &Config, members: &[String]) -> Vec<Check> {
    let timeout = Duration::from_millis(config.timeouts.connect_ms);
    let shared = std::sync::Arc::new(config.clone());
    let mut probes = tokio::task::JoinSet::new();
    for (i, m) in config.members.iter().enumerate() {
        let (config, m) = (shared.clone(), m.clone());
        probes.spawn(async move {
            let r = match tokio::time::timeout(timeout, server_facts(&config, &m)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer from {} within {} ms",
                    m.mysql,
                    timeout.as_millis()
                )),
            };
            (i, m.name, r)
        });
    }
    let mut servers: Vec<(usize, String, Result<ServerFacts, String>)> = Vec::new();
    while let Some(done) = probes.join_next().await {
        if let Ok(v) = done {
            servers.push(v);
        }
    }
    servers.sort_by_key(|(i, _, _)| *i);
    let servers = servers.into_iter().map(|(_, n, r)| (n, r)).collect();

    let local: Vec<&Member> = config
        .members
        .iter()
        .filter(|m| {
            if members.is_empty() {
                m.replicator.is_local() && m.thl.is_local() && m.manager.is_local()
            } else {
                members.contains(&m.name)
            }
        })
        .collect();
    let mut ports = Vec::new();
    let c = &config.connector;
    let mut listeners = Vec::new();
    for m in &local {
        let (rw, ro) = config.listeners(Some(&m.name));
        listeners.push(("connector.rw-listen".to_string(), rw));
        if c.enable_ro {
            listeners.push(("connector.ro-listen".to_string(), ro));
        }
    }
    if local.is_empty() {
        listeners.push(("connector.rw-listen".to_string(), c.rw_listen.clone()));
        if c.enable_ro {
            listeners.push(("connector.ro-listen".to_string(), c.ro_listen.clone()));
        }
    }
    for (k, a) in listeners {
        if !ports
            .iter()
            .any(|(_, p): &(String, carbide_config::HostPort)| *p == a)
        {
            ports.push((k, a));
        }
    }
    for m in &local {
        ports.push((
            format!("member {}: replicator", m.name),
            m.replicator.clone(),
        ));
        ports.push((format!("member {}: thl", m.name), m.thl.clone()));
        ports.push((format!("member {}: manager", m.name), m.manager.clone()));
    }
    let ports = ports
        .into_iter()
        .map(|(k, a)| {
            let r = port_free(&a);
            (k, a, r)
        })
        .collect();
    let mut thl_dirs = Vec::new();
    for m in &local {
        if let Ok(dir) = config.thl_dir(Some(&m.name)) {
            let r = thl_dir_free_mb(&dir);
            thl_dirs.push((m.name.clone(), dir, r));
        }
    }
    // the config's own validation has already loaded it once
    let app_users = c
        .user_map
        .as_ref()
        .and_then(|p| carbide_config::UserMap::load(&config.resolve(p)).ok())
        .map(|map| map.users.into_iter().map(|u| u.user).collect());
    checks::evaluate(
        config,
        &Facts {
            servers,
            ports,
            thl_dirs,
            app_users,
        },
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Connects to a member's MariaDB with the configured credentials and reads
/// what the checks need.
async fn server_facts(config: &Config, m: &Member) -> Result<ServerFacts, String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(m.mysql.host.clone())
        .tcp_port(m.mysql.port)
        .user(Some(config.credentials.user.clone()))
        .pass(Some(config.credentials.password.clone()))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| {
        format!(
            "cannot connect to {} as '{}': {e}",
            m.mysql, config.credentials.user
        )
    })?;
    let q = "SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image, \
             @@binlog_row_metadata, @@server_id";
    let row: Option<(String, u8, String, String, String, u32)> =
        conn.query_first(q).await.map_err(|e| format!("{q}: {e}"))?;
    let (version, log_bin, binlog_format, binlog_row_image, binlog_row_metadata, server_id) =
        row.ok_or_else(|| format!("{q}: no row"))?;
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| format!("SHOW GRANTS: {e}"))?;
    let before = now_ms();
    let server_ms: Option<i64> = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
        .await
        .map_err(|e| format!("reading the server clock: {e}"))?;
    let after = now_ms();
    let read_only_admins = read_only_admins(&mut conn).await;
    let _ = conn.disconnect().await;
    Ok(ServerFacts {
        version,
        log_bin: log_bin == 1,
        binlog_format,
        binlog_row_image,
        binlog_row_metadata,
        server_id,
        global_privileges: checks::global_privileges(&grants),
        clock_offset_ms: server_ms.unwrap_or(0) - (before + after) / 2,
        read_only_admins,
    })
}

/// The accounts holding `READ_ONLY ADMIN` or `SUPER` (`GRANT ALL ON *.*`
/// gives both), which write through `read_only=ON`.
async fn read_only_admins(conn: &mut mysql_async::Conn) -> Result<Vec<PrivilegedAccount>, String> {
    let q = "SELECT GRANTEE, GROUP_CONCAT(PRIVILEGE_TYPE ORDER BY PRIVILEGE_TYPE SEPARATOR ', ') \
             FROM information_schema.USER_PRIVILEGES \
             WHERE PRIVILEGE_TYPE IN ('READ_ONLY ADMIN', 'SUPER') GROUP BY GRANTEE ORDER BY GRANTEE";
    let rows: Vec<(String, String)> = conn.query(q).await.map_err(|e| format!("{q}: {e}"))?;
    Ok(rows
        .into_iter()
        .map(|(grantee, privileges)| PrivilegedAccount {
            user: checks::grantee_user(&grantee),
            grantee,
            privileges: privileges.split(", ").map(str::to_string).collect(),
        })
        .collect())
}

/// `Ok(None)`: free; `Ok(Some(who))`: a carbide process listens there
/// (this dataservice already running, most likely); `Err`: anything else.
fn port_free(addr: &HostPort) -> Result<Option<String>, String> {
    let host = if addr.host.contains(':') {
        format!("[{}]", addr.host)
    } else {
        addr.host.clone()
    };
    match std::net::TcpListener::bind(format!("{host}:{}", addr.port)) {
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match carbide_listener(addr.port) {
            Some(who) => Ok(Some(who)),
            None => Err("already in use".into()),
        },
        Err(e) => Err(format!("cannot listen: {e}")),
    }
}

/// The carbide process listening on TCP `port` on this host, as
/// `name (pid N)`, from Linux's `/proc` (listening sockets in
/// `/proc/net/tcp{,6}`, their owners among `/proc/<pid>/fd`); `None` when
/// another program holds it or `/proc` does not tell.
fn carbide_listener(port: u16) -> Option<String> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        // sl local_address rem_address st … inode (st 0A = LISTEN)
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(p), Some(&"0A"), Some(inode)) = (local_port, cols.get(3), cols.get(9)) {
                if p == port {
                    sockets.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if sockets.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_dir.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| sockets.iter().any(|s| t.as_os_str() == s.as_str()))
        });
        if holds {
            // the program's file name (`comm` cuts names at 15 bytes)
            let cmdline = std::fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let name = Path::new(&*String::from_utf8_lossy(argv0))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return name
                .starts_with("carbide")
                .then(|| format!("{name} (pid {pid})"));
        }
    }
    None
}

/// Creates the directory if needed, proves it writable, returns free MiB.
fn thl_dir_free_mb(dir: &Path) -> Result<u64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create: {e}"))?;
    let probe = dir.join(".carbide-validate");
    std::fs::write(&probe, b"probe").map_err(|e| format!("not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    let st = rustix::fs::statvfs(dir).map_err(|e| format!("cannot stat: {e}"))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize) / (1024 * 1024))
}
