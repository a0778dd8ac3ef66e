//! Two airlock replicas behind one address, as a Kubernetes Service puts
//! them: they share the CA (each mints its own leaves from it) and the
//! decider, and nothing else. A held request lives in the memory of the
//! replica that holds it, so the decider, which every replica asks itself,
//! is the path that works across replicas; a person deciding through the
//! admin API must reach the replica named in the listing (`replica` field
//! and `airlock-replica` header), and another replica answers 404.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

use crate::support::ca::TestCa;
use crate::support::origin::{Handler, Origin, echo, full};
use crate::support::proxy::ProxyBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

struct Replica {
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _child: tokio::process::Child,
}

/// Starts `airlock serve --config NAME.toml` in `dir` and reads its proxy
/// and admin addresses from its log.
async fn start_replica(dir: &std::path::Path, name: &str) -> Replica {
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", &format!("{name}.toml")])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let after = |line: &str, key: &str| {
        line.find(key).map(|i| {
            line[i + key.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
    };
    let (mut proxy, mut admin) = (None, None);
    tokio::time::timeout(Duration::from_secs(20), async {
        while proxy.is_none() || admin.is_none() {
            let Some(line) = lines.next_line().await.unwrap() else {
                panic!("{name} exited before it was ready");
            };
            admin = admin.or_else(|| after(&line, "admin="));
            proxy = proxy.or_else(|| after(&line, "HTTPS_PROXY=http://"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} not ready"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Replica {
        proxy: proxy.unwrap(),
        admin: admin.unwrap(),
        _child: child,
    }
}

/// A round-robin TCP balancer in front of `backends` (a Service's job).
async fn balancer(backends: Vec<std::net::SocketAddr>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = AtomicUsize::new(0);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

/// A decider that allows everything and keeps the held requests it saw.
fn allowing_decider(seen: Arc<Mutex<Vec<serde_json::Value>>>) -> Handler {
    Arc::new(move |req, _rec| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            Response::new(full(r#"{"decision":"allow"}"#))
        })
    })
}

async fn admin_get(admin: std::net::SocketAddr, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_ca_and_the_decider_and_each_lists_only_what_it_holds() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let decider = Origin::plain("127.0.0.3", allowing_decider(Arc::clone(&seen))).await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    // One CA for both replicas (in Kubernetes: the same Secret).
    airlock::tls::ca::CertificateAuthority::init(
        &airlock::tls::ca::CaFiles::in_dir(dir.path()),
        false,
    )
    .unwrap();
    for name in ["replica-a", "replica-b"] {
        let config = ProxyBuilder::new()
            .resolve("api.example.test", "127.0.0.2")
            .allow_loopback()
            .trust(&ca)
            .proxy_line("admin = \"127.0.0.1:0\"")
            .proxy_line(&format!("replica = \"{name}\""))
            .audit_line(&format!("output = \"{name}-audit.log\""))
            .rule(&format!(
                "match = \"api.example.test\"\nports = [{port}]\npaths = [\"/pay\"]\napproval = \"required\""
            ))
            .rule(&format!(
                "match = \"api.example.test\"\nports = [{port}]\npaths = [\"/refund\"]\napproval = \"required\"\ndecider = \"person\""
            ))
            .raw(&format!(
                "[approval]\ntimeout = \"30s\"\ndecider = \"http://{}/decide\"",
                decider.addr
            ))
            .config_text();
        std::fs::write(dir.path().join(format!("{name}.toml")), config).unwrap();
    }
    let a = start_replica(dir.path(), "replica-a").await;
    let b = start_replica(dir.path(), "replica-b").await;
    let service = balancer(vec![a.proxy, b.proxy]).await;
    let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    // A new client (a new connection) per request, so the balancer spreads them.
    let client = || {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{service}")).unwrap())
            .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let url = |path: &str| format!("https://api.example.test:{port}{path}");

    // The decider path: whichever replica holds the request asks the
    // decider itself, so every request is decided.
    for _ in 0..4 {
        let resp = client()
            .post(url("/pay"))
            .body("amount=1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "hello from api: POST /pay");
    }
    let asked: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["replica"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(
        asked.iter().any(|r| r == "replica-a") && asked.iter().any(|r| r == "replica-b"),
        "both replicas held and asked: {asked:?}"
    );
    assert_eq!(origin.received().len(), 4);

    // The person path: the request waits in one replica; its listing says
    // which, and only that replica can decide it.
    let held = tokio::spawn({
        let c = client();
        let u = url("/refund");
        async move { c.post(u).body("order=7").send().await.unwrap() }
    });
    let (holder, other, id) = crate::support::eventually_async("request held", || async {
        for (me, them, name) in [(&a, &b, "replica-a"), (&b, &a, "replica-b")] {
            let resp = admin_get(me.admin, "/approvals").await;
            assert_eq!(resp.headers()["airlock-replica"], name);
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            if let Some(r) = list.first() {
                assert_eq!(r["replica"], name);
                return Some((me.admin, them.admin, r["id"].as_str().unwrap().to_owned()));
            }
        }
        None
    })
    .await;
    let decide = |admin: std::net::SocketAddr| {
        reqwest::Client::new()
            .post(format!("http://{admin}/approvals/{id}"))
            .header("content-type", "application/json")
            .body(r#"{"decision":"approve"}"#)
            .send()
    };
    assert_eq!(decide(other).await.unwrap().status(), 404, "not held there");
    assert_eq!(decide(holder).await.unwrap().status(), 200);
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.received().len(), 5);
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "a person rule never asks the decider"
    );

    // The probes an image without curl runs: `airlock healthcheck URL`.
    let probe = |url: String| {
        std::process::Command::new(BIN)
            .args(["healthcheck", &url])
            .output()
            .unwrap()
    };
    for path in ["/healthz", "/readyz"] {
        let out = probe(format!("http://{}{path}", a.admin));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = probe(format!("http://{closed}/healthz"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("airlock healthcheck"));
    let out = probe(format!("http://{}/nope", a.admin));
    assert_eq!(out.status.code(), Some(1), "a 404 is not healthy");
}
