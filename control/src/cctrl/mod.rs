//! `cctrl`: the command grammar ([`parse`]) and Tungsten's output layout
//! ([`format`]). Pure: text in, a [`Cmd`] or a one-line error out; a view
//! in, text out. The `cctrl` binary and the manager's `/manager/command`
//! route both use this one grammar, so a command means the same in the
//! shell, in `cctrl -e` and over HTTP.

pub mod format;

use crate::policy::DsAction;
use crate::state::RouterTarget;
use carbide_config::{PolicyMode, RouterState};

/// A parsed cctrl command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// `ls` / `ls -l`
    Ls {
        /// `-l`: the recent changes and replicator details too.
        long: bool,
    },
    /// `members`
    Members,
    /// `ping`
    Ping,
    /// `use SERVICE`
    Use(String),
    /// `set policy automatic|manual|maintenance`
    SetPolicy(PolicyMode),
    /// `datasource H shun|welcome|online|offline|fail|recover`
    Datasource {
        /// The datasource.
        name: String,
        /// What to do.
        action: DsAction,
    },
    /// `replicator H online|offline|status`
    Replicator {
        /// The member.
        name: String,
        /// What to do.
        action: ReplicatorAction,
    },
    /// `router *|NAME online|offline`
    Router {
        /// Which.
        target: RouterTarget,
        /// To what.
        state: RouterState,
    },
    /// `cluster heartbeat`
    ClusterHeartbeat,
    /// `expert`
    Expert,
    /// `help`
    Help,
    /// `exit` / `quit`
    Exit,
}

/// `replicator H ...`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicatorAction {
    /// Put it online.
    Online,
    /// Put it offline.
    Offline,
    /// Show its status.
    Status,
}

/// The commands and their forms, as `help` prints them.
pub const HELP: &str = "\
ls [-l]                                   show the dataservice: coordinator, routers, datasources
members                                   show the managers and which of them are in contact
ping                                      check that every manager and data server answers
use SERVICE                               switch to another dataservice
set policy automatic|manual|maintenance   how the manager reacts to failures
datasource HOST shun|welcome|online|offline|fail|recover
                                          change a datasource's state
replicator HOST online|offline|status     act on a member's replicator
router *|NAME online|offline              change every connector's (or one connector's) router state
cluster heartbeat                         put a heartbeat through the replication pipeline
expert                                    allow commands that act on the master
help                                      this list
exit | quit                               leave cctrl";

const VALID: &str = "ls, members, ping, use, set policy, datasource, replicator, router, cluster heartbeat, expert, help, exit";

/// Parses one command line. Errors are one line saying what is wrong and
/// the valid forms.
pub fn parse(line: &str) -> Result<Cmd, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        [] => Err("empty command; type 'help' for the commands".into()),
        ["ls"] => Ok(Cmd::Ls { long: false }),
        ["ls", "-l"] => Ok(Cmd::Ls { long: true }),
        ["ls", ..] => Err("usage: ls [-l]".into()),
        ["members"] => Ok(Cmd::Members),
        ["ping"] => Ok(Cmd::Ping),
        ["use", _] => Ok(Cmd::Use(words[1].to_string())),
        ["use", ..] => Err("usage: use SERVICE".into()),
        ["set", "policy", p] => p.parse::<PolicyMode>().map(Cmd::SetPolicy).map_err(|_| {
            format!(
                "unknown policy '{}'; usage: set policy automatic|manual|maintenance",
                words[2]
            )
        }),
        ["set", ..] => Err("usage: set policy automatic|manual|maintenance".into()),
        ["datasource", _, a] => {
            let action = match *a {
                "shun" => DsAction::Shun,
                "welcome" => DsAction::Welcome,
                "online" => DsAction::Online,
                "offline" => DsAction::Offline,
                "fail" => DsAction::Fail,
                "recover" => DsAction::Recover,
                _ => {
                    return Err(format!(
                        "unknown datasource action '{}'; usage: datasource HOST shun|welcome|online|offline|fail|recover",
                        words[2]
                    ))
                }
            };
            Ok(Cmd::Datasource {
                name: words[1].to_string(),
                action,
            })
        }
        ["datasource", ..] => {
            Err("usage: datasource HOST shun|welcome|online|offline|fail|recover".into())
        }
        ["replicator", _, a] => {
            let action = match *a {
                "online" => ReplicatorAction::Online,
                "offline" => ReplicatorAction::Offline,
                "status" => ReplicatorAction::Status,
                _ => {
                    return Err(format!(
                    "unknown replicator action '{}'; usage: replicator HOST online|offline|status",
                    words[2]
                ))
                }
            };
            Ok(Cmd::Replicator {
                name: words[1].to_string(),
                action,
            })
        }
        ["replicator", ..] => Err("usage: replicator HOST online|offline|status".into()),
        ["router", t, s] => {
            let state = match *s {
                "online" => RouterState::Online,
                "offline" => RouterState::Offline,
                _ => {
                    return Err(format!(
                        "unknown router state '{}'; usage: router *|NAME online|offline",
                        words[2]
                    ))
                }
            };
            let target = if *t == "*" {
                RouterTarget::All
            } else {
                RouterTarget::One(words[1].to_string())
            };
            Ok(Cmd::Router { target, state })
        }
        ["router", ..] => Err("usage: router *|NAME online|offline".into()),
        ["cluster", "heartbeat"] => Ok(Cmd::ClusterHeartbeat),
        ["cluster", ..] => Err("usage: cluster heartbeat".into()),
        ["expert"] => Ok(Cmd::Expert),
        ["help"] | ["?"] => Ok(Cmd::Help),
        ["exit"] | ["quit"] => Ok(Cmd::Exit),
        [w, ..] => Err(format!(
            "unknown command '{}'; valid commands: {VALID} (type 'help' for their forms)",
            words.first().copied().unwrap_or(w)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("ls"), Ok(Cmd::Ls { long: false }));
        assert_eq!(parse("  LS -l "), Ok(Cmd::Ls { long: true }));
        assert_eq!(
            parse("set policy manual"),
            Ok(Cmd::SetPolicy(PolicyMode::Manual))
        );
        assert_eq!(
            parse("datasource db3 shun"),
            Ok(Cmd::Datasource {
                name: "db3".into(),
                action: DsAction::Shun
            })
        );
        assert_eq!(
            parse("router * offline"),
            Ok(Cmd::Router {
                target: RouterTarget::All,
                state: RouterState::Offline
            })
        );
        assert_eq!(
            parse("router db2 online"),
            Ok(Cmd::Router {
                target: RouterTarget::One("db2".into()),
                state: RouterState::Online
            })
        );
        assert_eq!(
            parse("replicator db2 status"),
            Ok(Cmd::Replicator {
                name: "db2".into(),
                action: ReplicatorAction::Status
            })
        );
        assert_eq!(parse("cluster heartbeat"), Ok(Cmd::ClusterHeartbeat));
        assert_eq!(parse("use alpha"), Ok(Cmd::Use("alpha".into())));
        assert_eq!(parse("quit"), Ok(Cmd::Exit));
    }

    #[test]
    fn errors_say_what_is_wrong_and_the_valid_forms() {
        let cases = [
            ("", "empty command; type 'help' for the commands"),
            ("lsx", "unknown command 'lsx'; valid commands: ls, members, ping, use, set policy, datasource, replicator, router, cluster heartbeat, expert, help, exit (type 'help' for their forms)"),
            ("ls -x", "usage: ls [-l]"),
            ("set policy sometimes", "unknown policy 'sometimes'; usage: set policy automatic|manual|maintenance"),
            ("set mode manual", "usage: set policy automatic|manual|maintenance"),
            ("datasource db3 explode", "unknown datasource action 'explode'; usage: datasource HOST shun|welcome|online|offline|fail|recover"),
            ("datasource db3", "usage: datasource HOST shun|welcome|online|offline|fail|recover"),
            ("replicator db3 restart", "unknown replicator action 'restart'; usage: replicator HOST online|offline|status"),
            ("router * onhold", "unknown router state 'onhold'; usage: router *|NAME online|offline"),
            ("router offline", "usage: router *|NAME online|offline"),
            ("cluster beat", "usage: cluster heartbeat"),
            ("use", "usage: use SERVICE"),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(want.to_string()), "{line:?}");
        }
    }
}
