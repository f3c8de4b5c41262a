//! Two services replicating in both directions between two databases, as
//! for multi-site active/active: `east` from a to b and `west` from b to
//! a, each host's replicator process running the master side of one
//! service and the slave side of the other. Rows and DDL written on either
//! side — including DDL the server logs in its own words (DROP TABLE,
//! views) and a non-transactional table — reach the other side, and
//! nothing comes back: each extractor leaves out what the other service's
//! applier wrote (its session server_id). An echo would show as the other
//! side's schema in a service's THL, and an echoed DDL would stop an
//! applier.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::replicator::{bin, service_status, trepctl_ok, Replicator};
use support::{free_port, MariaDb};

/// A config for `service` with members a and b (`master` names the
/// master); `admin` are the replicator ports of a and b (one process per
/// host serves both services).
fn config(
    dir: &Path,
    service: &str,
    dbs: (&MariaDb, &MariaDb),
    master: &str,
    admin: (u16, u16),
) -> PathBuf {
    let mut text = format!(
        "[service]\nname = \"{service}\"\n\n[credentials]\nuser = \"root\"\n\n\
         [replicator]\nthl-root = \"{}\"\n",
        dir.join("thl").display()
    );
    for (name, db, port) in [("a", dbs.0, admin.0), ("b", dbs.1, admin.1)] {
        let role = if name == master { "master" } else { "slave" };
        text.push_str(&format!(
            "\n[[member]]\nname = \"{name}\"\nmysql = \"127.0.0.1:{}\"\nreplicator = \"127.0.0.1:{port}\"\n\
             thl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"{role}\"\n",
            db.port,
            free_port(),
            free_port(),
        ));
    }
    text.push_str(&support::replicator::security(dir));
    let p = dir.join(format!("{service}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Waits until `service`'s slave (admin port `slave`) has applied all its
/// master (admin port `master`) has stored, once the master has extracted
/// up to the end of `db`'s binlog.
async fn wait_synced(db: &MariaDb, service: &str, master: u16, slave: u16) {
    let rows: Vec<(String, u64, String, String)> = db.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // a transaction left out still moves the binlog: wait for the last
    // stored seqno to stay put instead when the end is not extracted
    let mut last = (-2, std::time::Instant::now());
    loop {
        let st = service_status(master, service);
        let max = st["maximumStoredSeqNo"].as_i64().unwrap_or(-1);
        if st["appliedLastEventId"] == want.as_str() {
            break;
        }
        if max != last.0 {
            last = (max, std::time::Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{service} not extracted: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = service_status(master, service)["maximumStoredSeqNo"]
        .as_i64()
        .unwrap();
    trepctl_ok(
        slave,
        &[
            "-service",
            service,
            "wait",
            "-applied",
            &target.to_string(),
            "-limit",
            "30",
        ],
    );
}

/// The two services' configs for databases a and b, and the admin ports
/// of the replicator process of each host (serving both services).
struct Sites {
    dir: tempfile::TempDir,
    east: PathBuf,
    west: PathBuf,
    pa: u16,
    pb: u16,
}

fn sites(db_a: &MariaDb, db_b: &MariaDb) -> Sites {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let east = config(dir.path(), "east", (db_a, db_b), "a", (pa, pb));
    let west = config(dir.path(), "west", (db_a, db_b), "b", (pa, pb));
    Sites {
        dir,
        east,
        west,
        pa,
        pb,
    }
}

impl Sites {
    /// Starts host `member`'s replicator with both services.
    fn start(&self, member: &str) -> Replicator {
        let port = if member == "a" { self.pa } else { self.pb };
        let west = self.west.to_str().unwrap();
        let log = self.dir.path().join(format!("{member}.log"));
        Replicator::start(&self.east, member, port, &log, &["--config", west])
    }
}

/// The shards of the transactions in `member`'s THL of `service`.
fn thl_shards(cfg: &Path, member: &str) -> Vec<String> {
    let out = std::process::Command::new(bin("thl"))
        .args([
            "-conf",
            cfg.to_str().unwrap(),
            "-member",
            member,
            "list",
            "-headers",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').nth(7).map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_and_west_replicate_both_ways_without_looping() {
    let db_a = MariaDb::start().await;
    let db_b = MariaDb::start().await;
    let site = sites(&db_a, &db_b);
    let (east, west, pa, pb) = (&site.east, &site.west, site.pa, site.pb);
    let ra = site.start("a");
    let rb = site.start("b");
    for port in [pa, pb] {
        for s in ["east", "west"] {
            trepctl_ok(
                port,
                &["-service", s, "wait", "-state", "ONLINE", "-limit", "30"],
            );
        }
    }
    // each side writes its own schema: DDL, rows and a counter
    for (db, s) in [(&db_a, "e1"), (&db_b, "w1")] {
        db.sql(&format!(
            "CREATE DATABASE {s}; CREATE TABLE {s}.t (id INT PRIMARY KEY, v VARCHAR(20)); \
             CREATE TABLE {s}.c (id INT PRIMARY KEY, n INT NOT NULL); INSERT INTO {s}.c VALUES (1, 0)"
        ))
        .await;
    }
    for i in 0..40 {
        for (db, s) in [(&db_a, "e1"), (&db_b, "w1")] {
            db.sql(&format!(
                "BEGIN; INSERT INTO {s}.t VALUES ({i}, '{s}-{i}'); UPDATE {s}.c SET n = n + 1; COMMIT"
            ))
            .await;
        }
    }
    db_a.sql("ALTER TABLE e1.t ADD COLUMN w INT NOT NULL DEFAULT 7")
        .await;
    db_b.sql("ALTER TABLE w1.t ADD COLUMN w INT NOT NULL DEFAULT 8")
        .await;
    // statements the server logs in its own words (DROP TABLE is logged
    // as "DROP TABLE `s`.`t` /* generated by server */", views with their
    // definer), and a table outside transactions
    for (db, s) in [(&db_a, "e1"), (&db_b, "w1")] {
        db.sql(&format!(
            "CREATE TABLE {s}.gone (id INT PRIMARY KEY); DROP TABLE {s}.gone; \
             CREATE VIEW {s}.v AS SELECT id FROM {s}.t; \
             CREATE TABLE {s}.m (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=Aria; \
             INSERT INTO {s}.m VALUES (1, 0); UPDATE {s}.m SET n = n + 1"
        ))
        .await;
    }
    db_a.sql("UPDATE e1.c SET n = n + 1").await;
    db_b.sql("UPDATE w1.c SET n = n + 1").await;

    wait_synced(&db_a, "east", pa, pb).await;
    wait_synced(&db_b, "west", pb, pa).await;
    // an echo would come back through the other service now: give it time
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_synced(&db_a, "east", pa, pb).await;
    wait_synced(&db_b, "west", pb, pa).await;

    let (sa, sb) = (db_a.user_checksums().await, db_b.user_checksums().await);
    assert_eq!(sa, sb, "both sides hold the same data");
    for t in ["e1.t", "e1.c", "w1.t", "w1.c"] {
        assert!(sa.contains_key(t), "{t} missing: {sa:?}");
    }
    for db in [&db_a, &db_b] {
        let n: Vec<(String, i64, i64)> = db
            .query("SELECT 'e1', (SELECT n FROM e1.c), (SELECT COUNT(*) FROM e1.t WHERE w = 7) \
                    UNION ALL SELECT 'w1', (SELECT n FROM w1.c), (SELECT COUNT(*) FROM w1.t WHERE w = 8)")
            .await;
        assert_eq!(
            n,
            vec![("e1".into(), 41, 40), ("w1".into(), 41, 40)],
            "every write arrived"
        );
    }
    for port in [pa, pb] {
        for s in ["east", "west"] {
            let st = service_status(port, s);
            assert_eq!(st["state"], "ONLINE", "{s} on {port}: {st}");
        }
    }
    // east's log (a, its master) holds a's own writes only, west's b's
    let east_shards = thl_shards(east, "a");
    let west_shards = thl_shards(west, "b");
    assert!(east_shards.iter().any(|s| s == "e1"), "{east_shards:?}");
    assert!(west_shards.iter().any(|s| s == "w1"), "{west_shards:?}");
    for (shards, foreign) in [
        (&east_shards, ["w1", "tungsten_west"]),
        (&west_shards, ["e1", "tungsten_east"]),
    ] {
        for f in foreign {
            assert!(!shards.iter().any(|s| s == f), "{f} came back: {shards:?}");
        }
    }
    for r in [&ra, &rb] {
        assert!(
            r.log_text()
                .contains("leaving out transactions applied here by another service"),
            "{}",
            r.log_text()
        );
    }
    drop((ra, rb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_an_appliers_server_id_is_refused() {
    // a's own writes would carry west's applier id and be left out by east
    let id = carbide_replicator::extract::applier_server_id("west");
    let db_a = MariaDb::builder().server_id(id).start().await;
    let db_b = MariaDb::start().await;
    let site = sites(&db_a, &db_b);
    let pa = site.pa;
    let ra = site.start("a");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = service_status(pa, "east");
        if st["state"] == "OFFLINE:ERROR" {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = st["pendingError"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!("server_id {id} is the one service 'west'")),
        "{st}"
    );
    drop(ra);
}
