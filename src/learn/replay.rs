//! `airlock replay AUDIT.log --config CANDIDATE`: every request the audit
//! log recorded, judged again under the candidate rules, and what would
//! change.
//!
//! Re-judged: `connect` events (host and port, as the proxy decides before
//! a tunnel opens) and `request` events (host, port, method, path), with
//! the sandbox they came from. Not re-judged: events the policy never saw
//! (no identity, malformed requests) and the address guard (replay does not
//! resolve names). Placeholders in headers are not recorded, so a
//! `placeholder_misuse` refusal is judged on host, method and path alone.
//!
//! Changes reported, each once with its count and first audit line:
//! - `newly allowed`: refused then, allowed now;
//! - `newly denied`: allowed then, refused now;
//! - `injection`: a completed request whose injected secrets would differ;
//! - `approval`: a request that was held for approval and would not be, or
//!   the reverse.
//!
//! Exit status: 0 when nothing would newly be allowed, [`EXIT_WIDENED`]
//! when something would (newly allowed, or no longer held for approval),
//! 1 when the log or the config cannot be read.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use super::{Tunnels, judge, read_log, rebuild};
use crate::config::Config;

/// Exit status when the candidate would newly allow something.
pub const EXIT_WIDENED: u8 = 3;

/// What replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// The text to print.
    pub text: String,
    /// Something would newly be allowed (or no longer held for approval).
    pub widened: bool,
}

#[derive(Debug, Default)]
struct Change {
    count: usize,
    first_line: usize,
    widening: bool,
}

/// Re-judges the log at `log` under `config`.
///
/// # Errors
/// The log cannot be read, or a line is not an audit event.
pub fn run(log: &Path, config: &Config) -> anyhow::Result<Report> {
    let records = read_log(log)?;
    let mut tunnels = Tunnels::default();
    // Requests held for approval: (client, method, host, port, path).
    let mut held: HashSet<(
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u16>,
        Option<String>,
    )> = HashSet::new();
    let mut changes: BTreeMap<String, Change> = BTreeMap::new();
    let (mut judged, mut skipped) = (0usize, 0usize);
    for (line, r) in &records {
        tunnels.see(r);
        let key = || {
            (
                r.client.clone(),
                r.method.clone(),
                r.host.clone(),
                r.port,
                r.path.clone(),
            )
        };
        if r.kind == "approval" {
            if r.reason == crate::approval::reason::REQUESTED {
                held.insert(key());
            }
            continue;
        }
        if !r.judged() {
            continue;
        }
        let req = match rebuild(r, &tunnels) {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!(line, error = %e, "audit event not re-judged");
                skipped += 1;
                continue;
            }
        };
        judged += 1;
        let who = r
            .sandbox
            .as_deref()
            .map(|s| format!(" (sandbox {s})"))
            .unwrap_or_default();
        let what = format!("{}{who}", req.describe());
        // A request `learn --permissive` forwarded was refused by the rules.
        let was_allowed = !r.policy_denied();
        let policy = match r.sandbox.as_deref() {
            None => Some(&config.policy),
            Some(id) => config.policy_for(Some(id)),
        };
        let now = match policy {
            Some(p) => judge(p, &req).map_err(|e| e.code().to_owned()),
            None => Err("sandbox_not_configured".to_owned()),
        };
        // Placeholders travel in headers, which the log does not keep: a
        // placeholder refusal the candidate's rules would admit cannot be
        // re-judged (it is not reported as newly allowed).
        if r.reason == "placeholder_misuse" && now.is_ok() {
            skipped += 1;
            judged -= 1;
            continue;
        }
        let mut note = |text: String, widening: bool| {
            let c = changes.entry(text).or_default();
            if c.count == 0 {
                c.first_line = *line;
            }
            c.count += 1;
            c.widening |= widening;
        };
        match (&now, was_allowed) {
            (Ok(rule), false) => note(
                format!(
                    "newly allowed: {what}: by the rule at {} (was {})",
                    rule.source, r.reason
                ),
                true,
            ),
            (Err(code), true) => note(
                format!(
                    "newly denied: {what}: {code} (was allowed{})",
                    r.rule
                        .as_deref()
                        .map(|at| format!(" by the rule at {at}"))
                        .unwrap_or_default()
                ),
                false,
            ),
            (Ok(rule), true) if r.kind == "request" => {
                if r.decision == "allow" {
                    let mut was: Vec<String> = r.secrets.clone().unwrap_or_default();
                    let mut will: Vec<String> = rule
                        .inject
                        .as_ref()
                        .map(|p| p.secrets().map(ToString::to_string).collect())
                        .unwrap_or_default();
                    was.sort();
                    was.dedup();
                    will.sort();
                    will.dedup();
                    if was != will {
                        let list = |v: &[String]| {
                            if v.is_empty() {
                                "nothing".to_owned()
                            } else {
                                v.join(", ")
                            }
                        };
                        note(
                            format!(
                                "injection: {what}: {} -> {} (rule at {})",
                                list(&was),
                                list(&will),
                                rule.source
                            ),
                            false,
                        );
                    }
                }
                let was_held = held.contains(&key());
                let reached_gate = r.decision == "allow" || r.reason.starts_with("approval_");
                if reached_gate && was_held != rule.approval {
                    let text = if rule.approval {
                        format!(
                            "approval: {what}: would be held for approval (rule at {})",
                            rule.source
                        )
                    } else {
                        format!(
                            "approval: {what}: would no longer be held for approval (rule at {})",
                            rule.source
                        )
                    };
                    note(text, !rule.approval);
                }
            }
            _ => {}
        }
    }
    let mut report = Report::default();
    let mut order: Vec<(&String, &Change)> = changes.iter().collect();
    order.sort_by_key(|(text, c)| (!c.widening, c.first_line, (*text).clone()));
    for (text, c) in order {
        report.widened |= c.widening;
        let _w = writeln!(
            report.text,
            "{text} [{} request{}, first at {}:{}]",
            c.count,
            if c.count == 1 { "" } else { "s" },
            log.display(),
            c.first_line
        );
    }
    let newly_allowed = changes
        .keys()
        .filter(|k| k.starts_with("newly allowed"))
        .count();
    let newly_denied = changes
        .keys()
        .filter(|k| k.starts_with("newly denied"))
        .count();
    let _w = writeln!(
        report.text,
        "replay: {judged} recorded decisions re-judged under {}{}: {} change{} ({newly_allowed} newly allowed, {newly_denied} newly denied){}",
        config.source,
        if skipped > 0 {
            format!(" ({skipped} not re-judged)")
        } else {
            String::new()
        },
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        if report.widened {
            "; the candidate widens what is allowed"
        } else {
            ""
        }
    );
    Ok(report)
}
