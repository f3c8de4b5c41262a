//! Who may change a replicator: the admin API's check of the dataservice
//! secret.
//!
//! Every request passes [`require_secret`] (axum middleware) before the
//! router. `GET` and `HEAD` pass untouched: `/version`, `/services`,
//! `/services/{s}/status` and `/metrics` only read, and staying open lets
//! Prometheus and monitors scrape without the secret (a documented
//! choice; they reveal positions and states, nothing that changes them).
//! Anything else needs `Authorization: Bearer <secret>` of the service it
//! names (`/services/{s}/…`), compared in constant time; a route that names
//! no known service needs the secret of any service of this daemon. A
//! missing or wrong header gets `401 {"error": …}` with a one-line reason
//! naming `security.token-file`; the decision is [`decide`], pure.
//!
//! Cross-site requests: a browser sends an `Authorization` header only
//! from a script, and a cross-origin script must pass a CORS preflight for
//! it, which this API never grants (it sends no CORS headers). A form or
//! `fetch` from another site therefore arrives without the header and is
//! refused like any other request without the secret.

use super::AppState;
use crate::auth::{Secret, MISSING, WRONG};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Pass,
    /// 401 with this reason.
    Refuse(&'static str),
    /// 400 with this reason.
    Bad(String),
}

/// Decides a request from its method, path and `Authorization` header,
/// given the secret of each service (`None`: that service runs without
/// one, `--insecure-no-secret`).
pub fn decide(
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    services: &[(&str, Option<&Secret>)],
) -> Verdict {
    if method == Method::GET || method == Method::HEAD {
        return Verdict::Pass;
    }
    let named = path
        .strip_prefix("/services/")
        .and_then(|rest| rest.split('/').next());
    if let Some(n) = named {
        if n.contains('%') {
            // names are letters, digits and '_': an escaped one could name
            // a service other than the one whose secret is checked here
            return Verdict::Bad(format!(
                "service name '{n}' must not be percent-encoded (service names are letters, digits and '_')"
            ));
        }
    }
    let wanted: Vec<&Secret> = match named.and_then(|n| services.iter().find(|(s, _)| *s == n)) {
        Some((_, secret)) => secret.iter().copied().collect(),
        None => services.iter().filter_map(|(_, s)| *s).collect(),
    };
    if wanted.is_empty() {
        return Verdict::Pass;
    }
    let given = authorization.and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Verdict::Refuse(MISSING),
        Some(g) if wanted.iter().any(|s| s.matches(g.trim())) => Verdict::Pass,
        Some(_) => Verdict::Refuse(WRONG),
    }
}

/// axum middleware applying [`decide`].
pub async fn require_secret(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let services: Vec<(&str, Option<&Secret>)> =
        st.services.iter().map(|s| (s.name(), s.secret())).collect();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match decide(req.method(), req.uri().path(), auth, &services) {
        Verdict::Pass => next.run(req).await,
        Verdict::Refuse(why) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), reason = why, "admin request refused");
            super::err(StatusCode::UNAUTHORIZED, why)
        }
        Verdict::Bad(why) => super::err(StatusCode::BAD_REQUEST, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_writes_need_the_named_services_secret() {
        let a = Secret::new("alpha-secret-0123456789");
        let b = Secret::new("beta-secret-0123456789");
        let svcs = [("alpha", Some(&a)), ("beta", Some(&b))];
        let post = Method::POST;
        for path in [
            "/metrics",
            "/version",
            "/services",
            "/services/alpha/status",
        ] {
            assert_eq!(decide(&Method::GET, path, None, &svcs), Verdict::Pass);
        }
        let p = "/services/alpha/purge";
        assert_eq!(decide(&post, p, None, &svcs), Verdict::Refuse(MISSING));
        assert_eq!(
            decide(&post, p, Some("Bearer nope"), &svcs),
            Verdict::Refuse(WRONG)
        );
        assert_eq!(
            decide(&post, p, Some("Basic alpha-secret-0123456789"), &svcs),
            Verdict::Refuse(MISSING)
        );
        assert_eq!(
            decide(&post, p, Some("Bearer alpha-secret-0123456789"), &svcs),
            Verdict::Pass
        );
        // beta's secret does not open alpha
        assert_eq!(
            decide(&post, p, Some("Bearer beta-secret-0123456789"), &svcs),
            Verdict::Refuse(WRONG)
        );
        // nor through an escaped name
        assert!(matches!(
            decide(
                &post,
                "/services/%61lpha/purge",
                Some("Bearer beta-secret-0123456789"),
                &svcs
            ),
            Verdict::Bad(_)
        ));
        // unknown service: any secret of the daemon, then the router's 404
        assert_eq!(
            decide(&post, "/services/x/purge", None, &svcs),
            Verdict::Refuse(MISSING)
        );
        assert_eq!(
            decide(
                &post,
                "/services/x/purge",
                Some("Bearer beta-secret-0123456789"),
                &svcs
            ),
            Verdict::Pass
        );
        // DELETE, PUT, … are writes too
        assert_eq!(
            decide(&Method::DELETE, p, None, &svcs),
            Verdict::Refuse(MISSING)
        );
        // a service run with --insecure-no-secret is open
        assert_eq!(decide(&post, p, None, &[("alpha", None)]), Verdict::Pass);
    }
}
