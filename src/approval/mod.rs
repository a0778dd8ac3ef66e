//! The approval gate: a rule with `approval = "required"` holds each
//! matching request, before anything is sent upstream, until someone
//! decides.
//!
//! "An agent that has been tricked into moving money, deleting records or
//! mailing customers must hit a gate it cannot talk its way past." The
//! agent's only part here is the request itself: the decision comes from
//! outside the sandbox, through
//!
//! - the admin API (`GET /approvals`, `POST /approvals/{id}`; see
//!   [`crate::admin`]) and the `airlock approvals` CLI built on it,
//! - an optional *decider*: an independent automated check that is POSTed
//!   every held request ([`DeciderSettings`]), in parallel with the humans,
//! - a *scoped grant*: a human approval for a route (same sandbox, method,
//!   host:port and path) for N minutes lets later identical requests through
//!   without asking again.
//!
//! Anything else ends in no: a decider that errs, times out or answers
//! garbage is ignored (the request keeps waiting for a human), and no
//! decision within the rule's timeout is [`Verdict::Expired`].
//!
//! # What it does not do
//! It does not read bodies or headers off the wire, and does not reply to the
//! sandbox: the request path builds the [`PendingRequest`] (with the body
//! preview it has already scanned and redacted), awaits [`Approvals::decide`]
//! and turns the [`Verdict`] into a response.
//!
//! # Security
//! - Request ids are 128 random bits: knowing one is the capability to decide
//!   it (on top of the admin token, when one is configured).
//! - Credential-bearing headers are masked before a request is listed or sent
//!   to the decider ([`mask_headers`]).
//! - Audit events (`kind = "approval"`) carry who decided, never header
//!   values, the body preview or a reason text (a decider's reason may quote
//!   the body).
//! - A pending request is removed in every outcome, including when the
//!   waiting future is dropped because the sandbox went away.

pub mod cli;
pub mod client;
mod decider;
mod per_rule;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::audit::{AuditEvent, AuditSink, Kind, Outcome};
use decider::Decider;
pub use decider::{DeciderError, DeciderSettings};
pub use per_rule::{RuleDecider, parse_rule_decider};

/// `[approval]`, compiled.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// How long a held request waits.
    pub timeout: Duration,
    /// The decider, if configured (without TLS roots: added per generation).
    pub decider: Option<crate::approval::DeciderSettings>,
    /// Bound on each decider call (also for a rule's own `decider`).
    pub decider_timeout: Duration,
    /// Bearer token sent to deciders (also to a rule's own `decider`).
    pub decider_token: Option<crate::credentials::SecretValue>,
}

/// The most body-preview bytes kept per held request.
pub const BODY_PREVIEW_LIMIT: usize = 4096;
/// The longest scoped grant, in minutes (one day).
pub const MAX_SCOPE_MINUTES: u32 = 24 * 60;
/// The most requests held at once; more are denied at once (each held
/// request is also a held client connection, so this is a backstop).
pub const MAX_PENDING: usize = 1024;
/// The most headers listed per held request.
const MAX_HEADERS: usize = 64;
/// The most characters of a header value listed.
const HEADER_VALUE_CHARS: usize = 256;
/// Shown instead of a credential-bearing header's value.
pub const MASKED: &str = "<masked>";

/// The audit `kind` of every event emitted here.
pub const AUDIT_KIND: Kind = Kind::Approval;
/// Audit reason codes (decision in brackets).
pub mod reason {
    /// A request is held (`hold`).
    pub const REQUESTED: &str = "approval_requested";
    /// Approved by a human, the decider or a scoped grant (`allow`).
    pub const GRANTED: &str = "approval_granted";
    /// Denied by a human, the decider, or airlock itself (`deny`).
    pub const DENIED: &str = "approval_denied";
    /// No decision within the rule's timeout (`deny`).
    pub const EXPIRED: &str = "approval_expired";
    /// The sandbox went away while its request was held (`deny`).
    pub const WITHDRAWN: &str = "approval_withdrawn";
}

/// Who decided, for requests the decider answered.
pub const BY_DECIDER: &str = "decider";
/// Who decided, for refusals by airlock itself (queue full, no randomness).
pub const BY_AIRLOCK: &str = "airlock";

/// A held request, as listed by the admin API and sent to the decider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Unguessable id (128 random bits, hex), assigned by [`Approvals::decide`].
    pub id: String,
    /// The sandbox id, when the client identified as one.
    pub sandbox: Option<String>,
    /// The method.
    pub method: String,
    /// `scheme://host[:port]/path[?query]`, as judged.
    pub url: String,
    /// `file:line` of the rule that requires approval.
    pub rule: String,
    /// The request headers, credential-bearing values masked.
    pub headers: Vec<(String, String)>,
    /// The start of the body, already scanned and redacted (lossy UTF-8).
    pub body_preview: String,
    /// Whether the body is longer than the preview.
    pub body_truncated: bool,
    /// When the request was held.
    pub created_unix_ms: u64,
    /// When it expires if nobody decides.
    pub expires_unix_ms: u64,
    /// The airlock replica holding it ([`crate::config::ProxySettings::replica`]):
    /// only that replica's admin API can decide it.
    #[serde(default)]
    pub replica: String,
    /// What a scoped grant matches on. Not serialised (it repeats `url`).
    #[serde(skip)]
    route: RouteKey,
}

/// What the request path knows about a request it is about to hold.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The sandbox id, if the client identified as one.
    pub sandbox: Option<&'a str>,
    /// The method.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host as judged (IPv6 with or without brackets).
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The normalised path as forwarded (`NormalPath::encoded`).
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// `file:line` of the deciding rule.
    pub rule: &'a str,
}

/// The key of a scoped grant: same sandbox, method, host:port and path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct RouteKey {
    sandbox: Option<String>,
    method: String,
    authority: String,
    path: String,
}

impl PendingRequest {
    /// A request to hold, with no headers and no body preview yet.
    pub fn new(facts: &RequestFacts<'_>) -> Self {
        let host = if facts.host.contains(':') && !facts.host.starts_with('[') {
            format!("[{}]", facts.host)
        } else {
            facts.host.to_owned()
        };
        let default_port = match facts.scheme {
            "https" => 443,
            _ => 80,
        };
        let authority = format!("{host}:{}", facts.port);
        let mut url = format!("{}://", facts.scheme);
        url.push_str(if facts.port == default_port {
            &host
        } else {
            &authority
        });
        url.push_str(facts.path);
        if let Some(q) = facts.query {
            url.push('?');
            url.push_str(q);
        }
        Self {
            id: String::new(),
            sandbox: facts.sandbox.map(str::to_owned),
            method: facts.method.to_owned(),
            url,
            rule: facts.rule.to_owned(),
            headers: Vec::new(),
            body_preview: String::new(),
            body_truncated: false,
            created_unix_ms: 0,
            expires_unix_ms: 0,
            replica: String::new(),
            route: RouteKey {
                sandbox: facts.sandbox.map(str::to_owned),
                method: facts.method.to_owned(),
                authority,
                path: facts.path.to_owned(),
            },
        }
    }

    /// Lists `headers`, credential-bearing values masked ([`mask_headers`]).
    #[must_use]
    pub fn with_headers(mut self, headers: &HeaderMap) -> Self {
        self.headers = mask_headers(headers);
        self
    }

    /// Sets the body preview: at most [`BODY_PREVIEW_LIMIT`] bytes of
    /// `preview` (which the caller has already scanned and redacted), as
    /// lossy UTF-8. `truncated` says the body goes on past `preview`.
    #[must_use]
    pub fn with_body_preview(mut self, preview: &[u8], truncated: bool) -> Self {
        let cut = preview.len() > BODY_PREVIEW_LIMIT;
        let kept = &preview[..preview.len().min(BODY_PREVIEW_LIMIT)];
        let mut text = String::from_utf8_lossy(kept).into_owned();
        if cut && text.ends_with(char::REPLACEMENT_CHARACTER) {
            // The cut may split a character: drop its replacement.
            text.pop();
        }
        self.body_preview = text;
        self.body_truncated = truncated || cut;
        self
    }
}

/// The header list shown for a held request.
///
/// Values are masked ([`MASKED`]) for `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, any name containing
/// `token`, `secret`, `key`, `auth`, `pass`, `session`, `cookie`,
/// `credential` or `signature`, and any value marked sensitive. At most 64
/// headers, each value cut to 256 characters (lossy UTF-8).
pub fn mask_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .take(MAX_HEADERS)
        .map(|(name, value)| {
            let name = name.as_str();
            let shown = if value.is_sensitive() || is_credential_header(name) {
                MASKED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes())
                    .chars()
                    .take(HEADER_VALUE_CHARS)
                    .collect()
            };
            (name.to_owned(), shown)
        })
        .collect()
}

/// Header names (lowercase, as `HeaderName` keeps them) whose values carry
/// credentials.
fn is_credential_header(name: &str) -> bool {
    const WORDS: [&str; 9] = [
        "token",
        "secret",
        "key",
        "auth",
        "pass",
        "session",
        "cookie",
        "credential",
        "signature",
    ];
    WORDS.iter().any(|w| name.contains(w))
}

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This one request.
    Once,
    /// This request, and for `minutes` every request with the same sandbox,
    /// method, host:port and path (any query, any body).
    Route {
        /// How long the grant lasts (at most [`MAX_SCOPE_MINUTES`]).
        minutes: u32,
    },
}

/// The outcome of [`Approvals::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Approved {
        /// `admin API`, `decider`, or `scope granted by <who>`.
        by: String,
        /// What the approval covered.
        scope: Scope,
    },
    /// Refuse it.
    Denied {
        /// `admin API`, `decider`, or `airlock`.
        by: String,
        /// Why, in the decider's or the human's words (may be shown to the sandbox).
        reason: Option<String>,
    },
    /// Nobody decided in time: refuse it.
    Expired,
}

impl Verdict {
    /// True only for [`Verdict::Approved`].
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approved { .. })
    }
}

/// Why [`Approvals::resolve`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No request is held under that id (never was, already decided,
    /// expired, or its client went away).
    #[error("no request awaiting approval has that id")]
    NotFound,
}

/// The held requests, the scoped grants and the decider. One per process,
/// shared as `Arc`; the pending map and grants survive config reloads.
pub struct Approvals {
    pending: Mutex<HashMap<String, Entry>>,
    grants: Mutex<HashMap<RouteKey, Grant>>,
    decider: ArcSwapOption<Decider>,
    /// Rules' own deciders, by URL (see [`RuleDecider`]).
    rule_deciders: arc_swap::ArcSwap<HashMap<String, Arc<Decider>>>,
    audit: AuditSink,
    rng: &'static dyn rustls::crypto::SecureRandom,
    /// This process's replica name, stamped on every held request.
    replica: arc_swap::ArcSwap<String>,
}

struct Entry {
    request: PendingRequest,
    tx: oneshot::Sender<Verdict>,
}

#[derive(Debug, Clone)]
struct Grant {
    until: Instant,
    by: String,
    minutes: u32,
}

impl fmt::Debug for Approvals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approvals")
            .field("pending", &lock(&self.pending).len())
            .field("grants", &lock(&self.grants).len())
            .field("decider", &self.decider.load().is_some())
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// No requests held, no grants, no decider. Cheap: no I/O.
    pub fn new(audit: AuditSink) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
            decider: ArcSwapOption::empty(),
            rule_deciders: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            audit,
            rng: rustls::crypto::ring::default_provider().secure_random,
            replica: arc_swap::ArcSwap::from_pointee(String::new()),
        }
    }

    /// Names this replica in the requests it holds (on start and reload).
    pub fn set_replica(&self, name: &str) {
        if **self.replica.load() != name {
            self.replica.store(Arc::new(name.to_owned()));
        }
    }

    /// This replica's name.
    pub fn replica(&self) -> String {
        self.replica.load().as_ref().clone()
    }

    /// Installs (or, with `None`, removes) the decider; call on start and on
    /// every config reload. Requests already held keep the decider they were
    /// sent to.
    ///
    /// # Errors
    /// The URL does not parse, or the TLS config cannot be built; the
    /// previous decider stays.
    pub fn set_decider(&self, settings: Option<DeciderSettings>) -> Result<(), DeciderError> {
        let decider = settings.map(Decider::new).transpose()?.map(Arc::new);
        self.decider.store(decider);
        Ok(())
    }

    /// Decides one request: a scoped grant lets it through at once;
    /// otherwise it is held (listed by [`Approvals::list`], POSTed to the
    /// decider if one is set) until [`Approvals::resolve`] or the decider
    /// decides, or `timeout` passes ([`Verdict::Expired`]).
    ///
    /// `audit` is the request's own audit event: the approval events
    /// (`kind = "approval"`) copy its client, host, port, method, path, rule
    /// and rules version.
    ///
    /// The pending entry is removed in every outcome, also when this future
    /// is dropped (the client went away; audited as `approval_withdrawn`).
    pub async fn decide(
        &self,
        req: PendingRequest,
        timeout: Duration,
        audit: &AuditEvent,
    ) -> Verdict {
        self.decide_by(req, timeout, audit, None).await
    }

    /// [`Approvals::decide`], by whom the rule says: `None` as `[approval]`
    /// says (people, and the decider if one is set), [`RuleDecider::Person`]
    /// people only, [`RuleDecider::Url`] that decider only.
    pub async fn decide_by(
        &self,
        mut req: PendingRequest,
        timeout: Duration,
        audit: &AuditEvent,
        by: Option<&RuleDecider>,
    ) -> Verdict {
        req.replica = self.replica();
        if let Some(RuleDecider::Url(url)) = by {
            return self.decider_only(url, &req, timeout, audit).await;
        }
        if let Some(grant) = self.granted(&req.route) {
            let by = format!("scope granted by {}", grant.by);
            self.emit(audit, Outcome::Allow, reason::GRANTED, Some(&by), None);
            return Verdict::Approved {
                by,
                scope: Scope::Route {
                    minutes: grant.minutes,
                },
            };
        }
        let Some(id) = self.new_id() else {
            tracing::error!("no randomness for an approval id: denying");
            return self.refuse(audit, "airlock cannot hold the request (no randomness)");
        };
        let now = unix_ms();
        req.id.clone_from(&id);
        req.created_unix_ms = now;
        req.expires_unix_ms =
            now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let json = match serde_json::to_vec(&req) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a held request: denying");
                return self.refuse(audit, "airlock cannot hold the request");
            }
        };
        let (tx, mut rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                drop(pending);
                tracing::warn!(
                    limit = MAX_PENDING,
                    "too many requests awaiting approval: denying"
                );
                return self.refuse(audit, "too many requests are awaiting approval");
            }
            pending.insert(id.clone(), Entry { request: req, tx });
        }
        let held = Instant::now();
        let mut guard = Held {
            approvals: self,
            id: &id,
            audit,
            held,
            finished: false,
        };
        self.emit(audit, Outcome::Hold, reason::REQUESTED, None, None);

        let decider = match by {
            None => self.decider.load_full(),
            Some(_) => None,
        };
        let mut asking = decider.is_some();
        let ask = async {
            match &decider {
                Some(d) => d.ask(&json).await,
                None => std::future::pending().await,
            }
        };
        let mut ask = std::pin::pin!(ask);
        let sleep = tokio::time::sleep(timeout);
        let mut sleep = std::pin::pin!(sleep);
        let verdict = loop {
            tokio::select! {
                biased;
                v = &mut rx => break v.unwrap_or(Verdict::Expired),
                answer = &mut ask, if asking => {
                    asking = false;
                    match answer {
                        Ok(a) => {
                            tracing::info!(id = %id, allow = a.allow, "decider answered");
                            // NotFound: a human decided first; rx has that verdict.
                            let _decided = self.resolve(&id, a.allow, BY_DECIDER, a.reason, Scope::Once);
                        }
                        Err(e) => tracing::warn!(id = %id, error = %e, "decider gave no decision; waiting for a human"),
                    }
                }
                () = &mut sleep => {
                    // Removing the entry decides the race with a resolve:
                    // if it is already gone, the verdict is in rx.
                    if lock(&self.pending).remove(&id).is_some() {
                        break Verdict::Expired;
                    }
                    break rx.try_recv().unwrap_or(Verdict::Expired);
                }
            }
        };
        guard.finished = true;
        drop(guard);
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

    /// The requests held now, oldest first.
    pub fn list(&self) -> Vec<PendingRequest> {
        let mut all: Vec<PendingRequest> = lock(&self.pending)
            .values()
            .map(|e| e.request.clone())
            .collect();
        all.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        all
    }

    /// One held request.
    pub fn get(&self, id: &str) -> Option<PendingRequest> {
        lock(&self.pending).get(id).map(|e| e.request.clone())
    }

    /// Decides a held request: `approve` releases it ([`Verdict::Approved`]
    /// with `scope`; a [`Scope::Route`] also records a grant for later
    /// identical requests), otherwise [`Verdict::Denied`] with `reason`.
    /// `by` names who decided (`admin API`).
    ///
    /// # Errors
    /// [`ResolveError::NotFound`] when nothing is held under `id`.
    pub fn resolve(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: Option<String>,
        scope: Scope,
    ) -> Result<(), ResolveError> {
        let mut pending = lock(&self.pending);
        let entry = pending.remove(id).ok_or(ResolveError::NotFound)?;
        let verdict = if approve {
            let scope = match scope {
                Scope::Route { minutes } => Scope::Route {
                    minutes: minutes.min(MAX_SCOPE_MINUTES),
                },
                Scope::Once => Scope::Once,
            };
            if let Scope::Route { minutes } = scope
                && minutes > 0
            {
                self.grant(entry.request.route.clone(), minutes, by);
            }
            Verdict::Approved {
                by: by.to_owned(),
                scope,
            }
        } else {
            Verdict::Denied {
                by: by.to_owned(),
                reason,
            }
        };
        // Sent under the pending lock, so a waiter that finds its entry gone
        // finds the verdict in its channel. Err: the waiter left just now.
        let _sent = entry.tx.send(verdict);
        drop(pending);
        Ok(())
    }

    fn grant(&self, key: RouteKey, minutes: u32, by: &str) {
        let now = Instant::now();
        let mut grants = lock(&self.grants);
        grants.retain(|_, g| g.until > now);
        grants.insert(
            key,
            Grant {
                until: now + Duration::from_secs(u64::from(minutes) * 60),
                by: by.to_owned(),
                minutes,
            },
        );
    }

    fn granted(&self, key: &RouteKey) -> Option<Grant> {
        let mut grants = lock(&self.grants);
        let grant = grants.get(key)?;
        if grant.until > Instant::now() {
            return Some(grant.clone());
        }
        grants.remove(key);
        None
    }

    fn new_id(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).ok()?;
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Denies without holding (airlock itself cannot hold the request).
    fn refuse(&self, audit: &AuditEvent, why: &str) -> Verdict {
        self.emit(audit, Outcome::Deny, reason::DENIED, Some(BY_AIRLOCK), None);
        Verdict::Denied {
            by: BY_AIRLOCK.to_owned(),
            reason: Some(why.to_owned()),
        }
    }

    fn emit(
        &self,
        template: &AuditEvent,
        decision: Outcome,
        reason: &'static str,
        by: Option<&str>,
        held: Option<Instant>,
    ) {
        let mut ev = template.clone();
        ev.ts = std::time::SystemTime::now();
        ev.kind = AUDIT_KIND;
        ev.decision = decision;
        ev.reason = reason;
        ev.by = by.map(str::to_owned);
        ev.status = None;
        ev.secrets = None;
        ev.pattern = None;
        ev.direction = None;
        ev.offset = None;
        ev.bytes_up = 0;
        ev.bytes_down = 0;
        ev.duration_ms = held.map_or(0, |h| {
            u64::try_from(h.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        self.audit.emit(ev);
    }
}

/// Removes a held request however `decide` ends (a dropped future included).
struct Held<'a> {
    approvals: &'a Approvals,
    id: &'a str,
    audit: &'a AuditEvent,
    held: Instant,
    finished: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.approvals.pending).remove(self.id);
        if !self.finished {
            self.approvals.emit(
                self.audit,
                Outcome::Deny,
                reason::WITHDRAWN,
                None,
                Some(self.held),
            );
        }
    }
}

/// A poisoned lock still holds consistent data here (nothing panics while
/// holding one), so it is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
