//! The connector's HTTP admin routes, served on the manager port:
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text format |
//! | `GET /status` | JSON: router state, routing table, sessions per datasource |
//! | `POST /router/online`, `/router/offline`, `/router/onhold` | set the router state |
//!
//! Requests enter through axum; router changes go to [`Router::set_state`].

use crate::listener::Limit;
use crate::metrics::Metrics;
use crate::routing::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use carbide_config::RouterState;
use std::sync::Arc;
use tracing::info;

/// What the admin routes read and change.
#[derive(Clone)]
pub struct AdminState {
    /// The router.
    pub router: Arc<Router>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Open-session limit (for /status).
    pub limit: Arc<Limit>,
}

/// The connector's routes. With `local_router = false` (the connector
/// follows a manager) `POST /router/...` answers 409 pointing at `cctrl`:
/// the router state is the manager's to change.
pub fn routes(state: AdminState, local_router: bool) -> axum::Router {
    let r = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status));
    let r = if local_router {
        r.route("/router/{state}", post(set_router))
    } else {
        r.route("/router/{state}", post(managed_router))
    };
    r.with_state(state)
}

async fn managed_router(Path(word): Path<String>) -> Response {
    (
        StatusCode::CONFLICT,
        format!(
            "this connector follows the manager: use cctrl 'router * {word}' (or 'router NAME {word}'), which commits the change for every connector\n"
        ),
    )
        .into_response()
}

/// Publishes the router state and epoch gauges.
pub fn refresh_gauges(state: &AdminState) {
    let current = state.router.state();
    for s in RouterState::ALL {
        state
            .metrics
            .router_state
            .with_label_values(&[s.as_str()])
            .set((*s == current) as i64);
    }
    state.metrics.routing_epoch.set(state.router.epoch() as i64);
}

async fn metrics(State(s): State<AdminState>) -> Response {
    refresh_gauges(&s);
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    let table = s.router.load();
    Json(serde_json::json!({
        "router_state": s.router.state().to_string(),
        "routing_epoch": table.epoch,
        "open_sessions": s.limit.open(),
        "sessions_per_datasource": s.router.session_counts(),
        "routing_table": &*table,
    }))
    .into_response()
}

async fn set_router(State(s): State<AdminState>, Path(word): Path<String>) -> Response {
    let new = match word.as_str() {
        "online" => RouterState::Online,
        "offline" => RouterState::Offline,
        "onhold" => RouterState::OnHold,
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("unknown router state '{other}' (expected online, offline or onhold)\n"),
            )
                .into_response();
        }
    };
    let old = s.router.state();
    s.router.set_state(new);
    refresh_gauges(&s);
    info!(from = %old, to = %new, "router state changed by the admin API");
    Json(serde_json::json!({ "router_state": new.to_string(), "previous": old.to_string() }))
        .into_response()
}
