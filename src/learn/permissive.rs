//! `airlock learn --permissive`: requests the rules refuse for their host,
//! port, method, path or upgrade are forwarded anyway, each marked
//! `"learn":"permissive"` in its audit event (with the refusal's reason)
//! and warned about on stderr. For a throwaway environment only.
//!
//! What is never overridden: TRACE/TRACK, a misplaced credential
//! placeholder, a credential over plain http, the address guard, identity,
//! scanning. A forwarded request gets no credential (the stand-in rule
//! injects nothing) and no approval hold.

use std::sync::Arc;

use crate::audit::AuditEvent;
use crate::policy::{Host, HostPattern, Methods, Reason, Refusal, Rule, RuleRef};

/// The audit value marking a forwarded refusal.
pub const MARK: &str = "permissive";

/// Marks `ev` as forwarded despite `reason`.
pub fn mark(ev: &mut AuditEvent, reason: &'static str) {
    tracing::warn!(
        host = %ev.host.as_ref().map(ToString::to_string).unwrap_or_default(),
        reason,
        "learn --permissive: forwarding what the rules refuse"
    );
    ev.reason = reason;
    ev.learn = Some(MARK);
    ev.rule = None;
}

/// The stand-in rule a refused request is forwarded under, and the
/// refusal's reason; `None` for what is never overridden.
pub fn override_refusal(refusal: &Refusal, host: &Host) -> Option<(Arc<Rule>, &'static str)> {
    let Refusal::Denied(denied) = refusal else {
        return None;
    };
    if denied.reason == Reason::MethodRefused {
        return None;
    }
    let rule = Rule {
        source: RuleRef {
            file: Arc::from("<learn --permissive>"),
            line: 0,
        },
        pattern: HostPattern::Exact(host.clone()),
        ports: None,
        methods: Methods::Any,
        paths: None,
        websocket: true,
        inject: None,
        limits: crate::limits::Limits::default(),
        approval: false,
        approval_timeout: None,
        decider: None,
        scan_skip: Arc::from(Vec::new()),
    };
    Some((Arc::new(rule), denied.reason.as_str()))
}
