//! `airlock run`, black-box through the binary: curl as the command, real
//! origins on loopback, and isolation (the default) proven by direct
//! connections that work with `--no-isolate` and fail inside it, files the
//! command can no longer read, and a same-uid sibling that cannot read
//! airlock's memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airlock::tls::ca::{CaFiles, CertificateAuthority};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::api_origin;
use crate::support::ca::TestCa;
use crate::support::origin::{Origin, echo};
use crate::support::proxy::ProxyBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// An HTTPS origin for `api.example.test` on 127.0.0.2, a plain one on
/// 127.0.0.1, and an airlock config (with its CA) that allows only the first.
struct Setup {
    _ca: TestCa,
    api: Origin,
    plain: Origin,
    dir: TempDir,
}

impl Setup {
    async fn new() -> Self {
        let ca = TestCa::new("origin ca");
        let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
        let plain = Origin::plain("127.0.0.1", echo("plain")).await;
        let builder = ProxyBuilder::for_origin(&ca, api.port());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("airlock.toml"), builder.config_text()).unwrap();
        CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
        Self {
            _ca: ca,
            api,
            plain,
            dir,
        }
    }

    fn api_url(&self, path: &str) -> String {
        format!("https://api.example.test:{}{path}", self.api.port())
    }

    /// `airlock run --config airlock.toml [extra...] -- command...`.
    async fn run(&self, extra: &[&str], command: &[&str]) -> (i32, String, String) {
        let mut args = vec!["run", "--config", "airlock.toml"];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(command);
        airlock(self.dir.path(), &args).await
    }
}

/// Runs the binary to completion (60 s at most): (status, stdout, stderr).
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

/// Output of a `check` line written by [`PROBES`]: `name rc=N`.
fn rc_of(out: &str, name: &str) -> i32 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{name} rc=")))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"));
    line[name.len() + 4..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_proxies_curl_and_the_403_is_visible() {
    let s = Setup::new().await;
    let (code, out, err) = s
        .run(
            &[],
            &["curl", "-sS", "--max-time", "20", &s.api_url("/hello")],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from api: GET /hello", "stdout is curl's alone");

    let (code, out, err) = s
        .run(
            &[],
            &[
                "curl",
                "-sS",
                "--max-time",
                "20",
                "-w",
                "%{http_connect}",
                "https://denied.example.test/",
            ],
        )
        .await;
    // A refused tunnel: curl (trusting airlock's CA, as `run` sets up)
    // reads the 403 and its explanation inside it.
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("200"), "the tunnel opened: {out}");
    assert!(out.contains("not on the allowlist"), "{out}");
    assert_eq!(s.api.received().len(), 1);
    // The config's audit output is kept (a file here), with both decisions.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("denied.example.test") && audit.contains("\"path\":\"/hello\""),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sets_proxy_and_trust_variables() {
    let s = Setup::new().await;
    let script = "for v in HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy \
                  SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO \
                  PIP_CERT CARGO_HTTP_CAINFO AWS_CA_BUNDLE DENO_CERT HTTPLIB2_CA_CERTS \
                  GRPC_DEFAULT_SSL_ROOTS_FILE_PATH NPM_CONFIG_CAFILE BUNDLE_SSL_CA_CERT; do \
                  eval \"echo $v=\\${$v}\"; done; \
                  echo NO_PROXY=${NO_PROXY-unset}; echo no_proxy=${no_proxy-unset}; \
                  cat \"$SSL_CERT_FILE\"";
    let (code, out, err) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(["run", "--config", "airlock.toml", "--", "sh", "-c", script])
            .current_dir(s.dir.path())
            .env("NO_PROXY", "api.example.test")
            .env("no_proxy", "*")
            .env_remove("SSL_CERT_FILE")
            .output(),
    )
    .await
    .map(|o| {
        let o = o.unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let var = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing:\n{out}"))
            .to_owned()
    };
    let proxy = var("HTTPS_PROXY");
    assert!(proxy.starts_with("http://127.0.0.1:"), "{proxy}");
    for k in [
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        assert_eq!(var(k), proxy, "{k}");
    }
    assert_eq!(var("NO_PROXY"), "", "the caller's bypass list is cleared");
    assert_eq!(var("no_proxy"), "");
    let bundle = var("SSL_CERT_FILE");
    for k in [
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "CARGO_HTTP_CAINFO",
        "AWS_CA_BUNDLE",
        "DENO_CERT",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "NPM_CONFIG_CAFILE",
        "BUNDLE_SSL_CA_CERT",
    ] {
        assert_eq!(var(k), bundle, "{k}");
    }
    assert_ne!(
        var("NODE_EXTRA_CA_CERTS"),
        bundle,
        "Node's variable adds: CA only"
    );
    // The bundle: airlock's CA first, then the system bundle when there is one.
    let ca = std::fs::read_to_string(s.dir.path().join("ca.pem")).unwrap();
    assert!(out.contains(&ca), "airlock's CA is in the bundle");
    if let Ok(system) = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt") {
        let first_system_cert = system
            .split("-----END CERTIFICATE-----")
            .next()
            .unwrap()
            .lines()
            .last()
            .unwrap();
        assert!(out.contains(first_system_cert), "system roots kept");
    }
    // The run directory is private and removed at exit.
    let dir = Path::new(&bundle).parent().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_exit_status_through() {
    let s = Setup::new().await;
    let (code, _, err) = s.run(&[], &["sh", "-c", "exit 7"]).await;
    assert_eq!(code, 7, "{err}");
    let (code, _, _) = s.run(&[], &["true"]).await;
    assert_eq!(code, 0);
    let (code, _, _) = s.run(&[], &["sh", "-c", "kill -KILL $$"]).await;
    assert_eq!(code, 128 + 9, "died of a signal: 128 + N");
    let (code, _, err) = s.run(&[], &["/nonexistent/tool"]).await;
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot run `/nonexistent/tool`"), "{err}");
    let (code, _, err) = s.run(&["--no-isolate"], &["sh", "-c", "exit 9"]).await;
    assert_eq!(code, 9, "{err}");
    let (code, _, err) = s.run(&["--no-isolate"], &["/nonexistent/tool"]).await;
    assert_eq!(code, 127, "{err}");
    // airlock's own failure (a missing config) is 125, not the command's.
    let (code, _, err) = airlock(
        s.dir.path(),
        &["run", "--config", "nope.toml", "--", "true"],
    )
    .await;
    assert_eq!(code, 125, "{err}");
}

/// Starts `airlock run [extra] -- sh -c SCRIPT`, waits for the script to
/// print `ready`, sends `signal` to airlock, and returns airlock's status.
async fn signal_passes_through(s: &Setup, extra: &[&str], script: &str, signal: &str) -> i32 {
    let mut args = vec!["run", "--config", "airlock.toml"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                return;
            }
        }
        panic!("the command exited before it was ready");
    })
    .await
    .unwrap();
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the command exited after the forwarded signal")
        .unwrap();
    status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_forwards_signals_to_the_command() {
    let s = Setup::new().await;
    let trap = |sig: &str, code: u8| {
        format!("trap 'kill $!; exit {code}' {sig}; echo ready; sleep 30 & wait")
    };
    assert_eq!(
        signal_passes_through(&s, &[], &trap("TERM", 42), "TERM").await,
        42
    );
    assert_eq!(
        signal_passes_through(&s, &[], &trap("INT", 43), "INT").await,
        43
    );
    assert_eq!(
        signal_passes_through(&s, &[], &trap("HUP", 44), "HUP").await,
        44
    );
    for (sig, code) in [("QUIT", 46), ("USR1", 47), ("USR2", 48)] {
        assert_eq!(
            signal_passes_through(&s, &[], &trap(sig, code), sig).await,
            i32::from(code),
            "{sig}"
        );
    }
    assert_eq!(
        signal_passes_through(&s, &["--no-isolate"], &trap("TERM", 45), "TERM").await,
        45
    );
    // Untrapped: the command dies of it, and airlock reports 128 + 15.
    assert_eq!(
        signal_passes_through(&s, &[], "echo ready; exec sleep 30", "TERM").await,
        128 + 15
    );
}

/// Probes, each printing `name rc=N`: a proxied request, then direct
/// connections that bypass the proxy, then the proxied request again.
fn probes(s: &Setup, extra: &str) -> String {
    format!(
        "curl -sS --max-time 10 -o /dev/null {api1}; echo \"proxied rc=$?\"
         curl -sS --max-time 10 -o /dev/null --noproxy '*' http://127.0.0.1:{plain}/; echo \"direct-loopback rc=$?\"
         timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.2/{api_port}'; echo \"raw-tcp rc=$?\"
         {node}
         {extra}
         curl -sS --max-time 10 {api2}; echo \" proxied-again rc=$?\"",
        api1 = s.api_url("/one"),
        api2 = s.api_url("/two"),
        plain = s.plain.port(),
        api_port = s.api.port(),
        node = node_probe(s.plain.port()),
    )
}

/// Node's built-in `fetch` with the proxy variables ignored (Node 20 always
/// ignores them; 24+ without `NODE_USE_ENV_PROXY`): a direct request to the
/// plain origin, printing `node-fetch rc=N` (0 reached, 3 failed, 4 no node).
fn node_probe(plain_port: u16) -> String {
    format!(
        "if command -v node >/dev/null; then env -u NODE_USE_ENV_PROXY node -e \"fetch('http://127.0.0.1:{plain_port}/node').then(() => process.exit(0), e => {{ console.error('node-fetch:', e.cause && e.cause.code); process.exit(3); }})\"; echo \"node-fetch rc=$?\"; else echo \"node-fetch rc=4\"; fi"
    )
}

/// A local IPv4 address that is not loopback, if the machine has a route
/// anywhere (no packet is sent).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The first non-loopback IPv4 nameserver in /etc/resolv.conf.
fn remote_nameserver() -> Option<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_owned())
        .find(|ip| {
            ip.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_leaves_only_the_proxy_reachable() {
    let s = Setup::new().await;
    // A non-loopback origin (outside the namespace, reached by the host's
    // interface address) and the resolver: both must be unreachable inside.
    let lan = match non_loopback_ip() {
        Some(ip) => Some(Origin::plain(&ip.to_string(), echo("lan")).await),
        None => None,
    };
    let mut extra = String::new();
    if let Some(o) = &lan {
        extra.push_str(&format!(
            "curl -sS --max-time 10 -o /dev/null --noproxy '*' http://{}/; echo \"direct-lan rc=$?\"\n",
            o.addr
        ));
    }
    let ns = remote_nameserver();
    if let Some(ns) = &ns {
        // A UDP "connect" sends nothing: it only needs a route.
        extra.push_str(&format!(
            "bash -c 'exec 3<>/dev/udp/{ns}/53'; echo \"resolver-route rc=$?\"\n"
        ));
    }
    let script = probes(&s, &extra);

    // Outside the namespace the same direct connections succeed, so their
    // failure inside is the isolation's doing.
    let (code, out, err) = s.run(&["--no-isolate"], &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rc_of(&out, "proxied"), 0, "{out}\n{err}");
    assert_eq!(rc_of(&out, "direct-loopback"), 0, "{out}\n{err}");
    assert_eq!(rc_of(&out, "raw-tcp"), 0, "{out}\n{err}");
    let node = rc_of(&out, "node-fetch");
    assert!(
        node == 0 || node == 4,
        "node's fetch went direct: {out}\n{err}"
    );
    if lan.is_some() {
        assert_eq!(rc_of(&out, "direct-lan"), 0, "{out}\n{err}");
    }
    if ns.is_some() {
        assert_eq!(rc_of(&out, "resolver-route"), 0, "{out}\n{err}");
    }
    assert!(
        out.contains("hello from api: GET /two proxied-again rc=0"),
        "{out}"
    );
    let plain_before = s.plain.received().len();
    let lan_before = lan.as_ref().map(|o| o.received().len());
    assert_eq!(plain_before, if node == 0 { 2 } else { 1 });

    // The default: isolated.
    let (code, out, err) = s.run(&[], &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        rc_of(&out, "proxied"),
        0,
        "the proxy is bridged in: {out}\n{err}"
    );
    assert_eq!(
        rc_of(&out, "direct-loopback"),
        7,
        "the namespace's own loopback: nothing listens: {out}\n{err}"
    );
    assert!(err.contains("Failed to connect to 127.0.0.1"), "{err}");
    assert_ne!(rc_of(&out, "raw-tcp"), 0, "{out}\n{err}");
    assert!(err.contains("Connection refused"), "{err}");
    if node == 0 {
        assert_eq!(rc_of(&out, "node-fetch"), 3, "{out}\n{err}");
        assert!(
            err.contains("node-fetch: ECONNREFUSED"),
            "fails closed: {err}"
        );
    }
    if lan.is_some() {
        assert_eq!(rc_of(&out, "direct-lan"), 7, "{out}\n{err}");
    }
    if ns.is_some() {
        assert_ne!(rc_of(&out, "resolver-route"), 0, "{out}\n{err}");
        assert!(
            err.contains("Network is unreachable"),
            "no route out: {err}"
        );
    }
    assert!(
        out.contains("hello from api: GET /two proxied-again rc=0"),
        "{out}"
    );
    assert_eq!(
        s.plain.received().len(),
        plain_before,
        "no direct request arrived"
    );
    assert_eq!(lan.as_ref().map(|o| o.received().len()), lan_before);
    let paths: Vec<String> = s.api.received().iter().map(|r| r.target.clone()).collect();
    assert_eq!(paths, ["/one", "/two", "/one", "/two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_namespace_has_only_loopback_and_no_route() {
    let s = Setup::new().await;
    let (code, out, err) = s
        .run(
            &["--isolate"],
            &[
                "sh",
                "-c",
                "cat /proc/net/dev; echo ROUTES; cat /proc/net/route",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let (dev, routes) = out.split_once("ROUTES").unwrap();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{dev}");
    assert_eq!(
        routes.trim().lines().count(),
        1,
        "header only, no routes: {routes}"
    );
}

/// `--proxy ADDR --ca FILE`: a running airlock (in this test process),
/// with and without isolation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uses_a_running_airlock() {
    let (_ca, api, proxy) = api_origin(echo("api"), "", |b| b).await;
    let url = format!("https://api.example.test:{}/x", api.port());
    let ca_path = proxy.ca_pem_path.to_str().unwrap().to_owned();
    let addr = proxy.addr.to_string();
    let cwd = proxy.dir.path().to_path_buf();
    for isolate in [false, true] {
        let mut args = vec!["run", "--proxy", &addr, "--ca", &ca_path];
        if !isolate {
            args.push("--no-isolate");
        }
        args.extend_from_slice(&["--", "curl", "-sS", "--max-time", "20", &url]);
        let (code, out, err) = airlock(&cwd, &args).await;
        assert_eq!(code, 0, "isolate={isolate}: {err}");
        assert_eq!(out, "hello from api: GET /x");
    }
    let (code, _, err) = airlock(
        &cwd,
        &[
            "run",
            "--proxy",
            "https://x:1",
            "--ca",
            &ca_path,
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("plain HTTP"), "{err}");
    let audit = proxy.audit();
    let served = audit
        .iter()
        .filter(|e| e["decision"] == "allow" && e["path"] == "/x")
        .count();
    assert_eq!(served, 2, "{audit:?}");
}

/// Unprivileged: the user-namespace path (identity uid map). Needs root to become `nobody`, and user namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_works_unprivileged_through_a_user_namespace() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    // /proc/self belongs to our effective uid.
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: needs root to run the binary as nobody");
        return;
    }
    let (_ca, api, proxy) = api_origin(echo("api"), "", |b| b).await;
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca_path: PathBuf = shared.path().join("ca.pem");
    std::fs::write(&ca_path, &proxy.ca_pem).unwrap();
    std::fs::set_permissions(&ca_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!("https://api.example.test:{}/u", api.port());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(["run", "--proxy", &proxy.addr.to_string(), "--ca"])
            .arg(&ca_path)
            .args(["--", "sh", "-c"])
            .arg(format!(
                "id -u; curl -sS --max-time 20 {url}; echo; \
                 curl -sS --max-time 5 --noproxy '*' http://127.0.0.2:{}/; echo \"direct rc=$?\"",
                api.port()
            ))
            .current_dir(shared.path())
            .env("TMPDIR", "/tmp")
            .uid(65534)
            .gid(65534)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("65534"), "identity uid map: {stdout}");
    assert_eq!(
        lines.next(),
        Some("hello from api: GET /u"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(rc_of(&stdout, "direct"), 7, "{stdout}\n{stderr}");
}

/// The embedded default in a checkout: the CA is created in certs/, stdout
/// is the command's alone, audit events go to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_the_embedded_default_keeps_stdout_clean() {
    let dir = tempfile::tempdir().unwrap();
    // A checkout's layout (rules/allow/, empty here: deny-all); outside one
    // the CA would go to the state directory (`cli::outside_a_checkout_*`).
    std::fs::create_dir_all(dir.path().join("rules/allow")).unwrap();
    let (code, out, err) = airlock(
        dir.path(),
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo out; curl -sS --max-time 20 -o /dev/null -w '%{http_code} ' https://denied.example.test/; echo \"rc=$?\"",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    // A refused tunnel: curl, trusting airlock's CA, reads the 403 inside.
    assert_eq!(out, "out\n403 rc=0\n", "nothing of airlock's on stdout");
    assert!(dir.path().join("certs/ca.pem").exists());
    assert!(
        err.contains("\"decision\":\"deny\"") && err.contains("denied.example.test"),
        "audit on stderr: {err}"
    );
    assert!(!err.contains(" INFO "), "quiet by default: {err}");
}

/// Where namespaces are denied, `run` refuses (125) with the reason
/// and never runs the command. Built with util-linux in a throwaway user
/// namespace (no global sysctl is touched): `user.max_user_namespaces = 0`
/// there, and CAP_SYS_ADMIN dropped from the bounding set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_refuses_where_namespaces_are_denied() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("unshare") || !have("setpriv") {
        eprintln!("skipped: needs unshare(1) and setpriv(1) from util-linux");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
    let marker = dir.path().join("ran");
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; \
         exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin {BIN} run \
         --proxy 127.0.0.1:9 --ca ca.pem -- touch {}",
        marker.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "sh", "-c", &script])
            .current_dir(dir.path())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(99) {
        eprintln!("skipped: cannot lower max_user_namespaces in a user namespace here: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot create the command's namespaces")
            && err.contains("user.max_user_namespaces")
            && err.contains("never runs unisolated")
            && err.contains("--no-isolate"),
        "{err}"
    );
    assert!(
        !marker.exists(),
        "the command must not run without isolation"
    );
}

/// A fresh random token with a fixed prefix (hex from /dev/urandom).
fn fresh(prefix: &str) -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// SIGTERM, then waits (so `run` removes its run directory).
async fn terminate(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        panic!(
            "does not exit on SIGTERM:\n{}",
            process_tree(child.id().unwrap())
        );
    }
}

/// `pid` and its descendants: command line and signal state, to tell
/// which process a signal did not reach.
fn process_tree(pid: u32) -> String {
    let status = |p: u32| std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
    let field = |s: &str, name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let mut out = String::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let s = status(p);
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let wchan = std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
        out += &format!(
            "{p} [{}] {cmd}\n  State {} SigPnd {} ShdPnd {} SigBlk {} SigIgn {} SigCgt {} wchan {wchan}\n",
            field(&s, "NSpid:"),
            field(&s, "State:"),
            field(&s, "SigPnd:"),
            field(&s, "ShdPnd:"),
            field(&s, "SigBlk:"),
            field(&s, "SigIgn:"),
            field(&s, "SigCgt:"),
        );
        for task in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether this test process runs as root (CI does).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// The command inherits no descriptor of airlock's: only its standard
/// streams (pipes and `/dev/null` here). airlock holds the host's `/proc`
/// open (to follow the isolation init's signal handlers), the CA key and
/// the secrets file are read, and the runtime has sockets and event fds:
/// any of them inherited would let the command read around its `/proc`
/// and hidden files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_no_descriptor_of_airlocks_to_the_command() {
    let s = Setup::new().await;
    let list = "for f in /proc/$$/fd/*; do echo \"$f -> $(readlink \"$f\")\"; done";
    for extra in [&[][..], &["--no-isolate"][..]] {
        let (code, out, err) = s.run(extra, &["sh", "-c", list]).await;
        assert_eq!(code, 0, "{extra:?}: {err}");
        let fds: Vec<&str> = out.lines().collect();
        assert!(fds.len() >= 3, "{extra:?}: {out}");
        for line in fds {
            let target = line.split(" -> ").nth(1).unwrap_or("");
            assert!(
                target.starts_with("pipe:") || target.starts_with("/dev/"),
                "{extra:?}: the command inherited {line}"
            );
        }
    }
}

/// `airlock run` with airlock's credentials in its environment: the
/// command's environment has none of them (`VAULT_*`, `BAO_*`, `AIRLOCK_*`),
/// isolated or not; `--env-clear` keeps only the base variables, airlock's
/// own and what `--env` names; `--env` of a credential variable is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_keeps_airlocks_credentials_out_of_the_commands_env() {
    let s = Setup::new().await;
    let vault = fresh("hvs.");
    let bao = fresh("s.");
    let own = fresh("a");
    let keep = fresh("k");
    let run = |extra: &'static [&'static str]| {
        let mut args = vec!["run", "--config", "airlock.toml"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "env"]);
        tokio::process::Command::new(BIN)
            .args(args)
            .current_dir(s.dir.path())
            .env("VAULT_TOKEN", &vault)
            .env("BAO_TOKEN", &bao)
            .env("VAULT_ADDR", "http://127.0.0.1:8200")
            .env("AIRLOCK_ADMIN_TOKEN", &own)
            .env("KEEP_ME", &keep)
            .env("EDITOR", "vi")
            .env("PATH", std::env::var("PATH").unwrap())
            .output()
    };
    for extra in [&[][..], &["--no-isolate"][..]] {
        let out = run(extra).await.unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {env}");
        for secret in [&vault, &bao, &own] {
            assert!(!env.contains(secret.as_str()), "{extra:?} leaked: {env}");
        }
        for name in ["VAULT_TOKEN=", "BAO_TOKEN=", "VAULT_ADDR=", "AIRLOCK_"] {
            assert!(
                !env.lines().any(|l| l.starts_with(name)),
                "{extra:?} {name}: {env}"
            );
        }
        assert!(env.contains(&format!("KEEP_ME={keep}")), "{env}");
        assert!(env.contains("https_proxy=http://127.0.0.1:"), "{env}");
    }

    let out = run(&["--env-clear", "--env", "KEEP_ME"]).await.unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{env}");
    let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = vec!["PATH", "KEEP_ME"];
    want.extend(airlock::run::PROXY_VARS);
    want.extend(airlock::run::NO_PROXY_VARS);
    want.extend(airlock::run::BUNDLE_VARS.iter().map(|(k, _)| *k));
    want.extend(airlock::run::CA_ONLY_VARS.iter().map(|(k, _)| *k));
    want.extend(airlock::run::OTHER_VARS.iter().map(|(k, _)| *k));
    // HOME, TERM, LANG are kept when airlock has them (this test does not
    // set them, and its own environment may or may not).
    for base in ["HOME", "TERM", "LANG"] {
        if std::env::var_os(base).is_some() {
            want.push(base);
        }
    }
    want.sort_unstable();
    assert_eq!(names, want, "{env}");

    let out = run(&["--env", "VAULT_TOKEN"]).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("--env VAULT_TOKEN: refused") && !err.contains(vault.as_str()),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "the command did not run");
}

/// A config whose every secret-bearing file exists, with fresh values:
/// the CA key, the file backend's secrets file, an admin token file.
async fn setup_with_secret_files() -> (Setup, Vec<(&'static str, String)>) {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new().await;
    let d = s.dir.path();
    let secret = fresh("ghp_");
    let admin = fresh("adm-");
    std::fs::write(
        d.join("secrets.local.toml"),
        format!("[github]\ntoken = \"{secret}\"\n"),
    )
    .unwrap();
    std::fs::write(d.join("admin.token"), &admin).unwrap();
    for f in ["secrets.local.toml", "admin.token"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = std::fs::read_to_string(d.join("airlock.toml")).unwrap();
    let config = config.replacen(
        "[proxy]\n",
        "[proxy]\nadmin = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"\n",
        1,
    );
    std::fs::write(d.join("airlock.toml"), config).unwrap();
    let key = std::fs::read_to_string(d.join("ca-key.pem")).unwrap();
    let key_line = key.lines().nth(1).unwrap().to_owned();
    let files = vec![
        ("ca-key.pem", key_line),
        ("secrets.local.toml", secret),
        ("admin.token", admin),
    ];
    (s, files)
}

/// Isolated (the default), the command cannot read the files airlock reads
/// secrets from (an unreadable empty file is mounted over each), cannot
/// unmount or write them (no capabilities, even as root), and does not see
/// airlock's process; airlock itself reads them (it serves TLS with the CA
/// key), and the files are untouched outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_command_cannot_read_airlocks_secret_files() {
    let (s, files) = setup_with_secret_files().await;
    let mut script = format!(
        "curl -sS --max-time 20 -o /dev/null {}; echo \"proxied rc=$?\"\n",
        s.api_url("/k")
    );
    for (name, _) in &files {
        script.push_str(&format!(
            "cat {name}; echo \"cat-{name} rc=$?\"\n\
             umount {name} 2>/dev/null; echo \"umount-{name} rc=$?\"\n\
             (echo x > {name}) 2>/dev/null; echo \"write-{name} rc=$?\"\n"
        ));
    }
    script.push_str(
        "cat audit.log >/dev/null; echo \"cat-audit rc=$?\"\n\
         (echo forged >> audit.log) 2>/dev/null; echo \"write-audit rc=$?\"\n\
         (sleep 0.1 &); (sleep 0.1 &); sleep 1\n\
         echo \"zombies $(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)\"\n\
         echo \"uid $(id -u)\"\n\
         echo \"pids $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\"\n\
         grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status\n",
    );
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config", "airlock.toml", "--", "sh", "-c", &script])
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let airlock_pid = child.id().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (a, b) = tokio::join!(o.read_to_string(&mut out), e.read_to_string(&mut err));
        a.unwrap();
        b.unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert_eq!(
        rc_of(&out, "proxied"),
        0,
        "airlock reads its CA key: {out}\n{err}"
    );
    for (name, value) in &files {
        assert!(!out.contains(value.as_str()), "{name} leaked: {out}");
        assert_ne!(rc_of(&out, &format!("cat-{name}")), 0, "{out}\n{err}");
        assert_ne!(rc_of(&out, &format!("umount-{name}")), 0, "{out}");
        assert_ne!(rc_of(&out, &format!("write-{name}")), 0, "{out}");
        let outside = std::fs::read_to_string(s.dir.path().join(name)).unwrap();
        assert!(outside.contains(value.as_str()), "{name} changed outside");
    }
    assert!(err.contains("Permission denied"), "{err}");
    // The audit log: neither read nor rewritten, and airlock still writes it.
    assert_ne!(rc_of(&out, "cat-audit"), 0, "{out}");
    assert_ne!(rc_of(&out, "write-audit"), 0, "{out}");
    let audit = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    assert!(!audit.contains("forged"), "{audit}");
    assert!(audit.contains("\"path\":\"/k\""), "{audit}");
    let pids: Vec<u32> = out
        .lines()
        .find_map(|l| l.strip_prefix("pids "))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(!pids.contains(&airlock_pid), "airlock visible: {pids:?}");
    assert!(
        pids.len() < 10 && pids.contains(&1),
        "own PID namespace: {pids:?}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("zombies 0\n"), "PID 1 reaps orphans: {out}");
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    assert!(
        out.lines().any(|l| l == format!("uid {uid}")),
        "the invoker's uid (root stays 0): {out}"
    );
}

/// `--no-isolate`: the command can read the same files, and airlock says
/// so once on stderr, naming each file and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_isolate_warns_which_secret_files_the_command_can_read() {
    let (s, files) = setup_with_secret_files().await;
    let (code, out, err) = s
        .run(&["--no-isolate"], &["cat", "secrets.local.toml"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(files[1].1.as_str()),
        "readable without isolation"
    );
    let warning: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("--no-isolate: the command runs as the same user"))
        .collect();
    assert_eq!(warning.len(), 1, "once: {err}");
    for (name, setting) in [
        ("ca-key.pem", "tls.ca_key"),
        ("secrets.local.toml", "secrets.file"),
        ("admin.token", "proxy.admin_token_file"),
    ] {
        assert!(
            warning[0].contains(&format!("{name} ({setting})")),
            "{name}: {err}"
        );
    }
    assert!(warning[0].contains("run airlock as another user"), "{err}");
    assert!(!err.contains(files[1].1.as_str()), "never the value: {err}");
    let (code, _, err) = s.run(&[], &["true"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("can read"), "isolated: no warning: {err}");
}

/// `program`, as root without any capability (what a non-root user has
/// over its own processes, and what the isolated command has); as itself
/// otherwise.
fn without_capabilities(program: &str) -> tokio::process::Command {
    if !is_root() {
        return tokio::process::Command::new(program);
    }
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args([
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--no-new-privs",
        program,
    ]);
    cmd
}

/// airlock (`run` and `serve`) is non-dumpable: a sibling process of the
/// same uid and the same (no) capabilities cannot read its
/// `/proc/<pid>/environ` or open its `/proc/<pid>/mem`, while it can for
/// an ordinary process started the same way. (Between processes of equal
/// credentials only dumpability decides; a root process with capabilities
/// is out of reach of a capability-less one anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airlock_memory_and_environ_are_closed_to_a_same_uid_sibling() {
    let (s, _files) = setup_with_secret_files().await;
    let sibling = |pid: u32| async move {
        let script = format!(
            "cat /proc/{pid}/environ >/dev/null; echo \"environ rc=$?\"; \
             (exec 3</proc/{pid}/mem) && echo 'mem rc=0' || echo 'mem rc=1'"
        );
        let out = without_capabilities("sh")
            .args(["-c", &script])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let start = |program: &str, args: &[&str]| {
        without_capabilities(program)
            .args(args)
            .current_dir(s.dir.path())
            .env("AIRLOCK_TEST_MARKER", fresh("m"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };

    // Control: the sibling reads an ordinary process of the same credentials.
    let mut plain = start("sleep", &["30"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sibling(plain.id().unwrap()).await;
    assert_eq!(rc_of(&got, "environ"), 0, "control: {got}");
    assert_eq!(rc_of(&got, "mem"), 0, "control: {got}");
    plain.kill().await.unwrap();

    for args in [
        &[
            "run",
            "--config",
            "airlock.toml",
            "--no-isolate",
            "--",
            "sleep",
            "30",
        ][..],
        &["serve", "--config", "airlock.toml"][..],
    ] {
        let mut child = start(BIN, args);
        let pid = child.id().unwrap();
        // Listening: the config and its secret files have been read.
        for _ in 0..200 {
            if crate::support::listening_port(pid).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            crate::support::listening_port(pid).is_some(),
            "{args:?} never listened"
        );
        let got = sibling(pid).await;
        assert_ne!(rc_of(&got, "environ"), 0, "{args:?}: {got}");
        assert_ne!(rc_of(&got, "mem"), 0, "{args:?}: {got}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} still running"
        );
        terminate(&mut child).await;
    }
}

/// `run --config F` binds its own admin port (printed on stderr) instead of
/// F's, so it runs beside a `serve` of the same config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_beside_serve_of_the_same_config_has_its_own_admin_port() {
    use tokio::io::AsyncWriteExt;
    let s = Setup::new().await;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = s.dir.path();
    let config = std::fs::read_to_string(d.join("airlock.toml")).unwrap();
    let config = config.replacen(
        "[proxy]\n",
        &format!("[proxy]\nadmin = \"127.0.0.1:{admin_port}\"\n"),
        1,
    );
    std::fs::write(d.join("airlock.toml"), config).unwrap();
    let healthz = |addr: String| async move {
        let mut c = tokio::net::TcpStream::connect(&addr).await.ok()?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        Some(crate::support::client::read_response(&mut c).await.status)
    };
    let mut serve = tokio::process::Command::new(BIN)
        .args(["serve", "--config", "airlock.toml"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let serve_admin = format!("127.0.0.1:{admin_port}");
    let mut up = false;
    for _ in 0..200 {
        if healthz(serve_admin.clone()).await == Some(200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "serve's admin API never answered");

    let mut run = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            "airlock.toml",
            "--",
            "sh",
            "-c",
            "echo ready; sleep 30",
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    let run_admin = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("airlock run: admin API on http://") {
                return addr.to_owned();
            }
        }
        panic!("run printed no admin address (exited?)");
    })
    .await
    .unwrap();
    assert_ne!(run_admin, serve_admin);
    assert_eq!(healthz(run_admin).await, Some(200));
    assert_eq!(healthz(serve_admin).await, Some(200), "serve still serves");
    assert!(run.try_wait().unwrap().is_none(), "run is running");
    terminate(&mut run).await;
    terminate(&mut serve).await;
}

/// The command may make a user namespace of its own (capabilities there,
/// none over airlock's): the mounts it inherits are locked together, so it
/// can neither unmount the hiding file nor bind the directory without it;
/// a recursive bind carries the hiding along. (python3 with ctypes calls
/// unshare/mount/umount2 in one process, as an attacker would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hiding_survives_a_user_namespace_made_by_the_command() {
    let (s, files) = setup_with_secret_files().await;
    let dir = s.dir.path().display().to_string();
    let script = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def res(r): return "ok" if r == 0 else os.strerror(ctypes.get_errno())
print("unshare", res(libc.unshare(0x10000000 | 0x00020000)))  # NEWUSER | NEWNS
print("private", res(libc.mount(b"none", b"/", None, (1 << 18) | 16384, None)))
print("umount", res(libc.umount2(b"{dir}/secrets.local.toml", 2)))
mnt = b"{dir}/mnt"
print("bind", res(libc.mount(b"{dir}", mnt, None, 4096, None)))
print("rbind", res(libc.mount(b"{dir}", mnt, None, 4096 | 16384, None)))
for path in ["{dir}/mnt/secrets.local.toml", "{dir}/secrets.local.toml"]:
    try:
        print("read", open(path).read())
    except OSError as e:
        print("read", e.strerror)
"#
    );
    std::fs::create_dir(s.dir.path().join("mnt")).unwrap();
    std::fs::write(s.dir.path().join("escape.py"), script).unwrap();
    let (code, out, err) = s.run(&[], &["python3", "escape.py"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("unshare ok\nprivate ok\n"),
        "the attempt is real: {out}\n{err}"
    );
    assert!(out.contains("umount Invalid argument"), "{out}");
    assert!(out.contains("bind Invalid argument"), "{out}");
    assert!(out.contains("rbind ok"), "{out}");
    assert_eq!(out.matches("read Permission denied").count(), 2, "{out}");
    assert!(!out.contains(files[1].1.as_str()), "{out}");
}

/// With the Vault backend (a real OpenBao): airlock injects the secret it
/// reads with the token from `secrets.vault.token_file`, while the isolated
/// command, started with `VAULT_TOKEN`/`BAO_TOKEN` set in airlock's
/// environment, has neither variable and cannot read the token file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_command_cannot_reach_the_vault_token_airlock_uses() {
    use crate::support::bao::Bao;
    let bao = Bao::start().await;
    let secret = fresh("ghp_");
    bao.put_secret("tools/github", &[("token", &secret)]).await;
    let token = bao.create_token(3600, true).await;
    let ca = TestCa::new("origin ca");
    let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let builder = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .secrets(&[
            "backend = \"vault\"",
            &format!("vault.address = \"{}\"", bao.address()),
            "vault.token_file = \"vault-token\"",
        ])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\ninject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/github#token\" }}",
            api.port()
        ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("airlock.toml"), builder.config_text()).unwrap();
    std::fs::write(dir.path().join("vault-token"), &token).unwrap();
    CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
    let script = format!(
        "cat vault-token; echo \"cat rc=$?\"; env | grep -E '^(VAULT|BAO)_' ; \
         curl -sS --max-time 20 https://api.example.test:{}/repos; echo",
        api.port()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(["run", "--config", "airlock.toml", "--", "sh", "-c", &script])
            .current_dir(dir.path())
            .env("VAULT_TOKEN", &token)
            .env("BAO_TOKEN", &token)
            .env("VAULT_ADDR", bao.address())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_ne!(rc_of(&stdout, "cat"), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("vault-token: Permission denied"),
        "{stderr}"
    );
    assert!(!stdout.contains(token.as_str()), "token leaked: {stdout}");
    assert!(
        !stdout.contains("VAULT_") && !stdout.contains("BAO_"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hello from api: GET /repos"),
        "{stdout}\n{stderr}"
    );
    let got = api.received();
    assert_eq!(got.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {secret}").as_str(),
        "airlock read the token file and injected the secret"
    );
}

/// A secret file replaced by rename while the command runs (a rotated
/// token, an editor's save) is a new directory entry, which the kernel
/// does not cover with the old mount: airlock hides it again at once and
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_file_replaced_while_the_command_runs_is_hidden_again() {
    use std::os::unix::fs::PermissionsExt;
    let (s, files) = setup_with_secret_files().await;
    let script = "cat secrets.local.toml; echo \"before rc=$?\"; echo ready; \
                  read line; cat secrets.local.toml; echo \"after rc=$?\"";
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config", "airlock.toml", "--", "sh", "-c", script])
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
            if line == "ready" {
                return;
            }
        }
        panic!("the command exited before it was ready: {out}");
    })
    .await
    .unwrap();
    let rotated = fresh("ghp_");
    let new = s.dir.path().join("new.toml");
    std::fs::write(&new, format!("[github]\ntoken = \"{rotated}\"\n")).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&new, s.dir.path().join("secrets.local.toml")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);
    while let Some(line) = lines.next_line().await.unwrap() {
        out.push_str(&line);
        out.push('\n');
    }
    let output = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{out}\n{err}");
    assert_ne!(rc_of(&out, "before"), 0, "{out}");
    assert_ne!(rc_of(&out, "after"), 0, "hidden again: {out}\n{err}");
    for secret in [files[1].1.as_str(), rotated.as_str()] {
        assert!(!out.contains(secret), "{out}");
    }
    assert!(
        err.contains("secrets.local.toml was replaced while the command ran; hidden again"),
        "{err}"
    );
}

/// Every process under `pid` (children of all its threads, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// If airlock itself is killed (SIGKILL: no cleanup), the isolated command
/// does not live on cut off from the network: the helper and the init die
/// with their parent, and with PID 1 the whole namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_command_dies_with_airlock() {
    let s = Setup::new().await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            "airlock.toml",
            "--",
            "sh",
            "-c",
            "sleep 60 & echo ready; wait",
        ])
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                return;
            }
        }
        panic!("the command exited before it was ready");
    })
    .await
    .unwrap();
    let below = descendants(pid);
    // helper, init, sh, sleep
    assert!(below.len() >= 4, "{below:?}");
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let alive = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
            st.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    };
    for _ in 0..100 {
        if !below.iter().any(alive) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<&u32> = below.iter().filter(|p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "still running after airlock died: {left:?}"
    );
}
