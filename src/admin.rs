//! The admin listener (loopback by default): `/healthz`, `/readyz`,
//! `/metrics` in Prometheus text format, and the approval API. With
//! `[proxy] admin_token_file`, everything but `/healthz` requires
//! `Authorization: Bearer <token>`.
//!
//! # Approvals
//! - `GET /approvals`: the held requests, oldest first, as a JSON array of
//!   [`PendingRequest`](crate::approval::PendingRequest).
//! - `GET /approvals/{id}`: one of them (404 when not held).
//! - `POST /approvals/{id}` with `Content-Type: application/json` and
//!   `{"decision": "approve" | "deny", "reason": "...", "scope": "once" | {"minutes": N}}`
//!   (`reason` and `scope` optional; `scope` only with approve; body at most
//!   16 KiB): 200 `{"id", "decision"}`, 404 when not held, 400 for a bad
//!   body, 413 too big, 415 not JSON.
//!
//! # Security
//! The admin address is one of airlock's own addresses, which the address
//! guard refuses as a destination: a sandbox cannot reach it through the
//! proxy, whatever the rules say. Approval routes refuse requests a browser
//! marks as such (`Origin`, `Sec-Fetch-*`), so a web page cannot approve a
//! request by cross-site POST or DNS rebinding; the CLI and curl send
//! neither. The request id (128 random bits) is the capability to decide it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::approval::{Approvals, MAX_SCOPE_MINUTES, Scope};
use crate::config::AdminToken;
use crate::error::{full, text_response};
use crate::listener::State;
use crate::upstream::ProxyBody;

/// The largest approval decision body read.
const DECISION_BODY_LIMIT: usize = 16 * 1024;
/// The longest reason accepted with a decision, in characters.
const REASON_CHARS: usize = 1024;
/// Time allowed for a decision body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Who decided, for approvals through this API.
pub const BY_ADMIN: &str = "admin API";

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    token: Option<AdminToken>,
    shutdown: watch::Receiver<bool>,
) {
    let approvals = approvals_of(&state);
    serve_with(listener, state, approvals, token, shutdown).await;
}

/// The process's approvals.
// XXX(approval wiring): until `State` carries the `Approvals` the request
// path holds requests in, this is an empty set of its own (nothing is ever
// held in it). With `State::approvals()`, this becomes
// `Arc::clone(state.approvals())`.
fn approvals_of(state: &State) -> Arc<Approvals> {
    Arc::new(Approvals::new(state.audit.clone()))
}

/// [`serve`], with the approvals to list and decide given explicitly.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<State>,
    approvals: Arc<Approvals>,
    token: Option<AdminToken>,
    mut shutdown: watch::Receiver<bool>,
) {
    let token = Arc::new(token);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        let approvals = Arc::clone(&approvals);
        let token = Arc::clone(&token);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                let approvals = Arc::clone(&approvals);
                let token = Arc::clone(&token);
                async move {
                    Ok::<_, Infallible>(
                        route(&state, &approvals, token.as_ref().as_ref(), req).await,
                    )
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(
    state: &State,
    approvals: &Approvals,
    token: Option<&AdminToken>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    let approval_route = path == "/approvals" || path.starts_with("/approvals/");
    if req.method() != Method::GET && !approval_route {
        return text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin_method",
            "GET only\n".into(),
        );
    }
    if path == "/healthz" {
        return ok("ok\n".into(), "text/plain; charset=utf-8");
    }
    if let Some(token) = token {
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|p| token.matches(p)) {
            return text_response(
                StatusCode::UNAUTHORIZED,
                "admin_unauthorized",
                "admin API: bearer token required\n".into(),
            );
        }
    }
    if approval_route {
        return approvals_route(approvals, req).await;
    }
    match path {
        "/readyz" => {
            let generation = state.generation();
            ok(
                format!(
                    "ready\nrules {}\nconfig {}\n",
                    generation.config.version, generation.config.source
                ),
                "text/plain; charset=utf-8",
            )
        }
        "/metrics" => {
            let mut text = state.audit.metrics().render();
            let (lookups, minted) = (state.issuer.lookups(), state.issuer.minted());
            text.push_str(&format!(
                "# HELP airlock_cert_cache_hits_total Leaf certificate cache hits.\n\
                 # TYPE airlock_cert_cache_hits_total counter\n\
                 airlock_cert_cache_hits_total {}\n\
                 # HELP airlock_cert_cache_misses_total Leaf certificates minted.\n\
                 # TYPE airlock_cert_cache_misses_total counter\n\
                 airlock_cert_cache_misses_total {minted}\n",
                lookups.saturating_sub(minted)
            ));
            ok(text, "text/plain; version=0.0.4; charset=utf-8")
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "admin_not_found",
            "try /healthz, /readyz, /metrics or /approvals\n".into(),
        ),
    }
}

/// `/approvals` and `/approvals/{id}`, after the token check.
async fn approvals_route(approvals: &Approvals, req: Request<Incoming>) -> Response<ProxyBody> {
    if from_browser(req.headers()) {
        return text_response(
            StatusCode::FORBIDDEN,
            "admin_browser_refused",
            "admin API: approvals are not decided from a browser; use `airlock approvals` or curl\n"
                .into(),
        );
    }
    let path = req.uri().path();
    let id = path
        .strip_prefix("/approvals")
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or_default()
        .to_owned();
    match (req.method(), id.is_empty()) {
        (&Method::GET, true) => json(StatusCode::OK, &approvals.list()),
        (&Method::GET, false) => match approvals.get(&id) {
            Some(p) => json(StatusCode::OK, &p),
            None => not_held(),
        },
        (&Method::POST, false) => decide(approvals, &id, req).await,
        _ => text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin_method",
            "GET /approvals, GET or POST /approvals/{id}\n".into(),
        ),
    }
}

/// `POST /approvals/{id}`.
async fn decide(approvals: &Approvals, id: &str, req: Request<Incoming>) -> Response<ProxyBody> {
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return text_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin_bad_request",
            "send the decision as Content-Type: application/json\n".into(),
        );
    }
    let body = match read_capped(req.into_body()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (approve, reason, scope) = match parse_decision(&body) {
        Ok(d) => d,
        Err(why) => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "admin_bad_request",
                format!(
                    "bad decision: {why}\n\
                         want {{\"decision\": \"approve\" | \"deny\", \"reason\": \"...\", \"scope\": \"once\" | {{\"minutes\": N}}}}\n"
                ),
            );
        }
    };
    match approvals.resolve(id, approve, BY_ADMIN, reason, scope) {
        Ok(()) => {
            tracing::info!(
                id,
                approve,
                ?scope,
                "approval decided through the admin API"
            );
            json(
                StatusCode::OK,
                &Decided {
                    id,
                    decision: if approve { "approve" } else { "deny" },
                },
            )
        }
        Err(_) => not_held(),
    }
}

/// The decision body, or a response saying why not.
async fn read_capped(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    let too_big = || {
        text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "admin_too_large",
            format!("a decision is at most {DECISION_BODY_LIMIT} bytes\n"),
        )
    };
    if http_body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n > DECISION_BODY_LIMIT as u64)
        || http_body::Body::size_hint(&body).lower() > DECISION_BODY_LIMIT as u64
    {
        return Err(too_big());
    }
    match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(body, DECISION_BODY_LIMIT).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Ok(Err(_)) | Err(_) => Err(text_response(
            StatusCode::BAD_REQUEST,
            "admin_bad_request",
            "the decision body did not arrive\n".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: DecisionWord,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    scope: Option<ScopeBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DecisionWord {
    Approve,
    Deny,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeBody {
    Word(OnceWord),
    Route { minutes: u32 },
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnceWord {
    Once,
}

#[derive(Serialize)]
struct Decided<'a> {
    id: &'a str,
    decision: &'static str,
}

/// `(approve, reason, scope)` from a decision body.
fn parse_decision(body: &[u8]) -> Result<(bool, Option<String>, Scope), String> {
    let d: DecisionBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let reason = d.reason.filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > REASON_CHARS)
    {
        return Err(format!(
            "the reason is longer than {REASON_CHARS} characters"
        ));
    }
    let scope = match d.scope {
        None | Some(ScopeBody::Word(OnceWord::Once)) => Scope::Once,
        Some(ScopeBody::Route { minutes }) if (1..=MAX_SCOPE_MINUTES).contains(&minutes) => {
            Scope::Route { minutes }
        }
        Some(ScopeBody::Route { .. }) => {
            return Err(format!("scope minutes must be 1 to {MAX_SCOPE_MINUTES}"));
        }
    };
    match d.decision {
        DecisionWord::Approve => Ok((true, reason, scope)),
        DecisionWord::Deny if scope == Scope::Once => Ok((false, reason, scope)),
        DecisionWord::Deny => Err("a scope applies to approvals only".into()),
    }
}

/// Browsers mark their requests; the CLI and curl do not.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::ORIGIN)
        || headers.contains_key("sec-fetch-site")
        || headers.contains_key("sec-fetch-mode")
}

fn not_held() -> Response<ProxyBody> {
    text_response(
        StatusCode::NOT_FOUND,
        "approval_not_found",
        "no request awaiting approval has that id (already decided, expired, or its client went away)\n"
            .into(),
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "admin_internal",
            format!("cannot serialise the answer: {e}\n"),
        ),
    }
}

fn ok(body: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
