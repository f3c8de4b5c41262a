//! A replica whose MariaDB is killed (SIGKILL) under a `--static-routing`
//! carbide, which keeps it ONLINE in its routing table: it has the fewest
//! sessions, yet new read-only sessions do not fail on it. The session that
//! finds it dead connects to the next replica instead, and the ones after
//! pass it over for `avoid::AVOID_FOR` (5 s) without trying it. Restarted,
//! it gets new sessions again once that time has passed. A replica that
//! accepts connections but never greets (a hung host) costs one session
//! `timeouts.connect-ms`, then none.
#![allow(clippy::unwrap_used)]

mod support;

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::carbide::CarbideConfig;
use support::faultproxy::{FaultProxy, Mode};

fn connect_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("carbide_connector_errors_total{kind=\"connect\",side=\"backend\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn read_only_sessions_pass_over_a_dead_replica() {
    let mut dbs = support::Cluster::new(3).start().await;
    let carbide = CarbideConfig::new(&dbs[0])
        .replica(&dbs[1])
        .replica(&dbs[2])
        .start()
        .await;
    let (dead, live) = (dbs[1].port, dbs[2].port);
    dbs[1].kill9().await;

    // 50 new read-only sessions, kept open: all connect, none on the dead one
    let started = Instant::now();
    let mut sessions = Vec::new();
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..50 {
        let mut c = match Conn::new(carbide.ro_opts()).await {
            Ok(c) => c,
            Err(e) => panic!("read-only session {i} failed: {e}\n{}", carbide.log_text()),
        };
        let p: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        *ports.entry(p).or_default() += 1;
        sessions.push(c);
    }
    let took = started.elapsed();
    assert_eq!(ports.get(&dead), None, "{ports:?}");
    // the live replica takes them all (the primary only when no replica is left)
    assert_eq!(ports.get(&live), Some(&50), "{ports:?}");
    // the dead one cost a failed connect only now and then, not per session
    let failed = connect_errors(&carbide.metrics());
    let periods = took.as_secs() / 5 + 1;
    eprintln!("50 sessions in {took:?}, {failed} failed connects to the dead replica");
    assert!(
        (1..=periods + 1).contains(&failed),
        "{failed} failed connects in {took:?}"
    );
    assert!(carbide.log_text().contains("cannot connect to datasource"));

    // restarted, it has the fewest sessions: new ones go there again once
    // it is no longer avoided
    dbs[1].restart().await;
    assert_eq!(dbs[1].port, dead, "restarted on another port");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    let back = loop {
        let mut c = Conn::new(carbide.ro_opts()).await.unwrap();
        let p: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        sessions.push(c);
        if p == dead {
            break restarted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica got no session within 20 s\n{}",
            carbide.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("restarted replica got a session {back:?} after its restart");
    for _ in 0..5 {
        let mut c = Conn::new(carbide.ro_opts()).await.unwrap();
        let p: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        assert_eq!(
            p, dead,
            "the replica with the fewest sessions gets new ones"
        );
        sessions.push(c);
    }
    for c in sessions {
        let _ = c.disconnect().await;
    }
}

#[tokio::test]
async fn read_write_sessions_still_get_2003_when_the_primary_is_dead() {
    let mut dbs = support::Cluster::new(2).start().await;
    let carbide = CarbideConfig::new(&dbs[0]).replica(&dbs[1]).start().await;
    let port = dbs[0].port;
    dbs[0].kill9().await;
    for _ in 0..2 {
        match Conn::new(carbide.rw_opts()).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 2003);
                assert!(
                    e.message.starts_with(&format!(
                        "carbide: cannot connect to datasource db1 (127.0.0.1:{port}):"
                    )),
                    "{}",
                    e.message
                );
                // a read-write session has only the primary: nothing else tried
                assert!(!e.message.contains("nor to"), "{}", e.message);
            }
            other => panic!("expected error 2003, got {other:?}"),
        }
    }
    assert_eq!(connect_errors(&carbide.metrics()), 2);
}

#[tokio::test]
async fn a_hung_replica_costs_one_session_the_connect_timeout() {
    let dbs = support::Cluster::new(3).start().await;
    let hung = FaultProxy::start(dbs[1].port);
    let carbide = CarbideConfig::new(&dbs[0])
        .replica_port(hung.port)
        .replica(&dbs[2])
        .set("timeouts", "connect-ms = 500")
        .start()
        .await;
    // (after start: its readiness probes are sessions too)
    hung.set(Mode::Blackhole);
    let mut sessions = Vec::new();
    let mut took = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let mut c = match Conn::new(carbide.ro_opts()).await {
            Ok(c) => c,
            Err(e) => panic!("read-only session {i} failed: {e}\n{}", carbide.log_text()),
        };
        took.push(started.elapsed());
        let p: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        assert_eq!(p, dbs[2].port, "session {i}");
        sessions.push(c);
    }
    eprintln!("connect times: {took:?}");
    // the first waited out connect-ms on the hung one, the others did not try it
    assert!(took[0] >= Duration::from_millis(500), "{took:?}");
    assert!(
        took[1..].iter().all(|t| *t < Duration::from_millis(450)),
        "{took:?}"
    );
    assert_eq!(connect_errors(&carbide.metrics()), 1);
    assert!(carbide
        .log_text()
        .contains("sent no greeting within 500 ms"));
    for c in sessions {
        let _ = c.disconnect().await;
    }
}
