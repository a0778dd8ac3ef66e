//! Decode, then scan: secrets written as base64 / base64url, hex (with or
//! without delimiters), percent-encoding (with `+` for space), JSON string
//! escapes, HTML character references, character codes (decimal byte
//! values), UTF-16, or with invisible characters, fullwidth forms or tag
//! characters in them, nested up to [`MAX_DEPTH`] layers, are found in a stream without
//! buffering it, with the same findings whatever the chunking.
//!
//! # Design
//! Beside the plain keyword/regex search ([`Core`]) of a stream, a
//! [`Decoders`] watches the same bytes with one *layer* per codec. A layer
//! finds *segments* (the stretches its codec could have produced) with a
//! cheap byte-class scan, decodes each segment as it streams, and feeds the
//! decoded bytes to a [`Sub`]: a nested plain scan of the same [`Scanner`]
//! plus its own [`Decoders`] one level deeper. A finding in a segment is
//! mapped back to the *encoded* bytes that produced it (each decoded byte
//! remembers the encoded span of its unit: a base64 quad, a `%XX`, a `\uXXXX`,
//! a `0x41, ` token), named after its decoding chain (`base64>percent`), and
//! merged with the plain findings in stream order.
//!
//! Segments (each rule depends only on the bytes, never on chunk edges):
//! - **base64**: a run of `A-Za-z0-9+/-_` (both alphabets) of at least
//!   [`MIN_B64`] characters that contains a character outside
//!   `0-9a-fA-F-` (so UUIDs and hex digests are not decoded as base64), or
//!   at least [`LONG_B64`] characters in any case. A single line break
//!   inside a run is skipped (MIME and PEM wrap lines); a blank line, `=`
//!   padding or any other byte ends the run. The run is decoded in four
//!   phases, cut into quads from its first, second, third and fourth
//!   character: one to three alphabet characters glued before an encoded
//!   secret (`xQUtJQ...`, or a line ending in `89m` before it) shift its
//!   quads, and one phase lines them up again.
//! - **hex**: consecutive byte tokens `HH`, `\xHH` or `0xHH`, each
//!   optionally followed by one delimiter (`-`, `:`, `,`, space, or `, `),
//!   at least [`MIN_HEX`] bytes long (longer than a UUID or an MD5). Three
//!   instances cut runs into pairs ([`Align`]): from the first digit; runs of
//!   plain digits from their second; and from the second digit, then
//!   across delimiters. Whatever digits are glued before an encoded secret
//!   (`a414b...`, `200 a414b...`, `9c04b-49-...`), one lines its pairs up.
//! - **percent**: a token (bytes up to ASCII whitespace, a control byte, a
//!   quote, `<`, `>` or a backtick) that contains a `%XX` escape; `+` decodes
//!   to a space. The segment starts at the token's start, or
//!   [`LITERAL_BEFORE`] bytes before its first escape if the token is
//!   longer, so that literal characters written before the first escape
//!   (`AKIA%31...`) are part of the decoded text.
//! - **json**: likewise, a run of bytes up to an unescaped `"` or a control
//!   byte that contains a JSON escape (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`,
//!   `\r`, `\t`, `\uXXXX`; a surrogate decodes to U+FFFD).
//! - **html**: likewise, a token that contains a numeric character
//!   reference (`&#65;`, `&#x41;`, the `;` optional).
//! - **charcodes**: at least [`MIN_CODES`] numbers of one to three digits
//!   whose values are bytes, each followed by separators (`,`, `;`, space,
//!   tab, a line break; not two: a blank line ends the run) that with the
//!   number take at most 8 bytes:
//!   `[65, 75, 73, ...]`, `String.fromCharCode(65,75,...)`, a pretty-printed
//!   JSON array. Digits glued before the list only change its first number,
//!   which is read from its last three digits (or two, when those are over
//!   255).
//! - **utf16**: at least [`MIN_WIDE`] code units of a zero byte and an
//!   ASCII character (printable, tab or a line break), in either byte
//!   order (one instance each). A little-endian run starts at a character
//!   right before a zero byte, so that instance keeps the last byte of an
//!   input when it could start one (not a line break).
//! - **unicode**: likewise, a token that contains an invisible character
//!   (zero-width space, joiner and non-joiner, soft hyphen, word joiner,
//!   bidirectional controls, variation selectors, byte order mark, Hangul
//!   fillers), a fullwidth form of an ASCII character (`ＡＫＩＡ`), a
//!   tag character (U+E0020..U+E007E, invisible, each standing for an
//!   ASCII character: "ASCII smuggling") or a letter or digit in another
//!   style (mathematical `𝐀`, circled `Ⓐ`, squared `🅰`, `①`). Unlike a
//!   percent token, its segment ends at a delimiter only
//!   [`LITERAL_BEFORE`] bytes past the last such character, so
//!   `key = value` or a PEM block with one after every byte is one
//!   segment; it ends at once at a byte no text holds (a control
//!   character, a byte UTF-8 never uses), so binary data is not read as
//!   text. Invisible characters decode to
//!   nothing, the others to their ASCII character ([`uni_char`]): what a
//!   receiver gets back by deleting the invisible ones or by NFKC. Only
//!   bytes that are not ASCII can start such a character, so ASCII text
//!   is passed over by one word-wide test.
//! - **gzip**, **zlib** and **zip**: a gzip member, a zlib stream or a
//!   zip archive's deflated entry, known by its header, inflated
//!   ([`Inflate`]), except where an incoming stream is being redacted
//!   (compressed bytes cannot be rewritten; an outgoing redacting stream
//!   reads them and refuses a secret found inside). At the probing depth a
//!   header is reported as [`TOO_DEEP`] (it would be a fourth decoding).
//! - **xz**, **bzip2**, **zstd**, **7z**, **rar**, and a zip entry that is
//!   encrypted or compressed by another method: known by their headers
//!   (checked past the magic number), not decompressed, and reported as
//!   the pseudo finding [`UNREADABLE`] at any depth: outgoing they are
//!   refused.
//!
//! Multipart bodies need no codec of their own: a part's content is bytes of
//! the stream like any other, a base64 `Content-Transfer-Encoding` part is a
//! base64 run (its CRLF-wrapped lines are one run, the blank line after the
//! part headers is not part of it), and the boundary lines between parts
//! are scanned too. `application/x-www-form-urlencoded` bodies and query
//! strings are percent segments.
//!
//! # Exact streaming
//! A layer reports a *frontier*: the earliest encoded offset where a finding
//! not yet reported could start. With no segment open it is the start of
//! the current candidate (a base64 run shorter than its minimum, a hex run
//! shorter than its minimum, the last [`LITERAL_BEFORE`] bytes of an
//! unfinished token for percent/json); with a segment open it is the
//! encoded start of the first decoded byte the nested scan has not judged
//! (its own frontier mapped back), or of the undecoded remainder (a partial
//! quad, a `%4` waiting for its last digit). The stream's frontier is the
//! minimum of the plain one and every layer's, so the outer stream never
//! releases an encoded byte whose decoded bytes are still held back by a
//! nested scan, and it keeps every byte a layer may still need. Findings
//! are released in `(start, longest first, pattern, chain)` order once the
//! frontier passes their start, so streamed and whole-buffer scans report
//! the same list.
//!
//! Short segments are decoded into a small buffer first (up to [`SHORT`]
//! decoded bytes): if the segment ends there and holds neither a keyword,
//! nor a held literal, nor anything another layer could decode, it cannot
//! hold a finding and no nested scan runs. This keeps UUID-like and word-like
//! runs cheap; longer segments stream through the nested scan.
//!
//! # Bounds
//! - **Size**: every codec shrinks (base64 4→3, hex ≥ 2→1, `%XX` 3→1,
//!   a unicode character ≥ 2→0 or 1, JSON
//!   escapes ≥ 2→1 except `\uXXXX` 6→3, character codes ≥ 2→1, references
//!   ≥ 3→1 and at most 10→4, UTF-16 2→1); a decoded stream is never larger
//!   than its encoded input, except an inflated one: a member that decodes
//!   to more than [`INFLATE_RATIO`] times its size (past [`INFLATE_FREE`])
//!   is reported as [`TOO_DEEP`] and decoded no further. The phases multiply it by a constant: a base64
//!   run's four phases decode to 3× its size, a hex run's three instances
//!   to at most 1.5×. (Noise decoded in the wrong phase rarely holds
//!   another run, so a deeper layer seldom opens a segment in it.)
//! - **Depth**: streams are decoded to depth [`MAX_DEPTH`] (3). At depth 3 a
//!   segment that would need a fourth decoding is reported as a pseudo
//!   finding [`TOO_DEEP`] with its chain: outgoing (block mode) refuses the
//!   request with that reason rather than pass it unscanned; redact and log
//!   modes ignore it.
//! - **Hold-back on benign input**: at most the plain scanner's tail, a
//!   base64 candidate (< [`LONG_B64`] characters, plus single line breaks),
//!   a short segment (< [`SHORT`] decoded bytes: at most 8 encoded bytes
//!   each, a character code with its separators), or [`LITERAL_BEFORE`] bytes of an unfinished percent, JSON, HTML or unicode token:
//!   under 1 KiB. A line break ends every candidate but a base64 run.
//!   Compressed data adds the piece being inflated and the one before it
//!   (128 bytes) per open member; a header's fields (a gzip extra field,
//!   name or comment, a zip entry's name) are stepped over as they stream,
//!   not held, whatever their length.
//! - **Hold-back in general**: a nested scan holds back at most
//!   [`Scanner::max_hold_back`] decoded bytes (below 40 KiB; in practice a
//!   pending keyword's regex window, at most `2 * max_len` plus the keyword),
//!   which map back to at most 10 encoded bytes each per layer
//!   (`&#0000065;`, the widest unit): at most `40 KiB * 10^3` (under
//!   40 MiB) for a crafted stream nesting the widest codecs three deep
//!   around a keyword, 11 KiB for a PEM keyword in one base64 layer. An
//!   inflated byte maps back to its piece and the one before (128 bytes),
//!   and a member is kept from its header only until the header's fixed
//!   part (at most 30 bytes) is read. A crafted member that decodes a
//!   byte now and then (a one-byte stored block, then thousands of empty
//!   ones) would pin the stream at the span of a decoded byte the nested
//!   scan still holds, however far behind: once that is more than
//!   [`PINNED_MAX`] (64 KiB) behind the piece being read, checked every
//!   4 KiB, the member is read no further and reported as [`UNREADABLE`]
//!   (refused outgoing). Per open
//!   segment the state keeps the encoded span of each held decoded byte
//!   (16 bytes each).
//! - **Speed**: base64 and hex share one pass per input that finds, 64
//!   bytes at a time and without branches, where a window of run bytes
//!   long enough to qualify starts ([`super::runs`]); the idle scans jump
//!   from window to window, and count a run's characters eight at a time.
//!   A short base64 run is first judged from its characters alone
//!   ([`quick_noise`]: a gate of three characters for what would need a
//!   nested scan, and each phase's count of base64 characters from a
//!   table of pairs), and decoded in its four phases only when that
//!   cannot clear it.
//!   Hex in its fast mode only starts the exact parser on a stretch
//!   holding `2 * MIN_HEX` digits with at most 4 other run bytes between
//!   them. Percent, JSON and HTML look for `%`, `\\` and `&` with `memchr`.
//!   Character codes use the hex layer's windows, then probe one byte in
//!   34 for a window of digits and separators long enough to hold a run.
//!   UTF-16 looks for zero bytes with `memchr`, compressed data for a
//!   byte that is rare in text at a fixed offset in each header (gzip's
//!   `8b`, zlib's second byte, zip's `03`, ...) in one Teddy pass.
//! - **State**: one pooled nested scan per base64 phase, hex instance,
//!   percent, JSON, HTML, character-code and UTF-16 instance, and one per
//!   open compressed member ([`MAX_MEMBERS`], 4), and depth, created on
//!   first use (17 + 17² + 17³ at most, for a stream crafted to nest
//!   segments in every phase); inflaters (a 32 KiB window each, up to
//!   [`MAX_MEMBERS`] and one spare per scan) only above the probing depth,
//!   in at most 1 + 17 + 289 scans.

use std::{collections::VecDeque, fmt};

use aho_corasick::packed;

use super::{
    runs::Runs,
    scanner::{Confidence, Core, Prefixes, Raw, Scanner, View},
};

/// Streams are decoded this many layers deep.
pub const MAX_DEPTH: u8 = 3;
/// The pseudo pattern id of a stream encoded more deeply than
/// [`MAX_DEPTH`] (only reported in block mode, where it refuses).
pub const TOO_DEEP: &str = "too-deeply-encoded";
/// The kind of a [`TOO_DEEP`] pseudo finding.
pub(crate) const TOO_DEEP_KIND: u32 = u32::MAX;
/// The pseudo pattern of compressed data airlock cannot read: an xz,
/// bzip2, zstd, 7z or rar header, or a zip entry that is encrypted or
/// compressed other than by deflate. Outgoing (block mode) it is refused,
/// as [`TOO_DEEP`] is, unless a rule lists it in `scan_skip`.
pub const UNREADABLE: &str = "unreadable-compressed";
/// The kind of an [`UNREADABLE`] pseudo finding.
pub(crate) const UNREADABLE_KIND: u32 = u32::MAX - 1;

/// Is `kind` one of the pseudo patterns ([`TOO_DEEP`], [`UNREADABLE`]):
/// not a secret seen, but data that cannot be judged?
pub(crate) fn is_pseudo(kind: u32) -> bool {
    kind >= UNREADABLE_KIND
}
/// Shortest base64 run decoded (12 bytes).
pub const MIN_B64: u32 = 16;
/// A base64 run this long is decoded even if it looks like hex.
pub const LONG_B64: u32 = 128;
/// Fewest bytes a hex run must decode to.
pub const MIN_HEX: u32 = 17;
/// Literal bytes of a percent/json token kept before its first escape.
pub const LITERAL_BEFORE: u64 = 256;
/// Decoded bytes buffered before a segment is handed to a nested scan.
pub const SHORT: usize = 128;

/// The ways to cut a base64 run into quads (see [`Base64::segs`]).
pub(super) const PHASES: usize = 4;

/// One decoding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Base64 = 1,
    Hex = 2,
    Percent = 3,
    Json = 4,
    CharCodes = 5,
    Html = 6,
    Utf16 = 7,
    Gzip = 8,
    Zlib = 9,
    Zip = 10,
    // Known by their headers, not read: see [`UNREADABLE`].
    Xz = 11,
    Bzip2 = 12,
    Zstd = 13,
    SevenZip = 14,
    Rar = 15,
    /// Invisible characters dropped, fullwidth forms and tag characters
    /// read as the ASCII they stand for (see [`uni_at`]).
    Unicode = 16,
}

impl Codec {
    fn name(code: u32) -> &'static str {
        match code {
            1 => "base64",
            2 => "hex",
            3 => "percent",
            4 => "json",
            5 => "charcodes",
            6 => "html",
            7 => "utf16",
            8 => "gzip",
            9 => "zlib",
            10 => "zip",
            11 => "xz",
            12 => "bzip2",
            13 => "zstd",
            14 => "7z",
            15 => "rar",
            16 => "unicode",
            _ => "?",
        }
    }
}

/// The decodings a finding was found under, outermost first
/// (`base64>percent`: the bytes were base64, decoding gave percent-encoded
/// text). Empty for a finding in the plain bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain(u32);

impl Chain {
    /// No decoding.
    pub const PLAIN: Chain = Chain(0);

    /// True for a finding in the plain bytes.
    pub fn is_plain(self) -> bool {
        self.0 == 0
    }

    /// Number of decodings.
    pub fn len(self) -> usize {
        self.codes().count()
    }

    /// True for a finding in the plain bytes.
    pub fn is_empty(self) -> bool {
        self.is_plain()
    }

    fn codes(self) -> impl Iterator<Item = u32> {
        let mut v = self.0;
        std::iter::from_fn(move || {
            let c = v & 31;
            v >>= 5;
            (c != 0).then_some(c)
        })
    }

    /// Did a decoding of compressed data (gzip, zlib, zip, or one that is
    /// not read) produce this?
    pub(crate) fn through_compressed(self) -> bool {
        self.codes()
            .any(|c| (Codec::Gzip as u32..=Codec::Rar as u32).contains(&c))
    }

    /// `outer` applied before `self`.
    fn under(self, outer: Codec) -> Chain {
        // Five bits a code: the deepest chain (three decodings and a
        // fourth probed, see [`TOO_DEEP`]) takes twenty.
        Chain((self.0 << 5) | outer as u32)
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.codes().enumerate() {
            if i > 0 {
                f.write_str(">")?;
            }
            f.write_str(Codec::name(c))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chain({self})")
    }
}

// ---------------------------------------------------------------- classes

pub(super) const B64: u8 = 1;
pub(super) const NONHEX: u8 = 2;
pub(super) const HEXD: u8 = 4;
/// Bytes a hex run may contain besides digits: delimiters and prefixes.
pub(super) const HEXC: u8 = 8;

/// A byte's classes: the one definition [`CLASS`] and the class pass's
/// tables (`runs.rs`) are built from.
pub(super) const fn class_of(b: u8) -> u8 {
    let alpha = b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_';
    let hex = b.is_ascii_hexdigit();
    let mut c = 0;
    if alpha {
        c |= B64;
        if !hex && b != b'-' {
            c |= NONHEX;
        }
    }
    if hex {
        c |= HEXD;
    }
    if matches!(b, b'-' | b':' | b',' | b' ' | b'=' | b'\\' | b'x' | b'X') {
        c |= HEXC;
    }
    c
}

pub(super) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = class_of(i as u8);
        i += 1;
    }
    t
};

/// A base64 character's six bits (either alphabet; a byte outside both
/// reads as 63, and callers only pass characters of the run).
const fn b64_bits(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' | b'-' => 62,
        _ => 63,
    }
}

/// [`b64_bits`] for every byte: a load instead of three range tests,
/// whose branches a run of random characters mispredicts.
static B64_VAL: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = b64_bits(i as u8);
        i += 1;
    }
    t
};

#[inline(always)]
fn b64_val(b: u8) -> u32 {
    u32::from(B64_VAL[usize::from(b)])
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn pct_delim(b: u8) -> bool {
    b <= b' ' || b == 0x7f || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// A byte no text holds: a control character other than a tab or a line
/// break, DEL, or a byte UTF-8 never uses. The unicode layer reads text,
/// so its segment ends at one at once (and no token reaches back across
/// one): random bytes hold a look-alike letter beside an ASCII one every
/// few KiB, and a segment that read on through them added a decoding to
/// binary data (a 512 KiB body of random hex digits was refused as too
/// deeply encoded, `gzip>hex>unicode>gzip`).
fn binary_byte(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        || b == 0x7f
        || matches!(b, 0xc0 | 0xc1 | 0xf5..)
}

fn json_delim(b: u8) -> bool {
    b < 0x20 || b == b'"'
}

/// What the unicode layer makes of the bytes at the start of `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uni {
    /// Not a character it reads (ASCII, or any other character).
    Not,
    /// The input ends inside what may still become one.
    Cut,
    /// An invisible character, `n` bytes long: dropped.
    Drop(usize),
    /// A character standing for ASCII byte `c`, `n` bytes long.
    Ascii(u8, usize),
}

/// The first bytes of the UTF-8 characters [`uni_char`] reads: a byte no
/// ASCII text has, and only these can start a unit of the unicode layer.
/// Derived from [`uni_pair`], so the two cannot disagree.
pub(super) const fn uni_lead(b: u8) -> bool {
    UNI_LEAD[b as usize]
}

/// [`uni_lead`]'s table: the bytes some continuation byte pairs with.
const UNI_LEAD: [bool; 256] = {
    let mut t = [false; 256];
    let mut a = 0xc0;
    while a < 256 {
        let mut b = 0x80;
        while b < 0xc0 {
            if uni_pair(a as u8, b as u8) {
                t[a] = true;
            }
            b += 1;
        }
        a += 1;
    }
    t
};

/// Can `b` follow `lead` in a character [`uni_char`] reads? (The second
/// byte of each: the gates that send decoded bytes to a nested scan test
/// this pair, not the whole character.)
pub(super) const fn uni_pair(lead: u8, b: u8) -> bool {
    matches!(
        (lead, b),
        (0xc2, 0xad)
            | (0xcd, 0x8f)
            // Greek and Cyrillic letters that look Latin (see `homoglyph`).
            | (
                0xce,
                0x91 | 0x92 | 0x95 | 0x96 | 0x97 | 0x99 | 0x9a | 0x9c | 0x9d | 0x9f | 0xa1
                    | 0xa4 | 0xa5 | 0xa7 | 0xbf
            )
            | (0xcf, 0x81 | 0x85)
            | (
                0xd0,
                0x85 | 0x86 | 0x88 | 0x90 | 0x92 | 0x95 | 0x9a | 0x9c | 0x9d | 0x9e | 0xa0
                    | 0xa1 | 0xa2 | 0xa5 | 0xb0 | 0xb5 | 0xbe
            )
            | (0xd1, 0x80 | 0x81 | 0x83 | 0x85 | 0x95 | 0x96 | 0x98)
            | (0xd8, 0x9c)
            | (0xe1, 0x85 | 0x9e | 0xa0)
            | (0xe2, 0x80 | 0x81 | 0x84 | 0x91 | 0x92 | 0x93 | 0x9d | 0x9e)
            | (0xe3, 0x85)
            | (0xef, 0xb8 | 0xbb | 0xbc | 0xbd | 0xbe)
            | (0xf0, 0x9d | 0x9f)
            | (0xf3, 0xa0)
    )
}

/// The characters an agent can put into a secret that a reader (or a
/// receiver's normalisation) takes out again: `None` for any other.
/// `Some(None)`: invisible, dropped (soft hyphen, zero-width space,
/// joiners and marks, bidirectional controls, word joiner and invisible
/// operators, fillers, variation selectors, the byte order mark, tag
/// begin and cancel). `Some(Some(c))`: a character that stands for ASCII
/// `c`: a fullwidth form (`Ａ`, what NFKC folds), a tag character
/// (U+E0020..U+E007E, which renders as nothing and spells ASCII: "ASCII
/// smuggling"), a mathematical letter or digit (`𝐀`, `𝟏`, in each of
/// their styles, and the letterlike symbols that fill their gaps: `ℎ`,
/// `ℬ`, the Kelvin sign), or a letter or digit in a circle, a square or
/// a flag's regional indicator (`Ⓐ`, `ⓐ`, `①`, `❶`, `🅐`, `🄰`, `🅰`, `🇦`),
/// or a Greek or Cyrillic letter drawn like a Latin one (`Α`, `К`, `і`).
pub(super) fn uni_char(cp: u32) -> Option<Option<u8>> {
    // The character `cp - first` places after `to` (each range below is
    // short enough for the sum to stay in its letters or digits).
    let from = |first: u32, to: u8| Some(Some(to + (cp - first) as u8));
    match cp {
        0xad | 0x34f | 0x61c | 0x115f | 0x1160 | 0x17b4 | 0x17b5 | 0x180e => Some(None),
        0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x2069 => Some(None),
        0x3164 | 0xfe00..=0xfe0f | 0xfeff | 0xffa0 => Some(None),
        0xe0001 | 0xe007f | 0xe0100..=0xe01ef => Some(None),
        // The ranges make both subtractions fit a byte.
        0xff01..=0xff5e => Some(Some((cp - 0xfee0) as u8)),
        0xe0020..=0xe007e => Some(Some((cp - 0xe0000) as u8)),
        // Thirteen alphabets of 52 (bold, italic, script, fraktur,
        // double-struck, sans-serif, monospace...), then five of digits.
        0x1d400..=0x1d6a3 => match (cp - 0x1d400) % 52 {
            i @ 0..26 => Some(Some(b'A' + i as u8)),
            i => Some(Some(b'a' + (i - 26) as u8)),
        },
        0x1d7ce..=0x1d7ff => Some(Some(b'0' + ((cp - 0x1d7ce) % 10) as u8)),
        0x2100..=0x213f => letterlike(cp).map(Some),
        0x2460..=0x2468 => from(0x2460, b'1'),
        0x24b6..=0x24cf => from(0x24b6, b'A'),
        0x24d0..=0x24e9 => from(0x24d0, b'a'),
        0x24ea | 0x24ff => Some(Some(b'0')),
        0x24f5..=0x24fd => from(0x24f5, b'1'),
        0x2776..=0x277e => from(0x2776, b'1'),
        0x2780..=0x2788 => from(0x2780, b'1'),
        0x278a..=0x2792 => from(0x278a, b'1'),
        0x1f130..=0x1f149 => from(0x1f130, b'A'),
        0x1f150..=0x1f169 => from(0x1f150, b'A'),
        0x1f170..=0x1f189 => from(0x1f170, b'A'),
        0x1f1e6..=0x1f1ff => from(0x1f1e6, b'A'),
        0x391..=0x3c5 | 0x405..=0x458 => homoglyph(cp).map(Some),
        _ => None,
    }
}

/// The lead bytes of the Greek and Cyrillic look-alikes ([`homoglyph`]):
/// no other character the unicode layer reads starts with one.
const fn look_alike_lead(b: u8) -> bool {
    matches!(b, 0xce..=0xd1)
}

/// Does the look-alike letter at `hay[x..x + n]` start a segment? Only
/// where it touches an ASCII letter or digit (before or after it) or is
/// followed by another character the layer reads that is not a
/// look-alike (an invisible one, a fullwidth one). A key written in
/// look-alikes keeps its characters that have none (every digit; `D`,
/// `F`, `G` and others in Cyrillic), so one of its look-alikes touches
/// one, and the segment then reads the whole token. Russian or Greek
/// text, where look-alikes sit among letters of their own script, opens
/// few: measured, 20 MiB of Russian text took 0.58 s to scan with every
/// look-alike an escape, 0.39 s so (0.08 s before look-alikes were read).
/// `None`: the byte after it is still to come.
fn touches_latin(near: Near<'_>, x: usize, n: usize) -> Option<bool> {
    let before = match x.checked_sub(1) {
        Some(i) => near.hay.get(i),
        None => near.pre.last(),
    };
    if before.is_some_and(u8::is_ascii_alphanumeric) {
        return Some(true);
    }
    let after = near.hay.get(x + n..)?;
    match after.first() {
        None => None,
        Some(b) if b.is_ascii_alphanumeric() => Some(true),
        Some(&b) if look_alike_lead(b) => Some(false),
        Some(_) => match uni_at(after) {
            Uni::Cut => None,
            Uni::Not => Some(false),
            Uni::Drop(_) | Uni::Ascii(..) => Some(true),
        },
    }
}

/// The Greek and Cyrillic letters a reader takes for a Latin one: the
/// same shape in common fonts (from Unicode's confusables for Latin
/// letters). `АКІА` in Cyrillic is `AKIA` to a person, to a model and to
/// a receiver that maps it back. Letters of other shapes (`Б`, `λ`) stay
/// what they are, so Greek or Cyrillic text reads as itself with some
/// letters swapped: no pattern matches ordinary words, and a key written
/// in look-alikes becomes itself.
fn homoglyph(cp: u32) -> Option<u8> {
    Some(match cp {
        // Greek capitals, then omicron, rho and upsilon.
        0x391 => b'A',
        0x392 => b'B',
        0x395 => b'E',
        0x396 => b'Z',
        0x397 => b'H',
        0x399 => b'I',
        0x39a => b'K',
        0x39c => b'M',
        0x39d => b'N',
        0x39f => b'O',
        0x3a1 => b'P',
        0x3a4 => b'T',
        0x3a5 => b'Y',
        0x3a7 => b'X',
        0x3bf => b'o',
        0x3c1 => b'p',
        0x3c5 => b'u',
        // Cyrillic: Ѕ І Ј, capitals, small letters, ѕ і ј.
        0x405 => b'S',
        0x406 => b'I',
        0x408 => b'J',
        0x410 => b'A',
        0x412 => b'B',
        0x415 => b'E',
        0x41a => b'K',
        0x41c => b'M',
        0x41d => b'H',
        0x41e => b'O',
        0x420 => b'P',
        0x421 => b'C',
        0x422 => b'T',
        0x425 => b'X',
        0x430 => b'a',
        0x435 => b'e',
        0x43e => b'o',
        0x440 => b'p',
        0x441 => b'c',
        0x443 => b'y',
        0x445 => b'x',
        0x455 => b's',
        0x456 => b'i',
        0x458 => b'j',
        _ => return None,
    })
}

/// The letterlike symbols (U+2100..U+213F) that are a Latin letter in
/// another style: the mathematical alphabets leave a gap for each (script
/// `B` is `ℬ`, italic `h` is `ℎ`), and the Kelvin sign is a `K`.
fn letterlike(cp: u32) -> Option<u8> {
    Some(match cp {
        0x2102 | 0x212d => b'C',
        0x210a => b'g',
        0x210b..=0x210d => b'H',
        0x210e => b'h',
        0x2110 | 0x2111 => b'I',
        0x2112 => b'L',
        0x2113 => b'l',
        0x2115 => b'N',
        0x2119 => b'P',
        0x211a => b'Q',
        0x211b..=0x211d => b'R',
        0x2124 | 0x2128 => b'Z',
        0x212a => b'K',
        0x212c => b'B',
        0x212f => b'e',
        0x2130 => b'E',
        0x2131 => b'F',
        0x2133 => b'M',
        0x2134 => b'o',
        0x2139 => b'i',
        _ => return None,
    })
}

/// Read the bytes at the start of `h` as the unicode layer does.
pub(super) fn uni_at(h: &[u8]) -> Uni {
    let Some(&lead) = h.first() else {
        return Uni::Not;
    };
    if !uni_lead(lead) {
        return Uni::Not;
    }
    let n = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    let mut cp = u32::from(lead) & (0x7f >> n);
    for i in 1..n {
        match h.get(i) {
            None => {
                return if i == 1 || uni_pair(lead, h[1]) {
                    Uni::Cut
                } else {
                    Uni::Not
                };
            }
            Some(&b) if b & 0xc0 == 0x80 => cp = cp << 6 | u32::from(b & 0x3f),
            Some(_) => return Uni::Not,
        }
    }
    match uni_char(cp) {
        Some(None) => Uni::Drop(n),
        Some(Some(c)) => Uni::Ascii(c, n),
        None => Uni::Not,
    }
}

/// The first byte of `h` a character the unicode layer reads may start
/// at: a lead byte followed by one of its second bytes ([`uni_pair`]),
/// or a lead byte that ends `h` (its second byte still to come). Text that
/// is all ASCII is passed over by the standard library's word-wide test;
/// other text (decoded noise is half bytes past 0x7f, and a run of `z`
/// decodes to an `f3` every third byte) by Teddy over the 64 pairs, so a
/// lead byte alone stops nothing.
pub(super) fn next_uni_lead(h: &[u8]) -> Option<usize> {
    if h.is_ascii() {
        return None;
    }
    let pair = match &*UNI_PAIRS {
        Some(teddy) => teddy.find(h).map(|m| m.start()),
        None => h
            .windows(2)
            .position(|w| uni_lead(w[0]) && uni_pair(w[0], w[1])),
    };
    let last = h.len() - 1;
    match pair {
        Some(x) => Some(x),
        None => h.last().is_some_and(|&b| uni_lead(b)).then_some(last),
    }
}

/// Every (lead, second byte) pair [`uni_pair`] accepts.
fn uni_pairs() -> Vec<[u8; 2]> {
    (0xc0..=0xffu8)
        .flat_map(|a| (0x80..=0xbfu8).map(move |b| [a, b]))
        .filter(|&[a, b]| uni_pair(a, b))
        .collect()
}

#[cfg(test)]
mod uni_gate_tests {
    /// Every pair fits one Teddy search (it takes 64 at most; past that
    /// the gate would read non-ASCII text two bytes at a time).
    #[test]
    fn the_pairs_fit_one_teddy_search() {
        assert_eq!(super::uni_pairs().len(), 64);
        assert!(super::UNI_PAIRS.is_some());
    }

    /// `look_alike_lead` is written as a byte range: it must name the
    /// lead bytes of exactly the look-alikes among the characters the
    /// layer reads (another character behind one would be gated as a
    /// look-alike; a look-alike behind another lead would not be).
    #[test]
    fn the_look_alike_leads_are_the_look_alikes() {
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let cp = u32::from(c);
            if super::uni_char(cp).is_none() {
                continue;
            }
            let mut buf = [0u8; 4];
            let lead = c.encode_utf8(&mut buf).as_bytes()[0];
            assert_eq!(
                super::look_alike_lead(lead),
                super::homoglyph(cp).is_some(),
                "{cp:x}"
            );
        }
    }
}

/// [`uni_pairs`] as one Teddy search (`None` where Teddy is unavailable).
static UNI_PAIRS: std::sync::LazyLock<Option<packed::Searcher>> = std::sync::LazyLock::new(|| {
    let mut b = packed::Config::new().builder();
    for p in uni_pairs() {
        b.add(p);
    }
    b.build()
});

// ---------------------------------------------------------------- segments

/// A segment being decoded: its decoded bytes, the encoded span of each,
/// and the nested scan once it is long enough.
struct Seg {
    codec: Codec,
    start: u64,
    /// Encoded span of decoded bytes `[spans_base, produced)`.
    spans: VecDeque<(u64, u64)>,
    spans_base: u64,
    produced: u64,
    /// Decoded bytes not yet handed to the nested scan.
    dec: Vec<u8>,
    /// The nested scan has started (the segment passed [`SHORT`]).
    started: bool,
    /// At [`MAX_DEPTH`]: only probed for keywords (a hit is [`TOO_DEEP`]).
    discard: bool,
    /// Probed and found too deep.
    flagged: bool,
}

impl Seg {
    fn new(codec: Codec, start: u64, discard: bool) -> Seg {
        Seg {
            codec,
            start,
            spans: VecDeque::new(),
            spans_base: 0,
            produced: 0,
            dec: Vec::new(),
            started: false,
            discard,
            flagged: false,
        }
    }

    #[inline]
    fn put(&mut self, b: u8, span: (u64, u64)) {
        if self.flagged {
            return;
        }
        self.dec.push(b);
        self.spans.push_back(span);
        self.produced += 1;
        if !self.started && !self.discard && self.dec.len() >= SHORT {
            self.started = true;
        }
    }

    /// [`Seg::put`] for bytes that share one span (what one inflated
    /// piece decodes to).
    fn put_all(&mut self, bytes: &[u8], span: (u64, u64)) {
        if self.flagged {
            return;
        }
        self.dec.extend_from_slice(bytes);
        self.spans.extend(std::iter::repeat_n(span, bytes.len()));
        self.produced += bytes.len() as u64;
        if !self.started && !self.discard && self.dec.len() >= SHORT {
            self.started = true;
        }
    }

    /// At [`MAX_DEPTH`]: does what this segment decodes to so far hold a
    /// keyword or held literal, or the header of compressed data (then it
    /// needed a fourth decoding, and is reported as [`TOO_DEEP`] where that
    /// keyword ends or that header starts)? Keeps only the tail a keyword
    /// or header could still continue.
    fn probe(&mut self, sc: &Scanner, out: &mut Vec<Raw>) {
        if self.flagged {
            return;
        }
        // A keyword's last byte, or the first byte of compressed data's
        // header: either needs a decoding past the last.
        let literal = sc.first_literal_end(&self.dec).map(|e| e.saturating_sub(1));
        let header = first_probed_header(&self.dec);
        let first = match (literal, header) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(i) = first {
            let at = self.spans.get(i).map_or(self.start, |s| s.0);
            out.push(Raw {
                start: at,
                end: at + 1,
                kind: TOO_DEEP_KIND,
                chain: Chain::PLAIN.under(self.codec),
                // Not a secret seen, but a body that cannot be judged.
                confidence: Confidence::Verified,
            });
            self.flagged = true;
            self.dec = Vec::new();
            self.spans = VecDeque::new();
            return;
        }
        let keep = sc.longest_literal().max(HEADER_MAX).saturating_sub(1);
        let drop = self.dec.len().saturating_sub(keep);
        self.dec.drain(..drop);
        self.spans.drain(..drop.min(self.spans.len()));
        self.spans_base += drop as u64;
    }

    fn map(&self, r: Raw) -> Raw {
        let at = |d: u64| {
            d.checked_sub(self.spans_base)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| self.spans.get(i))
                .copied()
        };
        let start = at(r.start).map_or(self.start, |s| s.0);
        let end = at(r.end.saturating_sub(1).max(r.start)).map_or(start + 1, |s| s.1);
        Raw {
            start,
            end: end.max(start + 1),
            kind: r.kind,
            chain: r.chain.under(self.codec),
            confidence: r.confidence,
        }
    }
}

/// Where the layers' nested scans live between segments.
struct Pool {
    sub: Option<Box<Sub>>,
    raws: Vec<Raw>,
    /// The least confidence the nested scans keep.
    min: Confidence,
    /// Do the nested scans decode compressed data ([`Inflate`])?
    inflate: bool,
    /// The buffers of the last closed segment, for the next one.
    spare: Option<(Vec<u8>, VecDeque<(u64, u64)>)>,
}

impl Pool {
    fn new(min: Confidence, inflate: bool) -> Pool {
        Pool {
            sub: None,
            raws: Vec::new(),
            min,
            inflate,
            spare: None,
        }
    }

    /// A new segment, on the buffers of the last one.
    fn open(&mut self, codec: Codec, start: u64, discard: bool) -> Seg {
        let mut seg = Seg::new(codec, start, discard);
        if let Some((mut dec, mut spans)) = self.spare.take() {
            dec.clear();
            spans.clear();
            seg.dec = dec;
            seg.spans = spans;
        }
        seg
    }

    /// Hand the segment's new decoded bytes to its nested scan (starting
    /// it if needed); map what it reports.
    fn flush(&mut self, sc: &Scanner, seg: &mut Seg, depth: u8, out: &mut Vec<Raw>) {
        if seg.discard {
            seg.probe(sc, out);
            return;
        }
        if !seg.started || seg.dec.is_empty() {
            return;
        }
        let sub = self
            .sub
            .get_or_insert_with(|| Box::new(Sub::new(sc, depth, self.min, self.inflate)));
        self.raws.clear();
        sub.push(sc, &seg.dec, &mut self.raws);
        seg.dec.clear();
        for &r in &self.raws {
            out.push(seg.map(r));
        }
        // Spans before the nested frontier are no longer needed.
        let keep = sub.frontier().min(seg.produced);
        let n = usize::try_from(keep.saturating_sub(seg.spans_base))
            .unwrap_or(usize::MAX)
            .min(seg.spans.len());
        seg.spans.drain(..n);
        seg.spans_base += n as u64;
    }

    /// The segment ended: judge what is left.
    fn close(&mut self, sc: &Scanner, mut seg: Seg, depth: u8, out: &mut Vec<Raw>) {
        if seg.discard {
            seg.probe(sc, out);
            return;
        }
        if !seg.started {
            if !worth_scanning(sc, &seg.dec) {
                if seg.dec.capacity() <= 4 * SHORT {
                    self.spare = Some((seg.dec, seg.spans));
                }
                return;
            }
            seg.started = true;
        }
        self.flush(sc, &mut seg, depth, out);
        let Some(sub) = self.sub.as_mut() else {
            return;
        };
        self.raws.clear();
        sub.finish(sc, &mut self.raws);
        for &r in &self.raws {
            out.push(seg.map(r));
        }
        sub.reset();
    }

    /// Earliest encoded offset an unreported finding of `seg` may start at.
    fn frontier(&self, seg: &Seg, pending: u64) -> u64 {
        if seg.discard {
            return match seg.spans.front() {
                Some(s) if !seg.flagged => s.0,
                _ => pending,
            };
        }
        if !seg.started {
            return seg.start;
        }
        let df = self.sub.as_ref().map_or(seg.spans_base, |s| s.frontier());
        match df
            .checked_sub(seg.spans_base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| seg.spans.get(i))
        {
            Some(s) => s.0,
            None if df >= seg.produced => pending,
            None => seg.start,
        }
    }
}

/// Could a short decoded segment hold a finding, or something a deeper
/// layer would decode? (A superset test: false only when it cannot.)
///
/// One pass counts what the first version looked for in two (the
/// literal gate's three-byte windows; base64 characters, hex digits, `%`
/// and `\\`), and only a count that could reach a run or an escape sends
/// `dec` to the exact look: every short base64 run was judged here four
/// times, once per phase, and on log-like text the two passes were about a
/// third of the scanner's instructions. Equal to them by a property test.
/// (A short run the [`B64Gate`] clears is now judged by its counts alone,
/// in [`short_run`].)
pub(crate) fn worth_scanning(sc: &Scanner, dec: &[u8]) -> bool {
    if dec.is_empty() {
        return false;
    }
    // Three counters packed in one word (16 bits each) could carry into
    // each other past 2^16 bytes. Callers pass segments shorter than
    // `SHORT` plus a label; a longer one is scanned, not judged.
    if dec.len() >= 1 << 16 {
        return true;
    }
    let (bits, keys, any) = sc.literal_gate().parts();
    let (mut key, mut hit) = (0u32, u64::from(any));
    let mut tally = Tally::default();
    let mut step = |b: u8| {
        // The first two keys hold zero bytes no window of `dec` has: a
        // spurious hit only sends `dec` to the exact test below.
        key = (key << 8 | u32::from(keys[usize::from(b)])) & 0x00ff_ffff;
        let slot = Prefixes::slot(key);
        hit |= bits[slot >> 6] >> (slot & 63);
        tally.add(b);
    };
    let pairs = dec.chunks_exact(2);
    let rest = pairs.remainder();
    for p in pairs {
        step(p[0]);
        step(p[1]);
    }
    rest.iter().for_each(|&b| step(b));
    tally.worth(dec) || (hit & 1 != 0 && sc.may_match(dec))
}

/// The classes [`worth_scanning`] counts, byte by byte, and what they
/// say of a segment that holds no literal start.
#[derive(Clone, Copy, Default)]
struct Tally {
    /// Three 16-bit counters (see [`COUNTS`]); the top word is not read.
    counts: u64,
    /// A header's pair seen (bits 48-55).
    header: u64,
    /// The last byte's [`COUNTS`] entry.
    prev: u64,
}

impl Tally {
    #[inline(always)]
    fn add(&mut self, b: u8) {
        let c = COUNTS[usize::from(b)];
        self.counts = self.counts.wrapping_add(c);
        // The previous byte's first-of-pair bits (56-63), shifted onto
        // this one's second-of-pair bits (48-55). The counter bits cannot
        // meet: shifted, they sit at 8, 24 and 40; unshifted, at 0, 16, 32.
        self.header |= (self.prev >> 8) & c;
        self.prev = c;
    }

    /// Is `dec`, the bytes added (fewer than 2^16), worth a nested scan
    /// for what its classes may hold: a base64 run, an escape, UTF-16, a
    /// compressed header, character codes or hex?
    #[inline(always)]
    fn worth(&self, dec: &[u8]) -> bool {
        let lane = |k: u32| (self.counts >> (16 * k)) & 0xffff;
        // The common case: too few of each class to look closer (fewer
        // hex digits than a code run needs are fewer than a hex run needs).
        const _: () = assert!(MIN_CODES <= 2 * MIN_HEX);
        if lane(0) < u64::from(MIN_B64)
            && lane(1) < u64::from(MIN_CODES)
            && lane(2) == 0
            && self.header == 0
        {
            return false;
        }
        self.worth_closer(dec)
    }

    fn worth_closer(&self, dec: &[u8]) -> bool {
        let lane = |k: u32| (self.counts >> (16 * k)) & 0xffff;
        // Fewer base64 characters than a run needs, no `%` or `\\`: no run
        // and no escape, without looking for them.
        if lane(0) >= u64::from(MIN_B64) && longest_b64_run(dec) >= MIN_B64 {
            return true;
        }
        if lane(2) > 0 && (has_escape(dec) || wide_possible(dec)) {
            return true;
        }
        if self.header != 0 && has_compressed(dec) {
            return true;
        }
        if lane(1) >= u64::from(MIN_CODES) && code_stretch(dec) {
            return true;
        }
        lane(1) >= u64::from(2 * MIN_HEX)
    }
}

/// Could `dec` hold a character-code run? (The layer's fast test: a
/// stretch of run bytes with [`MIN_CODES`] digits, at most `CODE_GAP`
/// bytes apart.)
fn code_stretch(dec: &[u8]) -> bool {
    let (mut digits, mut gap, mut open) = (0u32, 0u8, false);
    for &b in dec {
        if b.is_ascii_digit() {
            if !open {
                open = true;
                digits = 0;
            }
            gap = 0;
            digits += 1;
            if digits >= MIN_CODES {
                return true;
            }
        } else if code_sep(b) && open && gap < CODE_GAP {
            gap += 1;
        } else {
            open = false;
        }
    }
    false
}

/// The longest base64 run in `dec`; line breaks neither end nor count.
fn longest_b64_run(dec: &[u8]) -> u32 {
    let (mut run, mut longest) = (0u32, 0u32);
    for &b in dec {
        if CLASS[usize::from(b)] & B64 != 0 {
            run += 1;
            longest = longest.max(run);
        } else if b != b'\n' && b != b'\r' {
            run = 0;
        }
    }
    longest
}

/// Does `dec` (a whole segment's decoded bytes) hold an escape the
/// percent, JSON or HTML layer would decode, or a character the unicode
/// layer reads? (One cut by the end of `dec` is read as the bytes it is.)
pub(super) fn has_escape(dec: &[u8]) -> bool {
    (0..dec.len()).any(|i| match dec[i] {
        b'%' | b'\\' | b'&' => escape_at(dec, i),
        b => uni_lead(b) && matches!(uni_at(&dec[i..]), Uni::Drop(_) | Uni::Ascii(..)),
    })
}

/// The literal gate read off base64 characters, before decoding them.
///
/// A base64 run is decoded in four phases, and the short ones (most of
/// them, on log-like text) used to go through the literal gate once per
/// phase: three decoded bytes per character, a fold, a hash and a table
/// bit each. But every three decoded bytes of any phase hold at least
/// three whole characters of the run (bytes 0-2 of a quad, the first three
/// of its characters; bytes 1-3, characters 2-4; bytes 2-4, characters
/// 3-5), so one pass over the characters, one table bit per three
/// consecutive ones (18 bits, the table indexed directly), tells whether
/// any phase may hold a literal's first three bytes: the table holds each
/// three-byte literal start in its three alignments (and, for a keyword,
/// in every case, as the byte gate folds). False only when no phase can
/// hold one; the windows that reach into the label before the run are left
/// to the byte gate.
///
/// The table holds every compressed header's pair too ([`HEADER_PAIRS`]):
/// two bytes fill two characters whole and part of a third, so a pair's
/// keys are its bits with the rest taken every way (4, 4 and 16 keys for
/// offsets 0, 1 and 2 of a quad). A run the gate clears has no header pair
/// in any phase either, and its phases are judged by their class counts
/// alone.
///
/// A second table, for [`quick_noise`], adds what would send a phase to
/// [`Tally::worth_closer`]'s escape and UTF-16 looks ([`ESCAPE_KEYS`]): a
/// zero byte, and a byte that may start an escape (`%`, `&`, `\\`)
/// followed by one that may continue it (see [`escape_next`]). Two
/// consecutive bytes of a phase come from three consecutive characters,
/// except a quad's last byte and the next quad's first, which need four:
/// that key is marked when its third character can begin such a byte,
/// whatever the fourth. A run that table clears has no escape and no zero
/// byte in any phase, so a phase's verdict rests on its count of base64
/// characters alone.
pub(crate) struct B64Gate {
    bits: Box<[u64; 1 << 12]>,
    /// `bits` and the keys that make an escape or a zero byte, for
    /// [`quick_noise`] (apart: the long way's verdicts need only `bits`,
    /// and one table is one load a character).
    quick: Box<[u64; 1 << 12]>,
    /// A literal shorter than three bytes: nothing to look for.
    any: bool,
}

impl B64Gate {
    /// The gate for keywords (matched in any case) and held literals
    /// (matched exactly).
    pub(crate) fn new<K, L>(keywords: &[K], held: &[L]) -> B64Gate
    where
        K: AsRef<[u8]>,
        L: AsRef<[u8]>,
    {
        let mut gate = B64Gate {
            bits: Box::new([0; 1 << 12]),
            quick: Box::new([0; 1 << 12]),
            any: false,
        };
        keywords.iter().for_each(|k| gate.add(k.as_ref(), true));
        held.iter().for_each(|l| gate.add(l.as_ref(), false));
        for (firsts, seconds) in HEADER_PAIRS {
            for &x in firsts {
                for &y in seconds {
                    gate.add_pair(x, y);
                }
            }
        }
        let escapes = ESCAPE_KEYS.iter();
        for (q, (b, e)) in gate.quick.iter_mut().zip(gate.bits.iter().zip(escapes)) {
            *q = b | e;
        }
        gate
    }

    /// A compressed header's pair: two bytes fill two characters whole and
    /// part of a third (the key's other bits take every value).
    fn add_pair(&mut self, x: u8, y: u8) {
        let w = u32::from(x) << 8 | u32::from(y);
        let keys = (0..4)
            // At offset 0 of a quad: the last character's low two bits.
            .map(|f| w << 2 | f)
            // At offset 1: the first character's high two bits.
            .chain((0..4).map(|f| f << 16 | w))
            // At offset 2: the bytes fill the second and third characters
            // and the first's low two bits (its high four take any value),
            // and the third holds only the second byte's high six.
            .chain((0..16).map(|f| f << 14 | (w >> 2)));
        keys.for_each(|key| self.set(key));
    }

    fn set(&mut self, key: u32) {
        let key = (key & B64_KEY) as usize;
        self.bits[key >> 6] |= 1 << (key & 63);
    }

    fn add(&mut self, lit: &[u8], fold: bool) {
        let &[a, b, c, ..] = lit else {
            self.any = true;
            return;
        };
        let cases = |x: u8| match fold && x.is_ascii_alphabetic() {
            true => [x.to_ascii_lowercase(), x.to_ascii_uppercase()],
            false => [x, x],
        };
        for x in cases(a) {
            for y in cases(b) {
                for z in cases(c) {
                    let w = u32::from(x) << 16 | u32::from(y) << 8 | u32::from(z);
                    // The three characters that the bytes fill whole, for
                    // the bytes at offsets 0, 1 and 2 of a quad's three.
                    [w >> 6, w >> 2, w >> 4]
                        .into_iter()
                        .for_each(|key| self.set(key));
                }
            }
        }
    }

    /// The table (bit `key`: three characters' values, the first in the
    /// top six bits) and whether it matches anything.
    #[inline]
    pub(crate) fn parts(&self) -> (&[u64; 1 << 12], bool) {
        (&self.bits, self.any)
    }

    /// [`Self::parts`] with the escape keys too, for [`quick_noise`].
    #[inline]
    fn quick_parts(&self) -> (&[u64; 1 << 12], bool) {
        (&self.quick, self.any)
    }
}

/// Three base64 characters' values, rolled into a [`B64Gate`] key.
const B64_KEY: u32 = (1 << 18) - 1;

/// The gate's bit (in bit 0; the rest is noise to mask off after the
/// loop) for the last three characters rolled into `bits`.
#[inline(always)]
fn gate_bit(gate: &[u64; 1 << 12], bits: u32) -> u64 {
    let key = bits & B64_KEY;
    gate[(key >> 6) as usize] >> (key & 63)
}

/// The [`B64Gate`] keys whose characters make, in some phase, a zero byte
/// or an escape's first byte and a byte that may follow it. They depend
/// on no literal: built once, not per held set.
static ESCAPE_KEYS: std::sync::LazyLock<Box<[u64; 1 << 12]>> = std::sync::LazyLock::new(|| {
    let mut t = Box::new([0u64; 1 << 12]);
    for key in 0..=B64_KEY {
        let (c0, c1, c2) = (key >> 12, (key >> 6) & 63, key & 63);
        let [a0, a1, a2] = quad_bytes(c0, c1);
        let [b0, b1, b2] = quad_bytes(c1, c2);
        let zero = b0 == 0 || b1 == 0 || b2 == 0;
        // A quad's last byte, then the next quad's first: its top six
        // bits are the third character.
        let across = (0..4).any(|low| escape_pair(a2, (c2 << 2 | low) as u8));
        let within = escape_pair(a0, b1) || escape_pair(a1, b2);
        if zero || across || within {
            let key = key as usize;
            t[key >> 6] |= 1 << (key & 63);
        }
    }
    t
});

/// The byte two adjacent characters `x` and `y` (six bits each) make at
/// offsets 0, 1 and 2 of a quad: `xy..`, `.xy.` and `..xy`.
const fn quad_bytes(x: u32, y: u32) -> [u8; 3] {
    [
        ((x << 2 | y >> 4) & 0xff) as u8,
        ((x << 4 | y >> 2) & 0xff) as u8,
        ((x << 6 | y) & 0xff) as u8,
    ]
}

/// Two bytes that may begin an escape [`escape_at`] finds, or a character
/// the unicode layer reads ([`uni_pair`]).
pub(super) const fn escape_pair(a: u8, b: u8) -> bool {
    (escape_start(a) && escape_next(b)) || uni_pair(a, b)
}

/// A byte [`escape_at`] may find an escape at (a zero byte aside).
const fn escape_start(b: u8) -> bool {
    matches!(b, b'%' | b'&' | b'\\')
}

/// A byte [`escape_at`] may accept right after an escape's first: a hex
/// digit (`%XX`), `#` (`&#`), or what follows a backslash in JSON.
const fn escape_next(b: u8) -> bool {
    b.is_ascii_hexdigit()
        || matches!(
            b,
            b'#' | b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u'
        )
}

/// Per pair of adjacent characters (the key's low 12 bits): one count
/// byte per phase, 1 where the byte the pair makes in that phase is a
/// base64 character. The byte for offset `a` sits in slot `3 - a`, so
/// that rotating the word left by `8 * i` bytes, `i` the index of the
/// pair's second character, puts it in the slot of the phase it belongs
/// to (`(i - 1 - a) mod 4`).
static PHASE_B64: [u32; 1 << 12] = {
    let mut t = [0u32; 1 << 12];
    let mut key = 0;
    while key < 1 << 12 {
        let bytes = quad_bytes(key >> 6, key & 63);
        let mut a = 0;
        while a < 3 {
            if CLASS[bytes[a] as usize] & B64 != 0 {
                t[key as usize] |= 1 << (8 * (3 - a));
            }
            a += 1;
        }
        key += 1;
    }
    t
};

/// Two adjacent bytes every header [`compressed_at`] knows holds, as
/// (first bytes, second bytes) per kind: gzip `1f 8b`, zlib `78` and its
/// four levels, `PK`, xz `fd 37`, 7z `bc af`, zstd `28 b5`, `BZ`, rar `1a
/// 07`; `PK` and `BZ` in either case, as the literal gate may key them
/// folded.
const HEADER_PAIRS: [(&[u8], &[u8]); 8] = [
    (&[0x1f], &[0x8b]),
    (&[0x78], &[0x01, 0x5e, 0x9c, 0xda]),
    (b"Pp", b"Kk"),
    (&[0xfd], b"7"),
    (&[0xbc], &[0xaf]),
    (&[0x28], &[0xb5]),
    (b"Bb", b"Zz"),
    (&[0x1a], &[0x07]),
];

/// Per byte, for [`worth_scanning`]: 1 in the counter it adds to (bits 0,
/// 16, 32: a base64 character; a hex digit; a byte that may start an
/// escape or mark UTF-16: `%`, `\\`, `&`, a zero byte, the first byte of a
/// character the unicode layer reads), and in the top
/// word the headers it may open and close (bits 56-63: the byte can be the
/// first of the header's pair; 48-55: its second). A header's pair is rare
/// in noise (a decoded short run is mostly noise, and the header search
/// costs more than these bits): gzip `1f 8b`, zlib `78` and its four
/// levels, `PK`, xz `fd 37`, 7z `bc af`, zstd `28 b5`, `BZ`, rar `1a 07`;
/// `PK` and `BZ` in either case, as the literal gate may key them folded.
/// The top word is never read as a counter, so its sums carrying out of
/// the word do no harm.
static COUNTS: [u64; 256] = {
    const PAIRS: [(&[u8], &[u8]); 8] = HEADER_PAIRS;
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let c = CLASS[i];
        if c & B64 != 0 {
            t[i] |= 1;
        }
        if c & HEXD != 0 {
            t[i] |= 1 << 16;
        }
        if matches!(i, 0x25 | 0x5c | 0x26 | 0) || uni_lead(i as u8) {
            t[i] |= 1 << 32;
        }
        i += 1;
    }
    let mut id = 0;
    while id < PAIRS.len() {
        let (firsts, seconds) = PAIRS[id];
        let mut k = 0;
        while k < firsts.len() {
            t[firsts[k] as usize] |= 1 << (56 + id);
            k += 1;
        }
        k = 0;
        while k < seconds.len() {
            t[seconds[k] as usize] |= 1 << (48 + id);
            k += 1;
        }
        id += 1;
    }
    t
};

/// [`worth_scanning`] as first written (the literal test, then the
/// classes): the property test's oracle, kept apart from the helpers the
/// counting pass uses so that it checks them too.
#[cfg(test)]
pub(crate) fn worth_scanning_by_parts(sc: &Scanner, dec: &[u8]) -> bool {
    if dec.is_empty() {
        return false;
    }
    if sc.may_match(dec) {
        return true;
    }
    let mut run = 0u32;
    let mut hex = 0u32;
    for (i, &b) in dec.iter().enumerate() {
        let c = CLASS[usize::from(b)];
        if c & B64 != 0 {
            run += 1;
            if run >= MIN_B64 {
                return true;
            }
        } else if b != b'\n' && b != b'\r' {
            run = 0;
            if matches!(b, b'%' | b'\\' | b'&') && escape_at(dec, i) {
                return true;
            }
            if uni_lead(b) && matches!(uni_at(&dec[i..]), Uni::Drop(_) | Uni::Ascii(..)) {
                return true;
            }
        }
        hex += u32::from(c & HEXD != 0);
    }
    hex >= 2 * MIN_HEX || code_stretch(dec) || wide_possible(dec) || header_searched(dec)
}

/// Could `dec` hold a UTF-16 run? (It has a run's worth of zero bytes.)
fn wide_possible(dec: &[u8]) -> bool {
    memchr::memchr_iter(0, dec).count() >= MIN_WIDE as usize
}

/// Longest label (name and separator) read before a base64 run.
pub(super) const LABEL_MAX: usize = 64;

/// [`label`]'s byte classes: blanks and quotes around the separator, and
/// a name's bytes (`A-Za-z0-9_.-`).
const QUIET: u8 = 1;
const NAME: u8 = 2;
static LABEL_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if matches!(b, b' ' | b'\t' | b'"' | b'\'') {
            t[i] = QUIET;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            t[i] = NAME;
        }
        i += 1;
    }
    t
};

/// The label at the end of `before`: a name (2 to 48 of `A-Za-z0-9_.-`),
/// then quotes and blanks around one `:`, `=` or `=>` (`NAME: `,
/// `"name": "`, `NAME=`, `'name' => '`); empty when `before` does not end
/// that way.
fn label(before: &[u8]) -> &[u8] {
    // One table load a byte: every base64 run's label is read, and the
    // name loop's compares were most of it.
    let quiet = |b: u8| LABEL_BYTE[usize::from(b)] & QUIET != 0;
    let name = |b: u8| LABEL_BYTE[usize::from(b)] & NAME != 0;
    let mut i = before.len();
    let mut gap = 0;
    while i > 0 && quiet(before[i - 1]) && gap < 6 {
        i -= 1;
        gap += 1;
    }
    if i == 0 || !matches!(before[i - 1], b':' | b'=' | b'>') {
        return &[];
    }
    // `=>` (Ruby, PHP and Perl hashes) is one separator.
    if before[i - 1] == b'>' {
        if i < 2 || before[i - 2] != b'=' {
            return &[];
        }
        i -= 1;
    }
    i -= 1;
    gap = 0;
    while i > 0 && quiet(before[i - 1]) && gap < 6 {
        i -= 1;
        gap += 1;
    }
    let end = i;
    // The name: at most 48 of its bytes, read back from the separator.
    let window = &before[end.saturating_sub(48)..end];
    i = end - window.iter().rev().take_while(|&&b| name(b)).count();
    if end - i < 2 || (i > 0 && name(before[i - 1])) {
        return &[];
    }
    &before[i..]
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn the_label_table_is_its_definition() {
        for b in 0..=255u8 {
            let quiet = matches!(b, b' ' | b'\t' | b'"' | b'\'');
            let name = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
            assert_eq!(LABEL_BYTE[usize::from(b)] & QUIET != 0, quiet, "{b:#04x}");
            assert_eq!(LABEL_BYTE[usize::from(b)] & NAME != 0, name, "{b:#04x}");
        }
    }

    #[test]
    fn labels_read_before_a_run() {
        for (before, want) in [
            (
                &b"x AWS_SECRET_ACCESS_KEY: "[..],
                &b"AWS_SECRET_ACCESS_KEY: "[..],
            ),
            (b"{\"api.key\": \"", b"api.key\": \""),
            (b" path=", b"path="),
            (b"x-y =  '", b"x-y =  '"),
            (b"a=", b""),
            (b"no separator ", b""),
            (b"%name=", b"name="),
            (b"'aws_secret' => '", b"aws_secret' => '"),
            (b"key=>", b"key=>"),
            (b"key >", b""),
            (b"key ==> ", b""),
            (b"=>", b""),
        ] {
            assert_eq!(label(before), want, "{:?}", String::from_utf8_lossy(before));
        }
    }
}

/// Does the `%`, `\\` or `&` at `dec[i]` start an escape the percent, JSON
/// or HTML layer would decode (`%XX`, a backslash before one of JSON's
/// escape letters, `&#`)? A bare `%`, `\\` or `&` in decoded noise (one
/// byte in 85) opens no segment, so it needs no nested scan.
fn escape_at(dec: &[u8], i: usize) -> bool {
    match dec[i] {
        b'%' => dec
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
        // `&#` and a digit, or `&#x`: a superset of the references the
        // HTML layer decodes.
        b'&' => {
            dec.get(i + 1) == Some(&b'#')
                && dec
                    .get(i + 2)
                    .is_some_and(|n| n.is_ascii_digit() || matches!(n, b'x' | b'X'))
        }
        _ => dec.get(i + 1).is_some_and(|n| {
            matches!(
                n,
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u'
            )
        }),
    }
}

// ---------------------------------------------------------------- layers

/// base64 / base64url runs.
struct Base64 {
    /// Idle: the current run (start, characters, has a non-hex character,
    /// `\n` and `\r` since the last character).
    run: Option<u64>,
    len: u32,
    nonhex: bool,
    nl: u8,
    cr: u8,
    /// Active: one segment per phase (all open or none). An agent can glue
    /// one to three alphabet characters before an encoded secret
    /// (`xQUtJQ...`, or a line ending in `89m` before it), and a run cut
    /// into quads from its first character then decodes to noise; phase `p`
    /// cuts it from its `p`-th character, so one of the four lines the
    /// secret's quads up.
    segs: Option<[Seg; PHASES]>,
    /// Active: the last four characters' 6-bit values (newest lowest),
    /// their stream offsets (character `i` at `pos[i % 4]`), and how many
    /// characters the run has had.
    bits: u32,
    pos: [u64; PHASES],
    chars: u64,
    /// Active: line breaks since the last character.
    anl: u8,
    /// The last [`LABEL_MAX`] bytes of the stream before the current
    /// input (ending at `tail_end`): where a run's label is read from when
    /// the run starts at the head of the input.
    /// Inline up to a label's length: the usual tail, kept without an
    /// allocation per stream.
    tail: smallvec::SmallVec<[u8; LABEL_MAX]>,
    tail_end: u64,
}

/// Hex byte tokens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HexPhase {
    Idle,
    /// Expecting a token (after a byte or a delimiter).
    Next,
    /// After a delimiter: a token must follow (`, ` allows one space more).
    Delim(u8),
    Backslash,
    /// A `0`: a digit or the start of `0x`.
    Zero,
    /// After `\x` / `0x`.
    Prefix,
    /// After the first digit.
    Digit(u8),
    /// An odd instance, after a run's first digit: a digit must follow.
    Lead,
}

/// An agent can glue a digit before a hex-encoded secret (`a414b4941...`,
/// `200 a414b...`, or `9c036-37-...` before a delimited one), and cut into
/// pairs from its first digit the run decodes to noise. Three instances of
/// the hex layer cut every run so that one of them lines its pairs up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Align {
    /// From the run's first digit, across delimiters and `\x`/`0x` tokens.
    Even,
    /// Runs of plain digits only, each from its second digit.
    OddPlain,
    /// From the run's second digit, then across delimiters.
    OddDelimited,
}

/// The bytes of a run layer's fast mode (hex, character codes).
trait RunBytes {
    /// Digits a stretch needs before the exact parser runs.
    const DIGITS: u32;
    /// Most non-digit bytes in a row inside a stretch.
    const GAP: u8;
    /// Fewest bytes a run spans: a window of `runs` this long, or of this
    /// layer's bytes, holds every run.
    const NEED: usize;
    /// Probe for this layer's bytes inside the windows of `runs` too (its
    /// bitmap's class is wider than this layer's).
    const PROBE_IN_WINDOWS: bool;
    fn digit(b: u8) -> bool;
    /// A byte a stretch may hold besides digits.
    fn gap(b: u8) -> bool;
    /// A byte that ends a stretch may start the next one.
    fn restarts(b: u8) -> bool;
    fn breaks(b: u8) -> bool {
        !Self::digit(b) && !Self::gap(b)
    }
}

/// Fast mode of a run layer: the current *stretch* of bytes a run could
/// be made of (digits, and at most `GAP` other run bytes in a row) and its
/// digits. The exact parser runs only once a stretch has `DIGITS` digits;
/// it starts from the stretch's start, where it would be idle anyway.
#[derive(Default)]
struct Stretch {
    start: Option<u64>,
    digits: u32,
    gap: u8,
}

impl Stretch {
    /// Look through `hay[k..]` (`hay` starts at stream offset `base`); the
    /// start of the first stretch with enough digits, if there is one.
    fn find<R: RunBytes>(&mut self, hay: &[u8], base: u64, k: usize, runs: &Runs) -> Option<u64> {
        self.find_skipping::<R>(hay, base, k, runs, true)
    }

    /// [`find`](Self::find), with the UUID shortcut (`uuids`) or without
    /// it (a test holds the two equal).
    fn find_skipping<R: RunBytes>(
        &mut self,
        hay: &[u8],
        base: u64,
        k: usize,
        runs: &Runs,
        uuids: bool,
    ) -> Option<u64> {
        let rest = hay.get(k..).unwrap_or_default();
        let (mut stretch, mut digits, mut gap) = (self.start, self.digits, self.gap);
        let mut j = 0;
        while j < rest.len() {
            if stretch.is_none() {
                // As for base64: a run spans `NEED` run bytes; jump to the
                // next such window (before the new input, or where the
                // bitmap's class is wider: probe the byte `NEED - 1` ahead).
                let next = runs.next_hex(k + j);
                if let Some(p) = next
                    && p > k + j
                {
                    j = p - k;
                    continue;
                }
                if (next.is_none() || R::PROBE_IN_WINDOWS)
                    && let Some(&probe) = rest.get(j + R::NEED - 1)
                {
                    if R::breaks(probe) {
                        j += R::NEED;
                        continue;
                    }
                    let window = rest.get(j..j + R::NEED - 1).unwrap_or_default();
                    if let Some(q) = window.iter().rposition(|&b| R::breaks(b)) {
                        j += q + 1;
                        continue;
                    }
                }
                if uuids && let Some(n) = uuid_then_break::<R>(rest.get(j..).unwrap_or_default()) {
                    // No stretch is open, so `digits` and `gap` are 0, as
                    // the loop would leave them after these bytes.
                    j += n;
                    continue;
                }
            }
            let b = rest[j];
            if R::digit(b) {
                if stretch.is_none() {
                    stretch = Some(base + (k + j) as u64);
                    digits = 0;
                }
                gap = 0;
                // The digits from here, in a tight loop (a UUID's or a
                // digest's): the stretch's start is what is returned, so
                // where among them it qualifies does not matter.
                let more = rest[j..].iter().take_while(|&&d| R::digit(d)).count();
                digits = digits.saturating_add(u32::try_from(more).unwrap_or(u32::MAX));
                if digits >= R::DIGITS {
                    *self = Stretch::default();
                    return stretch;
                }
                j += more;
                continue;
            } else if R::gap(b) && stretch.is_some() && gap < R::GAP {
                gap += 1;
            } else {
                stretch = R::restarts(b).then_some(base + (k + j) as u64);
                digits = 0;
                gap = 0;
            }
            j += 1;
        }
        (self.start, self.digits, self.gap) = (stretch, digits, gap);
        None
    }
}

/// 37 bytes a stretch search can pass over in one step, from where no
/// stretch is open: the 37th ends a stretch and does not start one (a test
/// holds that no byte does both), so every stretch among them ends there;
/// and a UUID's four dashes (any bytes that are not digits, at offsets 8,
/// 13, 18 and 23) leave at most 32 digits before it, fewer than a run
/// needs. The search would find nothing in them and stop with no stretch
/// open, where it started. JSON APIs carry a UUID in nearly every record,
/// and each of the three hex layers walked it digit by digit: a quarter of
/// the instructions on the bench's JSON.
fn uuid_then_break<R: RunBytes>(s: &[u8]) -> Option<usize> {
    // A layer whose runs fit in 32 digits (character codes) never steps.
    if R::DIGITS <= 32 {
        return None;
    }
    let u: &[u8; 37] = s.first_chunk()?;
    let apart = [u[8], u[13], u[18], u[23]].iter().all(|&b| !R::digit(b));
    (apart && R::breaks(u[36])).then_some(37)
}

/// What one stretch search call saw: where it started, the run it found,
/// and the stretch it left open (start, digits, gap).
#[cfg(test)]
pub(crate) type StretchStep = (usize, Option<u64>, (Option<u64>, u32, u8));

/// The stretch search of the hex layers (of the character-code layer:
/// `codes`) over `hay`, fed in pieces ending at `cuts` (then at its end) as
/// a stream feeds it, restarting past each run it finds: with the UUID
/// shortcut and without it.
#[cfg(test)]
pub(crate) fn stretch_both(hay: &[u8], cuts: &[usize], codes: bool) -> [Vec<StretchStep>; 2] {
    for b in 0..=255u8 {
        assert!(!(HexBytes::breaks(b) && HexBytes::restarts(b)), "{b}");
        assert!(!(CodeBytes::breaks(b) && CodeBytes::restarts(b)), "{b}");
    }
    [true, false].map(|uuids| {
        let mut st = Stretch::default();
        let mut runs = Runs::default();
        let mut seen = Vec::new();
        let mut k = 0;
        for end in cuts.iter().copied().chain([hay.len()]) {
            let end = end.clamp(k, hay.len());
            let part = &hay[..end];
            runs.compute::<MIN_B64, { 2 * MIN_HEX }>(part, k);
            while k < end {
                let found = match codes {
                    true => st.find_skipping::<CodeBytes>(part, 0, k, &runs, uuids),
                    false => st.find_skipping::<HexBytes>(part, 0, k, &runs, uuids),
                };
                seen.push((k, found, (st.start, st.digits, st.gap)));
                match found {
                    Some(start) => {
                        k = usize::try_from(start).unwrap_or(end) + 1;
                        runs.compute::<MIN_B64, { 2 * MIN_HEX }>(part, k.min(end));
                    }
                    None => k = end,
                }
            }
        }
        seen
    })
}

/// A run being decoded (hex, character codes, UTF-16): where it starts,
/// the units decoded, and its segment, opened at the first unit.
#[derive(Default)]
struct RunSeg {
    start: Option<u64>,
    count: u32,
    seg: Option<Seg>,
    /// The label before the run (see [`RunSeg::open_labelled`]).
    label: smallvec::SmallVec<[u8; LABEL_MAX]>,
}

impl RunSeg {
    /// A run starts at `p`, unless one is open.
    fn open(&mut self, p: u64) {
        if self.start.is_none() {
            self.start = Some(p);
            self.count = 0;
            self.seg = None;
            self.label.clear();
        }
    }

    /// [`RunSeg::open`], and the run's segment starts with the label
    /// before `p`: `aws_secret_access_key = 774a616c...` holds the name
    /// plain and the value encoded, and the pattern needs both.
    fn open_labelled(&mut self, p: u64, near: Near<'_>) {
        if self.start.is_none() {
            self.open(p);
            let mut buf = [0u8; LABEL_MAX];
            self.label.extend_from_slice(near.label_before(p, &mut buf));
        }
    }

    /// A segment for the run starting at `start`, its label first.
    fn new_seg(label: &[u8], codec: Codec, start: u64, discard: bool) -> Seg {
        let mut seg = Seg::new(codec, start, discard);
        if !discard {
            for &b in label {
                seg.put(b, (start, start + 1));
            }
        }
        seg
    }

    /// One decoded byte, from the encoded `span`.
    fn put(&mut self, codec: Codec, v: u8, span: (u64, u64), discard: bool) {
        // Saturates: an inflated member can decode to more than 4 GiB.
        self.count = self.count.saturating_add(1);
        let start = self.start.unwrap_or(span.0);
        // The segment's nested scan starts only at `SHORT` decoded bytes,
        // past every layer's minimum: only runs long enough are scanned.
        let label = &self.label;
        self.seg
            .get_or_insert_with(|| RunSeg::new_seg(label, codec, start, discard))
            .put(v, span);
    }

    /// Decoded bytes that share one encoded `span`.
    fn put_all(&mut self, codec: Codec, bytes: &[u8], span: (u64, u64), discard: bool) {
        let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.count = self.count.saturating_add(n);
        let start = self.start.unwrap_or(span.0);
        let label = &self.label;
        self.seg
            .get_or_insert_with(|| RunSeg::new_seg(label, codec, start, discard))
            .put_all(bytes, span);
    }

    /// Is the segment scanned (or, too deep, probed) as it streams?
    fn live(&self, min: u32) -> bool {
        self.seg
            .as_ref()
            .is_some_and(|seg| seg.started || (seg.discard && self.count >= min))
    }

    /// `pending`: where the unit not yet decoded starts; `idle`: the
    /// frontier with no run open.
    fn frontier(&self, pool: &Pool, pending: u64, idle: u64, min: u32) -> u64 {
        match (&self.seg, self.start) {
            (Some(seg), _) if self.live(min) => pool.frontier(seg, pending),
            (_, Some(r)) => r,
            (_, None) => idle,
        }
    }

    fn flush(&mut self, sc: &Scanner, depth: u8, pool: &mut Pool, out: &mut Vec<Raw>, min: u32) {
        if self.live(min)
            && let Some(seg) = self.seg.as_mut()
        {
            pool.flush(sc, seg, depth, out);
        }
    }

    /// The run ended: judge its segment if it had `min` units.
    fn end(&mut self, sc: &Scanner, depth: u8, pool: &mut Pool, out: &mut Vec<Raw>, min: u32) {
        self.start = None;
        self.label.clear();
        let count = std::mem::take(&mut self.count);
        if let Some(seg) = self.seg.take()
            && count >= min
        {
            pool.close(sc, seg, depth, out);
        }
    }
}

struct HexBytes;

impl RunBytes for HexBytes {
    const DIGITS: u32 = 2 * MIN_HEX;
    const GAP: u8 = 4;
    const NEED: usize = 2 * MIN_HEX as usize;
    const PROBE_IN_WINDOWS: bool = false;
    fn digit(b: u8) -> bool {
        CLASS[usize::from(b)] & HEXD != 0
    }
    fn gap(b: u8) -> bool {
        CLASS[usize::from(b)] & HEXC != 0
    }
    /// A backslash may start `\x41`.
    fn restarts(b: u8) -> bool {
        b == b'\\'
    }
}

struct Hex {
    /// Where this instance cuts a run into pairs (see [`Align`]).
    align: Align,
    stretch: Stretch,
    exact: bool,
    rs: RunSeg,
    phase: HexPhase,
    tstart: u64,
}

/// Percent or JSON escapes in a token.
struct Esc {
    codec: Codec,
    /// Position after the last delimiter known (may lag behind).
    tok_start: u64,
    /// Next position to look for an escape at.
    scan: u64,
    seg: Option<Seg>,
    /// Active: where undecoded input starts.
    pos: u64,
    /// Unicode: the end of the last character read (decoded or dropped).
    /// Its segment ends at a delimiter only [`LITERAL_BEFORE`] bytes past
    /// it: an invisible character after every letter of `key = value` or
    /// of a PEM block must not cut the text into tokens its patterns never
    /// see whole.
    last_unit: u64,
}

/// The input of one feed: `hay` from stream offset `base` on, and `pre`,
/// the bytes right before it.
#[derive(Clone, Copy)]
struct Near<'a> {
    pre: &'a [u8],
    hay: &'a [u8],
    base: u64,
}

impl<'a> Near<'a> {
    /// The label before offset `start` (see [`label`]), copied into `buf`
    /// when part of it is in `pre`.
    fn label_before<'b>(&self, start: u64, buf: &'b mut [u8; LABEL_MAX]) -> &'b [u8]
    where
        'a: 'b,
    {
        let at = start
            .checked_sub(self.base)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s >= LABEL_MAX);
        if let Some(before) = at.and_then(|s| self.hay.get(s - LABEL_MAX..s)) {
            return label(before);
        }
        let mut n = 0;
        for q in start.saturating_sub(LABEL_MAX as u64)..start {
            let byte = match q.checked_sub(self.base) {
                Some(i) => usize::try_from(i).ok().and_then(|i| self.hay.get(i)),
                None => usize::try_from(self.base - q)
                    .ok()
                    .and_then(|back| self.pre.len().checked_sub(back))
                    .and_then(|i| self.pre.get(i)),
            };
            match byte {
                Some(&b) => {
                    buf[n] = b;
                    n += 1;
                }
                // Only bytes that run up to `start` make a label.
                None => n = 0,
            }
        }
        label(&buf[..n])
    }
}

/// The decoding layers of one stream. See the [module docs](self).
pub(crate) struct Decoders {
    /// Depth of the stream these layers read (0: the raw stream).
    depth: u8,
    /// The least confidence the nested scans keep.
    min: Confidence,
    b64: Base64,
    /// The hex layer, one instance per [`Align`].
    hex: [Hex; 3],
    pct: Esc,
    json: Esc,
    html: Esc,
    uni: Esc,
    codes: Codes,
    /// The UTF-16 layer, one instance per byte order.
    wide: [Wide; 2],
    /// Compressed data; `None` where it is not decoded (incoming
    /// redaction, which cannot rewrite compressed bytes).
    inflate: Option<Inflate>,
    /// The nested scans: of the base64 phases, of the hex instances, and of
    /// percent, JSON, HTML references, character codes and unicode.
    b64_pools: [Pool; PHASES],
    hex_pools: [Pool; 3],
    pools: [Pool; 5],
    wide_pools: [Pool; 2],
    /// Where base64 and hex runs could start in the current input.
    runs: Runs,
}

impl Decoders {
    #[cfg(test)]
    pub(crate) fn new(depth: u8, min: Confidence) -> Decoders {
        Decoders::with_inflate(depth, min, true)
    }

    /// [`Decoders::new`]; `inflate`: decode gzip, zlib and zip data too,
    /// here and in every nested scan above the probing depth.
    pub(crate) fn with_inflate(depth: u8, min: Confidence, inflate: bool) -> Decoders {
        Decoders {
            depth,
            min,
            b64: Base64 {
                run: None,
                len: 0,
                nonhex: false,
                nl: 0,
                cr: 0,
                segs: None,
                bits: 0,
                pos: [0; PHASES],
                chars: 0,
                anl: 0,
                tail: smallvec::SmallVec::new(),
                tail_end: 0,
            },
            hex: [Align::Even, Align::OddPlain, Align::OddDelimited].map(Hex::new),
            pct: Esc::new(Codec::Percent),
            json: Esc::new(Codec::Json),
            html: Esc::new(Codec::Html),
            uni: Esc::new(Codec::Unicode),
            codes: Codes::new(),
            wide: [Endian::Little, Endian::Big].map(Wide::new),
            // At the probing depth a header is only looked for: compressed
            // data there would be a fourth decoding, and an inflater (a 32
            // KiB window) in every probing scan a crafted stream can open
            // would be megabytes.
            inflate: inflate.then(|| Inflate::new(depth >= MAX_DEPTH, min)),
            b64_pools: std::array::from_fn(|_| Pool::new(min, inflate)),
            hex_pools: std::array::from_fn(|_| Pool::new(min, inflate)),
            pools: std::array::from_fn(|_| Pool::new(min, inflate)),
            wide_pools: std::array::from_fn(|_| Pool::new(min, inflate)),
            runs: Runs::default(),
        }
    }

    fn reset(&mut self) {
        let fresh = Decoders::with_inflate(self.depth, self.min, self.inflate.is_some());
        self.b64 = fresh.b64;
        self.hex = fresh.hex;
        self.pct = fresh.pct;
        self.json = fresh.json;
        self.html = fresh.html;
        self.uni = fresh.uni;
        self.codes = fresh.codes;
        self.wide = fresh.wide;
        if let Some(inflate) = self.inflate.as_mut() {
            // The inflaters' buffers stay.
            inflate.reset();
        }
        let pools = self.b64_pools.iter_mut().chain(&mut self.hex_pools);
        let pools = pools.chain(&mut self.pools).chain(&mut self.wide_pools);
        for p in pools {
            if let Some(s) = p.sub.as_mut() {
                s.reset();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn b64_active(&self) -> bool {
        self.b64.segs.is_some()
    }

    fn discard(&self) -> bool {
        self.depth >= MAX_DEPTH
    }

    /// Decode the new bytes `hay[from..]` (`hay` starts at stream offset
    /// `base` and holds everything from this layer set's last frontier on;
    /// `pre`, the bytes right before it, at least [`LABEL_MAX`] of them
    /// unless the stream is shorter). Findings (in this stream's offsets)
    /// go to `out`.
    pub(crate) fn feed(
        &mut self,
        sc: &Scanner,
        pre: &[u8],
        hay: &[u8],
        base: u64,
        from: usize,
        out: &mut Vec<Raw>,
    ) {
        let d = self.depth + 1;
        let discard = self.discard();
        let [p2, p3, p4, p5, p6] = &mut self.pools;
        let near = Near { pre, hay, base };
        self.runs.compute::<MIN_B64, { 2 * MIN_HEX }>(hay, from);
        let runs = &self.runs;
        let p0 = &mut self.b64_pools;
        self.b64
            .feed(sc, hay, base, from, discard, d, p0, runs, out);
        for (hex, pool) in self.hex.iter_mut().zip(&mut self.hex_pools) {
            hex.feed(sc, near, from, discard, d, pool, runs, out);
        }
        self.pct.feed(sc, near, from, discard, d, p2, out);
        self.json.feed(sc, near, from, discard, d, p3, out);
        self.html.feed(sc, near, from, discard, d, p5, out);
        self.uni.feed(sc, near, from, discard, d, p6, out);
        self.codes.feed(sc, near, from, discard, d, p4, runs, out);
        for (wide, pool) in self.wide.iter_mut().zip(&mut self.wide_pools) {
            wide.feed(sc, hay, base, from, discard, d, pool, out);
        }
        if let Some(inflate) = self.inflate.as_mut() {
            inflate.feed(sc, hay, base, false, discard, d, out);
        }
    }

    /// End of stream: close every open segment.
    pub(crate) fn finish(
        &mut self,
        sc: &Scanner,
        pre: &[u8],
        hay: &[u8],
        base: u64,
        out: &mut Vec<Raw>,
    ) {
        let near = Near { pre, hay, base };
        let d = self.depth + 1;
        let discard = self.discard();
        let [p2, p3, p4, p5, p6] = &mut self.pools;
        self.b64.end_run(sc, d, &mut self.b64_pools, out);
        for (hex, pool) in self.hex.iter_mut().zip(&mut self.hex_pools) {
            hex.end_run(sc, d, pool, out);
        }
        self.pct.finish(sc, hay, base, discard, d, p2, out);
        self.json.finish(sc, hay, base, discard, d, p3, out);
        self.html.finish(sc, hay, base, discard, d, p5, out);
        self.uni.finish(sc, hay, base, discard, d, p6, out);
        let end = base + hay.len() as u64;
        self.codes.finish(sc, near, end, discard, d, p4, out);
        for (wide, pool) in self.wide.iter_mut().zip(&mut self.wide_pools) {
            wide.end_run(sc, d, pool, out);
        }
        if let Some(inflate) = self.inflate.as_mut() {
            inflate.feed(sc, hay, base, true, discard, d, out);
        }
    }

    /// No finding not yet reported starts before this offset (`end`: the
    /// stream's end so far).
    pub(crate) fn frontier(&self, end: u64) -> u64 {
        let [p2, p3, p4, p5, p6] = &self.pools;
        let b = match &self.b64.segs {
            Some(segs) => {
                let pending = self.b64.pending(end);
                segs.iter()
                    .zip(&self.b64_pools)
                    .map(|(seg, pool)| pool.frontier(seg, pending))
                    .min()
                    .unwrap_or(pending)
            }
            None => self.b64.run.unwrap_or(end),
        };
        let h = self
            .hex
            .iter()
            .zip(&self.hex_pools)
            .map(|(hex, pool)| hex.frontier(pool, end))
            .min()
            .unwrap_or(end);
        b.min(h)
            .min(self.pct.frontier(p2, end))
            .min(self.json.frontier(p3, end))
            .min(self.html.frontier(p5, end))
            .min(self.uni.frontier(p6, end))
            .min(self.codes.frontier(p4, end))
            .min(
                self.wide
                    .iter()
                    .zip(&self.wide_pools)
                    .map(|(wide, pool)| wide.frontier(pool, end))
                    .min()
                    .unwrap_or(end),
            )
            .min(self.inflate.as_ref().map_or(end, |i| i.frontier(end)))
    }
}

impl Base64 {
    /// The first character some phase has not decoded yet (at most the
    /// last three).
    fn pending(&self, end: u64) -> u64 {
        match self.chars {
            0 => end,
            c => self.pos[((c - c.min(3)) % 4) as usize],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        from: usize,
        discard: bool,
        depth: u8,
        pools: &mut [Pool; PHASES],
        runs: &Runs,
        out: &mut Vec<Raw>,
    ) {
        let mut i = from;
        while i < hay.len() {
            if self.segs.is_some() {
                i = self.active(sc, hay, base, i, depth, pools, out);
                continue;
            }
            // Idle: count the run; activate when it qualifies.
            let Some(rest) = hay.get(i..) else { break };
            let mut activated = None;
            // Locals, so the loop runs in registers.
            let (mut run, mut len, mut nonhex, mut nl, mut cr) =
                (self.run, self.len, self.nonhex, self.nl, self.cr);
            let breaks = |b: u8| CLASS[usize::from(b)] & B64 == 0 && b != b'\n' && b != b'\r';
            let mut k = 0;
            while k < rest.len() {
                if run.is_none() {
                    // A run that reaches MIN_B64 characters spans MIN_B64
                    // bytes that do not end runs: jump to the next such
                    // window.
                    if let Some(p) = runs.next_b64(i + k) {
                        if p > i + k {
                            k = p - i;
                            continue;
                        }
                    } else if let Some(&probe) = rest.get(k + MIN_B64 as usize - 1) {
                        // Before the new input (a rewound segment): skip
                        // while the byte MIN_B64 - 1 ahead ends runs, else
                        // resume after the last byte that ends one.
                        if breaks(probe) {
                            k += MIN_B64 as usize;
                            continue;
                        }
                        let window = rest.get(k..k + MIN_B64 as usize - 1).unwrap_or_default();
                        if let Some(q) = window.iter().rposition(|&b| breaks(b)) {
                            k += q + 1;
                            continue;
                        }
                    }
                }
                let b = rest[k];
                let c = CLASS[usize::from(b)];
                if c & B64 != 0 {
                    if run.is_none() {
                        run = Some(base + (i + k) as u64);
                        len = 0;
                        nonhex = false;
                    }
                    nl = 0;
                    cr = 0;
                    // The run's characters from here, in a tight loop: up
                    // to the first byte that is not one, or to the one that
                    // makes the run qualify.
                    let mut seen = if nonhex { NONHEX } else { 0 };
                    let mut e = k;
                    let mut qualifies = false;
                    let qualified = |len: u32, seen: u8| {
                        len >= MIN_B64 && (seen & NONHEX != 0 || len >= LONG_B64)
                    };
                    // Sixteen at a time while all sixteen are run
                    // characters, by the class pass's tables (two byte
                    // shuffles a class, where a table load a byte was
                    // about a fifth of a text chunk's decoding);
                    // overshooting the qualifying byte changes nothing: a
                    // run is decoded from its start.
                    while let Some(w) = rest.get(e..e + 16) {
                        let mut bytes = [0u8; 16];
                        bytes.copy_from_slice(w);
                        let (chars, nonhex) = super::runs::chars16(bytes);
                        if chars != 0xffff {
                            break;
                        }
                        if nonhex != 0 {
                            seen |= NONHEX;
                        }
                        len += 16;
                        e += 16;
                        if qualified(len, seen) {
                            qualifies = true;
                            break;
                        }
                    }
                    while let Some(&n) = rest.get(e).filter(|_| !qualifies) {
                        let cn = CLASS[usize::from(n)];
                        if cn & B64 == 0 {
                            break;
                        }
                        seen |= cn;
                        len += 1;
                        e += 1;
                        if qualified(len, seen) {
                            qualifies = true;
                            break;
                        }
                    }
                    nonhex = seen & NONHEX != 0;
                    if qualifies {
                        activated = run;
                        break;
                    }
                    k = e;
                    continue;
                } else if run.is_some() && (b == b'\n' || b == b'\r') {
                    // A wrapped run breaks its lines with `\n` or `\r\n`; a
                    // blank line ends it, and so do three `\r`: left
                    // pending through any number of them, a run kept the
                    // whole stream held back behind its start.
                    let count = if b == b'\n' { &mut nl } else { &mut cr };
                    *count += 1;
                    if nl >= 2 || cr >= 3 {
                        run = None;
                    }
                } else {
                    run = None;
                }
                k += 1;
            }
            (self.run, self.len, self.nonhex, self.nl, self.cr) = (run, len, nonhex, nl, cr);
            match activated {
                Some(start) => {
                    self.run = None;
                    if !discard && let Some(end) = self.short_noise(sc, hay, base, start) {
                        i = end;
                        continue;
                    }
                    // A Kubernetes Secret's `data:` or a JSON object holds a
                    // name and a base64 value (`AWS_SECRET_ACCESS_KEY:
                    // d0phbHJY...`): a pattern that needs the name beside
                    // the value would see neither with the other. So every
                    // phase's nested scan starts with the run's label, the
                    // name and separator right before it (a finding in it
                    // maps to the run's start).
                    let mut buf = [0u8; LABEL_MAX];
                    let label = match discard {
                        true => &[][..],
                        false => self.label_before(hay, base, start, &mut buf),
                    };
                    self.segs = Some(std::array::from_fn(|ph| {
                        let mut seg = pools[ph].open(Codec::Base64, start, discard);
                        for &b in label {
                            seg.put(b, (start, start + 1));
                        }
                        seg
                    }));
                    self.bits = 0;
                    self.chars = 0;
                    self.anl = 0;
                    i = usize::try_from(start.saturating_sub(base)).unwrap_or(i);
                }
                None => break,
            }
        }
        if let Some(segs) = self.segs.as_mut() {
            for (seg, pool) in segs.iter_mut().zip(pools.iter_mut()) {
                pool.flush(sc, seg, depth, out);
            }
        }
        self.keep_tail(hay, base);
    }

    /// The stream byte at offset `q`, from the input or the kept tail.
    fn byte_at(&self, hay: &[u8], base: u64, q: u64) -> Option<u8> {
        if q >= base {
            return hay.get(usize::try_from(q - base).ok()?).copied();
        }
        let back = usize::try_from(self.tail_end.checked_sub(q)?).ok()?;
        self.tail.len().checked_sub(back).map(|i| self.tail[i])
    }

    /// The up to [`LABEL_MAX`] stream bytes before offset `end` that the
    /// input and the kept tail still hold, and how many there are.
    fn bytes_before(&self, hay: &[u8], base: u64, end: u64) -> ([u8; LABEL_MAX], usize) {
        let mut buf = [0u8; LABEL_MAX];
        let mut n = 0;
        for q in end.saturating_sub(LABEL_MAX as u64)..end {
            if let Some(b) = self.byte_at(hay, base, q) {
                buf[n] = b;
                n += 1;
            }
        }
        (buf, n)
    }

    /// Keep the last [`LABEL_MAX`] bytes seen for the next input's labels.
    fn keep_tail(&mut self, hay: &[u8], base: u64) {
        let end = base + hay.len() as u64;
        let mut from = end.saturating_sub(LABEL_MAX as u64);
        // A pending run may still open a segment, whose label is read from
        // the LABEL_MAX bytes before the run's start: keep those too (the
        // run is shorter than LONG_B64 characters, so this stays small).
        if let Some(r) = self.run {
            from = from.min(r.saturating_sub(LABEL_MAX as u64));
        }
        if from >= base {
            // The common case: the input alone holds the tail; the buffer
            // is reused, so a feed allocates nothing here.
            let at = usize::try_from(from - base).unwrap_or(0);
            self.tail.clear();
            self.tail
                .extend_from_slice(hay.get(at..).unwrap_or_default());
        } else {
            // Part of it is in the old tail: read it before replacing it.
            let mut tail =
                smallvec::SmallVec::with_capacity(usize::try_from(end - from).unwrap_or(0));
            for q in from..end {
                match self.byte_at(hay, base, q) {
                    Some(b) => tail.push(b),
                    // Only a contiguous stretch up to `end` is of use.
                    None => tail.clear(),
                }
            }
            self.tail = tail;
        }
        self.tail_end = end;
    }

    /// The label before offset `start` (see [`label`]): in the input, or
    /// copied into `buf` when part of it is in the kept tail.
    fn label_before<'a>(
        &self,
        hay: &'a [u8],
        base: u64,
        start: u64,
        buf: &'a mut [u8; LABEL_MAX],
    ) -> &'a [u8] {
        let at = start
            .checked_sub(base)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s >= LABEL_MAX);
        match at.and_then(|s| hay.get(s - LABEL_MAX..s)) {
            // The common case: the input alone holds the bytes before.
            Some(before) => label(before),
            None => {
                let (before, n) = self.bytes_before(hay, base, start);
                *buf = before;
                label(&buf[..n])
            }
        }
    }

    /// The fast path for the common base64 run: one that ends inside this
    /// input and decodes (with its label, in every phase) to fewer than
    /// [`SHORT`] bytes that [`worth_scanning`] rejects. Such a run would be
    /// opened, decoded and closed as a segment without a nested scan and
    /// without a finding, so it is skipped: returns the index of the byte
    /// that ends it (see [`short_run`]). `None`: take the segment path.
    fn short_noise(&self, sc: &Scanner, hay: &[u8], base: u64, start: u64) -> Option<usize> {
        let s = usize::try_from(start.checked_sub(base)?).ok()?;
        let run = hay.get(s..)?;
        let mut lab = [0u8; LABEL_MAX];
        let label = self.label_before(hay, base, start, &mut lab);
        short_run(sc, label, run, true).map(|end| s + end)
    }

    /// Decode from `i` until the run ends (returns the index of the byte
    /// that ended it) or the input does.
    #[allow(clippy::too_many_arguments)]
    fn active(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        i: usize,
        depth: u8,
        pools: &mut [Pool; PHASES],
        out: &mut Vec<Raw>,
    ) -> usize {
        let mut k = i;
        while let Some(&b) = hay.get(k) {
            let p = base + k as u64;
            if CLASS[usize::from(b)] & B64 != 0 {
                self.anl = 0;
                self.bits = (self.bits << 6) | b64_val(b);
                let c = self.chars;
                self.pos[(c % 4) as usize] = p;
                self.chars += 1;
                // Character `c` ends a quad of the phase that started one
                // three characters ago.
                if c >= 3
                    && let Some(segs) = self.segs.as_mut()
                {
                    let seg = &mut segs[((c + 1) % 4) as usize];
                    let span = (self.pos[((c + 1) % 4) as usize], p + 1);
                    let acc = self.bits;
                    seg.put((acc >> 16) as u8, span);
                    seg.put((acc >> 8) as u8, span);
                    seg.put(acc as u8, span);
                }
            } else if b == b'\n' || b == b'\r' {
                if b == b'\n' {
                    self.anl += 1;
                    if self.anl >= 2 {
                        self.end_run(sc, depth, pools, out);
                        return k;
                    }
                }
            } else {
                self.end_run(sc, depth, pools, out);
                return k;
            }
            k += 1;
        }
        hay.len()
    }

    fn end_run(&mut self, sc: &Scanner, depth: u8, pools: &mut [Pool; PHASES], out: &mut Vec<Raw>) {
        self.run = None;
        if self.segs.is_none() {
            // No run was being decoded (most streams): `take` would still
            // copy the whole, large, empty option.
            self.bits = 0;
            self.chars = 0;
            return;
        }
        let c = self.chars;
        let segs = self.segs.take().into_iter().flatten();
        for (ph, (mut seg, pool)) in segs.zip(pools.iter_mut()).enumerate() {
            // The characters of this phase's unfinished quad.
            let r = c.saturating_sub(ph as u64) % 4;
            if r >= 2 {
                let span = (
                    self.pos[((c - r) % 4) as usize],
                    self.pos[((c - 1) % 4) as usize] + 1,
                );
                let acc = self.bits & ((1 << (6 * r)) - 1);
                match r {
                    2 => seg.put((acc >> 4) as u8, span),
                    _ => {
                        seg.put((acc >> 10) as u8, span);
                        seg.put((acc >> 2) as u8, span);
                    }
                }
            }
            pool.close(sc, seg, depth, out);
        }
        self.bits = 0;
        self.chars = 0;
    }
}

/// Where the base64 run at the start of `run` ends, if it is short noise:
/// it ends inside `run`, by the same rule as [`Base64::active`] (`\r`
/// skipped, a second `\n` with no character between, or any other byte
/// outside the alphabet), and decodes, after `label` and in every phase,
/// to fewer than [`SHORT`] bytes that [`worth_scanning`] rejects. `None`:
/// the segment path decides.
///
/// Line breaks are followed, not refused: a log line that ends in a
/// base64 character (`took=89ms`) joins the next line's timestamp into
/// one run, and refusing every such run sent each log line through the
/// segment path (measured: 12.5% of the instructions of scanning a
/// plain log of that shape).
///
/// With `prefilter`, the run's characters go through the [`B64Gate`]
/// first, and each phase's classes are counted as it is decoded: a phase
/// is judged by its counts alone when neither the gate nor the byte gate
/// on the label's windows found a literal start, not passed over again by
/// [`worth_scanning`] (the verdict is the same either way: a property test
/// holds them equal). Before all that, [`quick_noise`] judges most runs
/// (on log-like text) without decoding their phases.
pub(crate) fn short_run(sc: &Scanner, label: &[u8], run: &[u8], prefilter: bool) -> Option<usize> {
    if prefilter {
        match quick_noise(sc, label, run) {
            Quick::Noise(end) => return Some(end),
            Quick::Segment => return None,
            Quick::Unsure => {}
        }
    }
    // Most characters a run can have and still decode to under SHORT
    // bytes; line breaks may add as many bytes again before this path
    // leaves it to the segment.
    let limit = SHORT / 3 * 4 + 4;
    let (gate, any) = sc.b64_gate().parts();
    // Every phase, as the segment path decodes them (see `segs`), each
    // starting with the label: one copy of a whole array per phase,
    // not a call to `memcpy` for the label's length.
    let mut first = [0u8; SHORT];
    first.get_mut(..label.len())?.copy_from_slice(label);
    let mut bufs = [first; PHASES];
    let mut lens = [label.len(); PHASES];
    let labelled = label.iter().fold(Tally::default(), |mut t, &b| {
        t.add(b);
        t
    });
    // Each phase's class counts (see `COUNTS`; its top word, a header's
    // pair bits, is never read as a count).
    let mut counts = [labelled.counts; PHASES];
    let (mut bits, mut chars, mut newlines, mut hit) = (0u32, 0usize, 0u8, u64::from(any));
    let mut end = None;
    // Cut once, not counted per character (`take` kept a second counter).
    let run = run.get(..2 * limit).unwrap_or(run);
    for (j, &b) in run.iter().enumerate() {
        match run_byte(b, &mut newlines) {
            RunByte::Char(v) => {
                bits = (bits << 6) | v;
                // The last three characters (the first two keys hold zeros
                // no run has: a spurious hit only costs the byte gate).
                hit |= gate_bit(gate, bits);
                chars += 1;
                // Past `limit` characters a phase's buffer is full (its store
                // below fails) or `chars` is judged after the loop.
                if chars >= 4 {
                    let ph = chars % 4;
                    let k = lens[ph];
                    // Three byte stores: one 4-byte store (its fourth byte
                    // overwritten by the next) ran the same instructions and
                    // JSON 7% slower (measured side by side, wall clock).
                    let quad = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
                    bufs[ph].get_mut(k..k + 3)?.copy_from_slice(&quad);
                    lens[ph] += 3;
                    counts[ph] = quad
                        .iter()
                        .fold(counts[ph], |n, &d| n.wrapping_add(COUNTS[usize::from(d)]));
                }
            }
            RunByte::Break => {}
            RunByte::End => {
                end = Some(j);
                break;
            }
        }
    }
    // The run reaches the input's end (it may go on in the next one), or
    // is longer than this path looks: the segment path decides.
    let end = end?;
    if chars > limit {
        return None;
    }
    let bytes = sc.literal_gate();
    // No literal start and no header's pair in any phase's decoded bytes,
    // nor in the label: only the few windows that straddle the two are
    // left to look at.
    let clear = prefilter && hit & 1 == 0 && labelled.header == 0 && !bytes.any_in(label);
    for (ph, ((buf, k), counts)) in bufs.iter_mut().zip(lens).zip(counts).enumerate() {
        let r = chars.saturating_sub(ph) % 4;
        let acc = bits & ((1 << (6 * r)) - 1);
        // Two bytes written whatever the tail's length (a fixed-size
        // store, where a slice of one or two bytes was a `memcpy`
        // call); only the first `n` are read.
        let (tail, n) = match r {
            2 => ([(acc >> 4) as u8, 0], 1),
            3 => ([(acc >> 10) as u8, (acc >> 2) as u8], 2),
            _ => ([0, 0], 0),
        };
        let k2 = k + n;
        // Past `SHORT - 2` the segment path decides (it starts a nested
        // scan at `SHORT` anyway).
        buf.get_mut(k..k + 2)?.copy_from_slice(&tail);
        // At SHORT decoded bytes the segment path starts a nested scan.
        if k2 >= SHORT {
            return None;
        }
        let dec = &buf[..k2];
        let straddle = dec.get(label.len().saturating_sub(2)..(label.len() + 2).min(k2));
        let paired = dec
            .get(label.len())
            .is_some_and(|&d| (labelled.prev >> 8) & COUNTS[usize::from(d)] != 0);
        let worth = match clear && !paired && !straddle.is_none_or(|w| bytes.any_in(w)) {
            true => {
                let counts = tail[..n]
                    .iter()
                    .fold(counts, |n, &d| n.wrapping_add(COUNTS[usize::from(d)]));
                let tally = Tally {
                    counts,
                    ..Tally::default()
                };
                tally.worth(dec)
            }
            false => worth_scanning(sc, dec),
        };
        if worth {
            return None;
        }
    }
    Some(end)
}

/// What a byte does to a base64 run, by [`Base64::active`]'s rule: it is
/// one of its characters (with its six bits), a line break it may wrap at
/// (`\r`, or a single `\n`), or its end (a second `\n` with no character
/// between, or any other byte).
enum RunByte {
    Char(u32),
    Break,
    End,
}

/// [`RUN_VAL`]'s marks for the bytes that are not characters.
const RUN_LF: u8 = 64;
const RUN_CR: u8 = 65;
const RUN_END: u8 = 128;

/// Per byte, what [`run_byte`] needs in one load (where a class load and a
/// bits load were two): a base64 character's six bits, or a mark.
static RUN_VAL: [u8; 256] = {
    let mut t = [RUN_END; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if class_of(b) & B64 != 0 {
            t[i] = b64_bits(b);
        }
        i += 1;
    }
    t[b'\n' as usize] = RUN_LF;
    t[b'\r' as usize] = RUN_CR;
    t
};

#[inline(always)]
fn run_byte(b: u8, newlines: &mut u8) -> RunByte {
    let v = RUN_VAL[usize::from(b)];
    if v < RUN_LF {
        *newlines = 0;
        RunByte::Char(u32::from(v))
    } else if v == RUN_LF {
        *newlines += 1;
        match *newlines >= 2 {
            true => RunByte::End,
            false => RunByte::Break,
        }
    } else if v == RUN_CR {
        RunByte::Break
    } else {
        RunByte::End
    }
}

#[cfg(test)]
mod run_byte_tests {
    use super::*;

    /// The one-load table says what the class table and the bits table
    /// say, for every byte, after a character and after a line break.
    #[test]
    fn run_byte_is_the_class_rule() {
        for b in 0..=255u8 {
            for before in [0u8, 1] {
                let mut newlines = before;
                let got = run_byte(b, &mut newlines);
                let want = if CLASS[usize::from(b)] & B64 != 0 {
                    Some(b64_val(b))
                } else {
                    None
                };
                match got {
                    RunByte::Char(v) => {
                        assert_eq!(Some(v), want, "byte {b:#04x}");
                        assert_eq!(newlines, 0);
                    }
                    RunByte::Break => {
                        assert!(want.is_none(), "byte {b:#04x}");
                        assert!(b == b'\r' || (b == b'\n' && before == 0), "byte {b:#04x}");
                    }
                    RunByte::End => {
                        assert!(want.is_none(), "byte {b:#04x}");
                        assert!(!matches!(b, b'\r') && (b != b'\n' || before == 1));
                    }
                }
            }
        }
    }
}

/// [`quick_noise`]'s verdict on a short run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Quick {
    /// Noise, ended by the byte at this index: [`short_run`]'s `Some`.
    Noise(usize),
    /// The segment path decides: [`short_run`]'s `None`.
    Segment,
    /// Not decided here: the phases are decoded.
    Unsure,
}

/// [`short_run`] without decoding the phases, for the common run: one the
/// [`B64Gate`] clears (no literal start, header pair, escape or zero byte
/// in any phase), whose label holds no literal start, header pair or
/// escape byte, and whose phases each hold, with the label, fewer than
/// [`MIN_B64`] base64 characters (so fewer hex digits than a run or a
/// code list needs: every hex digit is a base64 character). Each
/// character adds its pair's [`PHASE_B64`] word, rotated to its phases,
/// where decoding wrote three bytes and summed three table entries; only
/// the first two bytes of each phase are made, for the windows that
/// straddle the label. Its `Noise` is always [`short_run`]'s `Some` (a
/// property test holds the two equal); anything else goes the long way.
pub(crate) fn quick_noise(sc: &Scanner, label: &[u8], run: &[u8]) -> Quick {
    // Well short of a phase buffer's end (where the long way decides)
    // and of `short_run`'s character limit: a count byte cannot carry.
    let most = SHORT.saturating_sub(label.len() + 8);
    // A run of more characters, or with more than seven line breaks, is
    // decided the long way: cut once, not counted per character.
    let look = run.get(..most + 8).unwrap_or(run);
    let (gate, any) = sc.b64_gate().quick_parts();
    let (mut bits, mut chars, mut newlines, mut hit) = (0u32, 0usize, 0u8, u64::from(any));
    // The pairs' counts, one byte per phase: the sum rotated by a byte
    // before each pair is added puts every pair in its phase's byte, up to
    // one rotation of the whole word, which is left alone (each phase's
    // count meets the same bound below, so which byte holds which phase
    // does not matter). One rotation by a constant a character, where
    // rotating each pair by its index took a shift count; no byte carries
    // (see `most`).
    let mut counts = 0u32;
    // The run's first six characters: each phase's first two bytes, kept
    // here rather than read again from the run.
    let mut first = [0u32; 6];
    let mut end = None;
    for (j, &b) in look.iter().enumerate() {
        match run_byte(b, &mut newlines) {
            RunByte::Char(v) => {
                bits = (bits << 6) | v;
                hit |= gate_bit(gate, bits);
                // The first character pairs with a zero one: a spurious count
                // only sends the run the long way.
                let pair = PHASE_B64[(bits & 0xfff) as usize];
                counts = counts.rotate_right(8).wrapping_add(pair);
                if let Some(slot) = first.get_mut(chars) {
                    *slot = v;
                }
                chars += 1;
            }
            RunByte::Break => {}
            RunByte::End => {
                end = Some(j);
                break;
            }
        }
    }
    let Some(end) = end else {
        return match look.len() < run.len() {
            true => Quick::Unsure,
            false => Quick::Segment,
        };
    };
    // (A label that leaves no room, `most` 0, is the long way's too.)
    if hit & 1 != 0 || chars > most || most == 0 {
        return Quick::Unsure;
    }
    let labelled = label.iter().fold(Tally::default(), |mut t, &b| {
        t.add(b);
        t
    });
    let lane = |k: u32| (labelled.counts >> (16 * k)) & 0xffff;
    let bytes = sc.literal_gate();
    if labelled.header != 0 || lane(2) != 0 || bytes.any_in(label) {
        return Quick::Unsure;
    }
    // The label's last two bytes, then a phase's first two: the windows
    // that straddle the two (fixed-size stores: a slice copy of a byte or
    // two was a call to `memcpy`).
    let mut window = [0u8; 4];
    let w = match label {
        [.., x, y] => {
            window[..2].copy_from_slice(&[*x, *y]);
            2
        }
        [x] => {
            window[0] = *x;
            1
        }
        [] => 0,
    };
    for ph in 0..PHASES {
        if u64::from(counts >> (8 * ph) & 0xff) + lane(0) >= u64::from(MIN_B64) {
            return Quick::Unsure;
        }
        // The phase's first bytes, as many as it decodes (two
        // characters make one, three two).
        let made = chars.saturating_sub(ph).min(3).saturating_sub(1);
        let mut head = [0u8; 2];
        if let Some(&[x, y, z]) = first.get(ph..ph + 3) {
            head = [quad_bytes(x, y)[0], quad_bytes(y, z)[1]];
        } else if let Some(&[x, y]) = first.get(ph..ph + 2) {
            head[0] = quad_bytes(x, y)[0];
        }
        let made = made.min(2);
        let paired = made > 0 && (labelled.prev >> 8) & COUNTS[usize::from(head[0])] != 0;
        window[w] = head[0];
        window[w + 1] = head[1];
        if paired || bytes.any_in(&window[..w + made]) {
            return Quick::Unsure;
        }
    }
    Quick::Noise(end)
}

impl Hex {
    fn new(align: Align) -> Hex {
        Hex {
            align,
            stretch: Stretch::default(),
            exact: false,
            rs: RunSeg::default(),
            phase: HexPhase::Idle,
            tstart: 0,
        }
    }

    fn frontier(&self, pool: &Pool, end: u64) -> u64 {
        let idle = self.stretch.start.unwrap_or(end);
        self.rs.frontier(pool, self.pending(end), idle, MIN_HEX)
    }

    fn pending(&self, end: u64) -> u64 {
        match self.phase {
            HexPhase::Backslash
            | HexPhase::Zero
            | HexPhase::Prefix
            | HexPhase::Digit(_)
            | HexPhase::Lead => self.tstart,
            _ => end,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        near: Near<'_>,
        from: usize,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        runs: &Runs,
        out: &mut Vec<Raw>,
    ) {
        let (hay, base) = (near.hay, near.base);
        let mut k = from;
        while k < hay.len() {
            if !self.exact {
                let Some(start) = self.stretch.find::<HexBytes>(hay, base, k, runs) else {
                    break;
                };
                self.exact = true;
                self.phase = HexPhase::Idle;
                k = usize::try_from(start.saturating_sub(base)).unwrap_or(k);
                continue;
            }
            let Some(&b) = hay.get(k) else { break };
            let p = base + k as u64;
            if self.phase == HexPhase::Idle {
                self.start_token(b, p, near);
                if self.phase == HexPhase::Idle && CLASS[usize::from(b)] & (HEXD | HEXC) == 0 {
                    // Back to the fast mode after this byte.
                    self.exact = false;
                }
                k += 1;
                continue;
            }
            if !self.step(b, p, discard) {
                self.end_run(sc, depth, pool, out);
                self.start_token(b, p, near);
                if self.phase == HexPhase::Idle && CLASS[usize::from(b)] & (HEXD | HEXC) == 0 {
                    self.exact = false;
                }
            }
            k += 1;
        }
        self.rs.flush(sc, depth, pool, out, MIN_HEX);
    }

    fn start_token(&mut self, b: u8, p: u64, near: Near<'_>) {
        if self.align != Align::Even {
            // A run starts with the digit the odd instances skip; `\x41`
            // and `0x41` runs are the even instance's alone.
            if self.rs.start.is_none() && hex_val(b).is_some() {
                self.rs.open_labelled(p, near);
                self.tstart = p;
                self.phase = HexPhase::Lead;
            }
            return;
        }
        let phase = match b {
            b'\\' => HexPhase::Backslash,
            b'0' => HexPhase::Zero,
            _ => match hex_val(b) {
                Some(v) => HexPhase::Digit(v),
                None => return,
            },
        };
        self.rs.open_labelled(p, near);
        self.tstart = p;
        self.phase = phase;
    }

    /// One byte in a run. False: the run ended before this byte.
    fn step(&mut self, b: u8, p: u64, discard: bool) -> bool {
        match self.phase {
            HexPhase::Idle => false,
            HexPhase::Next | HexPhase::Delim(_) if self.align == Align::OddPlain => {
                match hex_val(b) {
                    // OddPlain's runs are plain digits: a delimiter ends one,
                    // and the digits after it are a run of their own.
                    Some(v) => {
                        self.tstart = p;
                        self.phase = HexPhase::Digit(v);
                        true
                    }
                    None => false,
                }
            }
            HexPhase::Next | HexPhase::Delim(_) => {
                let after_comma = self.phase == HexPhase::Delim(b',');
                let after_byte = self.phase == HexPhase::Next;
                if after_byte && matches!(b, b'-' | b':' | b',' | b' ' | b'=') {
                    self.phase = HexPhase::Delim(b);
                    return true;
                }
                if after_comma && b == b' ' {
                    self.phase = HexPhase::Delim(b' ');
                    return true;
                }
                let phase = match b {
                    b'\\' => HexPhase::Backslash,
                    b'0' => HexPhase::Zero,
                    _ => match hex_val(b) {
                        Some(v) => HexPhase::Digit(v),
                        None => return false,
                    },
                };
                self.tstart = p;
                self.phase = phase;
                true
            }
            HexPhase::Backslash => {
                if b == b'x' {
                    self.phase = HexPhase::Prefix;
                    true
                } else {
                    false
                }
            }
            HexPhase::Zero => {
                if b == b'x' || b == b'X' {
                    self.phase = HexPhase::Prefix;
                    true
                } else if let Some(v) = hex_val(b) {
                    self.byte(v, p, discard);
                    true
                } else {
                    false
                }
            }
            HexPhase::Lead => match hex_val(b) {
                Some(v) => {
                    self.tstart = p;
                    self.phase = HexPhase::Digit(v);
                    true
                }
                None => false,
            },
            HexPhase::Prefix => match hex_val(b) {
                Some(v) => {
                    self.phase = HexPhase::Digit(v);
                    true
                }
                None => false,
            },
            HexPhase::Digit(hi) => match hex_val(b) {
                Some(lo) => {
                    self.byte((hi << 4) | lo, p, discard);
                    true
                }
                None => false,
            },
        }
    }

    fn byte(&mut self, v: u8, p: u64, discard: bool) {
        self.phase = HexPhase::Next;
        self.rs.put(Codec::Hex, v, (self.tstart, p + 1), discard);
    }

    fn end_run(&mut self, sc: &Scanner, depth: u8, pool: &mut Pool, out: &mut Vec<Raw>) {
        self.phase = HexPhase::Idle;
        self.rs.end(sc, depth, pool, out, MIN_HEX);
    }
}

// ---------------------------------------------------------------- char codes

/// Where the character-code layer is inside a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CodePhase {
    Idle,
    /// After a token: its separators.
    Next,
    /// The digits of a token (`n` of them; `v` is the value of the last
    /// three).
    Digits {
        v: u16,
        n: u8,
    },
}

/// Character codes: byte values written as a list of decimal numbers
/// (`65,75,73`, `[65, 75, 73]`, `String.fromCharCode(65, 75, ...)`, a
/// pretty-printed JSON array). A run is at least [`MIN_CODES`] consecutive
/// numbers of at most three digits whose values are bytes (0-255); a
/// number and the separators after it (`,`, `;`, space, tab, line breaks)
/// take at most [`CODE_UNIT`] bytes. Digits glued before a list
/// (`99965,75,...`) make its first number longer than a byte: it is read
/// from its last three digits, or its last two when those are over 255.
struct Codes {
    stretch: Stretch,
    exact: bool,
    rs: RunSeg,
    phase: CodePhase,
    tstart: u64,
    /// Bytes of the current unit (the last number and its separators).
    unit: u64,
    /// Line feeds among the current unit's separators: a blank line ends
    /// a run, as it ends every other (the proxy joins a URL and header
    /// values with one, and a digit after it must not extend a list).
    nl: u8,
}

/// Fewest numbers a character-code run decodes (as for hex).
pub const MIN_CODES: u32 = MIN_HEX;
/// Widest unit of a character-code run: a number and its separators
/// (`122,\r\n  ` in a JSON array pretty-printed with two spaces).
const CODE_UNIT: u64 = 8;
/// Most bytes between two digits of a run.
const CODE_GAP: u8 = CODE_UNIT as u8 - 1;

fn code_sep(b: u8) -> bool {
    matches!(b, b',' | b';' | b' ' | b'\t' | b'\n' | b'\r')
}

/// A byte a character-code run cannot hold.
fn code_break(b: u8) -> bool {
    !b.is_ascii_digit() && !code_sep(b)
}

struct CodeBytes;

impl RunBytes for CodeBytes {
    const DIGITS: u32 = MIN_CODES;
    const GAP: u8 = CODE_GAP;
    // A run of MIN_CODES numbers, one of them over 9, spans at least this
    // many bytes (its digits and a separator after each but the last); the
    // hex windows of `runs` are this long, over a superset of the bytes. (A
    // run of numbers 0-9 alone decodes to control bytes no secret holds.)
    const NEED: usize = 2 * MIN_CODES as usize;
    // A UUID or a hex digest is a hex window only.
    const PROBE_IN_WINDOWS: bool = true;
    fn digit(b: u8) -> bool {
        b.is_ascii_digit()
    }
    fn gap(b: u8) -> bool {
        code_sep(b)
    }
    fn restarts(_: u8) -> bool {
        false
    }
}

impl Codes {
    fn new() -> Codes {
        Codes {
            stretch: Stretch::default(),
            exact: false,
            rs: RunSeg::default(),
            phase: CodePhase::Idle,
            tstart: 0,
            unit: 0,
            nl: 0,
        }
    }

    fn frontier(&self, pool: &Pool, end: u64) -> u64 {
        let idle = self.stretch.start.unwrap_or(end);
        self.rs.frontier(pool, self.pending(end), idle, MIN_CODES)
    }

    /// Where the number not yet decoded starts.
    fn pending(&self, end: u64) -> u64 {
        match self.phase {
            CodePhase::Digits { .. } => self.tstart,
            _ => end,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        near: Near<'_>,
        from: usize,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        runs: &Runs,
        out: &mut Vec<Raw>,
    ) {
        let (hay, base) = (near.hay, near.base);
        let mut k = from;
        while k < hay.len() {
            if !self.exact {
                let Some(start) = self.stretch.find::<CodeBytes>(hay, base, k, runs) else {
                    break;
                };
                self.exact = true;
                self.phase = CodePhase::Idle;
                k = usize::try_from(start.saturating_sub(base)).unwrap_or(k);
                continue;
            }
            let Some(&b) = hay.get(k) else { break };
            let p = base + k as u64;
            if !self.step(sc, near, b, p, discard, depth, pool, out) {
                self.end_run(sc, depth, pool, out);
                self.start(b, p, near);
            }
            if self.phase == CodePhase::Idle && code_break(b) {
                // Back to the fast mode after this byte.
                self.exact = false;
            }
            k += 1;
        }
        self.rs.flush(sc, depth, pool, out, MIN_CODES);
    }

    /// A digit starts a number, and a run if none is open.
    fn start(&mut self, b: u8, p: u64, near: Near<'_>) {
        if !b.is_ascii_digit() {
            self.phase = CodePhase::Idle;
            return;
        }
        self.rs.open_labelled(p, near);
        self.tstart = p;
        self.phase = CodePhase::Digits {
            v: u16::from(b - b'0'),
            n: 1,
        };
    }

    /// One byte in a run. False: the run ended before this byte.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        sc: &Scanner,
        near: Near<'_>,
        b: u8,
        p: u64,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) -> bool {
        match self.phase {
            CodePhase::Idle => {
                self.start(b, p, near);
                true
            }
            CodePhase::Digits { v, n } if b.is_ascii_digit() => {
                let v3 = (v % 100) * 10 + u16::from(b - b'0');
                if n < 3 {
                    self.phase = CodePhase::Digits { v: v3, n: n + 1 };
                } else {
                    // Longer than a byte: only a run's first number may
                    // be (digits glued before the list). Keep its last
                    // three digits, in a run of their own.
                    if self.rs.count > 0 {
                        self.end_run(sc, depth, pool, out);
                    }
                    self.tstart = p - 2;
                    self.rs.start = Some(self.tstart);
                    self.phase = CodePhase::Digits { v: v3, n: 3 };
                }
                true
            }
            CodePhase::Digits { v, .. } => {
                let v = if v <= 255 {
                    v
                } else {
                    if self.rs.count > 0 {
                        // Not a byte: the run ends before this number,
                        // and the next one starts with it.
                        let t = self.tstart;
                        self.end_run(sc, depth, pool, out);
                        self.rs.open_labelled(t, near);
                        self.tstart = t;
                    }
                    v % 100
                };
                self.byte(v as u8, p, discard);
                self.separator(b)
            }
            CodePhase::Next if b.is_ascii_digit() => {
                self.start(b, p, near);
                true
            }
            CodePhase::Next => self.separator(b),
        }
    }

    /// After a number: `b` must be one of its separators.
    fn separator(&mut self, b: u8) -> bool {
        self.unit += 1;
        self.nl += u8::from(b == b'\n');
        code_sep(b) && self.unit <= CODE_UNIT && self.nl < 2
    }

    /// A number ends before `end`: one decoded byte.
    fn byte(&mut self, v: u8, end: u64, discard: bool) {
        self.phase = CodePhase::Next;
        self.unit = end - self.tstart;
        self.nl = 0;
        self.rs
            .put(Codec::CharCodes, v, (self.tstart, end), discard);
    }

    fn end_run(&mut self, sc: &Scanner, depth: u8, pool: &mut Pool, out: &mut Vec<Raw>) {
        self.phase = CodePhase::Idle;
        self.rs.end(sc, depth, pool, out, MIN_CODES);
    }

    /// End of stream: a number the stream ends with is complete.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        sc: &Scanner,
        near: Near<'_>,
        end: u64,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) {
        if matches!(self.phase, CodePhase::Digits { .. }) {
            // A byte no number continues completes it.
            self.step(sc, near, b'.', end, discard, depth, pool, out);
        }
        self.end_run(sc, depth, pool, out);
    }
}

// ---------------------------------------------------------------- utf-16

/// Which byte of a UTF-16 code unit holds the character.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endian {
    /// `A\0K\0`: the character, then the zero byte.
    Little,
    /// `\0A\0K`: the zero byte, then the character.
    Big,
}

/// UTF-16 text (`iconv -t UTF-16`, PowerShell's `-EncodedCommand` once its
/// base64 is decoded): each ASCII character is a code unit of the
/// character and a zero byte. A run is at least [`MIN_WIDE`] such units; a
/// unit whose high byte is not zero (a character past U+00FF) or whose
/// character is a control byte other than tab and line breaks ends it.
/// One instance per byte order.
struct Wide {
    endian: Endian,
    /// Fast mode: look for the next zero byte.
    exact: bool,
    rs: RunSeg,
    /// A unit's first byte, waiting for its second.
    half: Option<(u64, u8)>,
}

/// Fewest code units a UTF-16 run decodes.
pub const MIN_WIDE: u32 = 16;

/// May `b` be the character of a code unit inside a run?
fn wide_char(b: u8) -> bool {
    b == 0 || b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b)
}

/// May `b` start a little-endian run? Not a line break, so that a stream
/// ending in one is released whole.
fn wide_start(b: u8) -> bool {
    b == 0 || b == b'\t' || (0x20..0x7f).contains(&b)
}

impl Wide {
    fn new(endian: Endian) -> Wide {
        Wide {
            endian,
            exact: false,
            rs: RunSeg::default(),
            half: None,
        }
    }

    fn frontier(&self, pool: &Pool, end: u64) -> u64 {
        let pending = self.half.map_or(end, |(q, _)| q);
        self.rs.frontier(pool, pending, pending, MIN_WIDE)
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        from: usize,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) {
        let mut k = from;
        while k < hay.len() {
            let p = base + k as u64;
            if !self.exact {
                // The first unit of a run starts at a zero byte, or (little
                // endian) just before one.
                let rest = hay.get(k..).unwrap_or_default();
                match memchr::memchr(0, rest) {
                    Some(z) => {
                        let z = k + z;
                        let before = z.checked_sub(1).filter(|&i| i >= k);
                        k = match before {
                            Some(i) if self.endian == Endian::Little && wide_start(hay[i]) => i,
                            _ => z,
                        };
                        self.exact = true;
                        continue;
                    }
                    None => {
                        // Little endian: the last byte may start a unit
                        // whose zero comes next.
                        if self.endian == Endian::Little
                            && let Some(&b) = hay.last()
                            && wide_start(b)
                        {
                            let q = base + hay.len() as u64 - 1;
                            self.half = Some((q, b));
                            self.rs.open(q);
                            self.exact = true;
                        }
                        break;
                    }
                }
            }
            let b = hay[k];
            if self.step(b, p, discard) {
                k += 1;
            } else {
                // The run ends before this byte; look from it again.
                self.end_run(sc, depth, pool, out);
                self.exact = false;
            }
        }
        self.rs.flush(sc, depth, pool, out, MIN_WIDE);
    }

    /// One byte in a run (`b` at `p`). False: the run ended before it.
    fn step(&mut self, b: u8, p: u64, discard: bool) -> bool {
        let starting = self.rs.start.is_none();
        match (self.endian, self.half) {
            (Endian::Little, None) => {
                if !(if starting {
                    wide_start(b)
                } else {
                    wide_char(b)
                }) {
                    return false;
                }
                self.half = Some((p, b));
            }
            (Endian::Little, Some((q, c))) => {
                if b != 0 {
                    return false;
                }
                self.unit(c, q, p, discard);
            }
            (Endian::Big, None) => {
                if b != 0 {
                    return false;
                }
                self.half = Some((p, 0));
            }
            (Endian::Big, Some((q, _))) => {
                if !wide_char(b) {
                    return false;
                }
                self.unit(b, q, p, discard);
            }
        }
        if starting {
            self.rs.open(p);
        }
        true
    }

    /// A code unit `q..=p`: one decoded byte.
    fn unit(&mut self, c: u8, q: u64, p: u64, discard: bool) {
        self.half = None;
        self.rs.put(Codec::Utf16, c, (q, p + 1), discard);
    }

    fn end_run(&mut self, sc: &Scanner, depth: u8, pool: &mut Pool, out: &mut Vec<Raw>) {
        self.half = None;
        self.rs.end(sc, depth, pool, out, MIN_WIDE);
    }
}

/// Compressed data inside a stream: a gzip member (`gzip -c key | base64`,
/// a `.gz` file in a multipart part, a tarball, a body compressed twice),
/// a zlib stream (`zlib.compress`, `git`'s objects) or a zip entry (`zip
/// -r`, and so `.docx` and `.jar` files). Each is known by its header
/// (`1f 8b 08` and any flags: Python's `gzip` ignores the reserved ones;
/// `78 01`, `78 5e`, `78 9c` or `78 da`, a 32 KiB window at any level;
/// `PK 03 04` with method 8 and no encryption) and decoded with
/// `flate2`'s inflate. Raw deflate and brotli have no header to be known
/// by.
///
/// The compressed bytes are fed in pieces of [`PIECE`] bytes counted from
/// the start of the deflate data, so what a piece decodes to, and the span
/// it maps back to (that piece and the one before it: inflate may hold a
/// few bits of one piece until the next), do not depend on chunk edges.
/// The checksums in a member's trailer are not checked: breaking one does
/// not hide what the data decodes to.
///
/// Headers are looked for in every byte, also in the bytes of a member
/// being decoded (its header's fields, its compressed data): a member
/// hidden in a gzip extra field, or glued behind an unfinished stored
/// block where the first member reads it as more deflate data, is decoded
/// beside the member around it. Most header-like bytes in binary data fail
/// within a few bytes; a header seen while [`MAX_MEMBERS`] members are
/// open (a crafted nest of stored blocks) is reported as [`UNREADABLE`]:
/// outgoing, refused rather than left unread. Whether a member is still
/// open at a header is judged by where it ended, not by how the stream was
/// chunked. A member that decodes to more than [`INFLATE_RATIO`] times its
/// size (past [`INFLATE_FREE`]) is reported as [`TOO_DEEP`]: outgoing, a
/// decompression bomb is refused rather than scanned for minutes or passed
/// unread.
struct Inflate {
    /// At the probing depth: a gzip, zlib or zip header is reported as
    /// [`TOO_DEEP`] (it would be a fourth decoding), not inflated.
    probing: bool,
    /// The next offset to look for a header at.
    scan: u64,
    /// Members being read, and members that ended past `scan` (they still
    /// count as open for a header before their end).
    members: Vec<Slot>,
    /// Slots of ended members, for the next ones (an inflater's 32 KiB
    /// window, a nested scan).
    spare: Vec<Slot>,
    /// The nested scans' least confidence.
    min: Confidence,
    out: Vec<u8>,
}

/// One member being read.
struct Slot {
    member: Member,
    /// Where it ended; `None` while it is read.
    ended: Option<u64>,
    rs: RunSeg,
    /// Decoded bytes of the member.
    decoded: u64,
    z: Box<flate2::Decompress>,
    pool: Pool,
}

#[derive(Clone, Copy)]
enum Member {
    /// A header starts at `start`; its fixed part is not all here yet.
    Header { start: u64, codec: Codec },
    /// Stepping over the header's fields: the next byte to read is `at`.
    Fields {
        start: u64,
        codec: Codec,
        at: u64,
        nuls: u8,
        trail: u8,
    },
    /// Inflating: the piece to feed next starts at `pos`.
    Data { start: u64, codec: Codec, pos: u64 },
}

/// Compressed bytes fed to inflate at a time.
const PIECE: u64 = 64;
/// How far (compressed bytes) a member may pin the stream behind the
/// piece it reads before it is refused as [`UNREADABLE`]: benign data
/// stays within the nested scan's hold-back (under 40 KiB) of it.
pub const PINNED_MAX: u64 = 64 * 1024;
/// A member's pin is checked every this many pieces (4 KiB).
const PINNED_EVERY: u64 = 64;
/// Members open at once before a header is refused as [`UNREADABLE`].
pub const MAX_MEMBERS: usize = 4;
/// Decoded bytes a member may produce before its ratio is checked.
pub const INFLATE_FREE: u64 = 1 << 20;
/// How many times its compressed size a member may decode to.
pub const INFLATE_RATIO: u64 = 100;
/// Decoded bytes handed to the nested scan at a time, so a piece that
/// decodes to much is not held whole.
const INFLATE_FLUSH: usize = 16 * 1024;

/// The most bytes [`compressed_at`] reads to tell (a zstd frame header
/// with every optional field, and its first block's header).
const HEADER_MAX: usize = 21;

impl Codec {
    /// Compressed data known by its header but not decompressed.
    fn unreadable(self) -> bool {
        matches!(
            self,
            Codec::Xz | Codec::Bzip2 | Codec::Zstd | Codec::SevenZip | Codec::Rar
        )
    }
}

/// Does `b` start with `magic`? `Err(())`: `b` is a shorter prefix of it.
/// (A byte loop: these are a few bytes, and a `memcmp` call costs more.)
fn starts(b: &[u8], magic: &[u8]) -> Result<bool, ()> {
    for (i, &m) in magic.iter().enumerate() {
        match b.get(i) {
            Some(&x) if x == m => {}
            Some(_) => return Ok(false),
            None => return Err(()),
        }
    }
    Ok(true)
}

/// What a header at the start of `b` is: `Some(codec)` when its first
/// bytes are the header of a compressed format, `None` when they are
/// not, and `Err(())` when `b` is too short to tell. Past the magic bytes,
/// the fields a real header must have are checked, so that binary data
/// seldom looks like one: xz's stream flags, 7z's and rar's version, a
/// bzip2 level and block magic, a zstd frame header and its first block's
/// type and size.
fn compressed_at(b: &[u8]) -> Result<Option<Codec>, ()> {
    let (magic, codec): (&[u8], Codec) = match b {
        [0x1f, ..] => (&[0x1f, 0x8b, 0x08], Codec::Gzip),
        [0x78] => return Err(()),
        [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..] => return Ok(Some(Codec::Zlib)),
        [b'P', ..] => (b"PK\x03\x04", Codec::Zip),
        [0xfd, ..] => (b"\xfd7zXZ\x00", Codec::Xz),
        [b'7', ..] => (b"7z\xbc\xaf\x27\x1c", Codec::SevenZip),
        [0x28, ..] => (&[0x28, 0xb5, 0x2f, 0xfd], Codec::Zstd),
        [b'B', ..] => (b"BZh", Codec::Bzip2),
        [b'R', ..] => (b"Rar!\x1a\x07", Codec::Rar),
        _ => return Ok(None),
    };
    if !starts(b, magic)? {
        return Ok(None);
    }
    Ok(header_fields(codec, b)?.then_some(codec))
}

/// The fields after `codec`'s magic bytes at the start of `b`:
/// `Err(())` while `b` is too short to tell.
fn header_fields(codec: Codec, b: &[u8]) -> Result<bool, ()> {
    let at = |i: usize| b.get(i).copied().ok_or(());
    Ok(match codec {
        // Reserved flags too: Python's `gzip` reads past them.
        Codec::Gzip => {
            at(3)?;
            true
        }
        Codec::Xz => at(6)? == 0 && matches!(at(7)?, 0x00 | 0x01 | 0x04 | 0x0a),
        Codec::SevenZip => at(6)? == 0,
        Codec::Rar => match at(6)? {
            0 => true,
            1 => at(7)? == 0,
            _ => false,
        },
        Codec::Bzip2 => {
            // A level digit, then a block's magic (the digits of pi in
            // BCD): an empty stream's end magic carries nothing.
            matches!(at(3)?, b'1'..=b'9') && {
                let mut ok = true;
                for (i, &m) in b"1AY&SY".iter().enumerate() {
                    ok &= at(4 + i)? == m;
                    if !ok {
                        break;
                    }
                }
                ok
            }
        }
        Codec::Zstd => {
            let fhd = at(4)?;
            let single = fhd & 0x20 != 0;
            if fhd & 0x08 != 0 || (!single && at(5)? >> 3 > 21) {
                return Ok(false);
            }
            let did = [0, 1, 2, 4][usize::from(fhd & 3)];
            let fcs = match fhd >> 6 {
                0 => usize::from(single),
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let block = 5 + usize::from(!single) + did + fcs;
            let h = u32::from_le_bytes([at(block)?, at(block + 1)?, at(block + 2)?, 0]);
            (h >> 1) & 3 != 3 && h >> 3 <= 128 * 1024
        }
        _ => true,
    })
}

/// Where the next header [`compressed_at`] knows starts in `hay`, from
/// `from` on: `Ok(Some((k, codec)))`, `Ok(None)` when there is none, or
/// `Err(k)` when the bytes from `k` on could still be one (not at `eof`).
fn next_header(hay: &[u8], from: usize, eof: bool) -> Result<Option<(usize, Codec)>, usize> {
    next_header_by(hay, from, eof, HEADER_ANCHORS.as_ref())
}

/// [`next_header`], with the anchors found by `anchors` or, without it, a
/// byte loop.
fn next_header_by(
    hay: &[u8],
    from: usize,
    eof: bool,
    anchors: Option<&packed::Searcher>,
) -> Result<Option<(usize, Codec)>, usize> {
    // Before `tail` every header is whole; in it, each position is tried.
    let tail = if eof {
        hay.len()
    } else {
        hay.len().saturating_sub(HEADER_MAX - 1).max(from)
    };
    // The earliest whole header before `tail`, from its anchor (up to 7
    // bytes into it, so anchors up to 7 bytes past `tail` count).
    let region = &hay[from..(tail + 7).min(hay.len())];
    let mut first: Option<usize> = None;
    let mut visit = |p: usize| -> bool {
        let at = from + p;
        // A header before `first` has its anchor before `first + 7`.
        if first.is_some_and(|f| at >= f + 7) {
            return true;
        }
        let m = HEADER_AT[usize::from(region[p])];
        for (bit, off) in HEADER_OFFSETS {
            if m & bit != 0
                && let Some(k) = at.checked_sub(off)
                && k >= from
                && k < first.unwrap_or(tail)
                && matches!(compressed_at(&hay[k..]), Ok(Some(_)))
            {
                first = Some(k);
            }
        }
        false
    };
    match anchors {
        Some(anchors) => {
            for m in anchors.find_iter(region) {
                if visit(m.start()) {
                    break;
                }
            }
        }
        None => {
            for (p, &b) in region.iter().enumerate() {
                if HEADER_AT[usize::from(b)] != 0 && visit(p) {
                    break;
                }
            }
        }
    }
    if let Some(k) = first
        && let Ok(Some(codec)) = compressed_at(&hay[k..])
    {
        return Ok(Some((k, codec)));
    }
    for k in tail..hay.len() {
        match compressed_at(&hay[k..]) {
            Ok(Some(codec)) => return Ok(Some((k, codec))),
            Ok(None) => {}
            Err(()) => return Err(k),
        }
    }
    Ok(None)
}

/// One SIMD pass (Teddy, over single bytes) for every byte [`HEADER_AT`]
/// marks; `None` where Teddy is not available (a byte loop then).
static HEADER_ANCHORS: std::sync::LazyLock<Option<packed::Searcher>> =
    std::sync::LazyLock::new(|| {
        let mut b = packed::Config::new().builder();
        for byte in 0..=255u8 {
            if HEADER_AT[usize::from(byte)] != 0 {
                b.add([byte]);
            }
        }
        b.build()
    });

/// Where the first header in `dec` that is not zlib's starts: at the
/// probing depth (nothing is inflated there to tell a real two-byte zlib
/// header from a pair of bytes in compressed data).
fn first_probed_header(dec: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        match next_header(dec, from, true) {
            Ok(Some((k, Codec::Zlib))) => from = k + 1,
            Ok(Some((k, _))) => return Some(k),
            _ => return None,
        }
    }
}

/// Does `dec` hold a header [`compressed_at`] knows (for
/// [`worth_scanning`])? The same candidates as [`next_header`] in one
/// byte loop: the segments judged here are short, mostly noise, and a
/// SIMD search costs more to start than one pass over them (equal to
/// [`next_header`] by a property test).
pub(crate) fn has_compressed(dec: &[u8]) -> bool {
    for (p, &b) in dec.iter().enumerate() {
        let m = HEADER_AT[usize::from(b)];
        if m == 0 {
            continue;
        }
        for (bit, off) in HEADER_OFFSETS {
            if m & bit != 0
                && let Some(k) = p.checked_sub(off)
                && matches!(compressed_at(&dec[k..]), Ok(Some(_)))
            {
                return true;
            }
        }
    }
    false
}

/// [`next_header`] over all of `dec`: the oracle of [`has_compressed`].
#[cfg(test)]
pub(crate) fn header_searched(dec: &[u8]) -> bool {
    matches!(next_header(dec, 0, true), Ok(Some(_)))
}

/// [`next_header`] (by Teddy where it is available, and by the byte loop),
/// and its definition: the first `k >= from` where
/// [`compressed_at`] knows a header (`Err(k)` where it cannot tell yet,
/// not at `eof`, and only in the last `HEADER_MAX - 1` bytes).
#[cfg(test)]
pub(crate) fn header_next_both(
    hay: &[u8],
    from: usize,
    eof: bool,
) -> [Result<Option<(usize, String)>, usize>; 3] {
    let named = |r: Result<Option<(usize, Codec)>, usize>| {
        r.map(|found| found.map(|(k, codec)| (k, format!("{codec:?}"))))
    };
    let tail = match eof {
        true => hay.len(),
        false => hay.len().saturating_sub(HEADER_MAX - 1).max(from),
    };
    let mut naive = Ok(None);
    for k in from..hay.len() {
        match compressed_at(&hay[k..]) {
            Ok(Some(codec)) => {
                naive = Ok(Some((k, codec)));
                break;
            }
            Ok(None) => {}
            Err(()) if k >= tail => {
                naive = Err(k);
                break;
            }
            Err(()) => {}
        }
    }
    [
        named(next_header(hay, from, eof)),
        named(next_header_by(hay, from, eof, None)),
        named(naive),
    ]
}

/// Per byte, where a header could start relative to it (a bit per
/// offset in [`HEADER_OFFSETS`]): the candidates of [`next_header`]. Each
/// header is found by a byte at a fixed offset in it that is rare in text:
/// gzip's `8b` (at 1), zlib's second byte (`01`, `5e`, `9c`, `da`), zip's
/// `03` (2, in `PK\x03\x04`), xz's and zstd's `fd` (0 and 3), 7z's `bc`
/// (2), rar's `1a` (4), bzip2's `&` (7, in `BZh91AY&SY`). (Their first
/// bytes, `x` and `P` among them, stopped the search about 400 times per
/// 16 KiB of log text.)
static HEADER_AT: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0x8b] = 2;
    t[0x01] = 2;
    t[0x5e] = 2;
    t[0x9c] = 2;
    t[0xda] = 2;
    t[0x03] = 4;
    t[0xfd] = 1 | 8;
    t[0xbc] = 4;
    t[0x1a] = 16;
    t[b'&' as usize] = 32;
    t
};

/// The bits of [`HEADER_AT`] and the offsets into a header they stand for.
const HEADER_OFFSETS: [(u8, usize); 6] = [(1, 0), (2, 1), (4, 2), (8, 3), (16, 4), (32, 7)];

/// Why a header-like start is not inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotInflated {
    /// It is no header (or a stored zip entry: plain bytes).
    NotHeader,
    /// A header of data airlock cannot read ([`UNREADABLE`]).
    Unreadable,
}

/// What follows a header's fixed part: `skip` bytes (gzip's extra field,
/// a zip entry's name and extra field), then `nuls` fields that end at a
/// zero byte (gzip's name and comment), then `trail` bytes (gzip's header
/// checksum). The deflate data starts after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    skip: u64,
    nuls: u8,
    trail: u8,
}

/// The fixed part of the header at the start of `b` (zlib's two bytes,
/// gzip's ten and the length of its extra field, a zip entry's thirty):
/// its length and the fields after it, `Ok(None)` while `b` is too short
/// to tell, `Err(NotInflated)` when it is not one after all or holds data
/// that is not inflated.
///
/// The fields are not bounded here: Python's `gzip` and zlib read a name
/// or comment of any length to its zero byte, so a member behind a long
/// one is still a member. They are stepped over as they stream, not held
/// ([`Member::Fields`]), and the header search looks through them like
/// any other bytes.
fn header_fixed(codec: Codec, b: &[u8]) -> Result<Option<(usize, Fields)>, NotInflated> {
    let none = Fields {
        skip: 0,
        nuls: 0,
        trail: 0,
    };
    if codec == Codec::Zlib {
        return Ok((b.len() >= 2).then_some((2, none)));
    }
    if codec == Codec::Zip {
        // A local file header: the version needed at 4, flags at 6,
        // method at 8, name and extra lengths at 26 and 28. A deflated
        // entry is inflated, a stored one is its bytes as they are; one
        // that is encrypted or compressed by a method of the format's list
        // cannot be read.
        let Some(h) = b.get(..30) else {
            return Ok(None);
        };
        let field = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
        let (version, encrypted, method) = (field(4), field(6) & 1 != 0, field(8));
        match (encrypted, method) {
            (false, 8) => {}
            (false, 0) => return Err(NotInflated::NotHeader),
            // Binary data rarely has a version and a method in range too.
            (_, 0..=20 | 93..=99) if version <= 63 => return Err(NotInflated::Unreadable),
            _ => return Err(NotInflated::NotHeader),
        }
        let skip = field(26) + field(28);
        return Ok(Some((30, Fields { skip, ..none })));
    }
    let Some(&flags) = b.get(3) else {
        return Ok(None);
    };
    let nuls = u8::from(flags & 0x08 != 0) + u8::from(flags & 0x10 != 0);
    let trail = if flags & 0x02 != 0 { 2 } else { 0 };
    if flags & 0x04 == 0 {
        return Ok((b.len() >= 10).then_some((
            10,
            Fields {
                nuls,
                trail,
                ..none
            },
        )));
    }
    let (Some(&lo), Some(&hi)) = (b.get(10), b.get(11)) else {
        return Ok(None);
    };
    let skip = u64::from(u16::from_le_bytes([lo, hi]));
    Ok(Some((12, Fields { skip, nuls, trail })))
}

/// The pseudo finding of an [`UNREADABLE`] header at `start`.
fn unreadable(start: u64, codec: Codec) -> Raw {
    Raw {
        start,
        end: start + 1,
        kind: UNREADABLE_KIND,
        chain: Chain::PLAIN.under(codec),
        // Not a secret seen, but data that cannot be judged.
        confidence: Confidence::Verified,
    }
}

impl Inflate {
    fn new(probing: bool, min: Confidence) -> Inflate {
        Inflate {
            probing,
            scan: 0,
            members: Vec::new(),
            spare: Vec::new(),
            min,
            out: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.scan = 0;
        for mut slot in self.members.drain(..) {
            slot.rs = RunSeg::default();
            if let Some(s) = slot.pool.sub.as_mut() {
                s.reset();
            }
            if self.spare.is_empty() {
                self.spare.push(slot);
            }
        }
    }

    fn frontier(&self, end: u64) -> u64 {
        self.members
            .iter()
            .map(|slot| slot.frontier(end))
            .fold(self.scan.min(end), u64::min)
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        eof: bool,
        discard: bool,
        depth: u8,
        out: &mut Vec<Raw>,
    ) {
        let end = base + hay.len() as u64;
        let mut buf = std::mem::take(&mut self.out);
        for slot in &mut self.members {
            slot.feed(sc, hay, base, eof, discard, depth, &mut buf, out);
        }
        loop {
            let from = usize::try_from(self.scan.saturating_sub(base))
                .map_or(hay.len(), |k| k.min(hay.len()));
            match next_header(hay, from, eof) {
                Ok(Some((k, codec))) if codec.unreadable() => {
                    let start = base + k as u64;
                    out.push(unreadable(start, codec));
                    self.scan = start + 1;
                }
                // A zlib header is two bytes, which compressed or
                // random bytes hold every 16 KiB: at the probing depth
                // there is no inflating to tell a real one.
                Ok(Some((k, Codec::Zlib))) if self.probing => {
                    self.scan = base + k as u64 + 1;
                }
                Ok(Some((k, codec))) if self.probing => {
                    let start = base + k as u64;
                    out.push(Raw {
                        kind: TOO_DEEP_KIND,
                        ..unreadable(start, codec)
                    });
                    self.scan = start + 1;
                }
                Ok(Some((k, _))) if !eof && end - (base + k as u64) < PIECE => {
                    // Whether the open members end before this header is
                    // known once they have read a piece past it.
                    self.scan = base + k as u64;
                    break;
                }
                Ok(Some((k, codec))) => {
                    let start = base + k as u64;
                    self.scan = start + 1;
                    self.retire(start);
                    if self.members.len() >= MAX_MEMBERS {
                        out.push(unreadable(start, codec));
                        continue;
                    }
                    let mut slot = match self.spare.pop() {
                        Some(slot) => slot,
                        None => Slot {
                            member: Member::Header { start, codec },
                            ended: None,
                            rs: RunSeg::default(),
                            decoded: 0,
                            z: Box::new(flate2::Decompress::new(false)),
                            pool: Pool::new(self.min, true),
                        },
                    };
                    slot.member = Member::Header { start, codec };
                    slot.ended = None;
                    slot.decoded = 0;
                    slot.feed(sc, hay, base, eof, discard, depth, &mut buf, out);
                    self.members.push(slot);
                }
                Err(k) => {
                    // Too close to the end to tell: wait here.
                    self.scan = base + k as u64;
                    break;
                }
                Ok(None) => {
                    self.scan = end;
                    break;
                }
            }
        }
        self.out = buf;
        self.retire(self.scan);
    }

    /// Members that ended by `at` no longer count as open there; one slot
    /// is kept for the next member.
    fn retire(&mut self, at: u64) {
        let mut i = 0;
        while i < self.members.len() {
            if self.members[i].ended.is_some_and(|e| e <= at) {
                let slot = self.members.swap_remove(i);
                if self.spare.is_empty() {
                    self.spare.push(slot);
                }
            } else {
                i += 1;
            }
        }
    }
}

impl Slot {
    fn frontier(&self, end: u64) -> u64 {
        if self.ended.is_some() {
            return end;
        }
        match self.member {
            Member::Header { start, .. } => start,
            // The first piece maps back to the piece before it too.
            Member::Fields { start, at, .. } => at.min(end).saturating_sub(PIECE).max(start),
            Member::Data { start, pos, .. } => {
                let pending = pos.saturating_sub(PIECE).max(start);
                match self.rs.seg {
                    None => pending,
                    Some(_) => self.rs.frontier(&self.pool, pending, pending, 1),
                }
            }
        }
    }

    /// Read as far as `hay` goes (`buf`: inflate's output buffer).
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        eof: bool,
        discard: bool,
        depth: u8,
        buf: &mut Vec<u8>,
        out: &mut Vec<Raw>,
    ) {
        if self.ended.is_some() {
            return;
        }
        let end = base + hay.len() as u64;
        let at = |p: u64| {
            usize::try_from(p.saturating_sub(base))
                .unwrap_or(usize::MAX)
                .min(hay.len())
        };
        loop {
            match self.member {
                Member::Header { start, codec } => match header_fixed(codec, &hay[at(start)..]) {
                    Ok(Some((n, f))) => {
                        self.member = Member::Fields {
                            start,
                            codec,
                            at: start + n as u64 + f.skip,
                            nuls: f.nuls,
                            trail: f.trail,
                        };
                    }
                    Ok(None) if !eof => break,
                    Err(NotInflated::Unreadable) => {
                        out.push(unreadable(start, codec));
                        self.ended = Some(start + 1);
                        break;
                    }
                    Ok(None) | Err(NotInflated::NotHeader) => {
                        self.ended = Some(start + 1);
                        break;
                    }
                },
                Member::Fields {
                    start,
                    codec,
                    at: mut p,
                    mut nuls,
                    trail,
                } => {
                    while nuls > 0 && p <= end {
                        match memchr::memchr(0, &hay[at(p)..]) {
                            Some(z) => {
                                p += z as u64 + 1;
                                nuls -= 1;
                            }
                            None => {
                                p = end;
                                break;
                            }
                        }
                    }
                    if nuls > 0 || p + u64::from(trail) > end {
                        if eof {
                            self.ended = Some(end);
                        } else {
                            self.member = Member::Fields {
                                start,
                                codec,
                                at: p,
                                nuls,
                                trail,
                            };
                        }
                        break;
                    }
                    let pos = p + u64::from(trail);
                    self.z.reset(false);
                    self.rs = RunSeg::default();
                    self.rs.open(pos.saturating_sub(PIECE).max(start));
                    self.decoded = 0;
                    self.member = Member::Data { start, codec, pos };
                }
                Member::Data { start, codec, pos } => {
                    if pos >= end || (!eof && end - pos < PIECE) {
                        break;
                    }
                    let piece = &hay[at(pos)..at((pos + PIECE).min(end))];
                    let span = (
                        pos.saturating_sub(PIECE).max(start),
                        pos + piece.len() as u64,
                    );
                    match self.piece(codec, piece, span, discard, buf) {
                        Ok(None) if self.too_big(pos + piece.len() as u64 - start) => {
                            out.push(Raw {
                                start: span.0,
                                end: span.0 + 1,
                                kind: TOO_DEEP_KIND,
                                chain: Chain::PLAIN.under(codec),
                                confidence: Confidence::Verified,
                            });
                            self.end(sc, depth, out, span.1);
                            break;
                        }
                        Ok(None) => {
                            self.member = Member::Data {
                                start,
                                codec,
                                pos: span.1,
                            };
                            // Checked at pieces fixed by the data, not the
                            // chunking: every PINNED_EVERY-th.
                            if ((span.1 - start) / PIECE).is_multiple_of(PINNED_EVERY)
                                && let Some(at) = self.pinned(sc, depth, out, span.1)
                            {
                                out.push(unreadable(at, codec));
                                self.end(sc, depth, out, span.1);
                                break;
                            }
                        }
                        Ok(Some(used)) => {
                            self.end(sc, depth, out, pos + used);
                            break;
                        }
                        Err(()) => {
                            self.end(sc, depth, out, span.1);
                            break;
                        }
                    }
                    if self
                        .rs
                        .seg
                        .as_ref()
                        .is_some_and(|s| s.dec.len() >= INFLATE_FLUSH)
                    {
                        self.rs.flush(sc, depth, &mut self.pool, out, 1);
                    }
                }
            }
        }
        if self.ended.is_none() {
            self.rs.flush(sc, depth, &mut self.pool, out, 1);
            if eof {
                self.end(sc, depth, out, end);
            }
        }
    }

    /// Where this member pins the stream, when that is more than
    /// [`PINNED_MAX`] compressed bytes behind `pos`: what the nested scan
    /// still holds decoded from that far back. A member that decodes a
    /// byte now and then (a one-byte stored block, then thousands of empty
    /// ones) would otherwise keep the whole stream from there on held.
    /// Benign deflate data spends a few bytes at most on each decoded one.
    fn pinned(&mut self, sc: &Scanner, depth: u8, out: &mut Vec<Raw>, pos: u64) -> Option<u64> {
        let behind = |slot: &Slot| pos.saturating_sub(slot.frontier(pos)) > PINNED_MAX;
        if !behind(self) {
            return None;
        }
        // What waits only for the next flush does not count.
        self.rs.flush(sc, depth, &mut self.pool, out, 1);
        behind(self).then(|| self.frontier(pos))
    }

    /// Has the member decoded to more than its ratio allows, after
    /// `consumed` compressed bytes?
    fn too_big(&self, consumed: u64) -> bool {
        self.decoded > INFLATE_FREE && self.decoded > INFLATE_RATIO * consumed
    }

    /// Inflate one piece; its decoded bytes map to `span`. `Ok(Some(n))`:
    /// the deflate data ended after `n` bytes of the piece; `Err`: it is
    /// not deflate data.
    fn piece(
        &mut self,
        codec: Codec,
        piece: &[u8],
        span: (u64, u64),
        discard: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Option<u64>, ()> {
        if buf.len() < 4096 {
            buf.resize(4096, 0);
        }
        let z = &mut self.z;
        let in0 = z.total_in();
        let mut used = 0usize;
        loop {
            let (i0, o0) = (z.total_in(), z.total_out());
            let status = z
                .decompress(&piece[used..], buf, flate2::FlushDecompress::None)
                .map_err(|_| ())?;
            let produced = usize::try_from(z.total_out() - o0).unwrap_or(0);
            used += usize::try_from(z.total_in() - i0).unwrap_or(0);
            self.decoded += produced as u64;
            if produced > 0 {
                self.rs.put_all(codec, &buf[..produced], span, discard);
            }
            if status == flate2::Status::StreamEnd {
                return Ok(Some(z.total_in() - in0));
            }
            let stuck = produced == 0 && z.total_in() == i0;
            if stuck || (used >= piece.len() && produced < buf.len()) {
                return Ok(None);
            }
        }
    }

    /// The member ended at `at` (or was no member): judge what it decoded.
    fn end(&mut self, sc: &Scanner, depth: u8, out: &mut Vec<Raw>, at: u64) {
        if matches!(self.member, Member::Data { .. }) {
            self.rs.end(sc, depth, &mut self.pool, out, 1);
        }
        self.ended = Some(at);
    }
}

impl Esc {
    fn new(codec: Codec) -> Esc {
        Esc {
            codec,
            tok_start: 0,
            scan: 0,
            seg: None,
            pos: 0,
            last_unit: 0,
        }
    }

    fn delim(&self, b: u8) -> bool {
        match self.codec {
            Codec::Json => json_delim(b),
            Codec::Unicode => pct_delim(b) || binary_byte(b),
            _ => pct_delim(b),
        }
    }

    /// The first byte in `h` an escape of this codec may start at.
    fn next_trigger(&self, h: &[u8]) -> Option<usize> {
        match self.codec {
            Codec::Json => memchr::memchr(b'\\', h),
            Codec::Html => memchr::memchr(b'&', h),
            Codec::Unicode => next_uni_lead(h),
            _ => memchr::memchr(b'%', h),
        }
    }

    fn frontier(&self, pool: &Pool, end: u64) -> u64 {
        match &self.seg {
            Some(seg) => pool.frontier(seg, self.pos),
            // An escape not yet judged starts at `scan` or later, and its
            // segment may reach LITERAL_BEFORE bytes back from there (not
            // from `end`: a `%` waiting for its two digits is up to two
            // bytes before it).
            None => self
                .tok_start
                .max(self.scan.min(end).saturating_sub(LITERAL_BEFORE))
                .min(end),
        }
    }

    /// Is there an escape at `x`? `None`: not enough bytes to tell.
    fn escape_at(&self, near: Near<'_>, x: usize) -> Option<bool> {
        let hay = near.hay;
        match self.codec {
            Codec::Unicode => match uni_at(hay.get(x..)?) {
                Uni::Not => Some(false),
                Uni::Cut => None,
                Uni::Ascii(_, n) if look_alike_lead(hay[x]) => touches_latin(near, x, n),
                Uni::Drop(_) | Uni::Ascii(..) => Some(true),
            },
            Codec::Json => {
                let n = *hay.get(x + 1)?;
                match n {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(true),
                    b'u' => {
                        for j in 2..6 {
                            if hex_val(*hay.get(x + j)?).is_none() {
                                return Some(false);
                            }
                        }
                        Some(true)
                    }
                    _ => Some(false),
                }
            }
            Codec::Html => {
                if *hay.get(x + 1)? != b'#' {
                    return Some(false);
                }
                let n = *hay.get(x + 2)?;
                if n.is_ascii_digit() {
                    return Some(true);
                }
                if n != b'x' && n != b'X' {
                    return Some(false);
                }
                Some(hay.get(x + 3)?.is_ascii_hexdigit())
            }
            _ => {
                let a = *hay.get(x + 1)?;
                if hex_val(a).is_none() {
                    return Some(false);
                }
                let b = *hay.get(x + 2)?;
                Some(hex_val(b).is_some())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        sc: &Scanner,
        near: Near<'_>,
        from: usize,
        discard: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) {
        let (hay, base) = (near.hay, near.base);
        let end = base + hay.len() as u64;
        let idx = |p: u64| usize::try_from(p.saturating_sub(base)).unwrap_or(usize::MAX);
        if self.seg.is_none() && self.scan < base + from as u64 {
            // Never behind the kept bytes (the first feed).
            self.scan = self.scan.max(base);
        }
        loop {
            if self.seg.is_some() {
                if !self.active(sc, hay, base, false, depth, pool, out) {
                    break;
                }
                continue;
            }
            let j = idx(self.scan);
            let Some(rest) = hay.get(j..) else { break };
            let Some(off) = self.next_trigger(rest) else {
                self.scan = end;
                break;
            };
            let x = j + off;
            match self.escape_at(near, x) {
                None => {
                    self.scan = base + x as u64;
                    break;
                }
                Some(false) => {
                    self.scan = base + x as u64 + 1;
                    continue;
                }
                Some(true) => {}
            }
            // The token around the escape, at most LITERAL_BEFORE bytes back.
            let xp = base + x as u64;
            let lo = self
                .tok_start
                .max(xp.saturating_sub(LITERAL_BEFORE))
                .max(base);
            let mut s = lo;
            let mut q = x;
            while base + (q as u64) > lo {
                q -= 1;
                if hay.get(q).is_some_and(|&b| self.delim(b)) {
                    s = base + q as u64 + 1;
                    break;
                }
            }
            let mut seg = pool.open(self.codec, s, discard);
            // `aws_secret_access_key = wJal%2Fr...`, `"key": "wJal\/r..."`:
            // the name is plain and only the value is escaped, so the
            // token holds the value alone. Like a base64 run, the segment
            // starts with the label before it (a finding in it maps to the
            // token's start).
            if !discard {
                let mut buf = [0u8; LABEL_MAX];
                for &b in near.label_before(s, &mut buf) {
                    seg.put(b, (s, s + 1));
                }
            }
            self.seg = Some(seg);
            self.pos = s;
            self.last_unit = xp;
        }
        if self.seg.is_none() {
            // Track the token start for the frontier.
            let lo = self
                .tok_start
                .max(end.saturating_sub(LITERAL_BEFORE))
                .max(base);
            let mut q = hay.len();
            while base + (q as u64) > lo {
                q -= 1;
                if hay.get(q).is_some_and(|&b| self.delim(b)) {
                    self.tok_start = base + q as u64 + 1;
                    break;
                }
            }
        }
        if let Some(seg) = self.seg.as_mut() {
            pool.flush(sc, seg, depth, out);
        }
    }

    /// Decode from `self.pos`. True: the segment ended (at a delimiter);
    /// false: the input ran out.
    #[allow(clippy::too_many_arguments)]
    fn active(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        eof: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) -> bool {
        let codec = self.codec;
        let mut k = usize::try_from(self.pos.saturating_sub(base)).unwrap_or(usize::MAX);
        let mut ended = None;
        if let Some(seg) = self.seg.as_mut() {
            while let Some(&b) = hay.get(k) {
                let p = base + k as u64;
                let delim = match codec {
                    Codec::Json => json_delim(b),
                    Codec::Unicode => {
                        binary_byte(b) || (pct_delim(b) && p >= self.last_unit + LITERAL_BEFORE)
                    }
                    _ => pct_delim(b),
                };
                if delim {
                    ended = Some(p);
                    break;
                }
                let used = match codec {
                    Codec::Json => json_unit(hay, k, eof, seg, p),
                    Codec::Html => html_unit(hay, k, eof, seg, p),
                    Codec::Unicode => uni_unit(hay, k, eof, seg, p),
                    _ => pct_unit(hay, k, eof, seg, p),
                };
                match used {
                    Some(n) => {
                        k += n;
                        // Every character the unicode layer reads is two
                        // bytes or more; a literal byte, one.
                        if codec == Codec::Unicode && n > 1 {
                            self.last_unit = p + n as u64;
                        }
                    }
                    None => {
                        self.pos = p;
                        return false;
                    }
                }
            }
        }
        let Some(p) = ended else {
            self.pos = base + hay.len() as u64;
            return false;
        };
        self.pos = p;
        self.tok_start = p + 1;
        self.scan = p + 1;
        if let Some(seg) = self.seg.take() {
            pool.close(sc, seg, depth, out);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        sc: &Scanner,
        hay: &[u8],
        base: u64,
        _discard: bool,
        depth: u8,
        pool: &mut Pool,
        out: &mut Vec<Raw>,
    ) {
        if self.seg.is_some() {
            self.active(sc, hay, base, true, depth, pool, out);
        }
        if let Some(seg) = self.seg.take() {
            pool.close(sc, seg, depth, out);
        }
    }
}

/// Decode one unit at `hay[k]`: a character [`uni_at`] reads (an
/// invisible one decodes to nothing) or a literal byte. `None`: such a
/// character is cut by the end of the input.
fn uni_unit(hay: &[u8], k: usize, eof: bool, seg: &mut Seg, p: u64) -> Option<usize> {
    let b = *hay.get(k)?;
    if b < 0x80 {
        seg.put(b, (p, p + 1));
        return Some(1);
    }
    match uni_at(&hay[k..]) {
        Uni::Drop(n) => Some(n),
        Uni::Ascii(c, n) => {
            seg.put(c, (p, p + n as u64));
            Some(n)
        }
        Uni::Cut if !eof => None,
        Uni::Cut | Uni::Not => {
            seg.put(b, (p, p + 1));
            Some(1)
        }
    }
}

/// Decode one unit at `hay[k]` (a `%XX`, `+` or literal byte). `None`: an
/// escape is cut by the end of the input (decoded as literal at eof).
fn pct_unit(hay: &[u8], k: usize, eof: bool, seg: &mut Seg, p: u64) -> Option<usize> {
    let b = *hay.get(k)?;
    match b {
        b'%' => {
            let hi = hay.get(k + 1).copied();
            let lo = hay.get(k + 2).copied();
            match (hi.and_then(hex_val), lo.and_then(hex_val)) {
                (Some(h), Some(l)) => {
                    seg.put((h << 4) | l, (p, p + 3));
                    Some(3)
                }
                _ if !eof && (lo.is_none() && hi.is_none_or(|h| hex_val(h).is_some())) => None,
                _ => {
                    seg.put(b'%', (p, p + 1));
                    Some(1)
                }
            }
        }
        b'+' => {
            seg.put(b' ', (p, p + 1));
            Some(1)
        }
        _ => {
            seg.put(b, (p, p + 1));
            Some(1)
        }
    }
}

/// Decode one unit at `hay[k]`: an HTML numeric character reference
/// (`&#65;`, `&#x41;`; the `;` may be left out, as browsers allow) or a
/// literal byte. `None`: a reference is cut by the end of the input.
fn html_unit(hay: &[u8], k: usize, eof: bool, seg: &mut Seg, p: u64) -> Option<usize> {
    let b = *hay.get(k)?;
    let literal = |seg: &mut Seg| {
        seg.put(b, (p, p + 1));
        Some(1)
    };
    if b != b'&' {
        return literal(seg);
    }
    let Some(&hash) = hay.get(k + 1) else {
        return if eof { literal(seg) } else { None };
    };
    if hash != b'#' {
        return literal(seg);
    }
    let Some(&mark) = hay.get(k + 2) else {
        return if eof { literal(seg) } else { None };
    };
    let (radix, first, most) = if mark == b'x' || mark == b'X' {
        (16, k + 3, 6)
    } else {
        (10, k + 2, 7)
    };
    let mut v: u32 = 0;
    let mut j = first;
    loop {
        let Some(&d) = hay.get(j) else {
            if !eof {
                return None;
            }
            break;
        };
        match char::from(d).to_digit(radix) {
            Some(x) if j - first < most => {
                v = v * radix + x;
                j += 1;
            }
            _ => break,
        }
    }
    if j == first || hay.get(j).is_some_and(|d| char::from(*d).is_digit(radix)) {
        // No digits, or more than a character has.
        return literal(seg);
    }
    if hay.get(j) == Some(&b';') {
        j += 1;
    }
    let c = char::from_u32(v).unwrap_or('\u{fffd}');
    let mut utf8 = [0u8; 4];
    let end = p + (j - k) as u64;
    for &x in c.encode_utf8(&mut utf8).as_bytes() {
        seg.put(x, (p, end));
    }
    Some(j - k)
}

/// Decode one unit at `hay[k]` (a JSON escape or a literal byte).
fn json_unit(hay: &[u8], k: usize, eof: bool, seg: &mut Seg, p: u64) -> Option<usize> {
    let b = *hay.get(k)?;
    if b != b'\\' {
        seg.put(b, (p, p + 1));
        return Some(1);
    }
    let Some(&n) = hay.get(k + 1) else {
        if eof {
            seg.put(b, (p, p + 1));
            return Some(1);
        }
        return None;
    };
    let simple = match n {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'/' => Some(b'/'),
        b'b' => Some(8),
        b'f' => Some(12),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(c) = simple {
        seg.put(c, (p, p + 2));
        return Some(2);
    }
    if n == b'u' {
        let mut v: u32 = 0;
        for j in 2..6 {
            match hay.get(k + j) {
                Some(&d) => match hex_val(d) {
                    Some(h) => v = (v << 4) | u32::from(h),
                    None => {
                        seg.put(b, (p, p + 1));
                        return Some(1);
                    }
                },
                None if eof => {
                    seg.put(b, (p, p + 1));
                    return Some(1);
                }
                None => return None,
            }
        }
        let c = char::from_u32(v).unwrap_or('\u{fffd}');
        let mut utf8 = [0u8; 4];
        for &x in c.encode_utf8(&mut utf8).as_bytes() {
            seg.put(x, (p, p + 6));
        }
        return Some(6);
    }
    seg.put(b, (p, p + 1));
    Some(1)
}

// ---------------------------------------------------------------- nested scan

/// A nested scan of one decoded segment: the plain search plus the next
/// layer of decoders. Like a [`ScanState`](super::ScanState) in log mode
/// that releases nothing but findings.
pub(crate) struct Sub {
    core: Core,
    buf: Vec<u8>,
    pre: Vec<u8>,
    base: u64,
    end: u64,
    frontier: u64,
    dec: Box<Decoders>,
    cands: Vec<Raw>,
}

impl Sub {
    fn new(sc: &Scanner, depth: u8, min: Confidence, inflate: bool) -> Sub {
        Sub {
            core: Core::new(sc, min),
            buf: Vec::new(),
            pre: Vec::new(),
            base: 0,
            end: 0,
            frontier: 0,
            dec: Box::new(Decoders::with_inflate(depth, min, inflate)),
            cands: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.core.reset();
        self.buf.clear();
        self.pre.clear();
        self.base = 0;
        self.end = 0;
        self.frontier = 0;
        self.dec.reset();
        self.cands.clear();
    }

    fn frontier(&self) -> u64 {
        self.frontier
    }

    fn push(&mut self, sc: &Scanner, bytes: &[u8], out: &mut Vec<Raw>) {
        let from = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.end += bytes.len() as u64;
        let view = View {
            pre: &self.pre,
            hay: &self.buf,
            base: self.base,
        };
        self.core.feed(sc, view, from);
        self.core.run_ready(sc, view, false);
        let mut f = self.core.frontier(sc, view, false);
        self.dec
            .feed(sc, &self.pre, &self.buf, self.base, from, &mut self.cands);
        f = f.min(self.dec.frontier(self.end));
        settle(&mut self.core, &mut self.cands, f, out);
        self.frontier = f.min(self.end);
        // Keep the bytes from the frontier on, and context before it.
        let n = usize::try_from(self.frontier.saturating_sub(self.base))
            .unwrap_or(0)
            .min(self.buf.len());
        let keep = sc.context_kept();
        let dropped = self.buf.get(..n).unwrap_or_default();
        if dropped.len() >= keep {
            self.pre.clear();
            self.pre
                .extend_from_slice(dropped.get(dropped.len() - keep..).unwrap_or_default());
        } else {
            let excess = (self.pre.len() + dropped.len()).saturating_sub(keep);
            self.pre.drain(..excess.min(self.pre.len()));
            self.pre.extend_from_slice(dropped);
        }
        self.buf.drain(..n);
        self.base += n as u64;
    }

    fn finish(&mut self, sc: &Scanner, out: &mut Vec<Raw>) {
        let view = View {
            pre: &self.pre,
            hay: &self.buf,
            base: self.base,
        };
        self.core.run_ready(sc, view, true);
        self.dec
            .finish(sc, &self.pre, &self.buf, self.base, &mut self.cands);
        settle(&mut self.core, &mut self.cands, u64::MAX, out);
        self.frontier = u64::MAX;
    }
}

/// Move the plain findings and the decoded ones starting before `f` to
/// `out`, in `(start, longest first, kind, chain)` order, dropping a decoded
/// finding that repeats one already there (same span and kind).
pub(crate) fn settle(core: &mut Core, cands: &mut Vec<Raw>, f: u64, out: &mut Vec<Raw>) {
    let first = out.len();
    core.finalize(f, out);
    let mut i = 0;
    while i < cands.len() {
        if cands[i].start < f {
            let r = cands.swap_remove(i);
            // A rule's `scan_skip` holds for decoded findings too.
            if !core.skips(r.kind) {
                out.push(r);
            }
        } else {
            i += 1;
        }
    }
    let Some(batch) = out.get_mut(first..) else {
        return;
    };
    batch.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.kind.cmp(&b.kind))
            .then(a.chain.cmp(&b.chain))
    });
    let mut w = first;
    for r in first..out.len() {
        let cur = out[r];
        let dup = w > first && {
            let prev = out[w - 1];
            prev.start == cur.start && prev.end == cur.end && prev.kind == cur.kind
        };
        if !dup {
            out[w] = cur;
            w += 1;
        }
    }
    out.truncate(w);
}

/// Whole-buffer scan with decoding: what a stream of `hay` would report
/// (`inflate`: compressed data decoded too, as outside redaction).
pub(crate) fn scan_whole(sc: &Scanner, hay: &[u8], min: Confidence, inflate: bool) -> Vec<Raw> {
    let mut core = Core::new(sc, min);
    let view = View::whole(hay);
    core.feed(sc, view, 0);
    core.run_ready(sc, view, true);
    let mut cands = Vec::new();
    let mut dec = Decoders::with_inflate(0, min, inflate);
    dec.feed(sc, &[], hay, 0, 0, &mut cands);
    dec.finish(sc, &[], hay, 0, &mut cands);
    let mut raw = Vec::new();
    settle(&mut core, &mut cands, u64::MAX, &mut raw);
    raw
}
