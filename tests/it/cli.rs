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
    let builder = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ));
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

    let (code, _out, err) = client::curl(&[
        "--proxy",
        &proxy_url,
        "--cacert",
        ca_path.to_str().unwrap(),
        "https://denied.example.test/",
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
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
