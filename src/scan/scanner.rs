//! The compiled scanner: built once per pattern file and held-secret set,
//! shared as `Arc<Scanner>`, searched many times.
//!
//! # How a search works
//! 1. A keyword automaton (aho-corasick, patterns lowercased, run over an
//!    ASCII-lowercased copy of the bytes so its Teddy prefilter stays on)
//!    finds every keyword occurrence, overlapping ones included.
//! 2. A keyword hit ending at byte `e` selects its pattern `p` for
//!    evaluation, unless the last evaluated hit of `p` ended at `l` with
//!    `e <= l + max_len(p)` (that hit's window already covers this one's).
//! 3. An evaluated hit runs `p`'s regex over the window
//!    `[e - max_len(p) - max_keyword_len(p), e + 2 * max_len(p))`, clamped to
//!    the stream. Matches longer than `max_len(p)` are dropped, then the
//!    entropy and checksum checks run on the secret group.
//! 4. A literal automaton (case-sensitive) finds the held values' literals;
//!    each hit is a finding `held:<id>`.
//! 5. Findings are sorted by `(start, longest first, pattern)` and a finding
//!    overlapping an earlier kept finding of the same pattern is dropped.
//!
//! Every step depends only on absolute stream positions, never on where a
//! buffer happens to start or end, which is why the streaming
//! [`ScanState`](super::ScanState) finds exactly what [`Scanner::scan`] finds
//! on the whole buffer.
//!
//! Two automata rather than one: aho-corasick turns its SIMD prefilter off
//! for ASCII-case-insensitive automata, and its Teddy prefilter takes at
//! most 64 literals and only looks at their first bytes. So the keyword
//! search runs over an ASCII-lowercased copy of the bytes, prefiltered by
//! Teddy searchers over *anchors* (each keyword from its rarest 4-byte
//! window on, at most 64 per searcher); each anchor candidate is confirmed
//! by the overlapping keyword automaton over the few bytes around it. Every
//! keyword occurrence contains its anchor, and every anchor occurrence starts
//! inside some match the leftmost-first prefilter reports, so no keyword hit
//! is lost. Held literals (case-sensitive by nature) have their own automaton.

use std::{fmt, sync::Arc};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, packed};
use bytes::Bytes;

use super::{
    held::{HeldSecret, encodings},
    patterns::{Pattern, PatternError, PatternSet},
};

/// Redaction clusters (overlapping findings merged) are cut at this length,
/// so that a chain of overlapping findings cannot grow the hold-back without
/// bound.
pub(crate) const MAX_CLUSTER_LEN: u64 = 8 * 1024;

/// One secret found: which pattern, and where (byte offsets in the stream,
/// `start..end`). It carries no secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The pattern id (`github-pat-classic`) or `held:<id>` for a held value.
    pub pattern_id: Arc<str>,
    /// Offset of the first byte of the secret.
    pub start: u64,
    /// Offset one past the last byte of the secret.
    pub end: u64,
}

/// The automaton could not be built (too large).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret scanner: {0}")]
pub struct BuildError(String);

/// Compiled patterns plus held values. Cheap to share as `Arc<Scanner>`.
pub struct Scanner {
    patterns: Arc<[Pattern]>,
    held: Vec<HeldSecret>,
    /// kind index → pattern id; `0..patterns.len()` are patterns, then held values.
    ids: Vec<Arc<str>>,
    /// kind index → `[REDACTED:<id>]`.
    markers: Vec<Bytes>,
    kw_ac: Option<Literals>,
    kw_targets: Vec<Vec<u32>>,
    kw_max: usize,
    lit_ac: Option<Literals>,
    /// literal → kinds (held values) it betrays.
    lit_targets: Vec<Vec<u32>>,
    lit_max: usize,
    /// max over patterns of `max_len + max_keyword_len`.
    back_max: u64,
    /// max over patterns of `3 * max_len + max_keyword_len`.
    window_max: u64,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("patterns", &self.patterns.len())
            .field(
                "held",
                &self.held.iter().map(HeldSecret::id).collect::<Vec<_>>(),
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
    pub fn with_held(&self, held: &[HeldSecret]) -> Result<Scanner, BuildError> {
        Self::build(self.patterns.clone(), held.to_vec())
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
        let mut ids: Vec<Arc<str>> = patterns.iter().map(|p| p.id.clone()).collect();
        ids.extend(
            held.iter()
                .map(|h| Arc::<str>::from(format!("held:{}", h.id()))),
        );
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

        let mut lit_lits: Vec<zeroize::Zeroizing<Vec<u8>>> = Vec::new();
        let mut lit_targets: Vec<Vec<u32>> = Vec::new();
        for (hi, h) in held.iter().enumerate() {
            let kind = (patterns.len() + hi) as u32;
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
        let lit_ac = Literals::build(&lit_lits)?;

        let back_max = patterns
            .iter()
            .map(|p| (p.max_len + p.max_keyword_len()) as u64)
            .max()
            .unwrap_or(0);
        let window_max = patterns
            .iter()
            .map(|p| (3 * p.max_len + p.max_keyword_len()) as u64)
            .max()
            .unwrap_or(0);
        Ok(Scanner {
            patterns,
            held,
            ids,
            markers,
            kw_ac,
            kw_targets,
            kw_max,
            lit_ac,
            lit_targets,
            lit_max,
            back_max,
            window_max,
        })
    }

    /// Scan a whole buffer (a header value, a URL, a small body).
    ///
    /// Returns findings sorted by start offset, overlapping findings of the
    /// same pattern merged to the first.
    pub fn scan(&self, haystack: &[u8]) -> Vec<Finding> {
        let mut core = Core::new(self);
        core.feed(self, haystack, 0, 0);
        core.run_ready(self, haystack, 0, true);
        let mut raw = Vec::new();
        core.finalize(u64::MAX, &mut raw);
        raw.into_iter().map(|r| self.finding(r)).collect()
    }

    /// Scan a whole buffer and replace each finding with
    /// `[REDACTED:<pattern-id>]`. Overlapping findings are merged into one
    /// redaction (named after its first finding), cut at 8 KiB. Returns the
    /// new bytes and the findings.
    pub fn redact(&self, haystack: &[u8]) -> (Vec<u8>, Vec<Finding>) {
        let mut core = Core::new(self);
        core.feed(self, haystack, 0, 0);
        core.run_ready(self, haystack, 0, true);
        let mut raw = Vec::new();
        core.finalize(u64::MAX, &mut raw);

        let mut out = Vec::with_capacity(haystack.len());
        let mut pos = 0usize;
        let flush = |c: Raw, pos: &mut usize, out: &mut Vec<u8>| {
            let (s, e) = (c.start as usize, c.end as usize);
            out.extend_from_slice(haystack.get(*pos..s).unwrap_or_default());
            out.extend_from_slice(self.marker(c.kind));
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

    /// Bytes a stream holds back while no keyword hit is pending:
    /// `max(max_len + max_keyword_len over patterns, longest held literal) - 1`.
    pub fn hold_back(&self) -> usize {
        (self.back_max.max(self.lit_max as u64) as usize).saturating_sub(1)
    }

    /// Upper bound on the bytes a stream holds back (not counting the chunk
    /// being processed): a pending keyword hit needs its full regex window
    /// (`3 * max_len + max_keyword_len`), and an open redaction may add up to
    /// 8 KiB. With the caps this is below 40 KiB.
    pub fn max_hold_back(&self) -> usize {
        (self.window_max.max(self.lit_max as u64) + MAX_CLUSTER_LEN) as usize
    }

    /// Number of patterns (not counting held values).
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    pub(crate) fn finding(&self, r: Raw) -> Finding {
        Finding {
            pattern_id: self.ids[r.kind as usize].clone(),
            start: r.start,
            end: r.end,
        }
    }

    pub(crate) fn marker(&self, kind: u32) -> &Bytes {
        &self.markers[kind as usize]
    }

    fn kinds(&self) -> usize {
        self.ids.len()
    }
}

/// How common a (lowercased) byte is in text, JSON, logs and URLs: lower is
/// more common. Bytes not listed are rare.
const COMMON_BYTES: &[u8] =
    b" etaoinsr\"hl:/dcu,.m0f1p-2g=wyb_34\n5v6789k{}x[]&?jq;z'%()<>+#@!*~$|^`\\\t\r";

/// Teddy slows down sharply past ~32 literals (bucket aliasing); past 64 it
/// refuses. Measured on benign text: groups of 32 ran fastest.
const TEDDY_GROUP: usize = 32;

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
        let mut anchors: Vec<&[u8]> = Vec::new();
        let mut back = 0;
        for lit in lits {
            let lit = lit.as_ref();
            let w = lit.len().min(4);
            let d = (0..=lit.len() - w)
                .max_by_key(|&d| {
                    (
                        lit[d..d + w].iter().map(|&b| rarity(b)).sum::<usize>(),
                        usize::MAX - d,
                    )
                })
                .unwrap_or(0);
            back = back.max(d);
            let a = &lit[d..];
            if !anchors.contains(&a) {
                anchors.push(a);
            }
        }
        // Anchors shorter than 4 bytes shrink the Teddy mask of their whole
        // group: keep them in groups of their own. Sorting puts anchors with
        // the same leading bytes in one group, where they alias less in
        // Teddy's nybble masks (measured: ~1.5x faster on benign text).
        anchors.sort_by(|a, b| (a.len() >= 4).cmp(&(b.len() >= 4)).then(a.cmp(b)));
        let (short, long): (Vec<&[u8]>, Vec<&[u8]>) = anchors.iter().partition(|a| a.len() < 4);
        let mut pre = Vec::new();
        for group in short.chunks(TEDDY_GROUP).chain(long.chunks(TEDDY_GROUP)) {
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
        if self.pre.is_empty() {
            out.extend(
                self.ac
                    .find_overlapping_iter(hay)
                    .map(|m| (m.end(), m.start(), m.pattern())),
            );
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

/// A finding before its id is attached: `kind` indexes `Scanner::ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) kind: u32,
}

/// The search state shared by whole-buffer and streaming scans. It sees the
/// stream through a buffer `hay` that holds absolute bytes
/// `[base, base + hay.len())`.
pub(crate) struct Core {
    /// Per pattern: end offset of its last evaluated keyword hit.
    last_eval: Vec<Option<u64>>,
    /// Keyword hits selected for evaluation whose window is not complete yet.
    pending: Vec<(u32, u64)>,
    /// Findings not yet final.
    cands: Vec<Raw>,
    /// Per kind: end of the last kept finding (dedup).
    last_end: Vec<u64>,
    fold: Vec<u8>,
    /// Keyword hits of the current feed: (end, start, keyword).
    hits: Vec<(usize, usize, aho_corasick::PatternID)>,
}

impl Core {
    pub(crate) fn new(sc: &Scanner) -> Core {
        Core {
            last_eval: vec![None; sc.patterns.len()],
            pending: Vec::new(),
            cands: Vec::new(),
            last_end: vec![0; sc.kinds()],
            fold: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Search for automaton hits that end after `hay[..from]` (the new bytes).
    pub(crate) fn feed(&mut self, sc: &Scanner, hay: &[u8], base: u64, from: usize) {
        if let Some(ac) = &sc.kw_ac {
            let rs = from.saturating_sub(sc.kw_max.saturating_sub(1));
            let region = hay.get(rs..).unwrap_or_default();
            self.fold.clear();
            self.fold.extend_from_slice(region);
            self.fold.make_ascii_lowercase();
            ac.find_all(&self.fold, &mut self.hits);
            for &(end, _, pid) in &self.hits {
                if rs + end <= from {
                    continue;
                }
                let e = base + (rs + end) as u64;
                for &pi in &sc.kw_targets[pid.as_usize()] {
                    let lp = sc.patterns[pi as usize].max_len as u64;
                    let slot = &mut self.last_eval[pi as usize];
                    if slot.is_some_and(|l| e <= l + lp) {
                        continue;
                    }
                    *slot = Some(e);
                    self.pending.push((pi, e));
                }
            }
        }
        if let Some(ac) = &sc.lit_ac {
            let rs = from.saturating_sub(sc.lit_max.saturating_sub(1));
            let region = hay.get(rs..).unwrap_or_default();
            ac.find_all(region, &mut self.hits);
            for &(end, start, pid) in &self.hits {
                if rs + end <= from {
                    continue;
                }
                for &kind in &sc.lit_targets[pid.as_usize()] {
                    self.cands.push(Raw {
                        start: base + (rs + start) as u64,
                        end: base + (rs + end) as u64,
                        kind,
                    });
                }
            }
        }
    }

    /// Evaluate the pending keyword hits whose window is complete (all of
    /// them at end of stream).
    pub(crate) fn run_ready(&mut self, sc: &Scanner, hay: &[u8], base: u64, eof: bool) {
        let avail_end = base + hay.len() as u64;
        let mut i = 0;
        while i < self.pending.len() {
            let (pi, e) = self.pending[i];
            let p = &sc.patterns[pi as usize];
            let full_end = e + 2 * p.max_len as u64;
            if !eof && full_end > avail_end {
                i += 1;
                continue;
            }
            self.pending.swap_remove(i);
            let ws = e.saturating_sub((p.max_len + p.max_keyword_len()) as u64);
            let we = full_end.min(avail_end);
            debug_assert!(ws >= base, "window start {ws} before buffer base {base}");
            let (Ok(rs), Ok(re)) = (
                usize::try_from(ws.saturating_sub(base)),
                usize::try_from(we - base),
            ) else {
                continue;
            };
            let Some(window) = hay.get(rs..re) else {
                continue;
            };
            eval(p, pi, window, ws, &mut self.cands);
        }
    }

    /// All findings starting before the returned offset are known.
    pub(crate) fn frontier(&self, sc: &Scanner, avail_end: u64, eof: bool) -> u64 {
        if eof {
            return u64::MAX;
        }
        let reach = sc.back_max.max(sc.lit_max as u64);
        let mut f = (avail_end + 1).saturating_sub(reach).min(avail_end);
        for &(pi, e) in &self.pending {
            let p = &sc.patterns[pi as usize];
            f = f.min(e.saturating_sub((p.max_len + p.max_keyword_len()) as u64));
        }
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
        batch.sort_unstable_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(a.kind.cmp(&b.kind))
        });
        for r in batch {
            let last = &mut self.last_end[r.kind as usize];
            if r.start >= *last {
                *last = r.end;
                out.push(r);
            }
        }
    }
}

/// Run one pattern's regex over its window (which starts at absolute `ws`).
fn eval(p: &Pattern, pi: u32, window: &[u8], ws: u64, out: &mut Vec<Raw>) {
    let max = p.max_len;
    if p.secret_group == 0 {
        for m in p.regex.find_iter(window) {
            if m.len() <= max && p.accepts(m.as_bytes()) {
                out.push(Raw {
                    start: ws + m.start() as u64,
                    end: ws + m.end() as u64,
                    kind: pi,
                });
            }
        }
    } else {
        for caps in p.regex.captures_iter(window) {
            let (Some(m), Some(g)) = (caps.get(0), caps.get(p.secret_group)) else {
                continue;
            };
            if m.len() <= max && p.accepts(g.as_bytes()) {
                out.push(Raw {
                    start: ws + g.start() as u64,
                    end: ws + g.end() as u64,
                    kind: pi,
                });
            }
        }
    }
}
