//! Elections without term inflation: leader contact, pre-vote, and the
//! watchdog that starts an election only when a majority has lost the
//! leader too (see the module doc of `raft` for why).
//!
//! [`Contact`] records when this node last heard from a legitimate leader
//! (the raft server touches it on every accepted append-entries). The
//! [`run`] loop checks it every 50 ms; past a deadline drawn anew for each
//! campaign (between `election-timeout-ms` and twice that) it sends a
//! [`PreVote`] to every other voter and calls `trigger().elect()` only when
//! a majority (itself included) answers that it has lost the leader too.
//! [`answer`] is the pure decision a voter makes on a pre-vote.

use super::Raft;
use crate::http::Client;
use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// When this node last heard from a leader.
pub struct Contact {
    last: Mutex<Instant>,
    heard: std::sync::atomic::AtomicBool,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            last: Mutex::new(Instant::now()),
            heard: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Contact {
    /// A leader was heard from now.
    pub fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// A leader was heard from now and this node's log matched it (an
    /// append-entries succeeded), or this node leads.
    pub fn touch_synced(&self) {
        self.touch();
        self.heard.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether, since this process started, a leader has accepted this
    /// node's log as matching its own (or this node became leader).
    pub fn heard(&self) -> bool {
        self.heard.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long since a leader was last heard from.
    pub fn age(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// "Would you vote for me?" — asked before a real election, changing nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVote {
    /// The asking node.
    pub candidate: u64,
    /// Its last log index.
    pub last_log_index: Option<u64>,
}

/// The answer to a [`PreVote`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    /// Whether the voter would vote.
    pub grant: bool,
    /// Why not, when not.
    pub reason: String,
}

/// What a voter answers: yes only if it is not a leader, has heard from no
/// leader for at least `timeout`, and the candidate's log is not behind its
/// own.
pub fn answer(
    req: &PreVote,
    my_state: ServerState,
    leader_age: Duration,
    my_last_log_index: Option<u64>,
    timeout: Duration,
) -> PreVoteAnswer {
    let no = |reason: String| PreVoteAnswer {
        grant: false,
        reason,
    };
    if my_state == ServerState::Leader {
        return no("I am the leader".into());
    }
    if leader_age < timeout {
        return no(format!(
            "I heard from the leader {} ms ago",
            leader_age.as_millis()
        ));
    }
    if req.last_log_index < my_last_log_index {
        return no(format!(
            "candidate's log ends at {:?}, mine at {:?}",
            req.last_log_index, my_last_log_index
        ));
    }
    PreVoteAnswer {
        grant: true,
        reason: String::new(),
    }
}

/// The election loop of one node. `peers` are the other voters (node id,
/// manager address); runs until the raft stops.
pub async fn run(
    raft: Raft,
    me: u64,
    contact: std::sync::Arc<Contact>,
    peers: Vec<(u64, String)>,
    client: Client,
    timeout: Duration,
) {
    let draw = || {
        let ms = timeout.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms..=ms * 2))
    };
    let mut deadline = draw();
    // the last campaign attempt: the next waits a fresh deadline from it
    // (leader contact is kept apart: the partition watch reads it)
    let mut last_attempt = std::time::Instant::now();
    let voters = peers.len() + 1;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let (state, last_log_index, running) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.state, m.last_log_index, m.running_state.is_ok())
        };
        if !running {
            return;
        }
        if state == ServerState::Leader {
            contact.touch_synced();
            continue;
        }
        if state == ServerState::Learner && last_log_index.is_none() {
            // not initialized yet: nothing to campaign for
            continue;
        }
        let age = contact.age();
        if age < deadline || last_attempt.elapsed() < deadline {
            continue;
        }
        let req = PreVote {
            candidate: me,
            last_log_index,
        };
        let asks = peers.iter().map(|(_, addr)| {
            let client = client.clone();
            let addr = addr.clone();
            let req = req.clone();
            async move {
                client
                    .post::<_, PreVoteAnswer>(&addr, "/raft/prevote", &req, timeout / 2)
                    .await
            }
        });
        let answers = futures_join_all(asks).await;
        let granted = 1 + answers
            .iter()
            .filter(|a| matches!(a, Ok(a) if a.grant))
            .count();
        if granted * 2 > voters {
            info!(
                no_leader_ms = age.as_millis() as u64,
                granted, voters, "no leader heard from; pre-vote won, starting an election"
            );
            let _ = raft.trigger().elect().await;
        } else {
            let why: Vec<String> = answers
                .iter()
                .map(|a| match a {
                    Ok(a) if a.grant => "yes".to_string(),
                    Ok(a) => a.reason.clone(),
                    Err(e) => e.to_string(),
                })
                .collect();
            debug!(granted, voters, answers = ?why, "pre-vote lost: not campaigning");
        }
        last_attempt = std::time::Instant::now();
        deadline = draw();
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(750);

    fn req(idx: Option<u64>) -> PreVote {
        PreVote {
            candidate: 7,
            last_log_index: idx,
        }
    }

    #[test]
    fn a_voter_that_still_hears_the_leader_says_no() {
        let a = answer(
            &req(Some(10)),
            ServerState::Follower,
            Duration::from_millis(100),
            Some(10),
            T,
        );
        assert!(!a.grant, "{}", a.reason);
        let a = answer(&req(Some(10)), ServerState::Leader, T * 5, Some(10), T);
        assert!(!a.grant);
    }

    #[test]
    fn a_voter_that_lost_the_leader_says_yes_unless_the_candidate_is_behind() {
        let a = answer(&req(Some(10)), ServerState::Follower, T * 2, Some(10), T);
        assert!(a.grant);
        let a = answer(&req(Some(9)), ServerState::Candidate, T * 2, Some(10), T);
        assert!(!a.grant, "a candidate missing entries must not win");
        let a = answer(&req(None), ServerState::Follower, T * 2, None, T);
        assert!(a.grant);
    }
}
