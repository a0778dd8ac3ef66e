//! [`ScanBody`]: an `http_body::Body` wrapper that scans each data frame as it
//! passes, through a [`ScanState`]; its trailers (headers sent after the
//! body) are scanned too, each as its `name: value` line. The body is never
//! buffered whole.
//!
//! - [`ScanMode::Block`]: the first finding makes the body yield
//!   [`ScanError::Blocked`] ([`LeakBlocked`]) before any byte of the secret is
//!   sent, so hyper aborts the upstream request.
//! - [`ScanMode::Redact`]: findings are replaced by `[REDACTED:<id>]`; the
//!   length changes, so [`size_hint`](http_body::Body::size_hint) becomes
//!   unknown and the caller must drop `Content-Length`.
//! - [`ScanMode::Log`]: frames pass through unchanged.
//!
//! Every finding is handed to the optional [`FindingSink`] (for the audit
//! log) as soon as it is final.
//!
//! # Content-Encoding
//! [`ScanBody::decoding`] scans the *decoded* stream of a gzip, deflate
//! (zlib, or raw deflate as some servers send) or br body:
//! - [`EncodedForward::Original`] forwards the original encoded frames
//!   unchanged (for block/log on outgoing bodies). An encoded frame is held
//!   until the decoded bytes it produced have been cleared by the scanner;
//!   only the bits the decoder has not turned into output yet (a partial
//!   symbol) can run ahead. The encoded frames are scanned as they are
//!   too, and held until that scan has cleared them as well: a gzip
//!   header's name, comment and extra field are not in the decoded stream
//!   but leave with the frames. Encoded bytes cannot be rewritten, so in
//!   this form [`ScanMode::Redact`] acts as [`ScanMode::Block`].
//! - [`EncodedForward::Decoded`] forwards the decoded (and, in redact mode,
//!   redacted) bytes. The caller must then drop `Content-Encoding` and
//!   `Content-Length`. Use it to redact an encoded response.
//!
//! [`ScanBody::sniffing`] does the same for a body sent without a
//! `Content-Encoding` whose first bytes are a gzip or zlib header.
//!
//! Fail closed: a body that does not decode, or whose decoded size passes
//! both 10 MiB and 100 times its encoded size (a decompression bomb), or
//! where 1 KiB of input decodes to more than 16 MiB, ends with
//! [`ScanError::Decode`] / [`ScanError::TooLarge`].
//!
//! # Memory usage
//! The [`ScanState`] hold-back (see [`stream`](super::stream)), plus, with
//! [`EncodedForward::Original`], the encoded frames waiting for it, plus,
//! while decoding, the decoder's window (32 KiB for deflate, up to 16 MiB
//! for brotli streams that declare a large window) and one frame's decoded
//! output.

use std::{
    collections::VecDeque,
    error::Error as StdError,
    io::Write as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Chain, Confidence, Finding, ScanMode, ScanState, Scanner, decode};

/// Callback receiving each finding (for audit). Must not block.
pub type FindingSink = Arc<dyn Fn(&Finding) + Send + Sync>;

/// Decoded size above which the ratio cap applies.
const DECODED_FREE: u64 = 10 * 1024 * 1024;
/// Maximum decoded/encoded ratio past [`DECODED_FREE`].
const MAX_RATIO: u64 = 100;
/// Input is fed to the decoder in pieces of this size...
const DECODE_PIECE: usize = 1024;
/// ...and one piece may not decode to more than this.
const PIECE_OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// A body was stopped because it carried a secret. Its `Display` names the
/// pattern (and the decoding chain it was found under) only, never the
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret leak blocked (pattern {})", self.label())]
pub struct LeakBlocked {
    /// Pattern id, or `held:<id>`.
    pub pattern_id: Arc<str>,
    /// The decodings it was found under (empty for plain bytes).
    pub chain: Chain,
}

impl LeakBlocked {
    /// `pattern-id` or `pattern-id, decoded base64>percent`.
    pub fn label(&self) -> String {
        if self.chain.is_plain() {
            self.pattern_id.to_string()
        } else {
            format!("{}, decoded {}", self.pattern_id, self.chain)
        }
    }
}

/// Why a [`ScanBody`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A secret was found in block mode.
    #[error(transparent)]
    Blocked(#[from] LeakBlocked),
    /// The body did not decode with its declared Content-Encoding.
    #[error("cannot decode {coding} body: {reason}")]
    Decode {
        /// `gzip`, `deflate` or `br`.
        coding: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The body is encoded more deeply than the decoders go
    /// ([`MAX_DEPTH`](super::MAX_DEPTH)), or holds compressed data that
    /// decodes to more than [`INFLATE_RATIO`](super::decode::INFLATE_RATIO)
    /// times its size; outgoing, it is refused rather than passed
    /// unscanned.
    #[error(
        "it is encoded more than {max} layers deep, or compressed data in it expands more than \
         {ratio} times ({chain}); airlock does not send what it cannot scan",
        max = super::MAX_DEPTH,
        ratio = super::decode::INFLATE_RATIO
    )]
    TooDeep {
        /// The decodings, the last one being the one too many.
        chain: Chain,
    },
    /// Outgoing, the body holds compressed data airlock cannot read (an
    /// xz, bzip2, zstd, 7z or rar header, or an encrypted zip entry or one
    /// not compressed by deflate): refused rather than passed unscanned,
    /// unless the rule lists `unreadable-compressed` in `scan_skip`.
    #[error(
        "it holds compressed data airlock cannot read ({chain}); airlock does not send what it \
         cannot scan (a rule may allow it with scan_skip = [\"unreadable-compressed\"])"
    )]
    Unreadable {
        /// The decodings to the data, the last one being its format.
        chain: Chain,
    },
    /// The decoded body passed the size/ratio caps (decompression bomb).
    #[error("decoded body too large: {decoded} bytes from {encoded} encoded bytes")]
    TooLarge {
        /// Decoded bytes so far.
        decoded: u64,
        /// Encoded bytes so far.
        encoded: u64,
    },
    /// A secret was found in a trailer, in block mode.
    #[error(
        "secret leak blocked in {} (pattern {})",
        name.as_ref().map_or_else(|| "a trailer's name".to_owned(), |n| format!("trailer {n}")),
        leak.label()
    )]
    Trailer {
        /// The trailer's name; `None` when the name itself holds the
        /// secret (so that this error, logged, does not).
        name: Option<http::HeaderName>,
        /// What was found.
        leak: LeakBlocked,
    },
    /// The wrapped body failed.
    #[error("body error: {0}")]
    Body(Box<dyn StdError + Send + Sync>),
}

/// A `Content-Encoding` the scanner can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentCoding {
    /// No encoding.
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip,
    /// `deflate` (zlib; raw deflate accepted too).
    Deflate,
    /// `br`.
    Brotli,
}

impl ContentCoding {
    /// Parse a `Content-Encoding` header value. `None` for anything else,
    /// including lists of several codings: the caller should refuse such a
    /// body (fail closed) rather than forward it unscanned.
    pub fn from_header(value: &[u8]) -> Option<ContentCoding> {
        let v = value.trim_ascii();
        let eq = |s: &str| v.eq_ignore_ascii_case(s.as_bytes());
        if v.is_empty() || eq("identity") {
            Some(ContentCoding::Identity)
        } else if eq("gzip") || eq("x-gzip") {
            Some(ContentCoding::Gzip)
        } else if eq("deflate") {
            Some(ContentCoding::Deflate)
        } else if eq("br") {
            Some(ContentCoding::Brotli)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            ContentCoding::Identity => "identity",
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
            ContentCoding::Brotli => "br",
        }
    }
}

/// What a decoding [`ScanBody`] forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodedForward {
    /// The original encoded frames (block / log).
    Original,
    /// The decoded, possibly redacted, bytes (drop Content-Encoding and
    /// Content-Length).
    Decoded,
}

pin_project! {
    #[project = ScanBodyProj]
    /// A body whose data frames are scanned on the way through. See the
    /// [module docs](self).
    pub struct ScanBody<B> {
        #[pin]
        inner: B,
        state: ScanState,
        sink: Option<FindingSink>,
        decoder: Option<Decoder>,
        forward: EncodedForward,
        // Original-forward: the encoded frames as they are, scanned too
        // (a gzip header's name, comment and extra field are not in the
        // decoded stream, and leave with the frames).
        raw: Option<ScanState>,
        // Original-forward: encoded frames and the decoded and encoded
        // offsets they reach.
        queued: VecDeque<(Bytes, u64, u64)>,
        ready: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        inner_done: bool,
        failed: bool,
        encoded_total: u64,
        decoded_total: u64,
    }
}

impl<B> std::fmt::Debug for ScanBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanBody")
            .field("state", &self.state)
            .field("forward", &self.forward)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<B> ScanBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// Scan an unencoded (or not-to-be-decoded) body.
    pub fn new(inner: B, scanner: Arc<Scanner>, mode: ScanMode) -> ScanBody<B> {
        ScanBody {
            inner,
            state: ScanState::new(scanner, mode),
            sink: None,
            decoder: None,
            forward: EncodedForward::Decoded,
            raw: None,
            queued: VecDeque::new(),
            ready: VecDeque::new(),
            trailers: None,
            inner_done: false,
            failed: false,
            encoded_total: 0,
            decoded_total: 0,
        }
    }

    /// Scan the decoded stream of a body with Content-Encoding `coding`,
    /// forwarding either the original frames or the decoded bytes.
    /// With [`EncodedForward::Original`], [`ScanMode::Redact`] acts as
    /// [`ScanMode::Block`].
    pub fn decoding(
        inner: B,
        scanner: Arc<Scanner>,
        mode: ScanMode,
        coding: ContentCoding,
        forward: EncodedForward,
    ) -> ScanBody<B> {
        let mode = match (forward, mode) {
            (EncodedForward::Original, ScanMode::Redact) => ScanMode::Block,
            (_, m) => m,
        };
        let mut body = ScanBody::new(inner, scanner, mode);
        body.forward = forward;
        body.decoder = Decoder::new(coding);
        body
    }

    /// Scan a body sent without a `Content-Encoding`, and if its first bytes
    /// are a gzip member's (`1f 8b 08`) or a zlib stream's (`78 01`, `78 9c`,
    /// `78 da`: what `gzip` and `zlib.compress` write), scan what it
    /// decodes to instead, forwarding the original frames: compressing a
    /// secret must not be a way to send it; a body that then does not
    /// decompress is refused. Block mode only: redact mode would have to
    /// rewrite the compressed bytes, and log mode records rather than
    /// refuses (both scan as [`ScanBody::new`] does, whose gzip and zlib
    /// layer still reads a compressed body in log mode).
    pub fn sniffing(inner: B, scanner: Arc<Scanner>, mode: ScanMode) -> ScanBody<B> {
        let mut body = ScanBody::new(inner, scanner, mode);
        if mode == ScanMode::Block {
            body.decoder = Some(Decoder::Sniff(Vec::new()));
            body.forward = EncodedForward::Original;
        }
        body
    }

    /// Drop the findings of the kinds set in `mask` ([`ScanState::skipping`]).
    pub fn skipping(mut self, mask: Option<Arc<[bool]>>) -> ScanBody<B> {
        self.state.core_mut().skip = mask;
        self
    }

    /// Act only on findings of confidence `min` or above (default: all).
    /// Call before the first frame is polled.
    pub fn with_min_confidence(mut self, min: Confidence) -> ScanBody<B> {
        self.state.set_min_confidence(min);
        self
    }

    /// What the sandbox sends: see [`ScanState::outgoing`]. Call before
    /// the first frame is polled.
    pub fn outgoing(mut self) -> ScanBody<B> {
        self.state.mark_outgoing();
        self
    }

    /// Call `sink` with each finding as soon as it is final.
    pub fn with_sink(mut self, sink: FindingSink) -> ScanBody<B> {
        self.sink = Some(sink);
        self
    }
}

impl<B> Body for ScanBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = ScanError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScanError>>> {
        let mut this = self.project();
        loop {
            if *this.failed {
                return Poll::Ready(None);
            }
            if let Some(data) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if *this.inner_done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let step = match ready!(this.inner.as_mut().poll_frame(cx)) {
                None => finish(&mut Parts::from(&mut this)),
                Some(Err(e)) => Err(ScanError::Body(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => on_data(&mut Parts::from(&mut this), data),
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            let mut parts = Parts::from(&mut this);
                            finish(&mut parts)
                                .and_then(|()| scan_trailers(&mut parts, t))
                                .map(|kept| *this.trailers = Some(kept))
                        } else {
                            Ok(())
                        }
                    }
                },
            };
            if let Err(e) = step {
                *this.failed = true;
                this.ready.clear();
                this.queued.clear();
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.failed {
            return true;
        }
        let sniffing = matches!(&self.decoder, Some(Decoder::Sniff(head)) if !head.is_empty());
        let flushed =
            self.ready.is_empty() && self.queued.is_empty() && self.trailers.is_none() && !sniffing;
        (self.inner_done && flushed)
            || (self.inner.is_end_stream()
                && flushed
                && self.state.seen() == 0
                && self.encoded_total == 0)
    }

    fn size_hint(&self) -> SizeHint {
        let rewrites = self.state.mode() == ScanMode::Redact
            || (self.decoder.is_some() && self.forward == EncodedForward::Decoded);
        if rewrites {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// The mutable fields the frame handlers need (split out of the projection).
struct Parts<'a> {
    state: &'a mut ScanState,
    sink: &'a Option<FindingSink>,
    decoder: &'a mut Option<Decoder>,
    forward: &'a mut EncodedForward,
    raw: &'a mut Option<ScanState>,
    queued: &'a mut VecDeque<(Bytes, u64, u64)>,
    ready: &'a mut VecDeque<Bytes>,
    inner_done: &'a mut bool,
    encoded_total: &'a mut u64,
    decoded_total: &'a mut u64,
}

impl<'a, 'b, B> From<&'a mut ScanBodyProj<'b, B>> for Parts<'a> {
    fn from(p: &'a mut ScanBodyProj<'b, B>) -> Parts<'a> {
        Parts {
            state: p.state,
            sink: p.sink,
            decoder: p.decoder,
            forward: p.forward,
            raw: p.raw,
            queued: p.queued,
            ready: p.ready,
            inner_done: p.inner_done,
            encoded_total: p.encoded_total,
            decoded_total: p.decoded_total,
        }
    }
}

fn on_data(p: &mut Parts<'_>, data: Bytes) -> Result<(), ScanError> {
    if data.is_empty() {
        return Ok(());
    }
    if let Some(Decoder::Sniff(head)) = p.decoder.as_mut() {
        if head.is_empty() && data.len() >= SNIFF_LEN {
            // The usual first frame: decide on it, without a copy.
            sniffed(p, &data);
            return on_data(p, data);
        }
        head.extend_from_slice(&data);
        if head.len() < SNIFF_LEN {
            return Ok(());
        }
        let head = Bytes::from(std::mem::take(head));
        sniffed(p, &head);
        return on_data(p, head);
    }
    if p.decoder.is_none() {
        let out = p.state.push(data);
        return deliver(p, out);
    }
    let mut raw_reach = 0;
    if *p.forward == EncodedForward::Original {
        let raw = p.raw.get_or_insert_with(|| p.state.fresh_like());
        let out = raw.push(data.clone());
        raw_reach = raw.seen();
        judge(p.sink, raw, &out)?;
    }
    for piece in data.chunks(DECODE_PIECE) {
        *p.encoded_total += piece.len() as u64;
        let decoded = match p.decoder.as_mut() {
            Some(dec) => dec.write(piece)?,
            None => Vec::new(),
        };
        scan_decoded(p, decoded)?;
    }
    // Everything this frame decodes to is scanned before it is released.
    let held = match p.decoder.as_mut() {
        Some(dec) => dec.drain()?,
        None => Vec::new(),
    };
    scan_decoded(p, held)?;
    if *p.forward == EncodedForward::Original {
        p.queued.push_back((data, p.state.seen(), raw_reach));
        release_queued(p, false);
    }
    Ok(())
}

/// Bytes that tell a compressed body from a plain one.
const SNIFF_LEN: usize = 3;

/// Choose how to read a body sent without a `Content-Encoding` from its
/// first bytes: as gzip, as zlib, or as it is.
fn sniffed(p: &mut Parts<'_>, head: &[u8]) {
    *p.decoder = match head {
        [0x1f, 0x8b, 0x08, ..] => Some(Decoder::Gzip(flate2::write::MultiGzDecoder::new(sink()))),
        [0x78, 0x01 | 0x9c | 0xda, ..] => {
            Some(Decoder::Zlib(flate2::write::ZlibDecoder::new(sink())))
        }
        _ => None,
    };
    if p.decoder.is_none() {
        *p.forward = EncodedForward::Decoded;
    }
}

fn finish(p: &mut Parts<'_>) -> Result<(), ScanError> {
    if let Some(Decoder::Sniff(head)) = p.decoder.as_mut() {
        // Shorter than a header: as it is.
        let head = Bytes::from(std::mem::take(head));
        sniffed(p, &head);
        on_data(p, head)?;
    }
    *p.inner_done = true;
    if let Some(dec) = p.decoder.take() {
        let rest = dec.finish()?;
        scan_decoded(p, rest)?;
    }
    if let Some(raw) = p.raw.as_mut() {
        let out = raw.finish();
        judge(p.sink, raw, &out)?;
    }
    let out = p.state.finish();
    deliver(p, out)?;
    release_queued(p, true);
    Ok(())
}

fn scan_decoded(p: &mut Parts<'_>, decoded: Vec<u8>) -> Result<(), ScanError> {
    if decoded.is_empty() {
        return Ok(());
    }
    *p.decoded_total += decoded.len() as u64;
    if *p.decoded_total > DECODED_FREE && *p.decoded_total > MAX_RATIO * *p.encoded_total {
        return Err(ScanError::TooLarge {
            decoded: *p.decoded_total,
            encoded: *p.encoded_total,
        });
    }
    let out = p.state.push(Bytes::from(decoded));
    deliver(p, out)
}

/// Report findings, fail on a block, queue decoded output when it is what
/// we forward.
fn deliver(p: &mut Parts<'_>, out: super::StreamOutput) -> Result<(), ScanError> {
    judge(p.sink, p.state, &out)?;
    if *p.forward == EncodedForward::Decoded && !out.data.is_empty() {
        p.ready.push_back(out.data);
    }
    Ok(())
}

/// Report `out`'s findings; fail if they blocked `state`.
fn judge(
    sink: &Option<FindingSink>,
    state: &ScanState,
    out: &super::StreamOutput,
) -> Result<(), ScanError> {
    if let Some(sink) = sink {
        for f in &out.findings {
            sink(f);
        }
    }
    if let Some(f) = state.blocked() {
        if &*f.pattern_id == decode::TOO_DEEP {
            return Err(ScanError::TooDeep { chain: f.chain });
        }
        if &*f.pattern_id == decode::UNREADABLE {
            return Err(ScanError::Unreadable { chain: f.chain });
        }
        return Err(ScanError::Blocked(LeakBlocked {
            pattern_id: f.pattern_id.clone(),
            chain: f.chain,
        }));
    }
    Ok(())
}

/// Trailers are headers that come after the body, and a way around its
/// scan: each is scanned as its `name: value` line (as a header is), with
/// the body's mode, confidence and skipped kinds. Block: a finding fails
/// the body, so the trailers never leave. Redact: the value is rewritten;
/// a trailer whose name holds the secret is dropped (a name cannot carry
/// the marker). Log: the findings are recorded.
fn scan_trailers(p: &mut Parts<'_>, trailers: HeaderMap) -> Result<HeaderMap, ScanError> {
    let mut kept = HeaderMap::with_capacity(trailers.len());
    let mut name: Option<http::HeaderName> = None;
    for (n, value) in trailers {
        if let Some(n) = n {
            name = Some(n);
        }
        let Some(name) = &name else { continue };
        let mut line = Vec::with_capacity(name.as_str().len() + 2 + value.len());
        header_line(name, &value, &mut line);
        let mut state = ScanState::with_min_confidence(
            p.state.scanner(),
            p.state.mode(),
            p.state.min_confidence(),
        )
        .skipping(p.state.core_mut().skip.clone());
        if p.state.is_outgoing() {
            state = state.outgoing();
        }
        let first = state.push(Bytes::from(line));
        let last = state.finish();
        let found = !first.findings.is_empty() || !last.findings.is_empty();
        if let Some(sink) = p.sink {
            for f in first.findings.iter().chain(&last.findings) {
                sink(f);
            }
        }
        if let Some(f) = state.blocked() {
            let scanner = p.state.scanner();
            let named = scanner
                .scan_min(name.as_str().as_bytes(), p.state.min_confidence())
                .is_empty()
                .then(|| name.clone());
            return Err(ScanError::Trailer {
                name: named,
                leak: LeakBlocked {
                    pattern_id: f.pattern_id.clone(),
                    chain: f.chain,
                },
            });
        }
        if !found || state.mode() == ScanMode::Log {
            kept.append(name.clone(), value);
            continue;
        }
        let mut out = first.data.to_vec();
        out.extend_from_slice(&last.data);
        if let Some(v) = redacted_value(name, &out) {
            kept.append(name.clone(), v);
        }
    }
    Ok(kept)
}

/// A header or trailer as the scanner reads it: its wire line, `name:
/// value`. The name can carry a secret itself, and it is the context some
/// patterns need (`x-aws-secret-access-key: ...`).
pub fn header_line(name: &http::HeaderName, value: &http::HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
}

/// The value of a redacted [`header_line`]: what follows the unchanged
/// `name: `. `None` when the name itself was rewritten (a name cannot carry
/// the marker: the field goes) or the rest is not a valid value.
pub fn redacted_value(name: &http::HeaderName, line: &[u8]) -> Option<http::HeaderValue> {
    line.strip_prefix(name.as_str().as_bytes())
        .and_then(|rest| rest.strip_prefix(b": "))
        .and_then(|v| http::HeaderValue::from_bytes(v).ok())
}

/// Original-forward: move encoded frames whose decoded bytes are cleared.
fn release_queued(p: &mut Parts<'_>, all: bool) {
    let raw_emitted = p.raw.as_ref().map_or(u64::MAX, |raw| raw.emitted());
    while let Some((_, reach, raw_reach)) = p.queued.front() {
        if !all && (*reach > p.state.emitted() || *raw_reach > raw_emitted) {
            break;
        }
        if let Some((frame, _, _)) = p.queued.pop_front() {
            p.ready.push_back(frame);
        }
    }
}

/// Collects decoder output; refuses to grow past [`PIECE_OUTPUT_CAP`]
/// between drains.
struct CappedSink {
    out: Vec<u8>,
    overflow: bool,
}

impl std::io::Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > PIECE_OUTPUT_CAP {
            self.overflow = true;
            return Err(std::io::Error::other("decoded output cap"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sink() -> CappedSink {
    CappedSink {
        out: Vec::new(),
        overflow: false,
    }
}

enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<CappedSink>),
    Zlib(flate2::write::ZlibDecoder<CappedSink>),
    RawDeflate(flate2::write::DeflateDecoder<CappedSink>),
    Brotli(Box<brotli::DecompressorWriter<CappedSink>>),
    /// `deflate`: waiting for two bytes to tell zlib from raw deflate.
    DeflateSniff(Vec<u8>),
    /// No `Content-Encoding`: waiting for [`SNIFF_LEN`] bytes to tell a
    /// compressed body from a plain one ([`ScanBody::sniffing`]).
    Sniff(Vec<u8>),
}

impl Decoder {
    fn new(coding: ContentCoding) -> Option<Decoder> {
        match coding {
            ContentCoding::Identity => None,
            ContentCoding::Gzip => Some(Decoder::Gzip(flate2::write::MultiGzDecoder::new(sink()))),
            ContentCoding::Deflate => Some(Decoder::DeflateSniff(Vec::new())),
            ContentCoding::Brotli => Some(Decoder::Brotli(Box::new(
                brotli::DecompressorWriter::new(sink(), 4096),
            ))),
        }
    }

    fn coding(&self) -> ContentCoding {
        match self {
            Decoder::Gzip(_) => ContentCoding::Gzip,
            Decoder::Zlib(_) | Decoder::RawDeflate(_) | Decoder::DeflateSniff(_) => {
                ContentCoding::Deflate
            }
            Decoder::Sniff(_) => ContentCoding::Identity,
            Decoder::Brotli(_) => ContentCoding::Brotli,
        }
    }

    fn sink_mut(&mut self) -> Option<&mut CappedSink> {
        match self {
            Decoder::Gzip(d) => Some(d.get_mut()),
            Decoder::Zlib(d) => Some(d.get_mut()),
            Decoder::RawDeflate(d) => Some(d.get_mut()),
            Decoder::Brotli(d) => Some(d.get_mut()),
            Decoder::DeflateSniff(_) | Decoder::Sniff(_) => None,
        }
    }

    fn error(&mut self, e: &std::io::Error) -> ScanError {
        let overflow = self.sink_mut().is_some_and(|s| s.overflow);
        if overflow {
            ScanError::TooLarge {
                decoded: PIECE_OUTPUT_CAP as u64,
                encoded: DECODE_PIECE as u64,
            }
        } else {
            ScanError::Decode {
                coding: self.coding().name(),
                reason: e.to_string(),
            }
        }
    }

    /// Feed encoded bytes; return the decoded bytes produced.
    fn write(&mut self, input: &[u8]) -> Result<Vec<u8>, ScanError> {
        if let Decoder::DeflateSniff(head) = self {
            head.extend_from_slice(input);
            if head.len() < 2 {
                return Ok(Vec::new());
            }
            let head = std::mem::take(head);
            let zlib =
                (head[0] & 0x0f) == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            *self = if zlib {
                Decoder::Zlib(flate2::write::ZlibDecoder::new(sink()))
            } else {
                Decoder::RawDeflate(flate2::write::DeflateDecoder::new(sink()))
            };
            return self.write(&head);
        }
        let res = match self {
            Decoder::Gzip(d) => d.write_all(input),
            Decoder::Zlib(d) => d.write_all(input),
            Decoder::RawDeflate(d) => d.write_all(input),
            Decoder::Brotli(d) => d.write_all(input),
            Decoder::DeflateSniff(_) | Decoder::Sniff(_) => Ok(()),
        };
        if let Err(e) = res {
            return Err(self.error(&e));
        }
        Ok(self
            .sink_mut()
            .map(|s| std::mem::take(&mut s.out))
            .unwrap_or_default())
    }

    /// What the input so far decodes to and the decoder still keeps: flate2
    /// holds the output of its last write until the next one.
    fn drain(&mut self) -> Result<Vec<u8>, ScanError> {
        let res = match self {
            Decoder::Gzip(d) => d.flush(),
            Decoder::Zlib(d) => d.flush(),
            Decoder::RawDeflate(d) => d.flush(),
            Decoder::Brotli(_) | Decoder::DeflateSniff(_) | Decoder::Sniff(_) => Ok(()),
        };
        if let Err(e) = res {
            return Err(self.error(&e));
        }
        Ok(self
            .sink_mut()
            .map(|s| std::mem::take(&mut s.out))
            .unwrap_or_default())
    }

    /// End of input: flush, and fail on a truncated stream.
    fn finish(self) -> Result<Vec<u8>, ScanError> {
        let coding = self.coding().name();
        let fail = |reason: String| ScanError::Decode { coding, reason };
        match self {
            Decoder::Gzip(d) => d.finish().map(|s| s.out).map_err(|e| fail(e.to_string())),
            Decoder::Zlib(d) => d.finish().map(|s| s.out).map_err(|e| fail(e.to_string())),
            Decoder::RawDeflate(d) => d.finish().map(|s| s.out).map_err(|e| fail(e.to_string())),
            Decoder::Brotli(d) => (*d)
                .into_inner()
                .map(|s| s.out)
                .map_err(|_| fail("truncated stream".into())),
            Decoder::DeflateSniff(head) if head.is_empty() => Ok(Vec::new()),
            Decoder::DeflateSniff(_) => Err(fail("truncated stream".into())),
            // `finish` settles a sniffing body before this.
            Decoder::Sniff(_) => Ok(Vec::new()),
        }
    }
}
