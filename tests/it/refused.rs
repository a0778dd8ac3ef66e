//! Refused tunnels: a denied CONNECT is answered `200`, the client's TLS is
//! completed with a leaf for the name, and every request inside gets the
//! `403` with the explanation and `Proxy-Status`; the host is never
//! contacted.

use tokio::io::AsyncWriteExt;

use crate::support::ca::TestCa;
use crate::support::client::{self, curl, read_response};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::{ProxyBuilder, TestProxy};

/// Python's urllib over HTTPS_PROXY, trusting airlock's CA: prints the
/// status, the Proxy-Status header and the body of what it got.
async fn urllib(proxy: &TestProxy, url: &str) -> String {
    let script = r#"
import ssl, sys, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    r = urllib.request.urlopen(sys.argv[1], context=ctx, timeout=20)
    print(r.status); print(r.headers.get("Proxy-Status")); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.headers.get("Proxy-Status")); print(e.read().decode())
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, url])
        .arg(&proxy.ca_pem_path)
        .env("HTTPS_PROXY", proxy.url())
        .env("https_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_urllib_read_the_refusal_over_https_and_the_origin_sees_nothing() {
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
    let url = format!("https://{target}/v1/x");
    let ca_path = proxy.ca_pem_path.to_str().unwrap().to_owned();
    let (code, body, err) =
        curl(&["-v", "--proxy", &proxy.url(), "--cacert", &ca_path, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("< HTTP/2 403") || err.contains("< HTTP/1.1 403"),
        "{err}"
    );
    assert!(
        err.contains("proxy-status: airlock; error=http_request_denied; details=\"host_not_allowed: airlock denied other.example.test:"),
        "{err}"
    );
    for said in [
        target.as_str(),
        "not on the allowlist",
        "Retrying another way",
        "airlock.toml",
    ] {
        assert!(body.contains(said), "curl body lacks {said:?}: {body}");
    }

    let got = urllib(&proxy, &url).await;
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("403"), "{got}");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("airlock; error=http_request_denied; details="),
        "{got}"
    );
    assert!(got.contains("not on the allowlist"), "{got}");
    assert!(got.contains("airlock.toml"), "{got}");

    assert_eq!(origin.received().len(), 0, "the origin must see nothing");
    // Audit: each CONNECT refusal once, and each request inside.
    proxy
        .audit_event("two refused requests", |e| {
            e["kind"] == "request" && e["path"] == "/v1/x"
        })
        .await;
    crate::support::eventually("both requests audited", || {
        let audit = proxy.audit();
        let connects: Vec<_> = audit.iter().filter(|e| e["kind"] == "connect").collect();
        let requests: Vec<_> = audit.iter().filter(|e| e["kind"] == "request").collect();
        (connects.len() == 2 && requests.len() == 2).then_some(())
    })
    .await;
    for e in proxy.audit() {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["reason"], "host_not_allowed", "{e}");
        assert_eq!(e["status"], 403, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_refusal_is_explained_inside_the_tunnel() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "local.example.test", "127.0.0.3", echo("local")).await;
    // A rule allows the name, but it resolves to loopback and no
    // allow_cidrs opens it.
    let proxy = ProxyBuilder::new()
        .resolve("local.example.test", "127.0.0.3")
        .trust(&ca)
        .rule(&format!(
            "match = \"local.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    let url = format!("https://local.example.test:{}/", origin.port());
    let ca_path = proxy.ca_pem_path.to_str().unwrap().to_owned();
    let (code, body, err) =
        curl(&["-v", "--proxy", &proxy.url(), "--cacert", &ca_path, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "proxy-status: airlock; error=destination_ip_prohibited; details=\"blocked_address: "
        ),
        "{err}"
    );
    assert!(body.contains("127.0.0.3, a loopback address"), "{body}");
    assert!(body.contains("will be denied too"), "{body}");
    assert_eq!(origin.received().len(), 0);
    let ev = proxy
        .audit_event("refused request", |e| e["kind"] == "request")
        .await;
    assert_eq!(ev["reason"], "blocked_address");
}

/// A client that does not trust airlock's CA aborts on the leaf; its next
/// CONNECT to the same target gets the plain 403, whose Proxy-Status
/// `curl -v` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_aborts_on_the_leaf_gets_the_plain_403_next() {
    let proxy = ProxyBuilder::new()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let url = "https://denied.example.test/";
    let (code, _, err) = curl(&["-v", "--proxy", &proxy.url(), url]).await;
    assert_eq!(code, 60, "certificate not trusted: {err}");
    let (code, _, err) = curl(&["-v", "--proxy", &proxy.url(), url]).await;
    assert_eq!(code, 56, "{err}");
    assert!(err.contains("CONNECT tunnel failed, response 403"), "{err}");
    assert!(
        err.contains("proxy-status: airlock; error=http_request_denied; details=\"host_not_allowed: airlock denied denied.example.test:443"),
        "{err}"
    );
}

/// A refused tunnel is not a resource hole: it answers at most 16
/// requests, then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tunnel_answers_a_bounded_number_of_requests() {
    let proxy = ProxyBuilder::new()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let mut tls = client::tls_tunnel(
        &proxy,
        "denied.example.test:443",
        "denied.example.test",
        &[b"http/1.1"],
        true,
    )
    .await;
    for i in 1..=16 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: denied.example.test\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut tls).await;
        assert_eq!(r.status, 403, "request {i}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("proxy-status: airlock;"),
            "{}",
            r.head
        );
    }
    let _ = tls
        .write_all(b"GET / HTTP/1.1\r\nHost: denied.example.test\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest),
    )
    .await
    .expect("the refused tunnel closes after 16 requests");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// Plain http refusals carry Proxy-Status too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_refusals_carry_proxy_status() {
    let origin = Origin::plain("127.0.0.5", echo("plain")).await;
    let proxy = ProxyBuilder::new()
        .resolve("plain.example.test", "127.0.0.5")
        .allow_loopback()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let port = origin.port();
    s.write_all(
        format!(
            "GET http://plain.example.test:{port}/ HTTP/1.1\r\nHost: plain.example.test:{port}\r\n\r\n"
        )
            .as_bytes(),
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 403);
    assert!(
        r.head.to_ascii_lowercase().contains(
            "proxy-status: airlock; error=http_request_denied; details=\"host_not_allowed: airlock denied plain.example.test:"
        ),
        "{}",
        r.head
    );
    // Not a proxy request at all: 400, with Proxy-Status.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 400);
    assert!(
        r.head.to_ascii_lowercase().contains(
            "proxy-status: airlock; error=http_request_error; details=\"not_proxy_request: "
        ),
        "{}",
        r.head
    );
    assert_eq!(origin.received().len(), 0);
}

/// A refused tunnel keeps the handshake timeout of any tunnel: a client
/// that opens one and sends nothing is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_refused_tunnel_is_closed_after_the_handshake_timeout() {
    let proxy = ProxyBuilder::new()
        .proxy_line("handshake_timeout = \"1s\"")
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let (mut s, r) = client::connect(proxy.addr, "denied.example.test:443").await;
    assert_eq!(r.status, 200);
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await
    .expect("closed within the handshake timeout")
    .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(rest.is_empty());
}

/// A secret written into the name of a refused host (`<token>.evil.test`,
/// over CONNECT and over plain http) is never resolved or contacted, and
/// the audit log records the refusal with the secret redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_refused_host_name_stays_out_of_the_audit_log() {
    const TOKEN: &str = "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx";
    let proxy = ProxyBuilder::new().start().await;
    let host = format!("{TOKEN}.evil.test");
    let inside = client::refused(&proxy, &format!("{host}:443")).await;
    assert_eq!(inside.status, 403);
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut s).await.status, 403);
    // The CONNECT, the request inside the refused tunnel, the plain request.
    let events = crate::support::eventually("three refusals recorded", || {
        let events = proxy.audit();
        (events.iter().filter(|e| e["decision"] == "deny").count() >= 3).then_some(events)
    })
    .await;
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(
        !log.contains(TOKEN),
        "the token reached the audit log: {log}"
    );
    for e in events.iter().filter(|e| e["decision"] == "deny") {
        let h = e["host"].as_str().unwrap();
        assert!(h.contains("[REDACTED:") && h.ends_with(".evil.test"), "{e}");
    }
}
