//! Vault login where airlock runs: `auth = "jwt"` and `auth = "kubernetes"`
//! against a real `bao server -dev`.
//!
//! JWT: OpenBao trusts a P-256 key made here; the tests sign the JWTs.
//! Kubernetes: OpenBao's kubernetes auth sends the pod's token to the
//! cluster's TokenReview API; without a cluster, a local HTTP server plays
//! that API (it answers "authenticated" for the one token it was given).
//! So OpenBao's whole login path runs (parse the token's claims, call
//! TokenReview, match the bound service account and namespace, issue a
//! token); what is not exercised is a real API server's own check of the
//! token's signature.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock::credentials::{SecretRef, SecretSource, VaultAuth, VaultSettings, VaultSource};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use crate::support::bao::Bao;
use crate::support::ca::TestCa;
use crate::support::origin::{Handler, Origin, full, record};

/// An ES256 signer, as an identity provider would hold.
struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Issuer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key, rng }
    }

    /// The public key as a PEM SubjectPublicKeyInfo (what Vault is given).
    fn public_key_pem(&self) -> String {
        // SPKI header for an uncompressed P-256 point (RFC 5480).
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(self.key.public_key().as_ref());
        crate::support::pem("PUBLIC KEY", &der)
    }

    fn sign(&self, claims: &Value) -> String {
        let head = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{head}.{body}");
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// A workload JWT for role `airlock`, valid for an hour.
    fn workload_jwt(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.sign(&json!({
            "iss": "https://issuer.test",
            "sub": "airlock-replica-1",
            "aud": "airlock",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 3600,
        }))
    }
}

fn write_secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn settings(bao: &Bao, auth: VaultAuth) -> VaultSettings {
    let mut s = VaultSettings::new(bao.address(), auth);
    s.timeout = Duration::from_secs(2);
    s
}

async fn read(src: &VaultSource, path: &str) -> Result<Vec<u8>, airlock::credentials::SecretError> {
    let r: SecretRef = path.parse().unwrap();
    src.fetch(&r)
        .await
        .map(|f| f.value.expose_secret().to_vec())
}

/// Reads until `want` comes back, for at most `within`.
async fn read_until_ok(src: &VaultSource, path: &str, within: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match read(src, path).await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("still failing after {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn jwt_logs_in_renews_logs_in_again_after_revocation_and_fails_closed_while_refused() {
    let bao = Bao::start().await;
    bao.put_secret("tools/slack", &[("token", "xoxb-jwt-login")])
        .await;
    let issuer = Issuer::new();
    // Tokens live 3 s and at most 6 s: over 10 s the source must renew and
    // then log in again with the JWT from the file.
    bao.enable_jwt(&issuer.public_key_pem(), 3, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let jwt = issuer.workload_jwt();
    let jwt_file = write_secret_file(dir.path(), "jwt", &jwt);
    let auth = VaultAuth::Jwt {
        mount: "jwt".into(),
        role: "airlock".into(),
        jwt_file: jwt_file.clone(),
    };
    let src = VaultSource::connect(settings(&bao, auth), &HashMap::new())
        .await
        .unwrap();
    assert!(src.describe().contains("jwt"), "{}", src.describe());
    assert_eq!(
        read(&src, "tools/slack#token").await.unwrap(),
        b"xoxb-jwt-login"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        read(&src, "tools/slack#token").await.unwrap(),
        b"xoxb-jwt-login",
        "renewal and re-login past the max TTL"
    );

    // An operator revokes every JWT login: the next renewal fails and the
    // source logs in again with the JWT it reads from the file.
    bao.revoke_logins("jwt").await;
    assert_eq!(
        read_until_ok(&src, "tools/slack#token", Duration::from_secs(10)).await,
        b"xoxb-jwt-login"
    );

    // The identity provider's JWT in the file is replaced by one Vault does
    // not trust, and the logins are revoked: reads fail (no stale value),
    // health says so, and no error carries the JWT.
    let stranger = Issuer::new().workload_jwt();
    std::fs::write(&jwt_file, &stranger).unwrap();
    bao.revoke_logins("jwt").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match read(&src, "tools/slack#token").await {
            Err(e) => break e,
            Ok(_) if tokio::time::Instant::now() > deadline => panic!("reads still succeed"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(err.code(), "secret_denied", "{err}");
    // The maintainer keeps trying; stays closed for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = read(&src, "tools/slack#token").await.unwrap_err();
    let health = src.health().await.unwrap_err();
    for text in [err.to_string(), health.to_string()] {
        assert!(!text.contains(&stranger) && !text.contains(&jwt), "{text}");
    }

    // The file gets a trusted JWT again (the provider rotated it): the
    // source recovers by itself, without a restart.
    std::fs::write(&jwt_file, issuer.workload_jwt()).unwrap();
    assert_eq!(
        read_until_ok(&src, "tools/slack#token", Duration::from_secs(20)).await,
        b"xoxb-jwt-login"
    );
    src.health().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_or_expired_jwt_is_refused_at_connect_and_never_echoed() {
    let bao = Bao::start().await;
    let issuer = Issuer::new();
    bao.enable_jwt(&issuer.public_key_pem(), 60, 600).await;
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = issuer.sign(&json!({
        "sub": "airlock-replica-1", "aud": "airlock",
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
    }));
    let wrong_audience = issuer.sign(&json!({
        "sub": "airlock-replica-1", "aud": "someone-else",
        "iat": now, "nbf": now - 5, "exp": now + 3600,
    }));
    for jwt in [Issuer::new().workload_jwt(), expired, wrong_audience] {
        let auth = VaultAuth::Jwt {
            mount: "jwt".into(),
            role: "airlock".into(),
            jwt_file: write_secret_file(dir.path(), "jwt", &jwt),
        };
        let err = match VaultSource::connect(settings(&bao, auth), &HashMap::new()).await {
            Ok(src) => panic!("connected anyway; health: {:?}", src.health().await),
            Err(e) => e,
        };
        assert_eq!(err.code(), "secret_denied", "{err}");
        assert!(!err.to_string().contains(&jwt), "{err}");
    }
    // An empty or missing JWT file is a config error naming the setting.
    let auth = VaultAuth::Jwt {
        mount: "jwt".into(),
        role: "airlock".into(),
        jwt_file: dir.path().join("missing"),
    };
    let err = VaultSource::connect(settings(&bao, auth), &HashMap::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("jwt_file"), "{err}");
}

/// A stand-in for the cluster's TokenReview API that authenticates exactly
/// `token` as service account `egress/airlock`.
fn token_review(token: String) -> Handler {
    Arc::new(move |req, rec| {
        let token = token.clone();
        Box::pin(async move {
            let r = record(req, &rec).await;
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            let authenticated = body["spec"]["token"].as_str() == Some(token.as_str());
            let status = if authenticated {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": "system:serviceaccount:egress:airlock",
                        "uid": "7d4f3a52-airlock",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:egress"],
                    },
                })
            } else {
                json!({ "authenticated": false, "error": "invalid bearer token" })
            };
            let mut resp = http::Response::new(full(
                json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "status": status,
                })
                .to_string(),
            ));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            *resp.status_mut() = http::StatusCode::CREATED;
            resp
        })
    })
}

#[tokio::test]
async fn kubernetes_login_sends_the_service_account_token_through_token_review() {
    let bao = Bao::start().await;
    bao.put_secret("tools/github", &[("token", "ghp_k8s_login")])
        .await;
    // A legacy-format service-account token (its claims name the account);
    // OpenBao reads the claims, then asks TokenReview whether it is valid.
    let sa_jwt = Issuer::new().sign(&json!({
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:egress:airlock",
        "kubernetes.io/serviceaccount/namespace": "egress",
        "kubernetes.io/serviceaccount/service-account.name": "airlock",
        "kubernetes.io/serviceaccount/service-account.uid": "7d4f3a52-airlock",
        "kubernetes.io/serviceaccount/secret.name": "airlock-token",
    }));
    let api = Origin::plain("127.0.0.1", token_review(sa_jwt.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let ca_pem = std::fs::read_to_string(ca.write_pem(dir.path(), "cluster-ca.pem")).unwrap();
    bao.enable_kubernetes(&format!("http://{}", api.addr), &ca_pem, 60)
        .await;
    let token_file = write_secret_file(dir.path(), "token", &sa_jwt);
    let auth = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: "airlock".into(),
        jwt_file: token_file.clone(),
    };
    let src = VaultSource::connect(settings(&bao, auth), &HashMap::new())
        .await
        .unwrap();
    assert!(src.describe().contains("kubernetes"), "{}", src.describe());
    assert_eq!(
        read(&src, "tools/github#token").await.unwrap(),
        b"ghp_k8s_login"
    );
    // OpenBao really asked the API server about airlock's token.
    let reviews = api.received();
    assert!(!reviews.is_empty(), "OpenBao never called TokenReview");
    assert!(
        reviews[0].target.contains("tokenreviews"),
        "{}",
        reviews[0].target
    );
    let sent: Value = serde_json::from_slice(reviews[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(sent["spec"]["token"].as_str(), Some(sa_jwt.as_str()));

    // Another service account's token is refused by the role's binding.
    let other = Issuer::new().sign(&json!({
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:egress:agent",
        "kubernetes.io/serviceaccount/namespace": "egress",
        "kubernetes.io/serviceaccount/service-account.name": "agent",
        "kubernetes.io/serviceaccount/service-account.uid": "0000-agent",
    }));
    let auth = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: "airlock".into(),
        jwt_file: write_secret_file(dir.path(), "other", &other),
    };
    let err = match VaultSource::connect(settings(&bao, auth), &HashMap::new()).await {
        Ok(src) => panic!("connected anyway; health: {:?}", src.health().await),
        Err(e) => e,
    };
    assert_eq!(err.code(), "secret_denied", "{err}");
    assert!(!err.to_string().contains(&other), "{err}");
}
