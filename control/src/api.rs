//! The manager's HTTP/JSON API on the manager port: what `cctrl` uses.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | `{"member": …}`: this manager answers (open) |
//! | POST | `/manager/command` | `{"line": "ls", "expert": false}` → `{"output": …}` or `{"error": …}` |
//! | GET | `/manager/view` | the [`crate::view::ClusterView`] as JSON |
//! | POST | `/manager/report` | a manager's [`Report`] for the leader |
//! | POST | `/raft/*` | raft RPCs ([`crate::raft::server`]) |
//!
//! Every route but `/health` needs the dataservice secret (the middleware
//! [`crate::http::require_secret`] in front of the whole port). Commands
//! and views are the leader's: a follower forwards them to the leader and
//! relays its answer; with no leader it answers 503 saying that this
//! manager is not in contact with a majority.

use crate::http::HttpError;
use crate::monitor::Report;
use crate::node::Node;
use crate::view::ClusterView;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A cctrl command over HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The command line, as typed.
    pub line: String,
    /// Whether the shell is in expert mode.
    #[serde(default)]
    pub expert: bool,
}

/// The answer to a [`CommandRequest`]: exactly one of the two is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandResponse {
    /// What to print.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The one-line error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The manager's routes (raft's included).
pub fn routes(node: Arc<Node>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/manager/command", post(command))
        .route("/manager/view", get(view))
        .route("/manager/report", post(report))
        .with_state(node.clone())
        .merge(node.raft_routes())
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "member": node.name, "leader": node.leader() })).into_response()
}

fn no_leader(node: &Node) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(CommandResponse {
            output: None,
            error: Some(format!(
                "no coordinator: manager '{}' is not in contact with a majority of the managers",
                node.name
            )),
        }),
    )
        .into_response()
}

fn forward_error(leader: &str, e: HttpError) -> Response {
    let (status, msg) = match &e {
        HttpError::Status { status, body, .. } => {
            // the leader's own JSON answer: relay it
            if let Ok(r) = serde_json::from_str::<CommandResponse>(body) {
                return (
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                    Json(r),
                )
                    .into_response();
            }
            (StatusCode::BAD_GATEWAY, e.to_string())
        }
        // the coordinator cannot be reached: for the caller that is the
        // same as having none (an election is under way, or this manager
        // is cut off); 503 tells cctrl to try again or ask another manager
        _ => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    (
        status,
        Json(CommandResponse {
            output: None,
            error: Some(format!("coordinator '{leader}' did not answer: {msg}")),
        }),
    )
        .into_response()
}

/// Where a leader-only request goes: `Ok(None)` to handle here, `Ok(Some)`
/// to forward to that leader's address, `Err` when there is no leader.
fn route_to_leader(node: &Node) -> Result<Option<(String, String)>, Box<Response>> {
    let none = || Box::new(no_leader(node));
    if node.is_leader() && node.in_contact() {
        return Ok(None);
    }
    if !node.in_contact() {
        return Err(none());
    }
    let leader = node.leader().ok_or_else(none)?;
    let addr = node.manager_addr(&leader).ok_or_else(none)?;
    Ok(Some((leader, addr.to_string())))
}

async fn command(State(node): State<Arc<Node>>, Json(req): Json<CommandRequest>) -> Response {
    match route_to_leader(&node) {
        Err(r) => *r,
        Ok(Some((leader, addr))) => {
            // a hung coordinator accepts connections and never answers: a
            // cheap question first, so the caller hears "no coordinator" in
            // 2 s rather than after the command's whole timeout
            let alive: Result<serde_json::Value, HttpError> = node
                .client()
                .get(&addr, "/health", Duration::from_secs(2))
                .await;
            if let Err(e) = alive {
                return forward_error(&leader, e);
            }
            let r: Result<CommandResponse, HttpError> = node
                .client()
                .post(&addr, "/manager/command", &req, Duration::from_secs(60))
                .await;
            match r {
                Ok(r) => Json(r).into_response(),
                Err(e) => forward_error(&leader, e),
            }
        }
        Ok(None) => match node.execute(&req.line, req.expert).await {
            Ok(output) => Json(CommandResponse {
                output: Some(output),
                error: None,
            })
            .into_response(),
            Err(e) => (
                StatusCode::BAD_REQUEST,
                Json(CommandResponse {
                    output: None,
                    error: Some(e),
                }),
            )
                .into_response(),
        },
    }
}

async fn view(State(node): State<Arc<Node>>) -> Response {
    match route_to_leader(&node) {
        Err(r) => *r,
        Ok(Some((leader, addr))) => {
            let r: Result<ClusterView, HttpError> = node
                .client()
                .get(&addr, "/manager/view", Duration::from_secs(10))
                .await;
            match r {
                Ok(v) => Json(v).into_response(),
                Err(e) => forward_error(&leader, e),
            }
        }
        Ok(None) => Json(node.view()).into_response(),
    }
}

async fn report(State(node): State<Arc<Node>>, Json(r): Json<Report>) -> Response {
    node.record(r);
    Json(serde_json::json!({})).into_response()
}
