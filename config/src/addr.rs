//! `host:port` addresses as written in the config (`"127.0.0.1:3306"`,
//! `"db1.example.com:2112"`, `"[::1]:3306"`).
//!
//! Host names are kept as text and resolved when used, so a config can name
//! hosts that are not resolvable on the machine that validates it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port, 1..=65535 (0 is accepted only for listeners: "any free port").
    pub port: u16,
}

impl HostPort {
    /// Builds an address from parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// True when the host is a loopback or local name.
    pub fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "::1") || self.host.starts_with("127.")
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| format!("'{s}' is not [ipv6]:port"))?;
            (h, p)
        } else {
            s.rsplit_once(':')
                .ok_or_else(|| format!("'{s}' is not host:port (no ':port')"))?
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("'{s}' has an empty or invalid host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("'{s}' has an invalid port '{port}' (expected 0-65535)"))?;
        Ok(HostPort::new(host, port))
    }
}

impl Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: HostPort = "db1:3306".parse().unwrap();
        assert_eq!(a, HostPort::new("db1", 3306));
        let b: HostPort = "[::1]:9306".parse().unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.to_string(), "[::1]:9306");
        assert!(b.is_local());
        assert!("db1".parse::<HostPort>().is_err());
        assert!("db1:99999".parse::<HostPort>().is_err());
        assert!(":3306".parse::<HostPort>().is_err());
    }
}
