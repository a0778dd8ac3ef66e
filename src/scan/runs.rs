//! Where a base64, hex or character-code run could start, 64 bytes at a
//! time.
//!
//! The decoders' idle scans look for a stretch of bytes that a base64 run
//! (at least [`MIN_B64`] characters, single line breaks allowed) or a hex
//! run (at least `2 * MIN_HEX` digits with delimiters between them) could
//! be made of. Benign text and JSON almost never hold such a stretch, so
//! the cost of the idle scans is the cost of ruling it out.
//!
//! [`Runs`] rules it out once per input for both layers: it classifies the
//! input into one bit per byte and class, 64 bytes per word, 16 bytes at a
//! time, and takes a byte mask (`wide`'s safe SSE2 `movemask`). With a
//! byte shuffle (SSSE3, which `.cargo/config.toml` turns on for x86-64,
//! or NEON) each class is two table lookups per 16 bytes, by the bytes'
//! low and high nibbles (class pass: 90.4k → 44.8k instructions per 16
//! KiB); without one, vector comparisons (275 instructions per 64 bytes
//! against 356 for plain comparisons the compiler vectorized and packed 8
//! bits per multiply). Then it keeps, per
//! byte, whether the next `w` bytes are all in the class (`w` shifts and
//! ANDs, done by doubling). A layer that is idle asks for the next position
//! where a window starts and jumps there; the exact per-byte state machine
//! only runs from there on. Bytes past the end of the input count as in the
//! class, so a window that may continue into the next input is never
//! skipped.
//!
//! [`MIN_B64`]: super::decode::MIN_B64

use super::decode::{B64, HEXC, HEXD, NONHEX, class_of};
use smallvec::SmallVec;
use wide::u8x16;

/// One bit per byte: could the byte be part of a run of this class?
#[derive(Default)]
pub(crate) struct Runs {
    /// Input offset of bit 0 of word 0.
    from: usize,
    /// Bytes covered (the input's end).
    end: usize,
    /// Inline for inputs up to 512 bytes (a request head, a small reply):
    /// a request's several streams allocate nothing here.
    b64: SmallVec<[u64; 8]>,
    hex: SmallVec<[u64; 8]>,
}

/// Base64 run bytes: both alphabets (`decode`'s `B64` class), and the
/// line breaks a run may wrap at: the definition the nibble tables are
/// built from and [`classify16`] is tested against.
const fn b64_byte(b: u8) -> bool {
    class_of(b) & B64 != 0 || matches!(b, b'\n' | b'\r')
}

/// Hex run bytes: digits, delimiters and prefixes (`decode`'s `HEXD` and
/// `HEXC` classes), and the separators a character code run has besides
/// (`;`, tab, line breaks), so that one bitmap serves both layers.
const fn hex_byte(b: u8) -> bool {
    class_of(b) & (HEXD | HEXC) != 0 || matches!(b, b';' | b'\t' | b'\n' | b'\r')
}

/// `x` in `lo..lo + n`, per byte (unsigned: one subtraction and a min).
#[inline(always)]
fn in_range(x: u8x16, lo: u8, n: u8) -> u8x16 {
    let d = x - u8x16::splat(lo);
    d.min(u8x16::splat(n - 1)).simd_eq(d)
}

/// Does this build have a byte shuffle (`pshufb`, or NEON's `tbl`)?
/// Without one `wide`'s shuffle is a loop over the lanes, and comparisons
/// are cheaper than table lookups.
const SHUFFLE: bool = cfg!(any(
    target_feature = "ssse3",
    all(target_arch = "aarch64", target_feature = "neon")
));

/// The class bits of 16 bytes, by the rules of `b64_byte` and `hex_byte`
/// (a unit test holds both ways equal to them for every byte in every
/// lane).
#[inline(always)]
fn classify16(bytes: [u8; 16]) -> (u32, u32) {
    if SHUFFLE {
        classify16_nibbles(bytes)
    } else {
        classify16_compare(bytes)
    }
}

/// A class as two 16-byte tables: byte `b` is in it iff
/// `lo[b & 15] & hi[b >> 4] != 0`.
struct Nibbles {
    lo: [u8; 16],
    hi: [u8; 16],
}

/// The classes the nibble tables are built for.
#[derive(Clone, Copy)]
enum Class {
    /// [`b64_byte`]: base64 run bytes, line breaks included.
    B64Run,
    /// [`hex_byte`].
    HexRun,
    /// Base64 characters alone (`decode`'s `B64` class).
    B64Char,
    /// Base64 characters that are neither hex digits nor `-`
    /// (`decode`'s `NONHEX`): one makes a run of
    /// [`MIN_B64`](super::decode::MIN_B64) characters
    /// worth decoding.
    NonHex,
}

const fn member(class: Class, b: u8) -> bool {
    match class {
        Class::B64Run => b64_byte(b),
        Class::HexRun => hex_byte(b),
        Class::B64Char => class_of(b) & B64 != 0,
        Class::NonHex => class_of(b) & NONHEX != 0,
    }
}

/// The tables of `class`, built from its definition: each distinct set of
/// low nibbles that the bytes of one high nibble have gets a bit of its
/// own, set in `hi` at that high nibble and in `lo` at each low nibble of
/// the set. A class needing more than 8 such sets fails the build.
const fn nibbles(class: Class) -> Nibbles {
    let mut rows = [0u16; 16];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if member(class, byte) {
            rows[b >> 4] |= 1 << (b & 15);
        }
        b += 1;
    }
    let (mut sets, mut n) = ([0u16; 8], 0);
    let mut hi = [0u8; 16];
    let mut h = 0;
    while h < 16 {
        if rows[h] != 0 {
            let mut k = 0;
            while k < n && sets[k] != rows[h] {
                k += 1;
            }
            if k == n {
                assert!(n < 8, "a class needs more than 8 sets of low nibbles");
                sets[n] = rows[h];
                n += 1;
            }
            hi[h] = 1 << k;
        }
        h += 1;
    }
    let mut lo = [0u8; 16];
    let mut k = 0;
    while k < n {
        let mut l = 0;
        while l < 16 {
            if (sets[k] >> l) & 1 == 1 {
                lo[l] |= 1 << k;
            }
            l += 1;
        }
        k += 1;
    }
    Nibbles { lo, hi }
}

const B64_NIBBLES: Nibbles = nibbles(Class::B64Run);
const HEX_NIBBLES: Nibbles = nibbles(Class::HexRun);
const CHAR_NIBBLES: Nibbles = nibbles(Class::B64Char);
const NONHEX_NIBBLES: Nibbles = nibbles(Class::NonHex);

/// The bytes of `x` in the class of `t`, one bit per byte.
#[inline(always)]
fn in_class(t: &Nibbles, x: u8x16) -> u32 {
    let lo = x & u8x16::splat(0x0f);
    // `wide`'s byte shift clears the bits that cross lanes: 0 to 15.
    let hi = x >> 4;
    let m = u8x16::from(t.lo).shuffle(lo) & u8x16::from(t.hi).shuffle(hi);
    // The mask marks the bytes outside the class.
    !m.simd_eq(u8x16::ZERO).to_bitmask() & 0xffff
}

/// For the base64 layer's idle walk, 16 bytes at a time: which are base64
/// characters, and which of those are not hex digits (a unit test holds
/// both to `decode`'s class table for every byte in every lane). Without
/// a byte shuffle this is a loop over the lanes, slower but the same.
#[inline(always)]
pub(crate) fn chars16(bytes: [u8; 16]) -> (u32, u32) {
    let x = u8x16::from(bytes);
    (in_class(&CHAR_NIBBLES, x), in_class(&NONHEX_NIBBLES, x))
}

/// [`classify16`] by table: two shuffles, an AND and a comparison per
/// class (about a third of the instructions of [`classify16_compare`]).
#[inline(always)]
fn classify16_nibbles(bytes: [u8; 16]) -> (u32, u32) {
    let x = u8x16::from(bytes);
    (in_class(&B64_NIBBLES, x), in_class(&HEX_NIBBLES, x))
}

/// [`classify16`] by comparisons, for a build without a byte shuffle.
#[inline(always)]
fn classify16_compare(bytes: [u8; 16]) -> (u32, u32) {
    let x = u8x16::from(bytes);
    let l = x | u8x16::splat(0x20);
    let eq = |c: u8| x.simd_eq(u8x16::splat(c));
    let digit = in_range(x, b'0', 10);
    let both = digit | eq(b'-') | eq(b'\n') | eq(b'\r');
    let b64 = both | in_range(l, b'a', 26) | eq(b'+') | eq(b'/') | eq(b'_');
    let hex = both
        | in_range(l, b'a', 6)
        | l.simd_eq(u8x16::splat(b'x'))
        | eq(b':')
        | eq(b',')
        | eq(b' ')
        | eq(b'=')
        | eq(b'\\')
        | eq(b';')
        | eq(b'\t');
    (b64.to_bitmask(), hex.to_bitmask())
}

/// The class bits of a 64-byte block.
#[inline(always)]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    let (mut mb, mut mh) = (0u64, 0u64);
    for j in 0..4 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&block[16 * j..16 * j + 16]);
        let (b, h) = classify16(a);
        mb |= u64::from(b) << (16 * j);
        mh |= u64::from(h) << (16 * j);
    }
    (mb, mh)
}

/// The shifts that take a class bitmap to its windows of `w` bits
/// (`1 <= w <= 64`), by doubling: 1, 2, 4, ... while the windows covered
/// double, then the rest (`34`: 1, 2, 4, 8, 16, 2). At most seven; the
/// count is the second field.
const fn window_steps(w: u32) -> ([u32; 7], usize) {
    let (mut steps, mut n, mut have) = ([0u32; 7], 0, 1);
    while have * 2 <= w {
        steps[n] = have;
        n += 1;
        have *= 2;
    }
    if have < w {
        steps[n] = w - have;
        n += 1;
    }
    (steps, n)
}

/// One word of the bit string whose bit `i` is set iff bits `i..i + w`
/// of the class bits are all set (bit `i` in word `i / 64`, all set past
/// the end), from the word's class bits `v`, for words taken from the
/// last to the first. Step `k` needs the next word's bits as they were
/// before step `k`: `next[k]` carries them from the word before in this
/// order (all set past the end), and is left holding this word's. So the
/// windows cost a few register operations a word and step, inside the
/// class pass: a pass over the words per step loaded and stored each
/// word at every step (and before that, one chain of dependent 128-bit
/// shifts per block was about 5% of a text chunk's time).
#[inline(always)]
fn window_word(mut v: u64, next: &mut [u64; 7], steps: &([u32; 7], usize)) -> u64 {
    for (&s, n) in steps.0.iter().zip(next.iter_mut()).take(steps.1) {
        let before = std::mem::replace(n, v);
        v &= (v >> s) | (before << (64 - s));
    }
    v
}

impl Runs {
    /// Classify `hay[from..]`; `B64_W` and `HEX_W` are the window lengths
    /// (constants, so that `window_word` unrolls into fixed shifts: with the
    /// lengths as arguments its loop and variable shifts were more
    /// than half of this function's instructions).
    pub(crate) fn compute<const B64_W: u32, const HEX_W: u32>(&mut self, hay: &[u8], from: usize) {
        self.from = from;
        self.end = hay.len();
        self.b64.clear();
        self.hex.clear();
        let rest = hay.get(from..).unwrap_or_default();
        if rest.is_empty() {
            return;
        }
        // Class bits of every block.
        let block = |j: usize| -> (u64, u64) {
            let at = 64 * j;
            match rest.get(at..at + 64) {
                Some(s) => {
                    let mut a = [0u8; 64];
                    a.copy_from_slice(s);
                    classify(&a)
                }
                None => {
                    // The last, partial block: pad with a byte of both
                    // classes.
                    let mut a = [b'0'; 64];
                    let tail = rest.get(at..).unwrap_or_default();
                    a[..tail.len()].copy_from_slice(tail);
                    classify(&a)
                }
            }
        };
        let blocks = rest.len().div_ceil(64);
        // Sized once and written in place: a push per word checked the
        // capacity each time (about 1% of a text chunk's instructions).
        self.b64.resize(blocks, 0);
        self.hex.resize(blocks, 0);
        // From the last block to the first, each word's windows made as
        // its class bits are (see `window_word`).
        let (b64_steps, hex_steps) = (window_steps(B64_W), window_steps(HEX_W));
        let (mut b64_next, mut hex_next) = ([u64::MAX; 7], [u64::MAX; 7]);
        for (j, (wb, wh)) in self
            .b64
            .iter_mut()
            .zip(self.hex.iter_mut())
            .enumerate()
            .rev()
        {
            let (b, h) = block(j);
            *wb = window_word(b, &mut b64_next, &b64_steps);
            *wh = window_word(h, &mut hex_next, &hex_steps);
        }
    }

    /// The first position `p >= at` where a base64 window starts, or the
    /// input's end; `None` when `at` is outside the classified input.
    pub(crate) fn next_b64(&self, at: usize) -> Option<usize> {
        self.next(&self.b64, at)
    }

    /// As [`Runs::next_b64`], for hex.
    pub(crate) fn next_hex(&self, at: usize) -> Option<usize> {
        self.next(&self.hex, at)
    }

    fn next(&self, words: &[u64], at: usize) -> Option<usize> {
        let rel = at.checked_sub(self.from)?;
        if at >= self.end {
            return None;
        }
        let mut j = rel / 64;
        let mut w = words.get(j)? & (u64::MAX << (rel % 64));
        loop {
            if w != 0 {
                let p = self.from + 64 * j + w.trailing_zeros() as usize;
                return Some(p.min(self.end));
            }
            j += 1;
            match words.get(j) {
                Some(&x) => w = x,
                None => return Some(self.end),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow definition: the first `p >= at` whose next `w` bytes (past
    /// the end: in the class) are all in the class.
    fn naive(hay: &[u8], at: usize, w: usize, class: fn(u8) -> bool) -> usize {
        (at..hay.len())
            .find(|&p| (p..p + w).all(|i| hay.get(i).is_none_or(|&b| class(b))))
            .unwrap_or(hay.len())
    }

    #[test]
    fn the_classes_match_the_decoders_table() {
        for b in 0..=255u8 {
            let base64 = b.is_ascii_alphanumeric() || b"+/-_\n\r".contains(&b);
            let hex = b.is_ascii_hexdigit() || b"-:, =\\xX;\t\n\r".contains(&b);
            assert_eq!(b64_byte(b), base64, "byte {b:#04x}");
            assert_eq!(hex_byte(b), hex, "byte {b:#04x}");
            // And the decoders' own table: a byte the class pass left out
            // would let a run start unseen.
            use crate::scan::decode::{B64, CLASS, HEXC, HEXD};
            let c = CLASS[usize::from(b)];
            let breaks = matches!(b, b'\n' | b'\r');
            assert_eq!(b64_byte(b), c & B64 != 0 || breaks, "byte {b:#04x}");
            let codes = matches!(b, b';' | b'\t');
            assert_eq!(
                hex_byte(b),
                c & (HEXD | HEXC) != 0 || breaks || codes,
                "byte {b:#04x}"
            );
        }
    }

    #[test]
    fn the_vector_classes_match_the_byte_classes() {
        use crate::scan::decode::CLASS;
        for b in 0..=255u8 {
            // Every lane position, so a lane the mask misplaces is caught.
            for lane in 0..16 {
                let mut bytes = [b'!'; 16];
                bytes[lane] = b;
                for (way, (m64, mhex)) in [
                    ("compare", classify16_compare(bytes)),
                    ("nibbles", classify16_nibbles(bytes)),
                    ("shipped", classify16(bytes)),
                ] {
                    assert_eq!(m64 >> lane & 1 == 1, b64_byte(b), "{way}: byte {b:#04x}");
                    assert_eq!(mhex >> lane & 1 == 1, hex_byte(b), "{way}: byte {b:#04x}");
                    assert_eq!(m64 & !(1 << lane), 0, "{way}: only lane {lane} may be set");
                    assert_eq!(mhex & !(1 << lane), 0, "{way}: only lane {lane} may be set");
                }
                // The base64 layer's idle walk: its characters, and those
                // that are not hex digits.
                let c = CLASS[usize::from(b)];
                let (chars, nonhex) = chars16(bytes);
                assert_eq!(chars >> lane & 1 == 1, c & B64 != 0, "walk: byte {b:#04x}");
                assert_eq!(
                    nonhex >> lane & 1 == 1,
                    c & NONHEX != 0,
                    "walk: byte {b:#04x}"
                );
                assert_eq!(chars & !(1 << lane), 0, "walk: only lane {lane} may be set");
                assert_eq!(
                    nonhex & !(1 << lane),
                    0,
                    "walk: only lane {lane} may be set"
                );
            }
        }
    }

    /// A small deterministic random source (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// Every window length the steps allow, on random words with long
    /// runs of set bits: bit `i` of the result is set iff bits `i..i + w`
    /// are (all set past the end).
    #[test]
    fn windows_of_every_length_match_their_definition() {
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for w in 1..=64u32 {
            let steps = window_steps(w);
            for _ in 0..20 {
                let n = (rnd() % 6) as usize + 1;
                // Mostly set, so that windows of every length occur.
                let words: Vec<u64> = (0..n).map(|_| rnd() | rnd() | rnd() | rnd()).collect();
                let bit = |i: usize| words.get(i / 64).is_none_or(|x| x >> (i % 64) & 1 == 1);
                let mut next = [u64::MAX; 7];
                let mut got = vec![0u64; n];
                for j in (0..n).rev() {
                    got[j] = window_word(words[j], &mut next, &steps);
                }
                for i in 0..64 * n {
                    let want = (i..i + w as usize).all(bit);
                    assert_eq!(got[i / 64] >> (i % 64) & 1 == 1, want, "w {w}, bit {i}");
                }
            }
        }
    }

    #[test]
    fn next_windows_agree_with_the_slow_definition() {
        let mut rnd = xorshift(0x2545_f491_4f6c_dd1du64);
        let alphabet = b"aZ09+/ \n\r\"x:,-_g.\\%";
        for round in 0..400 {
            let len = (rnd() % 400) as usize;
            // Long runs of one class and short breaks, so windows occur.
            let dense = round % 2 == 0;
            let hay: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rnd();
                    if dense && !r.is_multiple_of(10) {
                        b"0a9f"[(r % 4) as usize]
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let from = if len == 0 { 0 } else { (rnd() as usize) % len };
            let mut runs = Runs::default();
            runs.compute::<16, 34>(&hay, from);
            for at in from..hay.len() {
                assert_eq!(
                    runs.next_b64(at),
                    Some(naive(&hay, at, 16, b64_byte)),
                    "b64 at {at} in {:?}",
                    String::from_utf8_lossy(&hay)
                );
                assert_eq!(
                    runs.next_hex(at),
                    Some(naive(&hay, at, 34, hex_byte)),
                    "hex at {at}"
                );
            }
            if from > 0 {
                assert_eq!(runs.next_b64(from - 1), None);
            }
            assert_eq!(runs.next_hex(hay.len()), None);
        }
    }
}
