//! Broken neighbours: an origin that dies mid-response, one that never
//! answers, a client that leaves mid-download, ten times more clients than
//! `max_connections`. Each test asserts what the client and the origin saw,
//! and that the proxy still serves at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::ca::TestCa;
use crate::support::client::{self, read_response, tls_tunnel};
use crate::support::origin::{Body, Handler, Origin, record};
use crate::support::proxy::{ChildProxy, ProxyBuilder, TestProxy};

/// A body that sends `chunks` of 64 KiB, then fails (the origin's
/// connection is cut mid-body), or waits forever when `fail` is false.
fn dying_body(chunks: usize, fail: bool) -> Body {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i < chunks {
            let chunk: Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>> =
                Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 64 * 1024])));
            return Some((chunk, i + 1));
        }
        if fail {
            return Some((Err("origin died mid-body".into()), chunks + 1));
        }
        std::future::pending::<()>().await;
        None
    });
    StreamBody::new(stream).boxed()
}

/// `/early`: 413 before reading the body; `/die`: 4 chunks then a cut; `/hang`: no answer at all; `/slow`: 4
/// chunks then silence; anything else: echo. Counts the `/slow` bodies
/// dropped (the origin saw its client, airlock, go away).
fn faulty(dropped: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |req, rec| {
        let dropped = Arc::clone(&dropped);
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            if path == "/early" {
                // Answers before reading the body, then drops it: the
                // connection is closed under the upload.
                rec.record_head(&req);
                drop(req);
                let mut resp = Response::new(crate::support::origin::full("too large"));
                *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                return resp;
            }
            let r = record(req, &rec).await;
            match path.as_str() {
                "/die" => Response::new(dying_body(4, true)),
                "/hang" => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                "/slow" => {
                    struct Gone(Arc<AtomicUsize>);
                    impl Drop for Gone {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let gone = Gone(dropped);
                    let body = dying_body(4, false).map_frame(move |f| {
                        let _keep = &gone;
                        f
                    });
                    Response::new(body.boxed())
                }
                _ => Response::new(crate::support::origin::full(format!(
                    "hello: {} {}",
                    r.method, r.target
                ))),
            }
        })
    })
}

async fn world(extra: &[&str]) -> (TestCa, Origin, TestProxy, Arc<AtomicUsize>) {
    let ca = TestCa::new("origin ca");
    let dropped = Arc::new(AtomicUsize::new(0));
    let origin = Origin::https(
        &ca,
        "api.example.test",
        "127.0.0.2",
        faulty(Arc::clone(&dropped)),
    )
    .await;
    let mut b = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\nmethods = [\"GET\", \"POST\"]",
            origin.port()
        ));
    for l in extra {
        b = b.proxy_line(l);
    }
    let proxy = b.start().await;
    (ca, origin, proxy, dropped)
}

async fn still_serving(proxy: &TestProxy, origin: &Origin) {
    let resp = client::reqwest(proxy)
        .get(format!("https://api.example.test:{}/after", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello: GET /after");
}

async fn metric(proxy: &TestProxy, name: &str) -> i64 {
    let admin = proxy.server.admin_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_response(&mut s).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_dies_mid_response_gives_a_truncated_body_never_a_whole_one() {
    let (_ca, origin, proxy, _) = world(&[]).await;
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/die", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head arrived before the cut");
    // The client must learn the body is broken: an error, not a short
    // body that looks complete.
    let body = resp.bytes().await;
    assert!(body.is_err(), "a cut body was delivered as complete");
    still_serving(&proxy, &origin).await;
    let ev = proxy
        .audit_event("the cut response", |e| {
            e["kind"] == "request" && e["path"] == "/die"
        })
        .await;
    assert!(ev["bytes_down"].as_u64().unwrap() <= 4 * 64 * 1024, "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_gets_a_504_before_the_idle_timeout() {
    let (_ca, origin, proxy, _) = world(&["idle_timeout = \"2s\""]).await;
    let started = std::time::Instant::now();
    let resp = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/hang", origin.port()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["airlock-error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(25));
    still_serving(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_download_frees_its_tunnel_and_the_origin_stream() {
    let (_ca, origin, proxy, dropped) = world(&[]).await;
    let target = format!("api.example.test:{}", origin.port());
    {
        let mut tls = tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
        tls.write_all(format!("GET /slow HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut first = vec![0u8; 64 * 1024];
        tls.read_exact(&mut first).await.unwrap();
        assert_eq!(metric(&proxy, "airlock_active_tunnels").await, 1);
        // Dropped here: the client leaves mid-download.
    }
    crate::support::eventually_async("the tunnel to close", || async {
        (metric(&proxy, "airlock_active_tunnels").await == 0).then_some(())
    })
    .await;
    // airlock let go of the origin's response too (no task left reading it).
    crate::support::eventually("the origin's body to be dropped", || {
        (dropped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    still_serving(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_max_connections_queue_cleanly_and_the_admin_api_answers() {
    let (_ca, origin, proxy, _) = world(&["max_connections = 4"]).await;
    // 40 idle clients: 4 hold the slots, 36 wait in the kernel's backlog.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The admin API is its own listener: it answers.
    let admin = proxy.server.admin_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    // The idle ones are cut at the header-read timeout or when they leave;
    // once they are gone, real clients are served again.
    drop(idle);
    crate::support::eventually_async("a real client to be served", || async {
        let resp = client::reqwest(&proxy)
            .get(format!("https://api.example.test:{}/after", origin.port()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    assert!(origin.received().iter().any(|r| r.target == "/after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_longer_than_the_response_timeout_is_not_cut() {
    // response_timeout defaults to 1.5 s here; the upload (200 kB, past the
    // small-body bound that is read whole first) streams upstream for ~2 s.
    let (_ca, origin, proxy, _) = world(&["idle_timeout = \"2s\""]).await;
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; 20_000])),
            i + 1,
        ))
    });
    let resp = client::reqwest(&proxy)
        .post(format!("https://api.example.test:{}/upload", origin.port()))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = origin
        .received()
        .into_iter()
        .find(|r| r.target == "/upload")
        .unwrap();
    assert_eq!(got.body.unwrap().len(), 200_000);
}

#[test]
fn response_timeout_must_be_below_the_idle_timeout() {
    let err = crate::support::config_errors(
        "[proxy]\nidle_timeout = \"30s\"\nresponse_timeout = \"30s\"\n",
    );
    assert!(
        err.contains(
            "airlock.toml:3:20: proxy.response_timeout (30s) must be below proxy.idle_timeout (30s)"
        ),
        "{err}"
    );
}

/// File descriptors run out (`ulimit -n 64`): airlock says why it stops
/// accepting, does not exit or spin, and serves again once fds free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_exhausted_then_freed() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(
        &ca,
        "api.example.test",
        "127.0.0.2",
        faulty(Arc::new(AtomicUsize::new(0))),
    )
    .await;
    let builder = ProxyBuilder::for_origin(&ca, origin.port());
    let mut airlock = ChildProxy::start(&builder, &ca, "ulimit -n 64 &&").await;
    let (addr, dir) = (airlock.addr, airlock.dir.path().to_owned());
    // Hold more connections than the process has descriptors.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let log = dir.join("stderr.log");
    crate::support::eventually("airlock to say why it stops accepting", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Too many open files").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        airlock.child.try_wait().unwrap().is_none(),
        "airlock exited"
    );
    // A second of EMFILE is a handful of log lines, not a flood.
    let warnings = std::fs::read_to_string(&log)
        .unwrap()
        .matches("Too many open files")
        .count();
    assert!(warnings < 10, "{warnings} warnings in a second");
    drop(idle);
    let c = airlock.client(Duration::from_secs(5));
    let url = format!("https://api.example.test:{}/after", origin.port());
    crate::support::eventually_async("airlock to serve again", || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let resp = c.get(&url).send().await.ok()?;
            (resp.status() == 200).then_some(())
        }
    })
    .await;
    let _ = airlock.child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_drops_the_upload_midway_gets_its_answer_relayed() {
    let (_ca, origin, proxy, _) = world(&[]).await;
    let chunks = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; 64 * 1024]))),
    );
    let sent = client::reqwest(&proxy)
        .post(format!("https://api.example.test:{}/early", origin.port()))
        .body(reqwest::Body::wrap_stream(chunks))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    // The origin's answer, or a clean error: never a hang, never a 200.
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), 413);
    }
    assert!(origin.received().iter().all(|r| r.body.is_none()));
    still_serving(&proxy, &origin).await;
}
