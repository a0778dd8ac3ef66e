//! The finding model on the request path (issue 11): outgoing is strict
//! (shaped findings block: glued, broken checksum), incoming is precise
//! (documentation examples and broken checksums pass unredacted, a live
//! token is redacted), both are configurable, and the shipped patterns are
//! built in, so a config outside the repo still scans.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::fresh;
use crate::support::origin::{self, Origin, echo, full, record};
use crate::support::proxy::ProxyBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// No request the origin received carries any 8-byte piece of `secret`,
/// in its target, a header or its body.
fn origin_got_no_piece_of(origin: &Origin, secret: &str) {
    let received = origin.received();
    for piece in secret.as_bytes().windows(8) {
        let has = |hay: &[u8]| hay.windows(piece.len()).any(|w| w == piece);
        for r in &received {
            assert!(
                !has(r.target.as_bytes()),
                "a piece of the secret in the URL"
            );
            for (name, v) in &r.headers {
                assert!(!has(v.as_bytes()), "a piece of the secret in header {name}");
            }
            if let Some(b) = &r.body {
                assert!(!has(b), "a piece of the secret reached the origin's body");
            }
        }
    }
}

/// POSTs `body` through the proxy and expects a 403 naming `pattern`.
async fn refused(c: &reqwest::Client, url: &str, body: String, pattern: &str) {
    let r = c.post(url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    let text = r.text().await.unwrap();
    assert!(text.contains(pattern), "names the pattern: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glued_and_broken_checksum_secrets_are_refused_outgoing() {
    // No [scan] section: the built-in patterns, outgoing strict by default.
    let (_ca, origin, proxy) = crate::support::api_origin(echo("api"), "", |b| b).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);

    let aws = fresh::aws_access_key_id();
    let glued_aws = format!("Lorem ipsum dolor sit a{aws}Lorem ipsum dolor sit amet");
    refused(&c, &url, glued_aws, "aws-access-key-id").await;

    let ghp = fresh::github_token();
    let glued_ghp = format!("consectetur adipiscing elit e{ghp}Lorem ipsum");
    refused(&c, &url, glued_ghp, "github-pat-classic").await;

    let broken = fresh::github_token_bad_checksum();
    refused(
        &c,
        &url,
        format!("{{\"token\":\"{broken}\"}}"),
        "github-pat-classic",
    )
    .await;

    for secret in [&aws, &ghp, &broken] {
        origin_got_no_piece_of(&origin, secret);
    }
    // The same bytes with nothing secret-shaped go through.
    let r = c
        .post(&url)
        .body("Lorem ipsum dolor sit amet")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An origin that answers with `body` (and `body` in header `x-doc`).
fn answering(body: String) -> origin::Handler {
    Arc::new(move |req, rec| {
        let body = body.clone();
        Box::pin(async move {
            record(req, &rec).await;
            let mut resp = Response::new(full(body.clone()));
            resp.headers_mut()
                .insert("x-doc", body.replace('\n', " ").parse().unwrap());
            resp
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_redacts_verified_secrets_only() {
    let broken = fresh::github_token_bad_checksum();
    let live = fresh::github_token();
    let doc = format!(
        "Set aws_access_key_id = AKIAIOSFODNN7EXAMPLE and GITHUB_TOKEN=${{GITHUB_TOKEN}}; \
         a typo'd token: {broken}; yours: {live}\n"
    );
    let (_ca, origin, proxy) = crate::support::api_origin(answering(doc.clone()), "", |b| b).await;
    let c = client::reqwest(&proxy);
    let r = c
        .get(format!("https://api.example.test:{}/docs", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let want = doc.replace(&live, "[REDACTED:github-pat-classic]");
    assert_eq!(r.headers()["x-doc"], want.replace('\n', " ").as_str());
    assert_eq!(r.text().await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_sets_each_direction_s_confidence() {
    let broken = fresh::github_token_bad_checksum();
    let doc = format!("docs: AKIAIOSFODNN7EXAMPLE, {broken}\n");
    // Incoming made strict, outgoing made precise.
    let (_ca, origin, proxy) = crate::support::api_origin(answering(doc.clone()), "", |b| {
        b.scan_settings(&[
            "incoming_confidence = \"shaped\"",
            "outgoing_confidence = \"verified\"",
        ])
    })
    .await;
    let url = format!("https://api.example.test:{}/x", origin.port());
    let c = client::reqwest(&proxy);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "docs: [REDACTED:aws-access-key-id], [REDACTED:github-pat-classic]\n"
    );
    // A broken checksum now passes outgoing; a live token still does not.
    let r = c
        .post(&url)
        .body(format!("t={broken}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(origin.received().iter().any(|q| {
        q.body
            .as_ref()
            .is_some_and(|b| b.as_ref() == format!("t={broken}").as_bytes())
    }));
    let live = fresh::github_token();
    refused(&c, &url, format!("t={live}"), "github-pat-classic").await;
    origin_got_no_piece_of(&origin, &live);
}

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `airlock serve` from a directory outside the repo, with a config that
/// names no pattern file: the built-in patterns scan (before, 0 patterns:
/// the POST went through with 200). `check`, `explain` and the startup log
/// say which patterns are active; `airlock scan` works there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_are_built_in_for_a_config_outside_the_repo() {
    let builtin = airlock::scan::PatternSet::builtin().unwrap().len();
    let summary = format!("{builtin} patterns, built in");
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let builder = ProxyBuilder::for_origin(&ca, origin.port());
    let text = builder.config_text();
    assert!(!text.contains("patterns"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(env!("CARGO_MANIFEST_DIR")));
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("airlock.toml"), text).unwrap();
    let (code, _, err) = run(&["ca", "init", "--dir", "."], dir.path());
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&summary), "{out}");
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let (code, out, _) = run(
        &[
            "explain",
            "--config",
            "airlock.toml",
            "--method",
            "POST",
            &url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&summary) && out.contains("outgoing Block (shaped and up)"),
        "{out}"
    );

    let aws = fresh::aws_access_key_id();
    let leaky = dir.path().join("leaky.env");
    std::fs::write(&leaky, format!("AWS_ACCESS_KEY_ID={aws}\n")).unwrap();
    let (code, out, err) = run(&["scan", "leaky.env"], dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("leaky.env:1:19: aws-access-key-id"), "{out}");
    // Precise by default: a documented example and a broken checksum are
    // reported only with --all, marked shaped.
    let broken = fresh::github_token_bad_checksum();
    std::fs::write(
        dir.path().join("docs.md"),
        format!("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nGITHUB_TOKEN={broken}\n"),
    )
    .unwrap();
    let (code, out, err) = run(&["scan", "docs.md"], dir.path());
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (code, out, err) = run(&["scan", "--all", "docs.md"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "docs.md:1:19: aws-access-key-id  AKIA**** (shaped)",
            "docs.md:2:14: github-pat-classic  ghp_**** (shaped)",
        ],
        "{out}"
    );

    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", "airlock.toml"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (proxy_url, log) = tokio::time::timeout(Duration::from_secs(20), async {
        let mut log = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if let Some(i) = line.find("HTTPS_PROXY=") {
                let url = line[i + "HTTPS_PROXY=".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                return (url, log);
            }
        }
        panic!("airlock exited before it was ready: {log}");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(
        log.contains(&summary),
        "the startup log names the patterns: {log}"
    );

    let ca_path = dir.path().join("ca.pem");
    let (code, out, err) = client::curl(&[
        "-sS",
        "--proxy",
        &proxy_url,
        "--cacert",
        ca_path.to_str().unwrap(),
        "--data-binary",
        &format!("aws_key={aws}"),
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("aws-access-key-id"), "{out}");
    origin_got_no_piece_of(&origin, &aws);

    let pid = child.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("drained and exited")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A named pattern file must exist and hold patterns; confidence values
/// are checked. Each error names the config file, line and key.
#[test]
fn pattern_file_and_confidence_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let check = |scan: &str| {
        std::fs::write(
            dir.path().join("airlock.toml"),
            format!("[proxy]\nlisten = \"127.0.0.1:0\"\n\n[scan]\n{scan}\n"),
        )
        .unwrap();
        let (code, out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
        assert_ne!(code, 0, "{out}");
        err
    };
    let err = check("patterns = \"missing.toml\"");
    assert!(
        err.contains("airlock.toml:5:12: scan.patterns: ") && err.contains("missing.toml"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty.toml"), "# nothing yet\n").unwrap();
    let err = check("patterns = \"empty.toml\"");
    assert!(
        err.contains("airlock.toml:5:12: scan.patterns: ") && err.contains("has no [[pattern]]"),
        "{err}"
    );
    let err = check("incoming_confidence = \"sure\"");
    assert!(
        err.contains("airlock.toml:5:23: scan.incoming_confidence: `sure` is not valid"),
        "{err}"
    );
}

/// The audit record's path is judged in the request head's scan when that
/// scan finds nothing at all; a secret a rule lets out in its path (its
/// `scan_skip`, or a broken checksum under `outgoing_confidence =
/// "verified"`) still reaches the origin but is written redacted in the
/// request's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_let_out_in_the_path_is_redacted_in_the_record() {
    let aws = fresh::aws_access_key_id();
    let broken = fresh::github_token_bad_checksum();
    let (_ca, origin, proxy) =
        crate::support::api_origin(echo("api"), "scan_skip = [\"aws-access-key-id\"]", |b| {
            b.scan_settings(&["outgoing_confidence = \"verified\""])
        })
        .await;
    let c = client::reqwest(&proxy);
    let base = format!("https://api.example.test:{}", origin.port());
    for (secret, id) in [(&aws, "aws-access-key-id"), (&broken, "github-pat-classic")] {
        let r = c.get(format!("{base}/keys/{secret}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the rule lets {id} out");
        let want = format!("/keys/[REDACTED:{id}]");
        let ev = proxy
            .audit_event("the request's record", |e| {
                e["kind"] == "request" && e["path"] == want.as_str()
            })
            .await;
        assert_eq!(ev["decision"], "allow");
    }
    let sent: Vec<String> = origin.received().into_iter().map(|q| q.target).collect();
    assert!(sent.iter().any(|t| t.contains(aws.as_str())), "{sent:?}");
    assert!(sent.iter().any(|t| t.contains(broken.as_str())), "{sent:?}");
    // A clean path is written as it is.
    let r = c.get(format!("{base}/keys/none")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    proxy
        .audit_event("a clean path", |e| {
            e["kind"] == "request" && e["path"] == "/keys/none"
        })
        .await;
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(!log.contains(aws.as_str()) && !log.contains(broken.as_str()));
}
