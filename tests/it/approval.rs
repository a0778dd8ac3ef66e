//! The approval gate on the request path: a held write reaches the origin
//! only once approved, byte for byte; denial, expiry, a decider, scopes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use hyper::service::service_fn;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::origin::{Origin, echo, full};
use crate::support::proxy::{ProxyBuilder, TestProxy};

struct Gate {
    origin: Origin,
    proxy: TestProxy,
    admin: reqwest::Client,
    admin_url: String,
}

async fn gate(extra_proxy: &[&str]) -> Gate {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "pay.example.test", "127.0.0.2", echo("pay")).await;
    let mut b = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("pay.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .rule(&format!("match = \"pay.example.test\"\nports = [{}]\naccess = \"read\"", origin.port()))
        .rule(&format!("match = \"pay.example.test\"\nports = [{}]\nmethods = [\"POST\"]\napproval = \"required\"", origin.port()));
    for l in extra_proxy {
        b = b.raw(l);
    }
    let proxy = b.start().await;
    let admin_url = format!("http://{}", proxy.server.admin_addr().unwrap());
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    Gate {
        origin,
        proxy,
        admin,
        admin_url,
    }
}

impl Gate {
    async fn pending(&self) -> Vec<serde_json::Value> {
        let text = self
            .admin
            .get(format!("{}/approvals", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    async fn wait_pending(&self) -> serde_json::Value {
        crate::support::eventually_async("a held request", || async {
            self.pending().await.into_iter().next()
        })
        .await
    }

    async fn decide(&self, id: &str, body: serde_json::Value) -> u16 {
        self.admin
            .post(format!("{}/approvals/{id}", self.admin_url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn url(&self, path: &str) -> String {
        format!("https://pay.example.test:{}{path}", self.origin.port())
    }
}

fn payload() -> Vec<u8> {
    (0..20_000u32)
        .flat_map(|i| format!("line {i} of the transfer order\n").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_reaches_the_origin_only_when_approved_and_intact() {
    let g = gate(&[]).await;
    // Reads pass straight through.
    assert_eq!(
        client::reqwest(&g.proxy)
            .get(g.url("/balance"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let c = client::reqwest(&g.proxy);
    let url = g.url("/transfers?to=acct-9");
    let body = payload();
    let sent = body.clone();
    let waiter = tokio::spawn(async move {
        c.post(url)
            .header("authorization", "Bearer sandbox-value-should-be-masked")
            .body(sent)
            .send()
            .await
            .unwrap()
    });
    let p = g.wait_pending().await;
    assert_eq!(p["method"], "POST");
    assert!(
        p["url"].as_str().unwrap().ends_with("/transfers?to=acct-9"),
        "{p}"
    );
    assert!(
        p["body_preview"]
            .as_str()
            .unwrap()
            .starts_with("line 0 of the transfer order"),
        "{p}"
    );
    assert_eq!(p["body_truncated"], true);
    assert!(
        !p.to_string().contains("sandbox-value-should-be-masked"),
        "credentials masked: {p}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        g.origin.received().len(),
        1,
        "nothing but the read reached the origin while held"
    );

    assert_eq!(
        g.decide(
            p["id"].as_str().unwrap(),
            serde_json::json!({"decision": "approve"})
        )
        .await,
        200
    );
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), 200);
    let got = g.origin.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].body.as_deref(),
        Some(&body[..]),
        "released byte for byte"
    );
    let ev = g
        .proxy
        .audit_event("approval granted", |e| {
            e["kind"] == "approval" && e["reason"] == "approval_granted"
        })
        .await;
    assert_eq!(ev["by"], "admin API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_or_unanswered_holds_are_refused() {
    let g = gate(&["[approval]\ntimeout = \"1s\""]).await;
    let c = client::reqwest(&g.proxy);
    let url = g.url("/transfers");
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { c2.post(url).body("amount=100").send().await.unwrap() });
    let p = g.wait_pending().await;
    g.decide(
        p["id"].as_str().unwrap(),
        serde_json::json!({"decision": "deny", "reason": "not today"}),
    )
    .await;
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "approval_denied");
    assert!(r.text().await.unwrap().contains("not today"));

    // Nobody answers: refused at the timeout.
    let r = c
        .post(g.url("/transfers"))
        .body("amount=200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "approval_expired");
    assert_eq!(g.origin.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_approval_passes_the_same_route_only() {
    let g = gate(&["[approval]\ntimeout = \"2s\""]).await;
    let c = client::reqwest(&g.proxy);
    let url = g.url("/transfers");
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { c2.post(url).body("1").send().await.unwrap() });
    let p = g.wait_pending().await;
    g.decide(
        p["id"].as_str().unwrap(),
        serde_json::json!({"decision": "approve", "scope": {"minutes": 5}}),
    )
    .await;
    assert_eq!(waiter.await.unwrap().status(), 200);
    // Same method and path: through without asking.
    assert_eq!(
        c.post(g.url("/transfers"))
            .body("2")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Another path still asks (and expires here).
    let r = c.post(g.url("/refunds")).body("3").send().await.unwrap();
    assert_eq!(r.headers()["airlock-error"], "approval_expired");
    assert_eq!(g.origin.received().len(), 2);
}

/// An automated decider: allows /ok, denies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_url_decides_both_ways() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decider = format!("http://{}/decide", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let allow = v["url"].as_str().unwrap().contains("/ok");
                        seen.lock().unwrap().push(v);
                        let answer = if allow {
                            r#"{"decision":"allow"}"#
                        } else {
                            r#"{"decision":"deny","reason":"policy says no"}"#
                        };
                        Ok::<_, Infallible>(Response::new(full(answer)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let decider_line = format!("[approval]\ntimeout = \"5s\"\ndecider = \"{decider}\"");
    let g = gate(&[&decider_line]).await;
    let c = client::reqwest(&g.proxy);
    assert_eq!(
        c.post(g.url("/ok"))
            .body("a")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.post(g.url("/no")).body("b").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("policy says no"));
    let got = g.origin.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/ok");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_shows_no_secret_anywhere() {
    // The hold comes before the request's own scan: what the approver (and
    // a decider URL) sees must already be redacted, in every part.
    let token: &'static str = crate::support::fresh::github_token().leak();
    let g = gate(&[]).await;
    let c = client::reqwest(&g.proxy);
    let url = g.url(&format!("/transfers?ref={token}"));
    let waiter = tokio::spawn(async move {
        c.post(url)
            .header("x-note", format!("see {token}"))
            // A name can carry one too (hex of the token).
            .header(format!("x-{}", hex_of(token)), "1")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap()
    });
    let p = g.wait_pending().await;
    let shown = p.to_string();
    assert!(
        !shown.contains(&token[..12]) && !shown.contains(&hex_of(token)[..16]),
        "a secret shown to the approver: {shown}"
    );
    assert!(shown.contains("[REDACTED:"), "{shown}");
    g.decide(
        p["id"].as_str().unwrap(),
        serde_json::json!({"decision": "deny"}),
    )
    .await;
    assert_eq!(waiter.await.unwrap().status(), 403);
    assert_eq!(g.origin.received().len(), 0);
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
