//! Fresh random secrets of the right shape (and a valid checksum where the
//! kind has one), generated per test run: never a documented example value,
//! which precise scanning treats as `shaped` and leaves alone.

use std::io::Read;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `n` characters drawn uniformly from `alphabet` (from /dev/urandom).
pub fn pick(alphabet: &[u8], n: usize) -> String {
    let mut raw = vec![0u8; n * 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("/dev/urandom");
    raw.chunks(2)
        .map(|c| {
            let v = usize::from(u16::from_le_bytes([c[0], c[1]]));
            char::from(alphabet[v % alphabet.len()])
        })
        .collect()
}

/// An AWS access key id: `AKIA` and 16 base32 characters.
pub fn aws_access_key_id() -> String {
    format!("AKIA{}", pick(BASE32, 16))
}

fn base62_6(mut n: u32) -> String {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

/// A GitHub token (`ghp_`, `gho_`, ...) with a valid CRC32 checksum.
pub fn github_token_with(prefix: &str) -> String {
    let payload = pick(BASE62, 30);
    let mut crc = flate2::Crc::new();
    crc.update(payload.as_bytes());
    format!("{prefix}{payload}{}", base62_6(crc.sum()))
}

/// A classic GitHub personal access token with a valid checksum.
pub fn github_token() -> String {
    github_token_with("ghp_")
}

/// A `ghp_` token of the right shape whose checksum does not verify.
pub fn github_token_bad_checksum() -> String {
    let good = github_token();
    let (body, last) = good.split_at(good.len() - 1);
    let swapped = if last == "A" { "B" } else { "A" };
    format!("{body}{swapped}")
}
