//! carbide-config: the dataservice definition and the shared vocabulary.
//!
//! Text enters through [`Config::load`] (a TOML file) or [`Config::parse`]
//! (TOML text); both deserialize with unknown keys rejected and then run
//! [`Config::validate`], whose errors name the key and, when it can be found,
//! the line. `user.map` files enter through [`UserMap::load`]. Nothing here
//! does IO beyond reading those files; the checks against live servers are
//! `carbide validate`'s, in the root package.

mod addr;
mod error;
mod locate;
mod schema;
mod usermap;
mod vocab;

pub use addr::HostPort;
pub use error::ConfigError;
pub use schema::{
    Config, Connector, Credentials, Manager, Member, Replicator, Security, Service, Timeouts, Tls,
    Validate, Witness,
};
pub use usermap::{HostOption, Qos, UserEntry, UserMap};
pub use vocab::{DatasourceState, PolicyMode, Role, RouterState, UnknownWord};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors and
    /// its directory anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|s| locate::line_at(text, s.start))
                .unwrap_or(1),
            message: e.message().trim().to_string(),
        })?;
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate().map_err(|v| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: v.locate(text),
            key: v.key(),
            message: v.message,
        })?;
        Ok(config)
    }

    /// Checks values the schema alone cannot: names, uniqueness, exactly one
    /// master, timeout relations, referenced files. Pure: reads no files
    /// except the user.map it names.
    pub fn validate(&self) -> Result<(), Violation> {
        let name = &self.service.name;
        if !is_identifier(name) {
            return Err(Violation::new(
                "service",
                None,
                "name",
                format!("'{name}' must start with a letter and hold only letters, digits and '_' (it names the schema tungsten_{name})"),
            ));
        }
        if self.credentials.user.is_empty() {
            return Err(Violation::new(
                "credentials",
                None,
                "user",
                "must not be empty",
            ));
        }
        self.validate_timeouts()?;
        self.validate_members()?;
        self.validate_manager()?;
        let c = &self.connector;
        if c.max_connections == 0 {
            return Err(Violation::new(
                "connector",
                None,
                "max-connections",
                "must be at least 1",
            ));
        }
        if c.enable_ro && c.rw_listen == c.ro_listen {
            return Err(Violation::new(
                "connector",
                None,
                "ro-listen",
                format!(
                    "{} is also rw-listen; give each listener its own port",
                    c.ro_listen
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [
                ("cert", Some(&tls.cert)),
                ("key", Some(&tls.key)),
                ("ca", tls.ca.as_ref()),
            ] {
                if let Some(file) = file {
                    let p = self.resolve(file);
                    if !p.is_file() {
                        return Err(Violation::new(
                            "tls",
                            None,
                            key,
                            format!("file {} does not exist", p.display()),
                        ));
                    }
                }
            }
        }
        if let Some(map) = &c.user_map {
            let p = self.resolve(map);
            if let Err(e) = UserMap::load(&p) {
                return Err(Violation::new("connector", None, "user-map", e.to_string()));
            }
        }
        Ok(())
    }

    fn validate_timeouts(&self) -> Result<(), Violation> {
        let t = &self.timeouts;
        for (key, v) in [
            ("probe-interval-ms", t.probe_interval_ms),
            ("failover-grace-ms", t.failover_grace_ms),
            ("connect-ms", t.connect_ms),
            ("handshake-ms", t.handshake_ms),
            ("disconnect-ms", t.disconnect_ms),
            ("wait-if-unavailable-ms", t.wait_if_unavailable_ms),
        ] {
            if v == 0 {
                return Err(Violation::new(
                    "timeouts",
                    None,
                    key,
                    "must be greater than 0",
                ));
            }
        }
        if t.failover_grace_ms < 2 * t.probe_interval_ms {
            return Err(Violation::new(
                "timeouts",
                None,
                "failover-grace-ms",
                format!(
                    "{} is less than 2 x probe-interval-ms ({}): one lost probe would fail over",
                    t.failover_grace_ms, t.probe_interval_ms
                ),
            ));
        }
        Ok(())
    }

    fn validate_manager(&self) -> Result<(), Violation> {
        let m = &self.manager;
        for (key, v) in [
            ("heartbeat-ms", m.heartbeat_ms),
            ("election-timeout-ms", m.election_timeout_ms),
            ("isolated-offline-ms", m.isolated_offline_ms),
        ] {
            if v == 0 {
                return Err(Violation::new(
                    "manager",
                    None,
                    key,
                    "must be greater than 0",
                ));
            }
        }
        if m.election_timeout_ms < 3 * m.heartbeat_ms {
            return Err(Violation::new(
                "manager",
                None,
                "election-timeout-ms",
                format!(
                    "{} is less than 3 x heartbeat-ms ({}): two late heartbeats would start an election",
                    m.election_timeout_ms, m.heartbeat_ms
                ),
            ));
        }
        if m.isolated_offline_ms < 4 * m.election_timeout_ms {
            return Err(Violation::new(
                "manager",
                None,
                "isolated-offline-ms",
                format!(
                    "{} is less than 4 x election-timeout-ms ({}): a connector would go OFFLINE before it goes ONHOLD",
                    m.isolated_offline_ms, m.election_timeout_ms
                ),
            ));
        }
        let s = &self.security;
        if s.token.is_some() && s.token_file.is_some() {
            return Err(Violation::new(
                "security",
                None,
                "token",
                "give either token or token-file, not both",
            ));
        }
        if let Some(t) = &s.token {
            if t.trim().len() < 16 {
                return Err(Violation::new(
                    "security",
                    None,
                    "token",
                    "must be at least 16 characters (carbide secret --out FILE makes one)",
                ));
            }
        }
        let mut names: HashMap<&str, usize> = self
            .members
            .iter()
            .map(|m| m.name.as_str())
            .zip(0..)
            .collect();
        let managers: HashMap<String, usize> = self
            .members
            .iter()
            .map(|m| m.manager.to_string())
            .zip(0..)
            .collect();
        for (i, w) in self.witnesses.iter().enumerate() {
            if !is_identifier(&w.name.replace('-', "_")) {
                return Err(Violation::new(
                    "witness",
                    Some(i),
                    "name",
                    format!(
                        "'{}' must start with a letter and hold only letters, digits, '-' and '_'",
                        w.name
                    ),
                ));
            }
            if names.insert(&w.name, i).is_some() {
                return Err(Violation::new(
                    "witness",
                    Some(i),
                    "name",
                    format!("'{}' is already the name of a member or witness", w.name),
                ));
            }
            if managers.contains_key(&w.manager.to_string()) || w.manager.port == 0 {
                return Err(Violation::new(
                    "witness",
                    Some(i),
                    "manager",
                    format!("{} is port 0 or a member's manager address", w.manager),
                ));
            }
        }
        Ok(())
    }

    /// The dataservice secret from `[security]`: the inline token or the
    /// contents of `token-file`, trimmed. `None` when neither is set.
    pub fn secret(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.security.token {
            return Ok(Some(t.trim().to_string()));
        }
        let Some(file) = &self.security.token_file else {
            return Ok(None);
        };
        let path = self.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let t = text.trim();
        if t.len() < 16 {
            return Err(ConfigError::Invalid {
                path,
                line: None,
                key: "security.token-file".into(),
                message: "the secret in this file is shorter than 16 characters".into(),
            });
        }
        Ok(Some(t.to_string()))
    }

    /// The connector listeners (read-write, read-only) of member `name`:
    /// its own `rw-listen`/`ro-listen`, else `[connector]`'s.
    pub fn listeners(&self, name: Option<&str>) -> (HostPort, HostPort) {
        let m = name.and_then(|n| self.member(n));
        (
            m.and_then(|m| m.rw_listen.clone())
                .unwrap_or_else(|| self.connector.rw_listen.clone()),
            m.and_then(|m| m.ro_listen.clone())
                .unwrap_or_else(|| self.connector.ro_listen.clone()),
        )
    }

    /// Whether `name` is a witness (a voting manager without a database).
    pub fn witness(&self, name: &str) -> Option<&Witness> {
        self.witnesses.iter().find(|w| w.name == name)
    }

    fn validate_members(&self) -> Result<(), Violation> {
        if self.members.is_empty() {
            return Err(Violation::new(
                "member",
                None,
                "",
                "at least one [[member]] is required",
            ));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addrs: HashMap<(String, &str), usize> = HashMap::new();
        for (i, m) in self.members.iter().enumerate() {
            if !is_identifier(&m.name.replace('-', "_")) {
                return Err(Violation::new(
                    "member",
                    Some(i),
                    "name",
                    format!(
                        "'{}' must start with a letter and hold only letters, digits, '-' and '_'",
                        m.name
                    ),
                ));
            }
            if let Some(j) = names.insert(&m.name, i) {
                return Err(Violation::new(
                    "member",
                    Some(i),
                    "name",
                    format!("'{}' is also the name of member[{j}]", m.name),
                ));
            }
            for (key, a) in [
                ("mysql", &m.mysql),
                ("replicator", &m.replicator),
                ("thl", &m.thl),
                ("manager", &m.manager),
            ] {
                if a.port == 0 {
                    return Err(Violation::new(
                        "member",
                        Some(i),
                        key,
                        "port 0 is not allowed for a member address",
                    ));
                }
                if let Some(j) = addrs.insert((a.to_string(), key), i) {
                    return Err(Violation::new(
                        "member",
                        Some(i),
                        key,
                        format!("{a} is also the {key} address of member[{j}]"),
                    ));
                }
            }
        }
        let masters: Vec<usize> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Master)
            .map(|(i, _)| i)
            .collect();
        match masters.as_slice() {
            [_] => Ok(()),
            [] => Err(Violation::new(
                "member",
                Some(0),
                "role",
                "no member has role = \"master\"; exactly one must",
            )),
            [_, second, ..] => Err(Violation::new(
                "member",
                Some(*second),
                "role",
                format!(
                    "member '{}' is a second master; exactly one member has role = \"master\"",
                    self.members[*second].name
                ),
            )),
        }
    }

    /// A path from the config made absolute against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The member with that name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The THL directory of a member for this service: its `thl-dir`, else
    /// `<thl-root>/<member>/<service>`. With `None`, the config must have a
    /// single member.
    pub fn thl_dir(&self, member: Option<&str>) -> Result<PathBuf, ConfigError> {
        let m = match member {
            Some(name) => self.member(name).ok_or_else(|| self.no_member(name))?,
            None => match self.members.as_slice() {
                [only] => only,
                _ => {
                    return Err(ConfigError::Invalid {
                        path: self.base_dir.clone(),
                        line: None,
                        key: "member".into(),
                        message: format!(
                            "the config has {} members; name one (members: {})",
                            self.members.len(),
                            self.member_names()
                        ),
                    })
                }
            },
        };
        Ok(match &m.thl_dir {
            Some(d) => self.resolve(d),
            None => self
                .resolve(&self.replicator.thl_root)
                .join(&m.name)
                .join(&self.service.name),
        })
    }

    fn member_names(&self) -> String {
        self.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn no_member(&self, name: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.base_dir.clone(),
            line: None,
            key: "member".into(),
            message: format!(
                "no member named '{name}' (members: {})",
                self.member_names()
            ),
        }
    }

    /// The config as TOML text (what `Config::parse` reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// A rule a parsed config breaks: where (table, array index, key) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Top-level table (`service`, `member`, ...).
    pub table: &'static str,
    /// Index within `[[table]]` arrays.
    pub index: Option<usize>,
    /// Key inside the table ("" for the table itself).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    fn new(
        table: &'static str,
        index: Option<usize>,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Violation {
            table,
            index,
            field,
            message: message.into(),
        }
    }

    /// Dotted key path: `timeouts.probe-interval-ms`, `member[1].mysql`.
    pub fn key(&self) -> String {
        let mut k = self.table.to_string();
        if let Some(i) = self.index {
            k.push_str(&format!("[{i}]"));
        }
        if !self.field.is_empty() {
            k.push('.');
            k.push_str(self.field);
        }
        k
    }

    fn locate(&self, text: &str) -> Option<usize> {
        locate::line_of(text, self.table, self.index, self.field)
            .or_else(|| locate::line_of(text, self.table, self.index, ""))
    }
}
