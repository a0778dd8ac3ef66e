//! What `airlock explain` adds to the policy decision so its verdict is
//! the proxy's: the address guard (the same [`crate::guard::Guard`], built
//! from the same `[dns]`, resolving the name the same way, `[dns] resolve`
//! first) and the settings that apply to an allowed request (approval,
//! rate, budget).

use std::time::Duration;

use crate::config::Config;
use crate::guard::{Guard, GuardError};
use crate::policy::{Host, Rule};

/// The guard's answer for `host:port`, as the proxy would give it.
pub(super) enum Verdict {
    /// Every address it resolves to may be dialled.
    Open(Vec<std::net::SocketAddr>),
    /// Refused (`blocked_address`, `self_loop`): the proxy answers 403.
    Refused(GuardError),
    /// Could not resolve here: the proxy answers 502 if it cannot either.
    Unresolved(GuardError),
}

/// Resolves and classifies `host:port` with the proxy's own guard: its
/// own addresses are the configured listen and admin addresses.
pub(super) fn guard(config: &Config, host: &Host, port: u16) -> anyhow::Result<Verdict> {
    let own = std::iter::once(config.proxy.listen)
        .chain(config.proxy.admin)
        .collect();
    let guard = Guard::new(&config.dns, own, config.proxy.connect_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resolved = runtime.block_on(async {
        tokio::time::timeout(
            config.proxy.connect_timeout + Duration::from_secs(1),
            guard.resolve(host, port),
        )
        .await
    });
    Ok(match resolved {
        Ok(Ok(addrs)) => Verdict::Open(addrs.into_iter().map(|a| a.addr()).collect()),
        Ok(Err(e)) if e.is_refusal() => Verdict::Refused(e),
        Ok(Err(e)) => Verdict::Unresolved(e),
        Err(_) => Verdict::Unresolved(GuardError::Resolve {
            host: host.to_string(),
            reason: "timed out".into(),
        }),
    })
}

/// The `DENY` text for a guard refusal.
pub(super) fn refused(err: &GuardError) -> String {
    let hint = match err {
        GuardError::Blocked { .. } => {
            "; allow with `allow_cidrs` in [dns] (only if you mean this address)"
        }
        _ => "",
    };
    format!(
        "DENY ({})\n  guard: would be refused: {err}{hint}.\n{}",
        err.code(),
        crate::error::ProxyError::Guard(err.clone()).agent_message()
    )
}

/// The lines an `ALLOW` adds about the guard.
pub(super) fn guard_lines(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Open(addrs) => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            format!("  guard: resolves to {}: allowed\n", list.join(", "))
        }
        Verdict::Unresolved(e) => format!(
            "  guard: {e} here; the proxy answers 502 ({}) if it cannot either\n",
            e.code()
        ),
        Verdict::Refused(_) => String::new(),
    }
}

/// Approval, rate and budget for an allowed request under `rule`.
pub(super) fn settings_lines(config: &Config, rule: &Rule) -> String {
    let mut out = String::new();
    if rule.approval {
        let person = || "a person (admin API or `airlock approvals`)".to_owned();
        // The rule's own `decider` and `approval_timeout` win over `[approval]`.
        let decider = match &rule.decider {
            Some(crate::policy::RuleDecider::Person) => {
                format!("{} (the rule's decider)", person())
            }
            Some(crate::policy::RuleDecider::Url(url)) => {
                format!("the decider {url} (the rule's own)")
            }
            None => config
                .approval
                .decider
                .as_ref()
                .map_or_else(person, |d| format!("the decider {}", d.url)),
        };
        let (timeout, whose) = match rule.approval_timeout {
            Some(t) => (t, " (the rule's approval_timeout)"),
            None => (config.approval.timeout, ""),
        };
        out.push_str(&format!(
            "  approval: required: held until {decider} decides, at most {} s{whose}\n",
            timeout.as_secs()
        ));
    } else {
        out.push_str("  approval: none\n");
    }
    let limits = &rule.limits;
    let rate = match (limits.rate, limits.write_rate) {
        (Some(r), _) => format!(
            "{} requests per {} s, per sandbox",
            r.count,
            r.per.as_secs()
        ),
        (None, Some(w)) => format!(
            "writes {} per {} s, per sandbox (the default for a rule that injects and allows writes)",
            w.count,
            w.per.as_secs()
        ),
        (None, None) => "unlimited".to_owned(),
    };
    out.push_str(&format!("  rate: {rate}\n"));
    if let Some(b) = limits.budget {
        out.push_str(&format!(
            "  budget: {} request-body bytes per {} s, per sandbox\n",
            b.count,
            b.per.as_secs()
        ));
    }
    out
}
