use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::ca::TestCa;
use crate::support::client::{self, connect, tls_tunnel};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_timed_out_while_others_are_served() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let proxy = ProxyBuilder::new()
        .proxy_line("header_read_timeout = \"1s\"")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    // A slowloris: half a request head, then silence.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api")
        .await
        .unwrap();
    // Meanwhile, another client is served normally.
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The slow one is cut off (408 or a close), not held forever.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "slow client still connected after the header timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tunnel_is_closed_after_the_handshake_timeout() {
    let proxy = ProxyBuilder::new()
        .proxy_line("handshake_timeout = \"1s\"")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let (mut s, r) = connect(proxy.addr, "api.example.test:443").await;
    assert_eq!(r.status, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a client that never sends a ClientHello must be dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_aborts_mid_body_does_not_deliver_a_whole_body() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let port = origin.port();
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!("match = \"api.example.test\"\nports = [{port}]"))
        .start()
        .await;
    let target = format!("api.example.test:{port}");
    {
        let mut tls = tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
        tls.write_all(
            format!("POST /upload HTTP/1.1\r\nHost: {target}\r\nContent-Length: 1000000\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        tls.write_all(&[b'a'; 10_000]).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Dropped here: the client is gone mid-body.
    }
    // The proxy keeps serving.
    let resp = client::reqwest(&proxy)
        .get(format!("https://{target}/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    crate::support::eventually("aborted request to settle", || {
        let got = origin.received();
        got.iter().any(|r| r.target == "/after").then_some(())
    })
    .await;
    for r in origin.received() {
        if r.target == "/upload" {
            assert!(
                r.body.as_ref().is_none_or(|b| b.len() < 1_000_000),
                "a truncated upload arrived whole"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_gets_502() {
    let trusted = TestCa::new("trusted ca");
    let rogue = TestCa::new("rogue ca");
    let origin = Origin::https(&rogue, "api.example.test", "127.0.0.2", echo("rogue")).await;
    let proxy = ProxyBuilder::for_origin(&trusted, origin.port())
        .start()
        .await;
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["airlock-error"], "upstream_error");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("TLS to api.example.test failed")
            && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    assert!(origin.received().is_empty());
    let ev = proxy
        .audit_event("upstream error", |e| e["decision"] == "error")
        .await;
    assert_eq!(ev["status"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gets_502_with_reason() {
    // Bind then drop, so nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .rule(&format!("match = \"api.example.test\"\nports = [{port}]"))
        .start()
        .await;
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("cannot connect to api.example.test")
    );
}

/// `max_connections`: the third client waits until a slot frees, and is
/// then served; it is never dropped or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_queues_new_clients_until_a_slot_frees() {
    let proxy = ProxyBuilder::new()
        .proxy_line("max_connections = 2")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .rule("match = \"api.example.test\"")
        .start()
        .await;
    let first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(early.is_err(), "the third connection must wait for a slot");
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), third.read_exact(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}
