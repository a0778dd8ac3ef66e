//! Where the secret scanner meets the request path: the URL, the headers
//! and the body going out, and the headers and body coming back.
//!
//! Outgoing (default `block`): a secret in the URL, an extension method, a
//! header (read as its `name: value` line) or the host name stops the
//! request before anything is sent (the host's at the CONNECT, before DNS). A small body (`[scan] prejudge_bytes`)
//! is read and scanned whole first, so a secret in it stops the request
//! before a connection to the origin is opened; in a larger body a secret
//! aborts the upstream stream before any byte of it leaves (the scanner
//! holds back the bytes that could still complete a match). Incoming (default `redact`): secrets
//! in response headers and bodies are replaced with `[REDACTED:<id>]`
//! before the sandbox sees them.
//!
//! A body airlock cannot read (a Content-Encoding other than gzip, deflate
//! or br, a corrupt stream, a decompression bomb) is refused, not forwarded
//! unscanned. Every finding is an audit event (pattern id, direction, byte
//! offset; never the value).

use std::sync::{Arc, OnceLock};

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::audit::{AuditEvent, AuditSink, Direction, Kind, Outcome};
use crate::error::{Place, ProxyError, Side};
use crate::scan::{
    Confidence, ContentCoding, EncodedForward, Finding, FindingSink, ScanBody, ScanMode, Scanner,
    header_line, redacted_value,
};
use crate::upstream::{BoxError, ProxyBody};

/// The audit log's direction for a side.
fn flow(side: Side) -> Direction {
    match side {
        Side::Request => Direction::Out,
        Side::Response => Direction::In,
    }
}

/// The scanner, the two modes and confidence thresholds, and the audit
/// context of one request.
pub(crate) struct RequestScan {
    scanner: Arc<Scanner>,
    outgoing: ScanMode,
    incoming: ScanMode,
    /// Least confidence acted on each way (`[scan] outgoing_confidence`,
    /// `incoming_confidence`).
    outgoing_min: Confidence,
    incoming_min: Confidence,
    audit: AuditSink,
    /// Copied per finding only (findings are rare; requests are not).
    template: Arc<AuditEvent>,
    /// Why the outgoing body failed, if it did. hyper's h2 client reports a
    /// failed body as a bare stream reset, so the reason travels here rather
    /// than in the error chain.
    failed: Arc<OnceLock<ProxyError>>,
    /// The rule's `scan_skip`: pattern ids its outgoing requests may carry
    /// (`None` for most rules: no allocation per request).
    skip_out: Option<Arc<[Arc<str>]>>,
    skip_mask: Option<Arc<[bool]>>,
}

impl RequestScan {
    /// `template` is the request's audit event (client, host, method, path).
    pub(crate) fn new(
        scanner: Arc<Scanner>,
        settings: &crate::config::ScanSettings,
        audit: AuditSink,
        template: &AuditEvent,
    ) -> Self {
        let mut template = template.clone();
        template.kind = Kind::Finding;
        template.reason = "secret_found";
        template.status = None;
        Self {
            scanner,
            outgoing: settings.outgoing.mode(),
            incoming: settings.incoming.mode(),
            outgoing_min: settings.outgoing_confidence,
            incoming_min: settings.incoming_confidence,
            audit,
            template: Arc::new(template),
            failed: Arc::new(OnceLock::new()),
            skip_out: None,
            skip_mask: None,
        }
    }

    /// Let the outgoing request carry findings of these pattern ids (the
    /// rule's `scan_skip`); the response is still scanned for them.
    pub(crate) fn skipping(mut self, ids: &Arc<[Arc<str>]>) -> Self {
        if !ids.is_empty() {
            self.skip_mask = self.scanner.skip_mask(ids);
            self.skip_out = Some(Arc::clone(ids));
        }
        self
    }

    /// The least confidence acted on going `direction`.
    fn min(&self, direction: Side) -> Confidence {
        match direction {
            Side::Request => self.outgoing_min,
            Side::Response => self.incoming_min,
        }
    }

    fn sink(&self, direction: Side, reason: &'static str) -> FindingSink {
        let mode = match direction {
            Side::Request => self.outgoing,
            Side::Response => self.incoming,
        };
        self.sink_as(direction, reason, mode)
    }

    /// Like [`RequestScan::sink`], recording `mode` as the decision.
    fn sink_as(&self, direction: Side, reason: &'static str, mode: ScanMode) -> FindingSink {
        let audit = self.audit.clone();
        let template = Arc::clone(&self.template);
        Arc::new(move |f: &Finding| {
            let mut ev = AuditEvent::clone(&template);
            ev.direction = Some(flow(direction));
            ev.reason = reason;
            ev.decision = mode_str(mode);
            ev.pattern = Some(f.pattern_id.to_string());
            ev.chain = (!f.chain.is_plain()).then(|| f.chain.to_string());
            ev.offset = Some(f.start);
            audit.emit(ev);
        })
    }

    /// What the WebSocket relay needs to scan messages both ways.
    pub(crate) fn websocket(&self) -> super::websocket::WsScan {
        super::websocket::WsScan {
            scanner: Arc::clone(&self.scanner),
            outgoing: self.outgoing,
            incoming: self.incoming,
            outgoing_min: self.outgoing_min,
            incoming_min: self.incoming_min,
            out_sink: self.sink(Side::Request, "secret_in_websocket"),
            in_sink: self.sink(Side::Response, "secret_in_websocket"),
        }
    }

    /// Outgoing, the findings of the rule's `scan_skip` kinds go;
    /// incoming, compressed data airlock cannot read is no finding (a
    /// download's .tar.xz).
    fn drop_skipped(&self, findings: &mut Vec<Finding>, direction: Side) {
        findings.retain(|f| !self.skipped(f, direction));
    }

    fn skipped(&self, f: &Finding, direction: Side) -> bool {
        match direction {
            Side::Request => self
                .skip_out
                .as_ref()
                .is_some_and(|skip| skip.contains(&f.pattern_id)),
            Side::Response => &*f.pattern_id == crate::scan::UNREADABLE,
        }
    }

    /// What `bytes` holds that this request acts on going `direction`.
    fn findings(&self, bytes: &[u8], direction: Side) -> Vec<Finding> {
        let mut findings = self.scanner.scan_min(bytes, self.min(direction));
        self.drop_skipped(&mut findings, direction);
        findings
    }

    /// Audit `findings`.
    fn record(&self, findings: &[Finding], direction: Side, reason: &'static str) {
        let sink = self.sink(direction, reason);
        for f in findings {
            sink(f);
        }
    }

    /// Scans `bytes`; returns the replacement in redact mode, or the
    /// blocking pattern id in block mode.
    fn check(
        &self,
        bytes: &[u8],
        direction: Side,
        reason: &'static str,
    ) -> Result<Option<Vec<u8>>, String> {
        let mode = match direction {
            Side::Request => self.outgoing,
            Side::Response => self.incoming,
        };
        let min = self.min(direction);
        let (replacement, mut findings) = match (mode, direction) {
            (ScanMode::Redact, Side::Request) => {
                let skipped = |f: &Finding| self.skipped(f, direction);
                match self.scanner.redact_outgoing(bytes, min, skipped) {
                    Ok((redacted, findings)) => (Some(redacted), findings),
                    // Compressed data with a finding inside (it cannot be
                    // rewritten), too deep or unreadable: refused.
                    Err(stop) => {
                        self.record(std::slice::from_ref(&stop), direction, reason);
                        return Err(stop.label());
                    }
                }
            }
            (ScanMode::Redact, Side::Response) => {
                let (redacted, findings) = self.scanner.redact_min(bytes, min);
                (Some(redacted), findings)
            }
            _ => (None, self.scanner.scan_min(bytes, min)),
        };
        self.drop_skipped(&mut findings, direction);
        if findings.is_empty() {
            return Ok(None);
        }
        self.record(&findings, direction, reason);
        match mode {
            ScanMode::Block => Err(findings.first().map(Finding::label).unwrap_or_default()),
            ScanMode::Redact => Ok(replacement),
            ScanMode::Log => Ok(None),
        }
    }

    /// Why the outgoing body was stopped, if it was: a leak, or a body
    /// that could not be scanned.
    pub(crate) fn body_failure(&self) -> Option<ProxyError> {
        self.failed.get().cloned()
    }

    /// The request target and headers (except `skip`): [`Self::request_uri`]
    /// then [`Self::request_headers`], with one scan over both first. Most
    /// requests carry no secret, and a scan's fixed cost (its state, its
    /// buffers) was paid twice; only when the joint scan finds something
    /// are the two judged apart, so a refusal still names its place. (In
    /// redact mode each is rewritten on its own, so they are judged apart.)
    pub(crate) fn request_head(
        &self,
        uri: &mut Uri,
        headers: &mut HeaderMap,
        skip: &[HeaderName],
    ) -> Result<(), ProxyError> {
        if self.outgoing == ScanMode::Redact {
            self.request_uri(uri)?;
            return self.request_headers(headers, skip);
        }
        let mut all = self.uri_bytes(uri);
        // A blank line ends every decoder's run, as between values.
        all.extend_from_slice(b"\n\n");
        header_lines(headers, skip, &mut all);
        if self.findings(&all, Side::Request).is_empty() {
            return Ok(());
        }
        // Judged apart now. What only the joined text matched is an
        // artifact of joining: a blank line ends every decoder's run and
        // no literal or token spans it, so only a pattern that reads a
        // keyword's context across whitespace can match there, and that
        // context could as well have been left out.
        self.request_uri(uri)?;
        self.request_headers(headers, skip)
    }

    /// The bytes of the request target that are scanned.
    fn uri_bytes(&self, uri: &Uri) -> Vec<u8> {
        uri_bytes(uri, self.outgoing != ScanMode::Redact)
    }

    /// The request target (path and query).
    pub(crate) fn request_uri(&self, uri: &mut Uri) -> Result<(), ProxyError> {
        if uri.path_and_query().is_none() {
            return Ok(());
        }
        let bytes = self.uri_bytes(uri);
        match self.check(&bytes, Side::Request, "secret_in_url") {
            Ok(None) => Ok(()),
            Ok(Some(redacted)) => {
                let mut parts = std::mem::take(uri).into_parts();
                parts.path_and_query =
                    Some(http::uri::PathAndQuery::try_from(redacted).map_err(|e| {
                        ProxyError::BadRequest(format!("cannot redact the URL: {e}"))
                    })?);
                *uri = Uri::from_parts(parts)
                    .map_err(|e| ProxyError::BadRequest(format!("cannot redact the URL: {e}")))?;
                Ok(())
            }
            Err(pattern) => Err(ProxyError::Leak {
                pattern,
                place: Place::Url,
            }),
        }
    }

    /// Request headers, except `skip` (the ones airlock itself set).
    pub(crate) fn request_headers(
        &self,
        headers: &mut HeaderMap,
        skip: &[HeaderName],
    ) -> Result<(), ProxyError> {
        scan_headers(self, headers, skip, Side::Request).map_err(|(pattern, name)| {
            ProxyError::Leak {
                pattern,
                place: Place::Header(name),
            }
        })
    }

    /// What the sandbox wrote around placeholders airlock swapped (see
    /// [`crate::credentials::inject::Applied::sandbox_parts`]). The header
    /// now carries the real credential, so the sandbox's part cannot be
    /// redacted on its own without rebuilding it: see [`Self::unredactable`].
    pub(crate) fn request_placeholder_parts(
        &self,
        parts: &[(HeaderName, Vec<u8>)],
    ) -> Result<(), ProxyError> {
        for (name, bytes) in parts {
            self.unredactable(bytes, "secret_in_header", || Place::Header(name.clone()))?;
        }
        Ok(())
    }

    /// The method, which the agent writes too: an extension method is any
    /// token (`AKIA...` is one). See [`Self::unredactable`].
    pub(crate) fn request_method(&self, method: &http::Method) -> Result<(), ProxyError> {
        if is_standard(method) {
            return Ok(());
        }
        self.unredactable(method.as_str().as_bytes(), "secret_in_method", || {
            Place::Method
        })
    }

    /// The host of a request that did not come through a CONNECT (plain
    /// HTTP, absolute-form). See [`host_text`] and [`Self::unredactable`].
    pub(crate) fn request_host(&self, host: &crate::policy::Host) -> Result<(), ProxyError> {
        match host_text(host) {
            Some(text) => self.unredactable(&text, "secret_in_host", || Place::Host),
            None => Ok(()),
        }
    }

    /// Outgoing bytes that cannot be rewritten: a finding refuses the
    /// request in block and redact mode alike; log mode only records.
    fn unredactable(
        &self,
        bytes: &[u8],
        reason: &'static str,
        place: impl FnOnce() -> Place,
    ) -> Result<(), ProxyError> {
        let findings = self.findings(bytes, Side::Request);
        let Some(first) = findings.first() else {
            return Ok(());
        };
        let mode = match self.outgoing {
            ScanMode::Log => ScanMode::Log,
            ScanMode::Block | ScanMode::Redact => ScanMode::Block,
        };
        let sink = self.sink_as(Side::Request, reason, mode);
        for f in &findings {
            sink(f);
        }
        if mode == ScanMode::Block {
            return Err(ProxyError::Leak {
                pattern: first.label(),
                place: place(),
            });
        }
        Ok(())
    }

    /// Response headers.
    pub(crate) fn response_headers(&self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        scan_headers(self, headers, &[], Side::Response).map_err(|(pattern, name)| {
            ProxyError::ResponseLeak {
                pattern,
                place: Place::Header(name),
            }
        })
    }

    /// Offers only the encodings the scanner can decode, so responses come
    /// back in a form it can read.
    pub(crate) fn limit_accept_encoding(&self, headers: &mut HeaderMap) {
        if self.incoming == ScanMode::Log && self.outgoing == ScanMode::Log {
            return;
        }
        let Some(v) = headers.get(ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let kept: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|t| {
                let name = t.split(';').next().unwrap_or("").trim();
                ["gzip", "x-gzip", "deflate", "br", "identity"]
                    .iter()
                    .any(|k| name.eq_ignore_ascii_case(k))
            })
            .collect();
        if kept.is_empty() {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        } else if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
            headers.insert(ACCEPT_ENCODING, v);
        }
    }

    /// Wraps the request body.
    pub(crate) fn request_body(
        &self,
        headers: &mut HeaderMap,
        body: ProxyBody,
    ) -> Result<ProxyBody, ProxyError> {
        self.wrap_body(headers, body, Side::Request)
            .map_err(|reason| ProxyError::Unscannable {
                side: Side::Request,
                reason,
            })
    }

    /// The request body, judged whole when it is small: a body of at most
    /// `limit` bytes (declared by Content-Length, or a chunked body that
    /// ends within the bound) is read, decoded and scanned before the
    /// request head goes upstream, so a refused request leaves no trace at
    /// the origin. It must arrive within `deadline`. A larger body streams
    /// through [`RequestScan::request_body`], holding back only what could
    /// still complete a match. In `log` mode nothing is refused, so
    /// nothing is read ahead.
    pub(crate) async fn request_body_judged(
        &self,
        headers: &mut HeaderMap,
        mut body: ProxyBody,
        limit: usize,
        deadline: std::time::Duration,
    ) -> Result<ProxyBody, ProxyError> {
        let declared = body.size_hint().lower();
        if body.is_end_stream() || self.outgoing == ScanMode::Log || declared > limit as u64 {
            return self.request_body(headers, body);
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut frames: Vec<http_body::Frame<bytes::Bytes>> = Vec::new();
        let mut read = 0usize;
        let mut ended = false;
        while read <= limit {
            match tokio::time::timeout_at(until, body.frame()).await {
                Err(_) => return Err(ProxyError::BodyTimeout(deadline.as_secs().max(1))),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    return Err(ProxyError::BadRequest(format!(
                        "the request body could not be read: {e}"
                    )));
                }
                Ok(Some(Ok(frame))) => {
                    read += frame.data_ref().map_or(0, bytes::Bytes::len);
                    frames.push(frame);
                }
            }
        }
        let replay = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
        if !ended {
            // Over the bound: stream it, read bytes first.
            let rest = http_body_util::BodyStream::new(body);
            let chained = futures_util::StreamExt::chain(replay, rest);
            return self.request_body(
                headers,
                http_body_util::StreamBody::new(chained).boxed_unsync(),
            );
        }
        let whole = self.request_body(
            headers,
            http_body_util::StreamBody::new(replay).boxed_unsync(),
        )?;
        // Everything is in memory: scanning it cannot wait on the client.
        match whole.collect().await {
            Ok(done) => {
                let trailers = done.trailers().cloned();
                let data = done.to_bytes();
                let Some(trailers) = trailers else {
                    // Exact length: the origin gets the same framing.
                    return Ok(crate::error::full(data));
                };
                let out = [
                    Ok::<_, BoxError>(http_body::Frame::data(data)),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                Ok(http_body_util::StreamBody::new(futures_util::stream::iter(out)).boxed_unsync())
            }
            Err(e) => Err(self
                .body_failure()
                .unwrap_or_else(|| ProxyError::Unscannable {
                    side: Side::Request,
                    reason: e.to_string(),
                })),
        }
    }

    /// Wraps the response body.
    pub(crate) fn response_body(
        &self,
        headers: &mut HeaderMap,
        body: ProxyBody,
    ) -> Result<ProxyBody, ProxyError> {
        self.wrap_body(headers, body, Side::Response)
            .map_err(|reason| ProxyError::Unscannable {
                side: Side::Response,
                reason,
            })
    }

    fn wrap_body(
        &self,
        headers: &mut HeaderMap,
        body: ProxyBody,
        direction: Side,
    ) -> Result<ProxyBody, String> {
        if body.is_end_stream() {
            return Ok(body);
        }
        let mode = match direction {
            Side::Request => self.outgoing,
            Side::Response => self.incoming,
        };
        let coding = content_coding(headers)?;
        let scanner = Arc::clone(&self.scanner);
        let wrapped = if coding == ContentCoding::Identity && direction == Side::Request {
            // Compressed without saying so: read by its first bytes.
            ScanBody::sniffing(body, scanner, mode)
        } else if coding == ContentCoding::Identity {
            ScanBody::new(body, scanner, mode)
        } else if mode == ScanMode::Redact {
            headers.remove(CONTENT_ENCODING);
            ScanBody::decoding(body, scanner, mode, coding, EncodedForward::Decoded)
        } else {
            ScanBody::decoding(body, scanner, mode, coding, EncodedForward::Original)
        };
        if mode == ScanMode::Redact {
            // The length changes: send chunked (h1) or unsized (h2).
            headers.remove(CONTENT_LENGTH);
        }
        let wrapped = match direction {
            Side::Request => wrapped.skipping(self.skip_mask.clone()).outgoing(),
            Side::Response => wrapped,
        };
        let wrapped = wrapped
            .with_min_confidence(self.min(direction))
            .with_sink(self.sink(direction, "secret_in_body"));
        let slot = (direction == Side::Request).then(|| Arc::clone(&self.failed));
        Ok(wrapped
            .map_err(move |e| -> BoxError {
                match &slot {
                    // The reason, kept for forward (see `failed`), and the
                    // same error up the chain.
                    Some(slot) => {
                        let err = ProxyError::from((e, Side::Request));
                        let _first = slot.set(err.clone());
                        Box::new(err)
                    }
                    None => Box::new(e),
                }
            })
            .boxed_unsync())
    }
}

/// Each header of `headers` (except `skip`) as its wire line, `name:
/// value`, followed by a blank line, which ends every decoder's run: one
/// value's tail cannot shift the base64 alignment of the next. The name is
/// read with its value: it can carry a secret itself (lowercased, or hex),
/// and it is the context some patterns need (`x-aws-secret-access-key:`).
fn header_lines(headers: &HeaderMap, skip: &[HeaderName], out: &mut Vec<u8>) {
    for (name, value) in headers.iter() {
        if !skip.contains(name) {
            header_line(name, value, out);
            out.extend_from_slice(b"\n\n");
        }
    }
}

/// The bytes of the request target that are scanned; `segments`: each
/// path segment again on its own (after a blank line, which ends every
/// decoder's run), so that `/x/<base64>` is decoded from the segment's
/// start rather than from the first `/` (redaction rewrites the target as
/// it came, so it scans it alone).
fn uri_bytes(uri: &Uri, segments: bool) -> Vec<u8> {
    let Some(pq) = uri.path_and_query() else {
        return Vec::new();
    };
    let mut bytes = Vec::with_capacity(2 * pq.as_str().len() + 512);
    bytes.extend_from_slice(pq.as_str().as_bytes());
    if segments {
        for seg in pq.path().split('/').filter(|s| !s.is_empty()) {
            bytes.extend_from_slice(b"\n\n");
            bytes.extend_from_slice(seg.as_bytes());
        }
    }
    bytes
}

/// Whether the request target, the headers (except `skip`) and `path` (the
/// audit record's decoded path) hold nothing at all: no finding of any
/// confidence, `scan_skip` kinds included. One scan over them joined by
/// blank lines, which hides nothing any part holds alone. When it is
/// clean, neither the head nor the path needs a scan of its own (the most
/// common case by far); else each is judged on its own as before.
pub(crate) fn head_is_clean(
    scanner: &Scanner,
    uri: &Uri,
    headers: &HeaderMap,
    skip: &[HeaderName],
    path: &str,
) -> bool {
    let mut all = uri_bytes(uri, true);
    all.extend_from_slice(b"\n\n");
    header_lines(headers, skip, &mut all);
    all.extend_from_slice(b"\n\n");
    all.extend_from_slice(path.as_bytes());
    scanner.scan_min(&all, Confidence::Shaped).is_empty()
}

fn scan_headers(
    scan: &RequestScan,
    headers: &mut HeaderMap,
    skip: &[HeaderName],
    direction: Side,
) -> Result<(), (String, HeaderName)> {
    // Fast path: one scan over all lines (most requests carry no secret);
    // only when something is found are the lines scanned one by one.
    let mut all = Vec::with_capacity(512);
    header_lines(headers, skip, &mut all);
    if scan.findings(&all, direction).is_empty() {
        return Ok(());
    }
    let mut replace: Vec<(HeaderName, usize, Option<HeaderValue>)> = Vec::new();
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| !skip.contains(n))
        .cloned()
        .collect();
    let mut line = Vec::new();
    for name in names {
        for (i, value) in headers.get_all(&name).iter().enumerate() {
            line.clear();
            header_line(&name, value, &mut line);
            match scan.check(&line, direction, "secret_in_header") {
                Ok(None) => {}
                Ok(Some(redacted)) => {
                    replace.push((name.clone(), i, redacted_value(&name, &redacted)));
                }
                Err(pattern) => return Err((pattern, name)),
            }
        }
    }
    for (name, index, value) in replace {
        let mut values: Vec<Option<HeaderValue>> =
            headers.get_all(&name).iter().cloned().map(Some).collect();
        if let Some(slot) = values.get_mut(index) {
            *slot = value;
        }
        headers.remove(&name);
        for v in values.into_iter().flatten() {
            headers.append(name.clone(), v);
        }
    }
    Ok(())
}

/// The body's one content coding. `Content-Encoding` is a list, and
/// several fields are one list (`gzip` twice is `gzip, gzip`: the origin
/// decodes twice), so every item of every field counts; `identity` adds
/// nothing. More than one layer is refused: airlock decodes one, and does
/// not send what it cannot scan.
fn content_coding(headers: &HeaderMap) -> Result<ContentCoding, String> {
    let mut coding = ContentCoding::Identity;
    let mut layers = 0;
    for value in headers.get_all(CONTENT_ENCODING) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let c = ContentCoding::from_header(item).ok_or_else(|| {
                format!(
                    "Content-Encoding `{}` is not one airlock can decode (gzip, deflate, br)",
                    String::from_utf8_lossy(item.trim_ascii())
                )
            })?;
            if c != ContentCoding::Identity {
                layers += 1;
                coding = c;
            }
        }
    }
    if layers > 1 {
        return Err(format!(
            "Content-Encoding stacks {layers} codings; airlock decodes one, and does not send \
             what it cannot scan"
        ));
    }
    Ok(coding)
}

/// The methods of RFC 9110 and PATCH: fixed words, nothing to scan.
pub(crate) fn is_standard(method: &http::Method) -> bool {
    use http::Method as M;
    [
        M::GET,
        M::HEAD,
        M::POST,
        M::PUT,
        M::DELETE,
        M::OPTIONS,
        M::PATCH,
        M::CONNECT,
        M::TRACE,
    ]
    .contains(method)
}

/// What of a host name is scanned: the name, then its labels run together
/// (a label holds 63 bytes at most, so a long secret is split across
/// labels). `None` for an IP address, which carries nothing.
pub(crate) fn host_text(host: &crate::policy::Host) -> Option<Vec<u8>> {
    let name = host.as_name()?;
    let mut text = Vec::with_capacity(2 * name.len() + 2);
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"\n\n");
    text.extend(name.bytes().filter(|&b| b != b'.'));
    Some(text)
}

/// The first secret in a host name, as the refusal to send it: the host is
/// scanned before it is resolved or dialled, since a name reaches DNS and
/// the origin (SNI, `Host`). Outgoing log mode only records it (`None`).
pub(crate) fn host_leak(
    scanner: &Scanner,
    settings: &crate::config::ScanSettings,
    host: &crate::policy::Host,
) -> Option<ProxyError> {
    if settings.outgoing.mode() == ScanMode::Log {
        return None;
    }
    let text = host_text(host)?;
    let first = scanner
        .scan_min(&text, settings.outgoing_confidence)
        .into_iter()
        .next()?;
    Some(ProxyError::Leak {
        pattern: first.label(),
        place: Place::Host,
    })
}

fn mode_str(mode: ScanMode) -> Outcome {
    match mode {
        ScanMode::Block => Outcome::Block,
        ScanMode::Redact => Outcome::Redact,
        ScanMode::Log => Outcome::Log,
    }
}
