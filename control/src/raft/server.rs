//! Raft RPCs in: axum handlers on the manager port for append-entries,
//! vote, install-snapshot and pre-vote. Each answers with the JSON of
//! `Result<response, RaftError>` as [`super::network`] expects; the
//! dataservice secret is checked by the middleware in front of them.

use super::watchdog::{answer, Contact, PreVote};
use super::{Raft, TypeConfig};
use axum::extract::State;
use axum::routing::post;
use axum::Json;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What the raft routes need.
#[derive(Clone)]
pub struct RaftState {
    /// The raft.
    pub raft: Raft,
    /// Leader contact, touched on every accepted append-entries.
    pub contact: Arc<Contact>,
    /// The election timeout (pre-vote answers use it).
    pub timeout: Duration,
}

/// `/raft/append`, `/raft/vote`, `/raft/snapshot`, `/raft/prevote`.
pub fn routes(state: RaftState) -> axum::Router {
    axum::Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/prevote", post(prevote))
        .with_state(state)
}

fn json<T: serde::Serialize>(v: &T) -> Json<Value> {
    Json(serde_json::to_value(v).unwrap_or(Value::Null))
}

async fn append(
    State(s): State<RaftState>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Value> {
    let r = s.raft.append_entries(req).await;
    match r {
        Ok(AppendEntriesResponse::Success) => s.contact.touch_synced(),
        Ok(AppendEntriesResponse::PartialSuccess(_) | AppendEntriesResponse::Conflict) => {
            s.contact.touch()
        }
        _ => {}
    }
    json(&r)
}

async fn vote(State(s): State<RaftState>, Json(req): Json<VoteRequest<u64>>) -> Json<Value> {
    json(&s.raft.vote(req).await)
}

async fn snapshot(
    State(s): State<RaftState>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Value> {
    let r = s.raft.install_snapshot(req).await;
    if r.is_ok() {
        s.contact.touch();
    }
    json(&r)
}

async fn prevote(State(s): State<RaftState>, Json(req): Json<PreVote>) -> Json<Value> {
    let (state, last) = {
        let m = s.raft.metrics();
        let m = m.borrow();
        (m.state, m.last_log_index)
    };
    json(&answer(&req, state, s.contact.age(), last, s.timeout))
}
