//! [`ScanState`]: scan a byte stream chunk by chunk, holding back only the
//! bytes that could still be part of a match.
//!
//! The verdict does not depend on how the stream is chunked: the findings
//! (pattern, start, end) and the redacted output are exactly those of
//! [`Scanner::scan`] over the whole stream. A property test checks this for
//! random inputs, planted secrets and random chunkings down to 1 byte.
//!
//! # Memory usage
//! The state keeps the bytes from the *frontier* (the earliest offset where a
//! not-yet-known finding could start) to the end of the input seen so far:
//! - with no keyword hit pending, at most [`Scanner::hold_back`] bytes, and
//!   only a tail that could still become part of a secret: the longest tail
//!   that is the start of a keyword (ASCII case-insensitively) or of a held
//!   value's literal, and, for a pattern with a declared `lookbehind = N`,
//!   the run of up to `N` bytes before such a tail (or before the end) that
//!   the pattern allows before its keyword. The bound is
//!   `max(longest keyword - 1 + lookbehind, longest held literal - 1)`;
//!   with the bundled rules 36 bytes, and 0 after a newline, so a
//!   server-sent event is released as soon as it is pushed;
//! - while a keyword hit waits for the rest of its regex window, up to
//!   `2 * max_len + max_keyword_len + lookbehind` bytes for that pattern;
//! - in redact mode, an unfinished redaction (at most 8 KiB) on top.
//!
//! With `max_len <= 8 KiB` and keywords `<= 64` bytes the total stays below
//! 40 KiB per stream ([`Scanner::max_hold_back`]), plus the chunk being
//! processed, plus the last [`Scanner::context_kept`] released bytes (a
//! regex window may start before the frontier; its look-arounds see a few
//! bytes more). Each pushed chunk is copied once into the state's buffer;
//! released bytes are handed out as `Bytes` slices of that buffer, without
//! a second copy unless a redaction rewrites them.
//!
//! In [`ScanMode::Log`] nothing is held back from the output (each chunk
//! passes through as is), only from scanning.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::decode::{self, Decoders};
use super::scanner::{Confidence, Core, Finding, MAX_CLUSTER_LEN, Raw, Scanner, View};

/// What to do when a secret is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanMode {
    /// Stop at the first finding: emit nothing from its first byte on.
    Block,
    /// Replace each finding with `[REDACTED:<pattern-id>]`.
    Redact,
    /// Pass everything through unchanged; report findings.
    Log,
}

/// What one [`ScanState::push`] or [`ScanState::finish`] released.
#[derive(Debug, Default)]
pub struct StreamOutput {
    /// Bytes safe to send downstream now (possibly empty).
    pub data: Bytes,
    /// Findings that became final. In block mode at most one: the one that
    /// blocked the stream.
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy)]
struct Cluster {
    start: u64,
    end: u64,
    kind: u32,
}

/// Streaming scan of one body. See the [module docs](self).
pub struct ScanState {
    scanner: Arc<Scanner>,
    mode: ScanMode,
    core: Core,
    /// Stream bytes `[base, end)`.
    buf: BytesMut,
    /// The last (up to [`Scanner::context_kept`]) bytes before `base`,
    /// already released: regex windows may start there.
    pre: Vec<u8>,
    base: u64,
    end: u64,
    /// Input bytes released downstream (redacted ones count as released).
    emitted: u64,
    frontier: u64,
    /// Redact mode: the redaction being built, and where the last one ended.
    open: Option<Cluster>,
    redacted_upto: u64,
    blocked: Option<Finding>,
    finished: bool,
    finals: Vec<Raw>,
    /// The decoding layers ([`decode`]) and their findings not yet final.
    decoders: Box<Decoders>,
    dec_cands: Vec<Raw>,
    /// What the sandbox sends ([`ScanState::outgoing`]).
    outgoing: bool,
}

impl std::fmt::Debug for ScanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanState")
            .field("mode", &self.mode)
            .field("seen", &self.end)
            .field("emitted", &self.emitted)
            .field("held_back", &(self.end - self.emitted))
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

/// Do a stream's decoders read compressed data? Yes unless the stream
/// only redacts what it receives: incoming redaction cannot rewrite
/// compressed bytes, and a download's tarball is not the sandbox sending
/// a secret. (The one rule for a new stream and a renewed one.)
fn inflates(mode: ScanMode, outgoing: bool) -> bool {
    outgoing || mode != ScanMode::Redact
}

impl ScanState {
    /// A fresh state for one stream, acting on findings of every
    /// confidence (see [`ScanState::with_min_confidence`]).
    pub fn new(scanner: Arc<Scanner>, mode: ScanMode) -> ScanState {
        ScanState::with_min_confidence(scanner, mode, Confidence::Shaped)
    }

    /// A fresh state for one stream that finds (and blocks, redacts or
    /// logs) only findings of confidence `min` or above.
    pub fn with_min_confidence(
        scanner: Arc<Scanner>,
        mode: ScanMode,
        min: Confidence,
    ) -> ScanState {
        let core = Core::new(&scanner, min);
        ScanState {
            scanner,
            mode,
            core,
            buf: BytesMut::new(),
            pre: Vec::new(),
            base: 0,
            end: 0,
            emitted: 0,
            frontier: 0,
            open: None,
            redacted_upto: 0,
            blocked: None,
            finished: false,
            finals: Vec::new(),
            decoders: Box::new(Decoders::with_inflate(0, min, inflates(mode, false))),
            dec_cands: Vec::new(),
            outgoing: false,
        }
    }

    /// Mark this stream as what the sandbox sends, where what cannot be
    /// judged is refused (fail closed): compressed data airlock cannot
    /// read ([`UNREADABLE`](decode::UNREADABLE)) blocks it in block mode,
    /// and in redact mode so do a finding inside compressed data (its
    /// bytes cannot be rewritten) and data too deep or unreadable. Call
    /// before the first [`push`](Self::push).
    pub fn outgoing(mut self) -> ScanState {
        self.mark_outgoing();
        self
    }

    /// Act only on findings of confidence `min` or above, in place: the
    /// core and the decoding layers take `min` when made, so they are made
    /// again (the kinds skipped and the outgoing mark kept). Before the
    /// first [`push`](Self::push) only. Building a whole second state
    /// cost every response about 1.7k instructions.
    pub(crate) fn set_min_confidence(&mut self, min: Confidence) {
        // Made again mid-stream, the core would forget the bytes it holds
        // back: a secret split across that point would go unseen.
        debug_assert_eq!(self.end, 0, "the confidence is set before the first push");
        if self.core.min() == min {
            return;
        }
        let skip = self.core.skip.take();
        self.core = Core::new(&self.scanner, min);
        self.core.skip = skip;
        self.renew_decoders();
    }

    /// [`ScanState::outgoing`] in place.
    pub(crate) fn mark_outgoing(&mut self) {
        self.outgoing = true;
        if self.mode == ScanMode::Redact {
            self.renew_decoders();
        }
    }

    /// Fresh decoding layers for the stream as it is now set: the core's
    /// confidence, and compressed data read as [`inflates`] says.
    fn renew_decoders(&mut self) {
        let inflate = inflates(self.mode, self.outgoing);
        *self.decoders = Decoders::with_inflate(0, self.core.min(), inflate);
    }

    /// A fresh state set as this one is (scanner, mode, confidence, kinds
    /// skipped, outgoing mark): a second view of the same stream.
    pub(crate) fn fresh_like(&self) -> ScanState {
        let mut st = ScanState::with_min_confidence(self.scanner(), self.mode, self.core.min());
        st.core.skip = self.core.skip.clone();
        if self.outgoing {
            st.mark_outgoing();
        }
        st
    }

    /// Was this stream marked [`ScanState::outgoing`]?
    pub fn is_outgoing(&self) -> bool {
        self.outgoing
    }

    /// Is the finding `r` one this stream refuses in redact mode rather
    /// than rewrites?
    fn unredactable(&self, r: &Raw) -> bool {
        self.outgoing && (decode::is_pseudo(r.kind) || r.chain.through_compressed())
    }

    /// Drop the findings of the kinds set in `mask` (from
    /// [`Scanner::skip_mask`]): a rule's `scan_skip`.
    pub fn skipping(mut self, mask: Option<Arc<[bool]>>) -> ScanState {
        self.core.skip = mask;
        self
    }

    pub(crate) fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The scanner this stream uses.
    pub fn scanner(&self) -> Arc<Scanner> {
        Arc::clone(&self.scanner)
    }

    /// The least confidence this stream acts on.
    pub fn min_confidence(&self) -> Confidence {
        self.core.min()
    }

    /// The mode given at construction.
    pub fn mode(&self) -> ScanMode {
        self.mode
    }

    /// Feed the next chunk. After a block, or after [`finish`](Self::finish),
    /// input is ignored and nothing is returned.
    pub fn push(&mut self, chunk: Bytes) -> StreamOutput {
        if self.blocked.is_some() || self.finished || chunk.is_empty() {
            return StreamOutput::default();
        }
        let from = (self.end - self.base) as usize;
        let want = chunk.len();
        if self.buf.capacity() - self.buf.len() < want {
            // Reserve generously so the retained tail is moved rarely.
            let extra = want.max(self.buf.len()).max(64 * 1024);
            self.buf.reserve(extra);
        }
        self.buf.extend_from_slice(&chunk);
        self.end += want as u64;
        let sc = &*self.scanner;
        let view = View {
            pre: &self.pre,
            hay: &self.buf,
            base: self.base,
        };
        self.core.feed(sc, view, from);
        self.core.run_ready(sc, view, false);
        let f = self.core.frontier(sc, view, false);
        self.decoders.feed(
            sc,
            &self.pre,
            &self.buf,
            self.base,
            from,
            &mut self.dec_cands,
        );
        let f = f.min(self.decoders.frontier(self.end));
        self.advance(f, false, Some(chunk))
    }

    /// End of stream: evaluate what was held back and release the rest.
    pub fn finish(&mut self) -> StreamOutput {
        if self.blocked.is_some() || self.finished {
            return StreamOutput::default();
        }
        self.finished = true;
        let sc = &*self.scanner;
        let view = View {
            pre: &self.pre,
            hay: &self.buf,
            base: self.base,
        };
        self.core.run_ready(sc, view, true);
        self.decoders
            .finish(sc, &self.pre, &self.buf, self.base, &mut self.dec_cands);
        self.advance(u64::MAX, true, None)
    }

    /// The finding that blocked the stream: in block mode, or in an
    /// outgoing redacting stream that met what it cannot rewrite.
    pub fn blocked(&self) -> Option<&Finding> {
        self.blocked.as_ref()
    }

    /// Input bytes released downstream so far (a redacted span counts as
    /// released once its marker is).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Input bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.end
    }

    /// Every finding starting before this offset has been reported.
    pub fn reported_upto(&self) -> u64 {
        self.frontier
    }

    fn advance(&mut self, f: u64, eof: bool, chunk: Option<Bytes>) -> StreamOutput {
        self.frontier = f;
        let mut finals = std::mem::take(&mut self.finals);
        finals.clear();
        decode::settle(&mut self.core, &mut self.dec_cands, f, &mut finals);
        // What cannot be judged (too deep, unreadable) is refused where
        // the stream blocks and the sandbox sends it; a download's .tar.xz
        // is not refused for what airlock cannot read in it.
        match self.mode {
            ScanMode::Block if !self.outgoing => {
                finals.retain(|r| r.kind != decode::UNREADABLE_KIND);
            }
            ScanMode::Block => {}
            ScanMode::Redact if self.outgoing => {}
            ScanMode::Redact | ScanMode::Log => finals.retain(|r| !decode::is_pseudo(r.kind)),
        }
        let sc = self.scanner.clone();
        let retain = f.min(self.end);
        let refuse = match self.mode {
            ScanMode::Block => finals.first().copied(),
            ScanMode::Redact => finals.iter().find(|r| self.unredactable(r)).copied(),
            ScanMode::Log => None,
        };
        let out = match (refuse, self.mode) {
            (Some(stop), _) => self.stop(&sc, &finals, stop),
            (None, ScanMode::Log) => {
                self.emitted = self.end;
                self.trim(retain);
                StreamOutput {
                    data: chunk.unwrap_or_default(),
                    findings: finals.iter().map(|&r| sc.finding(r)).collect(),
                }
            }
            (None, ScanMode::Block) => {
                let target = if eof { self.end } else { retain };
                StreamOutput {
                    data: self.release(target, retain),
                    findings: Vec::new(),
                }
            }
            (None, ScanMode::Redact) => self.redact(&sc, &finals, f, eof),
        };
        self.finals = finals;
        out
    }

    /// Block the stream at `stop`: nothing from it on leaves. In redact
    /// mode the findings before it are redacted first, as they would have
    /// been had the stream been cut into other chunks (and nothing of an
    /// unfinished redaction leaves).
    fn stop(&mut self, sc: &Scanner, finals: &[Raw], stop: Raw) -> StreamOutput {
        let finding = sc.finding(stop);
        let mut out = match self.mode {
            ScanMode::Redact => {
                let before: Vec<Raw> = finals
                    .iter()
                    .copied()
                    .filter(|r| r.start < stop.start)
                    .collect();
                self.redact(sc, &before, stop.start, false)
            }
            _ => StreamOutput {
                data: self.release(stop.start, stop.start),
                findings: Vec::new(),
            },
        };
        out.findings.push(finding.clone());
        self.blocked = Some(finding);
        self.open = None;
        self.buf = BytesMut::new();
        self.base = self.end;
        out
    }

    /// Redact mode: extend/close redaction clusters with the final findings,
    /// then release everything before the first unfinished cluster.
    fn redact(&mut self, sc: &Scanner, finals: &[Raw], f: u64, eof: bool) -> StreamOutput {
        let mut closed: Vec<Cluster> = Vec::new();
        for r in finals {
            let s = r.start.max(self.redacted_upto);
            if s >= r.end {
                continue; // inside a redaction already closed (cut at MAX_CLUSTER_LEN)
            }
            match &mut self.open {
                Some(c) if s < c.end => c.end = c.end.max(r.end),
                _ => {
                    if let Some(c) = self.open.take() {
                        self.redacted_upto = c.end;
                        closed.push(c);
                    }
                    self.open = Some(Cluster {
                        start: s,
                        end: r.end,
                        kind: r.kind,
                    });
                }
            }
            if let Some(c) = self.open
                && c.end - c.start >= MAX_CLUSTER_LEN
            {
                self.redacted_upto = c.end;
                closed.push(c);
                self.open = None;
            }
        }
        if let Some(c) = self.open
            && (eof || c.end <= f)
        {
            self.redacted_upto = c.end;
            closed.push(c);
            self.open = None;
        }
        let retain = f.min(self.end);
        let mut target = if eof { self.end } else { retain };
        if let Some(c) = self.open {
            target = target.min(c.start);
        }
        if let Some(c) = closed.last() {
            target = target.max(c.end);
        }
        let findings = finals.iter().map(|&r| sc.finding(r)).collect();
        if closed.is_empty() {
            return StreamOutput {
                data: self.release(target, retain),
                findings,
            };
        }
        let mut out = BytesMut::new();
        let mut pos = self.emitted;
        let mut rep = Vec::new();
        for c in &closed {
            out.extend_from_slice(self.slice(pos, c.start));
            rep.clear();
            sc.replacement(c.kind, self.slice(c.start, c.end), &mut rep);
            out.extend_from_slice(&rep);
            pos = c.end;
        }
        out.extend_from_slice(self.slice(pos, target));
        self.emitted = target;
        self.trim(retain.min(target));
        StreamOutput {
            data: out.freeze(),
            findings,
        }
    }

    /// Bytes `[from, to)` of the stream, which must be buffered.
    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let a = from.saturating_sub(self.base) as usize;
        let b = to.saturating_sub(self.base) as usize;
        self.buf.get(a..b.max(a)).unwrap_or_default()
    }

    /// Release `[emitted, target)` unchanged; keep bytes from `retain` on.
    /// Zero-copy when the released bytes are the front of the buffer and
    /// none of them is needed again.
    fn release(&mut self, target: u64, retain: u64) -> Bytes {
        let target = target.max(self.emitted);
        if self.base == self.emitted && retain >= target {
            let n = ((target - self.base) as usize).min(self.buf.len());
            let data = self.buf.split_to(n).freeze();
            keep_tail(&mut self.pre, &data, self.scanner.context_kept());
            self.base += n as u64;
            self.emitted = target;
            return data;
        }
        let data = Bytes::copy_from_slice(self.slice(self.emitted, target));
        self.emitted = target;
        self.trim(retain.min(target));
        data
    }

    /// Drop buffered bytes before `keep` (never past what is unreleased).
    fn trim(&mut self, keep: u64) {
        let keep = keep.min(self.emitted).max(self.base);
        let n = ((keep - self.base) as usize).min(self.buf.len());
        keep_tail(
            &mut self.pre,
            self.buf.get(..n).unwrap_or_default(),
            self.scanner.context_kept(),
        );
        self.buf.advance(n);
        self.base += n as u64;
    }
}

/// Append `dropped` to `pre`, keeping only its last `keep` bytes.
fn keep_tail(pre: &mut Vec<u8>, dropped: &[u8], keep: usize) {
    if dropped.len() >= keep {
        pre.clear();
        pre.extend_from_slice(dropped.get(dropped.len() - keep..).unwrap_or_default());
    } else {
        let excess = (pre.len() + dropped.len()).saturating_sub(keep);
        pre.drain(..excess.min(pre.len()));
        pre.extend_from_slice(dropped);
    }
}
