//! How far before its keyword a pattern's match can start: the pattern's
//! *lookbehind*, which sets how many bytes a stream must hold back while no
//! keyword has been seen (see [`stream`](super::stream)).
//!
//! Three cases, decided when the pattern file loads:
//! - [`Reach::AtKeyword`], derived from the regex: every match begins with
//!   one of the pattern's keywords (ASCII case-insensitively), so bytes
//!   before a keyword that has not arrived yet can never be part of a match.
//!   Checked by prefix-literal extraction (`regex-syntax`) over the regex
//!   with its ASCII letters folded to lowercase.
//! - [`Reach::Declared`], from `lookbehind = N` in the pattern file: the
//!   secret (the capture group reported, or the whole match) starts at most
//!   `N` bytes before the keyword occurrence, and every byte in between is
//!   part of the secret. The scanner then also knows *which* bytes those can
//!   be, so on benign input it holds back only the tail that could be the
//!   start of a secret, not `N` bytes: the bytes the secret's sub-regex can
//!   match before the literal holding the keyword when the secret is a
//!   concatenation with such a literal (`<digits>:AA...`), else all bytes
//!   the secret's sub-regex can match. The match itself may start up to
//!   `gap` bytes before the secret (a consumed boundary character, or the
//!   name before a value), derived from the regex: `lookbehind = 0` says the
//!   secret never starts before the keyword, though the match does.
//! - [`Reach::Unbounded`]: neither; the regex is tried from `max_len` bytes
//!   before the keyword and the stream holds that much back. Correct, but
//!   slow to flush.

use regex_syntax::{
    ParserBuilder,
    hir::{
        self, Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind,
        literal::{ExtractKind, Extractor},
    },
};

use super::patterns::MAX_KEYWORD_LEN;

/// A set of byte values.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    /// Every byte.
    pub(crate) const FULL: ByteSet = ByteSet([u64::MAX; 4]);

    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
    }

    fn insert_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.0[usize::from(b >> 6)] |= 1u64 << (b & 63);
        }
    }

    /// Number of bytes in the set.
    pub(crate) fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteSet({} bytes)", self.len())
    }
}

/// Where a pattern's matches can start relative to the keyword occurrence
/// that triggers them. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every match begins with a keyword.
    AtKeyword,
    /// `lookbehind = secret`: the secret starts at most `secret` bytes before
    /// the keyword, all of them bytes of `class`; the match starts at most
    /// `gap` bytes before the secret.
    Declared {
        secret: usize,
        gap: usize,
        class: ByteSet,
    },
    /// No bound known but `max_len`.
    Unbounded,
}

impl Reach {
    /// Decide the reach of a pattern: derived, declared, or the fallback.
    pub(crate) fn of(
        regex: &str,
        keywords: &[String],
        secret_group: usize,
        max_len: usize,
        declared: Option<usize>,
    ) -> Reach {
        let hir = parse(regex);
        if hir
            .as_ref()
            .is_some_and(|h| starts_with_keyword(h, keywords))
        {
            return Reach::AtKeyword;
        }
        let Some(secret) = declared else {
            return Reach::Unbounded;
        };
        let (gap, class) = match &hir {
            Some(h) => (
                gap_before(h, secret_group).unwrap_or(max_len),
                group_hir(h, secret_group)
                    .and_then(|g| bytes_before_keyword(g, keywords))
                    .or_else(|| secret_bytes(h, secret_group))
                    .unwrap_or(ByteSet::FULL),
            ),
            None => (max_len, ByteSet::FULL),
        };
        Reach::Declared { secret, gap, class }
    }

    /// Most bytes a finding (the secret) can start before its keyword.
    pub(crate) fn finding_back(&self, max_len: usize) -> usize {
        match *self {
            Reach::AtKeyword => 0,
            Reach::Declared { secret, .. } => secret,
            Reach::Unbounded => max_len,
        }
    }

    /// Most bytes a match can start before its keyword: where the regex
    /// search starts.
    pub(crate) fn search_back(&self, max_len: usize) -> usize {
        match *self {
            Reach::AtKeyword => 0,
            Reach::Declared { secret, gap, .. } => secret.saturating_add(gap),
            Reach::Unbounded => max_len,
        }
    }
}

/// Does every secret of the pattern (capture group `group`, 0 for the
/// whole match) begin with one of `keywords` (lowercase)? Such a secret is
/// recognisable on its own, wherever it stands, so a relaxed search for it
/// glued to its neighbours is meaningful (see `patterns::relax`); a value
/// recognised only by a name before it (`mailgun ... <32 hex>`) is not.
pub(crate) fn secret_starts_with_keyword(regex: &str, keywords: &[String], group: usize) -> bool {
    parse(regex)
        .and_then(|h| group_hir(&h, group).map(|g| starts_with_keyword(g, keywords)))
        .unwrap_or(false)
}

/// The regex as `regex::bytes` with Unicode off parses it.
fn parse(regex: &str) -> Option<Hir> {
    ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(regex)
        .ok()
}

/// Does every match of `hir` begin with one of `keywords` (lowercase),
/// ASCII case-insensitively?
///
/// Sound because every match `m` of `hir` has a lowercased twin matched by
/// the folded regex, which begins with one of the extracted prefix literals
/// (that is what a finite prefix sequence promises); lowercasing that literal
/// gives a prefix of `lowercase(m)`.
fn starts_with_keyword(hir: &Hir, keywords: &[String]) -> bool {
    let folded = fold_lower(hir);
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(4096)
        .limit_literal_len(MAX_KEYWORD_LEN)
        .extract(&folded);
    let Some(lits) = seq.literals() else {
        return false;
    };
    lits.iter().all(|lit| {
        let lit = lit.as_bytes().to_ascii_lowercase();
        keywords.iter().any(|k| lit.starts_with(k.as_bytes()))
    })
}

/// `hir` with every ASCII uppercase letter replaced by its lowercase form
/// (which keeps the literal sequences of case-insensitive regexes small).
fn fold_lower(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(hir::Literal(bytes)) => Hir::literal(bytes.to_ascii_lowercase()),
        HirKind::Class(Class::Bytes(c)) => Hir::class(Class::Bytes(fold_bytes(c))),
        HirKind::Class(Class::Unicode(c)) => Hir::class(Class::Unicode(fold_unicode(c))),
        HirKind::Look(look) => Hir::look(*look),
        HirKind::Repetition(r) => Hir::repetition(hir::Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(fold_lower(&r.sub)),
        }),
        HirKind::Capture(c) => Hir::capture(hir::Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(fold_lower(&c.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(fold_lower).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(fold_lower).collect()),
    }
}

fn fold_bytes(c: &ClassBytes) -> ClassBytes {
    let upper = ClassBytes::new([ClassBytesRange::new(b'A', b'Z')]);
    let mut up = c.clone();
    up.intersect(&upper);
    let mut out = c.clone();
    out.difference(&upper);
    out.union(&ClassBytes::new(up.iter().map(|r| {
        ClassBytesRange::new(r.start().to_ascii_lowercase(), r.end().to_ascii_lowercase())
    })));
    out
}

fn fold_unicode(c: &ClassUnicode) -> ClassUnicode {
    let upper = ClassUnicode::new([ClassUnicodeRange::new('A', 'Z')]);
    let mut up = c.clone();
    up.intersect(&upper);
    let mut out = c.clone();
    out.difference(&upper);
    out.union(&ClassUnicode::new(up.iter().map(|r| {
        ClassUnicodeRange::new(r.start().to_ascii_lowercase(), r.end().to_ascii_lowercase())
    })));
    out
}

/// The sub-expression of capture group `group` (0: the whole regex).
fn group_hir(hir: &Hir, group: usize) -> Option<&Hir> {
    if group == 0 {
        return Some(hir);
    }
    match hir.kind() {
        HirKind::Capture(c) if c.index as usize == group => Some(hir),
        HirKind::Capture(c) => group_hir(&c.sub, group),
        HirKind::Repetition(r) => group_hir(&r.sub, group),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().find_map(|h| group_hir(h, group))
        }
        _ => None,
    }
}

/// Every byte `h` can match.
fn collect(h: &Hir, set: &mut ByteSet) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(hir::Literal(bytes)) => {
            for &b in bytes.iter() {
                set.insert_range(b, b);
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.iter() {
                set.insert_range(r.start(), r.end());
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            for r in c.iter() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if lo < 0x80 {
                    set.insert_range(lo as u8, hi.min(0x7f) as u8);
                }
                if hi >= 0x80 {
                    set.insert_range(0x80, 0xff);
                }
            }
        }
        HirKind::Repetition(r) => collect(&r.sub, set),
        HirKind::Capture(c) => collect(&c.sub, set),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            for s in subs {
                collect(s, set);
            }
        }
    }
}

/// For a secret that is a concatenation with a literal holding a keyword
/// (or an alternation of such literals): every byte the secret can have
/// before that keyword.
fn bytes_before_keyword(secret: &Hir, keywords: &[String]) -> Option<ByteSet> {
    let secret = match secret.kind() {
        HirKind::Capture(c) => &c.sub,
        _ => secret,
    };
    let items = match secret.kind() {
        HirKind::Concat(subs) => subs.as_slice(),
        _ => std::slice::from_ref(secret),
    };
    // The bytes of a literal before its first keyword.
    let before = |h: &Hir| -> Option<Vec<u8>> {
        let HirKind::Literal(hir::Literal(bytes)) = h.kind() else {
            return None;
        };
        let lower = bytes.to_ascii_lowercase();
        let at = keywords
            .iter()
            .filter_map(|k| lower.windows(k.len()).position(|w| w == k.as_bytes()))
            .min()?;
        Some(bytes.get(..at)?.to_vec())
    };
    let mut set = ByteSet::default();
    for item in items {
        let heads = match item.kind() {
            HirKind::Alternation(alts) => alts.iter().map(before).collect::<Option<Vec<_>>>(),
            _ => before(item).map(|b| vec![b]),
        };
        if let Some(heads) = heads {
            for b in heads.iter().flatten() {
                set.insert_range(*b, *b);
            }
            return Some(set);
        }
        collect(item, &mut set);
    }
    None
}

/// Every byte the secret (capture group `group`) can contain.
fn secret_bytes(hir: &Hir, group: usize) -> Option<ByteSet> {
    let g = group_hir(hir, group)?;
    let mut set = ByteSet::default();
    collect(g, &mut set);
    Some(set)
}

/// Most bytes of a match that can precede capture group `group`, when the
/// regex is a concatenation of bounded pieces around it.
fn gap_before(hir: &Hir, group: usize) -> Option<usize> {
    if group == 0 {
        return Some(0);
    }
    match hir.kind() {
        HirKind::Capture(c) if c.index as usize == group => Some(0),
        HirKind::Capture(c) => gap_before(&c.sub, group),
        HirKind::Concat(subs) => {
            let mut acc = 0usize;
            for s in subs {
                if group_hir(s, group).is_some() {
                    return gap_before(s, group).map(|g| acc.saturating_add(g));
                }
                acc = acc.saturating_add(s.properties().maximum_len()?);
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kws(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_ascii_lowercase()).collect()
    }

    #[test]
    fn prefix_keywords_are_derived() {
        let at = |re: &str, k: &[&str]| Reach::of(re, &kws(k), 0, 100, None) == Reach::AtKeyword;
        assert!(at(r"\bghp_[A-Za-z0-9]{36}\b", &["ghp_"]));
        assert!(at(
            r"\b(?:AKIA|ASIA|A3T[A-Z0-9])[A-Z2-7]{16}\b",
            &["AKIA", "ASIA", "A3T"]
        ));
        // Case-insensitive regexes fold to the lowercase keywords.
        assert!(at(
            r"(?i)aws[_\-]?secret[_\-]?key",
            &["aws_secret", "aws-secret", "awssecret"]
        ));
        assert!(at(
            r"(?i:twilio)[^\n]{0,80}?\b(SK[0-9a-f]{32})\b",
            &["twilio"]
        ));
        // A keyword in the middle, a missing alternative, a free prefix.
        assert!(!at(
            r"-----BEGIN (?:RSA )?PRIVATE KEY-----",
            &["PRIVATE KEY-----"]
        ));
        assert!(!at(r"(?i)aws[_\-. ]?secret", &["aws_secret", "aws-secret"]));
        assert!(!at(r"[a-z]{0,12}zq!", &["zq!"]));
        assert!(!at(r"(?:^|[^0-9])([0-9]{8,10}:AA)", &[":AA"]));
        // A keyword longer than the literal prefix proves nothing.
        assert!(!at(r"\bsk-[a-z]+", &["sk-proj-"]));
    }

    #[test]
    fn declared_reach_has_gap_and_class() {
        let r = Reach::of(
            r"(?:^|[^0-9])([0-9]{8,10}:AA[0-9A-Za-z_\-]{33})(?:[^0-9A-Za-z_\-]|$)",
            &kws(&[":AA"]),
            1,
            50,
            Some(10),
        );
        let Reach::Declared { secret, gap, class } = r else {
            panic!("{r:?}")
        };
        assert_eq!((secret, gap), (10, 1));
        // Only the digits can come before `:AA` in the secret.
        assert_eq!(class.len(), 10);
        assert!(class.contains(b'0') && class.contains(b'9') && !class.contains(b':'));
        assert_eq!(r.search_back(50), 11);
        assert_eq!(r.finding_back(50), 10);

        let r = Reach::of(r"\b[a-z]{3}\.kw\.", &kws(&[".kw."]), 0, 20, Some(3));
        let ok = matches!(r, Reach::Declared { secret: 3, gap: 0, class } if class.len() == 26);
        assert!(ok, "{r:?}");
        // No literal holds the keyword: every byte of the secret.
        let re = r"(?:^|[^a-z])([a-z]{3}[78]Q~[a-z]{2})";
        let r = Reach::of(re, &kws(&["7Q~"]), 1, 20, Some(3));
        let ok = matches!(r, Reach::Declared { secret: 3, gap: 1, class } if class.len() == 30);
        assert!(ok, "{r:?}");
        // The secret follows the keyword; the match starts at a name before it.
        let re = r"(?i)(?:aws_|aws\.)secret=([a-z]{4})";
        let r = Reach::of(re, &kws(&["aws_secret"]), 1, 20, Some(0));
        assert!(
            matches!(
                r,
                Reach::Declared {
                    secret: 0,
                    gap: 11,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(r.search_back(20), 11);
        assert_eq!(
            Reach::of("[a-z]{3}x", &kws(&["x"]), 0, 9, None),
            Reach::Unbounded
        );
    }
}
