use tokio::io::AsyncWriteExt;

use crate::support::client::{self, read_response};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_judged_and_proxy_credentials_never_forwarded() {
    let origin = Origin::plain("127.0.0.5", echo("plain")).await;
    let port = origin.port();
    let proxy = ProxyBuilder::new()
        .resolve("plain.example.test", "127.0.0.5")
        .allow_loopback()
        .rule(&format!(
            "match = \"plain.example.test\"\nports = [{port}]\npaths = [\"/ok/**\"]"
        ))
        .start()
        .await;
    let with_auth = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://sandbox:s3cret@{}", proxy.addr)).unwrap())
        .build()
        .unwrap();
    let resp = with_auth
        .get(format!("http://plain.example.test:{port}/ok/a?b=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "hello from plain: GET /ok/a?b=c"
    );
    let resp = with_auth
        .get(format!("http://plain.example.test:{port}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("do not allow this path")
    );
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].headers.contains_key("proxy-authorization"),
        "{:?}",
        got[0].headers
    );
    assert!(!got[0].headers.contains_key("proxy-connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_denied_host_and_default_port() {
    let origin = Origin::plain("127.0.0.5", echo("plain")).await;
    let proxy = ProxyBuilder::new()
        .resolve("plain.example.test", "127.0.0.5")
        .allow_loopback()
        .rule("match = \"plain.example.test\"")
        .start()
        .await;
    let c = client::reqwest(&proxy);
    // The rule has no ports: plain HTTP defaults to 80 only.
    let resp = c
        .get(format!("http://plain.example.test:{}/", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["airlock-error"], "port_not_allowed");
    let resp = c.get("http://unknown.example.test/").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("not on the allowlist"));
    assert!(origin.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_form_and_host_mismatch_are_refused() {
    let origin = Origin::plain("127.0.0.5", echo("plain")).await;
    let port = origin.port();
    let proxy = ProxyBuilder::new()
        .resolve("plain.example.test", "127.0.0.5")
        .allow_loopback()
        .rule(&format!("match = \"plain.example.test\"\nports = [{port}]"))
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: plain.example.test\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("forward proxy"), "{}", r.text());

    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET http://plain.example.test:{port}/ HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert!(origin.received().is_empty());
}
