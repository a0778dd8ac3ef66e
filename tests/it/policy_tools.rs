//! The policy tools through the binary: `[[test]]` entries run by `check`,
//! `learn` → `propose` → apply → the same command passes, and `replay`'s
//! report and exit status on a widening and a narrowing candidate.

use std::path::Path;
use std::time::Duration;

use airlock::tls::ca::{CaFiles, CertificateAuthority};
use tempfile::TempDir;

use crate::support::ca::TestCa;
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

async fn airlock(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("airlock {args:?} did not finish"))
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two HTTPS origins: `api.example.test` (allowed by `rules/api.toml`) and
/// `new.example.test` (no rule), and a config that includes `rules/*.toml`.
struct Setup {
    _ca: TestCa,
    api: Origin,
    new: Origin,
    dir: TempDir,
}

impl Setup {
    async fn new() -> Self {
        let ca = TestCa::new("origin ca");
        let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
        let new = Origin::https(&ca, "new.example.test", "127.0.0.3", echo("new")).await;
        let builder = ProxyBuilder::new()
            .resolve("api.example.test", "127.0.0.2")
            .resolve("new.example.test", "127.0.0.3")
            .allow_loopback()
            .trust(&ca);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
        let text = format!("include = [\"rules/*.toml\"]\n{}", builder.config_text());
        std::fs::write(dir.path().join("airlock.toml"), text).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("rules/api.toml"),
            format!(
                "[[host]]\nmatch = \"api.example.test\"\nports = [{}]\n",
                api.port()
            ),
        )
        .unwrap();
        CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
        Self {
            _ca: ca,
            api,
            new,
            dir,
        }
    }

    fn url(origin: &Origin, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", origin.port())
    }

    async fn learn(&self, extra: &[&str], command: &[&str]) -> (i32, String, String) {
        let mut args = vec!["learn", "--config", "airlock.toml", "--audit", "learn.log"];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(command);
        airlock(self.dir.path(), &args).await
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
}

fn curl(url: &str) -> Vec<String> {
    // -f: a refusal fails curl whether it comes as the CONNECT's 403 or
    // as a 403 inside the tunnel.
    ["curl", "-fsS", "--max-time", "20", url]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The `+` lines of a unified diff, applied: appended to the file its
/// `+++` header names.
fn apply(dir: &Path, diff: &str) {
    let target = diff
        .lines()
        .find_map(|l| l.strip_prefix("+++ "))
        .expect("a +++ header");
    let added: String = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    let target = dir.join(target);
    let mut text = std::fs::read_to_string(&target).unwrap();
    text.push_str(&added);
    std::fs::write(&target, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_propose_apply_then_the_same_command_passes() {
    let s = Setup::new().await;
    let url = Setup::url(&s.new, "new.example.test", "/v1/items/12345");
    let cmd = curl(&url);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();

    let (code, _out, err) = s.learn(&[], &cmd).await;
    assert_ne!(code, 0, "refused before the rule exists: {err}");
    assert!(err.contains("airlock propose learn.log"), "{err}");
    assert!(s.new.received().is_empty());
    let log = std::fs::read_to_string(s.dir.path().join("learn.log")).unwrap();
    assert!(log.contains("host_not_allowed"), "{log}");

    let (code, diff, err) = airlock(
        s.dir.path(),
        &["propose", "learn.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        diff.contains("+++ ") && diff.contains("rules/api.toml"),
        "{diff}"
    );
    assert!(diff.contains("+match = \"new.example.test\""), "{diff}");
    assert!(
        diff.contains(&format!("+ports = [{}]", s.new.port())),
        "{diff}"
    );
    assert!(diff.contains("+access = \"read\""), "read-only: {diff}");
    assert!(
        diff.contains("+# proposed by `airlock propose`: "),
        "{diff}"
    );
    assert!(diff.contains("+# refused as: host_not_allowed"), "{diff}");
    assert!(
        !diff.contains("api.example.test"),
        "allowed hosts are left out: {diff}"
    );

    apply(s.dir.path(), &diff);
    let (code, out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(
        code, 0,
        "the applied proposal is a valid config: {out}{err}"
    );

    let (code, out, err) = s.learn(&[], &cmd).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from new: GET /v1/items/12345");
    assert_eq!(s.new.received().len(), 1);

    let (code, out, err) = airlock(
        s.dir.path(),
        &["propose", "learn.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("nothing to propose"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_learn_forwards_marks_and_proposes_generalised_paths() {
    let s = Setup::new().await;
    let a = Setup::url(&s.new, "new.example.test", "/v1/items/12345");
    let b = Setup::url(
        &s.new,
        "new.example.test",
        "/v1/items/987/files/requests-2.31.0.tar.gz",
    );
    let c = Setup::url(&s.new, "new.example.test", "/v1/items");
    let script = format!(
        "curl -fsS --max-time 20 {a} && curl -fsS --max-time 20 {b} && curl -fsS --max-time 20 -d x {c}"
    );
    let (code, out, err) = s.learn(&["--permissive"], &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "forwarded: {err}");
    assert!(out.contains("hello from new: POST /v1/items"), "{out}");
    assert_eq!(s.new.received().len(), 3);
    assert!(
        err.contains("WARNING: --permissive forwards every request the rules refuse"),
        "{err}"
    );
    assert!(
        err.contains("learn --permissive: forwarding what the rules refuse"),
        "{err}"
    );
    let log = std::fs::read_to_string(s.dir.path().join("learn.log")).unwrap();
    let marked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"learn\":\"permissive\""))
        .collect();
    // Three CONNECTs and three requests, each with the refusal's reason.
    assert_eq!(marked.len(), 6, "{log}");
    assert!(
        marked
            .iter()
            .all(|l| l.contains("\"reason\":\"host_not_allowed\"")),
        "{log}"
    );

    let (code, diff, err) = airlock(
        s.dir.path(),
        &["propose", "learn.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.contains("+methods = [\"GET\", \"POST\"]"), "{diff}");
    assert!(
        diff.contains(
            "+paths = [\"/v1/items\", \"/v1/items/*\", \"/v1/items/*/files/requests-*.tar.gz\"]"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("host_not_allowed (forwarded by learn --permissive)"),
        "{diff}"
    );

    // Without --permissive the same script is refused again (not learnt yet).
    let (code, _, _) = s.learn(&[], &["sh", "-c", &script]).await;
    assert_ne!(code, 0);
    apply(s.dir.path(), &diff);
    let (code, out, err) = s.learn(&[], &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s.new.received().len(), 6);
}

/// `serve --learn --permissive`: forwarded and marked, and still so after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_learn_permissive_survives_a_reload() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let s = Setup::new().await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--config",
            "airlock.toml",
            "--learn",
            "--permissive",
        ])
        .current_dir(s.dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut head = String::new();
    let proxy_url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            head.push_str(&line);
            head.push('\n');
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
    assert!(
        head.contains("WARNING: --permissive forwards every request the rules refuse"),
        "{head}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ca = s.dir.path().join("ca.pem");
    let get = |path: &'static str| {
        let url = Setup::url(&s.new, "new.example.test", path);
        let proxy_url = proxy_url.clone();
        let ca = ca.clone();
        async move {
            crate::support::client::curl(&[
                "--proxy",
                &proxy_url,
                "--cacert",
                ca.to_str().unwrap(),
                &url,
            ])
            .await
        }
    };
    let (code, out, err) = get("/one").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from new: GET /one");

    // A rule edit reloads the config; permissive stays on.
    let rules = s.dir.path().join("rules/api.toml");
    let mut text = std::fs::read_to_string(&rules).unwrap();
    text.push_str("\n[[host]]\nmatch = \"other.example.test\"\n");
    std::fs::write(&rules, text).unwrap();
    let audit = s.dir.path().join("audit.log");
    crate::support::eventually("a reload", || {
        std::fs::read_to_string(&audit)
            .ok()
            .filter(|a| a.contains("\"kind\":\"reload\",") && a.contains("\"reason\":\"reloaded\""))
    })
    .await;
    let (code, out, err) = get("/two").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from new: GET /two");
    crate::support::eventually("/two marked permissive", || {
        std::fs::read_to_string(&audit)
            .ok()?
            .lines()
            .find(|l| l.contains("\"path\":\"/two\"") && l.contains("\"learn\":\"permissive\""))
            .map(str::to_owned)
    })
    .await;
    child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_narrowing_and_exits_3_on_widening() {
    let s = Setup::new().await;
    let api = Setup::url(&s.api, "api.example.test", "/a/1");
    let new = Setup::url(&s.new, "new.example.test", "/b");
    let script = format!(
        "curl -sS --max-time 20 {api}; curl -sS --max-time 20 -X POST {api}; curl -sS --max-time 20 {new}; true"
    );
    let (code, out, err) = s.learn(&[], &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello from api: GET /a/1"), "{out}");

    // Unchanged rules: nothing changes, exit 0.
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "learn.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": 0 changes"), "{out}");

    // Narrowing: read-only on the api host. POST newly denied; exit 0.
    std::fs::create_dir(s.dir.path().join("narrow")).unwrap();
    s.write(
        "narrow/api.toml",
        &format!(
            "[[host]]\nmatch = \"api.example.test\"\nports = [{}]\naccess = \"read\"\n",
            s.api.port()
        ),
    );
    let narrow = std::fs::read_to_string(s.dir.path().join("airlock.toml"))
        .unwrap()
        .replace("rules/*.toml", "narrow/*.toml");
    s.write("narrow.toml", &narrow);
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "learn.log", "--config", "narrow.toml"],
    )
    .await;
    assert_eq!(code, 0, "narrowing only: {out}{err}");
    assert!(
        out.contains(&format!(
            "newly denied: POST https://api.example.test:{}/a/1: method_not_allowed (was allowed by the rule at rules/api.toml:2)",
            s.api.port()
        )),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("newly allowed")),
        "{out}"
    );

    // Widening: the new host allowed too. Exit 3, naming the rule.
    std::fs::create_dir(s.dir.path().join("wide")).unwrap();
    s.write(
        "wide/api.toml",
        &format!(
            "[[host]]\nmatch = \"api.example.test\"\nports = [{}]\n\n[[host]]\nmatch = \"*.example.test\"\nports = [{}]\n",
            s.api.port(),
            s.new.port()
        ),
    );
    let wide = narrow.replace("narrow/*.toml", "wide/*.toml");
    s.write("wide.toml", &wide);
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "learn.log", "--config", "wide.toml"],
    )
    .await;
    assert_eq!(code, 3, "widening: {out}{err}");
    assert!(
        out.contains(&format!(
            "newly allowed: CONNECT new.example.test:{}: by the rule at wide/api.toml:6 (was host_not_allowed)",
            s.new.port()
        )),
        "{out}"
    );
    assert!(
        out.contains("the candidate widens what is allowed"),
        "{out}"
    );

    // Approval and injection changes on the same host and port.
    std::fs::create_dir(s.dir.path().join("gate")).unwrap();
    s.write(
        "gate/api.toml",
        &format!(
            "[[host]]\nmatch = \"api.example.test\"\nports = [{p}]\naccess = \"read\"\n\
             inject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/api#token\" }}\n\n\
             [[host]]\nmatch = \"api.example.test\"\nports = [{p}]\nmethods = [\"POST\"]\napproval = \"required\"\n",
            p = s.api.port()
        ),
    );
    let gate = narrow.replace("narrow/*.toml", "gate/*.toml");
    s.write("gate.toml", &gate);
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "learn.log", "--config", "gate.toml"],
    )
    .await;
    assert_eq!(code, 0, "nothing newly allowed: {out}{err}");
    let port = s.api.port();
    assert!(
        out.contains(&format!(
            "injection: GET https://api.example.test:{port}/a/1: nothing -> tools/api#token (rule at gate/api.toml:2)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "approval: POST https://api.example.test:{port}/a/1: would be held for approval (rule at gate/api.toml:8)"
        )),
        "{out}"
    );

    // A malformed line: its number, exit 1, no panic.
    let mut log = std::fs::read_to_string(s.dir.path().join("learn.log")).unwrap();
    let lines = log.lines().count();
    log.push_str("{\"ts\": 12\n");
    s.write("bad.log", &log);
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "bad.log", "--config", "wide.toml"],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "bad.log:{}: not an airlock audit event",
            lines + 1
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_rule_file_tests_and_names_each_failure() {
    let s = Setup::new().await;
    s.write(
        "rules/tests.toml",
        "[[test]]\nurl = \"https://api.example.test/x\"\nexpect = \"deny\"\n\n\
         [[test]]\nurl = \"https://other.example.test/\"\nexpect = \"deny\"\n\n\
         [[test]]\nurl = \"https://other.example.test/\"\nmethod = \"post\"\nexpect = \"allow\"\n",
    );
    let (code, out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(code, 1, "{out}{err}");
    // api.example.test is allowed on its own port only: 443 is refused.
    assert!(!err.contains("rules/tests.toml:2:"), "{err}");
    assert!(!err.contains("rules/tests.toml:6:"), "{err}");
    assert!(
        err.contains(
            "rules/tests.toml:10: test POST https://other.example.test/: expected allow, got deny (host_not_allowed)"
        ),
        "{err}"
    );
    assert!(err.contains("1 of 3 policy tests failed"), "{err}");

    s.write(
        "rules/tests.toml",
        &format!(
            "[[test]]\nurl = \"https://api.example.test:{}/x\"\nmethod = \"DELETE\"\nexpect = \"allow\"\n\n\
             [[test]]\nurl = \"https://api.example.test:{}/x\"\nexpect = \"approval\"\n",
            s.api.port(),
            s.api.port()
        ),
    );
    let (code, out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("rules/tests.toml:7: test GET")
            && err.contains("expected approval, got allow by the rule at rules/api.toml:2"),
        "{err}"
    );

    // `inject`: the deciding rule must inject that secret. (A config whose
    // rules inject wants its secrets file present and private.)
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(s.dir.path().join("secrets.local.toml"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"[\"tools/tok\"]\ntoken = \"t0k-value\"\n").unwrap();
    }
    s.write(
        "rules/inject.toml",
        &format!(
            "[[host]]\nmatch = \"tok.example.test\"\n\
             inject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/tok#token\" }}\n\n\
             [[test]]\nurl = \"https://tok.example.test/\"\nexpect = \"allow\"\ninject = \"tools/tok#token\"\n\n\
             [[test]]\nurl = \"https://tok.example.test/\"\nexpect = \"allow\"\ninject = \"tools/other#token\"\n\n\
             [[test]]\nurl = \"https://api.example.test:{}/\"\nexpect = \"allow\"\ninject = \"tools/tok#token\"\n",
            s.api.port()
        ),
    );
    let (code, out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(!err.contains("rules/inject.toml:6:"), "{err}");
    assert!(
        err.contains("rules/inject.toml:11: test GET https://tok.example.test/: expected the secret tools/other#token injected, got tools/tok#token by the rule at rules/inject.toml:2"),
        "{err}"
    );
    assert!(
        err.contains("rules/inject.toml:16: test GET")
            && err.contains("expected the secret tools/tok#token injected, got none"),
        "{err}"
    );
    std::fs::remove_file(s.dir.path().join("rules/inject.toml")).unwrap();

    s.write(
        "rules/tests.toml",
        "[[test]]\nurl = \"ftp://x\"\nexpect = \"allow\"\n\n[[test]]\nurl = \"https://x.test/\"\nexpect = \"maybe\"\n",
    );
    let (code, _out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("rules/tests.toml:2:7: test: `ftp://x`: give an http:// or https:// URL"),
        "{err}"
    );
    assert!(
        err.contains("rules/tests.toml:7:10: test.expect: `maybe` is not valid"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_never_proposes_an_ip_literal_without_saying_so() {
    let s = Setup::new().await;
    s.write(
        "crafted.log",
        "{\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"connect\",\"client\":\"127.0.0.1:1\",\"host\":\"10.0.0.5\",\"port\":443,\"method\":\"CONNECT\",\"decision\":\"deny\",\"reason\":\"host_not_allowed\",\"status\":403,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0}\n\
         {\"ts\":\"2026-01-01T00:00:01Z\",\"kind\":\"connect\",\"client\":\"127.0.0.1:2\",\"host\":\"new.example.test\",\"port\":443,\"method\":\"CONNECT\",\"decision\":\"deny\",\"reason\":\"host_not_allowed\",\"status\":403,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0}\n",
    );
    let (code, diff, err) = airlock(
        s.dir.path(),
        &["propose", "crafted.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        diff.contains("+# NOT PROPOSED: 10.0.0.5 is an IP literal, a private address"),
        "{diff}"
    );
    assert!(
        diff.contains("+# match = \"10.0.0.5\""),
        "commented out: {diff}"
    );
    assert!(!diff.contains("+match = \"10.0.0.5\""), "{diff}");
    // A name [dns] resolve maps to loopback: proposed, with a note.
    assert!(diff.contains("+match = \"new.example.test\""), "{diff}");
    assert!(
        diff.contains(
            "+# note: [dns] resolve maps new.example.test to 127.0.0.3, a loopback address"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("+# only the tunnel (CONNECT) was seen"),
        "{diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_does_not_call_a_placeholder_refusal_newly_allowed() {
    let s = Setup::new().await;
    let port = s.api.port();
    s.write(
        "crafted.log",
        &format!(
            "{{\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"connect\",\"client\":\"127.0.0.1:1\",\"host\":\"api.example.test\",\"port\":{port},\"method\":\"CONNECT\",\"decision\":\"allow\",\"reason\":\"tunnel_intercepted\",\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0}}\n\
             {{\"ts\":\"2026-01-01T00:00:01Z\",\"kind\":\"request\",\"client\":\"127.0.0.1:1\",\"host\":\"api.example.test\",\"port\":{port},\"method\":\"GET\",\"path\":\"/x\",\"decision\":\"deny\",\"reason\":\"placeholder_misuse\",\"status\":403,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0}}\n"
        ),
    );
    let (code, out, err) = airlock(
        s.dir.path(),
        &["replay", "crafted.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 recorded decisions re-judged")
            && out.contains("(1 not re-judged): 0 changes"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_puts_a_sandboxs_rule_in_that_sandboxs_own_file() {
    let s = Setup::new().await;
    let mut config = std::fs::read_to_string(s.dir.path().join("airlock.toml")).unwrap();
    let hash = "0".repeat(64);
    config.push_str(&format!(
        "\n[[sandbox]]\nid = \"agent-a\"\ntoken_sha256 = \"{hash}\"\ninclude = [\"sandbox-a/*.toml\"]\n\n\
         [[sandbox]]\nid = \"agent-b\"\ntoken_sha256 = \"{hash}\"\n"
    ));
    s.write("airlock.toml", &config);
    std::fs::create_dir(s.dir.path().join("sandbox-a")).unwrap();
    s.write(
        "sandbox-a/a.toml",
        "[[host]]\nmatch = \"a-only.example.test\"\n",
    );
    // A [[test]] in a sandbox's own file is judged for that sandbox by default.
    s.write(
        "sandbox-a/tests.toml",
        "[[test]]\nurl = \"https://a-only.example.test/\"\nexpect = \"allow\"\n\n\
         [[test]]\nurl = \"https://a-only.example.test/\"\nsandbox = \"agent-b\"\nexpect = \"deny\"\n",
    );
    let (code, out, err) = airlock(s.dir.path(), &["check", "--config", "airlock.toml"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 policy tests passed"), "{out}");
    let line = |sandbox: &str, host: &str| {
        format!(
            "{{\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"connect\",\"client\":\"127.0.0.1:1\",\"sandbox\":\"{sandbox}\",\"host\":\"{host}\",\"port\":443,\"method\":\"CONNECT\",\"decision\":\"deny\",\"reason\":\"host_not_allowed\",\"status\":403,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0}}\n"
        )
    };
    s.write(
        "crafted.log",
        &[
            line("agent-a", "new-a.example.test"),
            line("agent-b", "new-b.example.test"),
        ]
        .concat(),
    );
    let (code, diff, err) = airlock(
        s.dir.path(),
        &["propose", "crafted.log", "--config", "airlock.toml"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let a = diff
        .find("+++ sandbox-a/a.toml")
        .unwrap_or_else(|| panic!("{diff}"));
    let shared = diff
        .find("+++ rules/api.toml")
        .unwrap_or_else(|| panic!("{diff}"));
    let a_hunk = &diff[a..if shared > a { shared } else { diff.len() }];
    assert!(a_hunk.contains("+match = \"new-a.example.test\""), "{diff}");
    assert!(
        a_hunk.contains("@@ -2,0 +3,"),
        "appended after the file's 2 lines: {diff}"
    );
    let b_hunk = &diff[shared..if a > shared { a } else { diff.len() }];
    assert!(b_hunk.contains("+match = \"new-b.example.test\""), "{diff}");
    assert!(
        b_hunk.contains("+# sandbox agent-b has no rule file of its own: placed here, this rule would apply to every sandbox"),
        "{diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rule_files_carry_tests_that_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = airlock(repo, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let n: usize = out
        .split("; ")
        .find_map(|p| p.strip_suffix(" policy tests passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n >= 20, "{out}");
    for file in std::fs::read_dir(repo.join("rules/allow")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[[test]]"),
            "{} has no [[test]]",
            path.display()
        );
    }
}

/// `--permissive` forwards what the rules refuse, never what the scanner
/// refuses: a key in the body (plainly or base64-encoded) to a host no rule
/// allows is still blocked, and the origin receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_learn_still_blocks_a_secret_in_the_body() {
    let s = Setup::new().await;
    let url = Setup::url(&s.new, "new.example.test", "/v1/upload");
    let key = "AKIAQYLPMN5HFIQR7XYZ";
    let b64 = "dG9rZW49QUtJQVFZTFBNTjVIRklRUjdYWVo="; // "token=AKIAQYLPMN5HFIQR7XYZ"
    for body in [format!("token={key}"), format!("{{\"blob\":\"{b64}\"}}")] {
        let script = format!("curl -fsS --max-time 20 -d '{body}' {url}");
        let (code, out, err) = s.learn(&["--permissive"], &["sh", "-c", &script]).await;
        assert_ne!(code, 0, "a secret got through: {out}{err}");
    }
    let log = std::fs::read_to_string(s.dir.path().join("learn.log")).unwrap();
    let blocked = log
        .lines()
        .filter(|l| l.contains("\"reason\":\"secret_blocked\""))
        .count();
    assert_eq!(blocked, 2, "both refused by the scanner: {log}");
    assert!(
        s.new.received().is_empty(),
        "the origin received {:?}",
        s.new.received()
    );
}
