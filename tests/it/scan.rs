//! The scanner on the request path: secrets going out are blocked before
//! their bytes leave; secrets coming back are redacted.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::compress::{gzip, zlib};
use crate::support::origin::{self, Origin, echo, full, record};
use crate::support::proxy::{ProxyBuilder, TestProxy};

/// Fresh per run: a documented example value is `shaped`, which incoming
/// redaction leaves alone.
static GITHUB_TOKEN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(crate::support::fresh::github_token);
static AWS_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(crate::support::fresh::aws_access_key_id);

fn github() -> &'static str {
    &GITHUB_TOKEN
}

fn aws() -> &'static str {
    &AWS_KEY
}

async fn setup(handler: origin::Handler, scan: &[&str]) -> (TestCa, Origin, TestProxy) {
    crate::support::api_origin(handler, "", |b| b.scan(scan)).await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No recorded request at the origin carries the secret, or any prefix of
/// it longer than 8 bytes, anywhere.
fn origin_never_saw(origin: &Origin, secret: &str) {
    let probe = &secret.as_bytes()[..8.min(secret.len())];
    for r in origin.received() {
        assert!(
            !r.target.contains(secret),
            "secret in the URL the origin saw"
        );
        for (name, v) in &r.headers {
            assert!(!contains(v.as_bytes(), probe), "secret in header {name}");
        }
        if let Some(b) = &r.body {
            assert!(
                !contains(b, probe),
                "a prefix of the secret reached the origin"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_secrets_are_blocked_wherever_they_are() {
    let github = github();
    let aws = aws();
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);

    let json = format!("{{\"note\":\"hello\",\"token\":\"{github}\"}}");
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("github-pat-classic") && !text.contains(github),
        "{text}"
    );

    let form = format!("user=a&aws_key={aws}&x=1");
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // 1-byte chunks: the verdict must not depend on chunking.
    let payload = format!("prefix {} suffix {github} tail", "x".repeat(300));
    let chunks: Vec<Result<Bytes, std::io::Error>> = payload
        .bytes()
        .map(|b| Ok(Bytes::copy_from_slice(&[b])))
        .collect();
    // HTTP/1.1 chunked encoding, one byte per chunk. (Over h2, 1-byte DATA
    // frames trip h2's flood protection, which closes the connection.)
    let h1 = client::reqwest_builder(&proxy)
        .http1_only()
        .build()
        .unwrap();
    let sent = h1
        .post(format!("{url}/bytewise"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // airlock answers 403 as soon as it sees the secret; a client still
    // streaming its body may see the stream closed instead. Either way the
    // audit log has the block and the origin has nothing.
    if let Ok(r) = sent {
        assert_eq!(r.status(), 403);
    }
    proxy
        .audit_event("bytewise block", |e| {
            e["kind"] == "finding" && e["path"] == "/upload/bytewise" && e["decision"] == "block"
        })
        .await;

    // gzip: the decoded stream is scanned.
    let r = c
        .post(&url)
        .header("content-encoding", "gzip")
        .body(gzip(format!("data {aws} data").as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A body airlock cannot decode is refused, not forwarded unscanned.
    let r = c
        .post(&url)
        .header("content-encoding", "zstd")
        .body("whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["airlock-error"], "unscannable_body");
    let r = c
        .post(&url)
        .header("content-encoding", "gzip")
        .body("not gzip at all, really not")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a corrupt gzip body is refused");

    let r = c
        .get(format!("{url}?access_token={github}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // In a path segment too; and the audit log (checked below) records it redacted.
    let r = c.get(format!("{url}/{github}")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(&url)
        .header("x-debug", format!("key={aws}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("header x-debug"));

    origin_never_saw(&origin, github);
    origin_never_saw(&origin, aws);
    let ev = proxy
        .audit_event("finding", |e| {
            e["kind"] == "finding" && e["reason"] == "secret_in_body"
        })
        .await;
    assert_eq!(ev["direction"], "out");
    assert_eq!(ev["decision"], "block");
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(
        !log.contains(github) && !log.contains(aws),
        "the audit log must never hold a secret"
    );
}

/// The URL and the headers are scanned in one pass first, then apart when
/// it finds something: a refusal still names the place that holds the
/// secret (the URL before a header), base64-looking text at the URL's end
/// does not hide a base64 secret in the first header, and a benign request
/// with both goes through untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_and_headers_scanned_together_still_name_the_place() {
    use base64::Engine as _;
    let aws = aws();
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("key {aws} end"));

    // Secret in a header, the URL ending in base64 characters.
    let r = c
        .get(format!("{url}/QUtJQUlPU0ZPRE5ON0VY"))
        .header("x-debug", &encoded)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("header x-debug") && text.contains("aws-access-key-id"),
        "{text}"
    );

    // Secret in both: the URL is named.
    let r = c
        .get(format!("{url}?k={aws}"))
        .header("x-debug", format!("key={aws}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("URL") && !text.contains("header x-debug"),
        "{text}"
    );

    // Benign URL and headers with base64 in both: sent as they are.
    let r = c
        .get(format!("{url}/aGVsbG8gd29ybGQsIGhlbGxvIGFnYWlu?q=a%2Fb"))
        .header("x-trace", "dGhpcyBpcyBqdXN0IGEgdHJhY2UgaWQ=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    let last = got.last().unwrap();
    assert!(
        last.target
            .ends_with("/aGVsbG8gd29ybGQsIGhlbGxvIGFnYWlu?q=a%2Fb"),
        "{}",
        last.target
    );
    assert_eq!(last.headers["x-trace"], "dGhpcyBpcyBqdXN0IGEgdHJhY2UgaWQ=");
    origin_never_saw(&origin, aws);
}

/// A secret deep inside a large streamed body: the origin gets the bytes
/// before it at most, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_secret_in_a_streamed_body_never_reaches_the_origin() {
    let github = github();
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/big", origin.port());
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = (0..64)
        .map(|_| Ok(Bytes::from(vec![b'a'; 16 * 1024])))
        .collect();
    chunks.push(Ok(Bytes::from(format!("...{github}..."))));
    chunks.extend((0..8).map(|_| Ok(Bytes::from(vec![b'b'; 16 * 1024]))));
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // Either a clean 403, or the upstream stream was cut and the client sees an error/403.
    if let Ok(r) = r {
        assert_ne!(r.status(), 200);
    }
    origin_never_saw(&origin, github);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_responses_are_redacted_for_the_sandbox() {
    let github = github();
    let aws = aws();
    let handler: origin::Handler = Arc::new(move |req, rec| {
        Box::pin(async move {
            let r = record(req, &rec).await;
            let body = format!("{{\"leak\":\"{github}\",\"aws\":\"{aws}\"}}");
            let mut resp = if r.target == "/gz" {
                let mut resp = Response::new(full(gzip(body.as_bytes())));
                resp.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                resp
            } else if r.target == "/sse" {
                let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
                    Ok(Frame::data(Bytes::from(format!("data: {}", &github[..15])))),
                    Ok(Frame::data(Bytes::from(format!("{}\n\n", &github[15..])))),
                ];
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            } else {
                Response::new(full(body))
            };
            resp.headers_mut()
                .insert("x-echo", format!("token {github}").parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = setup(handler, &[]).await;
    let c = client::reqwest_builder(&proxy).no_gzip().build().unwrap();
    let base = format!("https://api.example.test:{}", origin.port());
    for path in ["/plain", "/gz", "/sse"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-echo"], "token [REDACTED:github-pat-classic]");
        assert!(
            r.headers().get("content-encoding").is_none(),
            "{path}: redacted bodies are sent decoded"
        );
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(github) && !body.contains(aws),
            "{path}: {body}"
        );
        assert!(
            body.contains("[REDACTED:github-pat-classic]"),
            "{path}: {body}"
        );
    }
    let ev = proxy
        .audit_event("incoming finding", |e| {
            e["kind"] == "finding" && e["direction"] == "in"
        })
        .await;
    assert_eq!(ev["decision"], "redact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_block_withholds_the_response() {
    let handler: origin::Handler = Arc::new(|req, rec| {
        Box::pin(async move {
            record(req, &rec).await;
            let mut resp = Response::new(full("ok"));
            resp.headers_mut().insert("x-key", aws().parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = setup(handler, &["incoming = \"block\""]).await;
    let r = client::reqwest(&proxy)
        .get(format!("https://api.example.test:{}/", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["airlock-error"], "secret_in_response");
    assert!(!r.text().await.unwrap().contains(aws()));
}

/// 50 MB of benign bytes each way pass byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_benign_body_passes_unchanged() {
    const SIZE: usize = 50 * 1024 * 1024;
    fn pattern(i: usize) -> u8 {
        // Text-like bytes with keyword-ish fragments, but no secret.
        const TEXT: &[u8] =
            b"the quick brown fox jumps over AKIA lazy dogs ghp_ 0123456789 {\"k\":\"v\"}\n";
        TEXT[i % TEXT.len()]
    }
    let handler: origin::Handler = Arc::new(|req, _rec| {
        Box::pin(async move {
            let mut body = req.into_body();
            let (mut n, mut ok) = (0usize, true);
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    for (k, b) in d.iter().enumerate() {
                        ok &= *b == pattern(n + k);
                    }
                    n += d.len();
                }
            }
            let stream = futures_util::stream::iter((0..SIZE / 65536).map(|c| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(
                    (0..65536)
                        .map(|i| pattern(c * 65536 + i))
                        .collect::<Vec<u8>>(),
                )))
            }));
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("x-received", format!("{n} {ok}").parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = setup(handler, &[]).await;
    let upload = futures_util::stream::iter((0..SIZE / 65536).map(|c| {
        Ok::<_, std::io::Error>(Bytes::from(
            (0..65536)
                .map(|i| pattern(c * 65536 + i))
                .collect::<Vec<u8>>(),
        ))
    }));
    let r = client::reqwest_builder(&proxy)
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .unwrap()
        .post(format!("https://api.example.test:{}/echo", origin.port()))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-received"], format!("{SIZE} true"));
    let mut stream = r.bytes_stream();
    let (mut n, mut ok) = (0usize, true);
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (k, b) in chunk.iter().enumerate() {
            ok &= *b == pattern(n + k);
        }
        n += chunk.len();
    }
    assert_eq!((n, ok), (SIZE, true));
}

/// Scanning must not hold a streamed response back: the first event of an
/// SSE stream reaches the sandbox while the origin is still open, with the
/// incoming scanner on (redact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanned_sse_events_are_not_held_back() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let handler: origin::Handler = Arc::new(move |req, rec| {
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            record(req, &rec).await;
            type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(4);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from_static(
                    b"event: delta\ndata: {\"text\":\"Hello\"}\n\n",
                ))))
                .await
                .unwrap();
                gate.notified().await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                    .await
                    .unwrap();
            });
            let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let mut resp = Response::new(BodyExt::boxed(body));
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) = setup(handler, &[]).await;
    let mut resp = client::reqwest(&proxy)
        .get(format!(
            "https://api.example.test:{}/v1/messages",
            origin.port()
        ))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first event must arrive while the origin is still open, scanner on")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"event: delta\ndata: {\"text\":\"Hello\"}\n\n");
    release.notify_one();
    let rest = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"data: [DONE]\n\n");
}

/// airlock as its own process: a 200 MiB upload and download with the
/// scanner on leave its peak memory far below the body size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_body_size() {
    const SIZE: usize = 200 * 1024 * 1024;
    let handler: origin::Handler = Arc::new(|req, _rec| {
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len());
            }
            let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
            let stream = futures_util::stream::iter((0..SIZE / chunk.len()).map(move |_| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))
            }));
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("x-received", n.to_string().parse().unwrap());
            resp
        })
    });
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", handler).await;
    let builder = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ));
    let mut airlock = crate::support::proxy::ChildProxy::start(&builder, &ca, "").await;
    let pid = airlock.pid;
    let c = airlock.client(std::time::Duration::from_secs(600));
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let upload = futures_util::stream::iter(
        (0..SIZE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let r = c
        .post(format!("https://api.example.test:{}/big", origin.port()))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-received"], SIZE.to_string().as_str());
    let mut stream = r.bytes_stream();
    let mut n = 0usize;
    use futures_util::StreamExt;
    while let Some(c) = stream.next().await {
        n += c.unwrap().len();
    }
    assert_eq!(n, SIZE);
    let peak_kib = peak_rss_kib(pid);
    eprintln!("airlock peak RSS while moving 2 x 200 MiB with scanning: {peak_kib} KiB");
    let _ = airlock.child.kill().await;
    assert!(
        peak_kib < 80 * 1024,
        "airlock peaked at {peak_kib} KiB while moving 2 x 200 MiB"
    );
}

/// A process's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// airlock as its own process: one base64 character, then 96 MiB of `\r`
/// (padding that neither ended nor extended the run), used to keep the
/// whole upload held back behind the run's start. The body streams through
/// with peak memory far below its size, and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carriage_return_padding_does_not_make_airlock_hold_the_body() {
    const SIZE: usize = 96 * 1024 * 1024;
    let handler: origin::Handler = Arc::new(|req, _rec| {
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len());
            }
            let mut resp = Response::new(BodyExt::boxed(
                http_body_util::Empty::new().map_err(|never| match never {}),
            ));
            resp.headers_mut()
                .insert("x-received", n.to_string().parse().unwrap());
            resp
        })
    });
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", handler).await;
    let builder = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ));
    let mut airlock = crate::support::proxy::ChildProxy::start(&builder, &ca, "").await;
    let pid = airlock.pid;
    let c = airlock.client(std::time::Duration::from_secs(600));
    let chunk = Bytes::from(vec![b'\r'; 64 * 1024]);
    let head = Bytes::from_static(b"x A");
    let upload = futures_util::stream::iter(
        std::iter::once(head)
            .chain((0..SIZE / chunk.len()).map(move |_| chunk.clone()))
            .map(Ok::<_, std::io::Error>),
    );
    let r = c
        .post(format!("https://api.example.test:{}/big", origin.port()))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-received"], (SIZE + 3).to_string().as_str());
    let peak_kib = peak_rss_kib(pid);
    let _ = airlock.child.kill().await;
    assert!(
        peak_kib < 80 * 1024,
        "airlock peaked at {peak_kib} KiB moving a {SIZE}-byte padded body"
    );
}

// ------------------------------------------------------------ WebSocket

/// One frame; masked (as a client must) when `mask` is given.
pub(crate) fn ws_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    assert!(payload.len() < 126, "test frames are short");
    out.push(m | payload.len() as u8);
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame: (fin, opcode, unmasked payload).
pub(crate) async fn ws_read<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(bool, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.ok()?;
    let len = match two[1] & 0x7f {
        126 => usize::from(s.read_u16().await.ok()?),
        127 => usize::try_from(s.read_u64().await.ok()?).ok()?,
        n => usize::from(n),
    };
    let mut mask = None;
    if two[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        s.read_exact(&mut k).await.ok()?;
        mask = Some(k);
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    if let Some(k) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((two[0] & 0x80 != 0, two[0] & 0x0f, payload))
}

/// A WebSocket origin: records every data frame's payload; answers each
/// whole text message with the same text, or with a GitHub token when the
/// message is `leak`.
fn ws_origin(frames: Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> origin::Handler {
    let github = github();
    Arc::new(move |mut req, rec| {
        let frames = Arc::clone(&frames);
        Box::pin(async move {
            let upgrade = hyper::upgrade::on(&mut req);
            rec.record_head(&req);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let Ok(up) = upgrade.await else { return };
                let mut io = hyper_util::rt::TokioIo::new(up);
                let mut message = Vec::new();
                while let Some((fin, opcode, payload)) = ws_read(&mut io).await {
                    frames.lock().unwrap().push(payload.clone());
                    if opcode == 0x8 {
                        break;
                    }
                    if opcode > 0x8 {
                        continue;
                    }
                    message.extend_from_slice(&payload);
                    if fin {
                        let reply = if message == b"leak" {
                            format!("here it is: {github}").into_bytes()
                        } else {
                            std::mem::take(&mut message)
                        };
                        message.clear();
                        if io
                            .write_all(&ws_frame(true, 0x1, None, &reply))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            });
            // An origin that echoes a credential in its 101's headers.
            let mut switching = origin::switching_to_websocket();
            switching
                .headers_mut()
                .insert("x-echo", github.parse().unwrap());
            switching
        })
    })
}

async fn ws_read_in_time<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(bool, u8, Vec<u8>)> {
    tokio::time::timeout(std::time::Duration::from_secs(10), ws_read(s))
        .await
        .expect("a frame in time")
}

/// An upgraded WebSocket session through a scanning airlock to
/// [`ws_origin`]; `frames` is what the origin received.
struct WsSession {
    _ca: TestCa,
    origin: Origin,
    _proxy: TestProxy,
    frames: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

async fn ws_session() -> WsSession {
    use tokio::io::AsyncWriteExt;
    let ca = TestCa::new("origin ca");
    let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
    let origin = Origin::https_alpn(
        &ca,
        "api.example.test",
        "127.0.0.2",
        ws_origin(Arc::clone(&frames)),
        &[b"http/1.1"],
    )
    .await;
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\nwebsocket = true",
            origin.port()
        ))
        .start()
        .await;
    let host = format!("api.example.test:{}", origin.port());
    let mut tls = client::tls_tunnel(&proxy, &host, "api.example.test", &[b"http/1.1"], true).await;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    );
    tls.write_all(upgrade.as_bytes()).await.unwrap();
    let r = client::read_response(&mut tls).await;
    assert_eq!(r.status, 101, "{}", r.head);
    // The 101's headers are scanned as any response's are.
    assert!(!r.head.contains(&github()[..12]), "{}", r.head);
    assert!(
        r.head.contains("x-echo: [REDACTED:github-pat-classic]"),
        "{}",
        r.head
    );
    WsSession {
        _ca: ca,
        origin,
        _proxy: proxy,
        frames,
        tls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_scanned_both_ways() {
    use tokio::io::AsyncWriteExt;
    let WsSession {
        origin,
        frames,
        mut tls,
        ..
    } = ws_session().await;
    let offered = origin.received()[0]
        .headers
        .get("sec-websocket-extensions")
        .cloned();
    assert_eq!(
        offered, None,
        "compression must not be offered: frames would be unreadable"
    );
    let key = Some([0x11, 0x22, 0x33, 0x44]);

    // A benign message goes through and back unchanged.
    tls.write_all(&ws_frame(true, 0x1, key, b"hello airlock"))
        .await
        .unwrap();
    let (fin, op, payload) = ws_read_in_time(&mut tls).await.expect("echo");
    assert_eq!(
        (fin, op, payload.as_slice()),
        (true, 0x1, &b"hello airlock"[..])
    );

    // A secret coming back is redacted before the sandbox sees it.
    tls.write_all(&ws_frame(true, 0x1, key, b"leak"))
        .await
        .unwrap();
    let mut reply = Vec::new();
    loop {
        let (fin, _, payload) = ws_read_in_time(&mut tls).await.expect("the reply");
        reply.extend_from_slice(&payload);
        if fin {
            break;
        }
    }
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("here it is: [REDACTED:"), "{reply}");
    assert!(!reply.contains(&github()[..8]), "{reply}");

    // A secret going out, split over two fragments, is blocked: the sandbox
    // gets a close frame naming the pattern, the origin never the token.
    let (a, b) = github().split_at(10);
    tls.write_all(&ws_frame(false, 0x1, key, format!("token {a}").as_bytes()))
        .await
        .unwrap();
    tls.write_all(&ws_frame(true, 0x0, key, b.as_bytes()))
        .await
        .unwrap();
    let why = policy_close(&mut tls).await;
    assert!(why.contains("github"), "{why}");
    assert!(!why.contains(&github()[..8]), "{why}");
    let seen = origin_never_got_the_token(&frames).await;
    // (A message's last frame may be held and sent apart: frame sizes differ.)
    assert!(contains(&seen.concat(), b"hello airlock"), "{seen:?}");
}

/// Reads one whole message (its frames up to FIN): (opcode, payload).
async fn ws_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    let (mut fin, op, mut payload) = ws_read_in_time(s).await.expect("a message");
    while !fin {
        let (f, next_op, more) = ws_read_in_time(s).await.expect("the next fragment");
        assert_eq!(next_op, 0x0, "a continuation");
        fin = f;
        payload.extend_from_slice(&more);
    }
    (op, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_across_websocket_messages_is_found() {
    use crate::no_trace::{assert_no_piece, fresh_aws_key};
    use tokio::io::AsyncWriteExt;
    let key = Some([0x09, 0x08, 0x07, 0x06]);

    // Benign: a message whose tail could start a key, then one that does
    // not complete it: both arrive whole, in order, and come back.
    let WsSession {
        frames, mut tls, ..
    } = ws_session().await;
    tls.write_all(&ws_frame(true, 0x1, key, b"the id is AKIA"))
        .await
        .unwrap();
    tls.write_all(&ws_frame(true, 0x1, key, b" ... no, it was not"))
        .await
        .unwrap();
    assert_eq!(
        ws_message(&mut tls).await,
        (0x1, b"the id is AKIA".to_vec())
    );
    assert_eq!(
        ws_message(&mut tls).await,
        (0x1, b" ... no, it was not".to_vec())
    );

    // A fresh key split across two messages sent together: the connection
    // closes naming the pattern; the origin got no piece of it, not even
    // the first half (held while the second could complete it).
    let secret = fresh_aws_key();
    let (a, b) = secret.split_at(10);
    let both = [
        ws_frame(true, 0x1, key, format!("key {a}").as_bytes()),
        ws_frame(true, 0x1, key, format!("{b} end").as_bytes()),
    ]
    .concat();
    tls.write_all(&both).await.unwrap();
    let why = policy_close(&mut tls).await;
    assert!(why.contains("aws-access-key-id"), "{why}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let got = frames.lock().unwrap().concat();
    assert_no_piece(&got, &secret, "the origin");

    // The second half long after the first: the first went out after the
    // wait, the second never does.
    let WsSession {
        frames, mut tls, ..
    } = ws_session().await;
    let secret = fresh_aws_key();
    let (a, b) = secret.split_at(10);
    let sent = std::time::Instant::now();
    tls.write_all(&ws_frame(true, 0x1, key, format!("key {a}").as_bytes()))
        .await
        .unwrap();
    let (_, echo) = ws_message(&mut tls).await;
    assert_eq!(echo, format!("key {a}").into_bytes());
    // Its tail was held for the wait (250 ms), then sent.
    let waited = sent.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(240)
            && waited < std::time::Duration::from_secs(3),
        "{waited:?}"
    );
    tls.write_all(&ws_frame(true, 0x1, key, format!("{b} end").as_bytes()))
        .await
        .unwrap();
    let why = policy_close(&mut tls).await;
    assert!(why.contains("aws-access-key-id"), "{why}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let got = frames.lock().unwrap().concat();
    assert!(
        !contains(&got, b.as_bytes()),
        "the second half reached the origin"
    );
    assert_no_piece(&got, b, "the origin");
}

/// The next frame is airlock's close, code 1008 (policy); its reason.
async fn policy_close<S: tokio::io::AsyncRead + Unpin>(tls: &mut S) -> String {
    let (_, op, payload) = ws_read_in_time(tls).await.expect("a close frame");
    assert_eq!(op, 0x8, "{}", String::from_utf8_lossy(&payload));
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    String::from_utf8_lossy(&payload[2..]).into_owned()
}

/// After a moment for anything in flight: no frame the origin got holds
/// the token. Returns the frames.
async fn origin_never_got_the_token(frames: &std::sync::Mutex<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let seen = frames.lock().unwrap().clone();
    for f in &seen {
        assert!(
            !contains(f, &github().as_bytes()[..8]),
            "the origin got {f:?}"
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_websocket_ping_is_blocked() {
    use tokio::io::AsyncWriteExt;
    let WsSession {
        frames, mut tls, ..
    } = ws_session().await;
    // A ping's payload is read by the origin (and echoed in its pong): a
    // control frame is as good a channel as a message.
    let key = Some([0x55, 0x66, 0x77, 0x88]);
    tls.write_all(&ws_frame(true, 0x9, key, github().as_bytes()))
        .await
        .unwrap();
    policy_close(&mut tls).await;
    origin_never_got_the_token(&frames).await;
}

/// Decode, then scan, in WebSocket messages: a base64 token split over two
/// fragments is refused with a close naming the pattern and the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_secret_in_a_websocket_message_is_blocked() {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let WsSession {
        frames, mut tls, ..
    } = ws_session().await;
    let token = crate::encoded::fresh_ghp();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{{\"t\":\"{token}\"}}"));
    let key = Some([0x01, 0x02, 0x03, 0x04]);
    let (a, b) = b64.split_at(20);
    tls.write_all(&ws_frame(
        false,
        0x1,
        key,
        format!("{{\"blob\":\"{a}").as_bytes(),
    ))
    .await
    .unwrap();
    tls.write_all(&ws_frame(true, 0x0, key, format!("{b}\"}}").as_bytes()))
        .await
        .unwrap();
    let why = policy_close(&mut tls).await;
    assert!(why.contains("github-pat-classic, decoded base64"), "{why}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // `{"t":"` is the first 8 base64 characters; the token's are after.
    for f in frames.lock().unwrap().iter() {
        for piece in b64.as_bytes()[8..].windows(8) {
            assert!(!contains(f, piece), "the origin got {f:?}");
        }
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A header is scanned as its wire line, `name: value`: a secret in the
/// name (which HTTP lowercases: hex, or a lowercased token, glued to `x-`)
/// is found, and so is a secret whose pattern needs its name for context
/// (an AWS secret access key under `x-aws-secret-access-key`). None of it
/// reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_are_scanned_with_their_values() {
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/names", origin.port());
    let c = client::reqwest(&proxy);
    let aws_secret = crate::support::fresh::pick(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
        40,
    );
    let cases: Vec<(String, String, &str)> = vec![
        (format!("x-{}", hex(aws())), "1".into(), "aws-access-key-id"),
        (
            format!("x-{}", github().to_lowercase()),
            "1".into(),
            "github-pat-classic",
        ),
        (
            "x-aws-secret-access-key".into(),
            aws_secret.clone(),
            "aws-secret-access-key",
        ),
    ];
    for (name, value, pattern) in &cases {
        let r = c
            .get(&url)
            .header(name.as_str(), value.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "header {name}");
        assert_eq!(r.headers()["airlock-error"], "secret_blocked");
        let text = r.text().await.unwrap();
        assert!(text.contains(pattern), "{name}: {text}");
    }
    // A benign header name of hex-looking words still goes through.
    let r = c
        .get(&url)
        .header("x-request-id", "0af7651916cd43dd8448eb211c80319c")
        .header("x-cache-status", "hit")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got.len(), 1, "only the benign request reached the origin");
    origin_never_saw(&origin, &aws_secret);
}

/// An origin that records each request's trailers and answers with
/// trailers of its own (`x-echo: <reply>`, and `x-<hex of an AWS key>: 1`),
/// after a header named for the key too.
fn trailer_origin(
    seen: Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
    reply: String,
) -> origin::Handler {
    Arc::new(move |req, rec| {
        let seen = Arc::clone(&seen);
        let reply = reply.clone();
        Box::pin(async move {
            rec.record_head(&req);
            if let Ok(done) = req.into_body().collect().await
                && let Some(t) = done.trailers()
            {
                seen.lock().unwrap().push(t.clone());
            }
            let named =
                http::HeaderName::from_bytes(format!("x-{}", hex(aws())).as_bytes()).unwrap();
            let mut t = http::HeaderMap::new();
            t.insert("x-echo", reply.parse().unwrap());
            t.insert(named.clone(), "1".parse().unwrap());
            let frames = vec![
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(
                    b"done",
                ))),
                Ok(Frame::trailers(t)),
            ];
            let mut resp =
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            resp.headers_mut().insert(named, "1".parse().unwrap());
            resp.headers_mut().insert("x-plain", "1".parse().unwrap());
            resp
        })
    })
}

/// Trailers are headers sent after the body: a secret in a request
/// trailer's value or name is refused (small body: before the origin sees
/// the request; large body: the stream is reset before the trailers
/// leave); one in a response trailer's value is redacted, and a response
/// header or trailer whose name holds one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_trailers_are_caught_both_ways() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (_ca, origin, proxy) =
        setup(trailer_origin(Arc::clone(&seen), github().to_owned()), &[]).await;
    let target = format!("api.example.test:{}", origin.port());
    let mut send = client::h2_tunnel(&proxy, &target, &[b"h2"]).await;
    let post = |body: Bytes, name: &str, value: &str| {
        let mut t = http::HeaderMap::new();
        t.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let frames = vec![
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(body)),
            Ok(Frame::trailers(t)),
        ];
        http::Request::post(format!("https://{target}/trailers"))
            .header("te", "trailers")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            .unwrap()
    };

    let small = Bytes::from_static(b"hello");
    for (name, value) in [
        ("x-note".to_owned(), format!("key {}", aws())),
        (format!("x-{}", hex(aws())), "1".to_owned()),
    ] {
        let resp = send
            .send_request(post(small.clone(), &name, &value))
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "trailer {name}");
        let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        assert!(text.contains("aws-access-key-id"), "{text}");
        // A name that holds the key is not repeated in the refusal (nor
        // in a log line that prints it).
        assert!(!text.contains(&hex(aws())[..16]), "{text}");
    }
    assert!(
        origin.received().is_empty(),
        "a refused small request never starts"
    );

    // Past the prejudge bound the body streams; its trailers never leave.
    let large = Bytes::from(vec![b'a'; 200 * 1024]);
    let sent = send
        .send_request(post(large, "x-note", &format!("key {}", aws())))
        .await;
    if let Ok(resp) = sent {
        assert_ne!(resp.status(), 200);
    }
    proxy
        .audit_event("trailer block", |e| {
            e["kind"] == "finding"
                && e["decision"] == "block"
                && e["pattern"] == "aws-access-key-id"
        })
        .await;
    for t in seen.lock().unwrap().iter() {
        for (name, v) in t {
            assert!(
                !contains(v.as_bytes(), &aws().as_bytes()[..8])
                    && !name.as_str().contains(&hex(aws())[..16]),
                "a trailer carried the key to the origin"
            );
        }
    }

    // A clean request: its trailer arrives, and the origin's reply trailer
    // (a GitHub token) is redacted.
    let mut send = client::h2_tunnel(&proxy, &target, &[b"h2"]).await;
    let resp = send
        .send_request(post(Bytes::from_static(b"fine"), "x-checksum", "abc"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let leaked = |h: &http::HeaderMap| h.keys().any(|k| k.as_str().contains(&hex(aws())[..16]));
    assert!(!leaked(resp.headers()), "{:?}", resp.headers());
    assert_eq!(resp.headers()["x-plain"], "1");
    let done = resp.into_body().collect().await.unwrap();
    let trailers = done.trailers().cloned().expect("reply trailers");
    assert!(!leaked(&trailers), "{trailers:?}");
    assert_eq!(&done.to_bytes()[..], b"done");
    let echoed = trailers["x-echo"].to_str().unwrap();
    assert!(
        !echoed.contains(github()) && echoed.contains("[REDACTED:github-pat-classic]"),
        "{echoed}"
    );
    assert_eq!(seen.lock().unwrap().last().unwrap()["x-checksum"], "abc");
}

/// The request method is the agent's to write too: an extension method
/// (any token: `AKIA...` is one) is scanned with the URL, and one that
/// holds a secret never reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_as_the_request_method_is_blocked() {
    use tokio::io::AsyncWriteExt;
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let target = format!("api.example.test:{}", origin.port());
    for method in [aws().to_owned(), format!("X{}", hex(aws()).to_uppercase())] {
        let mut tls =
            client::tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
        tls.write_all(
            format!("{method} /m HTTP/1.1\r\nhost: {target}\r\ncontent-length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let r = client::read_response(&mut tls).await;
        assert_eq!(r.status, 403, "method {method}: {}", r.text());
        assert!(r.text().contains("aws-access-key-id"), "{}", r.text());
    }
    // An ordinary extension method still goes through.
    let mut tls =
        client::tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
    tls.write_all(
        format!("PROPFIND /m HTTP/1.1\r\nhost: {target}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(client::read_response(&mut tls).await.status, 200);
    let got = origin.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method.as_str(), "PROPFIND");
    proxy
        .audit_event("the refused method", |e| {
            e["kind"] == "request" && e["reason"] == "secret_blocked" && e["path"] == "/m"
        })
        .await;
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(
        !log.contains(aws()) && !log.contains(&hex(aws()).to_uppercase()[..16]),
        "the audit log holds the method"
    );
}

/// Under a wildcard rule the agent picks the host name, and a name can
/// carry a secret to the origin (its SNI, its `Host`) and to DNS: the
/// host is scanned before anything is resolved or sent, whole and with its
/// labels run together (a label holds 63 bytes, so a long secret comes in
/// pieces), over a CONNECT and in a plain HTTP request alike; the audit
/// log records the name redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_wildcard_host_name_is_blocked() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "*.example.test", "127.0.0.2", echo("api")).await;
    let plain = Origin::plain("127.0.0.5", echo("plain")).await;
    let key = hex(aws());
    let whole = format!("{key}.example.test");
    let split = format!("{}.{}.example.test", &key[..20], &key[20..]);
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .resolve(&whole, "127.0.0.2")
        .resolve(&split, "127.0.0.2")
        .resolve(&format!("{key}.plain.test"), "127.0.0.5")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"*.example.test\"\nports = [{}]",
            origin.port()
        ))
        .rule(&format!(
            "match = \"*.plain.test\"\nports = [{}]",
            plain.port()
        ))
        .start()
        .await;
    let c = client::reqwest(&proxy);
    for name in [&whole, &split] {
        let r = c
            .get(format!("https://{name}:{}/h", origin.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("aws-access-key-id") && text.contains("host name"),
            "{text}"
        );
    }
    assert_eq!(origin.connections(), 0, "the origin never heard the name");
    let r = c
        .get(format!("http://{key}.plain.test:{}/h", plain.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("aws-access-key-id"));
    assert!(plain.received().is_empty());

    let r = c
        .get(format!("https://api.example.test:{}/h", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy
        .audit_event("a refused host", |e| {
            e["reason"] == "secret_blocked"
                && e["host"]
                    .as_str()
                    .is_some_and(|h| h.contains("[REDACTED:aws-access-key-id]"))
        })
        .await;
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(
        !log.contains(&key[..20]) && !log.contains(&key[20..]),
        "the audit log holds a piece of the key"
    );
}

/// Outgoing `log` mode lets a secret in a host name through, as it does a
/// secret anywhere else; the audit log still records the name redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_mode_lets_a_secret_host_through_and_never_writes_it() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "*.example.test", "127.0.0.2", echo("api")).await;
    let key = hex(aws());
    let name = format!("{key}.example.test");
    let proxy = ProxyBuilder::new()
        .resolve(&name, "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(&["outgoing = \"log\""])
        .rule(&format!(
            "match = \"*.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    let r = client::reqwest(&proxy)
        .get(format!("https://{name}:{}/h", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = proxy
        .audit_event("the request", |e| e["kind"] == "request")
        .await;
    assert!(
        ev["host"]
            .as_str()
            .is_some_and(|h| h.contains("[REDACTED:aws-access-key-id]")),
        "{ev}"
    );
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(!log.contains(&key[..16]), "the audit log holds the key");
}

/// `Content-Encoding` in two header fields is one list (`gzip, gzip`): the
/// origin decodes twice, so airlock must not read the first field alone
/// (it decoded once and scanned compressed bytes, and `identity` then
/// `gzip` let it scan nothing). A list it cannot decode whole is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoding_split_across_fields_is_read_whole() {
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/enc", origin.port());
    let c = client::reqwest(&proxy);
    let once = gzip(format!("data {} data", aws()).as_bytes());
    let twice = gzip(&once);
    for (fields, body, status) in [
        (&["gzip", "gzip"][..], twice.clone(), 400),
        (&["identity", "gzip"][..], once.clone(), 403),
        (&["gzip", "identity"][..], once.clone(), 403),
    ] {
        let mut req = c.post(&url).body(body);
        for f in fields {
            req = req.header("content-encoding", *f);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{fields:?}");
        let text = r.text().await.unwrap();
        let why = if status == 400 {
            "stacks 2 codings"
        } else {
            "aws-access-key-id"
        };
        assert!(text.contains(why), "{fields:?}: {text}");
    }
    assert!(origin.received().is_empty(), "{:?}", origin.received());
}

/// An HTTP/1.1 status line's reason phrase is the origin's to write, and
/// an origin that echoes what it got (the injected credential, say) can
/// put it there: airlock answers with the standard phrase instead, never
/// the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_reason_phrase_never_reaches_the_sandbox() {
    use tokio::io::AsyncWriteExt;
    let handler: origin::Handler = Arc::new(|req, rec| {
        Box::pin(async move {
            record(req, &rec).await;
            let mut resp = Response::new(full("ok"));
            let phrase = format!("OK {}", github()).into_bytes();
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::try_from(phrase).unwrap());
            resp
        })
    });
    let (_ca, origin, proxy) =
        crate::support::api_origin_alpn(handler, &[b"http/1.1"], "", |b| b).await;
    let target = format!("api.example.test:{}", origin.port());
    let mut tls =
        client::tls_tunnel(&proxy, &target, "api.example.test", &[b"http/1.1"], true).await;
    tls.write_all(format!("GET /r HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = client::read_response(&mut tls).await;
    assert_eq!(r.status, 200);
    assert!(!r.head.contains(&github()[..12]), "{}", r.head);
    assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
    assert_eq!(origin.received().len(), 1);
}

/// A host name the sandbox wrote is kept out of airlock's own logs as it is
/// out of the audit log: with debug logging on, a refused tunnel (no rule,
/// or a wildcard rule and a name carrying a key) whose client then rejects
/// airlock's leaf logs the name redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_host_name_is_not_written_to_the_debug_log() {
    let ca = TestCa::new("origin ca");
    let builder = ProxyBuilder::new()
        .allow_loopback()
        .trust(&ca)
        .rule("match = \"*.example.test\"");
    let airlock = crate::support::proxy::ChildProxy::start(&builder, &ca, "RUST_LOG=debug").await;
    let key = hex(aws());
    for name in [format!("{key}.evil.test"), format!("{key}.example.test")] {
        let (s, r) = client::connect(airlock.addr, &format!("{name}:443")).await;
        assert_eq!(r.status, 200, "a refused tunnel still opens");
        // A client that trusts nothing: it rejects airlock's leaf.
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from(name.clone()).unwrap(),
                s,
            )
            .await;
        assert!(tls.is_err());
    }
    let dir = airlock.dir.path().to_owned();
    let logged = crate::support::eventually("the debug line", || {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        (log.matches("client refused the refused tunnel's leaf")
            .count()
            >= 2)
            .then_some(log)
    })
    .await;
    assert!(!logged.contains(&key[..16]), "{logged}");
    assert!(logged.contains("[REDACTED:aws-access-key-id]"), "{logged}");
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(!audit.contains(&key[..16]), "{audit}");
}

/// A body compressed without a `Content-Encoding` that says so (`gzip -c
/// key | curl --data-binary @-`, Python's `zlib.compress`) reached the
/// origin with its secret: now a whole outgoing body that starts like a
/// gzip member or a zlib stream is read decompressed, small (judged before
/// anything is sent) or large (streamed), while a benign `.gz` upload goes
/// through byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_compressed_without_saying_so_is_read() {
    let aws = aws();
    let (_ca, origin, proxy) = setup(echo("api"), &[]).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);
    let leaky = format!("config\naws_access_key_id = {aws}\n");
    for (n, body) in [gzip(leaky.as_bytes()), zlib(leaky.as_bytes())]
        .into_iter()
        .enumerate()
    {
        let r = c
            .post(format!("{url}/small{n}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{n}");
        assert_eq!(r.headers()["airlock-error"], "secret_blocked");
        let text = r.text().await.unwrap();
        assert!(text.contains("aws-access-key-id"), "{text}");
    }
    // A gzip header before what does not decompress: refused, not sent.
    let mut corrupt = gzip(leaky.as_bytes());
    corrupt.truncate(12);
    corrupt.extend_from_slice(&[0xff; 64]);
    let r = c
        .post(format!("{url}/corrupt"))
        .body(corrupt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["airlock-error"], "unscannable_body");
    // Larger than `prejudge_bytes` once compressed: streamed, and cut
    // before the compressed bytes that hold the secret.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let noise: String = (0..400_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[(seed % 38) as usize] as char
        })
        .collect();
    let big = gzip(format!("{noise}\nkey {aws}\n{noise}").as_bytes());
    assert!(big.len() > 2 * 64 * 1024);
    let sent = c
        .post(format!("{url}/big"))
        .header("content-type", "application/gzip")
        .body(big.clone())
        .send()
        .await;
    if let Ok(r) = sent {
        assert_eq!(r.status(), 403);
    }
    proxy
        .audit_event("undeclared gzip block", |e| {
            e["kind"] == "finding" && e["path"] == "/upload/big" && e["decision"] == "block"
        })
        .await;
    for r in origin.received() {
        assert!(
            !["/upload/small0", "/upload/small1", "/upload/corrupt"].contains(&r.target.as_str())
        );
        if let Some(b) = &r.body {
            assert!(b.len() < big.len(), "the whole compressed body arrived");
        }
    }
    // A benign .gz upload: the origin gets exactly the bytes sent.
    let benign = gzip(noise.as_bytes());
    let r = c
        .post(format!("{url}/benign"))
        .header("content-type", "application/gzip")
        .body(benign.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    let got = got.iter().find(|r| r.target == "/upload/benign").unwrap();
    assert!(got.body.as_deref() == Some(&benign[..]));
    assert!(!got.headers.contains_key("content-encoding"));
}

/// Compressed data in an outgoing WebSocket message is read as a body's
/// is: gzip carrying a fresh key (as a binary message, and as base64 in a
/// text message) closes the connection naming the pattern; xz, which
/// airlock cannot read, closes it naming `unreadable-compressed`. The
/// origin gets no 8-byte piece of the key or of its compressed forms; a
/// benign gzip message before them arrives byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_data_in_a_websocket_message_is_refused() {
    use crate::no_trace::{assert_no_piece, fresh_aws_key};
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let key = Some([0x31, 0x41, 0x59, 0x26]);
    let secret = fresh_aws_key();
    // Short: the test frames carry at most 125 bytes.
    let creds = format!("key = {secret}\n");
    let gz = gzip(creds.as_bytes());
    let xz = {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import lzma, sys; \
                 sys.stdout.buffer.write(lzma.compress(sys.argv[1].encode(), check=lzma.CHECK_NONE))",
            )
            // Compressible, so that xz writes a compressed chunk rather
            // than the text as it is.
            .arg(format!("{creds}{}", "and so on, ".repeat(6)))
            .output()
            .expect("python3");
        assert!(out.status.success());
        out.stdout
    };
    assert!(!contains(&xz, &secret.as_bytes()[..8]), "the key is hidden");
    assert!(xz.len() <= 125, "{}", xz.len());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
    let benign = gzip(b"nothing to see here: a compressed greeting\n");
    let moves: [(u8, Vec<u8>, &str); 3] = [
        (0x2, gz.clone(), "aws-access-key-id"),
        (
            0x1,
            format!("{{\"file\":\"{b64}\"}}").into_bytes(),
            "aws-access-key-id",
        ),
        (0x2, xz.clone(), "unreadable-compressed"),
    ];
    for (i, (opcode, message, pattern)) in moves.into_iter().enumerate() {
        let WsSession {
            frames, mut tls, ..
        } = ws_session().await;
        if i == 0 {
            // Through and back (the origin echoes it as text) before the
            // next: a message still held when the connection is refused
            // is dropped with it.
            tls.write_all(&ws_frame(true, 0x2, key, &benign))
                .await
                .unwrap();
            assert_eq!(ws_message(&mut tls).await, (0x1, benign.clone()));
        }
        tls.write_all(&ws_frame(true, opcode, key, &message))
            .await
            .unwrap();
        let why = loop {
            let (_, op, payload) = ws_read_in_time(&mut tls).await.expect("a close frame");
            if op == 0x8 {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                break String::from_utf8_lossy(&payload[2..]).into_owned();
            }
        };
        assert!(why.contains(pattern), "move {i}: {why}");
        assert!(!why.contains(&secret[..8]), "{why}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let got = frames.lock().unwrap().clone();
        if i == 0 {
            assert_eq!(got.first(), Some(&benign), "the benign message, as sent");
        }
        let got = got.concat();
        assert_no_piece(&got, &secret, "the origin");
        for form in [&gz, &xz] {
            let text = String::from_utf8_lossy(form).into_owned();
            assert!(
                !contains(&got, &form[..form.len().min(24)]),
                "move {i}: {text:?}"
            );
        }
        assert!(!contains(&got, &b64.as_bytes()[..16]), "move {i}");
    }
}
