//! The replicator's HTTP/JSON admin API and Prometheus `/metrics`.
//!
//! Requests enter [`router`] (axum); each names a service (or the only
//! one) and calls [`Service`] methods; JSON leaves. `trepctl` is the
//! client. Routes:
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/version` | `{"version": …}` |
//! | GET | `/services` | name, role, state of each service |
//! | GET | `/services/{s}/status` | [`crate::daemon::Status`] |
//! | POST | `/services/{s}/online[?skip-seqno=N,M&until-seqno=N&from-event=ID]` | go online |
//! | POST | `/services/{s}/setrole?role=R[&uri=thl://h:p/]` | change role (offline) |
//! | POST | `/services/{s}/reset?thl=1&db=1` | remove THL / drop the catalog (offline) |
//! | POST | `/services/{s}/purge` | kill other sessions on the local database |
//! | POST | `/services/{s}/offline[?at-seqno=N]` | go offline (now, or deferred) |
//! | POST | `/services/{s}/heartbeat[?name=N]` | heartbeat through the pipeline |
//! | GET | `/metrics` | state, stored seqno, latency, events, bytes per service |
//!
//! Errors are `{"error": "…"}` with 400 (bad request), 401 (no or wrong
//! dataservice secret), 404 (no such service), 409 (not possible in this
//! state), 503 (too many connections) or 504 (timed out).
//!
//! Every `POST` needs `Authorization: Bearer <secret>` (the dataservice
//! secret of `[security]`, see `guard.rs`); the `GET` routes stay open as a
//! documented choice (they only read; `/metrics` is scraped without it).
//! `listener.rs` caps concurrent connections (default 64) and closes idle
//! ones.

mod guard;
pub mod listener;

pub use guard::{decide, Verdict};
pub use listener::{CappedListener, DEFAULT_MAX_CONNECTIONS};

use crate::daemon::{CommandError, Service};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The services one admin API serves.
#[derive(Clone)]
pub struct AppState {
    services: Arc<Vec<Arc<Service>>>,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

impl AppState {
    /// State over these services.
    pub fn new(services: Vec<Arc<Service>>) -> Self {
        AppState {
            services: Arc::new(services),
        }
    }

    fn find(&self, name: &str) -> Result<&Arc<Service>, Box<Response>> {
        self.services
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
                Box::new(err(
                    StatusCode::NOT_FOUND,
                    format!("no service '{name}' here (services: {})", names.join(", ")),
                ))
            })
    }
}

fn command_error(e: CommandError) -> Response {
    let code = match e {
        CommandError::Rejected(_) => StatusCode::CONFLICT,
        CommandError::Database(_) => StatusCode::BAD_GATEWAY,
        CommandError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
    };
    err(code, e.to_string())
}

/// The admin API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/services", get(services))
        .route("/services/{s}/status", get(status))
        .route("/services/{s}/online", post(online))
        .route("/services/{s}/setrole", post(setrole))
        .route("/services/{s}/reset", post(reset))
        .route("/services/{s}/purge", post(purge))
        .route("/services/{s}/offline", post(offline))
        .route("/services/{s}/heartbeat", post(heartbeat))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::require_secret,
        ))
        .with_state(state)
}

async fn version() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "product": "carbide-replicator" }),
    )
}

async fn services(State(st): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = st
        .services
        .iter()
        .map(|s| {
            let x = s.status();
            serde_json::json!({
                "serviceName": x.service_name,
                "role": x.role,
                "state": x.state,
                "appliedLastSeqno": x.applied_last_seqno,
                "appliedLatency": x.applied_latency,
            })
        })
        .collect();
    Json(serde_json::Value::Array(list))
}

async fn status(State(st): State<AppState>, Path(s): Path<String>) -> Response {
    match st.find(&s) {
        Ok(svc) => Json(svc.status()).into_response(),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct OnlineQuery {
    #[serde(rename = "skip-seqno")]
    skip_seqno: Option<String>,
    #[serde(rename = "until-seqno")]
    until_seqno: Option<String>,
    #[serde(rename = "from-event")]
    from_event: Option<String>,
}

async fn online(
    State(st): State<AppState>,
    Path(s): Path<String>,
    Query(q): Query<OnlineQuery>,
) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    let mut skip = Vec::new();
    for part in q.skip_seqno.iter().flat_map(|v| v.split(',')) {
        match part.trim().parse::<u64>() {
            Ok(n) => skip.push(n),
            Err(_) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    format!("skip-seqno: '{part}' is not a number"),
                )
            }
        }
    }
    let until = match q.until_seqno.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return err(StatusCode::BAD_REQUEST, "until-seqno: not a number"),
    };
    let r = if skip.is_empty() && until.is_none() && q.from_event.is_none() {
        svc.online()
    } else {
        svc.online_with(skip, until, q.from_event.as_deref())
    };
    match r {
        Ok(()) => Json(svc.status()).into_response(),
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
struct SetroleQuery {
    role: String,
    uri: Option<String>,
}

async fn setrole(
    State(st): State<AppState>,
    Path(s): Path<String>,
    Query(q): Query<SetroleQuery>,
) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    let role: carbide_config::Role = match q.role.parse() {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("setrole: {e}")),
    };
    match svc.setrole(role, q.uri.as_deref()) {
        Ok(()) => Json(svc.status()).into_response(),
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
struct OfflineQuery {
    #[serde(rename = "at-seqno")]
    at_seqno: Option<String>,
}

async fn offline(
    State(st): State<AppState>,
    Path(s): Path<String>,
    Query(q): Query<OfflineQuery>,
) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    let at = match q.at_seqno.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "at-seqno must be a seqno, not '{}'",
                    q.at_seqno.unwrap_or_default()
                ),
            )
        }
    };
    match svc.offline(at) {
        Ok(()) => Json(svc.status()).into_response(),
        Err(e) => command_error(e),
    }
}

async fn reset(
    State(st): State<AppState>,
    Path(s): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    let on = |k: &str| q.get(k).is_some_and(|v| v == "1" || v == "true");
    let (thl, db) = (on("thl"), on("db"));
    if !thl && !db {
        return err(
            StatusCode::BAD_REQUEST,
            "reset: say what: thl=1 and/or db=1",
        );
    }
    match svc.reset(thl, db).await {
        Ok(done) => Json(serde_json::json!({ "done": done })).into_response(),
        Err(e) => command_error(e),
    }
}

async fn purge(State(st): State<AppState>, Path(s): Path<String>) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    match svc.purge().await {
        Ok(n) => Json(serde_json::json!({ "killed": n })).into_response(),
        Err(e) => command_error(e),
    }
}

async fn heartbeat(
    State(st): State<AppState>,
    Path(s): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let svc = match st.find(&s) {
        Ok(svc) => svc,
        Err(r) => return *r,
    };
    let name = q
        .get("name")
        .cloned()
        .unwrap_or_else(|| "MASTER_ONLINE".into());
    match svc.heartbeat(&name).await {
        Ok((seqno, latency)) => Json(serde_json::json!({
            "name": name, "seqno": seqno, "latency": latency
        }))
        .into_response(),
        Err(e) => command_error(e),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    match render_metrics(&st.services) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Prometheus text for these services.
pub fn render_metrics(services: &[Arc<Service>]) -> Result<String, prometheus::Error> {
    use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
    let reg = Registry::new();
    let g = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
        let v = GaugeVec::new(Opts::new(name, help), &["service"])?;
        reg.register(Box::new(v.clone()))?;
        Ok(v)
    };
    let c = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
        let v = IntCounterVec::new(Opts::new(name, help), &["service"])?;
        reg.register(Box::new(v.clone()))?;
        Ok(v)
    };
    let state = GaugeVec::new(
        Opts::new(
            "carbide_replicator_state",
            "1 for the service's current state",
        ),
        &["service", "state"],
    )?;
    reg.register(Box::new(state.clone()))?;
    let stored = g(
        "carbide_replicator_stored_seqno",
        "last seqno stored in the THL",
    )?;
    let applied = g(
        "carbide_replicator_applied_seqno",
        "last seqno applied (extracted, on a master)",
    )?;
    let latency = g(
        "carbide_replicator_applied_latency_seconds",
        "source commit to THL, last transaction",
    )?;
    let relative = g(
        "carbide_replicator_relative_latency_seconds",
        "now minus the last transaction's source commit",
    )?;
    let events = c(
        "carbide_replicator_events_total",
        "binlog events read (rate() gives events/s)",
    )?;
    let txs = c(
        "carbide_replicator_transactions_total",
        "transactions stored",
    )?;
    let bytes = c("carbide_replicator_bytes_total", "binlog bytes read")?;
    for s in services {
        let st = s.status();
        let n = st.service_name.as_str();
        for name in [
            "ONLINE",
            "OFFLINE:NORMAL",
            "OFFLINE:ERROR",
            "GOING-ONLINE:SYNCHRONIZING",
        ] {
            state
                .with_label_values(&[n, name])
                .set(if st.state == name { 1.0 } else { 0.0 });
        }
        stored
            .with_label_values(&[n])
            .set(st.maximum_stored_seq_no as f64);
        applied
            .with_label_values(&[n])
            .set(st.applied_last_seqno as f64);
        latency.with_label_values(&[n]).set(st.applied_latency);
        relative.with_label_values(&[n]).set(st.relative_latency);
        events.with_label_values(&[n]).inc_by(st.events_extracted);
        txs.with_label_values(&[n])
            .inc_by(st.transactions_extracted);
        bytes.with_label_values(&[n]).inc_by(st.bytes_extracted);
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
