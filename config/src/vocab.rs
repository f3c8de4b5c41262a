//! The shared vocabulary of a dataservice: roles, datasource states, policy
//! modes and router states.
//!
//! Every crate speaks these types; their `Display` is the exact string
//! operators see in `cctrl` and `trepctl` output (see DESIGN.md,
//! "Vocabulary"), and `FromStr` accepts the same strings case-insensitively.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Error returned when a vocabulary word is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{given}' (expected one of: {expected})")]
pub struct UnknownWord {
    /// What was being parsed ("role", "policy mode", ...).
    pub kind: &'static str,
    /// The text that did not match.
    pub given: String,
    /// The accepted words, space separated.
    pub expected: String,
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident, $kind:literal, { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The operator-facing word.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(UnknownWord {
                    kind: $kind,
                    given: s.to_string(),
                    expected: [$($text),+].join(" "),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

word_enum!(
    /// The role of a datasource or replicator, as written in cctrl/trepctl.
    Role, "role", {
        /// The writable primary.
        Master => "master",
        /// A read replica fed from the master.
        Slave => "slave",
        /// A replica that stores THL and serves it onward.
        Relay => "relay",
        /// A replica kept out of read traffic.
        Standby => "standby",
        /// A member with no database, voting only.
        Witness => "witness",
    }
);

word_enum!(
    /// How the manager reacts to failures.
    PolicyMode, "policy mode", {
        /// Failures are handled automatically (failover, recovery).
        Automatic => "AUTOMATIC",
        /// Failures are reported; the operator acts.
        Manual => "MANUAL",
        /// The manager changes nothing; operators work on the nodes.
        Maintenance => "MAINTENANCE",
    }
);

word_enum!(
    /// State of a connector's router.
    RouterState, "router state", {
        /// Sessions are accepted and routed.
        Online => "ONLINE",
        /// New sessions and new transactions wait until ONLINE or a timeout.
        OnHold => "ONHOLD",
        /// New sessions are refused; open ones close at a transaction boundary.
        Offline => "OFFLINE",
    }
);

/// The state of a datasource as the manager sees it, with the reason for the
/// non-ONLINE states: `SHUNNED(MANUALLY-SHUNNED)`, `FAILED(NODE 'db1' IS UNREACHABLE)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasourceState {
    /// Serving traffic.
    Online,
    /// Not serving traffic, no failure recorded.
    Offline,
    /// Taken out of service on purpose (by an operator or by the manager).
    Shunned(String),
    /// Taken out of service because it failed.
    Failed(String),
}

impl fmt::Display for DatasourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasourceState::Online => f.write_str("ONLINE"),
            DatasourceState::Offline => f.write_str("OFFLINE"),
            DatasourceState::Shunned(r) => write!(f, "SHUNNED({r})"),
            DatasourceState::Failed(r) => write!(f, "FAILED({r})"),
        }
    }
}

impl FromStr for DatasourceState {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownWord {
            kind: "datasource state",
            given: s.to_string(),
            expected: "ONLINE OFFLINE SHUNNED(reason) FAILED(reason)".to_string(),
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("ONLINE") {
            return Ok(DatasourceState::Online);
        }
        if t.eq_ignore_ascii_case("OFFLINE") {
            return Ok(DatasourceState::Offline);
        }
        let (word, rest) = t.split_once('(').ok_or_else(bad)?;
        let reason = rest.strip_suffix(')').ok_or_else(bad)?.to_string();
        if word.eq_ignore_ascii_case("SHUNNED") {
            Ok(DatasourceState::Shunned(reason))
        } else if word.eq_ignore_ascii_case("FAILED") {
            Ok(DatasourceState::Failed(reason))
        } else {
            Err(bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_display() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(*r));
        }
        for p in PolicyMode::ALL {
            assert_eq!(p.to_string().parse::<PolicyMode>(), Ok(*p));
        }
        for s in RouterState::ALL {
            assert_eq!(s.to_string().parse::<RouterState>(), Ok(*s));
        }
        assert_eq!("automatic".parse::<PolicyMode>(), Ok(PolicyMode::Automatic));
        assert_eq!(RouterState::OnHold.to_string(), "ONHOLD");
    }

    #[test]
    fn unknown_word_names_the_choices() {
        let e = "primary".parse::<Role>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown role 'primary' (expected one of: master slave relay standby witness)"
        );
    }

    #[test]
    fn datasource_state_carries_reason() {
        let s = DatasourceState::Failed("NODE 'db1' IS UNREACHABLE".into());
        assert_eq!(s.to_string(), "FAILED(NODE 'db1' IS UNREACHABLE)");
        assert_eq!(s.to_string().parse::<DatasourceState>(), Ok(s));
        assert_eq!(
            "SHUNNED(MANUALLY-SHUNNED)".parse::<DatasourceState>(),
            Ok(DatasourceState::Shunned("MANUALLY-SHUNNED".into()))
        );
        assert!("SHUNNED".parse::<DatasourceState>().is_err());
    }
}
