use tokio::io::AsyncWriteExt;

use crate::support::ca::TestCa;
use crate::support::client::{self, read_response};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> client::RawResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_response(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_a_test_did() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let proxy = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    let admin = proxy.server.admin_addr().unwrap();
    let r = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/m", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from api: GET /m");
    let r = client::refused(&proxy, "denied.example.test:443").await;
    assert_eq!(r.status, 403);
    crate::support::eventually("request counted", || {
        let m = proxy.server.state().audit.metrics().render();
        m.contains("kind=\"request\",decision=\"allow\"")
            .then_some(())
    })
    .await;

    let m = get(admin, "/metrics", None).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains(
            "airlock_decisions_total{kind=\"request\",decision=\"allow\",reason=\"rule_matched\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("airlock_decisions_total{kind=\"connect\",decision=\"deny\",reason=\"host_not_allowed\"} 1"), "{text}");
    assert!(
        // One leaf for the allowed host, one for the refused tunnel.
        text.contains("airlock_cert_cache_misses_total 2\n"),
        "{text}"
    );
    assert!(text.contains("airlock_active_tunnels "), "{text}");
    let version = proxy.server.state().generation().config.version.clone();
    assert!(
        text.contains(&format!("airlock_rules_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    let bytes_down: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("airlock_bytes_down_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(bytes_down, "hello from api: GET /m".len() as u64);

    assert_eq!(get(admin, "/healthz", None).await.status, 200);
    let ready = get(admin, "/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert!(ready.text().contains(&version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "t0ken-for-tests\n").unwrap();
    let proxy = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .proxy_line(&format!("admin_token_file = \"{}\"", token_file.display()))
        .start()
        .await;
    let admin = proxy.server.admin_addr().unwrap();
    assert_eq!(get(admin, "/healthz", None).await.status, 200);
    // A kubelet's readiness probe carries no token: it gets the status and
    // nothing about the rules, the config or the secret store.
    let ready = get(admin, "/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.text(), "ready\n");
    let ready = get(admin, "/readyz", Some("t0ken-for-tests")).await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.text().contains("rules ") && ready.text().contains("config "),
        "{}",
        ready.text()
    );
    assert_eq!(get(admin, "/metrics", None).await.status, 401);
    assert_eq!(get(admin, "/approvals", None).await.status, 401);
    assert_eq!(get(admin, "/metrics", Some("wrong")).await.status, 401);
    assert_eq!(
        get(admin, "/metrics", Some("t0ken-for-tests")).await.status,
        200
    );
}

/// The admin API is one of airlock's own addresses: never a destination,
/// even when a rule names its host and loopback is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_unreachable_through_the_proxy() {
    // The admin port must be known to the rule before start: take a free
    // one. (The only place the tests do this; a collision fails loudly.)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = ProxyBuilder::new()
        .proxy_line(&format!("admin = \"127.0.0.1:{port}\""))
        .resolve("admin.example.test", "127.0.0.1")
        .allow_loopback()
        .rule(&format!("match = \"127.0.0.1\"\nports = [{port}]"))
        .rule(&format!("match = \"admin.example.test\"\nports = [{port}]"))
        .start()
        .await;
    for target in [
        format!("127.0.0.1:{port}"),
        format!("admin.example.test:{port}"),
    ] {
        let r = client::refused(&proxy, &target).await;
        assert_eq!(r.status, 403, "{target}");
        assert!(r.head.contains("self_loop"), "{}", r.head);
    }
    let plain = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "self_loop");
}
