//! The policy tools that read the audit log: `airlock replay` (re-judge
//! every recorded request under candidate rules, [`replay`]) and `airlock
//! propose` (turn what was refused into proposed rules, [`propose`]). Both
//! judge through [`crate::policy::decide`], the proxy's own decision.
//!
//! The audit log is read as written by [`crate::audit`]: one JSON object per
//! line. A line that is not one is an error naming the file and line; fields
//! this reader does not know are ignored.

pub mod permissive;
pub mod propose;
pub mod replay;

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context as _;
use http::{HeaderMap, Method, Uri};
use serde::Deserialize;

use crate::policy::{Decision, Host, NormalPath, Policy, RequestFacts, Scheme, decide};

/// One audit line, as far as replay and propose read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    /// RFC 3339 time.
    pub ts: String,
    /// `connect`, `request`, `approval`, ...
    pub kind: String,
    /// Client address.
    #[serde(default)]
    pub client: Option<String>,
    /// Sandbox id.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Host.
    #[serde(default)]
    pub host: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Method.
    #[serde(default)]
    pub method: Option<String>,
    /// Normalised path.
    #[serde(default)]
    pub path: Option<String>,
    /// Deciding rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// `allow`, `deny`, ...
    pub decision: String,
    /// Secret refs injected.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    /// Reason code.
    pub reason: String,
    /// `permissive` when `airlock learn --permissive` forwarded a request
    /// the rules refuse.
    #[serde(default)]
    pub learn: Option<String>,
}

/// The reason codes of [`crate::policy::decide`]'s refusals (and the
/// CONNECT-time host decision).
pub const POLICY_REFUSALS: &[&str] = &[
    "host_not_allowed",
    "port_not_allowed",
    "method_not_allowed",
    "path_not_allowed",
    "method_refused",
    "websocket_not_allowed",
    "placeholder_misuse",
    "inject_over_http",
];

/// Reasons for which the request never reached the policy (no identity, a
/// malformed request): nothing to re-judge.
const NOT_JUDGED: &[&str] = &[
    "proxy_auth_required",
    "misdirected",
    "bad_request",
    "bad_path",
    "not_proxy_request",
    "unsupported",
];

impl Record {
    /// True when the rules refused it (and `learn --permissive` did not
    /// forward it anyway).
    pub fn policy_denied(&self) -> bool {
        POLICY_REFUSALS.contains(&self.reason.as_str())
    }

    /// True when `learn --permissive` forwarded a request the rules refuse.
    pub fn permissive(&self) -> bool {
        self.learn.as_deref() == Some("permissive")
    }

    /// True when the policy judged it (a connect or request decision).
    pub fn judged(&self) -> bool {
        matches!(self.kind.as_str(), "connect" | "request")
            && !NOT_JUDGED.contains(&self.reason.as_str())
            && self.host.is_some()
            && self.port.is_some()
    }
}

/// Reads an audit log: every line with its 1-based number.
///
/// # Errors
/// The file cannot be read, or a line is not an audit event (named
/// `FILE:LINE`).
pub fn read_log(path: &Path) -> anyhow::Result<Vec<(usize, Record)>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the audit log {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not an airlock audit event (not UTF-8: {e})",
                path.display(),
                i + 1
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not an airlock audit event (one JSON object per line, with ts, kind, decision and reason): {e}",
                path.display(),
                i + 1
            )
        })?;
        out.push((i + 1, record));
    }
    Ok(out)
}

/// A recorded request, ready to be judged again.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
    /// Through CONNECT (https).
    pub connect: bool,
    /// Method and normalised path; `None` for a CONNECT-time decision.
    pub request: Option<(Method, NormalPath)>,
}

impl Replayed {
    /// `https://host:port/path` (or `CONNECT host:port`), for messages.
    pub fn describe(&self) -> String {
        let scheme = if self.connect { "https" } else { "http" };
        match &self.request {
            Some((m, p)) => format!("{m} {scheme}://{}:{}{}", self.host, self.port, p.decoded()),
            None => format!("CONNECT {}:{}", self.host, self.port),
        }
    }
}

/// Which recorded requests went through a CONNECT tunnel: the connect
/// events' (client, host, port).
#[derive(Debug, Default)]
pub struct Tunnels(HashSet<(String, String, u16)>);

impl Tunnels {
    /// Notes a connect event.
    pub fn see(&mut self, r: &Record) {
        if r.kind == "connect"
            && let (Some(c), Some(h), Some(p)) = (&r.client, &r.host, r.port)
        {
            self.0.insert((c.clone(), h.clone(), p));
        }
    }

    fn contains(&self, r: &Record) -> bool {
        match (&r.client, &r.host, r.port) {
            (Some(c), Some(h), Some(p)) => self.0.contains(&(c.clone(), h.clone(), p)),
            _ => false,
        }
    }
}

/// Rebuilds the request of a judged record. A request event counts as
/// inside a tunnel when a connect event for the same client, host and
/// port came before it, and as plain http otherwise (the audit log does not
/// record the scheme).
///
/// # Errors
/// A host, method or path the proxy would not have produced.
pub fn rebuild(r: &Record, tunnels: &Tunnels) -> Result<Replayed, String> {
    let host = Host::parse(r.host.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let port = r.port.ok_or("no port")?;
    if r.kind == "connect" {
        return Ok(Replayed {
            host,
            port,
            connect: true,
            request: None,
        });
    }
    let method = r
        .method
        .as_deref()
        .ok_or("a request event without a method")?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let path = r.path.as_deref().ok_or("a request event without a path")?;
    let path = NormalPath::parse(path).map_err(|e| e.to_string())?;
    Ok(Replayed {
        host,
        port,
        connect: tunnels.contains(r),
        request: Some((method, path)),
    })
}

/// The policy's decision on a rebuilt request; a CONNECT-time record is
/// judged on host and port alone, as the proxy does before the tunnel opens.
pub fn judge(policy: &Policy, req: &Replayed) -> Decision {
    let Some((method, path)) = &req.request else {
        return policy
            .decide_host(&req.host, req.port, Scheme::Https)
            .map_err(Into::into)
            .and_then(|m| {
                m.first()
                    .cloned()
                    .ok_or_else(|| unreachable_denial(policy, req))
            });
    };
    let scheme = if req.connect {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let uri: Uri = format!(
        "{}://{}:{}/",
        scheme.as_str(),
        authority_host(&req.host),
        req.port
    )
    .parse()
    .unwrap_or_default();
    let headers = HeaderMap::new();
    decide(
        policy,
        &RequestFacts {
            host: &req.host,
            port: req.port,
            scheme,
            connect: req.connect,
            method,
            path,
            websocket: false,
            headers: &headers,
            uri: &uri,
        },
    )
}

/// A host admitted with no rule cannot happen; judged a denial all the same.
fn unreachable_denial(policy: &Policy, req: &Replayed) -> crate::policy::Refusal {
    crate::policy::Denied {
        reason: crate::policy::Reason::HostNotAllowed,
        target: format!("{}:{}", req.host, req.port),
        request: None,
        rules: Vec::new(),
        rule_files: policy.rule_files().to_vec().into(),
    }
    .into()
}

fn authority_host(h: &Host) -> String {
    match h {
        Host::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::read_log;

    #[test]
    fn a_bad_line_is_named_by_number_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = r#"{"ts":"t","kind":"connect","host":"a.test","port":443,"decision":"deny","reason":"host_not_allowed","new_field":1}"#;
        for (bad, want) in [
            (b"{\"ts\":1}".to_vec(), "log:3: not an airlock audit event"),
            (
                vec![0xff, 0xfe],
                "log:3: not an airlock audit event (not UTF-8",
            ),
            (b"[1,2]".to_vec(), "log:3: not an airlock audit event"),
            (
                br#"{"ts":"t","kind":"k","decision":"d","reason":"r","port":70000}"#.to_vec(),
                "log:3:",
            ),
        ] {
            let mut text = format!("{good}\n\n").into_bytes();
            text.extend_from_slice(&bad);
            let path = dir.path().join("log");
            std::fs::write(&path, &text).unwrap();
            let err = read_log(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        std::fs::write(dir.path().join("log"), format!("{good}\n")).unwrap();
        let records = read_log(&dir.path().join("log")).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, 1);
    }
}
