//! Secret pattern files (`rules/secrets.toml`): parse, validate, compile.
//!
//! A pattern file is a list of `[[pattern]]` tables:
//!
//! ```toml
//! [[pattern]]
//! id = "github-pat-classic"            # kebab-case, stable: audit events and redaction markers use it
//! description = "GitHub personal access token (classic)"
//! keywords = ["ghp_"]                  # ASCII, case-insensitive, 3..=64 bytes; one must occur
//! regex = '\bghp_[A-Za-z0-9]{36}\b'     # `regex` crate syntax over bytes, Unicode off
//! max_len = 40                         # longest match in bytes (required, <= MAX_LEN_CAP)
//! # lookbehind = N                    # optional: only for a keyword inside the secret, see below
//! entropy = 3.0                        # optional: min Shannon entropy (bits/byte) of the secret
//! secret_group = 1                     # optional: capture group holding the secret (default 0)
//! checksum = "github"                  # optional: a validator (github, card, iban, wif, bip32, bip39, basic; see `checks`)
//! # redact = "last4"                  # optional: incoming redaction keeps the last four digits (cards)
//! examples = ["ghp_..."]               # each must be found as verified
//! shaped_examples = ["ghp_...bad"]     # each must be found, as shaped only
//! counter_examples = ["ghp_short"]     # none may be found, not even as shaped
//! ```
//!
//! # Confidence
//! A strict match is [`Confidence::Verified`] when its entropy, checksum
//! and the documentation check ([`is_documentation`]) pass, and
//! [`Confidence::Shaped`] when only the entropy does. Each pattern also has
//! a *relaxed* regex derived from the strict one ([`relax`]: boundaries
//! dropped, long exact runs two shorter); its matches that overlap no strict
//! match are shaped. Only a secret recognisable on its own gets one (it
//! begins with a keyword, or holds one: a declared lookbehind); a value
//! known only by the name before it does not. It runs only in the windows
//! the keyword prefilter already selected, and only when the caller acts on
//! shaped findings, so the prefilter, the hold-back and the precise scan
//! cost nothing more.
//!
//! Regexes are compiled with Unicode off: classes, `\b` and `\s` are ASCII,
//! `.` is any byte but `\n`, and they match invalid UTF-8 (opt in per
//! regex with `(?u)`). This keeps them on the fast DFA engines.
//!
//! # Lookbehind
//! A stream holds back, while no keyword has been seen, the bytes that could
//! still become the start of a secret once a keyword arrives. For most
//! patterns the match begins *with* a keyword (`\bghp_...`), which the
//! loader proves from the regex (every literal prefix of the regex starts
//! with a keyword, ASCII case-insensitively): nothing before a keyword needs
//! holding. Where the keyword sits inside the secret (`<14 chars>.atlasv1.`,
//! `<digits>:AA...`), declare `lookbehind = N`: the secret (the reported
//! capture group) starts at most `N` bytes before the keyword, and every byte
//! in between belongs to the secret. `N` must not exceed `max_len`. Without
//! either, the regex is tried from `max_len` bytes before each keyword and
//! streams hold `max_len` bytes back: correct, but slow to flush, so keep
//! every bundled pattern in one of the first two forms
//! ([`Pattern::lookbehind`]).
//!
//! Loading checks everything a reviewer could get wrong and names the file,
//! line and key of the first problem ([`PatternError`]). The examples,
//! shaped examples and counter-examples are run at load time through the
//! same code path the proxy uses, so a pattern file that loads is a pattern
//! file whose examples work.
//!
//! The shipped file is compiled in ([`BUILTIN_PATTERNS`],
//! [`PatternSet::builtin`]).

use std::{
    fmt,
    ops::Range,
    path::Path,
    sync::{Arc, OnceLock},
};

use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::hir::{self, Hir, HirKind};
use serde::Deserialize;
use toml::Spanned;

use super::{
    checks,
    reach::{Reach, secret_starts_with_keyword},
    scanner::{Confidence, Scanner},
};

/// Largest `max_len` a pattern may declare, in bytes.
///
/// The stream hold-back is a small multiple of the largest `max_len` (see
/// [`ScanState`](super::ScanState)), so this cap bounds per-stream memory.
pub const MAX_LEN_CAP: usize = 8 * 1024;

/// Shortest keyword accepted, in bytes. Shorter keywords hit constantly on
/// benign traffic and make the prefilter useless.
pub const MIN_KEYWORD_LEN: usize = 3;

/// Longest keyword accepted, in bytes.
pub const MAX_KEYWORD_LEN: usize = 64;

/// The shipped pattern file (`rules/secrets.toml`), compiled into the
/// binary: the scanner's patterns unless the config names another file, so
/// that airlock scans from any working directory.
pub const BUILTIN_PATTERNS: &str = include_str!("../../rules/secrets.toml");

/// The name the built-in pattern set goes by in errors.
pub const BUILTIN_NAME: &str = "rules/secrets.toml (built in)";

/// Compiled-size limit for one pattern's regex.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// A pattern file that could not be loaded: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct PatternError {
    /// The file, as given to [`PatternSet::load`] / [`PatternSet::parse`].
    pub file: String,
    /// 1-based line of the offending key (or table).
    pub line: usize,
    /// 1-based byte column.
    pub column: usize,
    /// The key at fault, e.g. `pattern[3].regex` (`pattern[3]` for a table).
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Extra check run on a candidate secret after its regex matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    /// GitHub's token format (also npm's): `<prefix>_<payload><crc>`, where
    /// `<crc>` is the CRC32 of `<payload>` in base62, left-padded to 6 chars.
    Github,
    /// The validators of [`checks`](super::checks): payment card, IBAN,
    /// WIF, BIP32 extended private key, BIP39 mnemonic.
    Card,
    Iban,
    Wif,
    Bip32,
    Bip39,
    Basic,
}

impl Checksum {
    const NAMES: &[(&str, Checksum)] = &[
        ("github", Checksum::Github),
        ("card", Checksum::Card),
        ("iban", Checksum::Iban),
        ("wif", Checksum::Wif),
        ("bip32", Checksum::Bip32),
        ("bip39", Checksum::Bip39),
        ("basic", Checksum::Basic),
    ];

    /// Does failing this check mean the value is not of the kind at all
    /// (rather than a damaged or fake token of it)?
    fn identifies(self) -> bool {
        !matches!(self, Checksum::Github)
    }

    fn holds(self, secret: &[u8]) -> bool {
        match self {
            Checksum::Github => github_checksum_ok(secret),
            Checksum::Card => checks::card(secret),
            Checksum::Iban => checks::iban(secret),
            Checksum::Wif => checks::wif(secret),
            Checksum::Bip32 => checks::bip32(secret),
            Checksum::Bip39 => checks::bip39(secret),
            Checksum::Basic => checks::basic(secret),
        }
    }
}

/// One compiled secret pattern.
#[derive(Clone)]
pub struct Pattern {
    pub(crate) id: Arc<str>,
    pub(crate) description: String,
    /// Lowercased keywords.
    pub(crate) keywords: Vec<String>,
    pub(crate) regex: LazyRegex,
    /// The strict regex relaxed to catch the shapes of [`Confidence::Shaped`]
    /// findings: word boundaries and `(?:^|[^...])` guards dropped, exact
    /// repetitions of 16 or more accepted up to 2 shorter (see
    /// [`relax`]). `None` when that changes nothing, and for a secret
    /// recognised only by the name before it (`mailgun ... <32 hex>`: a
    /// longer hex run there is another value, not a glued key). Its matches
    /// are never longer than the strict regex's can be.
    pub(crate) relaxed: Option<LazyRegex>,
    pub(crate) max_len: usize,
    pub(crate) entropy: Option<f64>,
    pub(crate) secret_group: usize,
    pub(crate) checksum: Option<Checksum>,
    /// `redact = "last4"`: incoming redaction keeps the last four digits.
    pub(crate) redact_last4: bool,
    /// Where matches start relative to their keyword.
    pub(crate) reach: Reach,
    pub(crate) examples: Vec<String>,
    pub(crate) shaped_examples: Vec<String>,
    pub(crate) counter_examples: Vec<String>,
}

impl Pattern {
    /// A copy with its regexes compiled now, in cells of its own: the
    /// load's self-test runs on it, and they are freed with it. The error
    /// says which regex failed (`true`: the relaxed form).
    fn compiled_copy(&self) -> Result<Self, (bool, regex::Error)> {
        let regex = build_regex(&self.regex.0.source).map_err(|e| (false, e))?;
        let relaxed = match &self.relaxed {
            Some(r) => Some(build_regex(&r.0.source).map_err(|e| (true, e))?),
            None => None,
        };
        Ok(Self {
            regex: LazyRegex::compiled(regex),
            relaxed: relaxed.map(LazyRegex::compiled),
            ..self.clone()
        })
    }

    /// The stable kebab-case id (`github-pat-classic`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Human description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Declared maximum match length in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Most bytes a secret found by this pattern can start before the start
    /// of the keyword occurrence that triggers it: 0 when every match begins
    /// with a keyword, the declared `lookbehind` otherwise, `max_len` when
    /// neither is known. A stream holds back at most
    /// `longest keyword - 1 + lookbehind` bytes for this pattern while no
    /// keyword is pending.
    pub fn lookbehind(&self) -> usize {
        self.reach.finding_back(self.max_len)
    }

    /// The example strings (fake secrets) this pattern must find as
    /// [`Confidence::Verified`].
    pub fn examples(&self) -> &[String] {
        &self.examples
    }

    /// The strings this pattern must find as [`Confidence::Shaped`] only
    /// (broken checksum, glued, documented example, placeholder).
    pub fn shaped_examples(&self) -> &[String] {
        &self.shaped_examples
    }

    /// The strings this pattern must not find at all, not even as shaped.
    pub fn counter_examples(&self) -> &[String] {
        &self.counter_examples
    }

    /// Longest keyword of this pattern, in bytes.
    pub(crate) fn max_keyword_len(&self) -> usize {
        self.keywords.iter().map(String::len).max().unwrap_or(0)
    }

    /// How sure is a strict match with secret (capture group) bytes
    /// `secret`? `None` when it is no finding at all: empty, or below the
    /// pattern's entropy (a run of one character is no secret of any
    /// confidence). A failed checksum, a documented example value or a
    /// placeholder makes it [`Confidence::Shaped`].
    pub(crate) fn classify(&self, secret: &[u8]) -> Option<Confidence> {
        if !self.shaped(secret) {
            return None;
        }
        // GitHub's CRC proves a token real: failing it leaves a shaped
        // finding. The other checks say what a value is (a card, an IBAN,
        // a key): failing one means it is none, so no finding at all.
        let checksum_ok = self.checksum.is_none_or(|c| c.holds(secret));
        if !checksum_ok && self.checksum.is_some_and(Checksum::identifies) {
            return None;
        }
        // "example" is one of BIP39's 2,048 words: a mnemonic that holds
        // its checksum is one, whatever words it has.
        let words = self.checksum == Some(Checksum::Bip39);
        if checksum_ok && (words || !is_documentation(secret)) {
            Some(Confidence::Verified)
        } else {
            Some(Confidence::Shaped)
        }
    }

    /// May a relaxed (glued, short) match with secret bytes `secret` count
    /// as [`Confidence::Shaped`]? As [`Pattern::shaped`], and for a kind a
    /// validator identifies, the validator holds for the secret or for it
    /// less a few glued characters at its end (a variable-length run such
    /// as base58 swallows letters glued after it).
    pub(crate) fn glued(&self, secret: &[u8]) -> bool {
        /// How many trailing characters a validated kind may have glued on.
        const GLUED_TAIL: usize = 8;
        self.shaped(secret)
            && self.checksum.is_none_or(|c| {
                !c.identifies()
                    || (0..=GLUED_TAIL.min(secret.len().saturating_sub(1)))
                        .any(|cut| c.holds(&secret[..secret.len() - cut]))
            })
    }

    /// Is `secret` at least a [`Confidence::Shaped`] finding: not empty,
    /// and at or above the pattern's entropy?
    pub(crate) fn shaped(&self, secret: &[u8]) -> bool {
        !secret.is_empty()
            && self
                .entropy
                .is_none_or(|min| shannon_entropy(secret) >= min)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("id", &self.id)
            .field("keywords", &self.keywords)
            .field("max_len", &self.max_len)
            .field("reach", &self.reach)
            .finish_non_exhaustive()
    }
}

/// A pattern's regex, compiled when a scan first needs it, or at load.
///
/// The built-in set's ~150 regexes (strict and relaxed) hold about 7 MB of
/// NFAs once compiled (their bounded repetitions, `{3,128}`, `{0,4000}`,
/// unroll into one state per repeat), and each only runs once its keyword
/// turns up. So a loaded set keeps regexes uncompiled until first use. The
/// built-in file is fully checked by the unit tests; a file named by the
/// config is compiled and self-tested at load ([`PatternSet::parse`]) so
/// that its errors name file and line, one pattern at a time, each
/// pattern's compiled regexes freed before the next (the heap then holds
/// one pattern's worth, not the set's). Clones share the compiled regex.
#[derive(Clone)]
pub(crate) struct LazyRegex(Arc<LazyInner>);

struct LazyInner {
    source: Box<str>,
    compiled: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// A regex compiled on first use.
    fn deferred(source: String) -> Self {
        Self(Arc::new(LazyInner {
            source: source.into(),
            compiled: OnceLock::new(),
        }))
    }

    /// A regex compiled already, in a cell of its own.
    fn compiled(regex: Regex) -> Self {
        Self(Arc::new(LazyInner {
            source: regex.as_str().into(),
            compiled: OnceLock::from(Some(regex)),
        }))
    }

    /// The compiled regex; `None` only if it does not compile, which a
    /// deferred regex never does for the built-in file (a unit test compiles
    /// every one). The scanner treats `None` as a finding: it fails closed.
    pub(crate) fn get(&self) -> Option<&Regex> {
        self.0
            .compiled
            .get_or_init(|| build_regex(&self.0.source).ok())
            .as_ref()
    }
}

/// The one way a pattern regex is compiled: bytes, Unicode off, size bound.
fn build_regex(source: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(source)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// How much a pattern file is checked at load (its regexes are compiled on
/// first use either way).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Compile every regex and run every example through the real scanner
    /// now, so that every error names file and line.
    Check,
    /// No self-test: the built-in file, checked by the unit tests.
    Checked,
}

/// A validated, compiled pattern file. Build a [`Scanner`] from it.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    pub(crate) patterns: Arc<[Pattern]>,
}

impl PatternSet {
    /// Read and compile a pattern file.
    ///
    /// # Errors
    /// A [`PatternError`] naming the file, line and key of the first problem:
    /// unreadable file, TOML syntax, unknown or missing key, bad regex,
    /// `max_len` missing or above [`MAX_LEN_CAP`], keyword missing or out of
    /// bounds, `lookbehind` above `max_len`, duplicate id, an example that does not match or a
    /// counter-example that does.
    pub fn load(path: &Path) -> Result<Self, PatternError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PatternError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: "file".into(),
            message: format!("cannot read pattern file: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// The built-in patterns ([`BUILTIN_PATTERNS`]), compiled once per
    /// process.
    ///
    /// # Errors
    /// A [`PatternError`] if the shipped file does not load (a build that
    /// ships a broken file; the rules tests catch it first).
    pub fn builtin() -> Result<Self, PatternError> {
        static SET: std::sync::LazyLock<Result<PatternSet, PatternError>> =
            std::sync::LazyLock::new(|| {
                PatternSet::parse_as(BUILTIN_PATTERNS, BUILTIN_NAME, Trust::Checked)
            });
        SET.clone()
    }

    /// Compile a pattern file from text; `file` names it in errors.
    ///
    /// # Errors
    /// As for [`PatternSet::load`].
    pub fn parse(text: &str, file: &str) -> Result<Self, PatternError> {
        Self::parse_as(text, file, Trust::Check)
    }

    fn parse_as(text: &str, file: &str, trust: Trust) -> Result<Self, PatternError> {
        let err = |span: Range<usize>, key: String, message: String| {
            let (line, column) = line_col(text, span.start);
            PatternError {
                file: file.to_string(),
                line,
                column,
                key,
                message,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            err(
                e.span().unwrap_or(0..0),
                "toml".into(),
                e.message().trim().to_string(),
            )
        })?;

        let mut patterns: Vec<Pattern> = Vec::with_capacity(raw.pattern.len());
        let mut spans = Vec::with_capacity(raw.pattern.len());
        for (i, table) in raw.pattern.into_iter().enumerate() {
            let table_span = table.span();
            let p = table.into_inner();
            let key = |k: &str| format!("pattern[{i}].{k}");

            let id = p.id.get_ref();
            if !is_kebab(id) {
                return Err(err(
                    p.id.span(),
                    key("id"),
                    format!("id `{id}` must be kebab-case ([a-z0-9] words joined by '-')"),
                ));
            }
            if patterns.iter().any(|q| &*q.id == id.as_str()) {
                return Err(err(p.id.span(), key("id"), format!("duplicate id `{id}`")));
            }
            if p.description.get_ref().trim().is_empty() {
                return Err(err(
                    p.description.span(),
                    key("description"),
                    "must not be empty".into(),
                ));
            }

            if p.keywords.get_ref().is_empty() {
                return Err(err(
                    p.keywords.span(),
                    key("keywords"),
                    "at least one keyword is required: the regex only runs near a keyword".into(),
                ));
            }
            let mut keywords = Vec::new();
            for kw in p.keywords.get_ref() {
                let k = kw.get_ref();
                if !k.is_ascii() || k.len() < MIN_KEYWORD_LEN || k.len() > MAX_KEYWORD_LEN {
                    return Err(err(
                        kw.span(),
                        key("keywords"),
                        format!(
                            "keyword `{k}` must be ASCII and {MIN_KEYWORD_LEN}..={MAX_KEYWORD_LEN} bytes; \
                             pick a specific prefix such as \"ghp_\", not a common word"
                        ),
                    ));
                }
                let lower = k.to_ascii_lowercase();
                if !keywords.contains(&lower) {
                    keywords.push(lower);
                }
            }

            let Some(max_len) = &p.max_len else {
                return Err(err(
                    table_span,
                    key("max_len"),
                    format!(
                        "missing `max_len` (longest match in bytes, at most {MAX_LEN_CAP}): \
                         it bounds how much of a stream is held back"
                    ),
                ));
            };
            let max_len_v = *max_len.get_ref();
            if max_len_v < 1 || max_len_v > MAX_LEN_CAP as i64 {
                return Err(err(
                    max_len.span(),
                    key("max_len"),
                    format!("max_len = {max_len_v} is out of range 1..={MAX_LEN_CAP}"),
                ));
            }
            let max_len_v = max_len_v as usize;

            let source = p.regex.get_ref();
            let invalid = |e: &dyn fmt::Display| {
                err(p.regex.span(), key("regex"), format!("invalid regex: {e}"))
            };
            // Capture groups are counted on the parsed regex, which costs
            // nothing to keep: a deferred regex is not compiled here.
            let captures_len = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(source)
                .map_err(|e| invalid(&e))?
                .properties()
                .explicit_captures_len()
                + 1;
            // Compiled by the self-test below (once), and then on first use.
            let regex = LazyRegex::deferred(source.clone());

            let secret_group = match &p.secret_group {
                None => 0,
                Some(g) => {
                    let v = *g.get_ref();
                    if v < 0 || v as usize >= captures_len {
                        return Err(err(
                            g.span(),
                            key("secret_group"),
                            format!(
                                "secret_group = {v}, but the regex has only {} capture group(s)",
                                captures_len - 1
                            ),
                        ));
                    }
                    v as usize
                }
            };

            let declared = match &p.lookbehind {
                None => None,
                Some(lb) => {
                    let v = *lb.get_ref();
                    if v < 0 || v > max_len_v as i64 {
                        return Err(err(
                            lb.span(),
                            key("lookbehind"),
                            format!(
                                "lookbehind = {v} is out of range 0..={max_len_v} (max_len): \
                                 the secret cannot start further before its keyword than its length"
                            ),
                        ));
                    }
                    Some(v as usize)
                }
            };
            let reach = Reach::of(
                p.regex.get_ref(),
                &keywords,
                secret_group,
                max_len_v,
                declared,
            );

            // Secrets recognisable on their own: those beginning with a
            // keyword (`ghp_`, `AKIA`) or with the keyword inside (a declared
            // lookbehind: `<digits>:AA`).
            let standalone = matches!(reach, Reach::Declared { secret, .. } if secret > 0)
                || secret_starts_with_keyword(p.regex.get_ref(), &keywords, secret_group);

            let entropy = match &p.entropy {
                None => None,
                Some(e) => {
                    let v = *e.get_ref();
                    if !(0.0..=8.0).contains(&v) {
                        return Err(err(
                            e.span(),
                            key("entropy"),
                            format!("entropy = {v} is outside 0.0..=8.0 bits per byte"),
                        ));
                    }
                    Some(v)
                }
            };

            let checksum = match &p.checksum {
                None => None,
                Some(c) => match Checksum::NAMES.iter().find(|(n, _)| *n == c.get_ref()) {
                    Some(&(_, known)) => Some(known),
                    None => {
                        let known: Vec<&str> = Checksum::NAMES.iter().map(|(n, _)| *n).collect();
                        return Err(err(
                            c.span(),
                            key("checksum"),
                            format!(
                                "unknown checksum `{}`; known: {}",
                                c.get_ref(),
                                known.join(", ")
                            ),
                        ));
                    }
                },
            };

            // Relaxed (glued, short) shapes: a standalone secret glued to
            // its neighbours, or a named value (`AWS_SECRET_KEY=...`) with
            // text glued before its name or after its value; a validated
            // kind (IBAN, WIF, ...) only where its validator still holds
            // ([`Pattern::glued`]). Not for cards: any long run of digits
            // holds 16-digit substrings, a tenth of which pass Luhn.
            let relaxed = if standalone || checksum != Some(Checksum::Card) {
                relaxed_regex(p.regex.get_ref())
                    .map_err(|e| err(p.regex.span(), key("regex"), e))?
            } else {
                None
            };

            let redact_last4 = match &p.redact {
                None => false,
                Some(r) if r.get_ref() == "last4" => true,
                Some(r) => {
                    return Err(err(
                        r.span(),
                        key("redact"),
                        format!(
                            "unknown redact `{}`; known: \"last4\" (keep a card number's last four digits)",
                            r.get_ref()
                        ),
                    ));
                }
            };

            if p.examples.is_empty() {
                return Err(err(
                    table_span,
                    key("examples"),
                    "at least one example is required (an obviously fake value of the right shape)"
                        .into(),
                ));
            }

            patterns.push(Pattern {
                id: Arc::from(id.as_str()),
                description: p.description.into_inner(),
                keywords,
                regex,
                relaxed,
                max_len: max_len_v,
                entropy,
                secret_group,
                checksum,
                redact_last4,
                reach,
                examples: p.examples.iter().map(|s| s.get_ref().clone()).collect(),
                shaped_examples: p
                    .shaped_examples
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect(),
                counter_examples: p
                    .counter_examples
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect(),
            });
            spans.push((
                p.regex.span(),
                p.examples,
                p.shaped_examples,
                p.counter_examples,
            ));
        }

        // Self-test: each pattern alone, through the real scanner.
        let self_test = if trust == Trust::Check {
            spans.as_slice()
        } else {
            &[]
        };
        for (i, (p, (regex_span, examples, shaped, counters))) in
            patterns.iter().zip(self_test).enumerate()
        {
            let copy = p.compiled_copy().map_err(|(relaxed, e)| {
                let message = if relaxed {
                    format!("cannot compile the relaxed form of the regex: {e}")
                } else {
                    format!("invalid regex: {e}")
                };
                err(regex_span.clone(), format!("pattern[{i}].regex"), message)
            })?;
            let single = Scanner::for_pattern(copy).map_err(|mut e| {
                e.file = file.to_string();
                e
            })?;
            for ex in examples {
                let found = single.scan_plain(ex.get_ref().as_bytes(), Confidence::Verified);
                if !found.iter().any(|f| *f.pattern_id == *p.id) {
                    let shaped = !single
                        .scan_plain(ex.get_ref().as_bytes(), Confidence::Shaped)
                        .is_empty();
                    return Err(err(
                        ex.span(),
                        format!("pattern[{i}].examples"),
                        format!(
                            "example is not found as verified by pattern `{}`{}",
                            p.id,
                            if shaped {
                                " (only as shaped: move it to shaped_examples?)"
                            } else if matches!(p.reach, Reach::Declared { .. }) {
                                " (is `lookbehind` large enough?)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                if let Some(f) = found.iter().find(|f| f.end - f.start > p.max_len as u64) {
                    return Err(err(
                        ex.span(),
                        format!("pattern[{i}].examples"),
                        format!("match of {} bytes exceeds max_len", f.end - f.start),
                    ));
                }
            }
            for ex in shaped {
                let bytes = ex.get_ref().as_bytes();
                let problem = if single.scan_plain(bytes, Confidence::Shaped).is_empty() {
                    Some("is not found")
                } else if !single.scan_plain(bytes, Confidence::Verified).is_empty() {
                    Some("is found as verified (move it to examples?)")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(err(
                        ex.span(),
                        format!("pattern[{i}].shaped_examples"),
                        format!("shaped example {problem} by pattern `{}`", p.id),
                    ));
                }
            }
            for ce in counters {
                let found = single.scan_plain(ce.get_ref().as_bytes(), Confidence::Shaped);
                if let Some(f) = found.first() {
                    return Err(err(
                        ce.span(),
                        format!("pattern[{i}].counter_examples"),
                        format!(
                            "counter-example is found by pattern `{}` (as {}{})",
                            p.id,
                            f.confidence,
                            if f.confidence == Confidence::Shaped {
                                ": move it to shaped_examples?"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        }

        Ok(PatternSet {
            patterns: patterns.into(),
        })
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when the file had no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pattern: Vec<Spanned<RawPattern>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    id: Spanned<String>,
    description: Spanned<String>,
    keywords: Spanned<Vec<Spanned<String>>>,
    regex: Spanned<String>,
    max_len: Option<Spanned<i64>>,
    entropy: Option<Spanned<f64>>,
    secret_group: Option<Spanned<i64>>,
    checksum: Option<Spanned<String>>,
    redact: Option<Spanned<String>>,
    lookbehind: Option<Spanned<i64>>,
    #[serde(default)]
    examples: Vec<Spanned<String>>,
    #[serde(default)]
    shaped_examples: Vec<Spanned<String>>,
    #[serde(default)]
    counter_examples: Vec<Spanned<String>>,
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Exact repetitions at least this long (the random body of a token) are
/// relaxed to accept up to [`RELAX_SHORTER`] fewer repeats.
const RELAX_MIN_REPEAT: u32 = 16;

/// How many characters short of an exact length a shaped finding may be.
const RELAX_SHORTER: u32 = 2;

/// The relaxed form of `regex` ([`relax`]), compiled on first use; `None`
/// when relaxing changes nothing.
fn relaxed_regex(regex: &str) -> Result<Option<LazyRegex>, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(regex)
        .map_err(|e| format!("invalid regex: {e}"))?;
    let relaxed = relax(&hir);
    if relaxed == hir {
        return Ok(None);
    }
    Ok(Some(LazyRegex::deferred(relaxed.to_string())))
}

/// The shapes a strict regex misses on purpose but an exfiltration attempt
/// uses: every look-around assertion (`\b`, `^`, `$`) is dropped, and so is
/// an alternation with one (`(?:^|[^0-9])`, `(?:[^A-Za-z0-9]|$)`: a
/// hand-written boundary), so a secret glued to its neighbours matches; an
/// exact repetition `{n}` with `n >= 16` becomes `{n-2,n}`, so a token a
/// character or two short matches. A longer one matches as its first `n`
/// characters glued to the rest. No match of the result is longer than the
/// longest match of `hir`, so `max_len` still bounds it; the capture groups
/// are kept, so `secret_group` still names the secret.
fn relax(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Alternation(subs) if subs.iter().any(|h| matches!(h.kind(), HirKind::Look(_))) => {
            Hir::empty()
        }
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(relax).collect()),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(relax).collect()),
        HirKind::Capture(c) => Hir::capture(hir::Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(relax(&c.sub)),
        }),
        HirKind::Repetition(r) => {
            let min = match r.max {
                Some(max) if max == r.min && r.min >= RELAX_MIN_REPEAT => r.min - RELAX_SHORTER,
                _ => r.min,
            };
            Hir::repetition(hir::Repetition {
                min,
                max: r.max,
                greedy: r.greedy,
                sub: Box::new(relax(&r.sub)),
            })
        }
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => hir.clone(),
    }
}

/// Words that mark a value as a documentation example or a placeholder
/// (matched ASCII case-insensitively anywhere in the secret). Each is long
/// or specific enough that a random token contains it by chance about once
/// in 10^5 tokens or less.
const DOC_MARKERS: &[&str] = &[
    "example",
    "placeholder",
    "your_",
    "your-",
    "_here",
    "-here",
    "changeme",
    "change_me",
    "replace_me",
    "replaceme",
    "redacted",
    "${",
    "{{",
    "xxxxxx",
    "******",
];

/// Is `secret` a documented example value (`AKIAIOSFODNN7EXAMPLE`,
/// `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`) or a placeholder
/// (`your_api_key_here`, `<TOKEN>`, `xxxxxxxx`, `${GITHUB_TOKEN}`,
/// `{{ token }}`)? Such a value is at most [`Confidence::Shaped`].
pub(crate) fn is_documentation(secret: &[u8]) -> bool {
    let has = |needle: &[u8]| {
        secret
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if DOC_MARKERS.iter().any(|m| has(m.as_bytes())) {
        return true;
    }
    // `<TOKEN>`, `<your token>`: a `<` with a `>` after it.
    secret
        .iter()
        .position(|&b| b == b'<')
        .is_some_and(|i| secret.get(i..).is_some_and(|rest| rest.contains(&b'>')))
}

/// 1-based line and byte column of `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text
        .as_bytes()
        .get(..offset.min(text.len()))
        .unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Shannon entropy of `data` in bits per byte.
pub(crate) fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base62, left-padded with '0' to 6 digits (62^6 > 2^32).
pub(crate) fn base62_6(mut n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// GitHub (and npm) token checksum: the token is `<prefix>_<payload><crc6>`;
/// `<crc6>` is base62(CRC32(payload)). The payload is everything between the
/// last `_` and the final six characters.
pub(crate) fn github_checksum_ok(token: &[u8]) -> bool {
    let Some(us) = token.iter().rposition(|&b| b == b'_') else {
        return false;
    };
    let body = &token[us + 1..];
    if body.len() < 7 {
        return false;
    }
    let (payload, check) = body.split_at(body.len() - 6);
    let mut crc = flate2::Crc::new();
    crc.update(payload);
    base62_6(crc.sum()) == check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Scanner;

    /// Build a token with a valid GitHub checksum (test helper shared by the
    /// rules test).
    pub(crate) fn github_token(prefix: &str, payload: &str) -> String {
        let mut crc = flate2::Crc::new();
        crc.update(payload.as_bytes());
        let sum = base62_6(crc.sum());
        format!("{prefix}{payload}{}", String::from_utf8_lossy(&sum))
    }

    #[test]
    fn github_checksum_roundtrip() {
        let t = github_token("ghp_", "FAKE0000test0000EXAMPLE0000abc");
        assert_eq!(t.len(), 40);
        assert!(github_checksum_ok(t.as_bytes()));
        let mut bad = t.into_bytes();
        bad[10] = if bad[10] == b'x' { b'y' } else { b'x' };
        assert!(!github_checksum_ok(&bad));
    }

    #[test]
    fn the_built_in_file_passes_the_full_check_and_every_deferred_regex_compiles() {
        let checked = PatternSet::parse(BUILTIN_PATTERNS, BUILTIN_NAME)
            .unwrap_or_else(|e| panic!("built-in file fails its own check: {e}"));
        let deferred = PatternSet::builtin().expect("built-in patterns load");
        assert_eq!(checked.len(), deferred.len());
        for (c, d) in checked.iter().zip(deferred.iter()) {
            assert_eq!(c.id, d.id);
            assert_eq!(c.secret_group, d.secret_group);
            let pairs = [
                (Some(&c.regex), Some(&d.regex)),
                (c.relaxed.as_ref(), d.relaxed.as_ref()),
            ];
            for pair in pairs {
                match pair {
                    (Some(c), Some(d)) => {
                        let (c, d) = (c.get().expect("checked compiles"), d.get());
                        let d = d.unwrap_or_else(|| {
                            panic!("{}: deferred regex does not compile", c.as_str())
                        });
                        assert_eq!(c.as_str(), d.as_str());
                        assert_eq!(c.captures_len(), d.captures_len());
                    }
                    (None, None) => {}
                    _ => panic!("{}: relaxed form present in one load only", c.id),
                }
            }
        }
    }

    #[test]
    fn a_regex_that_does_not_compile_at_scan_time_counts_as_a_finding() {
        let set = PatternSet::parse_as(
            "[[pattern]]\nid = \"demo\"\ndescription = \"d\"\nkeywords = [\"dmo_\"]\n\
             regex = 'dmo_[0-9]{10}'\nmax_len = 14\nexamples = [\"dmo_0123456789\"]\n",
            "demo.toml",
            Trust::Checked,
        )
        .expect("loads");
        let mut p = set.iter().next().expect("one pattern").clone();
        // Compiles past the size limit: possible only for a broken build.
        p.regex = LazyRegex::deferred("dmo_(?:[0-9]{1000}){1000}".into());
        p.relaxed = None;
        let scanner = Scanner::for_pattern(p).expect("scanner");
        let found = scanner.scan_plain(b"x dmo_0123456789 y", Confidence::Verified);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&*found[0].pattern_id, "demo");
    }

    #[test]
    fn base62_pads() {
        assert_eq!(&base62_6(0), b"000000");
        assert_eq!(&base62_6(61), b"00000z");
        assert_eq!(&base62_6(62), b"000010");
        assert_eq!(&base62_6(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn entropy_bounds() {
        assert_eq!(shannon_entropy(b"aaaaaaaa"), 0.0);
        assert!((shannon_entropy(b"abcdefgh") - 3.0).abs() < 1e-9);
    }

    /// Deterministic pseudo-random base62 strings (xorshift64).
    fn random_base62(seed: &mut u64, n: usize) -> String {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                char::from(BASE62[(*seed % 62) as usize])
            })
            .collect()
    }

    #[test]
    fn documentation_values_and_placeholders_are_recognised() {
        for doc in [
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "your_api_key_here",
            "YOUR-TOKEN",
            "<TOKEN>",
            "<your token>",
            "xxxxxxxx",
            "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "${GITHUB_TOKEN}",
            "{{ secrets.TOKEN }}",
            "********",
            "changeme",
            "[redacted]",
        ] {
            assert!(is_documentation(doc.as_bytes()), "{doc}");
        }
        // Random tokens (the alphabet of most kinds) are never taken for one.
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let t = format!("ghp_{}", random_base62(&mut seed, 36));
            assert!(!is_documentation(t.as_bytes()), "{t}");
        }
        for real_looking in [
            "AKIAZ3MQ7PLXW4RTN2BD",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "hunter2-s3cret",
        ] {
            assert!(!is_documentation(real_looking.as_bytes()), "{real_looking}");
        }
    }

    const GH: &str = r#"
[[pattern]]
id = "gh"
description = "checksummed token"
keywords = ["ghp_"]
regex = '\bghp_[A-Za-z0-9]{36}\b'
max_len = 40
checksum = "github"
examples = ["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"]

[[pattern]]
id = "named"
description = "a value after its name, boundary written by hand"
keywords = ["tok="]
regex = 'tok=([a-z0-9]{20})(?:[^a-z0-9]|$)'
secret_group = 1
lookbehind = 0
entropy = 3.0
max_len = 25
examples = ["tok=abcdefghij0123456789"]

[[pattern]]
id = "own"
description = "a value that begins with its keyword, boundary written by hand"
keywords = ["kk_"]
regex = '(?:^|[^a-z0-9_])(kk_[a-z0-9]{20})(?:[^a-z0-9]|$)'
secret_group = 1
max_len = 25
examples = ["kk_abcdefghij0123456789"]
shaped_examples = ["xkk_abcdefghij0123456789zz"]
"#;

    fn confidences(sc: &Scanner, hay: &str) -> Vec<(String, Confidence)> {
        sc.scan(hay.as_bytes())
            .into_iter()
            .map(|f| {
                (
                    hay[f.start as usize..f.end as usize].to_string(),
                    f.confidence,
                )
            })
            .collect()
    }

    #[test]
    fn confidence_of_each_shape() {
        use Confidence::{Shaped, Verified};
        let set = PatternSet::parse(GH, "gh.toml").unwrap();
        let sc = Scanner::new(&set, &[]).unwrap();
        let mut seed = 42;
        let good = github_token("ghp_", &random_base62(&mut seed, 30));
        let mut broken = good.clone().into_bytes();
        broken[10] = if broken[10] == b'a' { b'b' } else { b'a' };
        let broken = String::from_utf8(broken).unwrap();
        let doc = github_token("ghp_", "EXAMPLE00000000000000000000000");
        let short = &good[..good.len() - 2];
        let too_short = &good[..good.len() - 3];
        let cases: Vec<(String, Vec<(String, Confidence)>)> = vec![
            (format!("t {good} x"), vec![(good.clone(), Verified)]),
            (format!("t {broken} x"), vec![(broken.clone(), Shaped)]),
            (format!("t {doc} x"), vec![(doc.clone(), Shaped)]),
            // glued on either side or both: the token, shaped
            (format!("e{good} x"), vec![(good.clone(), Shaped)]),
            (format!("t {good}Lorem"), vec![(good.clone(), Shaped)]),
            (format!("e{good}Lorem"), vec![(good.clone(), Shaped)]),
            // a character or two short: shaped; three: nothing
            (format!("t {short} x"), vec![(short.to_string(), Shaped)]),
            (format!("t {too_short} x"), vec![]),
            // a hand-written boundary, glued: shaped when the secret
            // begins with its keyword ...
            (
                "kk_k3j5h7g9f1d3s5a7q9w0".to_string(),
                vec![("kk_k3j5h7g9f1d3s5a7q9w0".to_string(), Verified)],
            ),
            (
                "akk_k3j5h7g9f1d3s5a7q9w0zz".to_string(),
                vec![("kk_k3j5h7g9f1d3s5a7q9w0".to_string(), Shaped)],
            ),
            // ... and when only the name before it says what it is: a
            // longer run under a secret's name is a value with text glued
            // on (outgoing blocks shaped findings; `scan` and incoming
            // redaction do not act on them)
            (
                "tok=k3j5h7g9f1d3s5a7q9w0".to_string(),
                vec![("k3j5h7g9f1d3s5a7q9w0".to_string(), Verified)],
            ),
            (
                "tok=k3j5h7g9f1d3s5a7q9w0zz".to_string(),
                vec![("k3j5h7g9f1d3s5a7q9w0".to_string(), Shaped)],
            ),
            // below the entropy floor: no finding at any confidence
            ("tok=aaaaaaaaaaaaaaaaaaaa".to_string(), vec![]),
            ("tok=aaaaaaaaaaaaaaaaaaaaaa".to_string(), vec![]),
        ];
        for (hay, want) in cases {
            assert_eq!(confidences(&sc, &hay), want, "{hay}");
            let verified: Vec<_> = want.into_iter().filter(|w| w.1 == Verified).collect();
            let got: Vec<_> = sc
                .scan_min(hay.as_bytes(), Verified)
                .into_iter()
                .map(|f| {
                    (
                        hay[f.start as usize..f.end as usize].to_string(),
                        f.confidence,
                    )
                })
                .collect();
            assert_eq!(got, verified, "{hay} (verified only)");
        }
    }

    #[test]
    fn relaxed_regex_drops_boundaries_and_shortens_exact_runs() {
        let compiled = |r: &str| {
            let lazy = relaxed_regex(r).unwrap().unwrap();
            lazy.get().expect("compiles").clone()
        };
        let r = compiled(r"\bghp_[A-Za-z0-9]{36}\b");
        let a = |n: usize| "a".repeat(n);
        assert!(r.is_match(format!("xghp_{}ybbb", a(36)).as_bytes()));
        // Greedy up to the strict length, never longer (max_len holds).
        let glued = format!("ghp_{}", a(40));
        assert_eq!(r.find(glued.as_bytes()).map(|m| m.len()), Some(40));
        assert!(r.is_match(format!("ghp_{}", a(34)).as_bytes()));
        assert!(!r.is_match(format!("ghp_{}", a(33)).as_bytes()));
        let r = compiled(r"(?:^|[^0-9])([0-9]{8,10}:AA[a-z]{3})(?:[^a-z]|$)");
        assert!(!r.as_str().contains('^'), "{}", r.as_str());
        assert!(r.is_match(b"x123456789:AAabcd"));
        // Nothing to relax: no second regex.
        assert!(relaxed_regex(r"tok=[a-z]{4,8}").unwrap().is_none());
    }

    fn parse_err(text: &str) -> PatternError {
        match PatternSet::parse(text, "t.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    const GOOD: &str = r#"
[[pattern]]
id = "demo-token"
description = "demo"
keywords = ["dmo_"]
regex = '\bdmo_[a-z0-9]{10}\b'
max_len = 14
examples = ["x dmo_abcdef1234 y"]
counter_examples = ["dmo_short"]
"#;

    #[test]
    fn good_file_loads() {
        let set = PatternSet::parse(GOOD, "t.toml").unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.iter().next().unwrap().id(), "demo-token");
    }

    /// Table: (name, edit applied to GOOD, expected line, expected key fragment, message fragment).
    #[test]
    fn bad_files_name_line_and_key() {
        let cases: &[(&str, &str, &str, usize, &str, &str)] = &[
            (
                "bad_regex",
                "regex = '\\bdmo_[a-z0-9]{10}\\b'",
                "regex = 'dmo_[a-z'",
                6,
                "regex",
                "invalid regex",
            ),
            (
                // Parses, but compiles past the size limit: found by the
                // load's compile, still at the regex's line.
                "regex_too_big",
                "regex = '\\bdmo_[a-z0-9]{10}\\b'",
                "regex = 'dmo_(?:[a-z0-9]{1000}){1000}'",
                6,
                "regex",
                "invalid regex",
            ),
            (
                "missing_max_len",
                "max_len = 14\n",
                "",
                2,
                "max_len",
                "missing `max_len`",
            ),
            (
                "max_len_too_big",
                "max_len = 14",
                "max_len = 9000",
                7,
                "max_len",
                "out of range",
            ),
            (
                "no_keywords",
                "keywords = [\"dmo_\"]",
                "keywords = []",
                5,
                "keywords",
                "at least one keyword",
            ),
            (
                "short_keyword",
                "keywords = [\"dmo_\"]",
                "keywords = [\"dm\"]",
                5,
                "keywords",
                "ASCII and 3..=64",
            ),
            (
                "bad_id",
                "id = \"demo-token\"",
                "id = \"Demo_Token\"",
                3,
                "id",
                "kebab-case",
            ),
            (
                "example_fails",
                "examples = [\"x dmo_abcdef1234 y\"]",
                "examples = [\"dmo_nope\"]",
                8,
                "examples",
                "not found",
            ),
            (
                "counter_hits",
                "counter_examples = [\"dmo_short\"]",
                "counter_examples = [\"dmo_0123456789\"]",
                9,
                "counter_examples",
                "is found",
            ),
            (
                "unknown_key",
                "max_len = 14",
                "max_len = 14\nmaxlen = 3",
                8,
                "toml",
                "unknown field",
            ),
            (
                "bad_group",
                "max_len = 14",
                "max_len = 14\nsecret_group = 2",
                8,
                "secret_group",
                "capture group",
            ),
            (
                "bad_checksum",
                "max_len = 14",
                "max_len = 14\nchecksum = \"crc\"",
                8,
                "checksum",
                "unknown checksum",
            ),
        ];
        for (name, from, to, line, key, msg) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{name}: edit did not apply");
            let e = parse_err(&text);
            assert_eq!(e.file, "t.toml", "{name}");
            assert_eq!(e.line, *line, "{name}: {e}");
            assert!(e.key.contains(key), "{name}: key {} !~ {key}", e.key);
            assert!(
                e.message.contains(msg),
                "{name}: message {} !~ {msg}",
                e.message
            );
        }
    }

    #[test]
    fn duplicate_id_rejected() {
        let text = format!("{GOOD}\n{GOOD}");
        let e = parse_err(&text);
        assert!(e.message.contains("duplicate id"), "{e}");
        assert_eq!(e.line, 13);
    }
}
