//! The replicator service state machine (pure: no IO, no clocks).
//!
//! Inputs ([`Input`]: operator commands and extractor reports) enter
//! [`Machine::handle`]; it returns the [`Action`]s the runtime
//! (`service.rs`) must carry out, and the new state is readable from the
//! machine. States use Tungsten's names:
//!
//! ```text
//! OFFLINE:NORMAL --online--> GOING-ONLINE:SYNCHRONIZING --connected--> ONLINE
//!        ^                          |  ^                                  |
//!        |                          |  +------------disconnected----------+
//!        +---- stopped <-- offline / offline -at-seqno N (deferred) ------+
//! any --failed--> OFFLINE:ERROR (pending error, seqno, eventid) --online--> …
//! ```

use crate::extract::StopRequest;
use carbide_config::Role;

/// A replicator state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Stopped by the operator (or never started).
    OfflineNormal,
    /// Stopped by an error; see the pending error.
    OfflineError,
    /// Connecting to the source / catching up.
    GoingOnline,
    /// Extracting.
    Online,
}

impl State {
    /// Tungsten's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::OfflineNormal => "OFFLINE:NORMAL",
            State::OfflineError => "OFFLINE:ERROR",
            State::GoingOnline => "GOING-ONLINE:SYNCHRONIZING",
            State::Online => "ONLINE",
        }
    }

    /// Parses Tungsten's spelling (also `OFFLINE` for either offline state).
    pub fn matches(self, wanted: &str) -> bool {
        let w = wanted.to_ascii_uppercase();
        self.as_str() == w || (w == "OFFLINE" && self.as_str().starts_with("OFFLINE"))
    }
}

/// What happens to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `trepctl online`.
    Online,
    /// `trepctl offline` (immediate or not: the extractor always stops at a
    /// transaction boundary).
    Offline,
    /// `trepctl offline -at-seqno N`.
    OfflineAtSeqno(u64),
    /// `trepctl setrole -role R` (only while offline).
    SetRole(Role),
    /// The extractor is streaming from the source.
    Connected,
    /// The extractor lost the source and is retrying.
    Disconnected,
    /// The extractor stopped as asked.
    Stopped,
    /// The extractor failed; with the last stored seqno and eventid.
    Failed {
        /// The error.
        error: String,
        /// Last stored seqno.
        seqno: Option<u64>,
        /// Its eventid.
        eventid: Option<String>,
    },
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the extractor (master role).
    StartExtractor,
    /// Start the THL client and the applier (slave and relay roles).
    StartSlave,
    /// Ask the running extractor to stop.
    Stop(StopRequest),
    /// Refuse the command with this message.
    Reject(String),
}

/// The error that put a service OFFLINE:ERROR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingError {
    /// Message.
    pub message: String,
    /// Last stored seqno at the time.
    pub seqno: Option<u64>,
    /// Its eventid.
    pub eventid: Option<String>,
}

/// One service's state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    role: Role,
    running: bool,
    pending: Option<PendingError>,
    offline_at: Option<u64>,
}

impl Machine {
    /// A machine in OFFLINE:NORMAL with this role.
    pub fn new(role: Role) -> Self {
        Machine {
            state: State::OfflineNormal,
            role,
            running: false,
            pending: None,
            offline_at: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The pending error, in OFFLINE:ERROR.
    pub fn pending_error(&self) -> Option<&PendingError> {
        self.pending.as_ref()
    }

    /// Deferred offline seqno, if any.
    pub fn offline_at(&self) -> Option<u64> {
        self.offline_at
    }

    /// Applies an input; returns the actions to carry out.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        use State::*;
        match input {
            Input::Online => match self.state {
                Online | GoingOnline => Vec::new(),
                OfflineNormal | OfflineError => {
                    let start = match self.role {
                        Role::Master => Action::StartExtractor,
                        Role::Slave | Role::Relay => Action::StartSlave,
                        other => {
                            return vec![Action::Reject(format!(
                                "cannot go online: role {} has no replication pipeline",
                                other.as_str()
                            ))]
                        }
                    };
                    if self.running {
                        return vec![Action::Reject(
                            "the extractor is still stopping; try again".into(),
                        )];
                    }
                    self.state = GoingOnline;
                    self.pending = None;
                    self.offline_at = None;
                    self.running = true;
                    vec![start]
                }
            },
            Input::Offline => {
                self.offline_at = None;
                if self.running {
                    vec![Action::Stop(StopRequest::Now)]
                } else {
                    Vec::new()
                }
            }
            Input::OfflineAtSeqno(n) => {
                if !self.running {
                    return vec![Action::Reject(format!(
                        "cannot defer offline to seqno {n}: the service is {}",
                        self.state.as_str()
                    ))];
                }
                self.offline_at = Some(n);
                vec![Action::Stop(StopRequest::AtSeqno(n))]
            }
            Input::SetRole(role) => {
                if self.running {
                    return vec![Action::Reject(format!(
                        "setrole needs the service offline; it is {}",
                        self.state.as_str()
                    ))];
                }
                self.role = role;
                Vec::new()
            }
            Input::Connected => {
                if self.running {
                    self.state = Online;
                }
                Vec::new()
            }
            Input::Disconnected => {
                if self.running && self.state == Online {
                    self.state = GoingOnline;
                }
                Vec::new()
            }
            Input::Stopped => {
                self.running = false;
                self.offline_at = None;
                self.state = OfflineNormal;
                Vec::new()
            }
            Input::Failed {
                error,
                seqno,
                eventid,
            } => {
                self.running = false;
                self.offline_at = None;
                self.state = OfflineError;
                self.pending = Some(PendingError {
                    message: error,
                    seqno,
                    eventid,
                });
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_connect_offline_cycle() {
        let mut m = Machine::new(Role::Master);
        assert_eq!(m.handle(Input::Online), vec![Action::StartExtractor]);
        assert_eq!(m.state(), State::GoingOnline);
        assert!(
            m.handle(Input::Online).is_empty(),
            "online twice is a no-op"
        );
        m.handle(Input::Connected);
        assert_eq!(m.state(), State::Online);
        m.handle(Input::Disconnected);
        assert_eq!(m.state(), State::GoingOnline);
        m.handle(Input::Connected);
        assert_eq!(
            m.handle(Input::Offline),
            vec![Action::Stop(StopRequest::Now)]
        );
        assert_eq!(m.state(), State::Online, "online until the extractor stops");
        m.handle(Input::Stopped);
        assert_eq!(m.state(), State::OfflineNormal);
        assert!(m.handle(Input::Offline).is_empty());
    }

    #[test]
    fn deferred_offline() {
        let mut m = Machine::new(Role::Master);
        assert!(matches!(
            m.handle(Input::OfflineAtSeqno(5))[0],
            Action::Reject(_)
        ));
        m.handle(Input::Online);
        m.handle(Input::Connected);
        assert_eq!(
            m.handle(Input::OfflineAtSeqno(5)),
            vec![Action::Stop(StopRequest::AtSeqno(5))]
        );
        assert_eq!(m.offline_at(), Some(5));
        m.handle(Input::Stopped);
        assert_eq!(m.offline_at(), None);
        assert_eq!(m.state(), State::OfflineNormal);
    }

    #[test]
    fn failure_keeps_the_error_until_online() {
        let mut m = Machine::new(Role::Master);
        m.handle(Input::Online);
        m.handle(Input::Failed {
            error: "binlog purged".into(),
            seqno: Some(7),
            eventid: Some("f:1;-1".into()),
        });
        assert_eq!(m.state(), State::OfflineError);
        assert_eq!(m.pending_error().map(|p| p.seqno), Some(Some(7)));
        assert_eq!(m.handle(Input::Online), vec![Action::StartExtractor]);
        assert!(m.pending_error().is_none());
    }

    #[test]
    fn slave_role_starts_the_slave_pipeline() {
        let mut m = Machine::new(Role::Slave);
        assert_eq!(m.handle(Input::Online), vec![Action::StartSlave]);
        assert_eq!(m.state(), State::GoingOnline);
        let mut m = Machine::new(Role::Witness);
        assert!(matches!(m.handle(Input::Online)[0], Action::Reject(_)));
        assert_eq!(m.state(), State::OfflineNormal);
    }

    #[test]
    fn setrole_only_while_offline() {
        let mut m = Machine::new(Role::Master);
        m.handle(Input::Online);
        assert!(matches!(
            m.handle(Input::SetRole(Role::Slave))[0],
            Action::Reject(_)
        ));
        assert_eq!(m.role(), Role::Master);
        m.handle(Input::Stopped);
        assert!(m.handle(Input::SetRole(Role::Slave)).is_empty());
        assert_eq!(m.role(), Role::Slave);
        assert_eq!(m.handle(Input::Online), vec![Action::StartSlave]);
    }

    #[test]
    fn state_names() {
        assert!(State::OfflineError.matches("offline"));
        assert!(State::Online.matches("ONLINE"));
        assert!(!State::GoingOnline.matches("ONLINE"));
    }
}
