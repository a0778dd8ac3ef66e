//! Streaming secret scanner (issue 4): finds credentials in request and
//! response bodies, headers and URLs as the bytes stream through the proxy.
//!
//! It protects the invariant "a secret value never appears in a request to
//! any host other than its own" and "a body is never buffered whole".
//!
//! # What it does
//! - Matches the regex patterns of `rules/secrets.toml` ([`PatternSet`],
//!   compiled into the binary: [`PatternSet::builtin`]), each tried only
//!   near one of its keywords, and the exact values airlock holds
//!   ([`HeldSecret`]), raw and in the encodings a leak would take.
//! - Grades each finding ([`Confidence`]): `Verified` (shape, checksum,
//!   entropy hold; not a documentation value) or `Shaped` (broken checksum,
//!   glued, a character or two short, documentation value). Every search
//!   takes the least confidence to act on ([`ScanState::with_min_confidence`],
//!   [`Scanner::scan_min`]); the default is `Shaped`, everything.
//! - Compiles both into one [`Scanner`], built once per pattern file and
//!   secret-cache generation and shared as `Arc`.
//! - Scans a whole buffer ([`Scanner::scan`]) or a stream ([`ScanState`]),
//!   with the same findings either way, whatever the chunking.
//! - Wraps an `http_body::Body` ([`ScanBody`]) to block, redact or log,
//!   decoding gzip / deflate / br bodies when asked.
//! - Decodes, then scans ([`decode`]): base64 / base64url, hex (with or
//!   without delimiters), percent-encoding (`+` for space), JSON string
//!   escapes, HTML references, character codes, UTF-16, and (outside
//!   incoming redaction) gzip, zlib and zip data, nested up to three
//!   layers, in every stream and buffer; a finding names its decoding
//!   chain ([`Chain`], `base64>gzip`), and a value encoded more deeply, or
//!   compressed data that expands too far, is refused outgoing
//!   ([`TOO_DEEP`]), as is compressed data known by its header but not
//!   read (xz, bzip2, zstd, 7z, rar, an encrypted zip: [`UNREADABLE`]).
//!   An outgoing stream ([`ScanState::outgoing`]) in redact mode refuses
//!   what it cannot rewrite: a secret inside compressed data.
//! - Backs the `airlock scan` command ([`cli::run`]).
//!
//! # What it does not do
//! - It does not read compressed data without a header (raw deflate,
//!   brotli, raw LZMA), nor decompress xz, bzip2, zstd, 7z or rar (it
//!   refuses them outgoing), nor see through encryption other than an
//!   archive's own: what the bytes do not show, it cannot see. (A tar
//!   archive is its files' bytes, scanned as they are.)
//!   (WebSocket messages are scanned by the proxy's relay,
//!   `listener::websocket`, with a [`ScanState`] per message.)
//! - Encodings beyond the decoded ones (base32, base85, rot13, reversed),
//!   separators inside an encoding (`QUtJ QUlP ...`: each piece is shorter
//!   than a run), a value written one character at a time or split across
//!   fields or requests, a body compressed without a `Content-Encoding`
//!   saying so defeat it (`tests::the_documented_limits_are_real`);
//!   the regex patterns only catch the shapes they describe. Characters
//!   glued before a base64 or hex run do not: every phase is decoded.
//! - It does not decide what to do with a finding beyond block / redact /
//!   log; auditing is the caller's (via the [`FindingSink`] callback).
//!
//! # Memory usage
//! Per stream, the bytes held back are bounded by
//! [`Scanner::max_hold_back`] (below 40 KiB with the caps
//! [`MAX_LEN_CAP`] = 8 KiB and 64-byte keywords), and on benign input by
//! [`Scanner::hold_back`]: only a tail that could still become part of a
//! secret is held (the start of a keyword or of a held value's literal, or
//! bytes a declared lookbehind allows before a keyword), 36 bytes at most
//! with the bundled rules and no held values, nothing at all after a
//! newline. So streamed responses (server-sent events) are scanned and
//! flushed per frame. A stream also keeps [`Scanner::context_kept`] already
//! released bytes (47 with the bundled rules) for regex windows. See
//! [`stream`] for the exact bounds.
//!
//! # Performance
//! `benches/scan.rs`: all 77 bundled patterns plus 10 held values, block
//! mode, decoding on, 4 MiB of benign log-like text / JSON, one core of the
//! 2-core dev machine, the shipped (LTO) build, medians of three runs in
//! one sitting at commit `12a390d` (this machine's readings move by 15%
//! and more between sittings; the README keeps the history and the side
//! by side comparisons each change was judged by):
//!
//! | chunk  | text      | JSON      |
//! |--------|-----------|-----------|
//! | 1.5 KiB| 285 MiB/s | 418 MiB/s |
//! | 16 KiB | 499 MiB/s | 647 MiB/s |
//! | 64 KiB | 521 MiB/s | 673 MiB/s |
//! | whole  | 537 MiB/s | 579 MiB/s |
//!
//! On text, about 19.7 instructions per byte plus 6.9k per pushed chunk
//! (callgrind). Nearly a third of the time (29% by `perf`) goes to the
//! keyword prefilter's Teddy passes (five: four groups of at most 19 long anchors
//! and one of 13 short ones, see [`scanner`]); over 40% to the decoders
//! (the class pass of `runs`, and the check each short base64 run gets, one
//! per log line's URL path, see [`decode`]); the rest to copying and
//! lowercasing the chunk and to the `memchr` passes of the idle UTF-16 and
//! escape layers. Small chunks add a fixed per-push cost (the 6.9k: setting
//! up each pass, finding the tail that must be held back), which explains
//! only part of the 1.5 KiB row: those chunks also run slower per byte in
//! the wall clock. The prefilter is sensitive to the keyword set: changing
//! a keyword moves anchors between Teddy buckets, which has cost up to 40%
//! in either direction, so re-run the bench after editing keywords.

pub mod body;
mod checks;
pub mod cli;
pub mod decode;
mod held;
mod patterns;
mod reach;
mod runs;
mod sampled;
pub mod scanner;
pub mod stream;

pub use body::{
    ContentCoding, EncodedForward, FindingSink, LeakBlocked, ScanBody, ScanError, header_line,
    redacted_value,
};
pub use decode::{Chain, MAX_DEPTH, TOO_DEEP, UNREADABLE};
pub use held::{HeldSecret, MIN_HELD_LEN};
pub use patterns::{
    BUILTIN_NAME, BUILTIN_PATTERNS, MAX_KEYWORD_LEN, MAX_LEN_CAP, MIN_KEYWORD_LEN, Pattern,
    PatternError, PatternSet,
};
pub use scanner::{BuildError, Confidence, Finding, Scanner};
pub use stream::{ScanMode, ScanState, StreamOutput};

#[cfg(test)]
mod barrier_tests;
#[cfg(test)]
mod corpus;
#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod tests;
