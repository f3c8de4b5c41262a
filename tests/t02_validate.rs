//! `carbide validate` against real MariaDB servers, set up right and set up
//! wrong on purpose: each mistake is reported with its fix.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Output;
use support::{free_port, MariaDb};

const GRANT_ALL: &str = "CREATE USER 'tungsten'@'127.0.0.1' IDENTIFIED BY 'secret'; \
     GRANT ALL PRIVILEGES ON *.* TO 'tungsten'@'127.0.0.1' WITH GRANT OPTION";

/// A config naming the given MariaDB ports as members db1, db2, ...; the
/// other addresses are free ports.
fn config_text(dir: &Path, mysql_ports: &[u16]) -> String {
    let mut t = format!(
        "[service]\nname = \"alpha\"\n\n[credentials]\nuser = \"tungsten\"\npassword = \"secret\"\n\n\
         [connector]\nrw-listen = \"127.0.0.1:{}\"\nro-listen = \"127.0.0.1:{}\"\n\n\
         [replicator]\nthl-root = \"{}\"\n\n[validate]\nmin-thl-free-mb = 1\n",
        free_port(),
        free_port(),
        dir.join("thl").display()
    );
    for (i, p) in mysql_ports.iter().enumerate() {
        t.push_str(&format!(
            "\n[[member]]\nname = \"db{}\"\nmysql = \"127.0.0.1:{p}\"\nreplicator = \"127.0.0.1:{}\"\nthl = \"127.0.0.1:{}\"\nmanager = \"127.0.0.1:{}\"\nrole = \"{}\"\n",
            i + 1,
            free_port(),
            free_port(),
            free_port(),
            if i == 0 { "master" } else { "slave" }
        ));
    }
    t
}

fn validate(config: &Path) -> (Output, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carbide"))
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out, text)
}

fn line<'a>(out: &'a str, subject: &str, check: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 2 && w[1] == subject && w[2] == check
        })
        .unwrap_or_else(|| panic!("no {subject} {check} line in:\n{out}"))
}

#[tokio::test]
async fn well_configured_servers_pass() {
    let dbs = support::Cluster::new(2).start().await;
    for d in &dbs {
        d.sql(GRANT_ALL).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, config_text(dir.path(), &[dbs[0].port, dbs[1].port])).unwrap();
    let (out, text) = validate(&cfg);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("ERROR ") && !text.contains("WARN "),
        "{text}"
    );
    for check in [
        "connect",
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "grants",
        "thl_dir",
    ] {
        assert!(line(&text, "db1", check).starts_with("OK"), "{text}");
    }
    assert!(line(&text, "all", "clock_skew").starts_with("OK"));
    assert!(
        text.lines().last().unwrap().ends_with("0 WARN, 0 ERROR"),
        "{text}"
    );
    assert!(
        dir.path().join("thl/db1/alpha").is_dir(),
        "validate creates the THL dir"
    );
}

#[tokio::test]
async fn each_misconfiguration_is_reported_with_its_fix() {
    // db1: binlog off; db2: STATEMENT format, MINIMAL image and db1's
    // server_id; db3: fine but its user lacks REPLICATION SLAVE and SUPER.
    let db1 = MariaDb::builder().no_binlog().server_id(4242).start().await;
    let db2 = MariaDb::builder()
        .server_id(4242)
        .arg("--binlog-format=STATEMENT")
        .arg("--binlog-row-image=MINIMAL")
        .start()
        .await;
    let db3 = MariaDb::start().await;
    db1.sql(GRANT_ALL).await;
    db2.sql(GRANT_ALL).await;
    db3.sql(
        "CREATE USER 'tungsten'@'127.0.0.1' IDENTIFIED BY 'secret'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, BINLOG MONITOR \
         ON *.* TO 'tungsten'@'127.0.0.1'",
    )
    .await;
    let down = free_port();

    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(dir.path(), &[db1.port, db2.port, db3.port, down]);
    // the THL root is a file: not a usable directory
    std::fs::write(dir.path().join("thl"), b"not a dir").unwrap();
    // someone already listens on the connector's rw port
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let rw = text
        .lines()
        .find(|l| l.starts_with("rw-listen"))
        .unwrap()
        .to_string();
    text = text.replace(&rw, &format!("rw-listen = \"127.0.0.1:{busy_port}\""));
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, text).unwrap();

    let (out, text) = validate(&cfg);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expect = [
        ("db1", "log_bin", "ERROR db1      log_bin              OFF -- fix: add log-bin"),
        ("db2", "binlog_format", "ERROR db2      binlog_format        STATEMENT -- fix: set binlog_format=ROW"),
        ("db2", "binlog_row_image", "ERROR db2      binlog_row_image     MINIMAL -- fix: set binlog_row_image=FULL"),
        ("db1,db2", "server_id", "ERROR db1,db2  server_id            4242 is used by db1 and db2"),
        ("db3", "grants", "ERROR db3      grants               'tungsten' lacks REPLICATION SLAVE, SUPER or READ_ONLY ADMIN on *.* -- fix: GRANT ALL PRIVILEGES"),
        ("db3", "row-events", "WARN  db3      row-events           'tungsten' lacks BINLOG REPLAY (or SUPER): a replica's applier falls back to applying rows as SQL"),
        ("db4", "connect", &format!("ERROR db4      connect              cannot connect to 127.0.0.1:{down} as 'tungsten'")),
        ("local", "port", &format!("ERROR local    port                 connector.rw-listen 127.0.0.1:{busy_port}: already in use")),
        ("db1", "thl_dir", "ERROR db1      thl_dir"),
    ];
    for (subject, check, prefix) in expect {
        let l = line(&text, subject, check);
        assert!(
            l.starts_with(prefix),
            "got:  {l}\nwant: {prefix}...\n{text}"
        );
    }
    assert!(line(&text, "db3", "binlog_format").starts_with("OK"));
    assert!(line(&text, "db1", "grants").starts_with("OK"));
    assert!(line(&text, "db1", "row-events").starts_with("OK"));
    drop(busy);
}

#[tokio::test]
async fn a_bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("carbide.toml");
    let text = config_text(dir.path(), &[3306]).replace("role = \"master\"", "role = \"boss\"");
    std::fs::write(&cfg, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carbide"))
        .args(["validate", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let line_no = text.lines().position(|l| l.contains("boss")).unwrap() + 1;
    assert!(
        err.starts_with(&format!(
            "carbide validate: {}:{line_no}: unknown role 'boss'",
            cfg.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_carbide_holding_its_ports_is_a_warning_not_an_error() {
    let db = MariaDb::start().await;
    db.sql(GRANT_ALL).await;
    let carbide = support::carbide::CarbideConfig::new(&db).start().await;
    let (_, text) = validate(&carbide.path);
    let ours = format!("in use by carbide (pid {})", carbide.pid());
    let ports: Vec<&str> = text.lines().filter(|l| l.contains(" port ")).collect();
    for key in ["connector.rw-listen", "connector.ro-listen"] {
        let l = ports
            .iter()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no {key} line:\n{text}"));
        assert!(
            l.starts_with("WARN  local") && l.contains(&ours),
            "{l}\n{text}"
        );
    }
    // a port held by another program is still an error
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let cfg = carbide.dir().join("other.toml");
    let other = std::fs::read_to_string(&carbide.path).unwrap().replace(
        &format!("rw-listen = \"127.0.0.1:{}\"", carbide.cfg.rw),
        &format!("rw-listen = \"127.0.0.1:{busy_port}\""),
    );
    std::fs::write(&cfg, other).unwrap();
    let (_, text) = validate(&cfg);
    assert!(
        text.lines().any(|l| l.starts_with("ERROR local")
            && l.contains(&format!("127.0.0.1:{busy_port}: already in use"))),
        "{text}"
    );
}

#[tokio::test]
async fn application_accounts_that_write_through_read_only_are_a_warning() {
    let db = MariaDb::start().await;
    db.sql(GRANT_ALL).await;
    // the common application account, and a user.map account with SUPER
    db.sql(
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO 'app'@'%'; \
         CREATE USER 'report'@'127.0.0.1' IDENTIFIED BY 'r'; \
         GRANT SELECT, SUPER ON *.* TO 'report'@'127.0.0.1'",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user.map"), "report r alpha\n").unwrap();
    let text = config_text(dir.path(), &[db.port]).replace(
        "[replicator]\n",
        "user-map = \"user.map\"\n\n[replicator]\n",
    );
    let cfg = dir.path().join("carbide.toml");
    std::fs::write(&cfg, text).unwrap();

    let (out, text) = validate(&cfg);
    assert!(out.status.success(), "a warning, not an error: {text}");
    let l = line(&text, "db1", "read_only_bypass");
    assert!(
        l.starts_with(
            "WARN  db1      read_only_bypass     'app'@'%' (READ_ONLY ADMIN, SUPER), \
             'report'@'127.0.0.1' (SUPER, user.map) can write while read_only=ON"
        ),
        "{l}"
    );
    assert!(
        l.contains("-- fix: grant applications their schemas, not *.*")
            && l.contains("REVOKE READ_ONLY ADMIN, SUPER ON *.* FROM 'app'@'%'"),
        "{l}"
    );

    // granted without them, nothing to say
    db.sql(
        "REVOKE READ_ONLY ADMIN, SUPER ON *.* FROM 'app'@'%'; \
         REVOKE SUPER ON *.* FROM 'report'@'127.0.0.1'",
    )
    .await;
    let (_, text) = validate(&cfg);
    assert_eq!(
        line(&text, "db1", "read_only_bypass"),
        "OK    db1      read_only_bypass     no application account holds READ_ONLY ADMIN or SUPER"
    );
}
