use crate::support::api_origin;
use crate::support::ca::TestCa;
use crate::support::client::{self, connect};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_host_reaches_origin_and_is_audited() {
    let (_ca, origin, proxy) = api_origin(echo("api"), "", |b| b).await;
    let url = format!("https://api.example.test:{}/v1/things?q=1", origin.port());
    let resp = client::reqwest(&proxy).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "api");
    assert_eq!(
        resp.text().await.unwrap(),
        "hello from api: GET /v1/things?q=1"
    );
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/v1/things?q=1");
    let ev = proxy
        .audit_event("request allow", |e| {
            e["kind"] == "request" && e["decision"] == "allow"
        })
        .await;
    assert_eq!(ev["host"], "api.example.test");
    assert_eq!(ev["path"], "/v1/things");
    assert_eq!(ev["status"], 200);
    assert!(
        ev["rule"].as_str().unwrap().contains("airlock.toml:"),
        "{ev}"
    );
    assert!(ev["bytes_down"].as_u64().unwrap() > 0);
    let conn = proxy
        .audit_event("connect allow", |e| e["kind"] == "connect")
        .await;
    assert_eq!(conn["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_host_gets_403_text_and_origin_sees_nothing() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "other.example.test", "127.0.0.3", echo("other")).await;
    let proxy = ProxyBuilder::new()
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback()
        .trust(&ca)
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let target = format!("other.example.test:{}", origin.port());
    // The CONNECT opens a refused tunnel: the refusal is read inside it.
    let r = client::refused(&proxy, &target).await;
    assert_eq!(r.status, 403);
    let text = r.text();
    assert!(text.contains(&target), "{text}");
    assert!(text.contains("not on the allowlist"), "{text}");
    assert!(text.contains("Retrying another way"), "{text}");
    assert!(
        text.contains("airlock.toml"),
        "names the file to edit: {text}"
    );
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("airlock-error: host_not_allowed"),
        "{}",
        r.head
    );

    // reqwest reads the same 403 inside the tunnel, and nothing arrives.
    let url = format!("https://{target}/");
    let resp = client::reqwest(&proxy).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("not on the allowlist"));
    assert!(origin.received().is_empty());
    let ev = proxy
        .audit_event("connect deny", |e| {
            e["kind"] == "connect" && e["decision"] == "deny"
        })
        .await;
    assert_eq!(ev["reason"], "host_not_allowed");
    assert_eq!(ev["status"], 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_admits_subdomains_only() {
    let ca = TestCa::new("origin ca");
    let sub = Origin::https(&ca, "a.example.test", "127.0.0.4", echo("sub")).await;
    let port = sub.port();
    let proxy = ProxyBuilder::new()
        .resolve("a.example.test", "127.0.0.4")
        .resolve("deep.a.example.test", "127.0.0.4")
        .resolve("example.test", "127.0.0.4")
        .resolve("example.test.evil.test", "127.0.0.4")
        .resolve("evilexample.test", "127.0.0.4")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!("match = \"*.example.test\"\nports = [{port}]"))
        .start()
        .await;
    let resp = client::reqwest(&proxy)
        .get(format!("https://a.example.test:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for host in ["deep.a.example.test", "A.Example.Test."] {
        let (_s, r) = connect(proxy.addr, &format!("{host}:{port}")).await;
        assert_eq!(r.status, 200, "{host} is a subdomain");
    }
    for host in ["example.test", "example.test.evil.test", "evilexample.test"] {
        let r = client::refused(&proxy, &format!("{host}:{port}")).await;
        assert_eq!(r.status, 403, "{host} must be denied");
    }
    assert_eq!(sub.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_scoped() {
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .rule("match = \"api.example.test\"")
        .rule("match = \"alt.example.test\"\nports = [8443]")
        .resolve("alt.example.test", "127.0.0.2")
        .start()
        .await;
    // No `ports`: CONNECT defaults to 443 only.
    let (_s, r) = connect(proxy.addr, "api.example.test:443").await;
    assert_eq!(r.status, 200);
    let r = client::refused(&proxy, "api.example.test:22").await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not on this port"), "{}", r.text());
    let r = client::refused(&proxy, "alt.example.test:443").await;
    assert_eq!(r.status, 403);
    let (_s, r) = connect(proxy.addr, "alt.example.test:8443").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connect_targets_are_refused() {
    let proxy = ProxyBuilder::new()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    for target in [
        "api.example.test",
        "api.example.test:0",
        "bad host:443",
        "[::1:443",
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = client::read_response(&mut s).await;
        assert_eq!(r.status, 400, "{target}");
    }
}

/// RFC 9110 authority-form is `host:port` alone. Everything else is a 400
/// before any decision: the origin, allowed by the rules and resolvable,
/// sees nothing, and no tunnel opens (a userinfo form used to be taken as
/// naming the host after the `@`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_authority_is_strict() {
    use tokio::io::AsyncWriteExt;
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "allowed.test", "127.0.0.2", echo("allowed")).await;
    let port = origin.port();
    let proxy = ProxyBuilder::new()
        .resolve("allowed.test", "127.0.0.2")
        .resolve("evil.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!("match = \"*.test\"\nports = [{port}]"))
        .start()
        .await;
    let long_label = format!("{}.allowed.test:{port}", "a".repeat(64));
    let long_name = format!("{}allowed.test:{port}", "abcdefghi.".repeat(25));
    let targets = [
        format!("evil.test@allowed.test:{port}"),
        format!("user:pass@allowed.test:{port}"),
        format!("allowed.test:{port}/path"),
        format!("allowed.test:{port}?q=1"),
        format!("allowed.test:{port}#frag"),
        format!("http://allowed.test:{port}/"),
        format!(":{port}"),
        "allowed.test".to_owned(),
        "allowed.test:".to_owned(),
        "allowed.test:99999".to_owned(),
        "allowed.test:https".to_owned(),
        long_label,
        long_name,
    ];
    for target in &targets {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = client::read_response(&mut s).await;
        assert_eq!(r.status, 400, "{target}: {}", r.head);
        // Had a tunnel opened, this request would reach the origin.
        let _sent = s
            .write_all(b"GET /through HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
            .await;
    }
    // The well-formed target is allowed, so the refusals are the parser's.
    let (_s, r) = connect(proxy.addr, &format!("allowed.test:{port}")).await;
    assert_eq!(r.status, 200);
    proxy
        .audit_event("connect allow", |e| e["kind"] == "connect")
        .await;
    assert!(origin.received().is_empty(), "{:?}", origin.received());
    let tunnels = proxy
        .audit()
        .iter()
        .filter(|e| e["kind"] == "connect")
        .count();
    assert_eq!(tunnels, 1, "only the well-formed CONNECT was decided");
}
