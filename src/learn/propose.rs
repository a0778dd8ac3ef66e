//! `airlock propose AUDIT.log [--config F]`: the requests the rules refused
//! (or that `airlock learn --permissive` forwarded anyway), turned into
//! proposed `[[host]]` rules, printed as a unified diff that appends them to
//! the config's first rule file (a sandbox's requests: to that sandbox's
//! first own rule file, one rule per sandbox, host and port).
//!
//! - Requests the current rules (`--config`, judged by
//!   [`crate::policy::decide`]) already allow are left out.
//! - One rule per host and port. `ports` is written unless the port is the
//!   default (443 through CONNECT, 80 for plain http).
//! - `access = "read"` when only GET, HEAD and OPTIONS were seen, else the
//!   `methods` seen. When only the CONNECT was seen (a denied tunnel: the
//!   requests inside were never sent), `access = "read"` and no `paths`,
//!   with a comment saying so: widen it after another `learn` run.
//! - `paths`: each observed path, generalised segment by segment (see
//!   [`generalise`]): a segment of digits, a UUID, or a hex string of at
//!   least 7 characters with a digit in it becomes `*`; a version number
//!   (`1.2`, `v1.2.3`) inside a segment becomes `*` (`requests-2.31.0.tar.gz`
//!   → `requests-*.tar.gz`). More than [`MAX_PATHS`] distinct globs are
//!   folded to their first segment (`/a/**`).
//! - Comments give the number of requests, the first and last time, the
//!   reasons they were refused and the sandboxes they came from.
//! - An IP literal is never proposed as is: its rule is commented out,
//!   saying what kind of address it is (name the host instead). A name that
//!   `[dns] resolve` maps to a non-public address is proposed with a
//!   comment saying the address guard will refuse it unless
//!   `[dns] allow_cidrs` covers it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::{Tunnels, judge, read_log, rebuild};
use crate::config::Config;
use crate::guard::classify::{IpClass, classify};
use crate::policy::Host;

/// The most path globs proposed for one rule before folding.
pub const MAX_PATHS: usize = 12;

#[derive(Debug, Default)]
struct Seen {
    count: usize,
    first: String,
    last: String,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    reasons: BTreeSet<String>,
    sandboxes: BTreeSet<String>,
    connect_only: bool,
    requests: usize,
}

/// The proposal: the diff text and the number of rules proposed.
#[derive(Debug, Default)]
pub struct Proposal {
    /// A unified diff (empty when nothing is proposed).
    pub diff: String,
    /// Rules proposed (commented-out ones included).
    pub rules: usize,
}

/// Builds the proposal from the log at `log` against `config`.
///
/// # Errors
/// The log cannot be read, or a line is not an audit event.
pub fn run(log: &Path, config: &Config) -> anyhow::Result<Proposal> {
    let records = read_log(log)?;
    let mut tunnels = Tunnels::default();
    let mut groups: BTreeMap<(Option<String>, String, u16, bool), Seen> = BTreeMap::new();
    for (_, r) in &records {
        tunnels.see(r);
        if !r.judged() || !(r.policy_denied() || r.permissive()) {
            continue;
        }
        let Ok(req) = rebuild(r, &tunnels) else {
            continue;
        };
        let policy = match r.sandbox.as_deref() {
            None => Some(&config.policy),
            Some(id) => config.policy_for(Some(id)),
        };
        if policy.is_some_and(|p| judge(p, &req).is_ok()) {
            continue;
        }
        let seen = groups
            .entry((
                r.sandbox.clone(),
                req.host.to_string(),
                req.port,
                req.connect,
            ))
            .or_default();
        if seen.count == 0 {
            seen.first.clone_from(&r.ts);
            seen.connect_only = true;
        }
        seen.count += 1;
        if r.ts < seen.first {
            seen.first.clone_from(&r.ts);
        }
        if r.ts > seen.last {
            seen.last.clone_from(&r.ts);
        }
        seen.reasons.insert(if r.permissive() {
            format!("{} (forwarded by learn --permissive)", r.reason)
        } else {
            r.reason.clone()
        });
        if let Some(s) = &r.sandbox {
            seen.sandboxes.insert(s.clone());
        }
        if let Some((method, path)) = &req.request {
            seen.connect_only = false;
            seen.requests += 1;
            seen.methods.insert(method.to_string());
            seen.paths.insert(generalise(path.decoded()));
        }
    }
    let mut bodies: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut rules = 0;
    for ((sandbox, host, port, connect), seen) in &groups {
        rules += 1;
        let (target, shared_note) = target_file(config, sandbox.as_deref());
        let body = bodies.entry(target).or_default();
        body.push('\n');
        if let Some(note) = shared_note {
            body.push_str(&note);
        }
        body.push_str(&rule_text(config, host, *port, *connect, seen));
    }
    let mut diff = String::new();
    for (target, body) in &bodies {
        let existing = std::fs::read_to_string(target).unwrap_or_default();
        let old_lines = existing.lines().count();
        let mut added: Vec<&str> = body.lines().collect();
        if existing.is_empty() && !added.is_empty() {
            // No blank first line in a new file.
            added.remove(0);
        }
        // Shown relative to the working directory when it is below it.
        let shown = std::env::current_dir()
            .ok()
            .and_then(|cwd| target.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| target.clone());
        let _w = writeln!(diff, "--- {}", shown.display());
        let _w = writeln!(diff, "+++ {}", shown.display());
        let _w = writeln!(
            diff,
            "@@ -{},0 +{},{} @@",
            old_lines,
            old_lines + 1,
            added.len()
        );
        for line in &added {
            let _w = writeln!(diff, "+{line}");
        }
    }
    Ok(Proposal { diff, rules })
}

/// The file a rule proposed for `sandbox`'s requests goes to: that
/// sandbox's first own rule file (its `include`), else the first shared
/// rule file, else the config file itself. A sandbox's rule put in a shared
/// file comes with a note: it would apply to every sandbox.
fn target_file(config: &Config, sandbox: Option<&str>) -> (PathBuf, Option<String>) {
    let shared = || {
        config
            .rule_files
            .first()
            .cloned()
            .unwrap_or_else(|| config.source.clone().into())
    };
    let Some(id) = sandbox else {
        return (shared(), None);
    };
    let own = config
        .sandboxes
        .iter()
        .find(|s| &*s.id == id)
        .and_then(|s| {
            let common = config.policy.rule_files();
            s.policy
                .rule_files()
                .iter()
                .find(|f| !common.contains(f))
                .and_then(|f| config.rule_files.iter().find(|p| p.ends_with(f.as_str())))
                .cloned()
        });
    match own {
        Some(path) => (path, None),
        None => (
            shared(),
            Some(format!(
                "# sandbox {id} has no rule file of its own: placed here, this rule would apply to every sandbox\n"
            )),
        ),
    }
}

fn rule_text(config: &Config, host: &str, port: u16, connect: bool, seen: &Seen) -> String {
    let mut out = String::new();
    let _w = writeln!(
        out,
        "# proposed by `airlock propose`: {} refused request{} from {} to {}{}",
        seen.count,
        if seen.count == 1 { "" } else { "s" },
        seen.first,
        seen.last,
        if seen.sandboxes.is_empty() {
            String::new()
        } else {
            format!(
                " (sandbox {})",
                seen.sandboxes
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _w = writeln!(
        out,
        "# refused as: {}",
        seen.reasons.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let parsed = Host::parse(host).ok();
    let literal = match &parsed {
        Some(Host::Ip(ip)) => Some(classify(*ip)),
        _ => None,
    };
    if let Some(class) = literal {
        let kind = if class == IpClass::Public {
            "an IP literal".to_owned()
        } else {
            format!("an IP literal, a {class} address")
        };
        let _w = writeln!(
            out,
            "# NOT PROPOSED: {host} is {kind}: allow the host by its name instead (uncomment only if you mean it)"
        );
    } else if let Some(ip) = config.dns.resolve.get(host) {
        let class = classify(*ip);
        if class != IpClass::Public {
            let _w = writeln!(
                out,
                "# note: [dns] resolve maps {host} to {ip}, a {class} address: the address guard refuses it unless [dns] allow_cidrs covers it"
            );
        }
    }
    if seen.connect_only {
        let _w = writeln!(
            out,
            "# only the tunnel (CONNECT) was seen: no request inside it was sent, so methods and paths are unknown; read-only until another `airlock learn` run shows more"
        );
    }
    let mut rule = String::new();
    rule.push_str("[[host]]\n");
    let _w = writeln!(rule, "match = \"{host}\"");
    let default_port = if connect { 443 } else { 80 };
    if port != default_port {
        let _w = writeln!(rule, "ports = [{port}]");
    }
    let reads = seen
        .methods
        .iter()
        .all(|m| matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS"));
    if reads {
        rule.push_str("access = \"read\"\n");
    } else {
        let list: Vec<String> = seen.methods.iter().map(|m| format!("\"{m}\"")).collect();
        let _w = writeln!(rule, "methods = [{}]", list.join(", "));
    }
    if !seen.connect_only {
        let paths = fold(&seen.paths);
        let list: Vec<String> = paths
            .iter()
            .map(|p| toml::Value::String(p.clone()).to_string())
            .collect();
        let _w = writeln!(rule, "paths = [{}]", list.join(", "));
    }
    if literal.is_some() {
        for line in rule.lines() {
            let _w = writeln!(out, "# {line}");
        }
    } else {
        out.push_str(&rule);
    }
    out
}

/// At most [`MAX_PATHS`] globs: beyond that, each path's first segment + `/**`.
fn fold(paths: &BTreeSet<String>) -> BTreeSet<String> {
    if paths.len() <= MAX_PATHS {
        return paths.clone();
    }
    paths
        .iter()
        .map(|p| {
            let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
            if first.is_empty() || first.contains('*') {
                "/**".to_owned()
            } else {
                format!("/{first}/**")
            }
        })
        .collect()
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
        .unwrap()
});
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"v?[0-9]+(?:\.[0-9]+)+").unwrap()
});

/// Generalises one decoded path into a glob (see the module docs): ids,
/// hashes and UUIDs become `*`, version numbers inside a segment become
/// `*`, and glob characters in what is kept are escaped.
pub fn generalise(path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|seg| {
            if seg.is_empty() {
                return String::new();
            }
            let hex = seg.len() >= 7
                && seg.bytes().all(|b| b.is_ascii_hexdigit())
                && seg.bytes().any(|b| b.is_ascii_digit());
            if seg.bytes().all(|b| b.is_ascii_digit()) || hex || UUID.is_match(seg) {
                return "*".to_owned();
            }
            let escaped = escape(seg);
            VERSION.replace_all(&escaped, "*").into_owned()
        })
        .collect();
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

/// Escapes glob metacharacters (the rules' globs use `\` escapes).
fn escape(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for c in seg.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{MAX_PATHS, fold, generalise};

    #[test]
    fn proposed_paths_are_valid_toml_strings() {
        for path in ["/a/b", "/a\\[1\\]", "/zero\u{200b}width", "/quote\"d"] {
            let text = format!("p = {}", toml::Value::String(path.to_owned()));
            let back: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(back["p"].as_str(), Some(path), "{text}");
        }
    }

    #[test]
    fn many_paths_fold_to_their_first_segment() {
        let few: std::collections::BTreeSet<String> =
            ["/a/x", "/b/y"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(fold(&few), few);
        let many: std::collections::BTreeSet<String> = (0..=MAX_PATHS)
            .map(|i| format!("/{}/p{i}", if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let folded: Vec<String> = fold(&many).into_iter().collect();
        assert_eq!(folded, ["/a/**", "/b/**"]);
    }

    #[test]
    fn ids_hashes_uuids_and_versions_become_stars() {
        assert_eq!(generalise("/"), "/");
        assert_eq!(generalise("/repos/o/r/issues/123"), "/repos/o/r/issues/*");
        assert_eq!(generalise("/blob/0123abcdef"), "/blob/*");
        assert_eq!(generalise("/v1/messages"), "/v1/messages");
        assert_eq!(generalise("/facade"), "/facade");
        assert_eq!(
            generalise("/x/123e4567-e89b-12d3-a456-426614174000/y"),
            "/x/*/y"
        );
        assert_eq!(
            generalise("/packages/requests-2.31.0.tar.gz"),
            "/packages/requests-*.tar.gz"
        );
        assert_eq!(generalise("/mod/@v/v1.2.3.zip"), "/mod/@v/*.zip");
        assert_eq!(generalise("/a[1]"), "/a\\[1\\]");
    }
}
