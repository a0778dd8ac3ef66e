//! Config: parse the TOML (`raw`), compile it into runtime types
//! (`compile`), and the errors that name file, line and key (`error`).
//!
//! Parse, then compile, then serve: nothing on the request path sees TOML.
//! This module turns text into a [`Config`] and nothing more; installing
//! one and reloading it live is [`crate::state`] and [`crate::server`].

pub mod compile;
mod lint;
pub mod error;
pub mod raw;
mod rule_tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};

// Each component owns its settings type; the config compiles into them.
pub use crate::approval::ApprovalSettings;
pub use crate::audit::AuditOutput;
pub use crate::guard::DnsSettings;
pub use crate::tls::{TlsSettings, UpstreamRoots};

use crate::policy::Policy;

/// The embedded default, used by `airlock serve` without `--config`: rule
/// and secret paths are relative to [`Layout::rules`], the CA lives in
/// [`Layout::state`].
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Where the embedded default finds its files.
///
/// In a checkout of this repository (the working directory has
/// `rules/allow/`): the rules and `secrets.local.toml` there, the CA in
/// `certs/`. Installed elsewhere (`cargo install`, a package, an image):
/// the rules in `/etc/airlock/rules/allow/` and the CA in a state
/// directory, so the binary works from any directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Base of `rules/allow/*.toml` and `secrets.local.toml`.
    pub rules: PathBuf,
    /// Directory of `ca.pem` and `ca-key.pem`.
    pub state: PathBuf,
}

/// Where an installed airlock's rules live.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/airlock";

impl Layout {
    /// A checkout's layout: everything relative to the working directory.
    pub fn checkout() -> Self {
        Self {
            rules: PathBuf::new(),
            state: PathBuf::from("certs"),
        }
    }

    /// The layout for this process: a checkout when the working directory
    /// has `rules/allow/`, else the installed layout.
    pub fn detect() -> Self {
        if Path::new("rules/allow").is_dir() {
            return Self::checkout();
        }
        let root = rustix::process::geteuid().is_root();
        Self::installed(|name| std::env::var_os(name), root)
    }

    /// The installed layout. The CA goes in the first of: systemd's
    /// `$STATE_DIRECTORY`, `$XDG_STATE_HOME/airlock`, `/var/lib/airlock`
    /// for root, `$HOME/.local/state/airlock` (the XDG default), and
    /// `/var/lib/airlock` when nothing else is set.
    pub fn installed(var: impl Fn(&str) -> Option<std::ffi::OsString>, root: bool) -> Self {
        let set = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let system = PathBuf::from("/var/lib/airlock");
        let state = if let Some(dirs) = var("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
            // systemd passes a colon-separated list; ours is the first.
            let dirs = dirs.to_string_lossy().into_owned();
            PathBuf::from(dirs.split(':').next().unwrap_or_default())
        } else if let Some(xdg) = set("XDG_STATE_HOME") {
            xdg.join("airlock")
        } else if root {
            system
        } else if let Some(home) = set("HOME").filter(|h| h != Path::new("/")) {
            home.join(".local/state/airlock")
        } else {
            system
        };
        Self {
            rules: PathBuf::from(SYSTEM_CONFIG_DIR),
            state,
        }
    }
}

/// The name errors and logs use for the embedded default.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `--config FILE`.
    File(PathBuf),
    /// The embedded default, with its files where this layout says.
    Embedded(Layout),
}

impl ConfigSource {
    /// Reads and compiles the config.
    ///
    /// # Errors
    /// Every problem, with file and line.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Embedded(layout) => Config::embedded(layout),
        }
        .inspect(|config| {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
        })
    }
}

/// A compiled config generation.
#[derive(Debug)]
pub struct Config {
    /// `[proxy]`.
    pub proxy: ProxySettings,
    /// `[tls]`.
    pub tls: TlsSettings,
    /// `[dns]`.
    pub dns: DnsSettings,
    /// `[scan]`.
    pub scan: ScanSettings,
    /// `[audit]`.
    pub audit: AuditOutput,
    /// `[audit] on_failure = "deny"`: refuse traffic (503) while the audit
    /// output cannot be written. Default `"log"`: keep serving, count the
    /// failures (`airlock_audit_write_errors_total`) and warn.
    pub audit_deny_on_failure: bool,
    /// `[secrets]`.
    pub secrets: SecretsSettings,
    /// `[approval]`.
    pub approval: ApprovalSettings,
    /// The allowlist (for clients without a sandbox identity; shared by all sandboxes).
    pub policy: Arc<Policy>,
    /// `[[sandbox]]`s: when any is configured, every client must authenticate.
    pub sandboxes: Vec<Arc<Sandbox>>,
    /// Where the config itself came from (a path or the embedded default).
    pub source: String,
    /// The rule files that were read, in order.
    pub rule_files: Vec<PathBuf>,
    /// A short hash of the config and every rule file: the rules version
    /// named in audit events, metrics and reload logs.
    pub version: String,
    /// Every file this config makes airlock read a secret from, with the
    /// setting that names it: the CA key, the file backend's secrets file,
    /// Vault token and AppRole files, the admin and decider token files.
    /// `airlock run` hides them from the command (see `crate::run`).
    pub secret_files: Vec<SecretFile>,
    /// The `[[test]]`s of the config and its rule files (run by `airlock check`).
    pub tests: Vec<crate::policy::rule_tests::RuleTest>,
    /// Set by `airlock learn --permissive` (never by a config file): requests
    /// the rules refuse are forwarded, marked in the audit log.
    pub learn_permissive: bool,
    /// What `airlock check` warns about (shadowed and overlapping rules),
    /// each starting with `file:line`; `serve` logs them.
    pub warnings: Vec<String>,
}

/// A file airlock reads a secret from (see [`Config::secret_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The setting that names it, e.g. `tls.ca_key`.
    pub setting: &'static str,
    /// The path, as resolved against the config's directory.
    pub path: PathBuf,
}

/// `[proxy]`, compiled.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Where sandboxes connect.
    pub listen: SocketAddr,
    /// The admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin API requires, if configured.
    pub admin_token: Option<AdminToken>,
    /// Time for a request head to arrive (slowloris bound).
    pub header_read_timeout: Duration,
    /// A connection idle this long in both directions is closed.
    pub idle_timeout: Duration,
    /// Upstream TCP + TLS connect bound.
    pub connect_timeout: Duration,
    /// How long the origin may send nothing back (no response head) while
    /// airlock sends it nothing either: then 504 `upstream_timeout`.
    pub response_timeout: Duration,
    /// Client's first TLS bytes + handshake bound inside a tunnel.
    pub handshake_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight work.
    pub drain_timeout: Duration,
    /// This process's name among replicas.
    pub replica: String,
}

/// A sandbox identity with its own allowlist.
pub struct Sandbox {
    /// The id (Proxy-Authorization user name).
    pub id: Arc<str>,
    token_sha256: [u8; 32],
    /// Shared rules plus this sandbox's own.
    pub policy: Arc<Policy>,
}

impl Sandbox {
    /// Constant-time check of a presented token against the stored hash.
    pub fn token_matches(&self, token: &[u8]) -> bool {
        use sha2::Digest;
        let got = sha2::Sha256::digest(token);
        got.iter()
            .zip(self.token_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The admin API's bearer token. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        if want.len() != presented.len() {
            return false;
        }
        want.iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretBackend {
    /// A local TOML file (mode 0600).
    File(PathBuf),
    /// HashiCorp Vault or OpenBao.
    Vault(crate::credentials::VaultSettings),
}

/// `[secrets]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsSettings {
    /// The backend.
    pub backend: SecretBackend,
    /// How long fetched values are served from memory.
    pub cache_ttl: Duration,
}

impl SecretsSettings {
    /// `file` or `vault`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            SecretBackend::File(_) => "file",
            SecretBackend::Vault(_) => "vault",
        }
    }
}

/// What to do with a secret found in a body, header or URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanAction {
    /// Stop the request or response.
    Block,
    /// Replace the secret with a marker.
    Redact,
    /// Only record it.
    Log,
}

impl ScanAction {
    /// The scanner's mode for this action.
    pub fn mode(self) -> crate::scan::ScanMode {
        match self {
            ScanAction::Block => crate::scan::ScanMode::Block,
            ScanAction::Redact => crate::scan::ScanMode::Redact,
            ScanAction::Log => crate::scan::ScanMode::Log,
        }
    }
}

/// `[scan]`, compiled.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The pattern file the config names; `None`: the built-in patterns.
    pub patterns: Option<PathBuf>,
    /// The compiled patterns (from that file, or built in).
    pub pattern_set: Option<Arc<crate::scan::PatternSet>>,
    /// Action for the sandbox's requests.
    pub outgoing: ScanAction,
    /// Action for responses to the sandbox.
    pub incoming: ScanAction,
    /// Least confidence acted on in the sandbox's requests (default
    /// `Shaped`: everything).
    pub outgoing_confidence: crate::scan::Confidence,
    /// Least confidence acted on in responses (default `Verified`).
    pub incoming_confidence: crate::scan::Confidence,
    /// Request bodies up to this size are read and scanned whole before
    /// the request goes upstream (a refusal leaves no trace at the origin).
    pub prejudge_bytes: usize,
}

impl ScanSettings {
    /// How many patterns are active and where they came from:
    /// `65 patterns, built in` or `12 patterns from /etc/airlock/p.toml`.
    pub fn patterns_summary(&self) -> String {
        let n = self.pattern_set.as_ref().map_or(0, |p| p.len());
        match &self.patterns {
            None => format!("{n} patterns, built in"),
            Some(p) => format!("{n} patterns from {}", p.display()),
        }
    }
}

impl Config {
    /// The policy for a client: its sandbox's, or the shared one when no
    /// sandboxes are configured. `None` when the client must authenticate
    /// (or named a sandbox this config no longer has).
    pub fn policy_for(&self, sandbox: Option<&str>) -> Option<&Arc<Policy>> {
        match sandbox {
            None if self.sandboxes.is_empty() => Some(&self.policy),
            None => None,
            Some(id) => self
                .sandboxes
                .iter()
                .find(|s| &*s.id == id)
                .map(|s| &s.policy),
        }
    }

    /// Reads and compiles `path` and the rule files it includes.
    ///
    /// # Errors
    /// Every problem found, each with file and line.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(&name, format!("cannot read config: {e}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        compile::compile(&text, &name, &base)
    }

    /// The embedded default, with its files where `layout` says.
    ///
    /// # Errors
    /// Problems in the rule files it includes (the default itself is tested).
    pub fn embedded(layout: &Layout) -> Result<Self, ConfigErrors> {
        let quoted = |path: PathBuf| toml::Value::String(path.display().to_string()).to_string();
        // Written out whole, so warnings and refusals name the real place.
        let text = EMBEDDED_DEFAULT
            .replace(
                "\"rules/allow/*.toml\"",
                &quoted(layout.rules.join("rules/allow/*.toml")),
            )
            .replace("\"certs/ca.pem\"", &quoted(layout.state.join("ca.pem")))
            .replace(
                "\"certs/ca-key.pem\"",
                &quoted(layout.state.join("ca-key.pem")),
            );
        compile::compile(&text, EMBEDDED_NAME, &layout.rules)
    }

    /// Compiles config text as if read from `name`, resolving paths from `base`.
    ///
    /// # Errors
    /// Every problem found, each with file and line.
    pub fn from_text(text: &str, name: &str, base: &Path) -> Result<Self, ConfigErrors> {
        compile::compile(text, name, base)
    }
}

/// Parses `250ms`, `10s`, `5m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit: ms, s, m, h or d (e.g. \"10s\")"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"10s\" or \"5m\""))?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        _ => Err(format!(
            "`{s}` has unknown unit `{unit}`: use ms, s, m, h or d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This repository's own layout, wherever the tests run from.
    fn in_repo() -> Layout {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        Layout {
            rules: repo.to_path_buf(),
            state: repo.join("certs"),
        }
    }

    #[test]
    fn an_installed_airlock_keeps_its_ca_in_a_state_directory() {
        use std::ffi::OsString;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let state = |pairs, root| Layout::installed(env(pairs), root).state;
        assert_eq!(
            state(
                &[
                    ("STATE_DIRECTORY", "/var/lib/airlock:/x"),
                    ("XDG_STATE_HOME", "/s")
                ],
                false
            ),
            Path::new("/var/lib/airlock")
        );
        assert_eq!(
            state(&[("XDG_STATE_HOME", "/s"), ("HOME", "/home/a")], true),
            Path::new("/s/airlock")
        );
        assert_eq!(
            state(&[("HOME", "/root")], true),
            Path::new("/var/lib/airlock")
        );
        assert_eq!(
            state(&[("HOME", "/home/a")], false),
            Path::new("/home/a/.local/state/airlock")
        );
        assert_eq!(
            state(&[("HOME", "/")], false),
            Path::new("/var/lib/airlock")
        );
        assert_eq!(state(&[], false), Path::new("/var/lib/airlock"));
        let l = Layout::installed(env(&[("XDG_STATE_HOME", "/s\"q")]), false);
        assert_eq!(l.rules, Path::new("/etc/airlock"));
        // The embedded default follows the layout, whatever the path's characters.
        let c = Config::embedded(&l).unwrap();
        assert_eq!(c.tls.ca_cert, Path::new("/s\"q/airlock/ca.pem"));
        assert_eq!(c.tls.ca_key, Path::new("/s\"q/airlock/ca-key.pem"));
        let c = Config::embedded(&Layout::checkout()).unwrap();
        assert_eq!(c.tls.ca_cert, Path::new("certs/ca.pem"));
    }

    /// One file per kind of bad config, each with the line:col and the words
    /// the operator needs.
    macro_rules! bad {
        ($name:ident, $file:expr, $where:expr, $says:expr) => {
            #[test]
            fn $name() {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("src/config/testdata")
                    .join($file);
                let err = Config::load(&path).unwrap_err().to_string();
                let want = format!("{}:{}", path.display(), $where);
                assert!(err.contains(&want), "want {want} in: {err}");
                assert!(err.contains($says), "want {:?} in: {err}", $says);
            }
        };
    }

    bad!(
        listen,
        "bad_listen.toml",
        "2:10",
        "proxy.listen: `localhost` is not an address"
    );
    bad!(
        bare_wildcard,
        "bad_bare_wildcard.toml",
        "2:9",
        "`*` is allowed only as the whole first label"
    );
    bad!(
        middle_glob,
        "bad_middle_glob.toml",
        "2:9",
        "`*` is allowed only as the whole first label"
    );
    bad!(
        access_and_methods,
        "bad_access_and_methods.toml",
        "4:10",
        "either `access` or `methods`"
    );
    bad!(
        path_glob,
        "bad_path_glob.toml",
        "3:9",
        "host.paths: `/a/[b`"
    );
    bad!(cidr, "bad_cidr.toml", "2:16", "is not a CIDR");
    bad!(
        open_admin,
        "bad_open_admin.toml",
        "3:9",
        "needs `admin_token_file`"
    );
    bad!(duration, "bad_duration.toml", "2:16", "unknown unit");
    bad!(trace, "bad_trace.toml", "3:11", "TRACE is always refused");
    bad!(
        inject_template,
        "bad_inject_template.toml",
        "3:10",
        "host.inject: `value` must contain {{secret}}"
    );
    bad!(
        unknown_key,
        "bad_unknown_key.toml",
        "3:1",
        "unknown field `portz`, expected one of"
    );
    bad!(
        scan_action,
        "bad_scan_action.toml",
        "2:12",
        "use \"block\", \"redact\" or \"log\""
    );
    bad!(
        missing_include,
        "bad_missing_include.toml",
        "1:12",
        "does not exist"
    );
    bad!(resolve, "bad_resolve.toml", "2:24", "is not an IP address");
    bad!(
        scan_skip,
        "bad_scan_skip.toml",
        "6:30",
        "host.scan_skip: `payment-cards` is not the id of a pattern"
    );
    bad!(
        prejudge_bytes,
        "bad_prejudge_bytes.toml",
        "2:18",
        "scan.prejudge_bytes: at most 16777216 (16 MiB)"
    );

    bad!(
        unknown_method,
        "bad_unknown_method.toml",
        "3:11",
        "host.methods: `GTE` is not a known HTTP method"
    );
    bad!(
        public_suffix,
        "bad_public_suffix.toml",
        "2:9",
        "`*.co.uk` admits every name under the public suffix `co.uk`"
    );
    bad!(
        url_match,
        "bad_url_match.toml",
        "2:9",
        "match takes a host name, not a URL (write match = \"api.github.com\")"
    );
    bad!(
        empty_include,
        "bad_empty_include.toml",
        "1:12",
        "include: `no-such-dir/*.toml` matches no rule file"
    );

    /// Warnings: the config loads, and each warning names file:line.
    fn warnings(file: &str) -> (String, Vec<String>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/config/testdata")
            .join(file);
        let config = Config::load(&path).unwrap();
        (path.display().to_string(), config.warnings)
    }

    #[test]
    fn shadowed_rule_is_a_warning() {
        let (path, w) = warnings("warn_shadowed.toml");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&format!(
                "{path}:5: warning: this rule can never match: the earlier rule at {path}:2"
            )),
            "{w:?}"
        );
    }

    #[test]
    fn overlapping_rules_with_different_injections_are_a_warning() {
        let (path, w) = warnings("warn_inject_overlap.toml");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&format!("{path}:7: warning: this rule and the earlier rule at {path}:2 can match the same request with different injections")),
            "{w:?}"
        );
    }

    #[test]
    fn the_shipped_rules_load_without_warnings() {
        let c = Config::embedded(&in_repo()).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn prejudge_bytes_defaults_to_64_kib() {
        let c = Config::embedded(&in_repo()).unwrap();
        assert_eq!(c.scan.prejudge_bytes, 64 * 1024);
    }

    #[test]
    fn embedded_default_compiles() {
        let c = Config::embedded(&in_repo()).unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:3128".parse().unwrap());
        assert!(c.policy.len() > 3, "ships an example allowlist");
        assert!(c.dns.block_private);
        assert_eq!(c.secrets.backend_name(), "file");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
    }
}
