//! The airlock binary, black-box.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

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

#[test]
fn check_names_file_line_and_key_for_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("airlock.toml"),
        "include = [\"rules/*.toml\"]\n\n[proxy]\nlisten = \"127.0.0.1:3128\"\nlisten_backlog = 5\n",
    )
    .unwrap();
    let (code, _out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("airlock.toml:5:1: unknown field `listen_backlog`"),
        "{err}"
    );
    assert!(err.contains("expected one of"), "says what is valid: {err}");

    std::fs::write(
        dir.path().join("airlock.toml"),
        "include = [\"rules/*.toml\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/api.toml"),
        "[[host]]\nmatch = \"api.example.test\"\n\n[[host]]\nmatch = \"foo.*.test\"\npaths = [\"no-slash\"]\n",
    )
    .unwrap();
    let (code, _out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("rules/api.toml:5:9: host.match: `foo.*.test`"),
        "{err}"
    );
    assert!(
        err.contains("rules/api.toml:6:9: host.paths: `no-slash` must start with `/`"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("rules/api.toml"),
        "[[host]]\nmatch = \"api.example.test\"\nports = [70000]\n",
    )
    .unwrap();
    let (code, _out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("rules/api.toml:3:9: host.ports: 70000 is not a port"),
        "{err}"
    );

    std::fs::write(dir.path().join("rules/api.toml"), "[[host]\nmatch = 1\n").unwrap();
    let (code, _out, err) = run(&["check", "--config", "airlock.toml"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("rules/api.toml:1:"), "{err}");
}

#[test]
fn check_accepts_the_shipped_default_and_explain_uses_it() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = run(&["check"], repo);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: <embedded default>"), "{out}");

    let (code, out, _) = run(
        &["explain", "https://api.github.com/repos/o/r/issues/1"],
        repo,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ALLOW GET") && out.contains("rules/allow/coding-agent.toml:"),
        "{out}"
    );
    let (code, out, _) = run(
        &[
            "explain",
            "--method",
            "DELETE",
            "https://api.github.com/repos/o/r",
        ],
        repo,
    );
    assert_eq!(code, 1);
    assert!(out.contains("DENY (method_not_allowed)"), "{out}");
    let (code, out, _) = run(&["explain", "https://evil.example.test/"], repo);
    assert_eq!(code, 1);
    assert!(
        out.contains("not on the allowlist") && out.contains("rules/allow/coding-agent.toml"),
        "{out}"
    );
}

#[test]
fn ca_init_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["ca", "init", "--dir", "c"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("REQUESTS_CA_BUNDLE")
            && out.contains("NODE_EXTRA_CA_CERTS")
            && out.contains("GIT_SSL_CAINFO"),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("c/ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(dir.path().join("c/ca.pem")).unwrap();
    let (code, _, err) = run(&["ca", "init", "--dir", "c"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join("c/ca.pem")).unwrap(), before);
    let (code, _, _) = run(&["ca", "init", "--dir", "c", "--force"], dir.path());
    assert_eq!(code, 0);
    assert_ne!(std::fs::read(dir.path().join("c/ca.pem")).unwrap(), before);
}

/// `airlock serve` as a process, with curl as the sandbox: one allowed and
/// one denied request, then SIGTERM drains and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_curl_allows_denies_and_shuts_down_cleanly() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let builder = ProxyBuilder::for_origin(&ca, origin.port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("airlock.toml"), builder.config_text()).unwrap();
    let (code, _, err) = run(&["ca", "init", "--dir", "."], dir.path());
    assert_eq!(code, 0, "{err}");

    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", "airlock.toml"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let proxy_url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.find("HTTPS_PROXY=") {
                return line[i + "HTTPS_PROXY=".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
            }
        }
        panic!("airlock exited before it was ready");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let ca_path = dir.path().join("ca.pem");
    let (code, out, err) = client::curl(&[
        "--proxy",
        &proxy_url,
        "--cacert",
        ca_path.to_str().unwrap(),
        &format!("https://api.example.test:{}/hello", origin.port()),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from api: GET /hello");

    // A refused tunnel: curl reads the 403 and its explanation inside.
    let (code, out, err) = client::curl(&[
        "--proxy",
        &proxy_url,
        "--cacert",
        ca_path.to_str().unwrap(),
        "-w",
        "%{http_code}",
        "https://denied.example.test/",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("403"), "{out}");
    assert!(out.contains("not on the allowlist"), "{out}");
    assert_eq!(origin.received().len(), 1);

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
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"decision\":\"deny\"") && audit.contains("denied.example.test"),
        "{audit}"
    );
    assert!(audit.contains("\"path\":\"/hello\""), "{audit}");
}

#[test]
fn scan_reports_findings_with_line_column_and_a_masked_preview() {
    let token = crate::support::fresh::github_token();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leaky.env");
    std::fs::write(&file, format!("# config\nGITHUB_TOKEN={token}\nok=1\n")).unwrap();
    let (code, out, err) = run(&["scan", file.to_str().unwrap()], repo);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("leaky.env:2:14: github-pat-classic"), "{out}");
    assert!(!out.contains(&token[..8]), "the preview is masked: {out}");
    let (code, out, _) = run(&["scan", "--json", file.to_str().unwrap()], repo);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["pattern_id"], "github-pat-classic");
    assert_eq!(v["line"], 2);
    std::fs::write(&file, "nothing to see\n").unwrap();
    let (code, out, _) = run(&["scan", file.to_str().unwrap()], repo);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn explain_names_the_secret_path_but_never_fetches_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("airlock.toml"),
        "[secrets]\nbackend = \"vault\"\nvault.address = \"http://127.0.0.1:9\"\n\n[[host]]\nmatch = \"api.example.test\"\ninject = { header = \"Authorization\", value = \"Bearer {{secret}}\", secret = \"tools/github#token\" }\n",
    )
    .unwrap();
    // Vault at 127.0.0.1:9 is not running: explain must not need it.
    let (code, out, err) = run(
        &[
            "explain",
            "--config",
            "airlock.toml",
            "https://api.example.test/x",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("inject: header authorization from a template, secret tools/github#token (from the vault backend"), "{out}");
    let (code, out, _) = run(
        &[
            "explain",
            "--config",
            "airlock.toml",
            "http://api.example.test/x",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DENY (inject_over_http)"), "{out}");
}

/// `airlock explain` and the proxy judge with the same function: for a
/// sandbox-specific rule, a misplaced placeholder and a credential over
/// plain http, explain's verdict is the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_the_proxy_agree() {
    use sha2::Digest as _;
    let sha = |t: &str| -> String {
        sha2::Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let a = Origin::plain("127.0.0.6", echo("a")).await;
    let b = Origin::plain("127.0.0.7", echo("b")).await;
    let placeholder = "AIRLOCK_PLACEHOLDER_AGREE";
    let proxy = ProxyBuilder::new()
        .resolve("a.example.test", "127.0.0.6")
        .resolve("b.example.test", "127.0.0.7")
        .allow_loopback()
        .secrets(&["backend = \"file\"", "file = \"secrets.toml\""])
        .file("secrets.toml", "[\"tools/t\"]\ntoken = \"agree-secret-0123456789\"\n")
        .file(
            "a.toml",
            &format!(
                "[[host]]\nmatch = \"a.example.test\"\nports = [{}]\nmethods = [\"GET\"]\ndanger_inject_over_http = true\n\
                 inject = {{ header = \"x-api-key\", placeholder = \"{placeholder}\", secret = \"tools/t#token\" }}\n",
                a.port()
            ),
        )
        .file(
            "b.toml",
            &format!(
                "[[host]]\nmatch = \"b.example.test\"\nports = [{}]\n\
                 inject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/t#token\" }}\n",
                b.port()
            ),
        )
        .raw(&format!(
            "[[sandbox]]\nid = \"agent-a\"\ntoken_sha256 = \"{}\"\ninclude = [\"a.toml\", \"b.toml\"]\n\n\
             [[sandbox]]\nid = \"agent-b\"\ntoken_sha256 = \"{}\"\ninclude = [\"b.toml\"]\n",
            sha("token-a"),
            sha("token-b")
        ))
        .start()
        .await;
    let client = |id: &str, token: &str| {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(proxy.url())
                    .unwrap()
                    .basic_auth(id, token),
            )
            .build()
            .unwrap()
    };
    let agents = [
        ("agent-a", client("agent-a", "token-a")),
        ("agent-b", client("agent-b", "token-b")),
    ];
    let a_url = format!("http://a.example.test:{}", a.port());
    let b_url = format!("http://b.example.test:{}", b.port());
    // (sandbox, method, URL, headers, the verdict both must give)
    let cases: Vec<(usize, &str, String, Vec<(&str, &str)>, &str)> = vec![
        (0, "GET", format!("{a_url}/x"), vec![], "ALLOW"),
        (1, "GET", format!("{a_url}/x"), vec![], "host_not_allowed"),
        (
            0,
            "POST",
            format!("{a_url}/x"),
            vec![],
            "method_not_allowed",
        ),
        (
            0,
            "GET",
            format!("{a_url}/x"),
            vec![("x-api-key", placeholder)],
            "ALLOW",
        ),
        (
            0,
            "GET",
            format!("{a_url}/x"),
            vec![("x-other", placeholder)],
            "placeholder_misuse",
        ),
        (
            0,
            "GET",
            format!("{a_url}/x?k={placeholder}"),
            vec![],
            "placeholder_misuse",
        ),
        (0, "GET", format!("{b_url}/x"), vec![], "inject_over_http"),
        (1, "GET", format!("{b_url}/x"), vec![], "inject_over_http"),
    ];
    for (agent, method, url, headers, want) in cases {
        let (sandbox, client) = &agents[agent];
        let mut args = vec![
            "explain",
            "--config",
            "airlock.toml",
            "--sandbox",
            sandbox,
            "--method",
            method,
        ];
        let header_args: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        for h in &header_args {
            args.extend(["--header", h.as_str()]);
        }
        args.push(&url);
        let (code, out, err) = run(&args, proxy.dir.path());
        let explained = match out.strip_prefix("DENY (") {
            Some(rest) => rest.split(')').next().unwrap_or("").to_owned(),
            None if out.starts_with("ALLOW ") => "ALLOW".to_owned(),
            None => panic!("explain {args:?}: {out}{err}"),
        };
        assert_eq!(code, if want == "ALLOW" { 0 } else { 1 }, "{out}{err}");

        let mut req = client.request(method.parse().unwrap(), &url);
        for (n, v) in &headers {
            req = req.header(*n, *v);
        }
        let r = req.send().await.unwrap();
        let proxied = if r.status() == 200 {
            "ALLOW".to_owned()
        } else {
            r.headers()
                .get("airlock-error")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| format!("status {}", r.status()))
        };
        assert_eq!(
            (explained.as_str(), proxied.as_str()),
            (want, want),
            "{sandbox} {method} {url} {headers:?}"
        );
    }
}

fn testdata(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(file)
}

/// `check` refuses what serve would refuse later, naming file:line: each
/// finding from its testdata file, through the binary.
#[test]
fn check_catches_what_would_bite_later() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["ca", "init", "--dir", "certs"], dir.path());
    assert_eq!(code, 0, "{err}");
    for (file, line, says) in [
        (
            "bad_unknown_method.toml",
            3,
            "`GTE` is not a known HTTP method",
        ),
        (
            "bad_public_suffix.toml",
            2,
            "admits every name under the public suffix `co.uk`",
        ),
        (
            "bad_url_match.toml",
            2,
            "match takes a host name, not a URL",
        ),
        ("bad_empty_include.toml", 1, "matches no rule file"),
    ] {
        std::fs::copy(testdata(file), dir.path().join(file)).unwrap();
        let (code, _, err) = run(&["check", "--config", file], dir.path());
        assert_eq!(code, 1, "{file}: {err}");
        assert!(err.contains(&format!("{file}:{line}:")), "{file}: {err}");
        assert!(err.contains(says), "{file}: {err}");
    }

    // The secrets file readable by others: the same refusal serve gives.
    let file = "bad_secrets_mode.toml";
    std::fs::copy(testdata(file), dir.path().join(file)).unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "[\"tools/a\"]\ntoken = \"x\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run(&["check", "--config", file], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{file}:3: secrets.file:")), "{err}");
    assert!(err.contains("is readable by others (mode 644)"), "{err}");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = run(&["check", "--config", file], dir.path());
    assert_eq!(code, 0, "{err}");

    // The CA missing: with the hint serve gives.
    let file = "bad_missing_ca.toml";
    std::fs::copy(testdata(file), dir.path().join(file)).unwrap();
    let (code, _, err) = run(&["check", "--config", file], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{file}:2: tls.ca_cert: CA ")),
        "{err}"
    );
    assert!(err.contains("run `airlock ca init --dir "), "{err}");

    // Warnings print with file:line; the config still passes (its
    // injections need a secrets file, owner-only).
    let local = dir.path().join("secrets.local.toml");
    std::fs::write(&local, "[\"tools/a\"]\ntoken = \"x\"\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (file, line, says) in [
        (
            "warn_shadowed.toml",
            5,
            "warning: this rule can never match",
        ),
        (
            "warn_inject_overlap.toml",
            7,
            "can match the same request with different injections",
        ),
    ] {
        std::fs::copy(testdata(file), dir.path().join(file)).unwrap();
        let (code, _, err) = run(&["check", "--config", file], dir.path());
        assert_eq!(code, 0, "{file}: {err}");
        assert!(
            err.contains(&format!("{file}:{line}: warning: ")) && err.contains(says),
            "{file}: {err}"
        );
    }
}

/// explain's guard verdict is serve's: for the same config, over allowed,
/// denied, reserved-address and loopback cases (with and without
/// `allow_cidrs`), over https and plain http, `airlock explain` and the
/// running proxy give the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_guard_verdict_matches_serve() {
    let ca = TestCa::new("origin ca");
    let tls = Origin::https(&ca, "api.example.test", "127.0.0.3", echo("api")).await;
    let plain = Origin::plain("127.0.0.4", echo("plain")).await;
    let (tp, pp) = (tls.port(), plain.port());
    let build = |open: bool| {
        let mut b = ProxyBuilder::new()
            .resolve("api.example.test", "127.0.0.3")
            .resolve("plain.example.test", "127.0.0.4")
            .resolve("docs.example.test", "198.51.100.7")
            .trust(&ca)
            .rule(&format!(
                "match = \"api.example.test\"\nports = [{tp}]\naccess = \"read\""
            ))
            .rule(&format!("match = \"plain.example.test\"\nports = [{pp}]"))
            .rule("match = \"docs.example.test\"");
        if open {
            b = b.allow_loopback();
        }
        b.start()
    };
    let closed = build(false).await;
    let open = build(true).await;
    let api = format!("https://api.example.test:{tp}/x");
    let api_post = api.clone();
    let plain_url = format!("http://plain.example.test:{pp}/x");
    // (proxy, method, URL, the verdict both must give)
    let cases = [
        (&open, "GET", api.clone(), "ALLOW"),
        (&open, "POST", api_post.clone(), "method_not_allowed"),
        (&open, "GET", plain_url.clone(), "ALLOW"),
        (
            &open,
            "GET",
            "https://denied.example.test/".to_owned(),
            "host_not_allowed",
        ),
        (
            &open,
            "GET",
            "https://docs.example.test/".to_owned(),
            "blocked_address",
        ),
        (&closed, "GET", api.clone(), "blocked_address"),
        // Over CONNECT the guard answers before method and path.
        (&closed, "POST", api_post, "blocked_address"),
        (&closed, "GET", plain_url, "blocked_address"),
        (
            &closed,
            "GET",
            "https://docs.example.test/".to_owned(),
            "blocked_address",
        ),
    ];
    for (proxy, method, url, want) in cases {
        let (code, out, err) = run(
            &[
                "explain",
                "--config",
                "airlock.toml",
                "--method",
                method,
                &url,
            ],
            proxy.dir.path(),
        );
        let explained = match out.strip_prefix("DENY (") {
            Some(rest) => rest.split(')').next().unwrap_or("").to_owned(),
            None if out.starts_with("ALLOW ") => "ALLOW".to_owned(),
            None => panic!("explain {method} {url}: {out}{err}"),
        };
        assert_eq!(code, if want == "ALLOW" { 0 } else { 1 }, "{out}{err}");
        if want == "blocked_address" {
            assert!(out.contains("guard: would be refused: "), "{out}");
        }
        if url.contains("docs.example.test") {
            assert!(
                out.contains("resolves to 198.51.100.7, a documentation address")
                    && out.contains("allow with `allow_cidrs`"),
                "{out}"
            );
        }
        if want == "ALLOW" {
            assert!(out.contains("  guard: resolves to 127.0.0."), "{out}");
            assert!(out.contains("  approval: none\n"), "{out}");
            assert!(out.contains("  rate: "), "{out}");
        }

        let r = client::reqwest(proxy)
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let served = if r.status() == 200 {
            "ALLOW".to_owned()
        } else {
            r.headers()
                .get("airlock-error")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| format!("status {}", r.status()))
        };
        assert_eq!(
            (explained.as_str(), served.as_str()),
            (want, want),
            "{method} {url}"
        );
    }

    // The approval, rate and budget settings an allowed request gets.
    std::fs::write(
        open.dir.path().join("held.toml"),
        "[dns]\nresolve = { \"held.example.test\" = \"8.8.8.8\" }\n\n[[host]]\nmatch = \"held.example.test\"\n\
         approval = \"required\"\nrate = \"10/minute\"\nbudget = \"1MB/hour\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "explain",
            "--config",
            "held.toml",
            "--method",
            "POST",
            "https://held.example.test/x",
        ],
        open.dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "  guard: resolves to 8.8.8.8: allowed\n",
        "  approval: required: held until a person (admin API or `airlock approvals`) decides, at most 90 s\n",
        "  rate: 10 requests per 60 s, per sandbox\n",
        "  budget: 1048576 request-body bytes per 3600 s, per sandbox\n",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
}

/// explain shows a rule's own decider and approval timeout, and falls back
/// to `[approval]` for a rule without them.
#[test]
fn explain_shows_each_rules_own_approval_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("airlock.toml"),
        "[dns]\nresolve = { \"shop.test\" = \"127.0.0.2\" }\nallow_cidrs = [\"127.0.0.2/32\"]\n\n\
         [approval]\ntimeout = \"60s\"\ndecider = \"http://127.0.0.1:9/global\"\n\n\
         [[host]]\nmatch = \"shop.test\"\npaths = [\"/payments/**\"]\napproval = \"required\"\ndecider = \"person\"\napproval_timeout = \"90s\"\n\n\
         [[host]]\nmatch = \"shop.test\"\npaths = [\"/comments/**\"]\napproval = \"required\"\ndecider = \"http://127.0.0.1:9/own\"\napproval_timeout = \"3s\"\n\n\
         [[host]]\nmatch = \"shop.test\"\npaths = [\"/other/**\"]\napproval = \"required\"\n",
    )
    .unwrap();
    let explain = |path: &str| {
        let url = format!("https://shop.test{path}");
        let (code, out, err) = run(&["explain", "--config", "airlock.toml", &url], dir.path());
        assert_eq!(code, 0, "{out}{err}");
        out.lines()
            .find(|l| l.trim_start().starts_with("approval:"))
            .unwrap_or_else(|| panic!("no approval line: {out}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        explain("/payments/1"),
        "approval: required: held until a person (admin API or `airlock approvals`) (the rule's decider) decides, at most 90 s (the rule's approval_timeout)"
    );
    assert_eq!(
        explain("/comments/1"),
        "approval: required: held until the decider http://127.0.0.1:9/own (the rule's own) decides, at most 3 s (the rule's approval_timeout)"
    );
    assert_eq!(
        explain("/other/1"),
        "approval: required: held until the decider http://127.0.0.1:9/global decides, at most 60 s"
    );
}

/// An installed binary run outside a checkout (no `rules/allow/` in the
/// working directory): the embedded default looks for rules in
/// /etc/airlock and keeps its CA in the state directory, never in the
/// working directory.
#[test]
fn outside_a_checkout_the_ca_goes_to_the_state_directory() {
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--", "true"])
        .current_dir(work.path())
        .env("XDG_STATE_HOME", state.path())
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let ca = state.path().join("airlock/ca.pem");
    assert!(ca.is_file(), "{err}");
    assert!(err.contains(&ca.display().to_string()), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(state.path().join("airlock/ca-key.pem")).unwrap();
    assert_eq!(key.permissions().mode() & 0o077, 0, "the CA key is private");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "nothing written to the working directory"
    );
    // Rules come from /etc/airlock (none on a test machine: deny-all), and a
    // refusal names that folder.
    if !Path::new("/etc/airlock/rules/allow").exists() {
        let out = std::process::Command::new(BIN)
            .args(["explain", "https://api.github.com/zen"])
            .current_dir(work.path())
            .env("XDG_STATE_HOME", state.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("DENY") && text.contains("/etc/airlock/rules/allow/*.toml"),
            "{text}"
        );
    }
}
