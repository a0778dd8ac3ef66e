//! The secret barrier against a sandbox that tries to get past it: a
//! refused small request leaves no trace at the origin, encoded bodies are
//! judged on what they decode to, large bodies are cut before the secret
//! whatever the arrival timing, and Range slices cannot reassemble an
//! injected credential.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::compress::{gzip, zlib};
use crate::support::origin::{self, Origin, full};
use crate::support::proxy::TestProxy;

const INJECT: &str = "inject = { header = \"Authorization\", value = \"Bearer {{secret}}\", secret = \"tools/api#token\" }";

/// A value from the OS-seeded hasher: every test run gets fresh secrets.
fn random_u64(salt: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((salt, std::time::Instant::now()))
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|i| {
            let r = random_u64(i as u64);
            alphabet[(r % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// A fresh AWS access key id of the right shape (never a documented one).
pub fn fresh_aws_key() -> String {
    format!(
        "AKIA{}",
        random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    )
}

/// A fresh opaque API token, as a secret store would hold it.
fn fresh_token() -> String {
    format!(
        "tok_{}",
        random_from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            36
        )
    )
}

/// Panics if `hay` holds any 8-byte piece of `secret`.
pub fn assert_no_piece(hay: &[u8], secret: &str, what: &str) {
    for piece in secret.as_bytes().windows(8) {
        assert!(
            !hay.windows(8).any(|w| w == piece),
            "{what} holds the piece {:?} of the secret",
            String::from_utf8_lossy(piece)
        );
    }
}

/// The origin saw no connection, no request head, nothing.
async fn origin_saw_nothing(origin: &Origin) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.connections(), 0, "the origin got a connection");
    assert!(origin.received().is_empty(), "{:?}", origin.received());
}

/// A rule injecting a fresh token from the file backend; `scan` lines as
/// for [`crate::support::proxy::ProxyBuilder::scan`].
async fn injecting(
    handler: origin::Handler,
    token: &str,
    scan: &[&str],
) -> (TestCa, Origin, TestProxy) {
    crate::support::api_origin(handler, INJECT, |b| {
        b.scan(scan)
            .secrets(&["backend = \"file\"", "file = \"local-secrets.toml\""])
            .file(
                "local-secrets.toml",
                &format!("[\"tools/api\"]\ntoken = \"{token}\"\n"),
            )
    })
    .await
}

/// Records each request and appends its body bytes, frame by frame as
/// they arrive, to `got` (what an origin holds even when the body is cut).
fn streaming_origin(got: Arc<Mutex<Vec<u8>>>) -> origin::Handler {
    Arc::new(move |req, rec| {
        let got = Arc::clone(&got);
        Box::pin(async move {
            rec.record_head(&req);
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    got.lock().unwrap().extend_from_slice(d);
                }
            }
            Response::new(full("ok"))
        })
    })
}

/// A [`streaming_origin`] that speaks HTTP/1.1 only: every byte airlock
/// writes on the socket reaches the handler in order, even when the body is
/// then cut (an h2 reset may discard DATA the origin had buffered).
async fn h1_streaming_origin(
    got: Arc<Mutex<Vec<u8>>>,
    scan: &[&str],
) -> (TestCa, Origin, TestProxy) {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https_alpn(
        &ca,
        "api.example.test",
        "127.0.0.2",
        streaming_origin(got),
        &[b"http/1.1"],
    )
    .await;
    let proxy = crate::support::proxy::ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .scan(scan)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ))
        .start()
        .await;
    (ca, origin, proxy)
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        e.write_all(data).unwrap();
    }
    out
}

/// The sandbox's refusal: 403, `secret_blocked`, naming the pattern and
/// not the secret.
async fn refused_naming(r: reqwest::Response, pattern: &str, secret: &str) {
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    let text = r.text().await.unwrap();
    assert!(text.contains(pattern), "{text}");
    assert_no_piece(text.as_bytes(), secret, "the refusal");
}

fn chunked(parts: Vec<Vec<u8>>) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        parts.into_iter().map(|p| Ok(Bytes::from(p))).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_refused_body_leaves_no_trace_at_the_origin() {
    let token = fresh_token();
    let (_ca, origin, proxy) = injecting(origin::echo("api"), &token, &[]).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);

    // With Content-Length.
    let key = fresh_aws_key();
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(format!("{{\"note\":\"hello\",\"key\":\"{key}\"}}"))
        .send()
        .await
        .unwrap();
    refused_naming(r, "aws-access-key-id", &key).await;

    // Chunked, of unknown length, ending within the bound.
    let key = fresh_aws_key();
    let body = format!("user=a&aws_key={key}&x=1").into_bytes();
    let r = c
        .post(&url)
        .body(chunked(body.chunks(7).map(<[u8]>::to_vec).collect()))
        .send()
        .await
        .unwrap();
    refused_naming(r, "aws-access-key-id", &key).await;

    // No head, no injected credential, not even a connection.
    origin_saw_nothing(&origin).await;

    // The same route works: a clean body arrives byte for byte, with the
    // credential.
    let r = c.post(&url).body("clean body").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_deref(), Some(&b"clean body"[..]));
    assert_eq!(got[0].headers["authorization"], format!("Bearer {token}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_request_bodies_are_judged_on_what_they_decode_to() {
    let token = fresh_token();
    let (_ca, origin, proxy) = injecting(origin::echo("api"), &token, &[]).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);

    type Encoder = fn(&[u8]) -> Vec<u8>;
    let codings: [(&str, Encoder); 3] = [("gzip", gzip), ("deflate", zlib), ("br", brotli)];
    for (name, encode) in codings {
        let key = fresh_aws_key();
        let plain = format!("{{\"note\":\"lorem ipsum\",\"token\":\"{key}\",\"n\":1}}");
        let r = c
            .post(&url)
            .header("content-encoding", name)
            .body(encode(plain.as_bytes()))
            .send()
            .await
            .unwrap();
        refused_naming(r, "aws-access-key-id", &key).await;
    }
    // Codings airlock cannot decode, or several stacked: refused, not passed.
    for coding in ["compress", "gzip, br", "gzip, gzip"] {
        let r = c
            .post(&url)
            .header("content-encoding", coding)
            .body(gzip(b"whatever"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{coding}");
        assert_eq!(r.headers()["airlock-error"], "unscannable_body");
        let text = r.text().await.unwrap();
        assert!(text.contains("Content-Encoding"), "{text}");
    }
    // A decompression bomb small enough to be judged whole: refused, by
    // the scan of the body as sent, whose gzip layer stops a member that
    // expands more than 100 times (before the decoded stream reaches its
    // own 10 MiB bound).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 32 * 1024 * 1024]).unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let r = c
        .post(&url)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["airlock-error"], "unscannable_body");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("expands more than 100 times (gzip)"),
        "{text}"
    );
    origin_saw_nothing(&origin).await;

    // A benign gzip body passes byte-identical, still encoded.
    let encoded = gzip(br#"{"items":[1,2,3],"id":"6f1c2a9e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"}"#);
    let r = c
        .post(&url)
        .header("content-encoding", "gzip")
        .body(encoded.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["content-encoding"], "gzip");
    assert_eq!(got[0].body.as_deref(), Some(encoded.as_slice()));
}

/// Printable filler that compresses poorly (about 2:1), so that its gzip
/// is well over the pre-judging bound.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x % 16) as usize]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_cut_before_the_secret() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (_ca, origin, proxy) = h1_streaming_origin(Arc::clone(&got), &[]).await;
    let url = format!("https://api.example.test:{}/big", origin.port());
    let c = client::reqwest(&proxy);

    // Plain: 1 MiB, then the secret, then more, in 16 KiB chunks.
    let key = fresh_aws_key();
    let mut plain = filler(1024 * 1024, random_u64(1));
    plain.extend_from_slice(format!(" key={key} ").as_bytes());
    plain.extend_from_slice(&filler(64 * 1024, 7));
    let r = c
        .post(&url)
        .body(chunked(
            plain.chunks(16 * 1024).map(<[u8]>::to_vec).collect(),
        ))
        .send()
        .await;
    if let Ok(r) = r {
        refused_naming(r, "aws-access-key-id", &key).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let plain_got = std::mem::take(&mut *got.lock().unwrap());
    assert!(
        plain_got.len() > 512 * 1024,
        "the body before the secret streams ({} bytes arrived)",
        plain_got.len()
    );
    assert_no_piece(&plain_got, &key, "the origin");

    // gzip, well over the bound, in 1 KiB chunks: whatever encoded prefix
    // the origin got decodes to no piece of the secret.
    let key = fresh_aws_key();
    let mut plain = filler(1024 * 1024, random_u64(2));
    plain.extend_from_slice(format!(" key={key} ").as_bytes());
    plain.extend_from_slice(&filler(256 * 1024, 9));
    let encoded = gzip(&plain);
    assert!(encoded.len() > 256 * 1024);
    let r = c
        .post(format!("{url}/gz"))
        .header("content-encoding", "gzip")
        .body(chunked(encoded.chunks(1024).map(<[u8]>::to_vec).collect()))
        .send()
        .await;
    if let Ok(r) = r {
        refused_naming(r, "aws-access-key-id", &key).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gz_got = std::mem::take(&mut *got.lock().unwrap());
    assert!(
        !gz_got.is_empty(),
        "the encoded body before the secret streams"
    );
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let _partial = decoder.write_all(&gz_got);
    let _ = decoder.flush();
    let decoded = decoder.get_ref().clone();
    assert!(decoded.len() > 256 * 1024, "{} decoded", decoded.len());
    assert_no_piece(&decoded, &key, "the decoded body the origin got");
    assert_eq!(origin.received().len(), 2);
}

/// One HTTP/1.1 request head over a fresh TLS tunnel, then the body as
/// chunks of `chunk` bytes written `gap` apart; the response, if the
/// connection still carries one.
async fn trickle(
    proxy: &TestProxy,
    port: u16,
    path: &str,
    body: &[u8],
    fast_prefix: usize,
    gap: Duration,
) -> Option<client::RawResponse> {
    use tokio::io::AsyncWriteExt;
    let host = format!("api.example.test:{port}");
    let mut tls = client::tls_tunnel(proxy, &host, "api.example.test", &[b"http/1.1"], true).await;
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let (fast, slow) = body.split_at(fast_prefix);
    for piece in fast.chunks(16 * 1024) {
        let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
        if tls.write_all(&chunk).await.is_err() {
            return None;
        }
    }
    for b in slow {
        let chunk = [b"1\r\n".as_slice(), &[*b], b"\r\n"].concat();
        if tls.write_all(&chunk).await.is_err() || tls.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        client::read_response(&mut tls).await
    });
    read.await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_arriving_one_byte_at_a_time_is_still_cut() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (_ca, origin, proxy) =
        h1_streaming_origin(Arc::clone(&got), &["prejudge_bytes = 4096"]).await;

    // Over the pre-judging bound (set to 4 KiB here): 8 KiB at once, then
    // the secret and what follows one byte at a time, 3 ms apart.
    let key = fresh_aws_key();
    let mut body = filler(8 * 1024, random_u64(3));
    let fast = body.len();
    body.extend_from_slice(format!(" aws={key} and then some").as_bytes());
    let r = trickle(
        &proxy,
        origin.port(),
        "/slow",
        &body,
        fast,
        Duration::from_millis(3),
    )
    .await;
    if let Some(r) = r {
        assert_eq!(r.status, 403, "{}", r.head);
        assert!(r.text().contains("aws-access-key-id"), "{}", r.text());
    }
    proxy
        .audit_event("the bytewise block", |e| {
            e["kind"] == "finding" && e["path"] == "/slow" && e["decision"] == "block"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let streamed = std::mem::take(&mut *got.lock().unwrap());
    assert!(
        streamed.len() >= 4 * 1024,
        "{} bytes arrived",
        streamed.len()
    );
    assert_no_piece(&streamed, &key, "the origin");

    // Within the bound, every byte trickled: judged whole, nothing sent.
    let before = origin.connections();
    let key = fresh_aws_key();
    let body = format!("aws={key}&more=1");
    let r = trickle(
        &proxy,
        origin.port(),
        "/slow-small",
        body.as_bytes(),
        0,
        Duration::from_millis(3),
    )
    .await
    .expect("a small body is answered");
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(r.text().contains("aws-access-key-id"), "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.connections(), before, "a new upstream connection");
    assert_eq!(origin.received().len(), 1, "only the first request's head");
}

/// Echoes the Authorization header it got. `/echo` honours `Range:
/// bytes=a-b` with a 206; `/sliced?o=N` answers 206 with 6 bytes from `N`
/// whatever was asked.
fn range_echo() -> origin::Handler {
    Arc::new(|req, rec| {
        Box::pin(async move {
            let r = origin::record(req, &rec).await;
            let echo = r
                .headers
                .get("authorization")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            let slice = |from: usize, to: usize| {
                let from = from.min(echo.len());
                let to = to.min(echo.len().saturating_sub(1));
                let part = echo.get(from..=to).unwrap_or_default().to_vec();
                Response::builder()
                    .status(206)
                    .header("content-range", format!("bytes {from}-{to}/{}", echo.len()))
                    .body(full(part))
                    .unwrap()
            };
            if let Some(o) = r.target.strip_prefix("/sliced?o=") {
                let o: usize = o.parse().unwrap();
                return slice(o, o + 5);
            }
            let range = r
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
                .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
            match range {
                Some((a, b)) => slice(a, b),
                None => Response::new(full(echo)),
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_slices_never_reassemble_an_injected_credential() {
    let token = fresh_token();
    let (_ca, origin, proxy) = injecting(range_echo(), &token, &[]).await;
    let base = format!("https://api.example.test:{}", origin.port());
    let c = client::reqwest(&proxy);
    let echoed_len = "Bearer ".len() + token.len();

    // Asked for in 6-byte slices (with If-Range too): airlock drops the
    // range, so every answer is the whole echo, scanned and redacted.
    let mut all = Vec::new();
    for from in (0..echoed_len).step_by(6) {
        let r = c
            .get(format!("{base}/echo"))
            .header("range", format!("bytes={from}-{}", from + 5))
            .header("if-range", "\"v1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("[REDACTED:"),
            "{body:?}"
        );
        assert_no_piece(&body, &token, "a slice");
        all.extend_from_slice(&body);
    }
    assert_no_piece(&all, &token, "the slices together");
    for r in origin.received() {
        assert!(r.headers.get("range").is_none(), "{:?}", r.headers);
        assert!(r.headers.get("if-range").is_none(), "{:?}", r.headers);
    }

    // An origin that answers 206 unasked: refused, never passed on.
    for from in (0..echoed_len).step_by(6) {
        let r = c
            .get(format!("{base}/sliced?o={from}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["airlock-error"], "partial_content_refused");
        let text = r.text().await.unwrap();
        assert!(text.contains("206 Partial Content"), "{text}");
        assert_no_piece(text.as_bytes(), &token, "the refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_stalls_is_refused_with_408() {
    use tokio::io::AsyncWriteExt;
    let (_ca, origin, proxy) = crate::support::api_origin(origin::echo("api"), "", |b| {
        b.scan(&[]).proxy_line("header_read_timeout = \"1s\"")
    })
    .await;
    let host = format!("api.example.test:{}", origin.port());
    let mut tls = client::tls_tunnel(&proxy, &host, "api.example.test", &[b"http/1.1"], true).await;
    let head = format!("POST /stall HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(b"ten bytes.").await.unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), client::read_response(&mut tls))
        .await
        .expect("an answer, not a hang");
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(r.head.contains("body_timeout"), "{}", r.head);
    assert!(
        r.text().contains("did not arrive within 1 s"),
        "{}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    origin_saw_nothing(&origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_at_the_end_of_a_large_encoded_body_is_cut() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (_ca, origin, proxy) = h1_streaming_origin(Arc::clone(&got), &[]).await;
    let url = format!("https://api.example.test:{}/end", origin.port());
    let c = client::reqwest(&proxy);
    type Encoder = fn(&[u8]) -> Vec<u8>;
    let codings: [(&str, Encoder); 3] = [("gzip", gzip), ("deflate", zlib), ("br", brotli)];
    for (name, encode) in codings {
        // Well over the bound once encoded, the key in the last bytes: the
        // last encoded bytes must wait for the end.
        let key = fresh_aws_key();
        let mut plain = filler(512 * 1024, random_u64(4));
        plain.extend_from_slice(format!("\nkey={key}\n").as_bytes());
        let encoded = encode(&plain);
        assert!(encoded.len() > 128 * 1024, "{name}: {}", encoded.len());
        // Paced, so that what airlock releases is on the wire before the
        // next chunk comes (a cut connection drops what is still buffered).
        let chunks: Vec<Bytes> = encoded.chunks(4096).map(Bytes::copy_from_slice).collect();
        let paced = futures_util::StreamExt::then(futures_util::stream::iter(chunks), |c| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::io::Error>(c)
        });
        let r = c
            .post(&url)
            .header("content-encoding", name)
            .body(reqwest::Body::wrap_stream(paced))
            .send()
            .await;
        if let Ok(r) = r {
            refused_naming(r, "aws-access-key-id", &key).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let arrived = std::mem::take(&mut *got.lock().unwrap());
        let coding = airlock::scan::ContentCoding::from_header(name.as_bytes()).unwrap();
        let decoded = decode_prefix(coding, &arrived);
        assert!(
            decoded.len() > 128 * 1024,
            "{name}: {} decoded",
            decoded.len()
        );
        assert_no_piece(&decoded, &key, &format!("the {name} body the origin got"));
    }
}

/// What a prefix of an encoded stream decodes to.
fn decode_prefix(coding: airlock::scan::ContentCoding, prefix: &[u8]) -> Vec<u8> {
    use airlock::scan::ContentCoding;
    match coding {
        ContentCoding::Gzip => {
            let mut d = flate2::write::GzDecoder::new(Vec::new());
            let _partial = d.write_all(prefix);
            let _ = d.flush();
            d.get_ref().clone()
        }
        ContentCoding::Brotli => {
            let mut out = Vec::new();
            let mut d = brotli::Decompressor::new(prefix, 4096);
            let _partial = std::io::Read::read_to_end(&mut d, &mut out);
            out
        }
        _ => {
            let mut d = flate2::write::ZlibDecoder::new(Vec::new());
            let _partial = d.write_all(prefix);
            let _ = d.flush();
            d.get_ref().clone()
        }
    }
}

/// Lines of random hex: after each newline the scanner holds nothing back,
/// so an encoded frame is released as soon as the decoded bytes the decoder
/// has handed over are judged.
fn hex_lines(lines: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines * 16);
    for chunk in filler(lines * 15, seed).chunks(15) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out
}

/// The engine under the proxy, every way of cutting the encoded stream into
/// frames over a range: an encoded frame is released only once everything
/// it decodes to is judged. (The decoder keeps the output of its last write
/// until the next one; released on the decoded bytes handed over so far, a
/// frame carrying a secret went out before its own output was scanned in
/// some 4% of these cuttings.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_frame_waits_for_everything_it_decodes_to() {
    use airlock::scan::{ContentCoding, EncodedForward, PatternSet, ScanBody, ScanMode, Scanner};
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
    let scanner = Arc::new(Scanner::new(&PatternSet::load(&rules).unwrap(), &[]).unwrap());
    let key = fresh_aws_key();
    let mut plain = hex_lines(1500, random_u64(5));
    plain.extend_from_slice(format!("{key}\n").as_bytes());
    plain.extend_from_slice(&hex_lines(300, 11));
    type Encoder = fn(&[u8]) -> Vec<u8>;
    let codings: [(ContentCoding, Encoder); 3] = [
        (ContentCoding::Gzip, gzip),
        (ContentCoding::Deflate, zlib),
        (ContentCoding::Brotli, brotli),
    ];
    for (coding, encode) in codings {
        let encoded = encode(&plain);
        for n in (200..2000).step_by(9) {
            let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = encoded
                .chunks(n)
                .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            let mut body = std::pin::pin!(ScanBody::decoding(
                inner,
                Arc::clone(&scanner),
                ScanMode::Block,
                coding,
                EncodedForward::Original,
            ));
            let mut sent = Vec::new();
            let mut blocked = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => sent.extend_from_slice(f.data_ref().unwrap()),
                    Err(_) => blocked = true,
                }
            }
            assert!(blocked, "{coding:?} in {n}-byte frames: not blocked");
            let what = format!("{coding:?}, {n}-byte frames");
            assert_no_piece(&decode_prefix(coding, &sent), &key, &what);
        }
    }
}
