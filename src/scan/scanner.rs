//! The compiled scanner: the patterns' automata built once per pattern file
//! (once per config generation), the held values' search rebuilt when a
//! secret is fetched ([`Scanner::with_held`]), shared as
//! `Arc<Scanner>`, searched many times.
//!
//! # How a search works
//! 1. A keyword automaton (aho-corasick, patterns lowercased, run over an
//!    ASCII-lowercased copy of the bytes so its Teddy prefilter stays on)
//!    finds every keyword occurrence, overlapping ones included.
//! 2. A keyword hit at `s..e` selects its pattern `p` for evaluation, unless
//!    the last evaluated hit of `p` was at `s'..e'` with `s' <= s` and
//!    `e <= e' + max_len(p)` (that hit's window already covers this one's).
//! 3. An evaluated hit runs `p`'s regex over the window
//!    `[s - search_back(p), e + 2 * max_len(p))`, clamped to the stream, with
//!    the 4 bytes before the window visible to look-arounds (`\b`, `^`) but
//!    not matched. `search_back` is 0 for a pattern whose matches begin with a
//!    keyword, `lookbehind + gap` for a declared lookbehind, `max_len`
//!    otherwise (see the `reach` module). Matches longer than
//!    `max_len(p)` are dropped, and so are secrets starting before the
//!    hit's *finding start* (for a declared lookbehind: the start of the run
//!    of possible secret bytes before the keyword, at most `lookbehind`
//!    long); then the entropy and checksum checks run on the secret group.
//! 4. A search on a grid ([`Sampled`]: every literal is at least 8 bytes
//!    long, so looking at one position in `shortest - 3` is enough) finds
//!    the held values' literals, case-sensitive, overlapping ones included;
//!    each hit is a finding `held:<id>`.
//! 5. Findings are sorted by `(start, longest first, pattern)` and a finding
//!    overlapping an earlier kept finding of the same pattern is dropped.
//!
//! Every step depends only on absolute stream positions and the bytes there,
//! never on where a buffer happens to start or end, which is why the
//! streaming [`ScanState`](super::ScanState) finds exactly what
//! [`Scanner::scan`] finds on the whole buffer.
//!
//! # What a stream must hold back
//! A finding not known yet can only come from a keyword hit still to be
//! evaluated, or a held literal still to be completed. With no hit pending,
//! a future keyword starts at the earliest tail of the stream that is a
//! proper prefix of one of its keywords (or at the end), and its secret no
//! earlier than its finding start; a future held literal starts at the
//! earliest tail that is a proper prefix of a literal. Both tails come from
//! small tables keyed by the last two bytes (`Partials`). The minimum is
//! the stream's *frontier*: everything before it can be released.
//!
//! Two automata rather than one: aho-corasick turns its SIMD prefilter off
//! for ASCII-case-insensitive automata, and its Teddy prefilter takes at
//! most 64 literals and only looks at their first bytes. So the keyword
//! search runs over an ASCII-lowercased copy of the bytes, prefiltered by
//! Teddy searchers over *anchors*; each anchor candidate is confirmed by the
//! overlapping keyword automaton over the few bytes around it. Every keyword
//! contains an anchor, and every anchor occurrence starts inside some match
//! the leftmost-first prefilter reports, so no keyword hit is lost. Held
//! literals (case-sensitive by nature) have their own search, which does
//! not read every byte: they are long.
//!
//! Each Teddy pass reads every byte whatever it searches for, so the cost
//! is the number of passes (one per group of at most [`TEDDY_GROUP`]
//! anchors, anchors shorter than four bytes in groups of their own) plus
//! the false starts its nybble masks let through. Hence: anchors shared by
//! several keywords where a rare window allows it (the bundled rules' 133
//! keywords → 88 anchors, 13 of them three bytes long: five passes), and
//! letters-only anchors (`akia`, `discord`) grouped together, because they
//! alias with ordinary words and would otherwise make every group stop on
//! text. When shared anchors and letter groups came in (103 keywords then,
//! `cargo bench --bench scan`, text / JSON, before decoding): whole
//! buffers 1.19 → 1.57 / 1.10 → 1.74 GiB/s, 1.5 KiB stream chunks 0.80 →
//! 1.02 / 0.82 → 1.09 GiB/s.

use std::{fmt, sync::Arc};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, packed};
use bytes::Bytes;
use regex::bytes::CaptureLocations;
use zeroize::Zeroizing;

use super::{
    decode::{self, Chain},
    held::{HeldSecret, encodings},
    patterns::{LazyRegex, Pattern, PatternError, PatternSet},
    reach::Reach,
    sampled::{self, Sampled},
};

/// Bytes before a regex window that its look-arounds may inspect (`\b`,
/// `^`, and Unicode word boundaries, which decode one UTF-8 character back).
const CONTEXT: usize = 4;

/// Redaction clusters (overlapping findings merged) are cut at this length,
/// so that a chain of overlapping findings cannot grow the hold-back without
/// bound.
pub(crate) const MAX_CLUSTER_LEN: u64 = 8 * 1024;

/// How sure a finding is that it is a live secret.
///
/// Ordered: `Shaped < Verified`, so a threshold `min` accepts a finding `f`
/// when `f.confidence >= min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Confidence {
    /// It looks like a secret of its kind (prefix and alphabet match), but
    /// something a live secret would satisfy does not hold: the checksum
    /// fails, the length is off by a few, it is glued to the characters
    /// around it, or it is a documented example value or a placeholder.
    /// Outgoing traffic blocks these by default (an exfiltration attempt
    /// need not keep checksums valid); incoming redaction and `airlock scan`
    /// ignore them by default.
    Shaped,
    /// Shape, checksum and entropy hold and it is not a documented example
    /// or placeholder; held values found verbatim or encoded are always
    /// `Verified`.
    Verified,
}

impl Confidence {
    /// `"shaped"` or `"verified"`, as in the config and `airlock scan --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Shaped => "shaped",
            Confidence::Verified => "verified",
        }
    }

    /// Parses `"shaped"` / `"verified"` (the config's spelling).
    pub fn parse(s: &str) -> Option<Confidence> {
        match s {
            "shaped" => Some(Confidence::Shaped),
            "verified" => Some(Confidence::Verified),
            _ => None,
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One secret found: which pattern, where (byte offsets in the stream,
/// `start..end`), and how sure. It carries no secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The pattern id (`github-pat-classic`) or `held:<id>` for a held value.
    pub pattern_id: Arc<str>,
    /// Offset of the first byte of the secret.
    pub start: u64,
    /// Offset one past the last byte of the secret.
    pub end: u64,
    /// Whether the secret passed every check ([`Confidence::Verified`]) or
    /// only looks like one ([`Confidence::Shaped`]).
    pub confidence: Confidence,
    /// The decodings it was found under (empty for plain bytes). For a
    /// decoded finding, `start..end` is the encoded span that produced it.
    pub chain: Chain,
}

impl Finding {
    /// The pattern id, and the decoding chain if there is one
    /// (`github-pat-classic, decoded base64>percent`): what a refusal names.
    pub fn label(&self) -> String {
        if self.chain.is_plain() {
            self.pattern_id.to_string()
        } else {
            format!("{}, decoded {}", self.pattern_id, self.chain)
        }
    }
}

/// The automaton could not be built (too large).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret scanner: {0}")]
pub struct BuildError(String);

impl BuildError {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

/// Compiled patterns plus held values. Cheap to share as `Arc<Scanner>`.
///
/// Two parts: the patterns' automata (`Base`), built once per pattern set
/// (once per config generation), and the held values' search (`HeldLits`:
/// a grid for streams, a small automaton for short inputs), rebuilt when a
/// secret is fetched. A scanner with
/// new held values ([`Scanner::with_held`]) shares the first and builds only
/// the second.
pub struct Scanner {
    base: Arc<Base>,
    held: Arc<HeldLits>,
    /// kind index → pattern id; `0..patterns.len()` are patterns, then held values.
    ids: Vec<Arc<str>>,
    /// kind index → `[REDACTED:<id>]`.
    markers: Vec<Bytes>,
}

/// What the patterns compile to.
struct Base {
    patterns: Arc<[Pattern]>,
    /// pattern index → id.
    ids: Vec<Arc<str>>,
    /// pattern index → `[REDACTED:<id>]`.
    markers: Vec<Bytes>,
    kw_ac: Option<Literals>,
    /// The keywords' first three bytes (lowercased), for short inputs.
    kw_prefixes: Prefixes,
    kw_targets: Vec<Vec<u32>>,
    kw_max: usize,
    /// Tails that may be the start of a keyword.
    kw_partial: Partials,
    /// Patterns whose secrets can start before their keyword.
    reaching: Vec<u32>,
    /// max over patterns of `max_keyword_len - 1 + lookbehind`.
    hold_back: usize,
    /// max over patterns of `2 * max_len + max_keyword_len + lookbehind`.
    window_max: usize,
    /// Bytes before the frontier a stream keeps for regex windows.
    pre_keep: usize,
}

/// What the held values compile to.
struct HeldLits {
    values: Vec<HeldSecret>,
    /// Short inputs: the first held literal (see [`Scanner::first_literal_end`]).
    lit_ac: Option<AhoCorasick>,
    /// Streams: every held literal, on a grid ([`Sampled`]).
    lit_search: Option<Sampled>,
    /// The held literals' first three bytes, for short inputs.
    lit_prefixes: Prefixes,
    /// The keywords' and the held literals' first three bytes, case folded:
    /// one pass rules out both for most short inputs.
    any_prefixes: Prefixes,
    /// The same starts (keywords in any case, held literals exact) and the
    /// compressed headers' pairs, read off a base64 run's characters
    /// before any phase is decoded.
    b64_gate: decode::B64Gate,
    /// literal → kinds (held values) it betrays.
    lit_targets: Vec<Vec<u32>>,
    lit_max: usize,
    /// Tails that may be the start of a held literal.
    lit_partial: Partials,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("patterns", &self.base.patterns.len())
            .field(
                "held",
                &self
                    .held
                    .values
                    .iter()
                    .map(HeldSecret::id)
                    .collect::<Vec<_>>(),
            )
            .field("hold_back", &self.hold_back())
            .finish()
    }
}

impl Scanner {
    /// Compile `patterns` and the held values into one scanner.
    ///
    /// Held values shorter than [`MIN_HELD_LEN`](super::MIN_HELD_LEN) are
    /// ignored.
    ///
    /// # Errors
    /// [`BuildError`] if an automaton exceeds aho-corasick's size limits.
    pub fn new(patterns: &PatternSet, held: &[HeldSecret]) -> Result<Scanner, BuildError> {
        Self::build(patterns.patterns.clone(), held.to_vec())
    }

    /// The same patterns with a new set of held values (call when the secret
    /// cache refreshes; never per request).
    ///
    /// # Errors
    /// As for [`Scanner::new`].
    ///
    /// Only the held values' search is built: the patterns' automata are
    /// shared with `self`.
    pub fn with_held(&self, held: &[HeldSecret]) -> Result<Scanner, BuildError> {
        let lits = HeldLits::build(&self.base, held.to_vec())?;
        Ok(Self::assemble(Arc::clone(&self.base), Arc::new(lits)))
    }

    /// True when both scanners use the same compiled patterns (one was made
    /// from the other by [`Scanner::with_held`]).
    pub fn shares_patterns_with(&self, other: &Scanner) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
    }

    pub(crate) fn for_pattern(p: Pattern) -> Result<Scanner, PatternError> {
        let id = p.id.to_string();
        Self::build(Arc::from(vec![p]), Vec::new()).map_err(|e| PatternError {
            file: String::new(),
            line: 0,
            column: 0,
            key: id,
            message: e.to_string(),
        })
    }

    fn build(patterns: Arc<[Pattern]>, held: Vec<HeldSecret>) -> Result<Scanner, BuildError> {
        let base = Base::build(patterns)?;
        let lits = HeldLits::build(&base, held)?;
        Ok(Self::assemble(Arc::new(base), Arc::new(lits)))
    }

    fn assemble(base: Arc<Base>, held: Arc<HeldLits>) -> Scanner {
        let held_ids: Vec<Arc<str>> = held
            .values
            .iter()
            .map(|h| Arc::<str>::from(format!("held:{}", h.id())))
            .collect();
        let markers = base
            .markers
            .iter()
            .cloned()
            .chain(
                held_ids
                    .iter()
                    .map(|id| Bytes::from(format!("[REDACTED:{id}]"))),
            )
            .collect();
        let ids = base.ids.iter().cloned().chain(held_ids).collect();
        Scanner {
            base,
            held,
            ids,
            markers,
        }
    }

    /// Scan a whole buffer (a header value, a URL, a small body).
    ///
    /// Returns findings sorted by start offset, overlapping findings of the
    /// same pattern merged to the first.
    ///
    /// Decoded findings (see [`decode`](super::decode)) are included; a
    /// value encoded more deeply than the decoders go is reported as a
    /// finding of the pseudo pattern [`TOO_DEEP`](super::decode::TOO_DEEP).
    pub fn scan(&self, haystack: &[u8]) -> Vec<Finding> {
        self.scan_min(haystack, Confidence::Shaped)
    }

    /// [`Scanner::scan`], keeping only findings of confidence `min` or
    /// above (`Verified` skips the relaxed search altogether). Decoded
    /// findings are included.
    pub fn scan_min(&self, haystack: &[u8], min: Confidence) -> Vec<Finding> {
        decode::scan_whole(self, haystack, min, true)
            .into_iter()
            .map(|r| self.finding(r))
            .collect()
    }

    /// [`Scanner::scan_min`] without decoding: the plain bytes only.
    pub(crate) fn scan_plain(&self, haystack: &[u8], min: Confidence) -> Vec<Finding> {
        let mut core = Core::new(self, min);
        let view = View::whole(haystack);
        core.feed(self, view, 0);
        core.run_ready(self, view, true);
        let mut raw = Vec::new();
        core.finalize(u64::MAX, &mut raw);
        raw.into_iter().map(|r| self.finding(r)).collect()
    }

    /// Scan a whole buffer and replace each finding with
    /// `[REDACTED:<pattern-id>]` (a card number: all but its last four
    /// digits starred). Overlapping findings are merged into one
    /// redaction (named after its first finding), cut at 8 KiB. Returns the
    /// new bytes and the findings.
    pub fn redact(&self, haystack: &[u8]) -> (Vec<u8>, Vec<Finding>) {
        self.redact_min(haystack, Confidence::Shaped)
    }

    /// [`Scanner::redact`], acting only on findings of confidence `min` or
    /// above.
    pub fn redact_min(&self, haystack: &[u8], min: Confidence) -> (Vec<u8>, Vec<Finding>) {
        // As a redacting stream does, compressed data is not decoded: its
        // bytes cannot be rewritten.
        let mut raw = decode::scan_whole(self, haystack, min, false);
        raw.retain(|r| !decode::is_pseudo(r.kind));
        self.redact_raw(haystack, raw)
    }

    /// [`Scanner::redact_min`] for what the sandbox sends, as an
    /// [outgoing](super::ScanState::outgoing) redacting stream does:
    /// compressed data is read too, and a finding inside it (its bytes
    /// cannot be rewritten) or data too deep or unreadable is returned as
    /// `Err`, to be refused.
    /// Findings for which `skipped` is true (a rule's `scan_skip`) are
    /// neither refused nor redacted.
    pub fn redact_outgoing(
        &self,
        haystack: &[u8],
        min: Confidence,
        skipped: impl Fn(&Finding) -> bool,
    ) -> Result<(Vec<u8>, Vec<Finding>), Finding> {
        let mut raw = decode::scan_whole(self, haystack, min, true);
        let unredactable = |r: &Raw| decode::is_pseudo(r.kind) || r.chain.through_compressed();
        if let Some(stop) = raw
            .iter()
            .filter(|r| unredactable(r))
            .map(|&r| self.finding(r))
            .find(|f| !skipped(f))
        {
            return Err(stop);
        }
        raw.retain(|r| !unredactable(r));
        Ok(self.redact_raw(haystack, raw))
    }

    fn redact_raw(&self, haystack: &[u8], raw: Vec<Raw>) -> (Vec<u8>, Vec<Finding>) {
        let mut out = Vec::with_capacity(haystack.len());
        let mut pos = 0usize;
        let flush = |c: Raw, pos: &mut usize, out: &mut Vec<u8>| {
            let (s, e) = (c.start as usize, c.end as usize);
            out.extend_from_slice(haystack.get(*pos..s).unwrap_or_default());
            self.replacement(c.kind, haystack.get(s..e).unwrap_or_default(), out);
            *pos = e;
        };
        let mut redacted_upto = 0u64;
        let mut open: Option<Raw> = None;
        for r in &raw {
            let s = r.start.max(redacted_upto);
            if s >= r.end {
                continue;
            }
            open = match open {
                Some(mut c) if s < c.end => {
                    c.end = c.end.max(r.end);
                    Some(c)
                }
                prev => {
                    if let Some(c) = prev {
                        flush(c, &mut pos, &mut out);
                        redacted_upto = c.end;
                    }
                    Some(Raw { start: s, ..*r })
                }
            };
            if let Some(c) = open
                && c.end - c.start >= MAX_CLUSTER_LEN
            {
                flush(c, &mut pos, &mut out);
                redacted_upto = c.end;
                open = None;
            }
        }
        if let Some(c) = open {
            flush(c, &mut pos, &mut out);
        }
        out.extend_from_slice(haystack.get(pos..).unwrap_or_default());
        (out, raw.into_iter().map(|r| self.finding(r)).collect())
    }

    /// Most bytes a stream holds back while no keyword hit is pending:
    /// `max(max_keyword_len - 1 + lookbehind over patterns,
    /// longest held literal - 1)`. This is the worst case, reached only when
    /// the stream ends in a keyword minus its last byte (plus, for a pattern
    /// with a declared lookbehind, that many possible secret bytes before
    /// it); a stream whose tail cannot start a keyword or a held literal
    /// holds back nothing. With the bundled rules and no held values it is
    /// 36 bytes (`PRIVATE KEY----` after up to 21 bytes of
    /// `-----BEGIN ENCRYPTED `).
    pub fn hold_back(&self) -> usize {
        self.base.hold_back.max(self.held.lit_max.saturating_sub(1))
    }

    /// Upper bound on the bytes a stream holds back (not counting the chunk
    /// being processed): a pending keyword hit needs its regex window up to
    /// `e + 2 * max_len` (`2 * max_len + max_keyword_len + lookbehind`
    /// bytes), and an open redaction may add up to 8 KiB. With the caps this
    /// is below 40 KiB. A stream also keeps a few bytes *before* what it
    /// holds back, already released, for the regex windows to look at
    /// ([`Scanner::context_kept`]).
    pub fn max_hold_back(&self) -> usize {
        self.base.window_max.max(self.hold_back()) + MAX_CLUSTER_LEN as usize
    }

    /// Released bytes a stream keeps for regex windows that start before its
    /// frontier: the largest declared `lookbehind` plus its `gap` (the bytes
    /// a match may consume before its secret), plus 4 bytes of look-around
    /// context; at least the longest label the decoding layers read before
    /// an encoded value (64 bytes).
    pub fn context_kept(&self) -> usize {
        self.base.pre_keep
    }

    /// Number of patterns (not counting held values).
    pub fn pattern_count(&self) -> usize {
        self.base.patterns.len()
    }

    pub(crate) fn finding(&self, r: Raw) -> Finding {
        static TOO_DEEP: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from(decode::TOO_DEEP));
        static UNREADABLE: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from(decode::UNREADABLE));
        let pseudo = if r.kind == decode::UNREADABLE_KIND {
            &UNREADABLE
        } else {
            &TOO_DEEP
        };
        Finding {
            pattern_id: self.ids.get(r.kind as usize).unwrap_or(pseudo).clone(),
            start: r.start,
            end: r.end,
            chain: r.chain,
            confidence: r.confidence,
        }
    }

    pub(crate) fn marker(&self, kind: u32) -> &Bytes {
        static TOO_DEEP: Bytes = Bytes::from_static(b"[REDACTED:too-deeply-encoded]");
        static UNREADABLE: Bytes = Bytes::from_static(b"[REDACTED:unreadable-compressed]");
        let pseudo = if kind == decode::UNREADABLE_KIND {
            &UNREADABLE
        } else {
            &TOO_DEEP
        };
        self.markers.get(kind as usize).unwrap_or(pseudo)
    }

    /// The first gate of [`Scanner::may_match`]: the keywords' and held
    /// literals' first three bytes, case folded. Bytes in which no three
    /// adjacent ones are in it cannot match.
    pub(crate) fn literal_gate(&self) -> &Prefixes {
        &self.held.any_prefixes
    }

    /// [`Scanner::literal_gate`], and the compressed headers' pairs, for
    /// base64 characters not yet decoded.
    pub(crate) fn b64_gate(&self) -> &decode::B64Gate {
        &self.held.b64_gate
    }

    /// Could `bytes` (a whole stream) hold a finding? False only if it
    /// contains no keyword (any case) and no held literal.
    pub(crate) fn may_match(&self, bytes: &[u8]) -> bool {
        self.first_literal_end(bytes).is_some()
    }

    /// Where the first keyword (any case) or held literal in `bytes` ends.
    pub(crate) fn first_literal_end(&self, bytes: &[u8]) -> Option<usize> {
        // Every occurrence of a literal holds its first three bytes: most
        // short decoded segments (noise) have none of them, and this loop
        // is far cheaper than setting up two automaton searches.
        if !self.held.any_prefixes.any_in(bytes) {
            return None;
        }
        let kw_pair = self.base.kw_ac.is_some() && self.base.kw_prefixes.any_in(bytes);
        let lit_pair = self.held.lit_ac.is_some() && self.held.lit_prefixes.any_in(bytes);
        if !kw_pair && !lit_pair {
            return None;
        }
        let kw = self.base.kw_ac.as_ref().filter(|_| kw_pair).and_then(|kw| {
            // Short segments are the common case: lowercase on the stack.
            let mut small = [0u8; 256];
            let lower: std::borrow::Cow<'_, [u8]> = match small.get_mut(..bytes.len()) {
                Some(buf) => {
                    for (d, s) in buf.iter_mut().zip(bytes) {
                        *d = s.to_ascii_lowercase();
                    }
                    std::borrow::Cow::Borrowed(&*buf)
                }
                None => bytes.iter().map(u8::to_ascii_lowercase).collect(),
            };
            kw.ac.find(&lower[..]).map(|m| m.end())
        });
        let lit = self
            .held
            .lit_ac
            .as_ref()
            .filter(|_| lit_pair)
            .and_then(|ac| ac.find(bytes).map(|m| m.end()));
        match (kw, lit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Longest keyword or held literal.
    pub(crate) fn longest_literal(&self) -> usize {
        self.base.kw_max.max(self.held.lit_max)
    }

    /// What replaces a redacted run `original` whose first finding is of
    /// `kind`: the marker, or for a pattern with `redact = "last4"` (card
    /// numbers) the run with every digit but the last four starred, its
    /// separators kept (`**** **** **** 1234`). A run with any other byte
    /// (merged with another finding) gets the marker.
    pub(crate) fn replacement(&self, kind: u32, original: &[u8], out: &mut Vec<u8>) {
        let last4 = self
            .base
            .patterns
            .get(kind as usize)
            .is_some_and(|p| p.redact_last4);
        let digits = original.iter().filter(|b| b.is_ascii_digit()).count();
        if last4
            && digits >= 12
            && original
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-'))
        {
            let mut seen = 0;
            out.extend(original.iter().map(|&b| {
                if !b.is_ascii_digit() {
                    return b;
                }
                seen += 1;
                if seen > digits - 4 { b } else { b'*' }
            }));
        } else {
            out.extend_from_slice(self.marker(kind));
        }
    }

    /// The per-kind mask of [`ScanState::skipping`](super::ScanState::skipping)
    /// for these pattern ids (`None` when none is known).
    pub fn skip_mask(&self, ids: &[Arc<str>]) -> Option<Arc<[bool]>> {
        // One entry per kind, and a last one for the pseudo pattern
        // `unreadable-compressed` (see [`skips`]).
        let mut mask: Vec<bool> = self.ids.iter().map(|id| ids.contains(id)).collect();
        mask.push(ids.iter().any(|id| &**id == decode::UNREADABLE));
        mask.contains(&true).then(|| mask.into())
    }

    fn kinds(&self) -> usize {
        self.ids.len()
    }
}

impl Base {
    fn build(patterns: Arc<[Pattern]>) -> Result<Base, BuildError> {
        let ids: Vec<Arc<str>> = patterns.iter().map(|p| p.id.clone()).collect();
        let markers = ids
            .iter()
            .map(|id| Bytes::from(format!("[REDACTED:{id}]")))
            .collect();

        let mut kw_lits: Vec<Vec<u8>> = Vec::new();
        let mut kw_targets: Vec<Vec<u32>> = Vec::new();
        for (pi, p) in patterns.iter().enumerate() {
            for kw in &p.keywords {
                let pos = match kw_lits.iter().position(|l| l == kw.as_bytes()) {
                    Some(pos) => pos,
                    None => {
                        kw_lits.push(kw.as_bytes().to_vec());
                        kw_targets.push(Vec::new());
                        kw_lits.len() - 1
                    }
                };
                kw_targets[pos].push(pi as u32);
            }
        }
        let kw_max = kw_lits.iter().map(Vec::len).max().unwrap_or(0);
        let kw_ac = Literals::build(&kw_lits)?;
        let kw_prefixes = Prefixes::new(&kw_lits, true);
        let kw_partial = Partials::new(kw_lits.into_iter().map(Zeroizing::new).collect(), true);

        let reaching = (0..patterns.len() as u32)
            .filter(|&pi| patterns[pi as usize].lookbehind() > 0)
            .collect();
        let hold_back = patterns
            .iter()
            .map(|p| p.max_keyword_len().saturating_sub(1) + p.lookbehind())
            .max()
            .unwrap_or(0);
        let window_max = patterns
            .iter()
            .map(|p| 2 * p.max_len + p.max_keyword_len() + p.lookbehind())
            .max()
            .unwrap_or(0);
        // A window starts `search_back` before its keyword; the frontier is
        // no later than the keyword, and exactly `search_back` before it
        // unless the lookbehind is declared (then it can be anywhere between).
        let pre_keep = patterns
            .iter()
            .map(|p| match p.reach {
                Reach::Declared { .. } => p.reach.search_back(p.max_len),
                Reach::AtKeyword | Reach::Unbounded => 0,
            })
            .max()
            .unwrap_or(0)
            .saturating_add(CONTEXT)
            // The decoding layers read a segment's label (`name = `) from
            // the bytes before it, which may be released already.
            .max(decode::LABEL_MAX);
        Ok(Base {
            patterns,
            ids,
            markers,
            kw_ac,
            kw_prefixes,
            kw_targets,
            kw_max,
            kw_partial,
            reaching,
            hold_back,
            window_max,
            pre_keep,
        })
    }
}

impl HeldLits {
    /// The held values' literals (each value in the encodings a leak would
    /// take); their kinds follow the `patterns` pattern kinds.
    fn build(base: &Base, held: Vec<HeldSecret>) -> Result<HeldLits, BuildError> {
        let patterns = base.patterns.len();
        let mut lit_lits: Vec<zeroize::Zeroizing<Vec<u8>>> = Vec::new();
        let mut lit_targets: Vec<Vec<u32>> = Vec::new();
        for (hi, h) in held.iter().enumerate() {
            let kind = (patterns + hi) as u32;
            for lit in encodings(h.expose_secret()) {
                match lit_lits.iter().position(|l| **l == *lit) {
                    Some(pos) => {
                        if !lit_targets[pos].contains(&kind) {
                            lit_targets[pos].push(kind);
                        }
                    }
                    None => {
                        lit_lits.push(lit);
                        lit_targets.push(vec![kind]);
                    }
                }
            }
        }
        let lit_max = lit_lits.iter().map(|l| l.len()).max().unwrap_or(0);
        // Every literal is `MIN_HELD_LEN` bytes or more (`encodings` drops
        // shorter ones); one the grid could not search refuses the scanner
        // rather than build one blind to it.
        let lit_search = Sampled::new(&lit_lits);
        let lit_ac = match lit_lits.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&lit_lits)
                    .map_err(|e| BuildError(e.to_string()))?,
            ),
        };
        if lit_ac.is_some() && lit_search.is_none() {
            return Err(BuildError(format!(
                "a held literal is shorter than the held search's {}-byte window",
                sampled::WINDOW
            )));
        }
        let lit_prefixes = Prefixes::new(&lit_lits, false);
        let any_prefixes = base.kw_prefixes.with(&lit_lits);
        let b64_gate = decode::B64Gate::new(&base.kw_partial.lits, &lit_lits);
        let lit_partial = Partials::new(lit_lits, false);
        Ok(HeldLits {
            values: held,
            lit_ac,
            lit_search,
            lit_prefixes,
            any_prefixes,
            b64_gate,
            lit_targets,
            lit_max,
            lit_partial,
        })
    }
}

/// How common a (lowercased) byte is in text, JSON, logs and URLs: lower is
/// more common. Bytes not listed are rare.
const COMMON_BYTES: &[u8] =
    b" etaoinsr\"hl:/dcu,.m0f1p-2g=wyb_34\n5v6789k{}x[]&?jq;z'%()<>+#@!*~$|^`\\\t\r";

/// The most anchors one Teddy pass takes. Teddy hashes anchors into 8
/// buckets (where AVX2 is present, 16 past 32 anchors, at half the bytes
/// per step), and a bucket
/// that several anchors share stops at text that matches none of them, so
/// a pass slows down sharply as its group grows; past 64 it refuses.
/// Anchors are split into groups of equal size, at most this many: on the
/// shipped patterns' 75 long anchors, four groups of 19 ran the scan bench
/// fastest (text and JSON at 16 KiB chunks, against three of 25, two of
/// 38, five of 15, eight of 10 and the 32, 32, 11 that a cut at 32 gave,
/// which ran 15-25% slower than even groups of 19 to 38).
const TEDDY_GROUP: usize = 20;

/// `n` items cut into the fewest groups of at most [`TEDDY_GROUP`], all of
/// one size (the last may be smaller): the size of each.
fn even_group(n: usize) -> usize {
    n.div_ceil(n.div_ceil(TEDDY_GROUP).max(1)).max(1)
}

fn rarity(b: u8) -> usize {
    COMMON_BYTES
        .iter()
        .position(|&c| c == b)
        .unwrap_or(COMMON_BYTES.len() + 8)
}

/// A literal set searched with overlapping semantics, prefiltered by Teddy.
///
/// Teddy only looks at the first bytes of each literal, so it searches for
/// *anchors*: each literal from the start of its rarest 4-byte window on.
/// A candidate is confirmed by the overlapping automaton over the bytes
/// around it. Every literal occurrence contains its anchor, and every anchor
/// occurrence starts inside some match a leftmost-first search reports, so
/// checking `[start - back, end + longest literal)` around each reported
/// match finds every occurrence.
struct Literals {
    ac: AhoCorasick,
    /// Empty: Teddy unavailable, run `ac` over everything.
    pre: Vec<packed::Searcher>,
    /// Largest offset of an anchor inside its literal.
    back: usize,
    longest: usize,
}

impl Literals {
    fn build<T: AsRef<[u8]>>(lits: &[T]) -> Result<Option<Literals>, BuildError> {
        if lits.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(lits)
            .map_err(|e| BuildError(e.to_string()))?;
        let lit_refs: Vec<&[u8]> = lits.iter().map(AsRef::as_ref).collect();
        let chosen = choose_anchors(&lit_refs);
        // How far before its anchor a literal can start: the first anchor
        // inside each literal, at the latest.
        let back = lit_refs
            .iter()
            .filter_map(|lit| chosen.iter().filter_map(|a| find(lit, a)).min())
            .max()
            .unwrap_or(0);
        let mut anchors: Vec<&[u8]> = chosen.iter().map(Vec::as_slice).collect();
        // Anchors shorter than 4 bytes shrink the Teddy mask of their whole
        // group: keep them in groups of their own. Sorting puts anchors with
        // the same leading bytes in one group, where they alias less in
        // Teddy's nybble masks (measured: ~1.5x faster on benign text).
        // Anchors of letters only alias with ordinary words in Teddy's
        // nybble masks; grouping them together keeps the other groups'
        // false starts on text rare.
        let letters = |a: &[u8]| a.iter().take(4).all(u8::is_ascii_lowercase);
        anchors.sort_by(|a, b| {
            (a.len() >= 4)
                .cmp(&(b.len() >= 4))
                .then(letters(b).cmp(&letters(a)))
                .then(a.cmp(b))
        });
        let (short, long): (Vec<&[u8]>, Vec<&[u8]>) = anchors.iter().partition(|a| a.len() < 4);
        let mut pre = Vec::new();
        let groups = short
            .chunks(even_group(short.len()))
            .chain(long.chunks(even_group(long.len())));
        for group in groups {
            let mut b = packed::Config::new().builder();
            for a in group {
                b.add(a);
            }
            match b.build() {
                Some(s) => pre.push(s),
                None => {
                    pre.clear();
                    break;
                }
            }
        }
        let longest = lits.iter().map(|l| l.as_ref().len()).max().unwrap_or(0);
        Ok(Some(Literals {
            ac,
            pre,
            back,
            longest,
        }))
    }

    /// All occurrences in `hay`, overlapping ones included, as
    /// `(end, start, literal)`, sorted and deduplicated.
    fn find_all(&self, hay: &[u8], out: &mut Vec<(usize, usize, aho_corasick::PatternID)>) {
        out.clear();
        if self.pre.is_empty() || hay.len() < SHORT_HAY {
            out.extend(
                self.ac
                    .find_overlapping_iter(hay)
                    .map(|m| (m.end(), m.start(), m.pattern())),
            );
            out.sort_unstable();
            return;
        }
        for pre in &self.pre {
            for c in pre.find_iter(hay) {
                let a = c.start().saturating_sub(self.back);
                let b = (c.end() + self.longest).min(hay.len());
                let sub = hay.get(a..b).unwrap_or_default();
                out.extend(
                    self.ac
                        .find_overlapping_iter(sub)
                        .map(|m| (a + m.end(), a + m.start(), m.pattern())),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// Below this many bytes one automaton pass costs less than setting up
/// every Teddy group's search (a request head, a small response body).
const SHORT_HAY: usize = 64;

/// Windows rarer than this (sum of [`rarity`]) may anchor several literals.
const SHARED_ANCHOR_RARITY: usize = 60;

/// The prefilter's anchors: a set of short substrings such that every
/// literal contains at least one. Each Teddy pass covers at most
/// [`TEDDY_GROUP`] anchors, so fewer anchors means fewer passes over every
/// byte: windows (3 or 4 bytes,
/// rare enough) that several literals share are taken first, most literals
/// first (`xox` for six Slack token kinds, `dp.s` for three Doppler ones),
/// then each literal left is anchored from its rarest 4-byte window on (or
/// whole, when shorter).
fn choose_anchors(lits: &[&[u8]]) -> Vec<Vec<u8>> {
    use std::collections::HashMap;
    let score = |w: &[u8]| w.iter().map(|&b| rarity(b)).sum::<usize>();
    let mut by_window: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, lit) in lits.iter().enumerate() {
        for w in [3, 4] {
            if lit.len() < w {
                continue;
            }
            for win in lit.windows(w) {
                if score(win) < SHARED_ANCHOR_RARITY {
                    continue;
                }
                let v = by_window.entry(win).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
    }
    let mut covered = vec![false; lits.len()];
    let mut anchors: Vec<Vec<u8>> = Vec::new();
    loop {
        // Most literals newly covered, then 4 bytes over 3, then rarity;
        // the window itself breaks ties, so the choice is deterministic.
        let best = by_window
            .iter()
            .map(|(w, ls)| {
                let n = ls.iter().filter(|&&i| !covered[i]).count();
                (n, w.len(), score(w), *w)
            })
            .filter(|c| c.0 >= 2)
            .max();
        let Some((_, _, _, w)) = best else { break };
        for &i in &by_window[w] {
            covered[i] = true;
        }
        anchors.push(w.to_vec());
    }
    for (i, lit) in lits.iter().enumerate() {
        if covered[i] || anchors.iter().any(|a| find(lit, a).is_some()) {
            continue;
        }
        let w = lit.len().min(4);
        let d = (0..=lit.len() - w)
            .max_by_key(|&d| (score(&lit[d..d + w]), usize::MAX - d))
            .unwrap_or(0);
        // All of the literal from there on: Teddy confirms a whole anchor
        // before reporting it, so a longer one reports fewer false starts.
        anchors.push(lit[d..].to_vec());
    }
    anchors
}

/// Offset of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Which tails of a stream are proper prefixes of some literal (keywords,
/// ASCII case-insensitively, or held literals, exactly)?
///
/// The first three bytes of every literal of a set, hashed into a 64 Kibit
/// table: a byte string in which no three adjacent bytes hit the table holds
/// none of the literals. A literal shorter than three bytes makes every
/// string a candidate. `fold`: bytes are compared ASCII-lowercased (the
/// keywords, matched in any case); otherwise exactly (the held literals).
/// (Pairs were tried first: a label such as `path=` holds the pair `at` of
/// `ATATT3`, so nearly every short segment passed.)
#[derive(Clone)]
pub(crate) struct Prefixes {
    bits: Box<[u64; 1024]>,
    fold: bool,
    /// A literal shorter than three bytes: nothing to look for.
    any: bool,
}

impl Prefixes {
    fn new<T: AsRef<[u8]>>(lits: &[T], fold: bool) -> Prefixes {
        let mut set = Prefixes {
            bits: Box::new([0; 1024]),
            fold,
            any: false,
        };
        set.add(lits);
        set
    }

    /// This set plus `lits` (matched the way this set matches: folded if
    /// it folds, so the union may only match more).
    fn with<T: AsRef<[u8]>>(&self, lits: &[T]) -> Prefixes {
        let mut set = self.clone();
        set.add(lits);
        set
    }

    fn add<T: AsRef<[u8]>>(&mut self, lits: &[T]) {
        for lit in lits {
            match lit.as_ref() {
                [a, b, c, ..] => {
                    let i = self.index(*a, *b, *c);
                    self.bits[i >> 6] |= 1 << (i & 63);
                }
                _ => self.any = true,
            }
        }
    }

    /// The slot of three bytes, each keyed through [`Prefixes::keys`], the
    /// table `any_in` and `worth_scanning` read: one definition of a key.
    #[inline]
    fn index(&self, a: u8, b: u8, c: u8) -> usize {
        let keys = self.keys();
        let [a, b, c] = [a, b, c].map(|x| keys[usize::from(x)]);
        let key = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        Self::slot(key)
    }

    /// The table, each byte as this set keys it, and whether it matches
    /// anything (see [`Prefixes::index`] for the key): for a caller that
    /// rolls the key in its own loop.
    pub(crate) fn parts(&self) -> (&[u64; 1024], &'static [u8; 256], bool) {
        (&self.bits, self.keys(), self.any)
    }

    /// Each byte as this set keys it: one table load per byte, where
    /// folding in the loop was a branch and a compare (measured: a third
    /// of the instructions of `any_in`, called some 400 times per 16 KiB
    /// of text on labels and the bytes beside them).
    #[inline]
    fn keys(&self) -> &'static [u8; 256] {
        match self.fold {
            true => &KEYS_FOLDED,
            false => &KEYS_EXACT,
        }
    }

    /// The table index of three bytes rolled into `key` (`a << 16 | b << 8
    /// | c`, already folded if this set folds).
    #[inline]
    pub(crate) fn slot(key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b1) >> 16) as usize
    }

    /// Could `bytes` hold one of the literals?
    #[inline]
    pub(crate) fn any_in(&self, bytes: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let keys = self.keys();
        let fold = |b: u8| u32::from(keys[usize::from(b)]);
        let Some(([a, b], rest)) = bytes.split_first_chunk() else {
            return false;
        };
        // The same key as `index`, rolled one byte at a time (each byte
        // folded once, not three times).
        let mut key = fold(*a) << 8 | fold(*b);
        rest.iter().any(|&c| {
            key = (key << 8 | fold(c)) & 0x00ff_ffff;
            let i = Self::slot(key);
            self.bits[i >> 6] & (1 << (i & 63)) != 0
        })
    }
}

/// Per byte: the byte as a folding [`Prefixes`] keys it (lowercased), and
/// as an exact one does.
const fn prefix_keys(fold: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if fold {
            (i as u8).to_ascii_lowercase()
        } else {
            i as u8
        };
        i += 1;
    }
    t
}

static KEYS_FOLDED: [u8; 256] = prefix_keys(true);
static KEYS_EXACT: [u8; 256] = prefix_keys(false);

/// Every proper prefix of length `m >= 2` is filed under its last two bytes;
/// the tail's last two bytes select the few candidates to compare. Cost per
/// call: one binary search and a handful of short comparisons.
struct Partials {
    lits: Vec<Zeroizing<Vec<u8>>>,
    /// `(last two bytes of the prefix, Reverse(prefix length), literal)`,
    /// sorted: for one key, longest prefix first.
    two: Vec<(u16, std::cmp::Reverse<u32>, u32)>,
    /// `two[by_first[b]..by_first[b + 1]]` are the entries whose key starts
    /// with byte `b` (a small, cache-friendly range to search).
    by_first: Vec<u32>,
    /// First byte → literals starting with it (prefixes of length 1).
    one: Vec<Vec<u32>>,
    fold: bool,
}

impl Partials {
    fn new(lits: Vec<Zeroizing<Vec<u8>>>, fold: bool) -> Partials {
        let mut two = Vec::new();
        let mut one = vec![Vec::new(); 256];
        for (i, lit) in lits.iter().enumerate() {
            if lit.len() >= 2 {
                one[usize::from(lit[0])].push(i as u32);
            }
            for m in 2..lit.len() {
                let key = u16::from_be_bytes([lit[m - 2], lit[m - 1]]);
                two.push((key, std::cmp::Reverse(m as u32), i as u32));
            }
        }
        two.sort_unstable();
        let by_first = (0..=256u32)
            .map(|b| two.partition_point(|e| u32::from(e.0 >> 8) < b) as u32)
            .collect();
        Partials {
            lits,
            two,
            by_first,
            one,
            fold,
        }
    }

    /// Call `f(m, literal)` for every literal whose first `m` bytes (fewer
    /// than all) are the last `m` bytes of `hay`, longest first per key,
    /// until `f` returns false.
    fn each(&self, hay: &[u8], mut f: impl FnMut(usize, u32) -> bool) {
        let norm = |b: u8| if self.fold { b.to_ascii_lowercase() } else { b };
        let Some(&last) = hay.last() else {
            return;
        };
        let last = norm(last);
        if let Some(&prev) = hay.len().checked_sub(2).and_then(|i| hay.get(i)) {
            let prev = norm(prev);
            let key = u16::from_be_bytes([prev, last]);
            let range = |i: usize| self.by_first.get(i).map_or(0, |&o| o as usize);
            let bucket = self
                .two
                .get(range(usize::from(prev))..range(usize::from(prev) + 1))
                .unwrap_or_default();
            let from = bucket.partition_point(|e| e.0 < key);
            for &(k, std::cmp::Reverse(m), li) in bucket.get(from..).unwrap_or_default() {
                if k != key {
                    break;
                }
                let m = m as usize;
                let (Some(tail), Some(lit)) = (
                    hay.len().checked_sub(m).and_then(|a| hay.get(a..)),
                    self.lits.get(li as usize).and_then(|l| l.get(..m)),
                ) else {
                    continue;
                };
                let eq = if self.fold {
                    tail.eq_ignore_ascii_case(lit)
                } else {
                    tail == lit
                };
                if eq && !f(m, li) {
                    return;
                }
            }
        }
        for &li in &self.one[usize::from(last)] {
            if !f(1, li) {
                return;
            }
        }
    }
}

/// The stream as a scan sees it: bytes `[base, base + hay.len())` in `hay`,
/// and the `pre.len()` bytes before `base` (already released, kept for
/// regex windows and look-arounds) in `pre`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) pre: &'a [u8],
    pub(crate) hay: &'a [u8],
    pub(crate) base: u64,
}

impl<'a> View<'a> {
    pub(crate) fn whole(hay: &'a [u8]) -> View<'a> {
        View {
            pre: &[],
            hay,
            base: 0,
        }
    }

    fn end(&self) -> u64 {
        self.base + self.hay.len() as u64
    }

    /// The stream byte at absolute offset `at`, if kept.
    fn byte(&self, at: u64) -> Option<u8> {
        if at >= self.base {
            self.hay.get(usize::try_from(at - self.base).ok()?).copied()
        } else {
            let back = usize::try_from(self.base - at).ok()?;
            self.pre
                .len()
                .checked_sub(back)
                .and_then(|i| self.pre.get(i))
                .copied()
        }
    }

    /// Stream bytes `[from, to)`: a slice of `hay`, or assembled in
    /// `scratch` when they start in `pre`.
    fn range<'s>(&'s self, from: u64, to: u64, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]> {
        let b = usize::try_from(to.checked_sub(self.base)?).ok()?;
        if from >= self.base {
            return self.hay.get(usize::try_from(from - self.base).ok()?..b);
        }
        let back = usize::try_from(self.base - from).ok()?;
        let pre = self.pre.get(self.pre.len().checked_sub(back)?..)?;
        scratch.clear();
        scratch.extend_from_slice(pre);
        scratch.extend_from_slice(self.hay.get(..b)?);
        Some(scratch)
    }
}

/// A finding before its id is attached: `kind` indexes `Scanner::ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) kind: u32,
    pub(crate) chain: Chain,
    pub(crate) confidence: Confidence,
}

/// A keyword hit selected for evaluation whose window is not complete yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    pattern: u32,
    /// Where the regex search starts.
    search: u64,
    /// Secrets starting before this are dropped; no finding of this hit
    /// starts earlier.
    first: u64,
    /// Where the window ends (`e + 2 * max_len`).
    end: u64,
}

/// Where the secrets of a hit of `p` whose keyword starts at `s` may start:
/// `s` when matches begin with a keyword; for a declared lookbehind `n`, the
/// start of the run of possible secret bytes ending at `s`, at most `n`
/// long; `s - max_len` otherwise. Non-decreasing in `s`, which is what makes
/// it a bound for every later hit too.
fn first_finding(p: &Pattern, s: u64, view: View<'_>) -> u64 {
    match p.reach {
        Reach::AtKeyword => s,
        Reach::Unbounded => s.saturating_sub(p.max_len as u64),
        Reach::Declared { secret, class, .. } => {
            let lo = s.saturating_sub(secret as u64);
            let mut r = s;
            while r > lo {
                match view.byte(r - 1) {
                    Some(b) if class.contains(b) => r -= 1,
                    Some(_) => break,
                    None => {
                        debug_assert!(false, "byte {} not kept (base {})", r - 1, view.base);
                        break;
                    }
                }
            }
            r
        }
    }
}

thread_local! {
    /// The lowercased copy of the bytes a feed searches for keywords. Only
    /// the keyword search reads it, and no other scan runs inside that (the
    /// nested decoder scans come after), so one buffer per thread serves
    /// every stream: no allocation per stream, and a finished stream does
    /// not keep a copy of its last chunk.
    static FOLD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest [`FOLD`] kept between feeds. Request heads and most chunks
/// fit; a larger chunk (hyper's reads grow towards 400 KiB on a fast
/// download) gets a copy of its own for that feed, freed after it, so a
/// thread does not keep a large download's chunk size for its life.
const FOLD_KEEP: usize = 64 * 1024;

/// The search state shared by whole-buffer and streaming scans. It sees the
/// stream through a [`View`].
pub(crate) struct Core {
    /// Per pattern: keyword start and end of its last evaluated hit.
    last_eval: Vec<Option<(u64, u64)>>,
    pending: Vec<Pending>,
    /// Findings not yet final.
    cands: Vec<Raw>,
    /// Per kind: end of the last kept finding (dedup).
    last_end: Vec<u64>,
    /// How many kinds `last_end` holds once sized.
    kinds: usize,
    /// Keyword hits of the current feed: (end, start, keyword).
    hits: Vec<(usize, usize, aho_corasick::PatternID)>,
    /// Held literal hits of the current feed: (end, start, literal).
    held_hits: Vec<(usize, usize, usize)>,
    /// A window assembled from `pre` and `hay`.
    scratch: Vec<u8>,
    /// Per pattern with a secret group: reusable capture slots (strict
    /// regex, relaxed regex).
    locs: Vec<[Option<CaptureLocations>; 2]>,
    /// Findings below this confidence are not kept.
    min: Confidence,
    /// Strict matches of the hit being evaluated (relaxed ones overlapping
    /// them are not findings of their own).
    strict: Vec<(u64, u64)>,
    /// Kinds whose findings this stream drops (a rule's `scan_skip`).
    pub(crate) skip: Option<Arc<[bool]>>,
}

impl Core {
    /// Does this stream drop findings of `kind` (a rule's `scan_skip`)?
    /// The mask's last entry stands for the pseudo pattern
    /// `unreadable-compressed`; `too-deeply-encoded` is never skipped.
    pub(crate) fn skips(&self, kind: u32) -> bool {
        let Some(mask) = &self.skip else {
            return false;
        };
        if kind == decode::UNREADABLE_KIND {
            return mask.last().copied().unwrap_or(false);
        }
        mask.get(kind as usize).copied().unwrap_or(false) && (kind as usize) < mask.len() - 1
    }

    pub(crate) fn new(sc: &Scanner, min: Confidence) -> Core {
        Core {
            min,
            strict: Vec::new(),
            // Both sized on the first keyword hit or finding: most streams
            // have neither, and a request makes several streams.
            last_eval: Vec::new(),
            pending: Vec::new(),
            cands: Vec::new(),
            last_end: Vec::new(),
            kinds: sc.kinds(),
            hits: Vec::new(),
            held_hits: Vec::new(),
            scratch: Vec::new(),
            // Filled on the first keyword hit: most streams (a request's
            // headers, a small JSON reply) have none, and this is the
            // largest part of a Core (a slot per pattern and regex).
            locs: Vec::new(),
            skip: None,
        }
    }

    /// Forget the stream (keeping the allocations) to scan a new one.
    pub(crate) fn reset(&mut self) {
        self.last_eval.fill(None);
        self.pending.clear();
        self.cands.clear();
        self.last_end.fill(0);
    }

    /// The least confidence kept.
    pub(crate) fn min(&self) -> Confidence {
        self.min
    }

    /// Search for automaton hits that end after `view.hay[..from]` (the new
    /// bytes).
    pub(crate) fn feed(&mut self, sc: &Scanner, view: View<'_>, from: usize) {
        let (hay, base) = (view.hay, view.base);
        if let Some(ac) = &sc.base.kw_ac {
            let rs = from.saturating_sub(sc.base.kw_max.saturating_sub(1));
            let region = hay.get(rs..).unwrap_or_default();
            FOLD.with_borrow_mut(|fold| {
                fold.clear();
                // Copy and lowercase in one pass over the bytes.
                fold.extend(region.iter().map(u8::to_ascii_lowercase));
                ac.find_all(fold, &mut self.hits);
                if fold.capacity() > FOLD_KEEP {
                    // A rare large chunk: do not keep its size for the
                    // thread's life.
                    *fold = Vec::new();
                }
            });
            if !self.hits.is_empty() && self.last_eval.is_empty() {
                self.last_eval = vec![None; sc.base.patterns.len()];
            }
            for &(end, start, pid) in &self.hits {
                if rs + end <= from {
                    continue;
                }
                let e = base + (rs + end) as u64;
                let s = base + (rs + start) as u64;
                for &pi in &sc.base.kw_targets[pid.as_usize()] {
                    let p = &sc.base.patterns[pi as usize];
                    let lp = p.max_len as u64;
                    let slot = &mut self.last_eval[pi as usize];
                    if slot.is_some_and(|(ls, le)| ls <= s && e <= le + lp) {
                        continue;
                    }
                    *slot = Some((s, e));
                    self.pending.push(Pending {
                        pattern: pi,
                        search: s.saturating_sub(p.reach.search_back(p.max_len) as u64),
                        first: first_finding(p, s, view),
                        end: e + 2 * lp,
                    });
                }
            }
        }
        if let Some(search) = &sc.held.lit_search {
            let rs = from.saturating_sub(sc.held.lit_max.saturating_sub(1));
            let region = hay.get(rs..).unwrap_or_default();
            search.find_all(region, &mut self.held_hits);
            for &(end, start, lit) in &self.held_hits {
                if rs + end <= from {
                    continue;
                }
                for &kind in &sc.held.lit_targets[lit] {
                    self.cands.push(Raw {
                        start: base + (rs + start) as u64,
                        end: base + (rs + end) as u64,
                        kind,
                        chain: Chain::PLAIN,
                        confidence: Confidence::Verified,
                    });
                }
            }
        }
    }

    /// Evaluate the pending keyword hits whose window is complete (all of
    /// them at end of stream).
    pub(crate) fn run_ready(&mut self, sc: &Scanner, view: View<'_>, eof: bool) {
        let avail_end = view.end();
        let mut i = 0;
        while i < self.pending.len() {
            let pend = self.pending[i];
            if !eof && pend.end > avail_end {
                i += 1;
                continue;
            }
            self.pending.swap_remove(i);
            let p = &sc.base.patterns[pend.pattern as usize];
            let ctx = pend.search.min(CONTEXT as u64);
            let from = pend.search - ctx;
            let to = pend.end.min(avail_end);
            debug_assert!(
                from >= view.base.saturating_sub(view.pre.len() as u64),
                "window start {from} before the kept bytes (base {}, {} kept)",
                view.base,
                view.pre.len()
            );
            let Some(window) = view.range(from, to, &mut self.scratch) else {
                continue;
            };
            if self.locs.len() < sc.base.patterns.len() {
                self.locs
                    .resize_with(sc.base.patterns.len(), Default::default);
            }
            let [locs, rlocs] = &mut self.locs[pend.pattern as usize];
            let at = ctx as usize;
            let hit = Hit {
                p,
                pi: pend.pattern,
                window,
                origin: from,
                first: pend.first,
            };
            // Strict first; then, when shaped findings count, the relaxed
            // regex for what the strict one missed (glued, a few short).
            let strict = &mut self.strict;
            strict.clear();
            // A strict match that is no finding (a validator says the
            // value is not one) does not shadow a relaxed one: base58 or
            // digits glued after a key make the strict match too long.
            let mut judge_strict = |secret: &[u8], whole: (u64, u64)| {
                let c = p.classify(secret);
                if c.is_some() {
                    strict.push(whole);
                }
                c
            };
            hit.eval(
                &p.regex,
                at,
                locs,
                self.min,
                &mut judge_strict,
                &mut self.cands,
            );
            if self.min == Confidence::Shaped
                && let Some(relaxed) = &p.relaxed
            {
                let strict = &self.strict;
                let mut judge_relaxed = |secret: &[u8], whole: (u64, u64)| {
                    let overlaps = strict.iter().any(|&(s, e)| whole.0 < e && s < whole.1);
                    (!overlaps && p.glued(secret) && !inside_blob(window, from, whole))
                        .then_some(Confidence::Shaped)
                };
                hit.eval(
                    relaxed,
                    at,
                    rlocs,
                    self.min,
                    &mut judge_relaxed,
                    &mut self.cands,
                );
            }
        }
    }

    /// All findings starting before the returned offset are known.
    pub(crate) fn frontier(&self, sc: &Scanner, view: View<'_>, eof: bool) -> u64 {
        if eof {
            return u64::MAX;
        }
        let end = view.end();
        let mut f = end;
        for pend in &self.pending {
            f = f.min(pend.first);
        }
        // A keyword arriving later starts at the end or at a tail that is a
        // proper prefix of it.
        for &pi in &sc.base.reaching {
            f = f.min(first_finding(&sc.base.patterns[pi as usize], end, view));
        }
        sc.base.kw_partial.each(view.hay, |m, kw| {
            let s = end - m as u64;
            for &pi in &sc.base.kw_targets[kw as usize] {
                f = f.min(first_finding(&sc.base.patterns[pi as usize], s, view));
            }
            true
        });
        // Likewise a held literal; the longest such tail is the first found.
        sc.held.lit_partial.each(view.hay, |m, _| {
            f = f.min(end - m as u64);
            false
        });
        f
    }

    /// Move the candidates starting before `frontier` to `out`, sorted and
    /// deduplicated.
    pub(crate) fn finalize(&mut self, frontier: u64, out: &mut Vec<Raw>) {
        let first = out.len();
        let mut i = 0;
        while i < self.cands.len() {
            if self.cands[i].start < frontier {
                out.push(self.cands.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let mut batch: Vec<Raw> = out.drain(first..).collect();
        if !batch.is_empty() && self.last_end.is_empty() {
            self.last_end = vec![0; self.kinds];
        }
        batch.sort_unstable_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(a.kind.cmp(&b.kind))
                .then(b.confidence.cmp(&a.confidence))
        });
        for r in batch {
            if self.skips(r.kind) {
                continue;
            }
            let last = &mut self.last_end[r.kind as usize];
            if r.start >= *last {
                *last = r.end;
                out.push(r);
            }
        }
    }
}

/// Bytes of the base64 / base64url / hex alphabets (and `=` padding).
fn blob_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

/// How many bytes after a relaxed match [`inside_blob`] looks at.
const BLOB_AFTER: usize = 16;

/// Is the relaxed match `whole` (absolute offsets; `window` starts at
/// `origin`) the middle of an encoded blob rather than a secret glued to
/// text: the [`CONTEXT`] bytes before it and the [`BLOB_AFTER`] bytes after
/// it all base64/hex alphabet? In a random base64 blob (an image in a data
/// URL, a lockfile hash) a 4-byte keyword such as `AIza` turns up about once
/// per 16 MiB followed by enough token characters; without this rule the
/// relaxed search would block such uploads. A glued secret in text (`sit
/// aAKIA...Lorem ipsum`) has a space or punctuation within reach. Only
/// bytes inside the window (and its look-around context) are read, so the
/// verdict does not depend on chunking; where fewer bytes are kept (the
/// start or end of a stream) the match counts as glued, not as a blob.
fn inside_blob(window: &[u8], origin: u64, whole: (u64, u64)) -> bool {
    let (Some(s), Some(e)) = (
        whole
            .0
            .checked_sub(origin)
            .and_then(|v| usize::try_from(v).ok()),
        whole
            .1
            .checked_sub(origin)
            .and_then(|v| usize::try_from(v).ok()),
    ) else {
        return false;
    };
    let before = s.checked_sub(CONTEXT).and_then(|a| window.get(a..s));
    let after = window.get(e..e.saturating_add(BLOB_AFTER));
    match (before, after) {
        (Some(b), Some(a)) => b.iter().chain(a).all(|&x| blob_byte(x)),
        _ => false,
    }
}

/// One keyword hit being evaluated: pattern `p` (index `pi`) over `window`,
/// which starts at absolute offset `origin`. Secrets starting before
/// absolute `first` are dropped.
struct Hit<'a> {
    p: &'a Pattern,
    pi: u32,
    window: &'a [u8],
    origin: u64,
    first: u64,
}

impl Hit<'_> {
    /// Run `regex` (the pattern's strict or relaxed regex) over the window
    /// from offset `at` on; the bytes before `at` are look-around context
    /// only. For each match no longer than `max_len` whose secret starts at
    /// or after `first`, `judge(secret, whole match)` (absolute offsets)
    /// gives its confidence, or `None` for no finding; findings of
    /// confidence `min` or above go to `out`.
    fn eval(
        &self,
        regex: &LazyRegex,
        at: usize,
        locs: &mut Option<CaptureLocations>,
        min: Confidence,
        judge: &mut dyn FnMut(&[u8], (u64, u64)) -> Option<Confidence>,
        out: &mut Vec<Raw>,
    ) {
        let (window, origin, p) = (self.window, self.origin, self.p);
        let Some(regex) = regex.get() else {
            // A regex that cannot be compiled judges nothing: the keyword's
            // window counts as a finding (fail closed).
            let start = (origin + at as u64).max(self.first);
            let end = origin + window.len() as u64;
            if start < end {
                out.push(Raw {
                    start,
                    end,
                    kind: self.pi,
                    chain: Chain::PLAIN,
                    confidence: Confidence::Verified,
                });
            }
            return;
        };
        let mut push = |secret: (usize, usize), whole: (usize, usize)| {
            let (s, e) = secret;
            if whole.1 - whole.0 > p.max_len || (origin + s as u64) < self.first {
                return;
            }
            let Some(bytes) = window.get(s..e) else {
                return;
            };
            let span = (origin + whole.0 as u64, origin + whole.1 as u64);
            if let Some(confidence) = judge(bytes, span)
                && confidence >= min
            {
                out.push(Raw {
                    start: origin + s as u64,
                    end: origin + e as u64,
                    kind: self.pi,
                    chain: Chain::PLAIN,
                    confidence,
                });
            }
        };
        let mut pos = at;
        while pos <= window.len() {
            let whole = if p.secret_group == 0 {
                let Some(m) = regex.find_at(window, pos) else {
                    break;
                };
                push((m.start(), m.end()), (m.start(), m.end()));
                (m.start(), m.end())
            } else {
                let locs = locs.get_or_insert_with(|| regex.capture_locations());
                if regex.captures_read_at(locs, window, pos).is_none() {
                    break;
                }
                let Some(whole) = locs.get(0) else {
                    break;
                };
                if let Some(g) = locs.get(p.secret_group) {
                    push(g, whole);
                }
                whole
            };
            pos = if whole.1 > whole.0 {
                whole.1
            } else {
                whole.1 + 1
            };
        }
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::Prefixes;

    /// The gate that lets a short run's label skip the exact search finds
    /// every literal's first three bytes wherever they sit in the bytes it
    /// is given: glued after other text, at every offset, in any case for a
    /// folding set and exactly for an exact one.
    #[test]
    fn any_in_finds_every_literal_start_glued_at_every_offset() {
        let lits: [&[u8]; 4] = [b"ghp_", b"AKIA", b"xoxb-", b"sk-ant-"];
        let folded = Prefixes::new(&lits, true);
        let exact = Prefixes::new(&lits, false);
        let glue = b"path=/a/b?name:";
        for lit in lits {
            let swapped: Vec<u8> = lit
                .iter()
                .map(|b| match b.is_ascii_lowercase() {
                    true => b.to_ascii_uppercase(),
                    false => b.to_ascii_lowercase(),
                })
                .collect();
            for at in 0..=glue.len() {
                // The first `at` bytes of the glue, then a literal's start.
                let glued = |start: &[u8]| [&glue[..at], &start[..3]].concat();
                let (bytes, other_case) = (glued(lit), glued(&swapped));
                let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                assert!(folded.any_in(&bytes), "{:?}", shown(&bytes));
                assert!(exact.any_in(&bytes), "{:?}", shown(&bytes));
                assert!(folded.any_in(&other_case), "{:?}", shown(&other_case));
            }
        }
        // Fewer than three bytes hold no start; a set of nothing finds none.
        assert!(!folded.any_in(b"gh"));
        assert!(!Prefixes::new::<&[u8]>(&[], true).any_in(b"ghp_AKIA"));
    }
}

#[cfg(test)]
mod anchor_tests {
    use proptest::prelude::*;

    use super::{Literals, TEDDY_GROUP, choose_anchors, even_group, find};

    /// Groups are as few as the cap allows and of one size: never one
    /// crowded group beside a sparse one (32, 32, 11 ran slower than even
    /// splits of the same 75 anchors into two to four groups).
    #[test]
    fn anchors_are_cut_into_even_groups() {
        for n in 0..=200usize {
            let size = even_group(n);
            let groups = n.div_ceil(size);
            assert!(size <= TEDDY_GROUP.max(1), "{n}: {size}");
            assert_eq!(groups, n.div_ceil(TEDDY_GROUP), "{n}: {size}");
            if n > 0 {
                // Every group but the last is full; the last is at most one
                // item short per group.
                assert!(
                    n - (groups - 1) * size >= size.saturating_sub(groups),
                    "{n}"
                );
            }
        }
        assert_eq!(even_group(75), 19);
        assert_eq!(even_group(13), 13);
        assert_eq!(even_group(40), 20);
    }

    fn keywords() -> Vec<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
        let set = crate::scan::PatternSet::load(&path).unwrap();
        let mut kws: Vec<Vec<u8>> = Vec::new();
        for p in set.patterns.iter() {
            for k in &p.keywords {
                if !kws.contains(&k.as_bytes().to_vec()) {
                    kws.push(k.as_bytes().to_vec());
                }
            }
        }
        kws
    }

    proptest! {
        // The prefilter (shared anchors, Teddy groups, windows around each
        // candidate) finds exactly what a plain overlapping search over the
        // whole input finds, for the shipped keyword set.
        #[test]
        fn prefiltered_search_finds_every_keyword(
            pieces in prop::collection::vec((0usize..200, "[a-z0-9 _.:/=-]{0,6}"), 0..40)
        ) {
            static SET: std::sync::LazyLock<(Vec<Vec<u8>>, Literals)> =
                std::sync::LazyLock::new(|| {
                    let kws = keywords();
                    let lits = Literals::build(&kws).unwrap().unwrap();
                    (kws, lits)
                });
            let (kws, lits) = &*SET;
            let mut hay = Vec::new();
            for (i, filler) in &pieces {
                hay.extend_from_slice(filler.as_bytes());
                if let Some(k) = kws.get(*i) {
                    hay.extend_from_slice(k);
                }
            }
            let mut got = Vec::new();
            lits.find_all(&hay, &mut got);
            let mut want: Vec<_> = lits
                .ac
                .find_overlapping_iter(&hay)
                .map(|m| (m.end(), m.start(), m.pattern()))
                .collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }

    /// The counts the module's documentation and `scan`'s performance
    /// notes give for the bundled rules: a keyword change that moves them
    /// fails here, so the numbers are re-measured with it.
    #[test]
    fn the_bundled_keywords_take_five_teddy_passes() {
        let kws = keywords();
        let refs: Vec<&[u8]> = kws.iter().map(Vec::as_slice).collect();
        let anchors = choose_anchors(&refs);
        let short = anchors.iter().filter(|a| a.len() < 4).count();
        assert_eq!(
            (kws.len(), anchors.len(), short),
            (133, 88, 13),
            "{anchors:?}"
        );
        assert_eq!(even_group(anchors.len() - short), 19);
        let lits = Literals::build(&kws).unwrap().unwrap();
        assert_eq!(lits.pre.len(), 5);
    }

    #[test]
    fn every_literal_contains_an_anchor_and_families_share_one() {
        let lits: Vec<&[u8]> = vec![
            b"xoxb-",
            b"xoxp-",
            b"xoxa-",
            b"ghp_",
            b"gho_",
            b"sk-",
            b"akia",
            b"discord",
            b"discord.com/api/webhooks/",
        ];
        let anchors = choose_anchors(&lits);
        for lit in &lits {
            assert!(
                anchors.iter().any(|a| find(lit, a).is_some()),
                "{} has no anchor in {anchors:?}",
                String::from_utf8_lossy(lit)
            );
        }
        // The three Slack kinds share one anchor, and the webhook URL is
        // covered by `discord`'s: 9 literals, 6 anchors.
        assert_eq!(anchors.len(), 6, "{anchors:?}");
        assert!(
            anchors.iter().any(|a| a.as_slice() == b"xox"),
            "{anchors:?}"
        );
    }
}
