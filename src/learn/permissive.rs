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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::override_refusal;
    use crate::policy::{Denied, Host, Reason, Refusal, RuleRef};

    fn denied(reason: Reason) -> Refusal {
        Denied {
            reason,
            target: "x.test:443".into(),
            request: None,
            rules: Vec::new(),
            rule_files: Arc::from(Vec::<String>::new()),
        }
        .into()
    }

    #[test]
    fn only_host_port_method_path_and_upgrade_refusals_are_overridden() {
        let host = Host::parse("x.test").unwrap();
        for reason in [
            Reason::HostNotAllowed,
            Reason::PortNotAllowed,
            Reason::MethodNotAllowed,
            Reason::PathNotAllowed,
            Reason::WebsocketNotAllowed,
        ] {
            let (rule, code) = override_refusal(&denied(reason), &host).unwrap();
            assert_eq!(code, reason.as_str());
            assert!(
                rule.inject.is_none() && !rule.approval,
                "no credential, no hold"
            );
        }
        assert!(override_refusal(&denied(Reason::MethodRefused), &host).is_none());
        assert!(override_refusal(&Refusal::Placeholder(Arc::from("P")), &host).is_none());
        let r = RuleRef {
            file: Arc::from("f"),
            line: 1,
        };
        assert!(override_refusal(&Refusal::InjectOverHttp(r), &host).is_none());
    }
}
