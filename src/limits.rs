//! Rate limits and byte budgets, per rule and per sandbox.
//!
//! `rate = "60/minute"` is a token bucket: up to 60 requests at once, refilled
//! at 60 per minute. `budget = "10MB/hour"` caps the request-body bytes a
//! sandbox sends through one rule in a fixed window. Over either limit the
//! sandbox gets `429 Too Many Requests` with `Retry-After`, and an audit event.
//!
//! **Default for credentialed writes:** a rule that injects a credential and
//! has no `rate` limits its write requests (anything but GET, HEAD, OPTIONS)
//! to [`DEFAULT_WRITE_RATE`] per sandbox. `rate = "unlimited"` opts out.
//!
//! Buckets are keyed by (rule file:line, sandbox) and live in memory; a
//! reload that changes a rule's line starts its bucket afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The default write rate on rules that inject a credential.
pub const DEFAULT_WRITE_RATE: Rate = Rate {
    count: 60,
    per: Duration::from_secs(60),
};

/// `N/second|minute|hour|day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests (or bytes) allowed...
    pub count: u64,
    /// ...per this period.
    pub per: Duration,
}

impl Rate {
    /// Parses `60/minute`, `5/second`, `1000/hour`, `10MB/hour` (with `bytes`).
    ///
    /// # Errors
    /// What a valid rate looks like.
    pub fn parse(s: &str, bytes: bool) -> Result<Rate, String> {
        let example = if bytes {
            "\"10MB/hour\""
        } else {
            "\"60/minute\""
        };
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a rate like {example}"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => {
                return Err(format!(
                    "`{other}` is not a period: use second, minute, hour or day ({example})"
                ));
            }
        };
        let n = n.trim();
        let count = if bytes {
            let (digits, mult) = match n.find(|c: char| !c.is_ascii_digit()) {
                None => (n, 1),
                Some(i) => {
                    let m = match n[i..].trim().to_ascii_uppercase().as_str() {
                        "B" => 1,
                        "KB" | "KIB" => 1024,
                        "MB" | "MIB" => 1024 * 1024,
                        "GB" | "GIB" => 1024 * 1024 * 1024,
                        other => {
                            return Err(format!(
                                "`{other}` is not a size unit: use B, KB, MB or GB ({example})"
                            ));
                        }
                    };
                    (&n[..i], m)
                }
            };
            digits
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a budget like {example}"))?
                .saturating_mul(mult)
        } else {
            n.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a rate like {example}"))?
        };
        if count == 0 {
            return Err(format!("`{s}` allows nothing; remove the rule instead"));
        }
        Ok(Rate { count, per })
    }
}

/// A rule's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Requests per period, if limited.
    pub rate: Option<Rate>,
    /// Write requests per period, when `rate` is not set (the default for
    /// rules that inject credentials).
    pub write_rate: Option<Rate>,
    /// Request-body bytes per window, if limited.
    pub budget: Option<Rate>,
}

impl Limits {
    /// True when nothing is limited (the fast path skips the lock).
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.write_rate.is_none() && self.budget.is_none()
    }
}

/// Which limit was hit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} limit reached ({limit}); retry after {retry_after_secs} s")]
pub struct Limited {
    /// `rate` or `budget`.
    pub what: &'static str,
    /// The limit as written, e.g. `60/60s`.
    pub limit: String,
    /// Seconds until the request would be allowed.
    pub retry_after_secs: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Window {
    used: u64,
    start: Instant,
}

/// The live counters.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl Limiter {
    /// Takes one request from the rule's bucket for `sandbox`; checks the
    /// byte budget has room for `body_len` (when known).
    ///
    /// # Errors
    /// [`Limited`] with the seconds to wait.
    pub fn admit(
        &self,
        rule: &str,
        sandbox: &str,
        limits: &Limits,
        write: bool,
        body_len: Option<u64>,
    ) -> Result<(), Limited> {
        let now = Instant::now();
        let key = || (rule.to_owned(), sandbox.to_owned());
        if let Some(budget) = limits.budget {
            let mut windows = self
                .windows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let w = windows.entry(key()).or_insert(Window {
                used: 0,
                start: now,
            });
            if now.duration_since(w.start) >= budget.per {
                *w = Window {
                    used: 0,
                    start: now,
                };
            }
            if w.used >= budget.count
                || body_len.is_some_and(|n| w.used.saturating_add(n) > budget.count)
            {
                let left = budget.per.saturating_sub(now.duration_since(w.start));
                return Err(Limited {
                    what: "byte budget",
                    limit: format!("{}B/{}s", budget.count, budget.per.as_secs()),
                    retry_after_secs: left.as_secs().max(1),
                });
            }
        }
        let rate = match (limits.rate, limits.write_rate) {
            (Some(r), _) => r,
            (None, Some(w)) if write => w,
            _ => return Ok(()),
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(key()).or_insert(Bucket {
            tokens: rate.count as f64,
            at: now,
        });
        let refill =
            now.duration_since(b.at).as_secs_f64() * rate.count as f64 / rate.per.as_secs_f64();
        b.tokens = (b.tokens + refill).min(rate.count as f64);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.tokens) * rate.per.as_secs_f64() / rate.count as f64;
        Err(Limited {
            what: "rate",
            limit: format!("{}/{}s", rate.count, rate.per.as_secs()),
            retry_after_secs: wait.ceil().max(1.0) as u64,
        })
    }

    /// Counts body bytes against the rule's budget for `sandbox`.
    pub fn spend(&self, rule: &str, sandbox: &str, bytes: u64) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = windows.get_mut(&(rule.to_owned(), sandbox.to_owned())) {
            w.used = w.used.saturating_add(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_budgets() {
        assert_eq!(
            Rate::parse("60/minute", false),
            Ok(Rate {
                count: 60,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            Rate::parse("10MB/hour", true).map(|r| r.count),
            Ok(10 * 1024 * 1024)
        );
        assert!(Rate::parse("60", false).unwrap_err().contains("60/minute"));
        assert!(Rate::parse("0/minute", false).is_err());
        assert!(
            Rate::parse("5/fortnight", false)
                .unwrap_err()
                .contains("period")
        );
    }

    #[test]
    fn bucket_allows_burst_then_429_with_retry_after() {
        let l = Limiter::default();
        let limits = Limits {
            rate: Some(Rate {
                count: 3,
                per: Duration::from_secs(60),
            }),
            ..Limits::default()
        };
        for _ in 0..3 {
            assert!(l.admit("r", "a", &limits, false, None).is_ok());
        }
        let err = l.admit("r", "a", &limits, false, None).unwrap_err();
        assert_eq!(err.retry_after_secs, 20);
        // Another sandbox has its own bucket.
        assert!(l.admit("r", "b", &limits, false, None).is_ok());
    }

    #[test]
    fn default_write_rate_applies_to_writes_only() {
        let l = Limiter::default();
        let limits = Limits {
            write_rate: Some(Rate {
                count: 1,
                per: Duration::from_secs(60),
            }),
            ..Limits::default()
        };
        assert!(l.admit("r", "", &limits, true, None).is_ok());
        assert!(l.admit("r", "", &limits, true, None).is_err());
        assert!(
            l.admit("r", "", &limits, false, None).is_ok(),
            "reads are not limited by the write rate"
        );
    }

    #[test]
    fn budget_counts_bytes() {
        let l = Limiter::default();
        let limits = Limits {
            budget: Some(Rate {
                count: 100,
                per: Duration::from_secs(3600),
            }),
            ..Limits::default()
        };
        assert!(l.admit("r", "", &limits, true, Some(60)).is_ok());
        l.spend("r", "", 60);
        assert!(
            l.admit("r", "", &limits, true, Some(60)).is_err(),
            "would exceed"
        );
        assert!(l.admit("r", "", &limits, true, Some(40)).is_ok());
        l.spend("r", "", 40);
        assert!(l.admit("r", "", &limits, true, None).is_err(), "exhausted");
    }
}
