//! [`VaultSource`]: secrets from HashiCorp Vault or OpenBao (KV v2), with
//! token, AppRole, Kubernetes or JWT login and a background task that
//! keeps the login fresh.
//!
//! What it does not do: cache (that is [`super::CachedSource`]), or read
//! dynamic secrets with leases (KV v2 only; [`Fetched::lease`] is `None`).
//!
//! # Tokens
//! The Vault token is a secret: airlock's own copies live in
//! [`SecretValue`]s and are never formatted. `vaultrs` keeps another copy
//! in a plain `String` inside its client (not zeroized on drop); airlock
//! never prints that client (it has no `Debug`) and drops it on re-login.
//!
//! # Environment
//! Only [`Env`] is consulted, for `VAULT_TOKEN`. Every `vaultrs` setting
//! that would otherwise default from `VAULT_*` variables (address, CA,
//! client certificate, `VAULT_SKIP_VERIFY`) is set explicitly, so none of
//! them can change airlock's behaviour. The HTTP client does honour
//! `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`; `connect` logs a warning when
//! one is set.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::source::subject;
use super::{Fetched, SecretError, SecretRef, SecretSource, SecretValue};

/// First retry delay after a failed login or renewal.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay: also the worst-case wait for a first login
/// once Vault comes back after an outage at startup.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Proxy variables the HTTP client under `vaultrs` honours.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Where airlock reads environment variables (tests pass a `HashMap`;
/// `std::env::set_var` is banned).
pub trait Env {
    /// The variable's value, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// How airlock logs in to Vault. Holds file paths, never credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token: read from `token_file` if given, else from `VAULT_TOKEN`.
    /// Renewed in the background if renewable; once it expires, reads fail
    /// and [`SecretSource::health`] reports it.
    Token {
        /// File holding the token (surrounding whitespace ignored).
        token_file: Option<PathBuf>,
    },
    /// AppRole: log in with a role id and secret id, read from files at
    /// every login (so a rotated secret id is picked up); log in again when
    /// renewal fails or the token reaches its max TTL.
    AppRole {
        /// Auth mount, usually `approle`.
        mount: String,
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id.
        secret_id_file: PathBuf,
    },
    /// Kubernetes: log in with the pod's service-account token (a JWT Vault
    /// checks with the cluster's TokenReview API), read from `jwt_file` at
    /// every login, because the kubelet rotates the projected token. Logs
    /// in again as AppRole does.
    Kubernetes {
        /// Auth mount, usually `kubernetes`.
        mount: String,
        /// The Vault role bound to the service account.
        role: String,
        /// Usually `/var/run/secrets/kubernetes.io/serviceaccount/token`.
        jwt_file: PathBuf,
    },
    /// JWT: log in with a JWT from `jwt_file` (an OIDC provider's token,
    /// a workload identity), which Vault checks against the mount's keys.
    /// Read at every login; logs in again as AppRole does.
    Jwt {
        /// Auth mount, usually `jwt`.
        mount: String,
        /// The Vault role whose bound claims the JWT must meet.
        role: String,
        /// File holding the JWT.
        jwt_file: PathBuf,
    },
}

impl VaultAuth {
    fn name(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::AppRole { .. } => "approle",
            Self::Kubernetes { .. } => "kubernetes",
            Self::Jwt { .. } => "jwt",
        }
    }
}

/// `[secrets.vault]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// `http://host:port` or `https://host:port`, no path.
    pub address: String,
    /// How to log in.
    pub auth: VaultAuth,
    /// KV v2 mount, usually `secret`.
    pub kv_mount: String,
    /// Bound on every Vault call (connect, request and response).
    pub timeout: Duration,
    /// Extra PEM CA bundle trusted for Vault's TLS (besides the system
    /// roots), for a Vault with a private CA.
    pub ca_file: Option<PathBuf>,
}

impl VaultSettings {
    /// Settings with the defaults: KV mount `secret`, 5 s timeout, no extra CA.
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            auth,
            kv_mount: "secret".to_owned(),
            timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }
}

/// A logged-in client and what Vault said about its token.
struct Session {
    client: VaultClient,
    token: Mutex<TokenState>,
}

/// What Vault said about the session's token.
#[derive(Clone, Copy)]
struct TokenState {
    /// `None`: never expires (a root token), or not known yet.
    expires_at: Option<Instant>,
    /// The TTL granted at login or first lookup.
    granted: Duration,
    renewable: bool,
    /// False until a lookup or login told us the TTL.
    known: bool,
}

impl TokenState {
    fn new(ttl: Duration, renewable: bool) -> Self {
        Self {
            expires_at: (!ttl.is_zero()).then(|| Instant::now() + ttl),
            granted: ttl,
            renewable,
            known: true,
        }
    }
}

impl Session {
    fn state(&self) -> TokenState {
        // A poisoned lock still holds a valid (Copy) state.
        *self.token.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, state: TokenState) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

/// How to log in: the token itself for token auth, else a login method
/// whose credentials are read from files at every login.
enum Login {
    Token(SecretValue),
    Method(VaultAuth),
}

impl Login {
    /// A login method can log in again when its token cannot be renewed.
    fn relogs(&self) -> bool {
        matches!(self, Login::Method(_))
    }
}

struct Inner {
    address: String,
    kv_mount: String,
    timeout: Duration,
    ca_file: Option<String>,
    login: Login,
    session: ArcSwapOption<Session>,
}

/// Secrets from Vault / OpenBao KV v2, addressed `path#key`: `path` under
/// the KV mount, `key` a field of that secret, whose value must be a string.
///
/// A background task keeps the token fresh (renew at ~2/3 of its TTL;
/// AppRole, Kubernetes and JWT log in again when renewal fails or the
/// token nears its max TTL) and stops when this value is
/// dropped.
pub struct VaultSource {
    inner: Arc<Inner>,
    auth: &'static str,
    maintainer: JoinHandle<()>,
}

impl fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSource")
            .field("address", &self.inner.address)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Drop for VaultSource {
    fn drop(&mut self) {
        self.maintainer.abort();
    }
}

impl VaultSource {
    /// Checks the settings, reads the credentials and logs in.
    ///
    /// Bad settings, unreadable credential files, a missing token or a
    /// login Vault refuses (403) are errors. An unreachable Vault is not:
    /// the source starts anyway (reads fail with
    /// [`SecretError::Unavailable`]) and logs in as soon as Vault answers,
    /// so a Vault outage at startup does not stop the proxy.
    ///
    /// Must be called inside a tokio runtime (it spawns the renewal task).
    pub async fn connect(settings: VaultSettings, env: &dyn Env) -> Result<Self, SecretError> {
        check_address(&settings.address).map_err(|why| {
            SecretError::Config(format!(
                "secrets.vault.address `{}`: {why}",
                settings.address
            ))
        })?;
        let kv_mount = settings.kv_mount.trim_matches('/').to_owned();
        if kv_mount.is_empty() {
            return Err(SecretError::Config(
                "secrets.vault.kv_mount is empty".into(),
            ));
        }
        if settings.timeout.is_zero() {
            return Err(SecretError::Config(
                "secrets.vault.timeout must be above zero".into(),
            ));
        }
        let ca_file = match &settings.ca_file {
            Some(p) => {
                std::fs::metadata(p).map_err(|e| {
                    SecretError::Config(format!("secrets.vault.ca_file {}: {e}", p.display()))
                })?;
                Some(p.display().to_string())
            }
            None => None,
        };
        let auth = settings.auth.name();
        let login = match settings.auth {
            VaultAuth::Token { token_file } => {
                Login::Token(read_token(token_file.as_deref(), env)?)
            }
            method => {
                // Fail fast on unreadable files; they are read again at login.
                for (file, setting) in credential_files(&method) {
                    read_credential(file, setting)?;
                }
                Login::Method(trim_mount(method))
            }
        };
        for name in PROXY_VARS {
            if env.var(name).is_some_and(|v| !v.is_empty()) {
                tracing::warn!(
                    variable = name,
                    "vault: requests to Vault will go through the proxy set in this variable"
                );
            }
        }
        let inner = Arc::new(Inner {
            address: settings.address.trim_end_matches('/').to_owned(),
            kv_mount,
            timeout: settings.timeout,
            ca_file,
            login,
            session: ArcSwapOption::empty(),
        });
        if let Login::Token(token) = &inner.login {
            // Reads can start at once; the lookup below only learns the TTL.
            let client = inner.client(Some(token))?;
            inner.session.store(Some(Arc::new(Session {
                client,
                token: Mutex::new(TokenState {
                    expires_at: None,
                    granted: Duration::ZERO,
                    renewable: false,
                    known: false,
                }),
            })));
        }
        match inner.refresh().await {
            Ok(()) => {}
            Err(e @ (SecretError::Unavailable { .. } | SecretError::Invalid { .. })) => {
                tracing::warn!(error = %e, "vault: not reachable at startup; will keep trying");
            }
            Err(e) => return Err(e),
        }
        let maintainer = tokio::spawn(maintain(Arc::clone(&inner)));
        Ok(Self {
            inner,
            auth,
            maintainer,
        })
    }
}

impl SecretSource for VaultSource {
    fn fetch<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Fetched, SecretError>> {
        Box::pin(self.inner.read(secret))
    }

    fn describe(&self) -> String {
        format!(
            "vault {} ({}), kv mount {}",
            self.inner.address, self.auth, self.inner.kv_mount
        )
    }

    fn health<'a>(&'a self) -> BoxFuture<'a, Result<(), SecretError>> {
        Box::pin(self.inner.health())
    }
}

impl Inner {
    /// A `vaultrs` client with every setting explicit (no `VAULT_*` defaults).
    fn client(&self, token: Option<&SecretValue>) -> Result<VaultClient, SecretError> {
        let token = match token {
            Some(t) => std::str::from_utf8(t.expose_secret())
                .map_err(|_| SecretError::Config("the vault token is not UTF-8".into()))?,
            None => "",
        };
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            // Cannot panic: `check_address` accepted it in `connect`.
            .address(&self.address)
            .token(token)
            .timeout(Some(self.timeout))
            .verify(true)
            .ca_certs(self.ca_file.iter().cloned().collect())
            .identity(None)
            .namespace(None);
        let settings = builder
            .build()
            .map_err(|e| SecretError::Config(format!("vault client settings: {e}")))?;
        VaultClient::new(settings)
            .map_err(|e| SecretError::Config(format!("vault client: {}", chain(&e))))
    }

    /// Runs one Vault call under the timeout, mapping errors for `subject`.
    async fn call<T>(
        &self,
        subject: impl Fn() -> String,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, SecretError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(subject(), e)),
            Err(_) => Err(SecretError::Unavailable {
                subject: subject(),
                reason: format!("no answer from {} within {:?}", self.address, self.timeout),
            }),
        }
    }

    async fn read(&self, r: &SecretRef) -> Result<Fetched, SecretError> {
        let Some(session) = self.session.load_full() else {
            return Err(SecretError::unavailable(r, "not logged in to vault yet"));
        };
        let fields: HashMap<String, KvField> = self
            .call(
                || subject(r),
                vaultrs::kv2::read(&session.client, &self.kv_mount, r.path()),
            )
            .await
            .map_err(|e| match e {
                SecretError::NotFound { subject, .. } => SecretError::NotFound {
                    subject,
                    reason: format!("no secret at {}/{}", self.kv_mount, r.path()),
                },
                SecretError::Denied { subject, reason } => SecretError::Denied {
                    subject,
                    reason: format!("reading {}/data/{}: {reason}", self.kv_mount, r.path()),
                },
                other => other,
            })?;
        let mut fields = fields;
        match fields.remove(r.key()) {
            Some(KvField::Text(value)) => Ok(Fetched { value, lease: None }),
            Some(KvField::Other(kind)) => Err(SecretError::Invalid {
                subject: subject(r),
                reason: format!(
                    "key `{}` at {}/{} holds {kind}, not a string",
                    r.key(),
                    self.kv_mount,
                    r.path()
                ),
            }),
            None => {
                let mut keys: Vec<_> = fields.keys().map(String::as_str).collect();
                keys.sort_unstable();
                Err(SecretError::not_found(
                    r,
                    format!(
                        "secret {}/{} has no key `{}` (keys: {})",
                        self.kv_mount,
                        r.path(),
                        r.key(),
                        keys.join(", ")
                    ),
                ))
            }
        }
    }

    async fn health(&self) -> Result<(), SecretError> {
        let what = || "vault health".to_owned();
        let Some(session) = self.session.load_full() else {
            return Err(SecretError::Unavailable {
                subject: what(),
                reason: "not logged in to vault yet".into(),
            });
        };
        if session
            .state()
            .expires_at
            .is_some_and(|t| t <= Instant::now())
        {
            return Err(SecretError::Denied {
                subject: what(),
                reason: "the vault token has expired".into(),
            });
        }
        self.call(what, vaultrs::token::lookup_self(&session.client))
            .await
            .map(drop)
    }

    /// When the maintainer should act next; `None`: nothing to do.
    fn next_action(&self) -> Option<Instant> {
        let Some(session) = self.session.load_full() else {
            return Some(Instant::now()); // log in
        };
        let state = session.state();
        if !state.known {
            return Some(Instant::now()); // learn the TTL
        }
        let expires_at = state.expires_at?;
        if !state.renewable && !self.login.relogs() {
            return None; // a plain token that cannot be renewed: use it until it expires
        }
        let now = Instant::now();
        let left = expires_at.saturating_duration_since(now);
        Some(now + left * 2 / 3)
    }

    /// Logs in, learns the TTL, or renews, whichever is due.
    async fn refresh(&self) -> Result<(), SecretError> {
        let relogs = self.login.relogs();
        let Some(session) = self.session.load_full() else {
            return self.login().await;
        };
        let state = session.state();
        if !state.known {
            let info = self
                .call(
                    || "vault token lookup".to_owned(),
                    vaultrs::token::lookup_self(&session.client),
                )
                .await
                .map_err(|e| match e {
                    SecretError::Denied { subject, reason } => SecretError::Denied {
                        subject,
                        reason: format!(
                            "{reason}; airlock's token needs the `default` policy (lookup-self, renew-self)"
                        ),
                    },
                    other => other,
                })?;
            let ttl = Duration::from_secs(info.ttl);
            let renewable = info.renewable.unwrap_or(false);
            drop(info); // it holds the token id in a plain String
            session.set_state(TokenState::new(ttl, renewable));
            tracing::info!(ttl = ?ttl, renewable, "vault: token valid");
            return Ok(());
        }
        if !state.renewable {
            return if relogs { self.login().await } else { Ok(()) };
        }
        let renewed = self
            .call(
                || "vault token renewal".to_owned(),
                vaultrs::token::renew_self(&session.client, None),
            )
            .await;
        match renewed {
            Ok(auth) => {
                let ttl = Duration::from_secs(auth.lease_duration);
                let renewable = auth.renewable;
                drop(auth); // it holds the token in a plain String
                if relogs && ttl < state.granted / 2 {
                    // Capped by the token's max TTL: a fresh login gets a full one.
                    return self.login().await;
                }
                session.set_state(TokenState {
                    granted: state.granted.max(ttl),
                    ..TokenState::new(ttl, renewable)
                });
                tracing::debug!(ttl = ?ttl, "vault: token renewed");
                Ok(())
            }
            Err(e) if relogs => {
                tracing::warn!(error = %e, "vault: token renewal failed; logging in again");
                self.login().await
            }
            Err(e) => Err(e),
        }
    }

    /// Logs in with the configured method, reading its credentials from
    /// their files now (so a rotated secret id or token is picked up).
    async fn login(&self) -> Result<(), SecretError> {
        let Login::Method(method) = &self.login else {
            return Ok(());
        };
        let anonymous = self.client(None)?;
        let auth = match method {
            VaultAuth::Token { .. } => return Ok(()),
            VaultAuth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_credential(role_id_file, "role_id_file")?;
                let secret_id = read_credential(secret_id_file, "secret_id_file")?;
                self.call(
                    || "vault approle login".to_owned(),
                    vaultrs::auth::approle::login(
                        &anonymous,
                        mount,
                        utf8(&role_id, role_id_file)?,
                        utf8(&secret_id, secret_id_file)?,
                    ),
                )
                .await?
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            }
            | VaultAuth::Jwt {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_credential(jwt_file, "jwt_file")?;
                let jwt = utf8(&jwt, jwt_file)?;
                let what = || format!("vault {} login (role `{role}`)", method.name());
                if matches!(method, VaultAuth::Kubernetes { .. }) {
                    self.call(
                        what,
                        vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt),
                    )
                    .await?
                } else {
                    self.call(
                        what,
                        vaultrs::auth::oidc::login(&anonymous, mount, jwt, Some(role.clone())),
                    )
                    .await?
                }
            }
        };
        let ttl = Duration::from_secs(auth.lease_duration);
        let renewable = auth.renewable;
        let token = SecretValue::from_string(auth.client_token);
        let client = self.client(Some(&token))?;
        self.session.store(Some(Arc::new(Session {
            client,
            token: Mutex::new(TokenState::new(ttl, renewable)),
        })));
        tracing::info!(ttl = ?ttl, renewable, method = method.name(), "vault: logged in");
        Ok(())
    }
}

/// The files a login method reads its credentials from, with the setting
/// that names each.
fn credential_files(auth: &VaultAuth) -> Vec<(&Path, &'static str)> {
    match auth {
        VaultAuth::Token { token_file } => token_file
            .iter()
            .map(|f| (f.as_path(), "token_file"))
            .collect(),
        VaultAuth::AppRole {
            role_id_file,
            secret_id_file,
            ..
        } => vec![
            (role_id_file.as_path(), "role_id_file"),
            (secret_id_file.as_path(), "secret_id_file"),
        ],
        VaultAuth::Kubernetes { jwt_file, .. } | VaultAuth::Jwt { jwt_file, .. } => {
            vec![(jwt_file.as_path(), "jwt_file")]
        }
    }
}

/// The method with its mount written as vaultrs expects (no slashes).
fn trim_mount(mut auth: VaultAuth) -> VaultAuth {
    match &mut auth {
        VaultAuth::Token { .. } => {}
        VaultAuth::AppRole { mount, .. }
        | VaultAuth::Kubernetes { mount, .. }
        | VaultAuth::Jwt { mount, .. } => *mount = mount.trim_matches('/').to_owned(),
    }
    auth
}

/// The background task: renew or log in when due, back off on errors.
async fn maintain(inner: Arc<Inner>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match inner.next_action() {
            Some(at) => tokio::time::sleep_until(at).await,
            // Nothing will ever be due (a root token, or a plain token that
            // cannot be renewed): the task has no more work.
            None => return,
        }
        match inner.refresh().await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "vault: login or renewal failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Reads the token from `file`, else from `VAULT_TOKEN`.
fn read_token(file: Option<&Path>, env: &dyn Env) -> Result<SecretValue, SecretError> {
    let token = match file {
        Some(file) => read_credential(file, "token_file")?,
        None => match env.var("VAULT_TOKEN") {
            Some(t) if !t.trim().is_empty() => {
                let trimmed = t.trim().len() != t.len();
                let v = SecretValue::from_string(t);
                if trimmed { trim(&v) } else { v }
            }
            _ => {
                return Err(SecretError::Config(
                    "vault token auth: set VAULT_TOKEN or secrets.vault.token_file".into(),
                ));
            }
        },
    };
    Ok(token)
}

/// Reads a credential file (surrounding whitespace ignored; must not be empty).
fn read_credential(file: &Path, setting: &str) -> Result<SecretValue, SecretError> {
    let raw = std::fs::read(file).map(SecretValue::new).map_err(|e| {
        SecretError::Config(format!("secrets.vault.{setting} {}: {e}", file.display()))
    })?;
    let value = trim(&raw);
    if value.is_empty() {
        return Err(SecretError::Config(format!(
            "secrets.vault.{setting} {}: the file is empty",
            file.display()
        )));
    }
    Ok(value)
}

fn trim(v: &SecretValue) -> SecretValue {
    SecretValue::new(v.expose_secret().trim_ascii().to_vec())
}

fn utf8<'a>(v: &'a SecretValue, file: &Path) -> Result<&'a str, SecretError> {
    std::str::from_utf8(v.expose_secret())
        .map_err(|_| SecretError::Config(format!("{}: not UTF-8", file.display())))
}

/// Accepts `http(s)://host[:port][/]` with a DNS name, IPv4 or `[IPv6]`
/// host: strict enough that `vaultrs` (which panics on a bad URL) accepts it.
fn check_address(address: &str) -> Result<(), &'static str> {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err("must not have a path (write http://host:port)");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or("unclosed `[` in IPv6 address")?;
        ip.parse::<Ipv6Addr>().map_err(|_| "bad IPv6 address")?;
        (
            None,
            after
                .strip_prefix(':')
                .map(Some)
                .unwrap_or((!after.is_empty()).then_some(after)),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return Err("bad host (letters, digits, `.`, `-`, or an [IPv6] literal)");
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err("bad port"),
        }
    }
    Ok(())
}

/// Maps a `vaultrs` error to a [`SecretError`] about `subject`. Never
/// formats a response body.
fn map_error(subject: String, e: ClientError) -> SecretError {
    let code = match &e {
        ClientError::APIError { code, .. } => Some(*code),
        // A non-JSON error body (a load balancer's 502 page, say) stays a
        // transport error whose code `vaultrs` does not expose: Unavailable.
        _ => None,
    };
    match code {
        Some(404) => SecretError::NotFound {
            subject,
            reason: "vault returned 404".into(),
        },
        Some(400) => SecretError::Denied {
            subject,
            reason: "vault returned 400 (for a login: the credentials or the role are wrong, or the JWT is expired or does not meet the role's bound claims)".into(),
        },
        Some(code @ (401 | 403)) => SecretError::Denied {
            subject,
            reason: format!(
                "vault returned {code}: the policy does not allow it, or the token expired or was revoked"
            ),
        },
        Some(503) => SecretError::Unavailable {
            subject,
            reason: "vault returned 503 (sealed, or standby)".into(),
        },
        Some(code) => SecretError::Unavailable {
            subject,
            reason: format!("vault returned {code}"),
        },
        None => match e {
            ClientError::JsonParseError { .. }
            | ClientError::ResponseEmptyError
            | ClientError::ResponseDataEmptyError => SecretError::Invalid {
                subject,
                reason: "vault's answer did not have the expected shape (is the mount KV v2?)"
                    .into(),
            },
            other => SecretError::Unavailable {
                subject,
                reason: chain(&other),
            },
        },
    }
}

/// `error: cause: cause`, for errors that carry no response body.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// One field of a KV v2 secret: a string (the only usable kind, moved
/// into a zeroizing [`SecretValue`] without a copy) or the JSON type
/// found instead.
enum KvField {
    Text(SecretValue),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for KvField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KvFieldVisitor)
    }
}

struct KvFieldVisitor;

impl<'de> Visitor<'de> for KvFieldVisitor {
    type Value = KvField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<KvField, E> {
        Ok(KvField::Text(SecretValue::from_string(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KvField, E> {
        Ok(KvField::Text(SecretValue::new(v.as_bytes().to_vec())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<KvField, E> {
        Ok(KvField::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<KvField, E> {
        Ok(KvField::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<KvField, E> {
        Ok(KvField::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<KvField, E> {
        Ok(KvField::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<KvField, E> {
        Ok(KvField::Other("null"))
    }
    fn visit_none<E: de::Error>(self) -> Result<KvField, E> {
        Ok(KvField::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KvField, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KvField::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KvField, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KvField::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_vaultrs_accepts() {
        for ok in [
            "http://127.0.0.1:8200",
            "https://vault.example.com",
            "https://vault.example.com:8200/",
            "http://[::1]:8200",
            "http://[::1]",
        ] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
            // The same string must not make vaultrs panic.
            VaultClientSettingsBuilder::default().address(ok);
        }
        for bad in [
            "127.0.0.1:8200",
            "ftp://x",
            "http://",
            "http://host:99999",
            "http://host:0",
            "http://host:+1",
            "http://user@host",
            "http://host/vault",
            "http://[zz]:1",
            "http://[::1]x",
            "http://ho st",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kv_fields_keep_strings_and_name_other_types() {
        let json =
            serde_json::json!({"s": "v", "n": 1, "b": true, "a": [1], "o": {"x": "y"}, "z": null});
        let mut m: HashMap<String, KvField> = serde_json::from_value(json).unwrap();
        assert!(matches!(m.remove("s"), Some(KvField::Text(v)) if v.expose_secret() == b"v"));
        for (k, kind) in [
            ("n", "a number"),
            ("b", "a boolean"),
            ("a", "an array"),
            ("o", "an object"),
            ("z", "null"),
        ] {
            assert!(
                matches!(m.remove(k), Some(KvField::Other(t)) if t == kind),
                "{k}"
            );
        }
    }

    #[tokio::test]
    async fn token_auth_needs_a_token() {
        let settings =
            VaultSettings::new("http://127.0.0.1:1", VaultAuth::Token { token_file: None });
        let err = VaultSource::connect(settings, &HashMap::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("VAULT_TOKEN"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_vault_at_startup_is_not_fatal_and_reads_fail_closed() {
        crate::install_crypto_provider();
        let env = HashMap::from([("VAULT_TOKEN".to_owned(), "s.sekrit-token".to_owned())]);
        let mut settings =
            VaultSettings::new("http://127.0.0.1:1", VaultAuth::Token { token_file: None });
        settings.timeout = Duration::from_secs(2);
        let src = VaultSource::connect(settings, &env).await.unwrap();
        let r: SecretRef = "tools/github#token".parse().unwrap();
        let err = src.fetch(&r).await.unwrap_err();
        assert_eq!(err.code(), "secret_unavailable");
        let msg = err.to_string();
        assert!(msg.contains("tools/github#token"), "{msg}");
        assert!(!msg.contains("sekrit"), "{msg}");
        assert!(src.health().await.is_err());
        assert!(!format!("{src:?} {}", src.describe()).contains("sekrit"));
    }
}
