//! Audit: one JSON line per decision (allow, deny, error), formatted and
//! written off the request path by a writer thread. The request path only
//! fills in an [`AuditEvent`] of typed values (a `SystemTime`, a
//! `SocketAddr`, a [`Host`], a `Method`, enums); the writer turns it into
//! JSON ([`AuditEvent::write_json`]).
//!
//! # Security
//! An [`AuditEvent`] has no field that can hold a header value, a body, a
//! query string or a secret: only the host, port, method, the normalised
//! path (without query), the rule's file:line, the decision and its reason
//! code, the status, byte counts and duration.
//!
//! # Back-pressure
//! Events go through a bounded queue (65,536). When the writer cannot keep up,
//! events are dropped and counted (`dropped()`, and a warning), rather than
//! stalling every sandbox's traffic behind a slow disk. The decision itself
//! is made either way: a dropped audit line never turns a deny into an allow.

pub mod metrics;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use http::Method;
use tokio::sync::mpsc;

use crate::host::Host;
use crate::policy::RuleRef;

pub use metrics::Metrics;

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// One JSON line per event on stdout.
    Stdout,
    /// On stderr.
    Stderr,
    /// Appended to this file.
    File(PathBuf),
    /// Nowhere (benchmarks).
    Off,
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tunnel decision (CONNECT).
    Connect,
    /// One request.
    Request,
    /// A credential added to a request.
    Inject,
    /// A secret found by the scanner.
    Finding,
    /// A config reload.
    Reload,
    /// An approval asked for, given or refused.
    Approval,
}

impl Kind {
    /// The name written in the log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Request => "request",
            Kind::Inject => "inject",
            Kind::Finding => "finding",
            Kind::Reload => "reload",
            Kind::Approval => "approval",
        }
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let through.
    Allow,
    /// Refused by policy.
    Deny,
    /// An allowed request that failed.
    Error,
    /// Held for approval.
    Hold,
    /// A finding that stopped the message.
    Block,
    /// A finding replaced by its marker.
    Redact,
    /// A finding only recorded.
    Log,
    /// A credential was added.
    Inject,
}

impl Outcome {
    /// The name written in the log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::Hold => "hold",
            Outcome::Block => "block",
            Outcome::Redact => "redact",
            Outcome::Log => "log",
            Outcome::Inject => "inject",
        }
    }
}

/// Which way a finding's bytes were going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// In a request (`out`).
    Out,
    /// In a response (`in`).
    In,
}

impl Direction {
    /// `out` or `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// The `host` of an event: a destination, or for a reload the config it
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A normalised host.
    Host(Host),
    /// The config source (reload events).
    Config(String),
    /// A refused host name that carried a secret, with the secret replaced
    /// by `[REDACTED:<id>]` (never written as it came).
    Redacted(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Host(h) => h.fmt(f),
            Subject::Config(c) | Subject::Redacted(c) => f.write_str(c),
        }
    }
}

/// One decision, as typed values: captured on the request path without
/// formatting anything; the writer thread turns it into a JSON line
/// (see [`AuditEvent::write_json`]).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// When (written as RFC 3339 UTC).
    pub ts: SystemTime,
    /// What the event is about.
    pub kind: Kind,
    /// Client socket address.
    pub client: Option<SocketAddr>,
    /// The sandbox identity, when `[[sandbox]]`s are configured.
    pub sandbox: Option<Arc<str>>,
    /// Normalised host (or the config source, for reloads).
    pub host: Option<Subject>,
    /// Port.
    pub port: Option<u16>,
    /// Method, for requests.
    pub method: Option<Method>,
    /// Normalised path without query, for requests.
    pub path: Option<String>,
    /// The deciding rule (written as `file:line`).
    pub rule: Option<RuleRef>,
    /// What was decided.
    pub decision: Outcome,
    /// The secret refs injected (names like `tools/github#token`, never values).
    pub secrets: Option<crate::credentials::inject::SecretNames>,
    /// The scanner pattern id, for findings.
    pub pattern: Option<String>,
    /// The decodings a finding was found under (`base64>percent`), when it
    /// was not in the plain bytes.
    pub chain: Option<String>,
    /// Which way, for findings.
    pub direction: Option<Direction>,
    /// Byte offset of a finding in its stream.
    pub offset: Option<u64>,
    /// The rules version in force (not written when empty).
    pub rules_version: Arc<str>,
    /// Stable reason code.
    pub reason: &'static str,
    /// HTTP status returned to the sandbox.
    pub status: Option<u16>,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes returned to the sandbox.
    pub bytes_down: u64,
    /// Milliseconds from decision to end of response.
    pub duration_ms: u64,
    /// Who decided an approval (`admin API`, `decider`, ...), for `approval` events.
    pub by: Option<String>,
    /// `permissive`: the rules refused this (the reason says why) and
    /// `airlock learn --permissive` forwarded it anyway.
    pub learn: Option<&'static str>,
}

/// Room for a typical line, so most lines are written without growing.
const LINE_CAPACITY: usize = 512;

/// A JSON line being written: `"name":value` pairs, strings escaped as
/// JSON requires (quotes, backslashes, control characters; everything else,
/// UTF-8 included, as it is).
struct Json<'a> {
    line: &'a mut Vec<u8>,
    /// A `Display` value's text, before it is escaped into the line.
    scratch: Vec<u8>,
}

impl Json<'_> {
    /// `,"name":` (`name` is written with its leading comma, if any).
    fn key(&mut self, name: &str) {
        let (comma, name) = match name.strip_prefix(',') {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if comma {
            self.line.push(b',');
        }
        self.line.push(b'"');
        self.line.extend_from_slice(name.as_bytes());
        self.line.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &str, value: &str) {
        self.bytes(name, value.as_bytes());
    }

    fn bytes(&mut self, name: &str, value: &[u8]) {
        self.key(name);
        self.quoted(value);
    }

    fn shown(&mut self, name: &str, value: &impl fmt::Display) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // Writing to a `Vec` cannot fail.
        let _ = write!(scratch, "{value}");
        self.bytes(name, &scratch);
        self.scratch = scratch;
    }

    /// A client address as `SocketAddr` displays it; an IPv4 one (nearly
    /// every client) without the formatter.
    fn addr(&mut self, name: &str, addr: &SocketAddr) {
        let SocketAddr::V4(v4) = addr else {
            return self.shown(name, addr);
        };
        self.key(name);
        self.line.push(b'"');
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                self.line.push(b'.');
            }
            self.digits(octet.into());
        }
        self.line.push(b':');
        self.digits(v4.port().into());
        self.line.push(b'"');
    }

    fn num(&mut self, name: &str, value: u64) {
        self.key(name);
        self.digits(value);
    }

    fn digits(&mut self, value: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut v = value;
        loop {
            at -= 1;
            // `v % 10` is below 10: the cast keeps it.
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.line.extend_from_slice(&digits[at..]);
    }

    /// `"value"`, escaped. `value` is UTF-8 (every caller passes a `str`'s
    /// bytes or a formatter's output).
    fn quoted(&mut self, value: &[u8]) {
        self.line.push(b'"');
        self.escaped(value);
        self.line.push(b'"');
    }

    /// `value` escaped, without quotes.
    fn escaped(&mut self, value: &[u8]) {
        // Most values need no escape at all: one pass to rule it out, 16
        // bytes at a time (a fold over a block has no early exit, so it
        // compiles to vector compares; a byte-wise `any` does not).
        let needs_escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        let clean = value
            .chunks(16)
            .all(|block| !block.iter().fold(false, |hit, &b| hit | needs_escape(b)));
        if clean {
            self.line.extend_from_slice(value);
            return;
        }
        let mut clean = 0;
        for (i, &b) in value.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            self.line.extend_from_slice(&value[clean..i]);
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.line.extend_from_slice(b"\\u00");
                self.line.push(HEX[usize::from(b >> 4)]);
                self.line.push(HEX[usize::from(b & 0xf)]);
            } else {
                self.line.extend_from_slice(escape);
            }
            clean = i + 1;
        }
        self.line.extend_from_slice(&value[clean..]);
    }
}

impl AuditEvent {
    /// A new event stamped now, with zero counters.
    pub fn new(
        kind: Kind,
        client: SocketAddr,
        host: Host,
        port: u16,
        decision: Outcome,
        reason: &'static str,
    ) -> Self {
        Self {
            ts: SystemTime::now(),
            kind,
            client: Some(client),
            sandbox: None,
            host: Some(Subject::Host(host)),
            port: Some(port),
            method: None,
            path: None,
            rule: None,
            decision,
            secrets: None,
            pattern: None,
            chain: None,
            direction: None,
            offset: None,
            rules_version: Arc::from(""),
            reason,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            by: None,
            learn: None,
        }
    }

    /// Writes the event as one JSON object (no newline). Formatting (the
    /// timestamp, addresses, hosts) happens here, in the writer thread.
    ///
    /// # Errors
    /// The writer failed.
    pub fn write_json(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        self.push_json(&mut line);
        out.write_all(&line)
    }

    /// Appends the event's JSON object to `line`: field names, order and
    /// omissions as documented. Written by hand rather than through serde:
    /// a derived serializer cost about 6,600 instructions an event (a
    /// formatter call per field and escaping byte by byte), a third of
    /// that here; a test holds the two equal.
    pub(crate) fn push_json(&self, line: &mut Vec<u8>) {
        // An RFC 3339 stamp is at most 35 bytes: written on the stack.
        // The length is what the cursor moved: `format_into`'s own count
        // comes up short for fractional seconds.
        let mut stamp = [0u8; 48];
        let mut cursor = &mut stamp[..];
        let written = time::OffsetDateTime::from(self.ts)
            .format_into(&mut cursor, &time::format_description::well_known::Rfc3339)
            .is_ok();
        let n = if written { 48 - cursor.len() } else { 0 };
        let ts = stamp.get(..n).unwrap_or_default();
        let mut json = Json {
            line,
            scratch: Vec::new(),
        };
        json.line.push(b'{');
        json.bytes("ts", ts);
        json.str(",kind", self.kind.as_str());
        if let Some(client) = &self.client {
            json.addr(",client", client);
        }
        if let Some(sandbox) = &self.sandbox {
            json.str(",sandbox", sandbox);
        }
        if let Some(host) = &self.host {
            match host {
                Subject::Host(h) => match h.as_name() {
                    Some(name) => json.str(",host", name),
                    None => json.shown(",host", h),
                },
                Subject::Config(c) | Subject::Redacted(c) => json.str(",host", c),
            }
        }
        if let Some(port) = self.port {
            json.num(",port", port.into());
        }
        if let Some(method) = &self.method {
            json.str(",method", method.as_str());
        }
        if let Some(path) = &self.path {
            json.str(",path", path);
        }
        if let Some(rule) = &self.rule {
            // `file:line`, as `RuleRef` displays it.
            json.key(",rule");
            json.line.push(b'"');
            json.escaped(rule.file.as_bytes());
            json.line.push(b':');
            json.digits(rule.line as u64);
            json.line.push(b'"');
        }
        json.str(",decision", self.decision.as_str());
        if let Some(secrets) = &self.secrets {
            json.key(",secrets");
            json.line.push(b'[');
            for (i, name) in secrets.iter().enumerate() {
                if i > 0 {
                    json.line.push(b',');
                }
                json.quoted(name.as_bytes());
            }
            json.line.push(b']');
        }
        if let Some(pattern) = &self.pattern {
            json.str(",pattern", pattern);
        }
        if let Some(chain) = &self.chain {
            json.str(",chain", chain);
        }
        if let Some(direction) = self.direction {
            json.str(",direction", direction.as_str());
        }
        if let Some(offset) = self.offset {
            json.num(",offset", offset);
        }
        if !self.rules_version.is_empty() {
            json.str(",rules_version", &self.rules_version);
        }
        json.str(",reason", self.reason);
        if let Some(status) = self.status {
            json.num(",status", status.into());
        }
        json.num(",bytes_up", self.bytes_up);
        json.num(",bytes_down", self.bytes_down);
        json.num(",duration_ms", self.duration_ms);
        if let Some(by) = &self.by {
            json.str(",by", by);
        }
        if let Some(learn) = self.learn {
            json.str(",learn", learn);
        }
        json.line.push(b'}');
    }

    /// The JSON line as a string (tests, tools).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(LINE_CAPACITY);
        self.push_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Where events are sent; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<AuditEvent>>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The last write or flush of the output failed (set and cleared by the
    /// writer thread).
    failing: Arc<AtomicBool>,
}

impl AuditSink {
    /// Starts the writer thread for `output`.
    ///
    /// # Errors
    /// The audit file cannot be opened.
    pub fn start(output: &AuditOutput) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match output {
            AuditOutput::Off => return Ok(Self::off()),
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::Stderr => Box::new(std::io::stderr()),
            AuditOutput::File(path) => Box::new(open_append(path)?),
        };
        let (tx, rx) = mpsc::channel(65_536);
        let metrics = Arc::new(Metrics::default());
        let failing = Arc::new(AtomicBool::new(false));
        let health = Health {
            failing: Arc::clone(&failing),
            metrics: Arc::clone(&metrics),
            errors: 0,
        };
        let handle = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || write_loop(rx, writer, health))?;
        if let Ok(mut writers) = WRITERS.lock() {
            writers.retain(|w| !w.is_finished());
            writers.push(handle);
        }
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            metrics,
            failing,
        })
    }

    /// A sink that discards everything.
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the audit output's last write failed (a full disk, a closed
    /// pipe): decisions are not being recorded. Cleared by the next write
    /// that succeeds.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The counters fed by this sink.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts and queues an event; never blocks.
    pub fn emit(&self, event: AuditEvent) {
        self.metrics.record(&event);
        self.send(event);
    }

    /// Counts and queues an event about the same request as `base`, with
    /// its own kind, decision and reason (and whatever `edit` adds). `base`
    /// is copied only when there is a log to write: with `output = "off"`
    /// only the counters move, at no allocation.
    pub fn emit_derived(
        &self,
        base: &AuditEvent,
        (kind, decision, reason): (Kind, Outcome, &'static str),
        edit: impl FnOnce(&mut AuditEvent),
    ) {
        self.metrics.decision(
            kind.as_str(),
            decision.as_str(),
            reason,
            base.sandbox.as_deref(),
        );
        if self.tx.is_some() {
            let mut event = base.clone();
            event.kind = kind;
            event.decision = decision;
            event.reason = reason;
            event.bytes_up = 0;
            event.bytes_down = 0;
            edit(&mut event);
            self.send(event);
        }
    }

    fn send(&self, event: AuditEvent) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err() {
            self.metrics.audit_dropped();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "audit queue full: events dropped");
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The writer threads started, so that a process about to exit can let
/// them write what is still queued ([`finish_writers`]).
static WRITERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (at most `limit`) for every audit writer to write its queue and
/// stop: each stops once the last [`AuditSink`] feeding it is dropped. Call
/// it after the runtime (and the state in it) is gone, before exiting, so
/// the decisions of the last requests are on disk. Returns whether all did.
pub fn finish_writers(limit: std::time::Duration) -> bool {
    let Ok(mut writers) = WRITERS.lock() else {
        return false;
    };
    let until = std::time::Instant::now() + limit;
    while writers.iter().any(|w| !w.is_finished()) {
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for w in writers.drain(..) {
        let _joined = w.join();
    }
    true
}

/// How long the writer lets events gather after the first one wakes it.
/// While it sleeps, no sender wakes it: under load that is one wake-up per
/// batch instead of one per event on the request path.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// What the writer thread tells the rest of the process about its output.
struct Health {
    failing: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    errors: u64,
}

impl Health {
    fn wrote(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("audit output writable again: decisions are recorded");
                }
            }
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                self.metrics.audit_write_error();
                self.errors += 1;
                // Warn on the 1st, 2nd, 4th, ... failure: loud, not a flood.
                if self.errors.is_power_of_two() {
                    tracing::error!(error = %e, failures = self.errors, "audit output cannot be written: decisions are not recorded");
                }
            }
        }
    }
}

fn write_loop(
    mut rx: mpsc::Receiver<AuditEvent>,
    writer: Box<dyn Write + Send>,
    mut health: Health,
) {
    let mut out = std::io::BufWriter::new(writer);
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    while let Some(event) = rx.blocking_recv() {
        std::thread::sleep(GATHER);
        let mut next = Some(event);
        let mut result = Ok(());
        while let Some(ev) = next {
            line.clear();
            ev.push_json(&mut line);
            line.push(b'\n');
            let written = out.write_all(&line);
            // One unusually long line does not keep its buffer for good.
            if line.capacity() > 4 * LINE_CAPACITY {
                line = Vec::with_capacity(LINE_CAPACITY);
            }
            if result.is_ok() {
                result = written;
            }
            next = rx.try_recv().ok();
        }
        // Flush whenever the queue runs dry, so a line is on disk (and
        // visible to `tail -f` and tests) as soon as traffic pauses.
        let flushed = out.flush();
        health.wrote(result.and(flushed));
    }
}

impl AuditEvent {
    /// A config reload: applied (`allow`) or refused (`deny`, last good kept).
    pub fn reload(applied: bool, source: &str, version: &str, reason: &'static str) -> Self {
        Self {
            ts: SystemTime::now(),
            kind: Kind::Reload,
            client: None,
            sandbox: None,
            host: Some(Subject::Config(source.to_owned())),
            port: None,
            method: None,
            path: None,
            rule: None,
            decision: if applied {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
            secrets: None,
            pattern: None,
            chain: None,
            direction: None,
            offset: None,
            rules_version: Arc::from(version),
            reason,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            by: None,
            learn: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// The serializer the line was written with before [`AuditEvent::push_json`]:
    /// the oracle the hand-written line is held to. A value written as its
    /// `Display` form.
    struct Shown<'a, T>(&'a T);

    impl<T: std::fmt::Display> serde::Serialize for Shown<'_, T> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self.0)
        }
    }

    /// The JSON line: field names, order and omissions as documented.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: &'a str,
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<Shown<'a, SocketAddr>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sandbox: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<Shown<'a, Subject>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<Shown<'a, RuleRef>>,
        decision: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        secrets: Option<&'a crate::credentials::inject::SecretNames>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pattern: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        chain: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        direction: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "str::is_empty")]
        rules_version: &'a str,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        learn: Option<&'static str>,
    }
    /// The line as serde_json writes it from the documented field list.
    fn serde_line(ev: &AuditEvent) -> String {
        let ts = time::OffsetDateTime::from(ev.ts)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let line = Line {
            ts: &ts,
            kind: ev.kind.as_str(),
            client: ev.client.as_ref().map(Shown),
            sandbox: ev.sandbox.as_deref(),
            host: ev.host.as_ref().map(Shown),
            port: ev.port,
            method: ev.method.as_ref().map(Method::as_str),
            path: ev.path.as_deref(),
            rule: ev.rule.as_ref().map(Shown),
            decision: ev.decision.as_str(),
            secrets: ev.secrets.as_ref(),
            pattern: ev.pattern.as_deref(),
            chain: ev.chain.as_deref(),
            direction: ev.direction.map(Direction::as_str),
            offset: ev.offset,
            rules_version: &ev.rules_version,
            reason: ev.reason,
            status: ev.status,
            bytes_up: ev.bytes_up,
            bytes_down: ev.bytes_down,
            duration_ms: ev.duration_ms,
            by: ev.by.as_deref(),
            learn: ev.learn,
        };
        serde_json::to_string(&line).unwrap()
    }

    proptest::proptest! {
        /// The hand-written line is byte for byte what serde_json writes:
        /// every field present or absent, strings with quotes, backslashes,
        /// control characters and non-ASCII text (one to escape past the
        /// first 16-byte block the clean check reads), numbers at their
        /// limits.
        #[test]
        fn the_written_line_equals_serde_json(
            texts in proptest::collection::vec(
                "(?s).{0,12}|[\\x00-\\x1f\"\\\\]{0,4}|\\PC{0,6}|[a-z]{14,40}[\\x00-\\x1f\"\\\\][a-z]{0,20}",
                8,
            ),
            present in proptest::collection::vec(proptest::bool::ANY, 16),
            numbers in proptest::collection::vec(proptest::num::u64::ANY, 4),
            small in proptest::collection::vec(proptest::num::u16::ANY, 2),
            nanos in 0u32..1_000_000_000,
            ip in proptest::num::u32::ANY,
        ) {
            let on = |i: usize| present[i];
            let text = |i: usize| texts[i].clone();
            let mut ev = AuditEvent::new(
                Kind::Finding,
                SocketAddr::from((std::net::Ipv4Addr::from(ip), small[0])),
                Host::parse("api.example.test").unwrap(),
                small[1],
                Outcome::Redact,
                "secret_in_body",
            );
            ev.ts = UNIX_EPOCH + Duration::new(numbers[0] % 4_102_444_800, nanos);
            if !on(0) { ev.client = None; }
            if on(0) && numbers[0] % 2 == 1 {
                let v6 = std::net::Ipv6Addr::from((u128::from(ip) << 64) | u128::from(numbers[1]));
                ev.client = Some(SocketAddr::from((v6, small[0])));
            }
            if on(1) { ev.sandbox = Some(Arc::from(text(0).as_str())); }
            ev.host = match (on(2), on(3)) {
                (true, true) => Some(Subject::Config(text(1))),
                (true, false) => Some(Subject::Redacted(text(1))),
                (false, true) => None,
                (false, false) if numbers[0] % 3 == 0 => Some(Subject::Host(Host::parse("192.0.2.7").unwrap())),
                (false, false) if numbers[0] % 3 == 1 => Some(Subject::Host(Host::parse("[2001:db8::1]").unwrap())),
                (false, false) => ev.host.take(),
            };
            if !on(4) { ev.port = None; }
            if on(5) { ev.method = Some(Method::from_bytes(b"PROPFIND").unwrap()); }
            if on(6) { ev.path = Some(text(2)); }
            if on(7) { ev.rule = Some(RuleRef { file: text(3).into(), line: usize::from(small[0]) }); }
            if on(8) { ev.secrets = Some(vec![Arc::from(text(4).as_str()), Arc::from("tools/x#y")].into()); }
            if on(9) { ev.pattern = Some(text(5)); }
            if on(10) { ev.chain = Some(text(6)); }
            if on(11) { ev.direction = Some(Direction::In); }
            if on(12) { ev.offset = Some(numbers[1]); }
            if on(13) { ev.rules_version = Arc::from(text(7).as_str()); }
            if on(14) { ev.status = Some(small[1]); }
            if on(15) { ev.by = Some(text(0)); ev.learn = Some("permissive"); }
            ev.bytes_up = numbers[1];
            ev.bytes_down = numbers[2];
            ev.duration_ms = numbers[3];
            proptest::prop_assert_eq!(ev.to_json(), serde_line(&ev));
        }
    }

    /// The typed event is written as the same JSON line the log always
    /// had: names, order, values, omissions.
    #[test]
    fn the_json_line_keeps_its_names_order_and_values() {
        let mut ev = AuditEvent::new(
            Kind::Request,
            "127.0.0.1:40000".parse().unwrap(),
            Host::parse("API.Pay.test.").unwrap(),
            443,
            Outcome::Allow,
            "rule_matched",
        );
        ev.ts = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        ev.sandbox = Some(Arc::from("agent-a"));
        ev.method = Some(Method::POST);
        ev.path = Some("/v1/refunds".into());
        ev.rule = Some(RuleRef {
            file: "rules/pay.toml".into(),
            line: 7,
        });
        ev.rules_version = Arc::from("0123abcd");
        ev.status = Some(200);
        ev.bytes_up = 1;
        ev.bytes_down = 2;
        ev.duration_ms = 3;
        assert_eq!(
            ev.to_json(),
            "{\"ts\":\"2023-11-14T22:13:20.25Z\",\"kind\":\"request\",\"client\":\"127.0.0.1:40000\",\
             \"sandbox\":\"agent-a\",\"host\":\"api.pay.test\",\"port\":443,\"method\":\"POST\",\
             \"path\":\"/v1/refunds\",\"rule\":\"rules/pay.toml:7\",\"decision\":\"allow\",\
             \"rules_version\":\"0123abcd\",\"reason\":\"rule_matched\",\"status\":200,\
             \"bytes_up\":1,\"bytes_down\":2,\"duration_ms\":3}"
        );

        // The stamp written on the stack is the one `format` makes, with
        // and without fractional seconds.
        for nanos in [0, 1, 250_000_000, 999_999_999] {
            let mut e = ev.clone();
            e.ts = UNIX_EPOCH + Duration::new(4_102_444_799, nanos);
            let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            let want = time::OffsetDateTime::from(e.ts)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(json["ts"], want.as_str());
        }

        let mut finding = ev.clone();
        finding.kind = Kind::Finding;
        finding.decision = Outcome::Block;
        finding.reason = "secret_in_body";
        finding.pattern = Some("github-pat".into());
        finding.chain = Some("base64".into());
        finding.direction = Some(Direction::Out);
        finding.offset = Some(9);
        finding.status = None;
        let json: serde_json::Value = serde_json::from_str(&finding.to_json()).unwrap();
        assert_eq!(json["kind"], "finding");
        assert_eq!(json["decision"], "block");
        assert_eq!(json["direction"], "out");
        assert_eq!(json["chain"], "base64");
        assert_eq!(json["offset"], 9);
        assert!(json.get("status").is_none());
    }

    #[test]
    fn a_reload_names_the_config_source_as_host() {
        let mut ev = AuditEvent::reload(false, "/etc/airlock.toml", "", "reload_refused");
        ev.ts = UNIX_EPOCH;
        assert_eq!(
            ev.to_json(),
            "{\"ts\":\"1970-01-01T00:00:00Z\",\"kind\":\"reload\",\"host\":\"/etc/airlock.toml\",\
             \"decision\":\"deny\",\"reason\":\"reload_refused\",\"bytes_up\":0,\"bytes_down\":0,\
             \"duration_ms\":0}"
        );
    }
}

#[cfg(test)]
mod failure_tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::{AuditEvent, Health, Metrics, write_loop};

    /// An output that refuses every write while `full` is set (a full disk).
    struct Disk {
        full: Arc<AtomicBool>,
        written: Arc<AtomicU64>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.written.fetch_add(buf.len() as u64, Ordering::SeqCst);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn wait(what: &str, f: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_failed_write_is_flagged_counted_and_cleared_once_writes_succeed() {
        let full = Arc::new(AtomicBool::new(true));
        let written = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let disk = Disk {
            full: Arc::clone(&full),
            written: Arc::clone(&written),
        };
        let health = Health {
            failing: Arc::clone(&failing),
            metrics: Arc::clone(&metrics),
            errors: 0,
        };
        let writer = std::thread::spawn(move || write_loop(rx, Box::new(disk), health));
        let event = || AuditEvent::reload(true, "airlock.toml", "v1", "reloaded");
        tx.blocking_send(event()).unwrap();
        wait("the failure to be flagged", || {
            failing.load(Ordering::SeqCst)
        });
        assert!(
            metrics
                .render()
                .contains("airlock_audit_write_errors_total 1")
        );
        // The disk has room again: the next event is written and the flag clears.
        full.store(false, Ordering::SeqCst);
        tx.blocking_send(event()).unwrap();
        wait("the flag to clear", || !failing.load(Ordering::SeqCst));
        assert!(written.load(Ordering::SeqCst) > 0);
        drop(tx);
        writer.join().unwrap();
    }
}
