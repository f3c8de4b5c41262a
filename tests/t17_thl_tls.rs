//! THL transfer over TLS: a master serving with `--thl-tls-cert/-key` and a
//! slave trusting the CA with `--thl-tls-ca` replicate as usual; a slave
//! that does not speak TLS to it never gets a record (it keeps retrying,
//! GOING-ONLINE, naming the failure). The THL hello must prove the
//! dataservice secret: raw clients without it, with a wrong one or with a
//! replayed proof are refused with a clear reason and get no record; a
//! garbage or 1 GiB hello is cut off from its 5-byte head; a slave whose
//! config holds another secret never gets a record.
#![allow(clippy::unwrap_used)]

mod support;

use support::carbide::tls_certs;
use support::replicator::{master_slave_config, status, trepctl_ok, wait_status, Replicator};
use support::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_pulls_thl_over_tls() {
    let db1 = MariaDb::start().await;
    let db2 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tls_certs(&certs);
    let (cfg, pm, ps) = master_slave_config(dir.path(), &db1, &db2);
    let p = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let _d1 = Replicator::start(
        &cfg,
        "db1",
        pm,
        &dir.path().join("db1.log"),
        &[
            "--thl-tls-cert",
            &p("server.pem"),
            "--thl-tls-key",
            &p("server.key"),
        ],
    );
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    // without TLS the slave cannot talk to this master
    let plain = Replicator::start(&cfg, "db2", ps, &dir.path().join("plain.log"), &[]);
    let st = wait_status(ps, 30, "a connection error", |st| {
        st["pendingExceptionMessage"] != "NONE"
    })
    .await;
    assert_eq!(st["state"], "GOING-ONLINE:SYNCHRONIZING", "{st}");
    assert_eq!(st["maximumStoredSeqNo"], -1, "{st}");
    drop(plain);
    let _d2 = Replicator::start(
        &cfg,
        "db2",
        ps,
        &dir.path().join("db2.log"),
        &["--thl-tls-ca", &p("ca.pem")],
    );
    wait_status(ps, 30, "ONLINE", |st| st["state"] == "ONLINE").await;
    for i in 0..20 {
        db1.sql(&format!("INSERT INTO app.t VALUES ({i})")).await;
    }
    let rows: Vec<(String, u64, String, String)> = db1.query("SHOW MASTER STATUS").await;
    let want = format!("{}:{:016};-1", rows[0].0, rows[0].1);
    wait_status(pm, 30, "extracted", |st| {
        st["appliedLastEventId"] == want.as_str()
    })
    .await;
    let target = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(ps, 30, "applied", |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
    })
    .await;
    let n: Vec<i64> = db2.query("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, vec![20]);
}

/// Raw THL client steps, speaking the wire format of `transfer::protocol`.
mod raw {
    use carbide_replicator::transfer::protocol::{self, typ};
    use tokio::net::TcpStream;

    /// Connects and reads the CHALLENGE; returns the stream and the nonce.
    pub async fn challenged(addr: &str) -> (TcpStream, Vec<u8>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (t, p) = protocol::read_frame(&mut s).await.unwrap();
        assert_eq!(t, typ::CHALLENGE);
        let c: protocol::Challenge = protocol::parse("challenge", &p).unwrap();
        assert_eq!(c.protocol, 2);
        (s, protocol::unhex(&c.nonce).unwrap())
    }

    /// Sends a HELLO with this proof; returns the first frame back.
    pub async fn hello(s: &mut TcpStream, proof: &[u8]) -> (u8, Vec<u8>) {
        let json = br#"{"service":"alpha","client":"raw","last":null}"#;
        let mut payload = proof.to_vec();
        payload.extend_from_slice(json);
        protocol::write_frame(s, typ::HELLO, &payload)
            .await
            .unwrap();
        protocol::read_frame(s).await.unwrap()
    }

    pub const JSON: &[u8] = br#"{"service":"alpha","client":"raw","last":null}"#;

    /// Whether the server closes the connection (EOF or reset) soon.
    pub async fn closed(s: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thl_hello_must_prove_the_secret() {
    use carbide_replicator::auth::{hello_proof, Secret};
    use carbide_replicator::transfer::protocol::{self, typ};
    use tokio::io::AsyncWriteExt;
    let db1 = MariaDb::start().await;
    let db2 = MariaDb::builder().arg("--read-only=ON").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, pm, ps) = master_slave_config(dir.path(), &db1, &db2);
    let conf = carbide_config::Config::load(&cfg).unwrap();
    let thl = conf.member("db1").unwrap().thl.to_string();
    let secret = Secret::new(&support::replicator::secret_of(dir.path()));
    let d1 = Replicator::start(&cfg, "db1", pm, &dir.path().join("db1.log"), &[]);
    trepctl_ok(pm, &["wait", "-state", "ONLINE", "-limit", "30"]);
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    wait_status(pm, 30, "something stored", |st| {
        st["maximumStoredSeqNo"].as_i64().unwrap_or(-1) >= 0
    })
    .await;

    // no secret: an all-zero proof
    let (mut s, _) = raw::challenged(&thl).await;
    let (t, p) = raw::hello(&mut s, &[0u8; 32]).await;
    assert_eq!(t, typ::REFUSE);
    let r: protocol::Refuse = protocol::parse("refuse", &p).unwrap();
    assert!(
        r.error.starts_with("missing dataservice secret")
            && r.error.contains("security.token-file")
            && !r.diverged,
        "{r:?}"
    );
    assert!(raw::closed(&mut s).await, "nothing streamed after REFUSE");
    // a wrong secret
    let (mut s, nonce) = raw::challenged(&thl).await;
    let wrong = Secret::new("not-the-dataservice-secret");
    let (t, p) = raw::hello(&mut s, &hello_proof(Some(&wrong), &nonce, raw::JSON)).await;
    assert_eq!(t, typ::REFUSE);
    let r: protocol::Refuse = protocol::parse("refuse", &p).unwrap();
    assert!(r.error.starts_with("wrong dataservice secret"), "{r:?}");
    assert!(raw::closed(&mut s).await);
    // the right secret over an old nonce (a replayed hello)
    let (mut s, _) = raw::challenged(&thl).await;
    let (t, p) = raw::hello(&mut s, &hello_proof(Some(&secret), &nonce, raw::JSON)).await;
    assert_eq!(t, typ::REFUSE, "{}", String::from_utf8_lossy(&p));
    // the right proof: ACCEPT, then records
    let (mut s, nonce) = raw::challenged(&thl).await;
    let (t, p) = raw::hello(&mut s, &hello_proof(Some(&secret), &nonce, raw::JSON)).await;
    assert_eq!(t, typ::ACCEPT, "{}", String::from_utf8_lossy(&p));
    let (t, _) = protocol::read_frame(&mut s).await.unwrap();
    assert_eq!(t, typ::RECORD);
    drop(s);
    // a hello announcing 1 GiB is cut off from its head, before the body
    let (mut s, _) = raw::challenged(&thl).await;
    let mut head = (1u32 << 30).to_le_bytes().to_vec();
    head.push(typ::HELLO);
    s.write_all(&head).await.unwrap();
    assert!(raw::closed(&mut s).await, "1 GiB hello: connection closed");
    // garbage (an HTTP request on the THL port: "GET " is a 542 MB length)
    let (mut s, _) = raw::challenged(&thl).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        raw::closed(&mut s).await,
        "garbage hello: connection closed"
    );
    // the daemon logs the refusal after it closed the connection: give it a moment
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut log = d1.log_plain();
    while !log.contains("more than the 65536 allowed") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        log = d1.log_plain();
    }
    assert!(
        log.contains("refusing replica: dataservice secret not proven") && log.contains("peer="),
        "{log}"
    );
    assert!(log.contains("more than the 65536 allowed"), "{log}");

    // a slave whose config holds another secret gets nothing
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("secret"), "another-secret-0123456789").unwrap();
    let other_cfg = other.path().join("carbide.toml");
    std::fs::write(&other_cfg, std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let wrong_slave = Replicator::start(&other_cfg, "db2", ps, &dir.path().join("wrong.log"), &[]);
    let st = wait_status(ps, 30, "a refusal", |st| {
        st["pendingExceptionMessage"]
            .as_str()
            .is_some_and(|m| m.contains("wrong dataservice secret"))
    })
    .await;
    assert_eq!(st["maximumStoredSeqNo"], -1, "{st}");
    assert_eq!(st["state"], "GOING-ONLINE:SYNCHRONIZING", "{st}");
    drop(wrong_slave);
    // the right one replicates
    let _d2 = Replicator::start(&cfg, "db2", ps, &dir.path().join("db2.log"), &[]);
    let target = status(pm)["maximumStoredSeqNo"].as_i64().unwrap();
    wait_status(ps, 30, "applied", |st| {
        st["appliedLastSeqno"].as_i64().unwrap_or(-1) >= target
    })
    .await;
}
