//! The one decision on one request: [`decide`], used by the proxy for every
//! request (inside a tunnel or absolute-form) and by `airlock explain`, so
//! that what `explain` says is what the proxy does.
//!
//! In order: the host and port ([`Policy::decide_host`]), the method, path
//! and upgrade ([`Policy::decide_request`]), a credential placeholder
//! anywhere but its own header of its own host, and a credential injected
//! over plain HTTP. The caller picks the [`Policy`] (the sandbox's, through
//! [`crate::config::Config::policy_for`]).
//!
//! The address guard is not an input: it runs after the decision, when the
//! connector resolves and dials, so that a denied host is never looked up.

use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

use super::{Denied, NormalPath, Policy, Rule, RuleRef, Scheme};
use crate::credentials::inject::misplaced_placeholder;
use crate::host::Host;

/// What [`decide`] judges: everything it needs about one request, nothing
/// it does not.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The host the request is bound to (CONNECT host, or the URL's).
    pub host: &'a Host,
    /// Its port.
    pub port: u16,
    /// What travels upstream: `Http` is unencrypted.
    pub scheme: Scheme,
    /// Reached through CONNECT: the rules' default port is then 443,
    /// whatever is spoken inside the tunnel.
    pub connect: bool,
    /// The method.
    pub method: &'a Method,
    /// The normalised path.
    pub path: &'a NormalPath,
    /// A WebSocket upgrade.
    pub websocket: bool,
    /// The request's headers (where a placeholder may be).
    pub headers: &'a HeaderMap,
    /// The request's URI (where a placeholder must not be).
    pub uri: &'a Uri,
}

impl RequestFacts<'_> {
    /// The scheme whose default port the rules use.
    fn policy_scheme(&self) -> Scheme {
        if self.connect {
            Scheme::Https
        } else {
            self.scheme
        }
    }
}

/// Why [`decide`] refused a request.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// No rule admits the host, port, method, path or upgrade.
    Denied(Box<Denied>),
    /// A placeholder outside the one header of the one host it stands in for.
    Placeholder(Arc<str>),
    /// The rule injects a credential, and this request is unencrypted.
    InjectOverHttp(RuleRef),
}

impl Refusal {
    /// The stable code (the same as the proxy's `airlock-error`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Denied(d) => d.reason.as_str(),
            Refusal::Placeholder(_) => "placeholder_misuse",
            Refusal::InjectOverHttp(_) => "inject_over_http",
        }
    }
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Self {
        Refusal::Denied(Box::new(d))
    }
}

/// The rule that admits the request, or why it is refused.
pub type Decision = Result<Arc<Rule>, Refusal>;

/// Judges one request under `policy`.
///
/// # Errors
/// The [`Refusal`]: no rule admits it, a misplaced placeholder, or a
/// credential that would travel unencrypted.
pub fn decide(policy: &Policy, facts: &RequestFacts<'_>) -> Decision {
    let matched = policy.decide_host(facts.host, facts.port, facts.policy_scheme())?;
    let rule = policy.decide_request(
        &matched,
        format_args!("{}:{}", facts.host, facts.port),
        facts.method,
        facts.path,
        facts.websocket,
    )?;
    if let Some(p) = misplaced_placeholder(
        policy.placeholders(),
        rule.inject.as_deref(),
        facts.headers,
        facts.uri,
    ) {
        return Err(Refusal::Placeholder(Arc::from(p)));
    }
    if facts.scheme == Scheme::Http
        && rule
            .inject
            .as_ref()
            .is_some_and(|plan| !plan.over_plain_http)
    {
        return Err(Refusal::InjectOverHttp(rule.source.clone()));
    }
    Ok(rule)
}
