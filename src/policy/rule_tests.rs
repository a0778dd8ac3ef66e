//! Policy tests written in rule files (`[[test]]`): a request and the
//! decision the rules must give it, run by `airlock check` through
//! [`super::decide`], the function the proxy uses for every request.
//!
//! ```toml
//! [[test]]
//! url = "https://api.github.com/repos/o/r/issues"
//! method = "POST"            # default GET
//! sandbox = "agent-a"        # default: the sandbox whose include read the file
//! expect = "allow"           # "allow" | "deny" | "approval"
//! inject = "tools/github#token"   # optional: the rule must inject this secret
//! ```
//!
//! `allow` means admitted without approval; `approval` admitted by a rule
//! with `approval = "required"`; `deny` refused by policy (host, port,
//! method, path, or a credential that would travel over plain http).

use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

use super::{Host, NormalPath, Policy, RequestFacts, RuleRef, Scheme, decide};

/// What a test expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Admitted, not held for approval.
    Allow,
    /// Refused by policy.
    Deny,
    /// Admitted by a rule that holds it for approval.
    Approval,
}

impl Expect {
    /// Parses `allow`, `deny` or `approval`.
    ///
    /// # Errors
    /// Anything else, with the valid words.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Expect::Allow),
            "deny" => Ok(Expect::Deny),
            "approval" => Ok(Expect::Approval),
            other => Err(format!(
                "`{other}` is not valid: use \"allow\", \"deny\" or \"approval\""
            )),
        }
    }

    /// The word as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Approval => "approval",
        }
    }
}

/// One compiled `[[test]]`.
#[derive(Debug, Clone)]
pub struct RuleTest {
    /// Where it was written (the line of its `url`).
    pub source: RuleRef,
    /// The URL as written.
    pub url: String,
    /// Its parsed parts.
    pub uri: Uri,
    /// The host.
    pub host: Host,
    /// The port (the scheme's default if the URL has none).
    pub port: u16,
    /// `https` (through CONNECT, as clients send it) or `http`.
    pub scheme: Scheme,
    /// The normalised path.
    pub path: NormalPath,
    /// The method.
    pub method: Method,
    /// The sandbox the request comes from.
    pub sandbox: Option<Arc<str>>,
    /// The decision expected.
    pub expect: Expect,
    /// A secret ref the deciding rule must inject.
    pub inject: Option<String>,
}

impl RuleTest {
    /// Parses a test's URL and method (config compile adds file:line to the error).
    ///
    /// # Errors
    /// What is wrong with the URL or method.
    pub fn parse_request(
        url: &str,
        method: &str,
    ) -> Result<(Uri, Host, u16, Scheme, NormalPath, Method), String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(format!("`{url}`: give an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let host = Host::parse(authority.host()).map_err(|e| format!("`{url}`: {e}"))?;
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        let path = NormalPath::parse(if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        })
        .map_err(|e| format!("`{url}`: {e}"))?;
        let upper = method.to_ascii_uppercase();
        let method = Method::from_bytes(upper.as_bytes())
            .map_err(|_| format!("`{method}` is not an HTTP method"))?;
        Ok((uri, host, port, scheme, path, method))
    }
}

/// What the rules decided for a test.
fn outcome(policy: &Policy, t: &RuleTest) -> (Expect, String, Vec<String>) {
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        host: &t.host,
        port: t.port,
        scheme: t.scheme,
        connect: t.scheme == Scheme::Https,
        method: &t.method,
        path: &t.path,
        websocket: false,
        headers: &headers,
        uri: &t.uri,
    };
    match decide(policy, &facts) {
        Ok(rule) => {
            let injected = rule
                .inject
                .as_ref()
                .map(|plan| plan.secrets().map(ToString::to_string).collect())
                .unwrap_or_default();
            let got = if rule.approval {
                Expect::Approval
            } else {
                Expect::Allow
            };
            (got, format!("by the rule at {}", rule.source), injected)
        }
        Err(refusal) => (Expect::Deny, format!("({})", refusal.code()), Vec::new()),
    }
}

/// Runs every test; returns one line per failure, each starting with the
/// test's `file:line`. `policy_for` picks the policy for a sandbox (`None`:
/// the rules shared by every client).
pub fn run<'a>(
    tests: &[RuleTest],
    policy_for: impl Fn(Option<&str>) -> Option<&'a Policy>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for t in tests {
        let Some(policy) = policy_for(t.sandbox.as_deref()) else {
            failures.push(format!(
                "{}: test {} {}: this config has no sandbox `{}`",
                t.source,
                t.method,
                t.url,
                t.sandbox.as_deref().unwrap_or_default()
            ));
            continue;
        };
        let (got, how, injected) = outcome(policy, t);
        if got != t.expect {
            failures.push(format!(
                "{}: test {} {}: expected {}, got {} {how}",
                t.source,
                t.method,
                t.url,
                t.expect.as_str(),
                got.as_str()
            ));
            continue;
        }
        if let Some(want) = &t.inject
            && !injected.iter().any(|s| s == want)
        {
            failures.push(format!(
                "{}: test {} {}: expected the secret {want} injected, got {} {how}",
                t.source,
                t.method,
                t.url,
                if injected.is_empty() {
                    "none".to_owned()
                } else {
                    injected.join(", ")
                }
            ));
        }
    }
    failures
}
