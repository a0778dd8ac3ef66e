//! Per-rule approval: a `[[host]]` rule with `approval = "required"` may
//! name who decides its held requests and how long they wait, over the
//! `[approval]` defaults.
//!
//! - `decider = "https://..."`: that decider alone decides. The request is
//!   not listed for people (the admin API and `airlock approvals` do not see
//!   it); a decider that errs, answers garbage or does not answer within
//!   `[approval] decider_timeout` denies it (never a wait for a person).
//! - `decider = "person"`: people alone decide (admin API, CLI); the
//!   `[approval]` decider is not asked.
//! - no `decider`: as `[approval]` says.
//!
//! `approval_timeout` bounds the wait either way (default `[approval] timeout`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::decider::Decider;
use super::{
    Approvals, BY_AIRLOCK, BY_DECIDER, DeciderError, DeciderSettings, PendingRequest, Scope,
    Verdict, reason,
};
use crate::audit::{AuditEvent, Outcome};

pub use crate::policy::RuleDecider;

/// Parses a rule's `decider`: `"person"` or an http(s) URL.
///
/// # Errors
/// Neither; the message says what is valid.
pub fn parse_rule_decider(s: &str) -> Result<RuleDecider, String> {
    if s == "person" {
        return Ok(RuleDecider::Person);
    }
    DeciderSettings::check_url(s)
        .map(|()| RuleDecider::Url(s.to_owned()))
        .map_err(|e| format!("`{s}`: {e}; or write \"person\" (people decide, no decider)"))
}

impl Approvals {
    /// Installs the deciders rules name (`template` gives each its timeout,
    /// token and TLS); call on start and on every reload.
    ///
    /// # Errors
    /// A URL does not parse or a TLS config cannot be built; the previous
    /// set stays.
    pub fn set_rule_deciders(
        &self,
        urls: impl IntoIterator<Item = String>,
        template: &DeciderSettings,
    ) -> Result<(), DeciderError> {
        let mut map = HashMap::new();
        for url in urls {
            if map.contains_key(&url) {
                continue;
            }
            let settings = DeciderSettings {
                url: url.clone(),
                ..template.clone()
            };
            map.insert(url, Arc::new(Decider::new(settings)?));
        }
        self.rule_deciders.store(Arc::new(map));
        Ok(())
    }

    /// A rule's own decider decides alone: its answer, or no within `timeout`.
    pub(super) async fn decider_only(
        &self,
        url: &str,
        req: &PendingRequest,
        timeout: Duration,
        audit: &AuditEvent,
    ) -> Verdict {
        let Some(decider) = self.rule_deciders.load().get(url).cloned() else {
            tracing::error!(url, "a rule's decider is not installed: denying");
            return self.refuse(audit, "the rule's decider is not configured");
        };
        let Ok(json) = serde_json::to_vec(req) else {
            return self.refuse(audit, "airlock cannot hold the request");
        };
        let held = Instant::now();
        self.emit(audit, Outcome::Hold, reason::REQUESTED, None, None);
        let verdict = match tokio::time::timeout(timeout, decider.ask(&json)).await {
            Ok(Ok(answer)) if answer.allow => Verdict::Approved {
                by: BY_DECIDER.to_owned(),
                scope: Scope::Once,
            },
            Ok(Ok(answer)) => Verdict::Denied {
                by: BY_DECIDER.to_owned(),
                reason: answer.reason,
            },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the rule's decider gave no decision: denying");
                Verdict::Denied {
                    by: BY_AIRLOCK.to_owned(),
                    reason: Some("the rule's decider gave no decision".to_owned()),
                }
            }
            Err(_) => Verdict::Expired,
        };
        match &verdict {
            Verdict::Approved { by, .. } => {
                self.emit(audit, Outcome::Allow, reason::GRANTED, Some(by), Some(held));
            }
            Verdict::Denied { by, .. } => {
                self.emit(audit, Outcome::Deny, reason::DENIED, Some(by), Some(held));
            }
            Verdict::Expired => self.emit(audit, Outcome::Deny, reason::EXPIRED, None, Some(held)),
        }
        verdict
    }
}
