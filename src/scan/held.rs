//! Held secrets: the exact values airlock itself holds (injected credentials),
//! and the encoded forms a leak of them would take.
//!
//! Each held value becomes a handful of literals for the scanner's held
//! search, all tagged with the held id: the raw bytes, standard and
//! URL-safe base64 in all three alignments, lower- and uppercase hex,
//! percent-encoding (every byte `%XX`, and the minimal form), and JSON string
//! escaping. A finding's pattern id is `held:<id>`.
//!
//! Values shorter than [`MIN_HELD_LEN`] bytes are ignored: too short to be a
//! credential, and they would match ordinary text.
//!
//! # Security
//! [`HeldSecret`] zeroizes its value on drop and prints as
//! `HeldSecret { id, value: <redacted, N bytes> }`. The derived literals kept
//! in the scanner (and the grid search's windows of them) are zeroized when
//! it drops, but the aho-corasick automaton that checks short inputs keeps
//! its own copy of the literal bytes, which is not zeroized.

use std::fmt;

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use zeroize::{Zeroize, Zeroizing};

use super::patterns::MAX_LEN_CAP;

/// Held values shorter than this (in bytes) are not scanned for.
pub const MIN_HELD_LEN: usize = 8;

/// A secret value airlock holds, to be caught verbatim or encoded.
pub struct HeldSecret {
    id: String,
    value: Zeroizing<Vec<u8>>,
}

impl HeldSecret {
    /// `id` names the secret in findings (`"vault:tools/github#token"`); it is
    /// not secret. `value` is, and is zeroized on drop.
    pub fn new(id: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeldSecret {
            id: id.into(),
            value: Zeroizing::new(value.into()),
        }
    }

    /// The id given at construction.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Length of the value in bytes.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The secret bytes. Only the scanner should call this.
    pub(crate) fn expose_secret(&self) -> &[u8] {
        &self.value
    }
}

impl Clone for HeldSecret {
    fn clone(&self) -> Self {
        HeldSecret {
            id: self.id.clone(),
            value: Zeroizing::new(self.value.to_vec()),
        }
    }
}

impl fmt::Debug for HeldSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HeldSecret {{ id: {:?}, value: <redacted, {} bytes> }}",
            self.id,
            self.value.len()
        )
    }
}

/// The literals that betray `value`, deduplicated, each at most
/// [`MAX_LEN_CAP`] bytes (longer encodings are cut to their first
/// `MAX_LEN_CAP` bytes: still a leak detector, and it bounds the hold-back).
/// Empty when the value is shorter than [`MIN_HELD_LEN`].
pub(crate) fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    if value.len() < MIN_HELD_LEN {
        return out;
    }
    let mut add = |mut lit: Vec<u8>| {
        lit.truncate(MAX_LEN_CAP);
        if lit.len() >= MIN_HELD_LEN && !out.iter().any(|o| **o == lit) {
            out.push(Zeroizing::new(lit));
        } else {
            lit.zeroize();
        }
    };
    add(value.to_vec());

    // base64: the value's encoding when it starts at byte offset 0, 1 or 2 of
    // a 3-byte group. Only characters whose 6 bits come entirely from the
    // value are stable; the ones mixing in neighbouring bytes are dropped.
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut padded = Zeroizing::new(vec![0u8; shift]);
            padded.extend_from_slice(value);
            let enc = Zeroizing::new(engine.encode(&*padded).into_bytes());
            let first = (8 * shift).div_ceil(6);
            let last = (8 * (shift + value.len())) / 6;
            if let Some(stable) = enc.get(first..last) {
                add(stable.to_vec());
            }
        }
    }

    // hex
    let hex_lower: &[u8; 16] = b"0123456789abcdef";
    let hex_upper: &[u8; 16] = b"0123456789ABCDEF";
    for digits in [hex_lower, hex_upper] {
        let mut h = Vec::with_capacity(value.len() * 2);
        for &b in value {
            h.push(digits[(b >> 4) as usize]);
            h.push(digits[(b & 15) as usize]);
        }
        add(h);
    }

    // percent-encoding: every byte, and minimal (RFC 3986 unreserved kept)
    for digits in [hex_upper, hex_lower] {
        let mut all = Vec::with_capacity(value.len() * 3);
        let mut minimal = Vec::with_capacity(value.len() * 3);
        for &b in value {
            let enc = [b'%', digits[(b >> 4) as usize], digits[(b & 15) as usize]];
            all.extend_from_slice(&enc);
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                minimal.push(b);
            } else {
                minimal.extend_from_slice(&enc);
            }
        }
        add(all);
        add(minimal);
    }

    // JSON string escaping (UTF-8 values only), plus the `\/` variant some
    // encoders emit.
    if let Ok(s) = std::str::from_utf8(value)
        && let Ok(json) = serde_json::to_string(s)
    {
        let json = Zeroizing::new(json);
        let inner = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default();
        add(inner.as_bytes().to_vec());
        if inner.contains('/') {
            add(inner.replace('/', "\\/").into_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn debug_is_redacted() {
        let h = HeldSecret::new("vault:tools/github#token", "s3cr3t-value-xyz");
        let d = format!("{h:?}");
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("16 bytes"));
    }

    #[test]
    fn short_values_ignored() {
        assert!(encodings(b"1234567").is_empty());
        assert!(!encodings(b"12345678").is_empty());
    }

    #[test]
    fn base64_alignments_are_substrings_of_real_encodings() {
        let value = b"tok/en+value?with&odd=chars";
        let lits = encodings(value);
        for prefix in [&b""[..], b"a", b"ab", b"abc", b"Authorization: "] {
            for suffix in [&b""[..], b"x", b"yz"] {
                let mut data = prefix.to_vec();
                data.extend_from_slice(value);
                data.extend_from_slice(suffix);
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    let enc = engine.encode(&data);
                    assert!(
                        lits.iter().any(|l| contains(enc.as_bytes(), l)),
                        "no literal inside base64 with prefix {prefix:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_encodings_present() {
        let value = b"p@ss/w\"ord-1234";
        let lits: Vec<Vec<u8>> = encodings(value).iter().map(|l| l.to_vec()).collect();
        for want in [
            &b"70407373"[..],
            b"%70%40%73%73%2F",
            b"%70%40%73%73%2f",
            b"p%40ss%2Fw%22ord-1234",
            b"p@ss/w\\\"ord-1234",
            b"p@ss\\/w\\\"ord-1234",
        ] {
            assert!(lits.iter().any(|l| contains(l, want)), "missing {want:?}");
        }
    }
}
