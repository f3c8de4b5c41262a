//! Tungsten's output layout for `cctrl`: `ls` boxes, `members`, command
//! confirmations. Pure: a [`ClusterView`] in, text out. Golden files in
//! `control/tests/golden/` pin every layout (`UPDATE_GOLDEN=1 cargo test -p
//! carbide-control golden` rewrites them after a deliberate change).

use crate::monitor::{DbHealth, DownKind};
use crate::policy::DsAction;
use crate::view::{ClusterView, LiveDatasource};
use carbide_config::{DatasourceState, PolicyMode, Role, RouterState};
use std::fmt::Write;

/// Inner width of an `ls` box (between the `|`s).
const WIDTH: usize = 76;

fn rule(out: &mut String) {
    out.push('+');
    out.push_str(&"-".repeat(WIDTH));
    out.push_str("+\n");
}

fn line(out: &mut String, text: &str) {
    let pad = WIDTH.saturating_sub(text.chars().count());
    let _ = writeln!(out, "|{text}{}|", " ".repeat(pad));
}

/// `2026/12/03 09:11:10 PM UTC` for ms since the Unix epoch.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let (h12, ampm) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!("{y:04}/{mo:02}/{d:02} {h12:02}:{m:02}:{s:02} {ampm} UTC")
}

fn coordinator(v: &ClusterView) -> String {
    let policy = v.state.policy.unwrap_or(PolicyMode::Automatic);
    match &v.coordinator {
        Some(c) => format!("COORDINATOR[{c}:{policy}:ONLINE]"),
        None => format!("COORDINATOR[NONE:{policy}:OFFLINE]"),
    }
}

fn dataserver_state(db: Option<&DbHealth>) -> &'static str {
    match db {
        Some(DbHealth::Up { .. }) => "ONLINE",
        Some(DbHealth::Down {
            kind: DownKind::Refused,
            ..
        }) => "STOPPED",
        Some(DbHealth::Down {
            kind: DownKind::Timeout,
            ..
        }) => "UNREACHABLE",
        Some(DbHealth::Down {
            kind: DownKind::Error,
            ..
        }) => "ERROR",
        None => "UNKNOWN",
    }
}

fn status_word(s: &DatasourceState) -> &'static str {
    match s {
        DatasourceState::Online => "OK",
        DatasourceState::Offline => "OFFLINE",
        DatasourceState::Shunned(_) => "SHUNNED",
        DatasourceState::Failed(_) => "CRITICAL",
    }
}

fn datasource_box(out: &mut String, v: &ClusterView, name: &str, long: bool) {
    let Some(rec) = v.state.datasources.get(name) else {
        return;
    };
    let missing = LiveDatasource {
        manager_online: false,
        db: None,
        replicator: Err("not probed yet".into()),
        active: 0,
        created: 0,
    };
    let live = v.live.get(name).unwrap_or(&missing);
    let (progress, latency) = match &live.replicator {
        Ok(r) => (r.applied_last_seqno, r.applied_latency),
        Err(_) => (-1, -1.0),
    };
    let lat_word = if rec.role == Role::Master {
        "THL latency"
    } else {
        "latency"
    };
    line(
        out,
        &format!(
            "{name}({}:{}, progress={progress}, {lat_word}={latency:.3})",
            rec.role, rec.state
        ),
    );
    line(
        out,
        &format!(
            "STATUS [{}] [{}]",
            status_word(&rec.state),
            timestamp(v.at_ms)
        ),
    );
    if let DatasourceState::Failed(r) | DatasourceState::Shunned(r) = &rec.state {
        line(out, &format!("REASON[{r}]"));
    }
    rule(out);
    line(
        out,
        &format!(
            "  MANAGER(state={})",
            if live.manager_online {
                "ONLINE"
            } else {
                "STOPPED"
            }
        ),
    );
    let master = v.state.primary().map(|(n, _)| n.to_string());
    let repl = match &live.replicator {
        Ok(r) if r.role == "master" => format!("  REPLICATOR(role=master, state={})", r.state),
        Ok(r) => format!(
            "  REPLICATOR(role={}, master={}, state={})",
            r.role,
            master.as_deref().unwrap_or("none"),
            r.state
        ),
        Err(_) => format!("  REPLICATOR(role={}, state=UNREACHABLE)", rec.role),
    };
    line(out, &repl);
    line(
        out,
        &format!("  DATASERVER(state={})", dataserver_state(live.db.as_ref())),
    );
    line(
        out,
        &format!(
            "  CONNECTIONS(created={}, active={})",
            live.created, live.active
        ),
    );
    if long {
        match &live.replicator {
            Ok(r) => {
                line(
                    out,
                    &format!(
                        "  THL(stored={}, master-uri={})",
                        r.maximum_stored_seq_no,
                        if r.master_connect_uri.is_empty() {
                            "none"
                        } else {
                            &r.master_connect_uri
                        }
                    ),
                );
                if !r.pending_error.is_empty() {
                    line(out, &format!("  PENDING ERROR({})", r.pending_error));
                }
            }
            Err(e) => line(out, &format!("  REPLICATOR ERROR({e})")),
        }
        if let Some(DbHealth::Down {
            message, for_ms, ..
        }) = &live.db
        {
            line(
                out,
                &format!("  DATASERVER ERROR({message}, for {} ms)", for_ms),
            );
        }
    }
    rule(out);
}

/// `ls` and `ls -l`.
pub fn ls(v: &ClusterView, long: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", coordinator(v));
    out.push_str("ROUTERS:\n");
    rule(&mut out);
    for (name, router) in &v.state.routers {
        match v.connectors.get(name) {
            Some(c) => line(
                &mut out,
                &format!(
                    "connector@{name}[{}]({}, created={}, active={})",
                    c.pid,
                    c.router.unwrap_or(*router),
                    c.created,
                    c.active
                ),
            ),
            None => line(
                &mut out,
                &format!("connector@{name}({router}, not reporting)"),
            ),
        }
    }
    rule(&mut out);
    out.push_str("\nDATASOURCES:\n");
    rule(&mut out);
    for name in v.state.datasources.keys() {
        datasource_box(&mut out, v, name, long);
    }
    if long && !v.state.history.is_empty() {
        out.push_str("\nRECENT CHANGES:\n");
        for h in &v.state.history {
            let _ = writeln!(
                out,
                "[{}] {} ({}; by {})",
                timestamp(h.at_ms),
                h.what,
                h.reason,
                h.by
            );
        }
    }
    out
}

/// `members`: every manager and whether the coordinator hears from it.
pub fn members(v: &ClusterView, managers: &[(String, String)]) -> String {
    let mut out = String::new();
    let service = &v.state.service;
    let coord = v.coordinator.as_deref().unwrap_or("NONE");
    let _ = writeln!(out, "{service}/{coord}(ONLINE)");
    let online = managers
        .iter()
        .filter(|(n, _)| v.managers_online.contains(n))
        .count();
    let quorum = managers.len() / 2 + 1;
    let ok = if online == managers.len() {
        "OK"
    } else if online >= quorum {
        "WARN"
    } else {
        "CRITICAL"
    };
    let _ = writeln!(out, "STATUS [{ok}] [{}]", timestamp(v.at_ms));
    let _ = writeln!(
        out,
        "\nMEMBERS ({online} of {} in contact, quorum {quorum}):\n========",
        managers.len()
    );
    for (name, addr) in managers {
        let state = if v.managers_online.contains(name) {
            "ONLINE"
        } else {
            "UNREACHABLE"
        };
        let role = if Some(name.as_str()) == v.coordinator.as_deref() {
            ", COORDINATOR"
        } else {
            ""
        };
        let _ = writeln!(out, "{name}/{addr}({state}{role})");
    }
    out
}

/// What `datasource NAME ACTION` prints when it succeeded.
pub fn datasource_done(name: &str, action: DsAction, service: &str) -> String {
    match action {
        DsAction::Shun => format!("DataSource '{name}' set to SHUNNED\n"),
        DsAction::Fail => format!("DataSource '{name}' set to FAILED\n"),
        DsAction::Offline => format!("DataSource '{name}' is now OFFLINE\n"),
        DsAction::Welcome | DsAction::Online => format!("DataSource '{name}' is now ONLINE\n"),
        DsAction::Recover => format!(
            "RECOVERING DATASOURCE '{name}@{service}'\n\
             VERIFYING THAT WE CAN CONNECT TO DATA SERVER '{name}'\n\
             DATA SERVER '{name}' IS NOW AVAILABLE FOR CONNECTIONS\n\
             DataSource '{name}' is now ONLINE\n\
             RECOVERY OF '{name}@{service}' WAS SUCCESSFUL\n"
        ),
    }
}

/// What `router ... online|offline` prints: one line per connector.
pub fn router_done(names: &[String], to: RouterState) -> String {
    names
        .iter()
        .map(|n| format!("connector@{n}: router is now {to}\n"))
        .collect()
}

/// What `set policy` prints.
pub fn policy_done(now: PolicyMode, was: PolicyMode) -> String {
    format!("policy mode is now {now} (was {was})\n")
}

/// What `replicator NAME online|offline` prints.
pub fn replicator_done(name: &str, state: &str) -> String {
    format!("Replicator '{name}' is now {state}\n")
}

/// `replicator NAME status`: every field of the replicator's status, sorted,
/// in `trepctl status`'s layout.
pub fn replicator_status(v: &serde_json::Value) -> String {
    let mut out = String::from(
        "Processing status command...\nNAME                     VALUE\n----                     -----\n",
    );
    if let Some(obj) = v.as_object() {
        let keys: std::collections::BTreeSet<&String> = obj.keys().collect();
        for k in keys {
            let val = match &obj[k] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(out, "{k:<25}: {val}");
        }
    }
    out.push_str("Finished status command...\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{ConnectorStats, ReplicatorStatus};
    use crate::state::{Change, ClusterState, Command, HistoryEntry};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    pub(crate) fn golden(name: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, actual).expect("write golden");
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(actual, want, "output differs from {}", path.display());
    }

    /// 2026-12-03 21:11:10 UTC
    const AT: u64 = 1_796_332_270_000;

    fn repl(role: &str, seqno: i64, lat: f64) -> Result<ReplicatorStatus, String> {
        Ok(ReplicatorStatus {
            role: role.into(),
            state: "ONLINE".into(),
            applied_last_seqno: seqno,
            applied_latency: lat,
            maximum_stored_seq_no: seqno,
            master_connect_uri: if role == "slave" {
                "thl://127.0.0.1:2112/".into()
            } else {
                String::new()
            },
            pending_error: String::new(),
        })
    }

    pub(crate) fn sample() -> ClusterView {
        let mut state = ClusterState::default();
        state.apply(&Command {
            change: Change::Seed {
                service: "alpha".into(),
                policy: PolicyMode::Automatic,
                datasources: vec![
                    ("db1".into(), Role::Master),
                    ("db2".into(), Role::Slave),
                    ("db3".into(), Role::Slave),
                ],
                routers: vec!["db1".into(), "db2".into(), "db3".into()],
            },
            reason: "first start".into(),
            by: "db1".into(),
            at_ms: AT - 60_000,
        });
        state.apply(&Command {
            change: Change::SetState {
                datasource: "db3".into(),
                state: DatasourceState::Failed("DATASERVER 'db3@alpha' STOPPED".into()),
                expect: None,
            },
            reason: "DATASERVER 'db3@alpha' STOPPED".into(),
            by: "db1".into(),
            at_ms: AT - 5_000,
        });
        let live = |db: Option<DbHealth>, r, created, active| LiveDatasource {
            manager_online: true,
            db,
            replicator: r,
            created,
            active,
        };
        let mut lives = BTreeMap::new();
        lives.insert(
            "db1".to_string(),
            live(
                Some(DbHealth::Up { read_only: false }),
                repl("master", 3, 0.561),
                12,
                3,
            ),
        );
        lives.insert(
            "db2".to_string(),
            live(
                Some(DbHealth::Up { read_only: true }),
                repl("slave", 3, 1.243),
                5,
                1,
            ),
        );
        lives.insert(
            "db3".to_string(),
            live(
                Some(DbHealth::Down {
                    kind: DownKind::Refused,
                    message: "Connection refused (os error 111)".into(),
                    for_ms: 12_000,
                }),
                repl("slave", 3, 0.194),
                2,
                0,
            ),
        );
        let mut connectors = BTreeMap::new();
        connectors.insert(
            "db1".to_string(),
            ConnectorStats {
                pid: 8805,
                router: Some(RouterState::Online),
                created: 12,
                active: 3,
                ..Default::default()
            },
        );
        connectors.insert(
            "db2".to_string(),
            ConnectorStats {
                pid: 8806,
                router: Some(RouterState::Online),
                created: 7,
                active: 1,
                ..Default::default()
            },
        );
        ClusterView {
            coordinator: Some("db1".into()),
            state,
            live: lives,
            connectors,
            managers_online: vec!["db1".into(), "db2".into()],
            at_ms: AT,
        }
    }

    #[test]
    fn timestamps_read_like_tungstens() {
        assert_eq!(timestamp(AT), "2026/12/03 09:11:10 PM UTC");
        assert_eq!(timestamp(0), "1970/01/01 12:00:00 AM UTC");
        assert_eq!(timestamp(951_782_400_000), "2000/02/29 12:00:00 AM UTC");
    }

    #[test]
    fn golden_ls() {
        golden("ls.txt", &ls(&sample(), false));
    }

    #[test]
    fn golden_ls_long() {
        let mut v = sample();
        v.state.history.truncate(0);
        v.state.history.push_back(HistoryEntry {
            what: "datasource db3 FAILED(DATASERVER 'db3@alpha' STOPPED)".into(),
            reason: "DATASERVER 'db3@alpha' STOPPED".into(),
            by: "db1".into(),
            at_ms: AT - 5_000,
        });
        golden("ls-l.txt", &ls(&v, true));
    }

    /// Every command's confirmation, and every parse error, in one file.
    #[test]
    fn golden_commands_and_errors() {
        let mut out = String::new();
        for a in [
            DsAction::Shun,
            DsAction::Welcome,
            DsAction::Online,
            DsAction::Offline,
            DsAction::Fail,
            DsAction::Recover,
        ] {
            let _ = writeln!(out, "> datasource db3 {}", a.word());
            out.push_str(&datasource_done("db3", a, "alpha"));
        }
        let names = vec!["db1".to_string(), "db2".to_string(), "db3".to_string()];
        out.push_str("> router * offline\n");
        out.push_str(&router_done(&names, RouterState::Offline));
        out.push_str("> router db2 online\n");
        out.push_str(&router_done(&names[1..2], RouterState::Online));
        out.push_str("> set policy manual\n");
        out.push_str(&policy_done(PolicyMode::Manual, PolicyMode::Automatic));
        out.push_str("> replicator db2 offline\n");
        out.push_str(&replicator_done("db2", "OFFLINE"));
        out.push_str("> replicator db2 status\n");
        out.push_str(&replicator_status(&serde_json::json!({
            "role": "slave", "state": "ONLINE", "appliedLastSeqno": 14, "appliedLatency": 0.686
        })));
        out.push_str("> help\n");
        out.push_str(crate::cctrl::HELP);
        out.push('\n');
        for bad in [
            "",
            "lsx",
            "ls -x",
            "use",
            "set policy sometimes",
            "set mode manual",
            "datasource db3",
            "datasource db3 explode",
            "replicator db3",
            "replicator db3 restart",
            "router offline",
            "router * onhold",
            "cluster beat",
        ] {
            let _ = writeln!(out, "> {bad}");
            match crate::cctrl::parse(bad) {
                Ok(c) => panic!("{bad:?} parsed as {c:?}"),
                Err(e) => {
                    let _ = writeln!(out, "{e}");
                }
            }
        }
        golden("commands.txt", &out);
    }

    #[test]
    fn golden_members() {
        let managers = vec![
            ("db1".to_string(), "127.0.0.1:11999".to_string()),
            ("db2".to_string(), "127.0.0.1:12000".to_string()),
            ("db3".to_string(), "127.0.0.1:12001".to_string()),
        ];
        golden("members.txt", &members(&sample(), &managers));
    }
}
