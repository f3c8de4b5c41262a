//! Config files as operators write them: a full valid one round-trips, and
//! every broken key or value is reported with its key and line.
#![allow(clippy::unwrap_used)]

use carbide_config::{Config, ConfigError, PolicyMode, Role};
use std::path::Path;

const FULL: &str = r#"# alpha dataservice
[service]
name = "alpha"
policy = "manual"

[credentials]
user = "tungsten"
password = "secret"

[timeouts]
probe-interval-ms = 500
failover-grace-ms = 4000
connect-ms = 2000
handshake-ms = 5000
disconnect-ms = 3000
wait-if-unavailable-ms = 20000

[connector]
rw-listen = "127.0.0.1:9306"
ro-listen = "127.0.0.1:9307"
max-connections = 500
max-applied-latency-ms = 2000

[replicator]
thl-root = "thl"

[validate]
max-clock-skew-ms = 500
min-thl-free-mb = 10

[[member]]
name = "db1"
mysql = "127.0.0.1:13306"
replicator = "127.0.0.1:10000"
thl = "127.0.0.1:2112"
manager = "127.0.0.1:11999"
role = "master"

[[member]]
name = "db2"
mysql = "127.0.0.1:13307"
replicator = "127.0.0.1:10001"
thl = "127.0.0.1:2113"
manager = "127.0.0.1:12000"
thl-dir = "/data/thl/db2"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/carbide/alpha.toml"))
}

#[test]
fn full_config_round_trips() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.service.name, "alpha");
    assert_eq!(c.service.policy, PolicyMode::Manual);
    assert_eq!(c.timeouts.failover_grace_ms, 4000);
    assert_eq!(c.connector.rw_listen.port, 9306);
    assert_eq!(c.members[0].role, Role::Master);
    assert_eq!(c.members[1].role, Role::Slave, "role defaults to slave");
    let again = parse(&c.to_toml()).unwrap();
    assert_eq!(again, c);
    assert_eq!(
        c.thl_dir(Some("db1")).unwrap(),
        Path::new("/etc/carbide/thl/db1/alpha")
    );
    assert_eq!(c.thl_dir(Some("db2")).unwrap(), Path::new("/data/thl/db2"));
    let e = c.thl_dir(None).unwrap_err().to_string();
    assert!(
        e.contains("the config has 2 members; name one (members: db1, db2)"),
        "{e}"
    );
    assert!(c.thl_dir(Some("db9")).is_err());
}

#[test]
fn defaults_fill_a_minimal_config() {
    let c = parse(
        "[service]\nname = \"a\"\n[credentials]\nuser = \"u\"\n[[member]]\nname = \"db1\"\nmysql = \"h:3306\"\nreplicator = \"h:10000\"\nthl = \"h:2112\"\nmanager = \"h:11999\"\nrole = \"master\"\n",
    )
    .unwrap();
    assert_eq!(c.service.policy, PolicyMode::Automatic);
    assert_eq!(c.timeouts.probe_interval_ms, 1000);
    assert_eq!(c.timeouts.disconnect_ms, 5000);
    assert_eq!(c.connector.rw_listen.to_string(), "0.0.0.0:3306");
    assert_eq!(c.connector.ro_listen.to_string(), "0.0.0.0:3307");
    assert!(c.tls.is_none());
}

/// Replaces the first occurrence of `from` in FULL (which must exist).
fn with(from: &str, to: &str) -> String {
    assert!(FULL.contains(from), "{from}");
    FULL.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn invalid_values_name_key_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            with("name = \"alpha\"", "name = \"9lives\""),
            "service.name",
            "9lives",
            "must start with a letter",
        ),
        (
            with("user = \"tungsten\"", "user = \"\""),
            "credentials.user",
            "user = \"\"",
            "must not be empty",
        ),
        (
            with("probe-interval-ms = 500", "probe-interval-ms = 0"),
            "timeouts.probe-interval-ms",
            "probe-interval-ms",
            "greater than 0",
        ),
        (
            with("failover-grace-ms = 4000", "failover-grace-ms = 600"),
            "timeouts.failover-grace-ms",
            "failover-grace-ms",
            "less than 2 x probe-interval-ms",
        ),
        (
            with(
                "ro-listen = \"127.0.0.1:9307\"",
                "ro-listen = \"127.0.0.1:9306\"",
            ),
            "connector.ro-listen",
            "ro-listen",
            "also rw-listen",
        ),
        (
            with("max-connections = 500", "max-connections = 0"),
            "connector.max-connections",
            "max-connections",
            "at least 1",
        ),
        (
            with("name = \"db2\"", "name = \"db1\""),
            "member[1].name",
            "name = \"db1\"\nmysql = \"127.0.0.1:13307\"",
            "also the name of member[0]",
        ),
        (
            with("mysql = \"127.0.0.1:13307\"", "mysql = \"127.0.0.1:13306\""),
            "member[1].mysql",
            "mysql = \"127.0.0.1:13306\"\nreplicator = \"127.0.0.1:10001\"",
            "also the mysql address of member[0]",
        ),
        (
            with(
                "manager = \"127.0.0.1:12000\"",
                "manager = \"127.0.0.1:12000\"\nrole = \"master\"",
            ),
            "member[1].role",
            "",
            "second master",
        ),
        (
            with("role = \"master\"", "role = \"slave\""),
            "member[0].role",
            "",
            "no member has role",
        ),
        (
            with(
                "[credentials]",
                "[tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n\n[credentials]",
            ),
            "tls.cert",
            "cert = ",
            "does not exist",
        ),
    ];
    for (text, key, needle, msg) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key(), Some(key), "{e}");
        let s = e.to_string();
        assert!(s.contains(msg), "{s} should say {msg}");
        assert!(s.starts_with("/etc/carbide/alpha.toml:"), "{s}");
        let line = e.line().unwrap_or_else(|| panic!("no line for {key}: {s}"));
        if !needle.is_empty() {
            let first = needle.lines().next().unwrap();
            let want = if needle.contains('\n') {
                // the second occurrence (member[1]'s line)
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| l.contains(first))
                    .nth(1)
                    .map(|(i, _)| i + 1)
                    .unwrap()
            } else {
                line_of(&text, first)
            };
            assert_eq!(line, want, "{s}");
        }
    }
}

#[test]
fn schema_errors_name_key_and_line() {
    // (text, what the message says, a text on the line it must point at)
    let cases = [
        (
            with("max-connections = 500", "max-conections = 500"),
            "unknown field `max-conections`",
            "max-conections",
        ),
        (
            with("policy = \"manual\"", "policy = \"sometimes\""),
            "unknown policy mode 'sometimes'",
            "sometimes",
        ),
        (
            with("mysql = \"127.0.0.1:13306\"", "mysql = \"127.0.0.1\""),
            "not host:port",
            "mysql = \"127.0.0.1\"",
        ),
        (
            with("connect-ms = 2000", "connect-ms = \"soon\""),
            "invalid type",
            "soon",
        ),
        (with("[service]", "[service\n"), "", "[service"),
        (
            FULL.replacen("user = \"tungsten\"\n", "", 1),
            "missing field `user`",
            "[credentials]",
        ),
    ];
    for (text, msg, needle) in cases {
        let e = parse(&text).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, ConfigError::Parse { .. }), "{s}");
        assert!(s.contains(msg), "{s} should say {msg}");
        assert_eq!(e.line(), Some(line_of(&text, needle)), "{s}");
    }
}

#[test]
fn unreadable_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/carbide.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/carbide.toml: cannot read:"),
        "{e}"
    );
}

#[test]
fn user_map_errors_surface_through_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user.map"), "app secret alpha\nbroken\n").unwrap();
    let text = with(
        "max-connections = 500",
        "max-connections = 500\nuser-map = \"user.map\"",
    );
    let e = Config::parse(&text, &dir.path().join("c.toml")).unwrap_err();
    assert_eq!(e.key(), Some("connector.user-map"));
    assert!(
        e.to_string()
            .contains("user.map:2: expected 'user password service"),
        "{e}"
    );
}

/// Every key the schema has is in the README's configuration reference.
#[test]
fn readme_documents_every_key() {
    let mut c = parse(FULL).unwrap();
    c.tls = Some(carbide_config::Tls {
        cert: "c.pem".into(),
        key: "k.pem".into(),
        ca: Some("ca.pem".into()),
        to_server: true,
    });
    c.connector.user_map = Some("user.map".into());
    let value = toml::Value::try_from(&c).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut keys = Vec::new();
    for (table, v) in value.as_table().unwrap() {
        let tables: Vec<&toml::Table> = match v {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) => a.iter().filter_map(|x| x.as_table()).collect(),
            _ => continue,
        };
        for t in tables {
            for k in t.keys() {
                keys.push(format!("{table}.{k}"));
            }
        }
    }
    assert!(keys.len() > 25, "{keys:?}");
    for k in keys {
        assert!(
            readme.contains(&format!("| `{k}` |")),
            "README's configuration reference lacks `{k}`"
        );
    }
}
