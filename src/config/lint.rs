//! What `airlock check` (and `serve`, which compiles the same way) catches
//! beyond syntax: things that load but would bite later.
//!
//! Errors (the config is refused): an unknown HTTP method, a wildcard on a
//! public suffix, a `match` written as a URL, an `include` glob that
//! matches no file. Warnings (printed by `check`, logged by `serve`): a
//! rule that can never match because an earlier one admits everything it
//! would, and two rules that can match the same request with different
//! injections.

use std::sync::Arc;

use crate::policy::{Host, HostPattern, Methods, Rule};

/// The methods a rule may list: RFC 9110's, PATCH (RFC 5789), QUERY, and
/// WebDAV's (RFC 4918, 3253, 4791, 3744, 5323). Anything else is a typo
/// (`GTE`) that would silently allow nothing.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "PATCH",
    "QUERY",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "MKCALENDAR",
    "ACL",
];

/// `Some(message)` when `upper` (an upper-cased method) is not one airlock knows.
pub(super) fn unknown_method(upper: &str) -> Option<String> {
    (!KNOWN_METHODS.contains(&upper)).then(|| {
        format!(
            "host.methods: `{upper}` is not a known HTTP method (known: {})",
            KNOWN_METHODS.join(", ")
        )
    })
}

/// `Some(message)` when a `match` is written as a URL (`https://host`,
/// `host/path`) instead of a host name.
pub(super) fn url_as_match(s: &str) -> Option<String> {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None if s.contains('/') => (None, s),
        None => return None,
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or(host);
    let port = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty());
    let mut hint = format!("match = \"{}\"", port.map_or(host, |(h, _)| h));
    if let Some((_, p)) = port {
        hint.push_str(&format!(", ports = [{p}]"));
    } else if scheme == Some("http") {
        hint.push_str(", ports = [80]");
    }
    if rest.contains('/') {
        hint.push_str(", and `paths` for the path");
    }
    Some(format!(
        "host.match: `{s}` is a URL; match takes a host name, not a URL (write {hint})"
    ))
}

/// `Some(message)` when `*.suffix` would admit every name under a public
/// suffix of the Public Suffix List's ICANN section (`*.com`, `*.co.uk`):
/// names anyone can register.
pub(super) fn public_suffix_wildcard(suffix: &str) -> Option<String> {
    let found = psl::suffix(suffix.as_bytes())?;
    (found.as_bytes() == suffix.as_bytes() && found.typ() == Some(psl::Type::Icann)).then(|| {
        format!(
            "host.match: `*.{suffix}` admits every name under the public suffix `{suffix}` \
             (anyone can register one); name the domains you mean, e.g. \"*.example.{suffix}\""
        )
    })
}

/// The warnings for one policy's rules, in order: shadowed rules and
/// overlapping rules with different injections.
pub(super) fn overlaps(rules: &[Arc<Rule>]) -> Vec<String> {
    let mut out = Vec::new();
    for (j, b) in rules.iter().enumerate() {
        for a in &rules[..j] {
            if a.source == b.source {
                continue;
            }
            if shadows(a, b) {
                out.push(format!(
                    "{}: warning: this rule can never match: the earlier rule at {} (match \"{}\") admits every request it would",
                    b.source, a.source, a.pattern
                ));
                break;
            }
            if may_match_same(a, b) && injection(a) != injection(b) {
                out.push(format!(
                    "{}: warning: this rule and the earlier rule at {} can match the same request with different injections; the earlier one decides",
                    b.source, a.source
                ));
            }
        }
    }
    out
}

/// True when `a` admits every request `b` admits (so `b`, later, never decides).
fn shadows(a: &Rule, b: &Rule) -> bool {
    covers(&a.pattern, &b.pattern)
        && ports_cover(a.ports.as_deref(), b.ports.as_deref())
        && match (&a.methods, &b.methods) {
            (Methods::Any, _) => true,
            (Methods::Only(_), Methods::Any) => false,
            (Methods::Only(la), Methods::Only(lb)) => lb.iter().all(|m| la.contains(m)),
        }
        && a.paths.is_none()
        && (a.websocket || !b.websocket)
}

/// True when some request is admitted by both (paths are compared only
/// when one rule has none: globs are not intersected).
fn may_match_same(a: &Rule, b: &Rule) -> bool {
    (covers(&a.pattern, &b.pattern) || covers(&b.pattern, &a.pattern))
        && ports_meet(a.ports.as_deref(), b.ports.as_deref())
        && match (&a.methods, &b.methods) {
            (Methods::Any, _) | (_, Methods::Any) => true,
            (Methods::Only(la), Methods::Only(lb)) => la.iter().any(|m| lb.contains(m)),
        }
        && (a.paths.is_none() || b.paths.is_none())
}

/// True when every host of `b` is a host of `a`.
fn covers(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (HostPattern::Exact(x), HostPattern::Exact(y)) => x == y,
        (HostPattern::Subdomains(s), HostPattern::Exact(Host::Name(n))) => n
            .strip_suffix(s.as_str())
            .is_some_and(|head| head.ends_with('.')),
        (HostPattern::Subdomains(s), HostPattern::Subdomains(t)) => {
            t == s
                || t.strip_suffix(s.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        }
        _ => false,
    }
}

/// No `ports` admits 443 over CONNECT and 80 over plain http.
const DEFAULT_PORTS: &[u16] = &[443, 80];

fn ports_cover(a: Option<&[u16]>, b: Option<&[u16]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(pa), None) => DEFAULT_PORTS.iter().all(|p| pa.contains(p)),
        (None, Some(_)) => false,
        (Some(pa), Some(pb)) => pb.iter().all(|p| pa.contains(p)),
    }
}

fn ports_meet(a: Option<&[u16]>, b: Option<&[u16]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(p), None) | (None, Some(p)) => DEFAULT_PORTS.iter().any(|d| p.contains(d)),
        (Some(pa), Some(pb)) => pa.iter().any(|p| pb.contains(p)),
    }
}

/// What a rule injects, comparably: each header with its secret refs.
fn injection(rule: &Rule) -> Vec<(String, Vec<String>)> {
    rule.inject
        .iter()
        .flat_map(|plan| plan.items())
        .map(|item| {
            (
                item.header().as_str().to_owned(),
                item.secrets().iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_named_as_urls() {
        let m = url_as_match("https://api.github.com/repos").unwrap();
        assert!(m.contains("match takes a host name, not a URL"), "{m}");
        assert!(m.contains("match = \"api.github.com\""), "{m}");
        assert!(url_as_match("api.github.com").is_none());
        assert!(url_as_match("*.github.com").is_none());
        let m = url_as_match("http://h.test:8080").unwrap();
        assert!(m.contains("ports = [8080]"), "{m}");
    }

    #[test]
    fn public_suffixes_are_known() {
        assert!(public_suffix_wildcard("com").is_some());
        assert!(public_suffix_wildcard("co.uk").is_some());
        assert!(public_suffix_wildcard("github.com").is_none());
        assert!(public_suffix_wildcard("example.test").is_none());
        // Not in the list (a test TLD): not flagged.
        assert!(public_suffix_wildcard("test").is_none());
    }

    #[test]
    fn methods() {
        assert!(unknown_method("GTE").is_some());
        assert!(unknown_method("PATCH").is_none());
        assert!(unknown_method("PROPFIND").is_none());
    }
}
