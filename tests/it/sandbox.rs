//! Least privilege: sandbox identities, rate limits, byte budgets.

use sha2::Digest;

use crate::support::api_origin;
use crate::support::ca::TestCa;
use crate::support::client::{self, connect};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::{ProxyBuilder, TestProxy};

fn sha(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client_as(proxy: &TestProxy, id: &str, token: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(proxy.url())
                .unwrap()
                .basic_auth(id, token),
        )
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

const B_SECRET: &str = "sandbox-b-only-credential-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_gets_only_its_own_hosts_and_secrets() {
    let ca = TestCa::new("origin ca");
    let a_host = Origin::https(&ca, "a.example.test", "127.0.0.2", echo("a")).await;
    let b_host = Origin::https(&ca, "b.example.test", "127.0.0.3", echo("b")).await;
    let shared = Origin::https(&ca, "shared.example.test", "127.0.0.4", echo("shared")).await;
    let proxy = ProxyBuilder::new()
        .resolve("a.example.test", "127.0.0.2")
        .resolve("b.example.test", "127.0.0.3")
        .resolve("shared.example.test", "127.0.0.4")
        .allow_loopback()
        .trust(&ca)
        .secrets(&["backend = \"file\"", "file = \"secrets.toml\""])
        .file("secrets.toml", &format!("[\"tools/b\"]\ntoken = \"{B_SECRET}\"\n"))
        .file("a.toml", &format!("[[host]]\nmatch = \"a.example.test\"\nports = [{}]\n", a_host.port()))
        .file(
            "b.toml",
            &format!(
                "[[host]]\nmatch = \"b.example.test\"\nports = [{}]\ninject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/b#token\" }}\n",
                b_host.port()
            ),
        )
        .rule(&format!("match = \"shared.example.test\"\nports = [{}]", shared.port()))
        .raw(&format!(
            "[[sandbox]]\nid = \"agent-a\"\ntoken_sha256 = \"{}\"\ninclude = [\"a.toml\"]\n\n[[sandbox]]\nid = \"agent-b\"\ntoken_sha256 = \"{}\"\ninclude = [\"b.toml\"]\n",
            sha("token-a"),
            sha("token-b")
        ))
        .start()
        .await;

    // No credentials, or wrong ones: 407 and nothing else.
    let (_s, r) = connect(proxy.addr, &format!("a.example.test:{}", a_host.port())).await;
    assert_eq!(r.status, 407);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"airlock\""),
        "{}",
        r.head
    );
    let wrong = client_as(&proxy, "agent-a", "token-b");
    assert!(
        wrong
            .get(format!("https://a.example.test:{}/", a_host.port()))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        plain
            .get("http://a.example.test/")
            .send()
            .await
            .unwrap()
            .status(),
        407
    );

    let a = client_as(&proxy, "agent-a", "token-a");
    let b = client_as(&proxy, "agent-b", "token-b");
    assert_eq!(
        a.get(format!("https://a.example.test:{}/", a_host.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        a.get(format!("https://shared.example.test:{}/", shared.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A cannot reach B's host, so can never have B's credential injected:
    // its tunnel there is a refused one, the 403 read inside it.
    let r = a
        .get(format!("https://b.example.test:{}/", b_host.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not on the allowlist"));
    // B reaches its host with its credential.
    assert_eq!(
        b.get(format!("https://b.example.test:{}/", b_host.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let got = b_host.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {B_SECRET}").as_str()
    );
    assert!(
        a_host
            .received()
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    assert!(
        a_host
            .received()
            .iter()
            .all(|r| !r.headers.contains_key("proxy-authorization")),
        "proxy credentials never reach an origin"
    );

    let ev = proxy
        .audit_event("sandbox in audit", |e| {
            e["kind"] == "request" && e["sandbox"] == "agent-b"
        })
        .await;
    assert_eq!(ev["host"], "b.example.test");
    let denied = proxy
        .audit_event("407 audited", |e| e["reason"] == "proxy_auth_required")
        .await;
    assert_eq!(denied["status"], 407);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_and_recovers() {
    let (_ca, origin, proxy) = api_origin(echo("api"), "rate = \"2/second\"", |b| b).await;
    let c = client::reqwest(&proxy);
    let url = format!("https://api.example.test:{}/", origin.port());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(origin.received().len(), 2, "the limited request never left");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        200,
        "recovers after the window"
    );
    let ev = proxy
        .audit_event("rate limited", |e| e["reason"] == "rate_limited")
        .await;
    assert_eq!(ev["status"], 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_budget_caps_outgoing_bodies() {
    let (_ca, origin, proxy) = api_origin(echo("api"), "budget = \"100B/hour\"", |b| b).await;
    let c = client::reqwest(&proxy);
    let url = format!("https://api.example.test:{}/up", origin.port());
    assert_eq!(
        c.post(&url)
            .body(vec![b'x'; 60])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    crate::support::eventually("bytes counted", || {
        proxy
            .audit()
            .iter()
            .any(|e| e["bytes_up"] == 60)
            .then_some(())
    })
    .await;
    let r = c.post(&url).body(vec![b'x'; 60]).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        c.post(&url)
            .body(vec![b'x'; 40])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(origin.received().len(), 2);
}
