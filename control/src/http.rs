//! The manager's HTTP client (reqwest) and the secret check for its server.
//!
//! Every request between managers, and from `cctrl` to a manager, carries
//! the dataservice secret as `Authorization: Bearer <secret>`; the server
//! side ([`require_secret`]) refuses any mutating or raft request without
//! it, with 401 and a one-line reason. JSON bodies go out with
//! [`Client::post`] / [`Client::get`]; a peer that cannot be reached, times
//! out, or answers with an error status comes back as a [`HttpError`] that
//! says which.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// Nothing answered (refused, no route, DNS).
    #[error("{addr} unreachable: {msg}")]
    Unreachable {
        /// The peer.
        addr: String,
        /// The transport's error.
        msg: String,
    },
    /// It did not answer in time.
    #[error("{addr} did not answer within {ms} ms")]
    Timeout {
        /// The peer.
        addr: String,
        /// The limit.
        ms: u64,
    },
    /// It answered with an error status.
    #[error("{addr}: HTTP {status}: {body}")]
    Status {
        /// The peer.
        addr: String,
        /// The status code.
        status: u16,
        /// Its message.
        body: String,
    },
    /// Its answer could not be read.
    #[error("{addr}: bad answer: {msg}")]
    Decode {
        /// The peer.
        addr: String,
        /// What was wrong.
        msg: String,
    },
}

/// A JSON-over-HTTP client that sends the dataservice secret.
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    secret: Arc<str>,
}

impl Client {
    /// A client sending `secret` with every request.
    pub fn new(secret: &str) -> Self {
        Client {
            inner: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            secret: secret.into(),
        }
    }

    /// POSTs `body` as JSON to `http://{addr}{path}` and decodes the answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, HttpError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Decode {
            addr: addr.to_string(),
            msg: e.to_string(),
        })?;
        let req = self
            .inner
            .post(format!("http://{addr}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(bytes);
        self.send(addr, req, timeout).await
    }

    /// GETs `http://{addr}{path}` and decodes the JSON answer.
    pub async fn get<R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<R, HttpError> {
        let req = self.inner.get(format!("http://{addr}{path}"));
        self.send(addr, req, timeout).await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<R, HttpError> {
        let a = || addr.to_string();
        let resp = req
            .bearer_auth(&*self.secret)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    HttpError::Timeout {
                        addr: a(),
                        ms: timeout.as_millis() as u64,
                    }
                } else {
                    HttpError::Unreachable {
                        addr: a(),
                        msg: root_cause(&e),
                    }
                }
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| HttpError::Decode {
            addr: a(),
            msg: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(HttpError::Status {
                addr: a(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| HttpError::Decode {
            addr: a(),
            msg: e.to_string(),
        })
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The secret a server checks requests against.
#[derive(Clone)]
pub struct Secret(pub Arc<str>);

/// Constant-time comparison, so the time to refuse does not tell how much
/// of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// axum middleware: a request that is not a plain read of `/metrics`,
/// `/status` or `/health` needs `Authorization: Bearer <secret>`. Reads of
/// the cluster (`/manager/...` GETs) need it too: they reveal the topology.
pub async fn require_secret(State(secret): State<Secret>, req: Request, next: Next) -> Response {
    let open = req.method() == Method::GET
        && matches!(req.uri().path(), "/metrics" | "/status" | "/health");
    if open {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), secret.0.as_bytes()) => next.run(req).await,
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            "wrong dataservice secret (security.token-file of this dataservice)\n",
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            "this route needs the dataservice secret: Authorization: Bearer <secret> (security.token-file)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn secret_comparison() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdef", b"abcdeg"));
        assert!(!same(b"abc", b"abcdef"));
    }
}
