use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::ca::TestCa;
use crate::support::client::{self, h2_tunnel, read_response, tls_tunnel};
use crate::support::origin::{self, Origin, echo, full, record};
use crate::support::proxy::{ProxyBuilder, TestProxy};

async fn api_setup(rule_extra: &str) -> (TestCa, Origin, TestProxy) {
    api_setup_with(rule_extra, echo("api")).await
}

async fn api_setup_with(rule_extra: &str, handler: origin::Handler) -> (TestCa, Origin, TestProxy) {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", handler).await;
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\n{rule_extra}",
            origin.port()
        ))
        .rule("match = \"other.example.test\"")
        .start()
        .await;
    (ca, origin, proxy)
}

/// Sends raw HTTP/1.1 bytes inside a verified tunnel and reads the response.
async fn raw_h1(proxy: &TestProxy, port: u16, request: &str) -> client::RawResponse {
    let target = format!("api.example.test:{port}");
    let mut tls = tls_tunnel(proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    read_response(&mut tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_path_rules_are_enforced_on_normalised_paths() {
    let (_ca, origin, proxy) =
        api_setup("methods = [\"GET\"]\npaths = [\"/allowed/**\", \"/one/*/x\"]").await;
    let port = origin.port();
    let c = client::reqwest(&proxy);
    let base = format!("https://api.example.test:{port}");
    assert_eq!(
        c.get(format!("{base}/allowed/a/b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/one/seg/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(format!("{base}/allowed/a"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "method_not_allowed");
    let r = c.get(format!("{base}/secret")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "path_not_allowed");
    assert_eq!(
        c.get(format!("{base}/one/a/b/x"))
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "`*` is one segment"
    );

    // Encodings that a naive prefix check would let through.
    for path in [
        "/allowed/%2e%2e/secret",
        "/allowed/..;/secret",
        "/allowed/.%2E/secret",
        "/allowed;x=/../secret",
        "//secret",
        "/ALLOWED/x",
    ] {
        let r = raw_h1(
            &proxy,
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    for path in ["/allowed/%2Fsecret", "/allowed/a%00b", "/../allowed/x"] {
        let r = raw_h1(
            &proxy,
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // What is forwarded is what was judged.
    let r = raw_h1(
        &proxy,
        port,
        &format!(
            "GET /allowed//a/./b/../%63?q=%2e HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let got: Vec<String> = origin.received().into_iter().map(|r| r.target).collect();
    assert_eq!(
        got,
        vec!["/allowed/a/b", "/one/seg/x", "/allowed/a/c?q=%2e"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_that_differs_from_connect_host_gets_421() {
    let (_ca, origin, proxy) = api_setup("").await;
    let target = format!("api.example.test:{}", origin.port());
    let mut tls = tls_tunnel(&proxy, &target, "other.example.test", &[b"http/1.1"], false).await;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut tls).await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert!(r.text().contains("SNI"), "{}", r.text());
    assert!(origin.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_or_authority_that_differs_from_connect_host_gets_421() {
    let (_ca, origin, proxy) = api_setup("").await;
    let port = origin.port();
    for request in [
        "GET / HTTP/1.1\r\nHost: other.example.test\r\n\r\n".to_owned(),
        format!(
            "GET / HTTP/1.1\r\nHost: api.example.test:{}\r\n\r\n",
            port + 1
        ),
        format!(
            "GET https://other.example.test/ HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"
        ),
    ] {
        let r = raw_h1(&proxy, port, &request).await;
        assert_eq!(r.status, 421, "{request}: {}", r.text());
    }
    // Through curl too: a Host header naming another (allowed) host.
    let (code, out, _err) = client::curl(&[
        "--proxy",
        &proxy.url(),
        "--cacert",
        proxy.ca_pem_path.to_str().unwrap(),
        "-H",
        "Host: other.example.test",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://api.example.test:{port}/"),
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, "421"));
    assert!(origin.received().is_empty());
}

/// The `Host` check compares bytes when the header is spelled exactly as
/// the tunnel's host: a header that starts with that spelling but names
/// another host or port is still refused, and the same host spelled
/// another way is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_header_glued_to_the_tunnel_host_gets_421_and_another_spelling_is_served() {
    let (_ca, origin, proxy) = api_setup("").await;
    let port = origin.port();
    for host in [
        "api.example.test.other.example.test".to_owned(),
        format!("api.example.test:{port}@other.example.test"),
        format!("api.example.test:{port}0"),
        format!("api.example.test:+{port}1"),
        // No port: the default, 443, is not this tunnel's.
        "api.example.test".to_owned(),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = raw_h1(&proxy, port, &request).await;
        assert_eq!(r.status, 421, "{host}: {}", r.text());
    }
    assert!(origin.received().is_empty(), "{:?}", origin.received());
    for host in [
        format!("api.example.test:{port}"),
        format!("API.Example.Test.:{port}"),
    ] {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = raw_h1(&proxy, port, &request).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    let received = origin.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.target == "/x"), "{received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_ambiguous_framing_are_refused() {
    let (_ca, origin, proxy) = api_setup("").await;
    let port = origin.port();
    let host = format!("api.example.test:{port}");
    let r = raw_h1(
        &proxy,
        port,
        &format!("TRACE / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 405);
    let r = raw_h1(
        &proxy,
        port,
        &format!("TRACK / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 405);
    // Differing lengths: refused.
    let twice = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
    );
    let r = raw_h1(&proxy, port, &twice).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(origin.received().is_empty(), "{:?}", origin.received());

    // Content-Length with Transfer-Encoding: the request is framed by
    // Transfer-Encoding (RFC 9112 6.1), re-framed by airlock toward the
    // origin, and the client connection is closed after it, so bytes hidden
    // behind the ambiguity are never read as a second request.
    let smuggle = format!(
        "POST /first HTTP/1.1\r\nHost: {host}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let target = format!("api.example.test:{port}");
    let mut tls = tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
    tls.write_all(smuggle.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let r = read_response(&mut tls).await;
    assert_eq!(r.status, 200);
    assert!(
        r.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        r.head
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("connection closed");
    let got = origin.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].target, "/first");
    assert_eq!(got[0].body.as_deref(), Some(&b""[..]));
    assert!(
        !got[0].headers.contains_key("content-length") || got[0].headers["content-length"] == "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_proxy_headers_never_reach_the_origin() {
    let (_ca, origin, proxy) = api_setup("").await;
    let c = client::reqwest_builder(&proxy)
        .http1_only()
        .build()
        .unwrap();
    let resp = c
        .get(format!("https://api.example.test:{}/h", origin.port()))
        .header("proxy-authorization", "Basic c2FuZGJveDpzM2NyZXQ=")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("x-keep", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = &origin.received()[0].headers;
    assert_eq!(h["x-keep"], "yes");
    for gone in ["proxy-authorization", "x-hop", "keep-alive", "connection"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_on_both_sides_and_h1_origin_downgrade() {
    let (ca, origin, proxy) = api_setup("").await;
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/two", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.version(),
        Version::HTTP_2,
        "client↔airlock negotiated h2"
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(
        origin.received()[0].version,
        Version::HTTP_2,
        "airlock↔origin negotiated h2"
    );

    // An http/1.1-only origin behind an h2 client.
    let h1 = Origin::https_alpn(
        &ca,
        "other.example.test",
        "127.0.0.3",
        echo("h1"),
        &[b"http/1.1"],
    )
    .await;
    let proxy2 = ProxyBuilder::new()
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"other.example.test\"\nports = [{}]",
            h1.port()
        ))
        .start()
        .await;
    let resp = client::reqwest(&proxy2)
        .post(format!("https://other.example.test:{}/up", h1.port()))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let got = h1.received();
    assert_eq!(got[0].version, Version::HTTP_11);
    assert_eq!(got[0].body.as_deref(), Some(&b"payload"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_cross_h2() {
    let handler: origin::Handler = Arc::new(|req, rec| {
        Box::pin(async move {
            record(req, &rec).await;
            let frames = vec![
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(
                    b"\0\0\0\0\x02hi",
                ))),
                Ok(Frame::trailers({
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", "0".parse().unwrap());
                    t
                })),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = api_setup_with("", handler).await;
    let target = format!("api.example.test:{}", origin.port());
    let mut send = h2_tunnel(&proxy, &target, &[b"h2"]).await;
    let req = http::Request::post(format!("https://{target}/pkg.Svc/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\0\0\0\0\x01x")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    let got = origin.received();
    assert_eq!(got[0].headers["te"], "trailers");
    assert_eq!(got[0].version, Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_before_the_origin_finishes() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let handler: origin::Handler = Arc::new(move |req, rec| {
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            record(req, &rec).await;
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(4);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))))
                    .await
                    .unwrap();
                // The second event waits until the client proves it got the first.
                gate.notified().await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))))
                    .await
                    .unwrap();
            });
            let body = StreamBody::new(tokio_stream_from(rx)).boxed();
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = api_setup_with("", handler).await;
    let mut resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/events", origin.port()))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first event must arrive while the origin is still open")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    release.notify_one();
    let second = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn websocket_origin() -> origin::Handler {
    Arc::new(|mut req, rec| {
        Box::pin(async move {
            let upgrade = hyper::upgrade::on(&mut req);
            rec.record_head(&req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    // Echoes one message (airlock may fragment it) back,
                    // as one server frame.
                    let mut message = Vec::new();
                    while let Some((fin, _, payload)) = crate::scan::ws_read(&mut io).await {
                        message.extend_from_slice(&payload);
                        if fin {
                            let frame = crate::scan::ws_frame(true, 0x1, None, &message);
                            let _ = io.write_all(&frame).await;
                            break;
                        }
                    }
                }
            });
            origin::switching_to_websocket()
        })
    })
}

const WS_REQUEST: &str = "GET /ws HTTP/1.1\r\nHost: HOST\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_only_where_the_rule_allows_it() {
    let (_ca, origin, proxy) = api_setup_with("", websocket_origin()).await;
    let port = origin.port();
    let host = format!("api.example.test:{port}");
    let r = raw_h1(&proxy, port, &WS_REQUEST.replace("HOST", &host)).await;
    assert_eq!(r.status, 403);
    assert!(r.head.contains("websocket_not_allowed"), "{}", r.head);
    assert!(origin.received().is_empty());

    let (_ca2, origin, proxy) = api_setup_with("websocket = true", websocket_origin()).await;
    let port = origin.port();
    let host = format!("api.example.test:{port}");
    let mut tls = tls_tunnel(&proxy, &host, "api.example.test", &[b"http/1.1"], true).await;
    tls.write_all(WS_REQUEST.replace("HOST", &host).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut tls).await;
    assert_eq!(r.status, 101, "{}", r.head);
    // Scanning is always on (built-in patterns), so the relay speaks
    // WebSocket frames: the origin echoes the message it got.
    let frame = crate::scan::ws_frame(true, 0x1, Some([1, 2, 3, 4]), b"ping-frame");
    tls.write_all(&frame).await.unwrap();
    tls.flush().await.unwrap();
    let (fin, opcode, payload) =
        tokio::time::timeout(Duration::from_secs(10), crate::scan::ws_read(&mut tls))
            .await
            .unwrap()
            .unwrap();
    assert_eq!((fin, opcode, &payload[..]), (true, 0x1, &b"ping-frame"[..]));
    let got = origin.received();
    assert_eq!(got[0].headers["upgrade"], "websocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leaf_is_minted_per_host_under_concurrency() {
    let (_ca, origin, proxy) = api_setup("").await;
    let url = format!("https://api.example.test:{}/c", origin.port());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client::reqwest(&proxy);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(proxy.server.state().issuer.minted(), 1);
    assert_eq!(origin.received().len(), 20);
}

/// The tunnel's server follows ALPN when the client named a protocol, and
/// sniffs the h2 preface when it did not: each way, the request reaches the
/// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_serves_what_alpn_chose_and_sniffs_without_it() {
    let (_ca, origin, proxy) = api_setup("").await;
    let target = format!("api.example.test:{}", origin.port());
    let request = format!("GET /named HTTP/1.1\r\nHost: {target}\r\n\r\n");

    // ALPN http/1.1 and no ALPN at all: plain http/1.1 bytes are answered.
    for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
        let mut tls = tls_tunnel(&proxy, &target, "api.example.test", alpn, true).await;
        tls.write_all(request.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let r = read_response(&mut tls).await;
        assert_eq!(r.status, 200, "alpn {alpn:?}: {}", r.text());
    }

    // No ALPN, then h2 anyway (prior knowledge inside TLS): still served.
    let mut send = h2_tunnel(&proxy, &target, &[]).await;
    let req = http::Request::get(format!("https://{target}/sniffed"))
        .body(full(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);

    // ALPN binds the client to the protocol it named: speaking the other
    // one gets no answer in it, and nothing reaches the origin from that
    // tunnel. (An h2 frame starts with its length's high byte, 0 here.)
    let confused = request.replace("/named", "/confused");
    for (alpn, sent, other_answer) in [
        (
            &b"http/1.1"[..],
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            &b"\0"[..],
        ),
        (b"h2", confused.as_bytes(), b"HTTP/"),
    ] {
        let mut tls = tls_tunnel(&proxy, &target, "api.example.test", &[alpn], true).await;
        tls.write_all(sent).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
        assert!(
            !answer.starts_with(other_answer),
            "ALPN {:?}, then the other protocol, was answered in it: {answer:?}",
            String::from_utf8_lossy(alpn)
        );
    }

    let paths: Vec<String> = origin.received().iter().map(|r| r.target.clone()).collect();
    assert_eq!(paths, ["/named", "/named", "/sniffed"]);
}

/// The sandbox side's cipher suite is airlock's choice: curl (OpenSSL,
/// which lists AES-256-GCM-SHA384 first) gets AES-128-GCM-SHA256 in TLS
/// 1.3 and 1.2, and a curl that allows AES-256-GCM-SHA384 only still
/// connects with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_aes_128_and_a_client_without_it_still_connects() {
    let (_ca, origin, proxy) = api_setup("").await;
    let url = format!("https://api.example.test:{}/", origin.port());
    let proxy_url = proxy.url();
    let cases: [(&[&str], &str); 3] = [
        (&[], "TLSv1.3 / TLS_AES_128_GCM_SHA256"),
        (
            &["--tls13-ciphers", "TLS_AES_256_GCM_SHA384"],
            "TLSv1.3 / TLS_AES_256_GCM_SHA384",
        ),
        (
            &["--tls-max", "1.2"],
            "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "-v",
            "--proxy",
            &proxy_url,
            "--cacert",
            proxy.ca_pem_path.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let (code, out, err) = client::curl(&args).await;
        assert_eq!((code, out.as_str()), (0, "200"), "{extra:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("SSL connection using"))
            .unwrap_or_default();
        assert!(line.contains(want), "{extra:?}: {line:?}");
    }
    assert_eq!(origin.received().len(), 3);
}
