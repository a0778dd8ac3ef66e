//! Tests for the approval gate: humans, scoped grants, the decider (against
//! a real HTTP server on 127.0.0.1:0), expiry, and cleanup when the client
//! goes away.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::audit::AuditOutput;
use crate::audit::AuditSink;

const MIN: Duration = Duration::from_secs(60);

fn facts<'a>(sandbox: Option<&'a str>, method: &'a str, path: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        sandbox,
        method,
        scheme: "https",
        host: "api.pay.test",
        port: 443,
        path,
        query: Some("dry_run=0"),
        rule: "rules/pay.toml:7",
    }
}

fn refund() -> PendingRequest {
    PendingRequest::new(&facts(Some("agent-a"), "POST", "/v1/refunds"))
}

fn template() -> AuditEvent {
    let mut ev = AuditEvent::new(
        crate::audit::Kind::Request,
        "127.0.0.1:40000".parse().unwrap(),
        crate::host::Host::parse("api.pay.test").unwrap(),
        443,
        crate::audit::Outcome::Allow,
        "rule_matched",
    );
    ev.method = Some(http::Method::POST);
    ev.path = Some("/v1/refunds".into());
    ev.rule = Some(crate::policy::RuleRef {
        file: "rules/pay.toml".into(),
        line: 7,
    });
    ev
}

fn approvals() -> Arc<Approvals> {
    Arc::new(Approvals::new(AuditSink::off()))
}

/// Holds `req` on a task; returns its handle and the id once listed.
async fn hold(
    approvals: &Arc<Approvals>,
    req: PendingRequest,
    timeout: Duration,
) -> (tokio::task::JoinHandle<Verdict>, String) {
    let before: Vec<String> = approvals.list().into_iter().map(|p| p.id).collect();
    let a = Arc::clone(approvals);
    let task = tokio::spawn(async move { a.decide(req, timeout, &template()).await });
    for _ in 0..10_000 {
        if let Some(p) = approvals
            .list()
            .into_iter()
            .find(|p| !before.contains(&p.id))
        {
            return (task, p.id);
        }
        tokio::task::yield_now().await;
    }
    panic!("the request was never held");
}

fn decisions(sink: &AuditSink) -> String {
    sink.metrics().render()
}

#[tokio::test(start_paused = true)]
async fn approve_releases_the_waiter_with_its_scope() {
    let a = approvals();
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let listed = a.list();
    assert_eq!(listed.len(), 1);
    let p = &listed[0];
    assert_eq!(p.url, "https://api.pay.test/v1/refunds?dry_run=0");
    assert_eq!(p.method, "POST");
    assert_eq!(p.sandbox.as_deref(), Some("agent-a"));
    assert_eq!(p.rule, "rules/pay.toml:7");
    assert_eq!(p.expires_unix_ms - p.created_unix_ms, 300_000);
    assert_eq!(a.get(&id).map(|p| p.url), Some(p.url.clone()));

    a.resolve(&id, true, "admin API", None, Scope::Once)
        .unwrap();
    assert_eq!(
        task.await.unwrap(),
        Verdict::Approved {
            by: "admin API".into(),
            scope: Scope::Once
        }
    );
    assert!(a.list().is_empty());
    assert_eq!(
        a.resolve(&id, true, "admin API", None, Scope::Once),
        Err(ResolveError::NotFound)
    );
}

#[tokio::test(start_paused = true)]
async fn deny_says_who_and_why() {
    let a = approvals();
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    a.resolve(
        &id,
        false,
        "admin API",
        Some("not today".into()),
        Scope::Once,
    )
    .unwrap();
    let v = task.await.unwrap();
    assert_eq!(
        v,
        Verdict::Denied {
            by: "admin API".into(),
            reason: Some("not today".into())
        }
    );
    assert!(!v.is_approved());
    assert!(a.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn nobody_deciding_is_expired_at_the_timeout() {
    let a = approvals();
    let (task, _id) = hold(&a, refund(), 5 * MIN).await;
    tokio::time::sleep(4 * MIN).await;
    assert_eq!(a.list().len(), 1, "still held before the timeout");
    assert!(!task.is_finished());
    tokio::time::sleep(2 * MIN).await;
    assert_eq!(task.await.unwrap(), Verdict::Expired);
    assert!(a.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_removes_its_pending_entry() {
    let sink = AuditSink::off();
    let a = Arc::new(Approvals::new(sink.clone()));
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(a.list().is_empty());
    assert_eq!(
        a.resolve(&id, true, "admin API", None, Scope::Once),
        Err(ResolveError::NotFound)
    );
    let m = decisions(&sink);
    assert!(
        m.contains("kind=\"approval\",decision=\"deny\",reason=\"approval_withdrawn\"} 1"),
        "{m}"
    );

    // The same through a timeout wrapper (how a caller's own deadline drops it).
    let r = tokio::time::timeout(MIN, a.decide(refund(), 5 * MIN, &template())).await;
    assert!(r.is_err());
    assert!(a.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_scoped_grant_passes_the_same_route_only_and_expires() {
    let sink = AuditSink::off();
    let a = Arc::new(Approvals::new(sink.clone()));
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    a.resolve(&id, true, "admin API", None, Scope::Route { minutes: 10 })
        .unwrap();
    assert_eq!(
        task.await.unwrap(),
        Verdict::Approved {
            by: "admin API".into(),
            scope: Scope::Route { minutes: 10 }
        }
    );

    // Same sandbox, method, host and path (another query): through at once.
    let mut again = PendingRequest::new(&RequestFacts {
        query: Some("dry_run=1"),
        ..facts(Some("agent-a"), "POST", "/v1/refunds")
    });
    again = again.with_body_preview(b"{\"amount\": 1}", false);
    let v = tokio::time::timeout(
        Duration::from_millis(1),
        a.decide(again, 5 * MIN, &template()),
    )
    .await
    .expect("a granted route is not held");
    assert_eq!(
        v,
        Verdict::Approved {
            by: "scope granted by admin API".into(),
            scope: Scope::Route { minutes: 10 }
        }
    );
    assert!(a.list().is_empty());

    // Another path, method, sandbox, or port is asked about again.
    let others = [
        PendingRequest::new(&facts(Some("agent-a"), "POST", "/v1/payouts")),
        PendingRequest::new(&facts(Some("agent-a"), "DELETE", "/v1/refunds")),
        PendingRequest::new(&facts(Some("agent-b"), "POST", "/v1/refunds")),
        PendingRequest::new(&facts(None, "POST", "/v1/refunds")),
        PendingRequest::new(&RequestFacts {
            port: 8443,
            ..facts(Some("agent-a"), "POST", "/v1/refunds")
        }),
    ];
    for other in others {
        let url = other.url.clone();
        let (task, id) = hold(&a, other, 5 * MIN).await;
        a.resolve(&id, false, "admin API", None, Scope::Once)
            .unwrap();
        assert!(!task.await.unwrap().is_approved(), "{url}");
    }

    // After 10 minutes the grant is gone.
    tokio::time::sleep(10 * MIN + Duration::from_secs(1)).await;
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    a.resolve(&id, false, "admin API", None, Scope::Once)
        .unwrap();
    assert!(!task.await.unwrap().is_approved());

    let m = decisions(&sink);
    assert!(
        m.contains("kind=\"approval\",decision=\"allow\",reason=\"approval_granted\",sandbox=\"agent-a\"} 2")
            || m.contains("kind=\"approval\",decision=\"allow\",reason=\"approval_granted\"} 2"),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn scoped_grants_are_capped_at_a_day() {
    let a = approvals();
    let (task, id) = hold(&a, refund(), 5 * MIN).await;
    a.resolve(
        &id,
        true,
        "admin API",
        None,
        Scope::Route { minutes: u32::MAX },
    )
    .unwrap();
    assert_eq!(
        task.await.unwrap(),
        Verdict::Approved {
            by: "admin API".into(),
            scope: Scope::Route {
                minutes: MAX_SCOPE_MINUTES
            }
        }
    );
    tokio::time::sleep(Duration::from_secs(u64::from(MAX_SCOPE_MINUTES) * 60 + 1)).await;
    let (task, _id) = hold(&a, refund(), MIN).await;
    assert_eq!(task.await.unwrap(), Verdict::Expired);
}

#[tokio::test(start_paused = true)]
async fn too_many_held_requests_are_denied_not_queued() {
    let a = approvals();
    let mut tasks = Vec::new();
    for i in 0..MAX_PENDING {
        let path = format!("/v1/refunds/{i}");
        let req = PendingRequest::new(&facts(None, "POST", &path));
        let a = Arc::clone(&a);
        tasks.push(tokio::spawn(async move {
            a.decide(req, 5 * MIN, &template()).await
        }));
    }
    while a.list().len() < MAX_PENDING {
        tokio::task::yield_now().await;
    }
    let v = a.decide(refund(), 5 * MIN, &template()).await;
    assert!(
        matches!(&v, Verdict::Denied { by, .. } if by == BY_AIRLOCK),
        "{v:?}"
    );
    for t in tasks {
        t.abort();
    }
}

#[test]
fn credential_headers_are_masked() {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("authorization", "Bearer sk_live_abc"),
        ("proxy-authorization", "Basic YWdlbnQ6dA=="),
        ("cookie", "sid=abc"),
        ("x-api-key", "k-123"),
        ("x-goog-api-key", "AIza-1"),
        ("x-auth-token", "t-1"),
        ("x-amz-security-token", "FwoG"),
        ("x-client-secret", "s-1"),
        ("idempotency-key", "idem-1"),
        ("x-session-id", "sess-1"),
        ("content-type", "application/json"),
        ("user-agent", "agent/1.0"),
    ] {
        h.append(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let mut sensitive = HeaderValue::from_static("opaque-credential");
    sensitive.set_sensitive(true);
    h.insert("x-custom", sensitive);
    h.insert("x-long", HeaderValue::from_str(&"a".repeat(1000)).unwrap());
    let shown = mask_headers(&h);
    let get = |n: &str| {
        shown
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    for masked in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-goog-api-key",
        "x-auth-token",
        "x-amz-security-token",
        "x-client-secret",
        "idempotency-key",
        "x-session-id",
        "x-custom",
    ] {
        assert_eq!(get(masked), MASKED, "{masked}");
    }
    assert_eq!(get("content-type"), "application/json");
    assert_eq!(get("user-agent"), "agent/1.0");
    assert_eq!(get("x-long").len(), 256);
    let json = serde_json::to_string(&refund().with_headers(&h)).unwrap();
    for secret in [
        "sk_live_abc",
        "YWdlbnQ6dA",
        "sid=abc",
        "k-123",
        "opaque-credential",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn body_preview_is_capped_and_lossy() {
    let p = refund().with_body_preview(&[b'x'; 5000], false);
    assert_eq!(p.body_preview.len(), BODY_PREVIEW_LIMIT);
    assert!(p.body_truncated);
    let p = refund().with_body_preview(b"{\"amount\":5}", true);
    assert_eq!(p.body_preview, "{\"amount\":5}");
    assert!(p.body_truncated, "the caller's truncation is kept");
    let p = refund().with_body_preview(b"caf\xc3\xa9 \xff", false);
    assert_eq!(p.body_preview, "café \u{fffd}");
    assert!(!p.body_truncated);
    // A cut through a multi-byte character does not leave half of it.
    let mut text = vec![b'x'; BODY_PREVIEW_LIMIT - 1];
    text.extend_from_slice("é".as_bytes());
    let p = refund().with_body_preview(&text, false);
    assert!(!p.body_preview.ends_with('\u{fffd}'));
    assert!(p.body_truncated);
}

#[test]
fn urls_name_the_port_only_when_it_is_not_the_default() {
    let url = |scheme, host, port, query| {
        PendingRequest::new(&RequestFacts {
            sandbox: None,
            method: "GET",
            scheme,
            host,
            port,
            path: "/a%20b",
            query,
            rule: "r.toml:1",
        })
        .url
    };
    assert_eq!(url("https", "h.test", 443, None), "https://h.test/a%20b");
    assert_eq!(
        url("http", "h.test", 80, Some("q=1")),
        "http://h.test/a%20b?q=1"
    );
    assert_eq!(
        url("https", "h.test", 8443, None),
        "https://h.test:8443/a%20b"
    );
    assert_eq!(url("http", "::1", 8080, None), "http://[::1]:8080/a%20b");
    assert_eq!(url("http", "[::1]", 80, None), "http://[::1]/a%20b");
}

#[test]
fn a_bad_decider_url_is_refused_and_the_old_one_kept() {
    let a = Approvals::new(AuditSink::off());
    for bad in ["ftp://x/", "localhost:1234", ""] {
        let s = DeciderSettings {
            url: bad.into(),
            timeout: Duration::from_secs(1),
            token: None,
            tls: None,
        };
        assert!(a.set_decider(Some(s)).is_err(), "{bad}");
    }
    assert!(DeciderSettings::check_url("https://decide.example.test/v1").is_ok());
    assert!(DeciderSettings::check_url("gopher://x").is_err());
}

// === the decider, against a real server ===

/// What the test decider does with a request.
#[derive(Clone)]
enum Behaviour {
    Answer(StatusCode, &'static str),
    Stall,
}

struct Seen {
    headers: HeaderMap,
    path: String,
    body: Bytes,
}

/// A decider on 127.0.0.1:0; stops when dropped.
struct TestDecider {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDecider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDecider {
    async fn start(behaviour: Behaviour) -> Self {
        Self::serve(behaviour, None).await
    }

    /// Serves over TLS with a self-signed certificate for 127.0.0.1 (ALPN
    /// h2 and http/1.1); returns a client config trusting it that offers h2
    /// first, as the upstream config does.
    async fn start_tls(behaviour: Behaviour) -> (Self, Arc<rustls::ClientConfig>) {
        crate::install_crypto_provider();
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert = key.cert.der().clone();
        let private = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], private)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        (
            Self::serve(behaviour, Some(acceptor)).await,
            Arc::new(client),
        )
    }

    async fn serve(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen2);
                let behaviour = behaviour.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        let behaviour = behaviour.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            seen.lock().unwrap().push(Seen {
                                headers: parts.headers,
                                path: parts.uri.to_string(),
                                body,
                            });
                            let (status, text) = match behaviour {
                                Behaviour::Answer(s, t) => (s, t),
                                Behaviour::Stall => {
                                    tokio::time::sleep(Duration::from_secs(60)).await;
                                    (StatusCode::OK, r#"{"decision":"allow"}"#)
                                }
                            };
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(text.as_bytes())));
                            *resp.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let http = http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            // As a real server would: once h2 is agreed,
                            // HTTP/1.1 bytes are a protocol error.
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                return;
                            }
                            http.serve_connection(TokioIo::new(stream), svc).await
                        }
                        None => http.serve_connection(TokioIo::new(stream), svc).await,
                    };
                });
            }
        });
        Self { addr, seen, task }
    }

    fn settings(&self, timeout: Duration) -> DeciderSettings {
        DeciderSettings {
            url: format!("http://{}/v1/decide", self.addr),
            timeout,
            token: Some(crate::credentials::SecretValue::from_string(
                "decider-t0ken".into(),
            )),
            tls: None,
        }
    }
}

fn with_decider(d: &TestDecider, timeout: Duration) -> Arc<Approvals> {
    let a = approvals();
    a.set_decider(Some(d.settings(timeout))).unwrap();
    a
}

fn held_with_credentials() -> PendingRequest {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk_live_abc"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    refund()
        .with_headers(&h)
        .with_body_preview(b"{\"amount\": 5000}", false)
}

#[tokio::test]
async fn decider_allow_approves_once() {
    let d = TestDecider::start(Behaviour::Answer(
        StatusCode::OK,
        r#"{"decision":"allow","reason":"under the limit"}"#,
    ))
    .await;
    let a = with_decider(&d, Duration::from_secs(5));
    let v = tokio::time::timeout(
        Duration::from_secs(10),
        a.decide(
            held_with_credentials(),
            Duration::from_secs(30),
            &template(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::Approved {
            by: "decider".into(),
            scope: Scope::Once
        }
    );
    assert!(a.list().is_empty());

    let seen = d.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1/decide");
    assert_eq!(s.headers["authorization"], "Bearer decider-t0ken");
    assert_eq!(s.headers["content-type"], "application/json");
    let sent: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(sent["url"], "https://api.pay.test/v1/refunds?dry_run=0");
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["rule"], "rules/pay.toml:7");
    assert_eq!(sent["sandbox"], "agent-a");
    assert_eq!(sent["body_preview"], "{\"amount\": 5000}");
    assert_eq!(sent["id"].as_str().unwrap().len(), 32);
    assert!(sent["expires_unix_ms"].as_u64().unwrap() > sent["created_unix_ms"].as_u64().unwrap());
    assert!(!String::from_utf8_lossy(&s.body).contains("sk_live_abc"));
    assert_eq!(
        sent["headers"][0],
        serde_json::json!(["authorization", MASKED])
    );
}

#[tokio::test]
async fn decider_deny_denies_with_its_reason() {
    let d = TestDecider::start(Behaviour::Answer(
        StatusCode::OK,
        r#"{"decision":"deny","reason":"refunds over $100 need a human"}"#,
    ))
    .await;
    let a = with_decider(&d, Duration::from_secs(5));
    let v = a
        .decide(
            held_with_credentials(),
            Duration::from_secs(30),
            &template(),
        )
        .await;
    assert_eq!(
        v,
        Verdict::Denied {
            by: "decider".into(),
            reason: Some("refunds over $100 need a human".into())
        }
    );
    assert!(a.list().is_empty());
}

/// A decider that fails in any way never approves: the request waits for a
/// human, and without one it expires at the rule's timeout.
#[tokio::test]
async fn a_failing_decider_does_not_approve() {
    let cases = [
        ("garbage", Behaviour::Answer(StatusCode::OK, "yes, sure")),
        (
            "unknown word",
            Behaviour::Answer(StatusCode::OK, r#"{"decision":"approve"}"#),
        ),
        (
            "server error",
            Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR, r#"{"decision":"allow"}"#),
        ),
        ("timeout", Behaviour::Stall),
    ];
    for (name, behaviour) in cases {
        let d = TestDecider::start(behaviour).await;
        let a = with_decider(&d, Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        let v = a
            .decide(
                held_with_credentials(),
                Duration::from_millis(800),
                &template(),
            )
            .await;
        assert_eq!(v, Verdict::Expired, "{name}");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{name}: expired early"
        );
        assert!(a.list().is_empty(), "{name}");
        assert_eq!(d.seen.lock().unwrap().len(), 1, "{name}: asked once");
    }
}

#[tokio::test]
async fn an_unreachable_decider_does_not_approve() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = approvals();
    a.set_decider(Some(DeciderSettings {
        url: format!("http://127.0.0.1:{port}/"),
        timeout: Duration::from_millis(200),
        token: None,
        tls: None,
    }))
    .unwrap();
    let v = a
        .decide(refund(), Duration::from_millis(300), &template())
        .await;
    assert_eq!(v, Verdict::Expired);
}

#[tokio::test]
async fn a_human_can_still_decide_after_the_decider_fails() {
    let d = TestDecider::start(Behaviour::Answer(StatusCode::OK, "{}")).await;
    let a = with_decider(&d, Duration::from_millis(200));
    let (task, id) = hold(&a, refund(), Duration::from_secs(30)).await;
    while d.seen.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        a.list().len(),
        1,
        "still held after the decider's non-answer"
    );
    a.resolve(&id, true, "admin API", None, Scope::Once)
        .unwrap();
    assert_eq!(
        task.await.unwrap(),
        Verdict::Approved {
            by: "admin API".into(),
            scope: Scope::Once
        }
    );
}

#[tokio::test]
async fn a_human_beats_a_slow_decider() {
    let d = TestDecider::start(Behaviour::Stall).await;
    let a = with_decider(&d, Duration::from_secs(30));
    let (task, id) = hold(&a, refund(), Duration::from_secs(30)).await;
    a.resolve(&id, false, "admin API", None, Scope::Once)
        .unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(v, Verdict::Denied { by, .. } if by == "admin API"));
}

/// Approval events say who decided and never carry a header value, the
/// body preview or a reason text.
#[tokio::test]
async fn audit_events_name_the_decider_and_nothing_from_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = AuditSink::start(&AuditOutput::File(path.clone())).unwrap();
    let a = Arc::new(Approvals::new(sink));

    let (task, id) = hold(&a, held_with_credentials(), Duration::from_secs(30)).await;
    a.resolve(&id, true, "admin API", None, Scope::Route { minutes: 5 })
        .unwrap();
    task.await.unwrap();
    a.decide(
        held_with_credentials(),
        Duration::from_secs(30),
        &template(),
    )
    .await;
    let (task, id) = hold(
        &a,
        PendingRequest::new(&facts(Some("agent-a"), "POST", "/v1/payouts"))
            .with_body_preview(b"payout-body-text", false),
        Duration::from_secs(30),
    )
    .await;
    a.resolve(
        &id,
        false,
        "admin API",
        Some("reason-text".into()),
        Scope::Once,
    )
    .unwrap();
    task.await.unwrap();
    let other = PendingRequest::new(&facts(Some("agent-a"), "POST", "/v1/disputes"));
    a.decide(other, Duration::from_millis(10), &template())
        .await;

    let mut lines = Vec::new();
    for _ in 0..500 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        if lines.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e["decision"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
                e["by"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let s =
        |d: &str, r: &str, by: Option<&str>| (d.to_owned(), r.to_owned(), by.map(str::to_owned));
    assert_eq!(
        summary,
        vec![
            s("hold", "approval_requested", None),
            s("allow", "approval_granted", Some("admin API")),
            s(
                "allow",
                "approval_granted",
                Some("scope granted by admin API")
            ),
            s("hold", "approval_requested", None),
            s("deny", "approval_denied", Some("admin API")),
            s("hold", "approval_requested", None),
            s("deny", "approval_expired", None),
        ]
    );
    for e in &events {
        assert_eq!(e["kind"], "approval");
        assert_eq!(e["host"], "api.pay.test");
        assert_eq!(e["client"], "127.0.0.1:40000");
        assert_eq!(e["rule"], "rules/pay.toml:7");
    }
    let all = lines.join("\n");
    for leak in [
        "sk_live_abc",
        "amount",
        "payout-body-text",
        "reason-text",
        "dry_run",
    ] {
        assert!(!all.contains(leak), "{leak} in the audit log:\n{all}");
    }
}

#[tokio::test]
async fn decider_over_https_with_the_callers_roots() {
    let (d, client) = TestDecider::start_tls(Behaviour::Answer(
        StatusCode::OK,
        r#"{"decision":"deny","reason":"over https"}"#,
    ))
    .await;
    let a = approvals();
    a.set_decider(Some(DeciderSettings {
        url: format!("https://127.0.0.1:{}/decide", d.addr.port()),
        tls: Some(client),
        ..d.settings(Duration::from_secs(5))
    }))
    .unwrap();
    let v = a
        .decide(refund(), Duration::from_secs(30), &template())
        .await;
    assert_eq!(
        v,
        Verdict::Denied {
            by: "decider".into(),
            reason: Some("over https".into())
        }
    );
    assert_eq!(
        d.seen.lock().unwrap()[0].headers["authorization"],
        "Bearer decider-t0ken"
    );

    // The webpki roots do not trust a self-signed decider: no decision.
    a.set_decider(Some(DeciderSettings {
        url: format!("https://127.0.0.1:{}/decide", d.addr.port()),
        ..d.settings(Duration::from_secs(5))
    }))
    .unwrap();
    let v = a
        .decide(refund(), Duration::from_millis(500), &template())
        .await;
    assert_eq!(v, Verdict::Expired);
    assert_eq!(d.seen.lock().unwrap().len(), 1);
}
