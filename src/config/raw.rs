//! The config and rule files exactly as written: serde structs with
//! `deny_unknown_fields`, spans kept where a later check needs a line.
//!
//! Nothing outside `config` sees these types; [`super::compile`] turns them
//! into the runtime [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `airlock.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[proxy]`: listen addresses, timeouts and limits.
    #[serde(default)]
    pub proxy: RawProxy,
    /// `[tls]`: the CA and upstream trust.
    #[serde(default)]
    pub tls: RawTls,
    /// `[dns]`: name overrides and the address guard.
    #[serde(default)]
    pub dns: RawDns,
    /// `[secrets]`: where credentials come from.
    #[serde(default)]
    pub secrets: RawSecrets,
    /// `[scan]`: secret scanning.
    #[serde(default)]
    pub scan: RawScan,
    /// `[audit]`: where decisions are written.
    #[serde(default)]
    pub audit: RawAudit,
    /// `[approval]`: how held requests are decided.
    #[serde(default)]
    pub approval: RawApproval,
    /// Rule files (globs, relative to this file).
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// Rules written inline.
    #[serde(default)]
    pub host: Vec<RawHostRule>,
    /// Sandboxes with their own identity, hosts and secrets.
    #[serde(default)]
    pub sandbox: Vec<RawSandbox>,
    /// Policy tests (`[[test]]`), run by `airlock check`.
    #[serde(default)]
    pub test: Vec<RawTest>,
}

/// One `[[sandbox]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// The id clients send as the Proxy-Authorization user name.
    pub id: Spanned<String>,
    /// Hex SHA-256 of the token clients send as the password.
    pub token_sha256: Spanned<String>,
    /// Rule files (globs) for this sandbox only.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
}

/// `[proxy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Address sandboxes connect to. Default `127.0.0.1:3128`.
    pub listen: Option<Spanned<String>>,
    /// Admin address (`/healthz`, `/readyz`, `/metrics`). Default: none.
    pub admin: Option<Spanned<String>>,
    /// File holding a bearer token the admin API requires. Default: none
    /// (the admin API then trusts whoever can reach its loopback address).
    pub admin_token_file: Option<Spanned<String>>,
    /// Time allowed for a request head to arrive. Default `10s`.
    pub header_read_timeout: Option<Spanned<String>>,
    /// A connection or tunnel with no bytes either way for this long is closed. Default `120s`.
    pub idle_timeout: Option<Spanned<String>>,
    /// Time allowed to connect upstream (TCP + TLS). Default `10s`.
    pub connect_timeout: Option<Spanned<String>>,
    /// Time the origin may stay silent before its response head, once the
    /// request is sent. Default `60s` (and below `idle_timeout`).
    pub response_timeout: Option<Spanned<String>>,
    /// Time allowed for the client's first TLS bytes and handshake inside a tunnel. Default `10s`.
    pub handshake_timeout: Option<Spanned<String>>,
    /// Largest request head accepted, in bytes. Default 65536.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// Most client connections served at once. Default 4096.
    pub max_connections: Option<Spanned<i64>>,
    /// How long SIGTERM waits for in-flight requests. Default `30s`.
    pub drain_timeout: Option<Spanned<String>>,
    /// This process's name among replicas (in held requests, the decider's
    /// request and `GET /approvals`). Default: the host name (a pod's name).
    pub replica: Option<Spanned<String>>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA certificate PEM. Default `certs/ca.pem`.
    pub ca_cert: Option<String>,
    /// CA key PEM (mode 0600). Default `certs/ca-key.pem`.
    pub ca_key: Option<String>,
    /// `"system"` (default) or `"webpki"`.
    pub upstream_roots: Option<Spanned<String>>,
    /// Extra PEM files trusted upstream.
    #[serde(default)]
    pub extra_upstream_roots: Vec<Spanned<String>>,
    /// Leaf certificate lifetime. Default `24h`.
    pub leaf_validity: Option<Spanned<String>>,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Name → address overrides, like `curl --resolve`.
    #[serde(default)]
    pub resolve: BTreeMap<String, Spanned<String>>,
    /// Refuse non-global addresses. Default true.
    pub block_private: Option<bool>,
    /// Exceptions to `block_private`, as CIDRs.
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<String>>,
}

/// `[secrets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    /// `"file"` (default) or `"vault"`.
    pub backend: Option<Spanned<String>>,
    /// The file backend's TOML file (mode 0600). Default `secrets.local.toml`.
    pub file: Option<String>,
    /// How long a fetched value is served from memory. Default `5m`.
    pub cache_ttl: Option<Spanned<String>>,
    /// `[secrets.vault]`.
    pub vault: Option<Spanned<RawVault>>,
}

/// `[secrets.vault]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `http(s)://host:port`. Default `http://127.0.0.1:8200`.
    pub address: Option<Spanned<String>>,
    /// `"token"` (default: `VAULT_TOKEN` or `token_file`), `"approle"`,
    /// `"kubernetes"` or `"jwt"`.
    pub auth: Option<Spanned<String>>,
    /// File holding the Vault token (instead of `VAULT_TOKEN`).
    pub token_file: Option<String>,
    /// AppRole auth mount. Default `approle`.
    pub approle_mount: Option<String>,
    /// File holding the AppRole role id.
    pub role_id_file: Option<String>,
    /// File holding the AppRole secret id.
    pub secret_id_file: Option<String>,
    /// Auth mount for `kubernetes` (default `kubernetes`) and `jwt`
    /// (default `jwt`).
    pub mount: Option<String>,
    /// The Vault role, for `kubernetes` and `jwt`.
    pub role: Option<String>,
    /// File holding the JWT: for `jwt` (required) and `kubernetes`
    /// (default: the pod's service-account token).
    pub jwt_file: Option<String>,
    /// KV v2 mount. Default `secret`.
    pub kv_mount: Option<String>,
    /// Bound on every Vault call. Default `5s`.
    pub timeout: Option<Spanned<String>>,
    /// Extra CA bundle for Vault's TLS.
    pub ca_file: Option<String>,
}

/// `[scan]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScan {
    /// Pattern file. Default: the built-in set (the shipped
    /// `rules/secrets.toml`, compiled in).
    pub patterns: Option<Spanned<String>>,
    /// `block` (default) | `redact` | `log`.
    pub outgoing: Option<Spanned<String>>,
    /// `redact` (default) | `block` | `log`.
    pub incoming: Option<Spanned<String>>,
    /// Least confidence acted on going out: `shaped` (default) | `verified`.
    pub outgoing_confidence: Option<Spanned<String>>,
    /// Least confidence acted on coming back: `verified` (default) | `shaped`.
    pub incoming_confidence: Option<Spanned<String>>,
    /// Request bodies up to this many bytes are read and scanned whole
    /// before anything is sent upstream. Default 65536.
    pub prejudge_bytes: Option<Spanned<i64>>,
}

/// `[approval]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    /// How long a held request waits for a decision. Default `90s`; must be
    /// below `proxy.idle_timeout` (the held connection is silent meanwhile).
    pub timeout: Option<Spanned<String>>,
    /// URL the pending request is POSTed to (an automated check answering allow/deny).
    pub decider: Option<Spanned<String>>,
    /// Bound on each decider call. Default `10s`.
    pub decider_timeout: Option<Spanned<String>>,
    /// File holding a bearer token sent to the decider.
    pub decider_token_file: Option<Spanned<String>>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `"stdout"` (default), `"stderr"`, `"off"`, or a file path (appended).
    pub output: Option<String>,
    /// `"log"` (default) or `"deny"`: what happens while decisions cannot
    /// be written.
    pub on_failure: Option<Spanned<String>>,
}

/// A rule file under `rules/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// The rules.
    #[serde(default)]
    pub host: Vec<RawHostRule>,
    /// Policy tests (`[[test]]`), run by `airlock check`.
    #[serde(default)]
    pub test: Vec<RawTest>,
}

/// One `[[test]]`: a request and the decision the rules must give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    /// `https://host[:port]/path` or `http://...`.
    pub url: Spanned<String>,
    /// Default `GET`.
    pub method: Option<Spanned<String>>,
    /// The sandbox the request comes from. Default: the sandbox whose
    /// `include` read this file, else none.
    pub sandbox: Option<Spanned<String>>,
    /// `"allow"`, `"deny"` or `"approval"`.
    pub expect: Spanned<String>,
    /// A secret ref (`tools/github#token`) the deciding rule must inject.
    pub inject: Option<Spanned<String>>,
}

/// One `[[host]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostRule {
    /// `api.github.com`, `*.github.com`, or an IP literal.
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    /// Allowed ports. Default: 443 for CONNECT, 80 for plain HTTP.
    pub ports: Option<Spanned<Vec<i64>>>,
    /// Allowed methods. Default: all but TRACE/TRACK.
    pub methods: Option<Spanned<Vec<String>>>,
    /// `"read"` = GET, HEAD, OPTIONS only.
    pub access: Option<Spanned<String>>,
    /// Path globs (`*` = one segment, `**` = any depth). Default: all.
    pub paths: Option<Spanned<Vec<String>>>,
    /// Allow WebSocket upgrades. Default false.
    pub websocket: Option<bool>,
    /// Credential injection (see the README).
    pub inject: Option<Spanned<toml::Value>>,
    /// Allows injecting credentials into plain-HTTP (unencrypted) requests.
    /// Default false: such requests are refused.
    pub danger_inject_over_http: Option<bool>,
    /// `"none"` (default) or `"required"`: held until approved.
    pub approval: Option<Spanned<String>>,
    /// How long this rule's held requests wait. Default `[approval] timeout`.
    pub approval_timeout: Option<Spanned<String>>,
    /// Who decides this rule's held requests: a decider URL (only it
    /// decides), or `"person"` (only a person decides). Default: as
    /// `[approval]` says.
    pub decider: Option<Spanned<String>>,
    /// Requests per rule and sandbox: `"60/minute"`, or `"unlimited"`.
    pub rate: Option<Spanned<String>>,
    /// Request-body bytes per rule and sandbox: `"10MB/hour"`.
    pub budget: Option<Spanned<String>>,
    /// Pattern ids this rule's requests may carry out (e.g. a payment API
    /// rule that sends card numbers: `["payment-card"]`).
    pub scan_skip: Option<Vec<Spanned<String>>>,
}
