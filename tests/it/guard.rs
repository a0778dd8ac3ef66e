use crate::support::ca::TestCa;
use crate::support::client::{self, connect};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

/// Every encoding of a loopback or metadata address is refused when no rule names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_in_every_encoding_are_denied() {
    let proxy = ProxyBuilder::new()
        .allow_loopback()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    for target in [
        "127.0.0.1:443",
        "2130706433:443",
        "0x7f000001:443",
        "0x7f.0.0.1:443",
        "0177.0.0.1:443",
        "127.1:443",
        "[::1]:443",
        "[::ffff:127.0.0.1]:443",
        "[::ffff:7f00:1]:443",
        "169.254.169.254:443",
        "[64:ff9b::a9fe:a9fe]:443",
        "0.0.0.0:443",
        "10.0.0.1:443",
    ] {
        let r = client::refused(&proxy, target).await;
        assert_eq!(r.status, 403, "{target}: {}", r.text());
    }
}

/// A rule may name an IP; every spelling of that IP then means the same
/// host, and the address guard still applies to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rule_matches_every_spelling_but_guard_still_applies() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "127.0.0.6", "127.0.0.6", echo("ip")).await;
    let port = origin.port();
    let rule = format!("match = \"127.0.0.6\"\nports = [{port}]");

    // Default guard: loopback is refused even though a rule names it.
    let closed = ProxyBuilder::new().trust(&ca).rule(&rule).start().await;
    let r = client::refused(&closed, &format!("127.0.0.6:{port}")).await;
    assert_eq!(r.status, 403);
    assert!(r.head.contains("blocked_address"), "{}", r.head);
    assert!(r.text().contains("loopback"), "{}", r.text());

    let open = ProxyBuilder::new()
        .allow_loopback()
        .trust(&ca)
        .rule(&rule)
        .start()
        .await;
    for spelling in [
        "127.0.0.6",
        "2130706438",
        "0x7f000006",
        "0177.0.0.06",
        "127.6",
        "[::ffff:127.0.0.6]",
    ] {
        let (_s, r) = connect(open.addr, &format!("{spelling}:{port}")).await;
        assert_eq!(r.status, 200, "{spelling}");
    }
    let resp = client::reqwest(&open)
        .get(format!("https://127.0.0.6:{port}/ip"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.received().len(), 1);
}

/// `guard::loopback_blocked_by_default`: a name that resolves to loopback is
/// refused unless `allow_cidrs` opens it, and the origin sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_blocked_by_default() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    let r = client::refused(&proxy, &format!("api.example.test:{}", origin.port())).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("127.0.0.2"), "{}", r.text());
    // A client that trusts airlock's CA reads the refusal inside the tunnel.
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(origin.received().is_empty());
    let ev = proxy
        .audit_event("guard deny", |e| e["reason"] == "blocked_address")
        .await;
    assert_eq!(ev["decision"], "deny");
}

/// Cloud metadata stays closed even where loopback is opened for tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_address_refused_even_with_loopback_open() {
    let proxy = ProxyBuilder::new()
        .resolve("metadata.example.test", "169.254.169.254")
        .resolve("private.example.test", "10.1.2.3")
        .resolve("mapped.example.test", "::ffff:192.168.0.1")
        .allow_loopback()
        .rule("match = \"*.example.test\"")
        .start()
        .await;
    for host in [
        "metadata.example.test",
        "private.example.test",
        "mapped.example.test",
    ] {
        let r = client::refused(&proxy, &format!("{host}:443")).await;
        assert_eq!(r.status, 403, "{host}");
        assert!(r.head.contains("blocked_address"), "{host}: {}", r.head);
    }
}

/// Plain HTTP is guarded when airlock dials: the same 403, not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_private_address_is_refused() {
    let proxy = ProxyBuilder::new()
        .resolve("intranet.example.test", "10.0.0.8")
        .resolve("loop.example.test", "127.0.0.2")
        .rule("match = \"*.example.test\"")
        .start()
        .await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    for url in [
        "http://intranet.example.test/",
        "http://loop.example.test/",
        "http://[::ffff:10.0.0.8]/",
    ] {
        let r = c.get(url).send().await.unwrap();
        let status = r.status();
        let code = r
            .headers()
            .get("airlock-error")
            .map(|v| v.to_str().unwrap().to_owned());
        if url.contains("::ffff") {
            // No rule names that IP: refused by policy before any dial.
            assert_eq!(
                (status.as_u16(), code.as_deref()),
                (403, Some("host_not_allowed")),
                "{url}"
            );
        } else {
            assert_eq!(
                (status.as_u16(), code.as_deref()),
                (403, Some("blocked_address")),
                "{url}"
            );
        }
    }
}
