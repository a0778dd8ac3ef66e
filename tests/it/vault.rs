//! The Vault / OpenBao secret source against a real `bao server -dev`:
//! token and AppRole login, background renewal, fail-closed outage with
//! automatic recovery, not-found and denied errors, and single-flight
//! reads through the cache.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::credentials::{
    CachedSource, SecretError, SecretRef, SecretSource, VaultAuth, VaultSettings, VaultSource,
};

use crate::support::bao::Bao;

fn r(s: &str) -> SecretRef {
    s.parse().unwrap()
}

fn env_token(token: &str) -> HashMap<String, String> {
    HashMap::from([("VAULT_TOKEN".to_owned(), token.to_owned())])
}

fn token_settings(bao: &Bao) -> VaultSettings {
    let mut s = VaultSettings::new(bao.address(), VaultAuth::Token { token_file: None });
    s.timeout = Duration::from_secs(2);
    s
}

fn write_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{text}").unwrap();
    path
}

async fn read(src: &VaultSource, s: &str) -> Result<Vec<u8>, SecretError> {
    src.fetch(&r(s))
        .await
        .map(|f| f.value.expose_secret().to_vec())
}

#[tokio::test]
async fn token_auth_reads_a_kv2_secret() {
    let bao = Bao::start().await;
    bao.put_secret(
        "tools/github",
        &[("token", "ghp_vault_value"), ("user", "bot")],
    )
    .await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(bao.root_token()))
        .await
        .unwrap();
    let got = src.fetch(&r("tools/github#token")).await.unwrap();
    assert_eq!(got.value.expose_secret(), b"ghp_vault_value");
    assert_eq!(got.lease, None, "KV v2 has no lease");
    assert_eq!(read(&src, "tools/github#user").await.unwrap(), b"bot");
    src.health().await.unwrap();
    let described = src.describe();
    assert!(
        described.contains(&bao.address()) && described.contains("token"),
        "{described}"
    );
    assert!(
        !described.contains(bao.root_token()) && !format!("{src:?}").contains(bao.root_token())
    );
}

#[tokio::test]
async fn token_from_token_file() {
    let bao = Bao::start().await;
    bao.put_secret("tools/a", &[("k", "v")]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "token", &bao.create_token(600, true).await);
    let mut settings = token_settings(&bao);
    settings.auth = VaultAuth::Token {
        token_file: Some(file),
    };
    // The file wins over the environment.
    let src = VaultSource::connect(settings, &env_token("not-a-token"))
        .await
        .unwrap();
    assert_eq!(read(&src, "tools/a#k").await.unwrap(), b"v");
}

#[tokio::test]
async fn approle_logs_in_reads_and_logs_in_again_past_max_ttl() {
    let bao = Bao::start().await;
    bao.put_secret("tools/slack", &[("token", "xoxb-approle")])
        .await;
    // Tokens live 3 s and at most 6 s: over 10 s the source must renew
    // and then log in again.
    let (role_id, secret_id) = bao.enable_approle(3, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: write_file(dir.path(), "role_id", &role_id),
        secret_id_file: write_file(dir.path(), "secret_id", &secret_id),
    };
    let mut settings = VaultSettings::new(bao.address(), auth);
    settings.timeout = Duration::from_secs(2);
    let src = VaultSource::connect(settings, &HashMap::new())
        .await
        .unwrap();
    assert!(src.describe().contains("approle"));
    assert_eq!(
        read(&src, "tools/slack#token").await.unwrap(),
        b"xoxb-approle"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        read(&src, "tools/slack#token").await.unwrap(),
        b"xoxb-approle"
    );
    src.health().await.unwrap();
}

#[tokio::test]
async fn bad_approle_credentials_are_refused_at_connect() {
    let bao = Bao::start().await;
    let (role_id, _) = bao.enable_approle(60, 600).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: write_file(dir.path(), "role_id", &role_id),
        secret_id_file: write_file(dir.path(), "secret_id", "wrong-secret-id"),
    };
    let settings = VaultSettings::new(bao.address(), auth);
    let err = match VaultSource::connect(settings, &HashMap::new()).await {
        Ok(src) => panic!("connected anyway; health: {:?}", src.health().await),
        Err(e) => e,
    };
    assert_eq!(err.code(), "secret_denied", "{err}");
    let msg = err.to_string();
    assert!(
        !msg.contains("wrong-secret-id") && !msg.contains(&role_id),
        "{msg}"
    );
    assert!(msg.contains("approle login"), "{msg}");
}

#[tokio::test]
async fn short_ttl_renewable_token_is_renewed_in_the_background() {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", "ghp_renewed")])
        .await;
    let token = bao.create_token(4, true).await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(&token))
        .await
        .unwrap();
    // Sample the token's TTL as Vault sees it for 10 s: each lookup panics
    // if the token has expired, and the TTL must keep being pushed back up.
    let mut late = Vec::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ttl = bao.token_ttl(&token).await;
        if i >= 12 {
            late.push(ttl);
        }
    }
    // Without renewal the token would have expired 6 s ago.
    assert_eq!(
        read(&src, "tools/github#token").await.unwrap(),
        b"ghp_renewed"
    );
    assert!(
        late.iter().any(|&t| t >= 2),
        "TTLs in the last 4 s: {late:?}"
    );
    src.health().await.unwrap();
}

#[tokio::test]
async fn missing_path_or_key_is_not_found_naming_the_ref() {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", "ghp_secret_value")])
        .await;
    bao.put_json("tools/odd", serde_json::json!({ "n": 42 }))
        .await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(bao.root_token()))
        .await
        .unwrap();

    let err = read(&src, "tools/nope#token").await.unwrap_err();
    assert_eq!(err.code(), "secret_not_found");
    assert!(err.to_string().contains("tools/nope#token"), "{err}");

    let err = read(&src, "tools/github#nokey").await.unwrap_err();
    assert_eq!(err.code(), "secret_not_found");
    let msg = err.to_string();
    assert!(
        msg.contains("tools/github#nokey") && msg.contains("keys: token"),
        "{msg}"
    );
    assert!(!msg.contains("ghp_secret_value"), "{msg}");

    let err = read(&src, "tools/odd#n").await.unwrap_err();
    assert_eq!(err.code(), "secret_invalid");
    assert!(err.to_string().contains("a number, not a string"), "{err}");
}

#[tokio::test]
async fn path_outside_the_policy_is_denied() {
    let bao = Bao::start().await;
    bao.put_secret("other/thing", &[("k", "v")]).await;
    let token = bao.create_token(600, true).await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(&token))
        .await
        .unwrap();
    let err = read(&src, "other/thing#k").await.unwrap_err();
    assert_eq!(err.code(), "secret_denied", "{err}");
    assert!(err.to_string().contains("other/thing#k"), "{err}");
    assert!(!err.to_string().contains(&token));
}

#[tokio::test]
async fn vault_down_fails_closed_quickly_and_recovers_without_a_new_source() {
    let mut bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", "ghp_before")])
        .await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(bao.root_token()))
        .await
        .unwrap();
    // TTL zero: every get goes to Vault, as it would once a value expires.
    let cache = CachedSource::new(Arc::new(src), Duration::ZERO);
    let secret = r("tools/github#token");
    assert_eq!(
        cache.get(&secret).await.unwrap().expose_secret(),
        b"ghp_before"
    );

    bao.stop().await;
    let started = Instant::now();
    let err = cache.get(&secret).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("vault stopped: Unavailable after {took:?}");
    assert_eq!(err.code(), "secret_unavailable", "{err}");
    assert!(err.to_string().contains("tools/github#token"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(cache.health().await.is_err());

    bao.restart().await;
    bao.put_secret("tools/github", &[("token", "ghp_after")])
        .await;
    assert_eq!(
        cache.get(&secret).await.unwrap().expose_secret(),
        b"ghp_after"
    );
    cache.health().await.unwrap();
}

#[tokio::test]
async fn silent_vault_is_bounded_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut settings = VaultSettings::new(
        format!("http://{addr}"),
        VaultAuth::Token { token_file: None },
    );
    settings.timeout = Duration::from_secs(1);
    let src = VaultSource::connect(settings, &env_token("t"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = read(&src, "tools/github#token").await.unwrap_err();
    let took = started.elapsed();
    eprintln!("silent vault (1 s timeout): Unavailable after {took:?}");
    assert_eq!(err.code(), "secret_unavailable", "{err}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_first_gets_make_one_vault_read() {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", "ghp_once")])
        .await;
    let src = VaultSource::connect(token_settings(&bao), &env_token(bao.root_token()))
        .await
        .unwrap();
    let cache = Arc::new(CachedSource::new(Arc::new(src), Duration::from_secs(300)));
    let secret = r("tools/github#token");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, secret) = (Arc::clone(&cache), secret.clone());
            tokio::spawn(async move { cache.get(&secret).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().expose_secret(), b"ghp_once");
    }
    assert_eq!(cache.fetches(), 1);
}
