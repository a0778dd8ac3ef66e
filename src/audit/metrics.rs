//! Counters derived from the same decisions the audit log records, served
//! in Prometheus text format on the admin listener.
//!
//! Every count comes from an [`AuditEvent`] passing through the sink, so
//! the metrics and the log cannot disagree. Labels are bounded: decisions,
//! reason codes and pattern ids come from fixed sets, never from hosts or
//! paths the sandbox chooses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::{AuditEvent, Kind, Outcome};

/// (kind, decision, reason).
type DecisionKey = (&'static str, &'static str, &'static str);

fn same_key(a: &DecisionKey, b: &DecisionKey) -> bool {
    let same = |x: &str, y: &str| std::ptr::eq(x, y) || x == y;
    same(a.0, b.0) && same(a.1, b.1) && same(a.2, b.2)
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (kind, decision, reason) → sandbox → count. Two levels so that
    /// counting looks the sandbox up by `&str` (no allocation per event).
    /// The first is a short list (the codes are a fixed set), searched by
    /// address before content: a request's codes are the same literals
    /// every time, so the usual lookup compares no strings.
    by_decision: Mutex<Vec<(DecisionKey, BTreeMap<String, u64>)>>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    findings: Mutex<BTreeMap<String, u64>>,
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
    active_tunnels: AtomicI64,
    audit_dropped: AtomicU64,
    audit_write_errors: AtomicU64,
    rules_version: Mutex<String>,
}

impl Metrics {
    /// Counts one event.
    pub fn record(&self, ev: &AuditEvent) {
        self.decision(
            ev.kind.as_str(),
            ev.decision.as_str(),
            ev.reason,
            ev.sandbox.as_deref(),
        );
        self.bytes_up.fetch_add(ev.bytes_up, Ordering::Relaxed);
        self.bytes_down.fetch_add(ev.bytes_down, Ordering::Relaxed);
        match ev.kind {
            Kind::Finding => {
                if let (Some(p), Ok(mut m)) = (ev.pattern.as_ref(), self.findings.lock()) {
                    *m.entry(p.clone()).or_default() += 1;
                }
            }
            Kind::Reload if ev.decision == Outcome::Allow => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Reload => {
                self.reloads_refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts one decision of `sandbox` (`None`: no sandbox identities).
    pub fn decision(
        &self,
        kind: &'static str,
        decision: &'static str,
        reason: &'static str,
        sandbox: Option<&str>,
    ) {
        let Ok(mut m) = self.by_decision.lock() else {
            return;
        };
        let key = (kind, decision, reason);
        let at = match m.iter().position(|(k, _)| same_key(k, &key)) {
            Some(at) => at,
            None => {
                m.push((key, BTreeMap::new()));
                m.len() - 1
            }
        };
        let by_sandbox = &mut m[at].1;
        let sandbox = sandbox.unwrap_or_default();
        match by_sandbox.get_mut(sandbox) {
            Some(n) => *n += 1,
            None => {
                by_sandbox.insert(sandbox.to_owned(), 1);
            }
        }
    }

    /// A tunnel opened (+1) or closed (-1).
    pub fn tunnel(&self, delta: i64) {
        self.active_tunnels.fetch_add(delta, Ordering::Relaxed);
    }

    /// An audit event was dropped (queue full).
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of the audit output failed.
    pub fn audit_write_error(&self) {
        self.audit_write_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The rules version now in force.
    pub fn set_rules_version(&self, v: &str) {
        if let Ok(mut s) = self.rules_version.lock() {
            v.clone_into(&mut s);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP airlock_decisions_total Decisions by kind, outcome and reason.\n# TYPE airlock_decisions_total counter\n");
        // Totals derived from the decision rows, not counted twice.
        let (mut injections, mut secret_errors) = (0, 0);
        if let Ok(m) = self.by_decision.lock() {
            for ((kind, _, reason), by) in m.iter() {
                let n: u64 = by.values().sum();
                if *kind == "inject" {
                    injections += n;
                }
                if *reason == "secret_unavailable" {
                    secret_errors += n;
                }
            }
            let mut keys: Vec<_> = m.iter().collect();
            keys.sort_unstable_by_key(|(k, _)| *k);
            let rows = keys
                .into_iter()
                .flat_map(|(k, by)| by.iter().map(move |(sandbox, n)| (k, sandbox, n)));
            for ((kind, decision, reason), sandbox, n) in rows {
                // Sandbox ids come from config, so the label set stays bounded.
                let sandbox = if sandbox.is_empty() {
                    String::new()
                } else {
                    format!(",sandbox=\"{sandbox}\"")
                };
                let _ = writeln!(
                    out,
                    "airlock_decisions_total{{kind=\"{kind}\",decision=\"{decision}\",reason=\"{reason}\"{sandbox}}} {n}"
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            &mut out,
            "airlock_bytes_up_total",
            "Request body bytes sent upstream.",
            load(&self.bytes_up),
        );
        counter(
            &mut out,
            "airlock_bytes_down_total",
            "Response body bytes returned to sandboxes.",
            load(&self.bytes_down),
        );
        counter(
            &mut out,
            "airlock_injections_total",
            "Requests that carried an injected credential.",
            injections,
        );
        counter(
            &mut out,
            "airlock_secret_errors_total",
            "Requests refused because a secret was unavailable.",
            secret_errors,
        );
        counter(
            &mut out,
            "airlock_reloads_total",
            "Config reloads applied.",
            load(&self.reloads_ok),
        );
        counter(
            &mut out,
            "airlock_reloads_refused_total",
            "Config reloads refused (last good kept).",
            load(&self.reloads_refused),
        );
        counter(
            &mut out,
            "airlock_audit_dropped_total",
            "Audit events dropped because the queue was full.",
            load(&self.audit_dropped),
        );
        counter(
            &mut out,
            "airlock_audit_write_errors_total",
            "Writes (batches of events) the audit output refused: a full disk, a closed pipe.",
            load(&self.audit_write_errors),
        );
        out.push_str("# HELP airlock_scan_findings_total Secrets found, by pattern id.\n# TYPE airlock_scan_findings_total counter\n");
        if let Ok(m) = self.findings.lock() {
            for (p, n) in m.iter() {
                let _ = writeln!(out, "airlock_scan_findings_total{{pattern=\"{p}\"}} {n}");
            }
        }
        let _ = write!(
            out,
            "# HELP airlock_active_tunnels Intercepted tunnels open now.\n# TYPE airlock_active_tunnels gauge\nairlock_active_tunnels {}\n",
            self.active_tunnels.load(Ordering::Relaxed)
        );
        if let Ok(v) = self.rules_version.lock() {
            let _ = write!(
                out,
                "# HELP airlock_rules_info The rules version in force.\n# TYPE airlock_rules_info gauge\nairlock_rules_info{{version=\"{v}\"}} 1\n"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same code from two different places (two addresses) is one row.
    fn leaked(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }

    #[test]
    fn decisions_are_counted_by_content_and_rendered_in_order() {
        let m = Metrics::default();
        m.decision("request", "allow", "rule_matched", None);
        m.decision("connect", "deny", "host_not_allowed", None);
        m.decision(
            leaked("request"),
            leaked("allow"),
            leaked("rule_matched"),
            None,
        );
        m.decision("request", "allow", "rule_matched", Some("ci"));
        m.decision("inject", "inject", "credential_added", None);
        m.decision("inject", "inject", "credential_added", None);
        let text = m.render();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("airlock_decisions_total{"))
            .collect();
        assert_eq!(
            rows,
            [
                "airlock_decisions_total{kind=\"connect\",decision=\"deny\",reason=\"host_not_allowed\"} 1",
                "airlock_decisions_total{kind=\"inject\",decision=\"inject\",reason=\"credential_added\"} 2",
                "airlock_decisions_total{kind=\"request\",decision=\"allow\",reason=\"rule_matched\"} 2",
                "airlock_decisions_total{kind=\"request\",decision=\"allow\",reason=\"rule_matched\",sandbox=\"ci\"} 1",
            ]
        );
        assert!(text.contains("airlock_injections_total 2"), "{text}");
        m.decision("request", "error", "secret_unavailable", None);
        m.decision("request", "error", "secret_unavailable", Some("ci"));
        let text = m.render();
        assert!(text.contains("airlock_secret_errors_total 2"), "{text}");
    }
}
