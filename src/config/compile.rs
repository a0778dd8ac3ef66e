//! Raw TOML → [`Config`]: every check that needs more than serde, each
//! error located at file:line:col with the key named and the valid forms said.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::GlobBuilder;
use http::Method;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::raw::{RawConfig, RawHostRule, RawRuleFile};
use super::{
    AuditOutput, Config, ConfigError, ConfigErrors, DnsSettings, ProxySettings, ScanAction,
    ScanSettings, SecretBackend, SecretsSettings, TlsSettings, UpstreamRoots, parse_duration,
};
use crate::policy::{Host, HostPattern, Methods, Policy, Rule, RuleRef};

/// One file's text and name, so errors can point into it.
struct Src<'a> {
    name: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.name, self.text, spanned.span(), message)
    }
}

/// Compiles config text; `base` resolves relative paths.
pub(super) fn compile(text: &str, name: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(name, text, &e))?;
    let src = Src { name, text };
    let mut errors = Vec::new();
    let mut version = Sha256::new();
    version.update(text.as_bytes());

    let proxy = compile_proxy(&src, &raw, base, &mut errors);
    let tls = compile_tls(&src, &raw, base, &mut errors);
    let dns = compile_dns(&src, &raw, &mut errors);
    let scan = compile_scan(&src, &raw, base, &mut errors);
    let audit = match raw.audit.output.as_deref() {
        None | Some("stdout") => AuditOutput::Stdout,
        Some("stderr") => AuditOutput::Stderr,
        Some("off") => AuditOutput::Off,
        Some(path) => AuditOutput::File(base.join(path)),
    };
    let audit_deny_on_failure = match &raw.audit.on_failure {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "log" => false,
            "deny" => true,
            other => {
                errors.push(src.err(
                    v,
                    format!("audit.on_failure: `{other}` is not \"log\" or \"deny\""),
                ));
                false
            }
        },
    };
    let secrets = compile_secrets(&src, &raw, base, &mut errors);
    let approval = compile_approval(&src, &raw, base, &proxy, &mut errors);

    let mut rules: Vec<Rule> = Vec::new();
    let mut tests = Vec::new();
    super::rule_tests::compile(name, text, &raw.test, None, &mut tests, &mut errors);
    let file_name: Arc<str> = Arc::from(name);
    for r in &raw.host {
        if let Some(rule) = compile_rule(
            &src,
            &file_name,
            r,
            scan.pattern_set.as_deref(),
            &mut errors,
        ) {
            rules.push(rule);
        }
    }
    let mut rule_files = Vec::new();
    let mut hint_files = Vec::new();
    for pattern in &raw.include {
        let files = expand_include(&src, pattern, base, &mut errors);
        if files.is_empty() {
            hint_files.push(pattern.get_ref().clone());
        }
        for file in files {
            let shown = display_path(&file, base, pattern.get_ref());
            hint_files.push(shown.clone());
            compile_rule_file(
                &file,
                &shown,
                scan.pattern_set.as_deref(),
                (&mut rules, &mut tests, None),
                &mut errors,
                &mut version,
            );
            rule_files.push(file);
        }
    }
    if !raw.host.is_empty() {
        hint_files.push(name.to_owned());
    }
    let shared: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
    let mut sandboxes = Vec::new();
    let mut seen_ids = std::collections::HashSet::new();
    for sb in &raw.sandbox {
        let id = sb.id.get_ref();
        if id.is_empty() || id.contains(':') || !seen_ids.insert(id.clone()) {
            errors.push(src.err(
                &sb.id,
                format!("sandbox.id: `{id}` must be unique, non-empty and without `:`"),
            ));
        }
        let hash = hex_sha256(sb.token_sha256.get_ref());
        if hash.is_none() {
            errors.push(src.err(
                &sb.token_sha256,
                "sandbox.token_sha256: 64 hex characters (sha256sum of the token)",
            ));
        }
        let mut own: Vec<Rule> = Vec::new();
        let mut files = hint_files.clone();
        for pattern in &sb.include {
            for file in expand_include(&src, pattern, base, &mut errors) {
                let shown = display_path(&file, base, pattern.get_ref());
                files.push(shown.clone());
                compile_rule_file(
                    &file,
                    &shown,
                    scan.pattern_set.as_deref(),
                    (&mut own, &mut tests, Some(id.as_str())),
                    &mut errors,
                    &mut version,
                );
                rule_files.push(file);
            }
        }
        let mut all = shared.clone();
        all.extend(own.into_iter().map(Arc::new));
        sandboxes.push(Arc::new(super::Sandbox {
            id: Arc::from(id.as_str()),
            token_sha256: hash.unwrap_or([0; 32]),
            policy: Arc::new(Policy::new(all, files)),
        }));
    }

    let every_rule = shared
        .iter()
        .chain(sandboxes.iter().flat_map(|s| s.policy.rules()));
    let mut seen = std::collections::HashSet::new();
    for rule in every_rule {
        if !seen.insert(rule.source.to_string()) {
            continue;
        }
        if let Some(t) = rule.approval_timeout.filter(|t| *t >= proxy.idle_timeout) {
            errors.push(ConfigError {
                file: rule.source.file.to_string(),
                location: Some((rule.source.line, 1)),
                message: format!(
                    "host.approval_timeout ({}s) must be below proxy.idle_timeout ({}s): a held connection is silent and would be closed first",
                    t.as_secs(),
                    proxy.idle_timeout.as_secs()
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut warnings = super::lint::overlaps(&shared);
    for sb in &sandboxes {
        for w in super::lint::overlaps(sb.policy.rules()) {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    let secret_files = secret_files(&raw, base, &tls, &secrets);
    Ok(Config {
        proxy,
        tls,
        dns,
        scan,
        audit,
        audit_deny_on_failure,
        secrets,
        approval,
        policy: Arc::new(Policy::new(shared, hint_files)),
        sandboxes,
        source: name.to_owned(),
        rule_files,
        version: version
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect(),
        secret_files,
        tests,
        learn_permissive: false,
        warnings,
    })
}

/// The files a compiled config reads secrets from (see [`Config::secret_files`]).
fn secret_files(
    raw: &RawConfig,
    base: &Path,
    tls: &super::TlsSettings,
    secrets: &SecretsSettings,
) -> Vec<super::SecretFile> {
    use crate::credentials::VaultAuth;
    let file = |setting, path: PathBuf| super::SecretFile { setting, path };
    let mut out = vec![file("tls.ca_key", tls.ca_key.clone())];
    match &secrets.backend {
        SecretBackend::File(p) => out.push(file("secrets.file", p.clone())),
        SecretBackend::Vault(v) => match &v.auth {
            VaultAuth::Token { token_file } => {
                out.extend(
                    token_file
                        .iter()
                        .map(|p| file("secrets.vault.token_file", p.clone())),
                );
            }
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => {
                out.push(file("secrets.vault.role_id_file", role_id_file.clone()));
                out.push(file("secrets.vault.secret_id_file", secret_id_file.clone()));
            }
            // A service-account token is mounted readable by the pod's
            // other users (Kubernetes' default 0644), and it is short-lived
            // and audience-bound: not held to the 0600 rule.
            VaultAuth::Kubernetes { .. } => {}
            VaultAuth::Jwt { jwt_file, .. } => {
                out.push(file("secrets.vault.jwt_file", jwt_file.clone()));
            }
        },
    }
    if let Some(f) = &raw.proxy.admin_token_file {
        out.push(file("proxy.admin_token_file", base.join(f.get_ref())));
    }
    if let Some(f) = &raw.approval.decider_token_file {
        out.push(file("approval.decider_token_file", base.join(f.get_ref())));
    }
    out
}

/// Where a rule file's rules and tests go, and the sandbox that includes it.
type RuleFileOut<'a> = (
    &'a mut Vec<Rule>,
    &'a mut Vec<crate::policy::rule_tests::RuleTest>,
    Option<&'a str>,
);

fn compile_rule_file(
    path: &Path,
    shown: &str,
    patterns: Option<&crate::scan::PatternSet>,
    (rules, tests, sandbox): RuleFileOut<'_>,
    errors: &mut Vec<ConfigError>,
    version: &mut Sha256,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::file(
                shown,
                format!("cannot read rule file: {e}"),
            ));
            return;
        }
    };
    version.update(shown.as_bytes());
    version.update(text.as_bytes());
    let raw: RawRuleFile = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            errors.push(ConfigError::from_toml(shown, &text, &e));
            return;
        }
    };
    let src = Src {
        name: shown,
        text: &text,
    };
    let file_name: Arc<str> = Arc::from(shown);
    for r in &raw.host {
        if let Some(rule) = compile_rule(&src, &file_name, r, patterns, errors) {
            rules.push(rule);
        }
    }
    super::rule_tests::compile(shown, &text, &raw.test, sandbox, tests, errors);
}

/// Shows an included file as the user would name it: relative to the config.
fn display_path(file: &Path, base: &Path, _pattern: &str) -> String {
    file.strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn expand_include(
    src: &Src<'_>,
    pattern: &Spanned<String>,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
    let joined = base.join(pattern.get_ref());
    let Some(joined_str) = joined.to_str() else {
        errors.push(src.err(pattern, "include: path is not valid UTF-8"));
        return Vec::new();
    };
    let is_glob = pattern.get_ref().contains(['*', '?', '[']);
    if !is_glob {
        if !joined.is_file() {
            errors.push(src.err(
                pattern,
                format!("include: rule file `{}` does not exist", pattern.get_ref()),
            ));
            return Vec::new();
        }
        return vec![joined];
    }
    match glob::glob(joined_str) {
        Ok(paths) => {
            let mut files: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() && src.name == super::EMBEDDED_NAME {
                // The embedded default run outside a checkout: deny-all, said so.
                tracing::warn!(pattern = %pattern.get_ref(), "include matches no rule file: every host is denied");
            } else if files.is_empty() {
                errors.push(src.err(
                    pattern,
                    format!(
                        "include: `{}` matches no rule file: the rules it was meant to bring would be missing (a deny-all proxy by accident)",
                        pattern.get_ref()
                    ),
                ));
            }
            files
        }
        Err(e) => {
            errors.push(src.err(pattern, format!("include: bad glob: {e}")));
            Vec::new()
        }
    }
}

fn duration_field(
    src: &Src<'_>,
    key: &str,
    value: Option<&Spanned<String>>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    let Some(v) = value else { return default };
    match parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            errors.push(src.err(v, format!("{key}: must be greater than zero")));
            default
        }
        Err(msg) => {
            errors.push(src.err(v, format!("{key}: {msg}")));
            default
        }
    }
}

fn count_field(
    src: &Src<'_>,
    key: &str,
    value: Option<&Spanned<i64>>,
    default: usize,
    errors: &mut Vec<ConfigError>,
) -> usize {
    let Some(v) = value else { return default };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n > 0 => n,
        _ => {
            errors.push(src.err(v, format!("{key}: must be a positive whole number")));
            default
        }
    }
}

fn addr_field(
    src: &Src<'_>,
    key: &str,
    value: &Spanned<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match value.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(src.err(
                value,
                format!(
                    "{key}: `{}` is not an address: write IP:PORT, e.g. \"127.0.0.1:3128\"",
                    value.get_ref()
                ),
            ));
            None
        }
    }
}

fn compile_proxy(
    src: &Src<'_>,
    raw: &RawConfig,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> ProxySettings {
    let p = &raw.proxy;
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 3128));
    let listen = p
        .listen
        .as_ref()
        .and_then(|v| addr_field(src, "proxy.listen", v, errors))
        .unwrap_or(default_listen);
    let admin = p
        .admin
        .as_ref()
        .and_then(|v| addr_field(src, "proxy.admin", v, errors));
    let admin_token = p.admin_token_file.as_ref().and_then(|f| {
        let path = base.join(f.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Some(super::AdminToken(t.trim().to_owned())),
            Ok(_) => {
                errors.push(src.err(f, "proxy.admin_token_file: the file is empty"));
                None
            }
            Err(e) => {
                errors.push(src.err(
                    f,
                    format!("proxy.admin_token_file: cannot read `{}`: {e}", f.get_ref()),
                ));
                None
            }
        }
    });
    // The admin API approves held requests: off loopback, without a token,
    // anyone who can reach it could approve them.
    if let (Some(addr), None, Some(v)) = (admin, &admin_token, p.admin.as_ref())
        && !addr.ip().is_loopback()
    {
        errors.push(src.err(
            v,
            format!(
                "proxy.admin: `{addr}` is not a loopback address; an admin API reachable \
                 from elsewhere needs `admin_token_file` (it can approve held requests)"
            ),
        ));
    }
    let secs = Duration::from_secs;
    let idle_timeout = duration_field(
        src,
        "proxy.idle_timeout",
        p.idle_timeout.as_ref(),
        secs(120),
        errors,
    );
    // Below the idle timeout, which would close the silent tunnel first
    // and leave the client with no answer at all.
    let response_timeout = duration_field(
        src,
        "proxy.response_timeout",
        p.response_timeout.as_ref(),
        secs(60).min(idle_timeout.mul_f32(0.75)),
        errors,
    );
    if let Some(v) = p.response_timeout.as_ref()
        && response_timeout >= idle_timeout
    {
        errors.push(src.err(
            v,
            format!(
                "proxy.response_timeout ({}s) must be below proxy.idle_timeout ({}s): the silent tunnel would be closed first, with no answer",
                response_timeout.as_secs(),
                idle_timeout.as_secs()
            ),
        ));
    }
    ProxySettings {
        listen,
        admin,
        admin_token,
        header_read_timeout: duration_field(
            src,
            "proxy.header_read_timeout",
            p.header_read_timeout.as_ref(),
            secs(10),
            errors,
        ),
        idle_timeout,
        response_timeout,
        connect_timeout: duration_field(
            src,
            "proxy.connect_timeout",
            p.connect_timeout.as_ref(),
            secs(10),
            errors,
        ),
        handshake_timeout: duration_field(
            src,
            "proxy.handshake_timeout",
            p.handshake_timeout.as_ref(),
            secs(10),
            errors,
        ),
        max_header_bytes: count_field(
            src,
            "proxy.max_header_bytes",
            p.max_header_bytes.as_ref(),
            64 * 1024,
            errors,
        ),
        max_connections: count_field(
            src,
            "proxy.max_connections",
            p.max_connections.as_ref(),
            4096,
            errors,
        ),
        drain_timeout: duration_field(
            src,
            "proxy.drain_timeout",
            p.drain_timeout.as_ref(),
            secs(30),
            errors,
        ),
        replica: match &p.replica {
            Some(name) => {
                let text = name.get_ref();
                if text.is_empty()
                    || text.len() > 253
                    || !text.bytes().all(|b| b.is_ascii_graphic())
                {
                    errors.push(src.err(
                        name,
                        "proxy.replica: use 1 to 253 visible ASCII characters (a pod or host name)",
                    ));
                }
                text.clone()
            }
            None => host_name(),
        },
    }
}

/// The host name (in Kubernetes, the pod's name), the default replica name.
fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "airlock".to_owned()
    } else {
        name
    }
}

fn compile_tls(
    src: &Src<'_>,
    raw: &RawConfig,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> TlsSettings {
    let t = &raw.tls;
    let upstream_roots = match t.upstream_roots.as_ref() {
        None => UpstreamRoots::System,
        Some(v) => {
            match v.get_ref().as_str() {
                "system" => UpstreamRoots::System,
                "webpki" => UpstreamRoots::Webpki,
                other => {
                    errors.push(src.err(
                    v,
                    format!("tls.upstream_roots: `{other}` is not valid: use \"system\" or \"webpki\""),
                ));
                    UpstreamRoots::System
                }
            }
        }
    };
    let mut extra = Vec::new();
    for r in &t.extra_upstream_roots {
        let p = base.join(r.get_ref());
        if p.is_file() {
            extra.push(p);
        } else {
            errors.push(src.err(
                r,
                format!(
                    "tls.extra_upstream_roots: PEM file `{}` does not exist",
                    r.get_ref()
                ),
            ));
        }
    }
    let leaf_validity = duration_field(
        src,
        "tls.leaf_validity",
        t.leaf_validity.as_ref(),
        Duration::from_secs(24 * 3600),
        errors,
    );
    TlsSettings {
        ca_cert: base.join(t.ca_cert.as_deref().unwrap_or("certs/ca.pem")),
        ca_key: base.join(t.ca_key.as_deref().unwrap_or("certs/ca-key.pem")),
        upstream_roots,
        extra_upstream_roots: extra,
        leaf_validity,
    }
}

fn compile_dns(src: &Src<'_>, raw: &RawConfig, errors: &mut Vec<ConfigError>) -> DnsSettings {
    let d = &raw.dns;
    let mut resolve = HashMap::new();
    for (name, addr) in &d.resolve {
        let host = match Host::parse(name) {
            Ok(Host::Name(n)) => n,
            Ok(Host::Ip(_)) | Err(_) => {
                errors.push(src.err(addr, format!("dns.resolve: `{name}` is not a host name")));
                continue;
            }
        };
        match addr.get_ref().parse::<IpAddr>() {
            Ok(ip) => {
                resolve.insert(host, crate::host::canonical_ip(ip));
            }
            Err(_) => errors.push(src.err(
                addr,
                format!(
                    "dns.resolve: `{}` is not an IP address (e.g. \"127.0.0.2\")",
                    addr.get_ref()
                ),
            )),
        }
    }
    let mut allow_cidrs = Vec::new();
    for c in &d.allow_cidrs {
        match c.get_ref().parse::<IpNet>() {
            Ok(net) => allow_cidrs.push(net.trunc()),
            Err(_) => errors.push(src.err(
                c,
                format!(
                    "dns.allow_cidrs: `{}` is not a CIDR (e.g. \"127.0.0.0/8\")",
                    c.get_ref()
                ),
            )),
        }
    }
    DnsSettings {
        resolve,
        block_private: d.block_private.unwrap_or(true),
        allow_cidrs,
    }
}

fn scan_action(
    src: &Src<'_>,
    key: &str,
    v: Option<&Spanned<String>>,
    default: ScanAction,
    errors: &mut Vec<ConfigError>,
) -> ScanAction {
    let Some(v) = v else { return default };
    match v.get_ref().as_str() {
        "block" => ScanAction::Block,
        "redact" => ScanAction::Redact,
        "log" => ScanAction::Log,
        other => {
            errors.push(src.err(
                v,
                format!("{key}: `{other}` is not valid: use \"block\", \"redact\" or \"log\""),
            ));
            default
        }
    }
}

fn compile_scan(
    src: &Src<'_>,
    raw: &RawConfig,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> ScanSettings {
    let s = &raw.scan;
    let pattern_error = |e: crate::scan::PatternError| ConfigError {
        file: e.file.clone(),
        location: (e.line > 0).then_some((e.line, e.column)),
        message: format!("{}: {}", e.key, e.message),
    };
    let (patterns, pattern_set) = match &s.patterns {
        Some(named) => {
            let path = base.join(named.get_ref());
            let set = match crate::scan::PatternSet::load(&path) {
                Ok(set) if set.is_empty() => {
                    errors.push(src.err(
                        named,
                        format!(
                            "scan.patterns: {} has no [[pattern]]: it would scan for nothing \
                             (remove the key to use the built-in patterns)",
                            path.display()
                        ),
                    ));
                    None
                }
                Ok(set) => Some(Arc::new(set)),
                // Unreadable (missing, a directory): the config's key is at fault.
                Err(e) if e.line == 0 => {
                    errors.push(src.err(
                        named,
                        format!("scan.patterns: {}: {}", path.display(), e.message),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(pattern_error(e));
                    None
                }
            };
            (Some(path), set)
        }
        None => match crate::scan::PatternSet::builtin() {
            Ok(set) => (None, Some(Arc::new(set))),
            Err(e) => {
                errors.push(pattern_error(e));
                (None, None)
            }
        },
    };
    ScanSettings {
        patterns,
        pattern_set,
        outgoing: scan_action(
            src,
            "scan.outgoing",
            s.outgoing.as_ref(),
            ScanAction::Block,
            errors,
        ),
        incoming: scan_action(
            src,
            "scan.incoming",
            s.incoming.as_ref(),
            ScanAction::Redact,
            errors,
        ),
        outgoing_confidence: scan_confidence(
            src,
            "scan.outgoing_confidence",
            s.outgoing_confidence.as_ref(),
            crate::scan::Confidence::Shaped,
            errors,
        ),
        incoming_confidence: scan_confidence(
            src,
            "scan.incoming_confidence",
            s.incoming_confidence.as_ref(),
            crate::scan::Confidence::Verified,
            errors,
        ),
        prejudge_bytes: prejudge_bytes(src, s.prejudge_bytes.as_ref(), errors),
    }
}

fn scan_confidence(
    src: &Src<'_>,
    key: &str,
    value: Option<&Spanned<String>>,
    default: crate::scan::Confidence,
    errors: &mut Vec<ConfigError>,
) -> crate::scan::Confidence {
    let Some(v) = value else {
        return default;
    };
    crate::scan::Confidence::parse(v.get_ref()).unwrap_or_else(|| {
        errors.push(src.err(
            v,
            format!(
                "{key}: `{}` is not valid: use \"shaped\" (act on everything that looks like \
                 a secret) or \"verified\" (only on secrets that pass every check)",
                v.get_ref()
            ),
        ));
        default
    })
}

/// `[scan] prejudge_bytes`: default 64 KiB, at most [`MAX_PREJUDGE_BYTES`]
/// (the body is held in memory while it is judged).
fn prejudge_bytes(
    src: &Src<'_>,
    value: Option<&Spanned<i64>>,
    errors: &mut Vec<ConfigError>,
) -> usize {
    let n = count_field(src, "scan.prejudge_bytes", value, 64 * 1024, errors);
    match value {
        Some(v) if n > MAX_PREJUDGE_BYTES => {
            errors.push(src.err(
                v,
                format!("scan.prejudge_bytes: at most {MAX_PREJUDGE_BYTES} (16 MiB)"),
            ));
            64 * 1024
        }
        _ => n,
    }
}

/// Where Kubernetes mounts a pod's service-account token.
const KUBERNETES_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The largest `[scan] prejudge_bytes`.
pub const MAX_PREJUDGE_BYTES: usize = 16 * 1024 * 1024;

fn compile_secrets(
    src: &Src<'_>,
    raw: &RawConfig,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> SecretsSettings {
    use crate::credentials::{VaultAuth, VaultSettings};
    let s = &raw.secrets;
    let cache_ttl = duration_field(
        src,
        "secrets.cache_ttl",
        s.cache_ttl.as_ref(),
        Duration::from_secs(300),
        errors,
    );
    let file = || SecretBackend::File(base.join(s.file.as_deref().unwrap_or("secrets.local.toml")));
    let backend = match s.backend.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "file")) => file(),
        Some((_, "vault")) => {
            let default = super::raw::RawVault::default();
            let v = s.vault.as_ref().map_or(&default, |v| v.get_ref());
            let auth = match v.auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
                None | Some((_, "token")) => VaultAuth::Token {
                    token_file: v.token_file.as_ref().map(|f| base.join(f)),
                },
                Some((a, "approle")) => {
                    match (&v.role_id_file, &v.secret_id_file) {
                        (Some(role), Some(secret)) => VaultAuth::AppRole {
                            mount: v
                                .approle_mount
                                .clone()
                                .unwrap_or_else(|| "approle".to_owned()),
                            role_id_file: base.join(role),
                            secret_id_file: base.join(secret),
                        },
                        _ => {
                            errors.push(src.err(a, "secrets.vault.auth: \"approle\" needs role_id_file and secret_id_file"));
                            VaultAuth::Token { token_file: None }
                        }
                    }
                }
                Some((a, method @ ("kubernetes" | "jwt"))) => {
                    let kubernetes = method == "kubernetes";
                    let jwt_file = match (&v.jwt_file, kubernetes) {
                        (Some(f), _) => Some(base.join(f)),
                        (None, true) => Some(PathBuf::from(KUBERNETES_TOKEN_FILE)),
                        (None, false) => None,
                    };
                    match (&v.role, jwt_file) {
                        (Some(role), Some(jwt_file)) if !role.trim().is_empty() => {
                            let mount = v.mount.clone().unwrap_or_else(|| method.to_owned());
                            let role = role.clone();
                            if kubernetes {
                                VaultAuth::Kubernetes {
                                    mount,
                                    role,
                                    jwt_file,
                                }
                            } else {
                                VaultAuth::Jwt {
                                    mount,
                                    role,
                                    jwt_file,
                                }
                            }
                        }
                        (role, jwt_file) => {
                            let mut missing = Vec::new();
                            if role.as_deref().is_none_or(|r| r.trim().is_empty()) {
                                missing.push("role");
                            }
                            if jwt_file.is_none() {
                                missing.push("jwt_file");
                            }
                            errors.push(src.err(
                                a,
                                format!(
                                    "secrets.vault.auth: \"{method}\" needs {}",
                                    missing.join(" and ")
                                ),
                            ));
                            VaultAuth::Token { token_file: None }
                        }
                    }
                }
                Some((a, other)) => {
                    errors.push(src.err(a, format!("secrets.vault.auth: `{other}` is not valid: use \"token\", \"approle\", \"kubernetes\" or \"jwt\"")));
                    VaultAuth::Token { token_file: None }
                }
            };
            let address = match &v.address {
                None => "http://127.0.0.1:8200".to_owned(),
                Some(a) => {
                    let text = a.get_ref().trim_end_matches('/');
                    if !(text.starts_with("http://") || text.starts_with("https://"))
                        || text.parse::<http::Uri>().is_err()
                    {
                        errors.push(src.err(a, format!("secrets.vault.address: `{text}` is not an http(s)://host:port address")));
                    }
                    text.to_owned()
                }
            };
            let mut settings = VaultSettings::new(address, auth);
            if let Some(m) = &v.kv_mount {
                settings.kv_mount.clone_from(m);
            }
            settings.timeout = duration_field(
                src,
                "secrets.vault.timeout",
                v.timeout.as_ref(),
                settings.timeout,
                errors,
            );
            settings.ca_file = v.ca_file.as_ref().map(|f| base.join(f));
            SecretBackend::Vault(settings)
        }
        Some((b, other)) => {
            errors.push(src.err(
                b,
                format!("secrets.backend: `{other}` is not valid: use \"file\" or \"vault\""),
            ));
            file()
        }
    };
    if let (Some(v), SecretBackend::File(_)) = (&s.vault, &backend) {
        errors.push(src.err(
            v,
            "secrets.vault: set `backend = \"vault\"` to use it (the backend is \"file\")",
        ));
    }
    SecretsSettings { backend, cache_ttl }
}

/// Parses a rule's `match`: exact name, `*.suffix`, or an IP literal.
pub fn parse_host_pattern(s: &str) -> Result<HostPattern, String> {
    if let Some(suffix) = s.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(format!(
                "`{s}`: `*` may appear only once, as the whole first label (\"*.example.com\")"
            ));
        }
        return match Host::parse(suffix) {
            Ok(Host::Name(n)) => Ok(HostPattern::Subdomains(n)),
            Ok(Host::Ip(_)) => Err(format!("`{s}`: a wildcard needs a domain name after `*.`")),
            Err(e) => Err(format!("`{s}`: {e}")),
        };
    }
    if s.contains('*') {
        return Err(format!(
            "`{s}`: `*` is allowed only as the whole first label, e.g. \"*.example.com\" (subdomains, not the apex)"
        ));
    }
    Host::parse(s)
        .map(HostPattern::Exact)
        .map_err(|e| format!("`{s}`: {e}"))
}

fn compile_rule(
    src: &Src<'_>,
    file: &Arc<str>,
    r: &RawHostRule,
    patterns: Option<&crate::scan::PatternSet>,
    errors: &mut Vec<ConfigError>,
) -> Option<Rule> {
    let before = errors.len();
    let pattern = match (
        super::lint::url_as_match(r.pattern.get_ref()),
        parse_host_pattern(r.pattern.get_ref()),
    ) {
        (Some(msg), _) => {
            errors.push(src.err(&r.pattern, msg));
            None
        }
        (None, Ok(HostPattern::Subdomains(s))) => match super::lint::public_suffix_wildcard(&s) {
            Some(msg) => {
                errors.push(src.err(&r.pattern, msg));
                None
            }
            None => Some(HostPattern::Subdomains(s)),
        },
        (None, Ok(p)) => Some(p),
        (None, Err(msg)) => {
            errors.push(src.err(&r.pattern, format!("host.match: {msg}")));
            None
        }
    };
    let ports = r.ports.as_ref().map(|ports| {
        let mut out = Vec::new();
        for p in ports.get_ref() {
            match u16::try_from(*p) {
                Ok(port) if port > 0 => out.push(port),
                _ => {
                    errors.push(src.err(ports, format!("host.ports: {p} is not a port (1-65535)")))
                }
            }
        }
        if ports.get_ref().is_empty() {
            errors.push(src.err(
                ports,
                "host.ports: an empty list allows nothing; remove the key for the default port",
            ));
        }
        out
    });
    let methods = match (&r.methods, &r.access) {
        (Some(_), Some(a)) => {
            errors.push(src.err(
                a,
                "host.access: give either `access` or `methods`, not both",
            ));
            Methods::Any
        }
        (None, Some(a)) => match a.get_ref().as_str() {
            "read" => Methods::Only(vec![Method::GET, Method::HEAD, Method::OPTIONS]),
            "any" => Methods::Any,
            other => {
                errors.push(src.err(a, format!("host.access: `{other}` is not valid: use \"read\" (GET, HEAD, OPTIONS) or \"any\", or list `methods`")));
                Methods::Any
            }
        },
        (Some(list), None) => {
            let mut out = Vec::new();
            for m in list.get_ref() {
                let upper = m.to_ascii_uppercase();
                if upper == "TRACE" || upper == "TRACK" {
                    errors.push(src.err(
                        list,
                        format!(
                            "host.methods: {upper} is always refused (it echoes credentials back)"
                        ),
                    ));
                    continue;
                }
                if let Some(msg) = super::lint::unknown_method(&upper) {
                    errors.push(src.err(list, msg));
                    continue;
                }
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) => out.push(method),
                    Err(_) => errors
                        .push(src.err(list, format!("host.methods: `{m}` is not an HTTP method"))),
                }
            }
            if list.get_ref().is_empty() {
                errors.push(src.err(
                    list,
                    "host.methods: an empty list allows nothing; remove the key to allow all",
                ));
            }
            Methods::Only(out)
        }
        (None, None) => Methods::Any,
    };
    let paths = r.paths.as_ref().and_then(|paths| {
        let mut set = globset::GlobSetBuilder::new();
        for p in paths.get_ref() {
            if !p.starts_with('/') {
                errors.push(src.err(
                    paths,
                    format!("host.paths: `{p}` must start with `/` (e.g. \"/repos/**\")"),
                ));
                continue;
            }
            match GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => errors.push(src.err(paths, format!("host.paths: `{p}`: {e}"))),
            }
        }
        if paths.get_ref().is_empty() {
            errors.push(src.err(
                paths,
                "host.paths: an empty list allows nothing; remove the key to allow all paths",
            ));
        }
        match set.build() {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(src.err(paths, format!("host.paths: {e}")));
                None
            }
        }
    });
    let inject =
        r.inject
            .as_ref()
            .and_then(|v| match crate::credentials::inject::parse(v.get_ref()) {
                Ok(items) => Some(Arc::new(crate::credentials::inject::InjectionPlan::new(
                    items,
                    r.danger_inject_over_http.unwrap_or(false),
                ))),
                Err(msg) => {
                    errors.push(src.err(v, format!("host.inject: {msg}")));
                    None
                }
            });

    let rate = r.rate.as_ref().and_then(|v| match v.get_ref().as_str() {
        "unlimited" => None,
        text => crate::limits::Rate::parse(text, false)
            .map_err(|m| errors.push(src.err(v, format!("host.rate: {m}"))))
            .ok(),
    });
    let budget = r.budget.as_ref().and_then(|v| {
        crate::limits::Rate::parse(v.get_ref(), true)
            .map_err(|m| errors.push(src.err(v, format!("host.budget: {m}"))))
            .ok()
    });
    let writes = match &methods {
        Methods::Any => true,
        Methods::Only(list) => list
            .iter()
            .any(|m| !matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS")),
    };
    let write_rate = (r.rate.is_none() && inject.is_some() && writes)
        .then_some(crate::limits::DEFAULT_WRITE_RATE);
    let approval = match r.approval.as_ref().map(|a| (a, a.get_ref().as_str())) {
        None | Some((_, "none")) => false,
        Some((_, "required")) => true,
        Some((a, other)) => {
            errors.push(src.err(
                a,
                format!("host.approval: `{other}` is not valid: use \"none\" or \"required\""),
            ));
            false
        }
    };
    let approval_timeout = r.approval_timeout.as_ref().map(|v| {
        duration_field(
            src,
            "host.approval_timeout",
            Some(v),
            Duration::ZERO,
            errors,
        )
    });
    let decider = r.decider.as_ref().and_then(|v| {
        crate::approval::parse_rule_decider(v.get_ref())
            .map_err(|m| errors.push(src.err(v, format!("host.decider: {m}"))))
            .ok()
    });
    if !approval {
        for (key, v) in [
            ("approval_timeout", &r.approval_timeout),
            ("decider", &r.decider),
        ] {
            if let Some(v) = v {
                errors.push(src.err(
                    v,
                    format!("host.{key}: only for a rule with approval = \"required\""),
                ));
            }
        }
    }
    if write_rate.is_some() && !approval {
        tracing::warn!(
            rule = %format!("{}:{}", src.name, super::error::line_col(src.text, r.pattern.span().start).0),
            "rule grants write methods with an injected credential and no approval or rate; the default write rate (60/minute per sandbox) applies"
        );
    }

    let mut scan_skip: Vec<Arc<str>> = Vec::new();
    for id in r.scan_skip.iter().flatten() {
        // `unreadable-compressed`: the rule may send compressed data
        // airlock cannot read (release artifacts, backups).
        let known = id.get_ref() == crate::scan::UNREADABLE
            || patterns.is_some_and(|set| set.iter().any(|p| p.id() == id.get_ref()));
        if known {
            scan_skip.push(Arc::from(id.get_ref().as_str()));
        } else {
            errors.push(src.err(
                id,
                format!(
                    "host.scan_skip: `{}` is not the id of a pattern in the loaded pattern file (scan.patterns) nor `unreadable-compressed`",
                    id.get_ref()
                ),
            ));
        }
    }

    if errors.len() > before {
        return None;
    }
    let (line, _) = super::error::line_col(src.text, r.pattern.span().start);
    Some(Rule {
        source: RuleRef {
            file: Arc::clone(file),
            line,
        },
        pattern: pattern?,
        ports,
        methods,
        paths,
        websocket: r.websocket.unwrap_or(false),
        inject,
        limits: crate::limits::Limits {
            rate,
            write_rate,
            budget,
        },
        approval,
        approval_timeout,
        decider,
        scan_skip: scan_skip.into(),
    })
}

fn hex_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn compile_approval(
    src: &Src<'_>,
    raw: &RawConfig,
    base: &Path,
    proxy: &ProxySettings,
    errors: &mut Vec<ConfigError>,
) -> super::ApprovalSettings {
    let a = &raw.approval;
    // The default stays below the idle timeout, which would close a held connection first.
    let default = Duration::from_secs(90).min(proxy.idle_timeout.mul_f32(0.75));
    let timeout = duration_field(src, "approval.timeout", a.timeout.as_ref(), default, errors);
    if timeout >= proxy.idle_timeout
        && let Some(t) = &a.timeout
    {
        errors.push(src.err(
            t,
            format!(
                "approval.timeout ({}s) must be below proxy.idle_timeout ({}s): a held connection is silent and would be closed first",
                timeout.as_secs(),
                proxy.idle_timeout.as_secs()
            ),
        ));
    }
    let decider_timeout = duration_field(
        src,
        "approval.decider_timeout",
        a.decider_timeout.as_ref(),
        Duration::from_secs(10),
        errors,
    );
    let token = a.decider_token_file.as_ref().and_then(|f| {
        match std::fs::read_to_string(base.join(f.get_ref())) {
            Ok(t) if !t.trim().is_empty() => Some(crate::credentials::SecretValue::from_string(
                t.trim().to_owned(),
            )),
            Ok(_) => {
                errors.push(src.err(f, "approval.decider_token_file: the file is empty"));
                None
            }
            Err(e) => {
                errors.push(src.err(
                    f,
                    format!(
                        "approval.decider_token_file: cannot read `{}`: {e}",
                        f.get_ref()
                    ),
                ));
                None
            }
        }
    });
    let decider = a.decider.as_ref().and_then(|url| {
        match crate::approval::DeciderSettings::check_url(url.get_ref()) {
            Ok(()) => Some(crate::approval::DeciderSettings {
                url: url.get_ref().clone(),
                timeout: decider_timeout,
                token: token.clone(),
                tls: None,
            }),
            Err(msg) => {
                errors.push(src.err(url, format!("approval.decider: {msg}")));
                None
            }
        }
    });
    super::ApprovalSettings {
        timeout,
        decider,
        decider_timeout,
        decider_token: token,
    }
}

#[cfg(test)]
mod secret_files_tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Config, SecretFile};

    #[test]
    fn every_secret_bearing_file_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["admin.token", "decider.token"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = r#"
[proxy]
admin = "127.0.0.1:0"
admin_token_file = "admin.token"
[tls]
ca_key = "k/ca-key.pem"
[secrets]
backend = "vault"
[secrets.vault]
auth = "approle"
role_id_file = "role"
secret_id_file = "/abs/secret"
[approval]
decider = "https://decider.test/"
decider_token_file = "decider.token"
"#;
        let c = Config::from_text(text, "t.toml", dir.path()).unwrap();
        let d = dir.path();
        let want = |setting, path: std::path::PathBuf| SecretFile { setting, path };
        assert_eq!(
            c.secret_files,
            [
                want("tls.ca_key", d.join("k/ca-key.pem")),
                want("secrets.vault.role_id_file", d.join("role")),
                want("secrets.vault.secret_id_file", "/abs/secret".into()),
                want("proxy.admin_token_file", d.join("admin.token")),
                want("approval.decider_token_file", d.join("decider.token")),
            ]
        );
        let text = "[secrets]\nbackend = \"vault\"\n[secrets.vault]\ntoken_file = \"t\"\n";
        let c = Config::from_text(text, "t.toml", d).unwrap();
        assert_eq!(
            c.secret_files[1],
            want("secrets.vault.token_file", d.join("t"))
        );
        let c = Config::from_text("", "t.toml", d).unwrap();
        assert_eq!(
            c.secret_files[1],
            want("secrets.file", d.join("secrets.local.toml"))
        );
    }

    #[test]
    fn kubernetes_and_jwt_logins_compile_with_their_defaults_and_name_what_is_missing() {
        use crate::credentials::VaultAuth;
        let d = std::path::Path::new("/etc/airlock");
        let vault = |body: &str| format!("[secrets]\nbackend = \"vault\"\n[secrets.vault]\n{body}");
        let auth_of = |c: &Config| match &c.secrets.backend {
            super::super::SecretBackend::Vault(v) => v.auth.clone(),
            other => panic!("{other:?}"),
        };
        let c = Config::from_text(
            &vault("auth = \"kubernetes\"\nrole = \"airlock\"\n"),
            "t.toml",
            d,
        )
        .unwrap();
        assert_eq!(
            auth_of(&c),
            VaultAuth::Kubernetes {
                mount: "kubernetes".into(),
                role: "airlock".into(),
                jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            }
        );
        let c = Config::from_text(
            &vault("auth = \"jwt\"\nrole = \"r\"\nmount = \"oidc/\"\njwt_file = \"id.jwt\"\n"),
            "t.toml",
            d,
        )
        .unwrap();
        assert_eq!(
            auth_of(&c),
            VaultAuth::Jwt {
                mount: "oidc/".into(),
                role: "r".into(),
                jwt_file: d.join("id.jwt"),
            }
        );
        assert!(
            c.secret_files
                .iter()
                .any(|f| f.setting == "secrets.vault.jwt_file")
        );
        let err = Config::from_text(&vault("auth = \"jwt\"\n"), "t.toml", d)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml:4") && err.contains("needs role and jwt_file"),
            "{err}"
        );
        let err = Config::from_text(&vault("auth = \"kubernetes\"\n"), "t.toml", d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"kubernetes\" needs role"), "{err}");
        let err = Config::from_text(&vault("auth = \"oidc\"\n"), "t.toml", d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"kubernetes\" or \"jwt\""), "{err}");
    }
}
