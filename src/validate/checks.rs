//! The decisions of `carbide validate`: facts gathered from the servers and
//! this host go in ([`Facts`]), a list of [`Check`] results comes out.
//!
//! Pure: no sockets, no clocks. `validate/mod.rs` gathers the facts; the
//! unit tests below feed hand-made facts.

use carbide_config::{Config, HostPort};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// How bad a check result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As required.
    Ok,
    /// Works, but not as recommended.
    Warn,
    /// carbide will not work until this is fixed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// One line of `carbide validate` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// OK / WARN / ERROR.
    pub level: Level,
    /// What it is about: a member name, or `local` for this host.
    pub subject: String,
    /// Which check (`binlog_format`, `grants`, `port`, ...).
    pub name: &'static str,
    /// What was found.
    pub found: String,
    /// How to fix it (for WARN and ERROR).
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5} {:<8} {:<20} {}",
            self.level, self.subject, self.name, self.found
        )?;
        if let Some(fix) = &self.fix {
            write!(f, " -- fix: {fix}")?;
        }
        Ok(())
    }
}

/// An account that holds privileges which pass over `read_only=ON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedAccount {
    /// As the server writes it: `'app'@'%'`.
    pub grantee: String,
    /// The user name alone: `app`.
    pub user: String,
    /// Which of `READ_ONLY ADMIN` and `SUPER` it holds.
    pub privileges: Vec<String>,
}

/// What one member's MariaDB told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `@@version`.
    pub version: String,
    /// `@@log_bin`.
    pub log_bin: bool,
    /// `@@binlog_format`.
    pub binlog_format: String,
    /// `@@binlog_row_image`.
    pub binlog_row_image: String,
    /// `@@binlog_row_metadata` (empty on servers without it).
    pub binlog_row_metadata: String,
    /// `@@server_id`.
    pub server_id: u32,
    /// Global privileges of the configured user (upper case, from SHOW GRANTS
    /// on `*.*`), e.g. `ALL PRIVILEGES`, `REPLICATION SLAVE`.
    pub global_privileges: Vec<String>,
    /// Server clock minus our clock, in ms (midpoint of the round trip).
    pub clock_offset_ms: i64,
    /// Every account holding `READ_ONLY ADMIN` or `SUPER` on `*.*`, or why
    /// they could not be read.
    pub read_only_admins: Result<Vec<PrivilegedAccount>, String>,
}

/// Everything `validate` looked at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Per member (config order): the server facts, or why we could not get them.
    pub servers: Vec<(String, Result<ServerFacts, String>)>,
    /// Listen addresses on this host: (config key, address, bind result).
    /// `Ok(Some(who))`: held by a carbide process.
    pub ports: Vec<(String, HostPort, Result<Option<String>, String>)>,
    /// THL directories on this host: (member, dir, free MiB or the error).
    pub thl_dirs: Vec<(String, PathBuf, Result<u64, String>)>,
    /// The application users of the connector's `user.map`, when it has one.
    pub app_users: Option<Vec<String>>,
}

/// Accounts that are not the application's: the server's own and carbide's.
const ADMIN_ACCOUNTS: &[&str] = &["root", "mysql", "mariadb.sys"];

/// Privileges the manager and replicator need; each entry lists the names
/// that satisfy it (MariaDB renamed some in 10.5).
const REQUIRED: &[(&str, &[&str])] = &[
    ("REPLICATION SLAVE", &["REPLICATION SLAVE"]),
    (
        "REPLICATION CLIENT",
        &["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"],
    ),
    ("SUPER or READ_ONLY ADMIN", &["SUPER", "READ_ONLY ADMIN"]),
    ("SELECT", &["SELECT"]),
    ("INSERT", &["INSERT"]),
    ("UPDATE", &["UPDATE"]),
    ("DELETE", &["DELETE"]),
    ("CREATE", &["CREATE"]),
    ("DROP", &["DROP"]),
    ("ALTER", &["ALTER"]),
    ("INDEX", &["INDEX"]),
];

/// Evaluates the facts against the config.
pub fn evaluate(config: &Config, facts: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let user = &config.credentials.user;
    let mut ids: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    let mut offsets = Vec::new();
    for (member, result) in &facts.servers {
        let mut push = |level, name, found: String, fix: Option<String>| {
            out.push(Check {
                level,
                subject: member.clone(),
                name,
                found,
                fix,
            })
        };
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                push(
                    Level::Error,
                    "connect",
                    e.clone(),
                    Some(format!("start the server, and check [credentials] user '{user}' can log in from this host")),
                );
                continue;
            }
        };
        push(
            Level::Ok,
            "connect",
            format!("MariaDB {} as '{user}'", s.version),
            None,
        );
        if s.log_bin {
            push(Level::Ok, "log_bin", "ON".into(), None);
        } else {
            push(
                Level::Error,
                "log_bin",
                "OFF".into(),
                Some("add log-bin to the server's [mariadbd] options and restart".into()),
            );
        }
        if s.binlog_format.eq_ignore_ascii_case("ROW") {
            push(Level::Ok, "binlog_format", "ROW".into(), None);
        } else {
            push(
                Level::Error,
                "binlog_format",
                s.binlog_format.clone(),
                Some("set binlog_format=ROW (SET GLOBAL binlog_format='ROW' and in the server's options)".into()),
            );
        }
        if s.binlog_row_image.eq_ignore_ascii_case("FULL") {
            push(Level::Ok, "binlog_row_image", "FULL".into(), None);
        } else {
            push(
                Level::Error,
                "binlog_row_image",
                s.binlog_row_image.clone(),
                Some("set binlog_row_image=FULL (SET GLOBAL and in the server's options)".into()),
            );
        }
        if s.binlog_row_metadata.eq_ignore_ascii_case("FULL") {
            push(Level::Ok, "binlog_row_metadata", "FULL".into(), None);
        } else {
            push(
                Level::Warn,
                "binlog_row_metadata",
                s.binlog_row_metadata.clone(),
                Some("set binlog_row_metadata=FULL so column names come with each row event (otherwise read from information_schema)".into()),
            );
        }
        if s.server_id == 0 {
            push(
                Level::Error,
                "server_id",
                "0".into(),
                Some("give every member a unique non-zero server_id".into()),
            );
        } else {
            ids.entry(s.server_id).or_default().push(member);
        }
        let missing: Vec<&str> = REQUIRED
            .iter()
            .filter(|(_, any)| {
                !s.global_privileges
                    .iter()
                    .any(|p| p == "ALL PRIVILEGES" || any.contains(&p.as_str()))
            })
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            push(
                Level::Ok,
                "grants",
                format!("'{user}' has the privileges it needs"),
                None,
            );
        } else {
            push(
                Level::Error,
                "grants",
                format!("'{user}' lacks {} on *.*", missing.join(", ")),
                Some(format!(
                    "GRANT ALL PRIVILEGES ON *.* TO '{user}'@'<host>' WITH GRANT OPTION"
                )),
            );
        }
        let replay = s
            .global_privileges
            .iter()
            .any(|p| matches!(p.as_str(), "ALL PRIVILEGES" | "SUPER" | "BINLOG REPLAY"));
        if replay {
            push(
                Level::Ok,
                "row-events",
                format!("'{user}' may apply row events (BINLOG REPLAY)"),
                None,
            );
        } else {
            push(
                Level::Warn,
                "row-events",
                format!(
                    "'{user}' lacks BINLOG REPLAY (or SUPER): a replica's applier falls back \
                     to applying rows as SQL, which is slower"
                ),
                Some(format!("GRANT BINLOG REPLAY ON *.* TO '{user}'@'<host>'")),
            );
        }
        offsets.push((member.as_str(), s.clock_offset_ms));
    }
    for (id, members) in &ids {
        let subject = members.join(",");
        if members.len() > 1 {
            out.push(Check {
                level: Level::Error,
                subject,
                name: "server_id",
                found: format!("{id} is used by {}", members.join(" and ")),
                fix: Some("give every member a unique non-zero server_id".into()),
            });
        } else {
            out.push(Check {
                level: Level::Ok,
                subject,
                name: "server_id",
                found: format!("{id} (unique)"),
                fix: None,
            });
        }
    }
    if offsets.len() > 1 {
        let (lo_m, lo) = offsets
            .iter()
            .min_by_key(|(_, o)| *o)
            .copied()
            .unwrap_or(("", 0));
        let (hi_m, hi) = offsets
            .iter()
            .max_by_key(|(_, o)| *o)
            .copied()
            .unwrap_or(("", 0));
        let skew = hi - lo;
        let max = config.validate.max_clock_skew_ms as i64;
        let found = format!("{skew} ms between {hi_m} and {lo_m} (limit {max} ms)");
        if skew > max {
            out.push(Check {
                level: Level::Error,
                subject: "all".into(),
                name: "clock_skew",
                found,
                fix: Some("synchronise the members' clocks (NTP/chrony), or raise validate.max-clock-skew-ms".into()),
            });
        } else {
            out.push(Check {
                level: Level::Ok,
                subject: "all".into(),
                name: "clock_skew",
                found,
                fix: None,
            });
        }
    }
    for (key, addr, result) in &facts.ports {
        out.push(match result {
            Ok(None) => Check {
                level: Level::Ok,
                subject: "local".into(),
                name: "port",
                found: format!("{key} {addr} is free"),
                fix: None,
            },
            Ok(Some(who)) => Check {
                level: Level::Warn,
                subject: "local".into(),
                name: "port",
                found: format!("{key} {addr}: in use by {who}"),
                fix: Some(format!(
                    "nothing, if that is this dataservice running; else stop it or change {key}"
                )),
            },
            Err(e) => Check {
                level: Level::Error,
                subject: "local".into(),
                name: "port",
                found: format!("{key} {addr}: {e}"),
                fix: Some(format!("stop what listens there, or change {key}")),
            },
        });
    }
    let need = config.validate.min_thl_free_mb;
    for (member, dir, result) in &facts.thl_dirs {
        let d = dir.display();
        out.push(match result {
            Ok(free) if *free >= need => Check { level: Level::Ok, subject: member.clone(), name: "thl_dir", found: format!("{d} writable, {free} MiB free"), fix: None },
            Ok(free) => Check {
                level: Level::Error,
                subject: member.clone(),
                name: "thl_dir",
                found: format!("{d} has {free} MiB free, needs {need} MiB"),
                fix: Some("free space there, move replicator.thl-root / member thl-dir, or lower validate.min-thl-free-mb".into()),
            },
            Err(e) => Check {
                level: Level::Error,
                subject: member.clone(),
                name: "thl_dir",
                found: format!("{d}: {e}"),
                fix: Some("create the directory and make it writable by the replicator's user".into()),
            },
        });
    }
    out.extend(read_only_bypass(config, facts));
    out
}

/// One line per primary: do application accounts (those of `user.map`, and
/// any other account than the server's own and carbide's) hold a privilege
/// that writes through `read_only=ON`?
fn read_only_bypass(config: &Config, facts: &Facts) -> Vec<Check> {
    let carbide_user = config.credentials.user.as_str();
    let mut out = Vec::new();
    for (member, result) in &facts.servers {
        let primary = config
            .member(member)
            .is_some_and(|m| m.role == carbide_config::Role::Master);
        let Some(Ok(s)) = primary.then_some(result) else {
            continue;
        };
        let check = |level, found: String, fix: Option<String>| Check {
            level,
            subject: member.clone(),
            name: "read_only_bypass",
            found,
            fix,
        };
        let accounts = match &s.read_only_admins {
            Ok(a) => a,
            Err(e) => {
                out.push(check(
                    Level::Warn,
                    format!("cannot list the accounts that hold READ_ONLY ADMIN or SUPER: {e}"),
                    Some(format!("let '{carbide_user}' read mysql.* (GRANT SELECT ON mysql.* TO '{carbide_user}'@'<host>')")),
                ));
                continue;
            }
        };
        let mapped = |user: &str| {
            facts
                .app_users
                .as_ref()
                .is_some_and(|u| u.iter().any(|x| x == user))
        };
        let apps: Vec<&PrivilegedAccount> = accounts
            .iter()
            .filter(|a| {
                mapped(&a.user)
                    || (a.user != carbide_user && !ADMIN_ACCOUNTS.contains(&a.user.as_str()))
            })
            .collect();
        let Some(first) = apps.first() else {
            out.push(check(
                Level::Ok,
                "no application account holds READ_ONLY ADMIN or SUPER".into(),
                None,
            ));
            continue;
        };
        let names: Vec<String> = apps
            .iter()
            .map(|a| {
                let from_map = if mapped(&a.user) { ", user.map" } else { "" };
                format!("{} ({}{from_map})", a.grantee, a.privileges.join(", "))
            })
            .collect();
        out.push(check(
            Level::Warn,
            format!(
                "{} can write while read_only=ON: on a replica only the connector's read-only \
                 port keeps them from writing (a direct connection writes and the replica \
                 diverges), and read_only alone does not fence an old primary from them",
                names.join(", ")
            ),
            Some(format!(
                "grant applications their schemas, not *.* (GRANT ALL ON *.* includes READ_ONLY \
                 ADMIN in MariaDB 10.11, SUPER before): e.g. GRANT ALL PRIVILEGES ON app_db.* TO \
                 {g}, or REVOKE READ_ONLY ADMIN, SUPER ON *.* FROM {g}",
                g = first.grantee
            )),
        ));
    }
    out
}

/// The user name in a grantee as `information_schema` writes it
/// (`'app'@'%'` → `app`; a quote inside a name is doubled).
pub fn grantee_user(grantee: &str) -> String {
    let user = match grantee.rsplit_once("@'") {
        Some((u, _)) => u,
        None => grantee,
    };
    user.trim_start_matches('\'')
        .trim_end_matches('\'')
        .replace("''", "'")
}

/// The global privileges in SHOW GRANTS lines: the comma list between
/// `GRANT` and `ON *.*`, upper-cased.
pub fn global_privileges(grants: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for g in grants {
        let upper = g.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, _)) = rest.split_once(" ON *.* ") else {
            continue;
        };
        out.extend(
            privs
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        let mut text =
            String::from("[service]\nname = \"alpha\"\n[credentials]\nuser = \"tungsten\"\n");
        for (i, name) in ["db1", "db2"].iter().enumerate() {
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nmysql = \"h{i}:3306\"\nreplicator = \"h{i}:10000\"\nthl = \"h{i}:2112\"\nmanager = \"h{i}:11999\"\nrole = \"{}\"\n",
                if i == 0 { "master" } else { "slave" }
            ));
        }
        Config::parse(&text, Path::new("c.toml")).unwrap()
    }

    fn good(id: u32) -> ServerFacts {
        ServerFacts {
            version: "10.11.19".into(),
            log_bin: true,
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            binlog_row_metadata: "FULL".into(),
            server_id: id,
            global_privileges: vec!["ALL PRIVILEGES".into()],
            clock_offset_ms: 0,
            read_only_admins: Ok(vec![account("root", "localhost"), account("tungsten", "%")]),
        }
    }

    fn account(user: &str, host: &str) -> PrivilegedAccount {
        PrivilegedAccount {
            grantee: format!("'{user}'@'{host}'"),
            user: user.into(),
            privileges: vec!["READ_ONLY ADMIN".into(), "SUPER".into()],
        }
    }

    fn bypass_line(checks: &[Check]) -> Vec<&Check> {
        checks
            .iter()
            .filter(|c| c.name == "read_only_bypass")
            .collect()
    }

    #[test]
    fn application_accounts_that_pass_over_read_only_are_a_warning_on_the_primary() {
        // the server's and carbide's own accounts are not the application's
        let facts = Facts {
            servers: vec![("db1".into(), Ok(good(1))), ("db2".into(), Ok(good(2)))],
            ..Facts::default()
        };
        let checks = evaluate(&config(), &facts);
        let l = bypass_line(&checks);
        assert_eq!(l.len(), 1, "the primary only: {l:?}");
        assert_eq!((l[0].level, l[0].subject.as_str()), (Level::Ok, "db1"));

        // an app account with GRANT ALL on the primary, one more in user.map
        let mut primary = good(1);
        primary.read_only_admins = Ok(vec![
            account("root", "localhost"),
            account("app", "%"),
            account("report", "10.0.0.%"),
        ]);
        let facts = Facts {
            servers: vec![("db1".into(), Ok(primary)), ("db2".into(), Ok(good(2)))],
            app_users: Some(vec!["report".into()]),
            ..Facts::default()
        };
        let checks = evaluate(&config(), &facts);
        let l = bypass_line(&checks);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].level, Level::Warn);
        assert!(
            l[0].found.starts_with(
                "'app'@'%' (READ_ONLY ADMIN, SUPER), 'report'@'10.0.0.%' (READ_ONLY ADMIN, SUPER, user.map) can write while read_only=ON"
            ),
            "{}",
            l[0]
        );
        let fix = l[0].fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("GRANT ALL PRIVILEGES ON app_db.* TO 'app'@'%'"),
            "{fix}"
        );
        assert!(
            fix.contains("REVOKE READ_ONLY ADMIN, SUPER ON *.* FROM 'app'@'%'"),
            "{fix}"
        );
        assert!(!errors(&checks)
            .iter()
            .any(|(_, n)| *n == "read_only_bypass"));
    }

    #[test]
    fn grantee_user_names() {
        assert_eq!(grantee_user("'app'@'%'"), "app");
        assert_eq!(grantee_user("'o''brien'@'10.0.0.1'"), "o'brien");
        assert_eq!(grantee_user("'we@ird'@'h'"), "we@ird");
    }

    fn errors(checks: &[Check]) -> Vec<(String, &'static str)> {
        checks
            .iter()
            .filter(|c| c.level == Level::Error)
            .map(|c| (c.subject.clone(), c.name))
            .collect()
    }

    #[test]
    fn healthy_servers_give_no_error() {
        let facts = Facts {
            servers: vec![("db1".into(), Ok(good(1))), ("db2".into(), Ok(good(2)))],
            ..Facts::default()
        };
        let checks = evaluate(&config(), &facts);
        assert!(errors(&checks).is_empty(), "{checks:#?}");
        assert!(checks
            .iter()
            .any(|c| c.name == "clock_skew" && c.level == Level::Ok));
    }

    #[test]
    fn each_misconfiguration_is_an_error() {
        let mut bad = good(1);
        bad.log_bin = false;
        bad.binlog_format = "STATEMENT".into();
        bad.binlog_row_image = "MINIMAL".into();
        bad.global_privileges = vec!["SELECT".into(), "REPLICATION SLAVE".into()];
        bad.clock_offset_ms = 5000;
        let facts = Facts {
            servers: vec![("db1".into(), Ok(bad)), ("db2".into(), Ok(good(1)))],
            ports: vec![(
                "connector.rw-listen".into(),
                HostPort::new("127.0.0.1", 1),
                Err("address in use".into()),
            )],
            thl_dirs: vec![("db1".into(), PathBuf::from("/thl"), Ok(10))],
            app_users: None,
        };
        let checks = evaluate(&config(), &facts);
        let errs = errors(&checks);
        for want in ["log_bin", "binlog_format", "binlog_row_image", "grants"] {
            assert!(errs.contains(&("db1".into(), want)), "{want}: {errs:?}");
        }
        assert!(errs.contains(&("db1,db2".into(), "server_id")));
        assert!(errs.contains(&("all".into(), "clock_skew")));
        assert!(errs.contains(&("local".into(), "port")));
        assert!(errs.contains(&("db1".into(), "thl_dir")));
        let grants = checks.iter().find(|c| c.name == "grants").unwrap();
        assert_eq!(
            grants.found,
            "'tungsten' lacks REPLICATION CLIENT, SUPER or READ_ONLY ADMIN, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX on *.*"
        );
    }

    #[test]
    fn unreachable_member_is_an_error_with_a_fix() {
        let facts = Facts {
            servers: vec![("db1".into(), Err("connection refused".into()))],
            ..Facts::default()
        };
        let checks = evaluate(&config(), &facts);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].level, Level::Error);
        assert!(checks[0].to_string().starts_with(
            "ERROR db1      connect              connection refused -- fix: start the server"
        ));
    }

    #[test]
    fn grants_are_read_from_show_grants() {
        let g = vec![
            "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `t`@`%` IDENTIFIED BY PASSWORD '*X'".to_string(),
            "GRANT ALL PRIVILEGES ON `tungsten_alpha`.* TO `t`@`%`".to_string(),
        ];
        assert_eq!(
            global_privileges(&g),
            vec!["SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"]
        );
    }
}
