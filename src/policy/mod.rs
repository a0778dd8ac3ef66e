//! Which requests may leave: host, port, method and path rules, compiled
//! once into a matcher whose cost does not grow with the number of rules.
//!
//! Lookup is by hash: the exact name (or address) in one map, then each
//! parent suffix of the name in the wildcard map, so a decision costs
//! O(labels in the name) map probes plus the few rules for that host, never a
//! walk over every rule. (No bench measures it on its own; `benches/e2e.rs`
//! measures the whole request path.)
//!
//! This module decides; it does not resolve names (see [`crate::guard`]) or
//! touch the network.

mod decision;
pub mod path;
pub mod rule_tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use globset::GlobSet;
use http::Method;
use smallvec::SmallVec;

pub use crate::host::{AuthorityError, Host, HostError, HostPattern, parse_authority_form};
pub use decision::{Decision, Refusal, RequestFacts, decide};
pub use path::{NormalPath, PathError};

/// Where a rule was written, for messages that tell an operator what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// The rule file (as named in config).
    pub file: Arc<str>,
    /// 1-based line of the rule's `match`.
    pub line: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The methods a rule admits.
#[derive(Debug, Clone)]
pub enum Methods {
    /// Every method except TRACE and TRACK (which are always refused).
    Any,
    /// Only these.
    Only(Vec<Method>),
}

/// A compiled `[[host]]` rule.
#[derive(Debug)]
pub struct Rule {
    /// Where it was written.
    pub source: RuleRef,
    /// Which hosts.
    pub pattern: HostPattern,
    /// Allowed ports; `None` = the scheme's default (443 CONNECT, 80 HTTP).
    pub ports: Option<Vec<u16>>,
    /// Allowed methods.
    pub methods: Methods,
    /// Allowed paths (matched against [`NormalPath::decoded`]); `None` = all.
    pub paths: Option<GlobSet>,
    /// WebSocket upgrades allowed.
    pub websocket: bool,
    /// Credentials added to this rule's requests.
    pub inject: Option<Arc<crate::credentials::inject::InjectionPlan>>,
    /// Rate limit and byte budget.
    pub limits: crate::limits::Limits,
    /// `approval = "required"`: hold each request until approved.
    pub approval: bool,
    /// `approval_timeout`: how long its held requests wait (`None`: `[approval] timeout`).
    pub approval_timeout: Option<std::time::Duration>,
    /// `decider`: who decides its held requests (`None`: as `[approval]` says).
    pub decider: Option<RuleDecider>,
    /// `scan_skip`: pattern ids not blocked in this rule's outgoing
    /// requests (still scanned incoming).
    pub scan_skip: Arc<[Arc<str>]>,
}

impl Rule {
    fn admits_port(&self, port: u16, default_port: u16) -> bool {
        match &self.ports {
            Some(ports) => ports.contains(&port),
            None => port == default_port,
        }
    }

    fn admits_method(&self, method: &Method) -> bool {
        match &self.methods {
            Methods::Any => true,
            Methods::Only(list) => list.contains(method),
        }
    }

    fn admits_path(&self, path: &NormalPath) -> bool {
        self.paths
            .as_ref()
            .is_none_or(|set| set.is_match(path.decoded()))
    }
}

/// Who decides a rule's held requests (its `decider`; see
/// `crate::approval` for how each is asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleDecider {
    /// `"person"`: people only.
    Person,
    /// A decider URL: it alone.
    Url(String),
}

/// How the request reached airlock, which sets the default port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// CONNECT (intercepted TLS, or `https://` absolute-form): default port 443.
    Https,
    /// Plain `http://` absolute-form: default port 80.
    Http,
}

impl Scheme {
    /// 443 or 80.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }

    /// `"https"` or `"http"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// Why a request was denied. Stable strings: tests and the audit log use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No rule names the host.
    HostNotAllowed,
    /// Rules name the host, but not this port.
    PortNotAllowed,
    /// No rule for the host admits the method.
    MethodNotAllowed,
    /// A rule admits the method, but not the path.
    PathNotAllowed,
    /// TRACE / TRACK echo headers (and so credentials) back: always refused.
    MethodRefused,
    /// An upgrade to WebSocket on a rule without `websocket = true`.
    WebsocketNotAllowed,
}

impl Reason {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HostNotAllowed => "host_not_allowed",
            Reason::PortNotAllowed => "port_not_allowed",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::PathNotAllowed => "path_not_allowed",
            Reason::MethodRefused => "method_refused",
            Reason::WebsocketNotAllowed => "websocket_not_allowed",
        }
    }
}

/// A denial, with what the agent and the operator need to know.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Why.
    pub reason: Reason,
    /// `host:port`.
    pub target: String,
    /// The method and path for request-level denials.
    pub request: Option<(Method, String)>,
    /// The rules that named the host (for port/method/path denials).
    pub rules: Vec<RuleRef>,
    /// Where an operator would add a rule for a host no rule names.
    pub rule_files: Arc<[String]>,
}

impl Denied {
    /// The plain-text body for the agent reading the 403: what was refused,
    /// that retrying another way will not help, and which file an operator edits.
    pub fn agent_message(&self) -> String {
        let what = match &self.request {
            Some((m, p)) => format!("{m} {p} on {}", self.target),
            None => self.target.clone(),
        };
        let why = match self.reason {
            Reason::HostNotAllowed => "this host is not on the allowlist".to_owned(),
            Reason::PortNotAllowed => "the host is allowed, but not on this port".to_owned(),
            Reason::MethodNotAllowed => {
                "the rules for this host do not allow this method".to_owned()
            }
            Reason::PathNotAllowed => "the rules for this host do not allow this path".to_owned(),
            Reason::MethodRefused => "TRACE and TRACK are always refused".to_owned(),
            Reason::WebsocketNotAllowed => {
                "the rule for this host does not allow WebSocket upgrades".to_owned()
            }
        };
        let edit = if self.rules.is_empty() {
            format!(
                "an operator can add a [[host]] rule to one of: {}",
                if self.rule_files.is_empty() {
                    "the config file".to_owned()
                } else {
                    self.rule_files.join(", ")
                }
            )
        } else {
            let list: Vec<String> = self.rules.iter().map(ToString::to_string).collect();
            format!("an operator can change the rule at {}", list.join(", "))
        };
        format!(
            "airlock denied {what}: {why}.\n\
             Nothing was sent upstream. Retrying another way (another port, an IP address, \
             another spelling of the name, another proxy setting) will be denied too.\n\
             To allow it, {edit}.\n"
        )
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.reason.as_str(), self.target)?;
        if let Some((m, p)) = &self.request {
            write!(f, " {m} {p}")?;
        }
        Ok(())
    }
}

/// The rules that admit a host and port: the result of the CONNECT-time
/// decision, reused for every request inside that tunnel.
#[derive(Debug, Clone)]
pub struct HostMatch {
    /// Almost always one or two rules: kept inline, no allocation.
    rules: SmallVec<[Arc<Rule>; 2]>,
}

impl HostMatch {
    /// The first matching rule, which audit events name.
    pub fn first(&self) -> Option<&Arc<Rule>> {
        self.rules.first()
    }
}

/// The compiled allowlist.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Arc<Rule>>,
    exact: HashMap<Host, Vec<usize>>,
    subdomains: HashMap<String, Vec<usize>>,
    rule_files: Arc<[String]>,
    placeholders: Vec<Arc<str>>,
}

impl Policy {
    /// Builds the matcher. `rule_files` are named in denials for unknown hosts.
    pub fn new(rules: Vec<Arc<Rule>>, rule_files: Vec<String>) -> Self {
        let mut exact: HashMap<Host, Vec<usize>> = HashMap::new();
        let mut subdomains: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.pattern {
                HostPattern::Exact(h) => exact.entry(h.clone()).or_default().push(i),
                HostPattern::Subdomains(s) => subdomains.entry(s.clone()).or_default().push(i),
            }
        }
        let mut placeholders: Vec<Arc<str>> = rules
            .iter()
            .filter_map(|r| r.inject.as_ref())
            .flat_map(|plan| plan.placeholders().map(Arc::from).collect::<Vec<_>>())
            .collect();
        placeholders.sort();
        placeholders.dedup();
        Self {
            placeholders,
            rules,
            exact,
            subdomains,
            rule_files: rule_files.into(),
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every placeholder any rule swaps (refused anywhere else).
    pub fn placeholders(&self) -> &[Arc<str>] {
        &self.placeholders
    }

    /// Every rule, in config order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The files an operator edits, as named in denials.
    pub fn rule_files(&self) -> &[String] {
        &self.rule_files
    }

    /// Rule indices naming `host`, in config order.
    fn host_candidates(&self, host: &Host) -> SmallVec<[usize; 8]> {
        let mut out: SmallVec<[usize; 8]> = SmallVec::new();
        if let Some(ids) = self.exact.get(host) {
            out.extend_from_slice(ids);
        }
        if let Host::Name(name) = host {
            let mut rest = name.as_str();
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(ids) = self.subdomains.get(rest) {
                    out.extend_from_slice(ids);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The CONNECT-time (or first) decision: does any rule admit this host and port?
    pub fn decide_host(&self, host: &Host, port: u16, scheme: Scheme) -> Result<HostMatch, Denied> {
        let candidates = self.host_candidates(host);
        // Only a refusal names its target: no string on the allowed path.
        let target = || format!("{host}:{port}");
        if candidates.is_empty() {
            return Err(self.denied(Reason::HostNotAllowed, target(), None, Vec::new()));
        }
        let rules: SmallVec<[Arc<Rule>; 2]> = candidates
            .iter()
            .filter_map(|&i| self.rules.get(i))
            .filter(|r| r.admits_port(port, scheme.default_port()))
            .cloned()
            .collect();
        if rules.is_empty() {
            let refs = candidates
                .iter()
                .filter_map(|&i| self.rules.get(i))
                .map(|r| r.source.clone())
                .collect();
            return Err(self.denied(Reason::PortNotAllowed, target(), None, refs));
        }
        Ok(HostMatch { rules })
    }

    /// The per-request decision inside an admitted host: method, path, upgrade.
    pub fn decide_request(
        &self,
        matched: &HostMatch,
        target: impl std::fmt::Display,
        method: &Method,
        path: &NormalPath,
        websocket: bool,
    ) -> Result<Arc<Rule>, Denied> {
        // Built only for a refusal: the allowed path allocates nothing here.
        let request = || Some((method.clone(), path.decoded().to_owned()));
        let refs = || matched.rules.iter().map(|r| r.source.clone()).collect();
        if method.as_str().eq_ignore_ascii_case("TRACE")
            || method.as_str().eq_ignore_ascii_case("TRACK")
        {
            return Err(self.denied(Reason::MethodRefused, target.to_string(), request(), refs()));
        }
        let mut method_ok = false;
        let mut path_ok = false;
        for rule in &matched.rules {
            if !rule.admits_method(method) {
                continue;
            }
            method_ok = true;
            if !rule.admits_path(path) {
                continue;
            }
            path_ok = true;
            if websocket && !rule.websocket {
                continue;
            }
            return Ok(Arc::clone(rule));
        }
        let reason = if !method_ok {
            Reason::MethodNotAllowed
        } else if !path_ok {
            Reason::PathNotAllowed
        } else {
            Reason::WebsocketNotAllowed
        };
        Err(self.denied(reason, target.to_string(), request(), refs()))
    }

    fn denied(
        &self,
        reason: Reason,
        target: String,
        request: Option<(Method, String)>,
        rules: Vec<RuleRef>,
    ) -> Denied {
        Denied {
            reason,
            target,
            request,
            rules,
            rule_files: Arc::clone(&self.rule_files),
        }
    }
}

#[cfg(test)]
mod tests;
