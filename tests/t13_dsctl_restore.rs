//! `dsctl` positions a replica restored from a `mariadb-dump` of the master:
//! `set -seqno N -epoch E -event-id ID -source-id S -reset` stores the
//! position the dump corresponds to and empties the replica's THL; the
//! replicator then asks the master for the transactions after N only (the
//! ones before would fail: the dump already holds them) and the replica
//! ends identical to the master. `get` shows the position, `reset` forgets it.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use support::replicator::{bin, master_slave_online, status, wait_status, MasterSlave, Replicator};

fn dsctl(cfg: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("dsctl"))
        .arg("-config")
        .arg(cfg)
        .args(["-member", "db2", "-service", "alpha"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dsctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsctl_positions_a_replica_restored_from_a_dump() {
    let MasterSlave {
        master,
        replica,
        dir,
        cfg,
        pm,
        ps,
        d1: _d1,
    } = master_slave_online().await;
    master
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    for i in 0..30 {
        master
            .sql(&format!("INSERT INTO app.t VALUES ({i}, 'v{i}')"))
            .await;
    }
    // quiet master: the dump corresponds to its last stored seqno
    let rows: Vec<(String, u64, String, String)> = master.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    let st = wait_status(pm, 30, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let seqno = st["appliedLastSeqno"].as_i64().unwrap();
    let dump = Command::new("mariadb-dump")
        .args(["-h127.0.0.1", &format!("-P{}", master.port), "-uroot"])
        .args(["--single-transaction", "--databases", "app"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut load = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{}", replica.port), "-uroot"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(load.stdin.as_mut().unwrap(), &dump.stdout).unwrap();
    drop(load.stdin.take());
    assert!(load.wait().unwrap().success());

    // position the restored replica, then start its replicator
    let s = seqno.to_string();
    dsctl(
        &cfg,
        &[
            "set",
            "-seqno",
            &s,
            "-epoch",
            "0",
            "-event-id",
            &want,
            "-source-id",
            "db1",
            "-reset",
        ],
    );
    let got: serde_json::Value = serde_json::from_str(&dsctl(&cfg, &["get"])).unwrap();
    assert_eq!(got[0]["seqno"], seqno);
    assert_eq!(got[0]["epoch_number"], 0);
    assert_eq!(got[0]["eventid"], want.as_str());
    assert_eq!(got[0]["source_id"], "db1");
    let _d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    wait_status(ps, 30, "slave ONLINE", |st| st["state"] == "ONLINE").await;
    for i in 30..40 {
        master
            .sql(&format!("INSERT INTO app.t VALUES ({i}, 'v{i}')"))
            .await;
    }
    master.sql("UPDATE app.t SET v = 'x' WHERE id < 5").await;
    let target = seqno + 11;
    let st = wait_status(ps, 30, "applied", |st| {
        st["appliedLastSeqno"].as_i64().unwrap() >= target || st["state"] != "ONLINE"
    })
    .await;
    assert_eq!(st["state"], "ONLINE", "{st}");
    assert_eq!(
        st["minimumStoredSeqNo"].as_i64().unwrap(),
        seqno + 1,
        "{st}"
    );
    assert_eq!(status(pm)["maximumStoredSeqNo"].as_i64().unwrap(), target);
    assert_eq!(
        master.user_checksums().await,
        replica.user_checksums().await
    );
    drop(_d2);
    dsctl(&cfg, &["reset"]);
    let got: serde_json::Value = serde_json::from_str(&dsctl(&cfg, &["get"])).unwrap();
    assert_eq!(got[0]["seqno"], -1);
}
