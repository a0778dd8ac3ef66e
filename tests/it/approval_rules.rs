//! Per-rule approval settings through the proxy: two rules in one config,
//! one decided by a person with its own timeout, one by its own decider
//! (never a person), and a third falling back to `[approval]`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::origin::{Origin, echo, full};
use crate::support::proxy::ProxyBuilder;

/// A decider on loopback: `answer(url)` gives the status and body. Returns
/// its URL and the URLs it was asked about.
async fn decider(
    answer: fn(&str) -> (StatusCode, &'static str),
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/decide", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
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
                        let url = v["url"].as_str().unwrap().to_owned();
                        seen.lock().unwrap().push(url.clone());
                        let (status, text) = answer(&url);
                        let mut r = Response::new(full(text));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_has_its_own_timeout_and_decider() {
    // The [approval] decider allows everything: whatever it is asked about passes.
    let (global, global_seen) = decider(|_| (StatusCode::OK, r#"{"decision":"allow"}"#)).await;
    // The comments rule's own decider: spam is denied, broken answers 500.
    let (own, own_seen) = decider(|url| {
        if url.contains("spam") {
            (
                StatusCode::OK,
                r#"{"decision":"deny","reason":"looks like spam"}"#,
            )
        } else if url.contains("broken") {
            (StatusCode::INTERNAL_SERVER_ERROR, "oops")
        } else {
            (StatusCode::OK, r#"{"decision":"allow"}"#)
        }
    })
    .await;

    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "shop.example.test", "127.0.0.2", echo("shop")).await;
    let port = origin.port();
    let proxy = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("shop.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"shop.example.test\"\nports = [{port}]\nmethods = [\"POST\"]\npaths = [\"/payments/**\"]\n\
             approval = \"required\"\ndecider = \"person\"\napproval_timeout = \"2s\""
        ))
        .rule(&format!(
            "match = \"shop.example.test\"\nports = [{port}]\nmethods = [\"POST\"]\npaths = [\"/comments/**\"]\n\
             approval = \"required\"\ndecider = \"{own}\"\napproval_timeout = \"3s\""
        ))
        .rule(&format!(
            "match = \"shop.example.test\"\nports = [{port}]\nmethods = [\"POST\"]\npaths = [\"/other/**\"]\n\
             approval = \"required\""
        ))
        .raw(&format!(
            "[approval]\ntimeout = \"60s\"\ndecider = \"{global}\""
        ))
        .start()
        .await;
    let admin_url = format!("http://{}/approvals", proxy.server.admin_addr().unwrap());
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let pending = || async {
        let text = admin
            .get(&admin_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
    };
    let c = client::reqwest(&proxy);
    let url = |p: &str| format!("https://shop.example.test:{port}{p}");

    // The comments rule: its own decider decides, both ways.
    let r = c.post(url("/comments/1")).body("hi").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(url("/comments/spam"))
        .body("buy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "approval_denied");
    assert!(r.text().await.unwrap().contains("looks like spam"));
    // A decider that fails denies at once: no wait for a person.
    let started = Instant::now();
    let c2 = c.clone();
    let broken = url("/comments/broken");
    let waiter = tokio::spawn(async move { c2.post(broken).body("x").send().await.unwrap() });
    for _ in 0..5 {
        assert!(pending().await.is_empty(), "never listed for a person");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "approval_denied");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not held until the timeout"
    );
    assert_eq!(own_seen.lock().unwrap().len(), 3);

    // The payments rule: a person decides; the [approval] decider (which
    // would allow) is not asked, and the rule's 2 s timeout applies, not 60 s.
    let started = Instant::now();
    let c2 = c.clone();
    let pay = url("/payments/7");
    let waiter = tokio::spawn(async move { c2.post(pay).body("100").send().await.unwrap() });
    let held = crate::support::eventually_async("a held payment", || async {
        pending().await.into_iter().next()
    })
    .await;
    assert!(
        held["url"].as_str().unwrap().contains("/payments/7"),
        "{held}"
    );
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "approval_expired");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        global_seen.lock().unwrap().is_empty(),
        "the [approval] decider was not asked"
    );

    // A rule without its own settings falls back to [approval]: its decider allows.
    let r = c.post(url("/other/1")).body("z").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(global_seen.lock().unwrap().len(), 1);
    assert_eq!(own_seen.lock().unwrap().len(), 3);

    let got: Vec<String> = origin.received().iter().map(|r| r.target.clone()).collect();
    assert_eq!(got, ["/comments/1", "/other/1"]);
}

#[test]
fn per_rule_settings_are_checked_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[host]]\nmatch = \"a.test\"\ndecider = \"person\"\n\n\
                [[host]]\nmatch = \"b.test\"\napproval = \"required\"\ndecider = \"ftp://x\"\n\n\
                [[host]]\nmatch = \"c.test\"\napproval = \"required\"\napproval_timeout = \"10m\"\n";
    let err = airlock::config::Config::from_text(text, "rules.toml", dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rules.toml:3:11: host.decider: only for a rule with approval = \"required\""),
        "{err}"
    );
    assert!(
        err.contains("rules.toml:8:11: host.decider: `ftp://x`"),
        "{err}"
    );
    assert!(
        err.contains(
            "rules.toml:11:1: host.approval_timeout (600s) must be below proxy.idle_timeout (120s)"
        ),
        "{err}"
    );
}
