//! The held literals' search: every occurrence of every literal, found by
//! looking at one position in `step`.
//!
//! The keyword automaton must look at every byte, as keywords are short.
//! Held literals are not: each is at least [`MIN_HELD_LEN`] bytes, and
//! most are far longer (a 40-byte token's hex form is 80). Any occurrence
//! of a literal of `n` bytes holds `n - 3` four-byte windows, so with every
//! literal at least `m` bytes long, a grid of positions `m - 3` apart puts
//! one of its points in the first `m - 3` bytes of every occurrence. The
//! search reads the four bytes at each grid point and checks a bitmap of
//! the windows that start within the first `step` bytes of a literal; a
//! hit is confirmed by comparing the literal in place.
//!
//! Measured side by side with the Teddy groups it replaced (scan bench,
//! ten 40-byte held values): see the README. The cost of the grid does
//! not grow with the number of held values, only the bitmap's hit rate
//! does; a Teddy group holds at most 20 anchors, so each ten held values
//! added a pass over every byte.
//!
//! [`MIN_HELD_LEN`]: super::held::MIN_HELD_LEN

use zeroize::Zeroizing;

/// Bytes read at a grid point.
pub(crate) const WINDOW: usize = 4;

/// Widest grid spacing. Each literal indexes `step` windows, so a long
/// shortest literal (a held private key) would make a large table for
/// probes the bench cannot tell apart from these: 256 per 16 KiB.
const MAX_STEP: usize = 64;

/// Bits of bitmap per indexed window: about one probe in sixteen of a
/// random window finds a bit set.
const BITS_PER_WINDOW: usize = 16;

/// Bitmap sizes, as powers of two (512 bytes to 32 KiB: it stays in the
/// L1 cache).
const MIN_BITS_LOG: u32 = 12;
const MAX_BITS_LOG: u32 = 18;

/// Every occurrence of a set of literals, each at least [`WINDOW`] bytes.
/// Holds secrets' bytes: zeroized on drop.
pub(crate) struct Sampled {
    lits: Vec<Zeroizing<Vec<u8>>>,
    /// Grid spacing: the shortest literal's length - 3, at most
    /// [`MAX_STEP`].
    step: usize,
    /// One bit per hash of an indexed window.
    bits: Zeroizing<Vec<u64>>,
    shift: u32,
    /// `[window, literal, offset]`, sorted: each literal's windows at
    /// offsets `0..step`.
    windows: Zeroizing<Vec<[u32; 3]>>,
}

impl Sampled {
    /// `None` when there is nothing to look for or a literal is shorter
    /// than a window (the caller's automaton searches then).
    pub(crate) fn new<T: AsRef<[u8]>>(lits: &[T]) -> Option<Sampled> {
        let shortest = lits.iter().map(|l| l.as_ref().len()).min()?;
        if shortest < WINDOW || u32::try_from(lits.len()).is_err() {
            return None;
        }
        // Any spacing up to `shortest - 3` puts a grid point in the first
        // `step` bytes of every occurrence, at or before its last window.
        let step = (shortest - WINDOW + 1).min(MAX_STEP);
        let mut windows: Zeroizing<Vec<[u32; 3]>> = Zeroizing::new(Vec::new());
        for (i, lit) in lits.iter().enumerate() {
            for d in 0..step {
                let w = window(lit.as_ref(), d)?;
                windows.push([w, i as u32, d as u32]);
            }
        }
        windows.sort_unstable();
        windows.dedup();
        let want = (windows.len() * BITS_PER_WINDOW).next_power_of_two();
        let log = want.trailing_zeros().clamp(MIN_BITS_LOG, MAX_BITS_LOG);
        let shift = 32 - log;
        let mut bits = Zeroizing::new(vec![0u64; (1usize << log) / 64]);
        for &[w, _, _] in windows.iter() {
            let h = hash(w, shift);
            bits[h / 64] |= 1 << (h % 64);
        }
        Some(Sampled {
            lits: lits
                .iter()
                .map(|l| Zeroizing::new(l.as_ref().to_vec()))
                .collect(),
            step,
            bits,
            shift,
            windows,
        })
    }

    /// All occurrences in `hay`, overlapping ones included, as
    /// `(end, start, literal)`, sorted. The same list an automaton's
    /// overlapping search gives: a property test holds them equal.
    pub(crate) fn find_all(&self, hay: &[u8], out: &mut Vec<(usize, usize, usize)>) {
        out.clear();
        let mut t = 0;
        while let Some(w) = window(hay, t) {
            let h = hash(w, self.shift);
            if self.bits[h / 64] & (1 << (h % 64)) != 0 {
                self.confirm(hay, t, w, out);
            }
            t += self.step;
        }
        out.sort_unstable();
    }

    /// The literals whose indexed window `w` is the one at grid point `t`.
    #[cold]
    fn confirm(&self, hay: &[u8], t: usize, w: u32, out: &mut Vec<(usize, usize, usize)>) {
        let first = self.windows.partition_point(|e| e[0] < w);
        for &[_, lit, d] in self.windows[first..].iter().take_while(|e| e[0] == w) {
            let lit = lit as usize;
            let Some(x) = t.checked_sub(d as usize) else {
                continue;
            };
            let needle = &self.lits[lit];
            let end = x + needle.len();
            if hay.get(x..end) == Some(&needle[..]) {
                out.push((end, x, lit));
            }
        }
    }
}

fn window(bytes: &[u8], at: usize) -> Option<u32> {
    let w: [u8; WINDOW] = bytes.get(at..at + WINDOW)?.try_into().ok()?;
    Some(u32::from_le_bytes(w))
}

fn hash(w: u32, shift: u32) -> usize {
    (w.wrapping_mul(0x9e37_79b1) >> shift) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasick, MatchKind};
    use proptest::prelude::*;

    fn by_automaton(lits: &[Vec<u8>], hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(lits)
            .unwrap();
        let mut v: Vec<_> = ac
            .find_overlapping_iter(hay)
            .map(|m| (m.end(), m.start(), m.pattern().as_usize()))
            .collect();
        v.sort_unstable();
        v
    }

    fn by_grid(lits: &[Vec<u8>], hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let s = Sampled::new(lits).unwrap();
        let mut out = Vec::new();
        s.find_all(hay, &mut out);
        out
    }

    #[test]
    fn finds_every_occurrence_at_every_offset() {
        let lits: Vec<Vec<u8>> = vec![b"ghp_0123456789abcdef".to_vec(), b"s3cr3t!!".to_vec()];
        for pre in 0..24 {
            for lit in &lits {
                let mut hay = vec![b'.'; pre];
                hay.extend_from_slice(lit);
                hay.extend_from_slice(b"tail");
                let found = by_grid(&lits, &hay);
                assert_eq!(found, by_automaton(&lits, &hay), "offset {pre}");
                assert_eq!(found.len(), 1, "offset {pre}");
            }
        }
    }

    #[test]
    fn overlapping_and_repeated_literals() {
        // One literal inside another, one overlapping itself, and a run
        // of the same byte: every occurrence, each once.
        let lits: Vec<Vec<u8>> = vec![
            b"aaaaaaaa".to_vec(),
            b"xaaaaaaaay".to_vec(),
            b"abababab".to_vec(),
        ];
        let hay = b"aaaaaaaaaaaaxaaaaaaaay ababababababab aaaaaaa".to_vec();
        let found = by_grid(&lits, &hay);
        assert_eq!(found, by_automaton(&lits, &hay));
        assert!(found.len() > 8, "{found:?}");
    }

    #[test]
    fn long_literals_are_found_with_a_capped_step() {
        // Not periodic, so each literal occurs just where it is put.
        let mut x = 0x2545_f491_u32;
        let long: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 26) as u8
            })
            .collect();
        let lits = vec![long.clone(), long[100..].to_vec()];
        assert_eq!(Sampled::new(&lits).unwrap().step, MAX_STEP);
        for pre in [0, 1, 63, 64, 65, 130] {
            let mut hay = vec![b'#'; pre];
            hay.extend_from_slice(&long);
            hay.extend_from_slice(&long[..150]);
            let found = by_grid(&lits, &hay);
            assert_eq!(found, by_automaton(&lits, &hay), "offset {pre}");
            assert_eq!(found.len(), 2, "offset {pre}");
        }
    }

    #[test]
    fn too_short_or_empty_falls_back() {
        assert!(Sampled::new::<&[u8]>(&[]).is_none());
        assert!(Sampled::new(&[&b"abc"[..], b"abcdefgh"]).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Literals from a small alphabet, so they occur (and overlap)
        /// often in the haystack.
        #[test]
        fn the_grid_finds_what_the_automaton_finds(
            lits in prop::collection::vec(prop::collection::vec(0u8..4, 8..24), 1..6),
            hay in prop::collection::vec(0u8..4, 0..400),
            seeded in prop::collection::vec((0usize..6, 0usize..400), 0..6),
        ) {
            let mut hay = hay;
            for (li, at) in seeded {
                let lit = &lits[li % lits.len()];
                let at = at.min(hay.len());
                hay.splice(at..at, lit.iter().copied());
            }
            prop_assert_eq!(by_grid(&lits, &hay), by_automaton(&lits, &hay));
        }
    }
}
