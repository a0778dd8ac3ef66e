//! The admin listener (loopback by default): `/healthz`, `/readyz`,
//! `/metrics` in Prometheus text format, and the approval API. With
//! `[proxy] admin_token_file`, everything but `/healthz` and `/readyz`
//! requires `Authorization: Bearer <token>`; `/readyz` without the token
//! answers only its status and first line (a kubelet's probe carries no
//! token), with it also the rules version, config and secret store.
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
use crate::state::State;
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

/// The process's approvals: the same set the request path holds requests
/// in ([`State::approvals`]).
fn approvals_of(state: &State) -> Arc<Approvals> {
    Arc::clone(state.approvals())
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

/// `/readyz`: 200 when the secret store answers (the CA and the rules are
/// good in any running generation), else 503. Only an authorized caller
/// sees which rules, config and store, and why a store is down.
async fn readiness(state: &State, authorized: bool) -> Response<ProxyBody> {
    // CA loaded and rules valid are true of any running generation;
    // the secret store is the part that can be down.
    let generation = state.generation();
    let secrets = match state.secrets() {
        None => Ok("secrets none configured".to_owned()),
        Some(cache) => {
            match tokio::time::timeout(std::time::Duration::from_secs(3), cache.health()).await {
                Ok(Ok(())) => Ok(format!("secrets {} ok", cache.describe())),
                Ok(Err(e)) => Err(format!("secrets {}: {e}", cache.describe())),
                Err(_) => Err(format!(
                    "secrets {}: health check timed out",
                    cache.describe()
                )),
            }
        }
    };
    let rules = format!(
        "rules {}\nconfig {}\n",
        generation.config.version, generation.config.source
    );
    let detail = |s: String| {
        if authorized {
            format!("{rules}{s}\n")
        } else {
            String::new()
        }
    };
    match secrets {
        Ok(s) => ok(format!("ready\n{}", detail(s)), "text/plain; charset=utf-8"),
        Err(s) => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready\n{}", detail(s)),
        ),
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
    let authorized = token.is_none_or(|token| {
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|p| token.matches(p))
    });
    if path == "/readyz" {
        return readiness(state, authorized).await;
    }
    if !authorized {
        return text_response(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "admin API: bearer token required\n".into(),
        );
    }
    if approval_route {
        // Each replica holds its own requests: say which one answered.
        let replica = approvals.replica();
        let mut resp = approvals_route(approvals, req).await;
        if let Ok(v) = http::HeaderValue::from_str(&replica) {
            resp.headers_mut().insert("airlock-replica", v);
        }
        return resp;
    }
    match path {
        "/metrics" => {
            let mut text = state.audit.metrics().render();
            let (lookups, minted) = (state.issuer.lookups(), state.issuer.minted());
            text.push_str(&format!(
                "# HELP airlock_cert_cache_hits_total Leaf certificate cache hits.\n\
                 # TYPE airlock_cert_cache_hits_total counter\n\
                 airlock_cert_cache_hits_total {}\n\
                 # HELP airlock_cert_cache_misses_total Leaf certificates minted.\n\
                 # TYPE airlock_cert_cache_misses_total counter\n\
                 airlock_cert_cache_misses_total {minted}\n\
                 # HELP airlock_cert_cache_entries Leaf certificates the cache holds.\n\
                 # TYPE airlock_cert_cache_entries gauge\n\
                 airlock_cert_cache_entries {}\n\
                 # HELP airlock_tasks Tasks alive in airlock's runtime (connections, tunnels, relays, timers).\n\
                 # TYPE airlock_tasks gauge\n\
                 airlock_tasks {}\n",
                lookups.saturating_sub(minted),
                state.issuer.cached(),
                tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            ));
            if let Some(secrets) = state.secrets() {
                text.push_str(&format!(
                    "# HELP airlock_secrets_cached Secret reads the credential cache holds in memory \
                     (expired ones are dropped within a second).\n\
                     # TYPE airlock_secrets_cached gauge\n\
                     airlock_secrets_cached {}\n",
                    secrets.cached()
                ));
            }
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::approval::{PendingRequest, RequestFacts, Verdict};
    use crate::audit::{AuditEvent, AuditSink};
    use crate::config::Config;
    use crate::tls::ca::{CaFiles, CertificateAuthority};

    /// A real admin listener on 127.0.0.1:0 over a real `State`; the
    /// approvals are the test's, so it can hold requests in them.
    struct Admin {
        addr: SocketAddr,
        approvals: Arc<Approvals>,
        _shutdown: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    async fn start(token: Option<&str>) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        crate::install_crypto_provider();
        CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
        let mut text = String::from(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\
             [tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\nupstream_roots = \"webpki\"\n\
             [audit]\noutput = \"off\"\n",
        );
        if let Some(t) = token {
            std::fs::write(dir.path().join("admin-token"), format!("{t}\n")).unwrap();
            text = text.replace("[tls]", "admin_token_file = \"admin-token\"\n[tls]");
        }
        let config = Config::from_text(&text, "airlock.toml", dir.path()).unwrap();
        let token = config.proxy.admin_token.clone();
        let state = Arc::new(crate::state::build_state(config, AuditSink::off(), vec![]).unwrap());
        let approvals = Arc::new(Approvals::new(AuditSink::off()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(serve_with(
            listener,
            state,
            Arc::clone(&approvals),
            token,
            rx,
        ));
        Admin {
            addr,
            approvals,
            _shutdown: shutdown,
            _dir: dir,
        }
    }

    /// Sends `head` (request line and headers, no blank line) and `body`;
    /// returns the status and the body.
    async fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let length = if body.is_empty() && head.starts_with("GET") {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let req = format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n{length}\r\n{body}");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn post(addr: SocketAddr, id: &str, body: &str) -> (u16, String) {
        raw(
            addr,
            &format!("POST /approvals/{id} HTTP/1.1\r\nContent-Type: application/json"),
            body,
        )
        .await
    }

    fn request(path: &str) -> PendingRequest {
        PendingRequest::new(&RequestFacts {
            sandbox: Some("agent-a"),
            method: "POST",
            scheme: "https",
            host: "api.pay.test",
            port: 443,
            path,
            query: None,
            rule: "rules/pay.toml:7",
        })
    }

    fn hold(admin: &Admin, path: &str) -> tokio::task::JoinHandle<Verdict> {
        let a = Arc::clone(&admin.approvals);
        let req = request(path);
        tokio::spawn(async move {
            let ev = AuditEvent::new(
                crate::audit::Kind::Request,
                "127.0.0.1:1".parse().unwrap(),
                crate::host::Host::parse("api.pay.test").unwrap(),
                443,
                crate::audit::Outcome::Allow,
                "rule_matched",
            );
            a.decide(req, Duration::from_secs(60), &ev).await
        })
    }

    async fn listed(admin: &Admin, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..1000 {
            let (status, body) = raw(admin.addr, "GET /approvals HTTP/1.1", "").await;
            assert_eq!(status, 200, "{body}");
            let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            if list.len() == n {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never {n} held requests");
    }

    #[tokio::test]
    async fn approvals_are_listed_and_decided_over_the_admin_api() {
        let admin = start(None).await;
        assert!(listed(&admin, 0).await.is_empty());

        let refund = hold(&admin, "/v1/refunds");
        let list = listed(&admin, 1).await;
        let id = list[0]["id"].as_str().unwrap().to_owned();
        assert_eq!(list[0]["url"], "https://api.pay.test/v1/refunds");
        assert_eq!(list[0]["sandbox"], "agent-a");
        assert_eq!(list[0]["rule"], "rules/pay.toml:7");
        let (status, one) = raw(admin.addr, &format!("GET /approvals/{id} HTTP/1.1"), "").await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&one).unwrap()["id"],
            id.as_str()
        );

        // Bad bodies: 400, and the request stays held.
        for bad in [
            "",
            "{",
            r#"{"decision":"maybe"}"#,
            r#"{"decision":"approve","scope":"forever"}"#,
            r#"{"decision":"approve","scope":{"minutes":0}}"#,
            r#"{"decision":"approve","scope":{"minutes":100000}}"#,
            r#"{"decision":"deny","scope":{"minutes":5}}"#,
            r#"{"decision":"approve","extra":1}"#,
        ] {
            assert_eq!(post(admin.addr, &id, bad).await.0, 400, "{bad}");
        }
        let long = format!(r#"{{"decision":"deny","reason":"{}"}}"#, "r".repeat(2000));
        assert_eq!(post(admin.addr, &id, &long).await.0, 400);
        let huge = format!(r#"{{"decision":"deny","reason":"{}"}}"#, "r".repeat(20_000));
        assert_eq!(post(admin.addr, &id, &huge).await.0, 413);
        let (status, _) = raw(
            admin.addr,
            &format!("POST /approvals/{id} HTTP/1.1\r\nContent-Type: text/plain"),
            r#"{"decision":"approve"}"#,
        )
        .await;
        assert_eq!(status, 415);
        // A browser (cross-site POST or DNS rebinding) is refused.
        let (status, _) = raw(
            admin.addr,
            &format!("POST /approvals/{id} HTTP/1.1\r\nContent-Type: application/json\r\nOrigin: http://evil.test"),
            r#"{"decision":"approve"}"#,
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = raw(
            admin.addr,
            "GET /approvals HTTP/1.1\r\nSec-Fetch-Mode: cors",
            "",
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(listed(&admin, 1).await.len(), 1, "nothing above decided it");

        let (status, body) = post(
            admin.addr,
            &id,
            r#"{"decision":"approve","scope":{"minutes":5}}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            refund.await.unwrap(),
            Verdict::Approved {
                by: "admin API".into(),
                scope: Scope::Route { minutes: 5 }
            }
        );
        // Decided: gone.
        assert_eq!(
            post(admin.addr, &id, r#"{"decision":"approve"}"#).await.0,
            404
        );
        assert_eq!(
            raw(admin.addr, &format!("GET /approvals/{id} HTTP/1.1"), "")
                .await
                .0,
            404
        );
        assert_eq!(
            post(
                admin.addr,
                "00000000000000000000000000000000",
                r#"{"decision":"deny"}"#
            )
            .await
            .0,
            404
        );

        let payout = hold(&admin, "/v1/payouts");
        let id = listed(&admin, 1).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = post(
            admin.addr,
            &id,
            r#"{"decision":"deny","reason":"no payouts today"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            payout.await.unwrap(),
            Verdict::Denied {
                by: "admin API".into(),
                reason: Some("no payouts today".into())
            }
        );
        assert_eq!(
            raw(admin.addr, "DELETE /approvals HTTP/1.1", "").await.0,
            405
        );
        assert_eq!(raw(admin.addr, "POST /metrics HTTP/1.1", "").await.0, 405);
    }

    #[tokio::test]
    async fn approvals_need_the_admin_token() {
        let admin = start(Some("t0ken-for-tests")).await;
        let held = hold(&admin, "/v1/refunds");
        while admin.approvals.list().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let id = admin.approvals.list()[0].id.clone();
        assert_eq!(raw(admin.addr, "GET /healthz HTTP/1.1", "").await.0, 200);
        assert_eq!(raw(admin.addr, "GET /approvals HTTP/1.1", "").await.0, 401);
        assert_eq!(
            post(admin.addr, &id, r#"{"decision":"approve"}"#).await.0,
            401
        );
        let (status, _) = raw(
            admin.addr,
            &format!("POST /approvals/{id} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer wrong"),
            r#"{"decision":"approve"}"#,
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(admin.approvals.list().len(), 1);
        let (status, _) = raw(
            admin.addr,
            &format!("POST /approvals/{id} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer t0ken-for-tests"),
            r#"{"decision":"approve","scope":"once"}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert!(held.await.unwrap().is_approved());
    }

    /// The CLI end to end against the admin API: list, approve, deny.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cli_lists_approves_and_denies() {
        let admin = start(Some("cli-t0ken")).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "cli-t0ken\n").unwrap();
        let addr = admin.addr.to_string();
        let token = token_file.display().to_string();
        let cli = move |args: &[&str]| {
            let mut argv = vec!["approvals", "--admin", &addr, "--token-file", &token];
            argv.extend_from_slice(args);
            let parsed = <CliArgs as clap::Parser>::try_parse_from(argv).unwrap();
            let mut out = Vec::new();
            let r = std::thread::scope(|s| {
                s.spawn(|| crate::approval::cli::main(&parsed.args, &mut out))
                    .join()
                    .unwrap()
            });
            (
                r.map(|_| ()).map_err(|e| format!("{e:#}")),
                String::from_utf8(out).unwrap(),
            )
        };
        let first = hold(&admin, "/v1/refunds");
        let second = hold(&admin, "/v1/payouts");
        while admin.approvals.list().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ids: Vec<(String, String)> = admin
            .approvals
            .list()
            .into_iter()
            .map(|p| (p.url, p.id))
            .collect();
        let id_of = |suffix: &str| {
            ids.iter()
                .find(|(u, _)| u.ends_with(suffix))
                .unwrap()
                .1
                .clone()
        };

        let (r, table) = cli(&["list"]);
        r.unwrap();
        assert!(table.starts_with("ID "), "{table}");
        assert!(table.contains(&id_of("/refunds")), "{table}");
        assert!(table.contains("https://api.pay.test/v1/payouts"), "{table}");
        assert!(table.contains("2 awaiting approval"), "{table}");

        let (r, out) = cli(&["approve", &id_of("/refunds"), "--minutes", "15"]);
        r.unwrap();
        assert!(out.starts_with("approved "), "{out}");
        assert_eq!(
            first.await.unwrap(),
            Verdict::Approved {
                by: "admin API".into(),
                scope: Scope::Route { minutes: 15 }
            }
        );
        let (r, _) = cli(&["deny", &id_of("/payouts"), "--reason", "not now"]);
        r.unwrap();
        assert!(
            matches!(second.await.unwrap(), Verdict::Denied { reason: Some(r), .. } if r == "not now")
        );

        let (r, _) = cli(&["deny", &id_of("/payouts")]);
        assert!(r.unwrap_err().contains("no request awaiting approval"));
        let (r, out) = cli(&["list"]);
        r.unwrap();
        assert_eq!(out, "no requests awaiting approval\n");
    }

    /// `airlock approvals ...` without the rest of the CLI.
    #[derive(clap::Parser)]
    #[command(name = "approvals")]
    struct CliArgs {
        #[command(flatten)]
        args: crate::approval::cli::ApprovalsArgs,
    }
}
