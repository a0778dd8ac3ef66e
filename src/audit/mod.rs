//! Audit: one JSON line per decision (allow, deny, error), written off the
//! request path by a writer thread.
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

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

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC.
    pub ts: String,
    /// `connect` (tunnel decision), `request`, `inject`, `finding`, `reload` or `approval`.
    pub kind: &'static str,
    /// Client socket address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The sandbox identity, when `[[sandbox]]`s are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Normalised host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Method, for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Normalised path without query, for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `file:line` of the deciding rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `allow` or `deny` (or `error` when an allowed request failed).
    pub decision: &'static str,
    /// The secret refs injected (names like `tools/github#token`, never values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<crate::credentials::inject::SecretNames>,
    /// The scanner pattern id, for findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The decodings a finding was found under (`base64>percent`), when it
    /// was not in the plain bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// `out` (request) or `in` (response), for findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// Byte offset of a finding in its stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The rules version in force.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rules_version: String,
    /// Stable reason code.
    pub reason: &'static str,
    /// HTTP status returned to the sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes returned to the sandbox.
    pub bytes_down: u64,
    /// Milliseconds from decision to end of response.
    pub duration_ms: u64,
    /// Who decided an approval (`admin API`, `decider`, ...), for `approval` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl AuditEvent {
    /// A new event stamped now, with zero counters.
    pub fn new(
        kind: &'static str,
        client: String,
        host: String,
        port: u16,
        decision: &'static str,
        reason: &'static str,
    ) -> Self {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            ts,
            kind,
            client: Some(client),
            sandbox: None,
            host: Some(host),
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
            rules_version: String::new(),
            reason,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            by: None,
        }
    }
}

/// Where events are sent; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<AuditEvent>>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
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
        std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || write_loop(rx, writer))?;
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// A sink that discards everything.
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
        }
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
        (kind, decision, reason): (&'static str, &'static str, &'static str),
        edit: impl FnOnce(&mut AuditEvent),
    ) {
        self.metrics
            .decision(kind, decision, reason, base.sandbox.as_deref());
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

fn write_loop(mut rx: mpsc::Receiver<AuditEvent>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(writer);
    while let Some(event) = rx.blocking_recv() {
        let mut next = Some(event);
        while let Some(ev) = next {
            if serde_json::to_writer(&mut out, &ev).is_ok() {
                let _newline = out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        // Flush whenever the queue runs dry, so a line is on disk (and
        // visible to `tail -f` and tests) as soon as traffic pauses.
        let _flushed = out.flush();
    }
}

impl AuditEvent {
    /// A config reload: applied (`allow`) or refused (`deny`, last good kept).
    pub fn reload(applied: bool, source: &str, version: &str, reason: &'static str) -> Self {
        let mut ev = Self::new(
            "reload",
            String::new(),
            source.to_owned(),
            0,
            if applied { "allow" } else { "deny" },
            reason,
        );
        ev.client = None;
        ev.port = None;
        ev.rules_version = version.to_owned();
        ev
    }
}
