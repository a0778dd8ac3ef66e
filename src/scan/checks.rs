//! Validators that decide whether a candidate a pattern's regex found is a
//! real value of its kind: checksums and issuer tables, code rather than
//! regex. A pattern names one with `checksum = "<name>"`; a candidate that
//! fails it is no verified match.
//!
//! | name          | what holds                                                        |
//! |---------------|-------------------------------------------------------------------|
//! | `github`      | GitHub / npm token CRC32 (in `patterns.rs`)                        |
//! | `card`        | payment card: Luhn, and an issuer (IIN) range for its length       |
//! | `iban`        | IBAN: the country's length and ISO 13616 mod-97 = 1                |
//! | `wif`         | Bitcoin WIF private key: base58check, version 0x80 / 0xEF, 32 bytes |
//! | `bip32`       | BIP32 extended private key (`xprv`, `tprv`...): base58check, 78 bytes, private key marker |
//! | `bip39`       | BIP39 English mnemonic of 12..=24 words, checksum verified         |
//! | `basic`       | HTTP Basic credentials: base64 of printable `user:password`        |
//!
//! Separators a pattern allows inside a value (spaces and dashes in a card
//! number, spaces in an IBAN, any run of non-letters between mnemonic
//! words) are skipped here. Every function is total: it never panics on any
//! input, and bounds its own work by the input length.

/// Luhn (mod 10) over the ASCII digits of `digits`; any other byte fails.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// The digits of a card candidate (spaces and dashes dropped), or `None`
/// when another byte is present.
fn card_digits(candidate: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(19);
    for &b in candidate {
        match b {
            b'0'..=b'9' => out.push(b),
            b' ' | b'-' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Is `digits` (ASCII digits only) in the issuer range of a card network
/// that issues numbers of this length? Visa, Mastercard, American Express,
/// Discover, JCB, Diners Club and UnionPay.
pub(crate) fn card_issuer(digits: &[u8]) -> Option<&'static str> {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits
            .iter()
            .take(k)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    if p1 == 4 && matches!(n, 13 | 16 | 19) {
        return Some("visa");
    }
    if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16 {
        return Some("mastercard");
    }
    if (p2 == 34 || p2 == 37) && n == 15 {
        return Some("amex");
    }
    if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
        && (16..=19).contains(&n)
    {
        return Some("discover");
    }
    if (3528..=3589).contains(&p4) && (16..=19).contains(&n) {
        return Some("jcb");
    }
    if (p2 == 36 || (300..=305).contains(&p3) || p4 == 3095 || p2 == 38 || p2 == 39)
        && (14..=19).contains(&n)
    {
        return Some("diners");
    }
    if p2 == 62 && (16..=19).contains(&n) {
        return Some("unionpay");
    }
    None
}

/// A payment card number: digits with optional space / dash separators,
/// 13..=19 digits, Luhn valid, in an issuer's range for its length, and not
/// one repeated digit.
pub(crate) fn card(candidate: &[u8]) -> bool {
    let Some(d) = card_digits(candidate) else {
        return false;
    };
    (13..=19).contains(&d.len())
        && d.iter().any(|&b| b != d[0])
        && luhn(&d)
        && card_issuer(&d).is_some()
}

/// IBAN length per country (ISO 13616 registry, SWIFT release 2024).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The registered length of IBANs of `country`, if it issues them.
pub(crate) fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == country)
        .map(|&(_, n)| n)
}

/// An IBAN (spaces allowed, ASCII letters in upper case): a known country,
/// that country's length, and the ISO 7064 mod-97 check (the rearranged
/// number, letters as 10..=35, is 1 mod 97).
pub(crate) fn iban(candidate: &[u8]) -> bool {
    let s: Vec<u8> = candidate.iter().copied().filter(|&b| b != b' ').collect();
    let (Some(country), Some(check)) = (s.get(..2), s.get(2..4)) else {
        return false;
    };
    if !country.iter().all(u8::is_ascii_uppercase) || !check.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if iban_length(country) != Some(s.len()) {
        return false;
    }
    iban_mod97(&s)
}

/// ISO 7064 mod 97-10 over an IBAN without spaces: move the first four
/// characters to the end, read letters as 10..=35, and the remainder
/// modulo 97 must be 1. False on any byte that is not a digit or an
/// upper-case letter.
pub(crate) fn iban_mod97(s: &[u8]) -> bool {
    if s.len() < 5 {
        return false;
    }
    let (head, tail) = s.split_at(4);
    let mut rem = 0u32;
    for &b in tail.iter().chain(head) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// Base58check decode (double SHA-256 checksum): the payload with its
/// version byte, or `None`.
fn base58check(s: &[u8]) -> Option<Vec<u8>> {
    bs58::decode(s).with_check(None).into_vec().ok()
}

/// A Bitcoin WIF private key: base58check of version 0x80 (mainnet) or 0xEF
/// (testnet), 32 key bytes, and an optional 0x01 compressed-key marker.
pub(crate) fn wif(candidate: &[u8]) -> bool {
    match base58check(candidate).as_deref() {
        Some([0x80 | 0xEF, rest @ ..]) => {
            rest.len() == 32 || (rest.len() == 33 && rest.last() == Some(&0x01))
        }
        _ => false,
    }
}

/// Version bytes of BIP32 extended *private* keys: xprv, tprv, yprv, zprv,
/// uprv, vprv (and their multisig Y/Z/U/V forms).
const BIP32_PRIVATE_VERSIONS: &[[u8; 4]] = &[
    [0x04, 0x88, 0xAD, 0xE4], // xprv
    [0x04, 0x35, 0x83, 0x94], // tprv
    [0x04, 0x9D, 0x78, 0x78], // yprv
    [0x02, 0x95, 0xB0, 0x05], // Yprv
    [0x04, 0xB2, 0x43, 0x0C], // zprv
    [0x02, 0xAA, 0x7A, 0x99], // Zprv
    [0x04, 0x4A, 0x4E, 0x28], // uprv
    [0x02, 0x42, 0x85, 0xB5], // Uprv
    [0x04, 0x5F, 0x18, 0xBC], // vprv
    [0x02, 0x57, 0x50, 0x48], // Vprv
];

/// A BIP32 extended private key: base58check of 78 bytes whose version is
/// a private one and whose key data is 0x00 followed by the 32-byte key.
pub(crate) fn bip32(candidate: &[u8]) -> bool {
    let Some(raw) = base58check(candidate) else {
        return false;
    };
    raw.len() == 78
        && BIP32_PRIVATE_VERSIONS
            .iter()
            .any(|v| raw.get(..4) == Some(v.as_slice()))
        && raw.get(45) == Some(&0)
}

/// HTTP Basic credentials: standard base64 (padding optional) of printable
/// ASCII `user:password`, both parts non-empty, the password at least 3
/// bytes.
pub(crate) fn basic(candidate: &[u8]) -> bool {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let Ok(raw) = engine.decode(candidate) else {
        return false;
    };
    if !raw.iter().all(|b| (0x20..0x7f).contains(b)) {
        return false;
    }
    match raw.iter().position(|&b| b == b':') {
        Some(i) => i > 0 && raw.len() - i > 3,
        None => false,
    }
}

/// Words per BIP39 mnemonic, longest first.
const BIP39_COUNTS: [usize; 5] = [24, 21, 18, 15, 12];

/// A BIP39 English mnemonic: the candidate's words (runs of ASCII letters,
/// lowercased; anything else separates) are, from the first on, 24, 21, 18,
/// 15 or 12 words of the English list whose checksum holds. Extra words
/// after the mnemonic are allowed (a phrase followed by prose).
pub(crate) fn bip39(candidate: &[u8]) -> bool {
    let words: Vec<String> = candidate
        .split(|b| !b.is_ascii_alphabetic())
        .filter(|w| !w.is_empty() && w.len() <= 8)
        .take(24)
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
        .collect();
    BIP39_COUNTS.iter().any(|&n| {
        words.len() >= n
            && words.get(..n).map(|ws| ws.join(" ")).is_some_and(|phrase| {
                bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &phrase).is_ok()
            })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Append the Luhn check digit to `body` (ASCII digits).
    pub(crate) fn with_luhn(body: &str) -> String {
        for d in 0..10u8 {
            let s = format!("{body}{d}");
            if luhn(s.as_bytes()) {
                return s;
            }
        }
        unreachable!("one digit always completes a Luhn sum")
    }

    /// Fill in the two check digits of an IBAN given as `CC00BBAN`.
    pub(crate) fn with_iban_check(country: &str, bban: &str) -> String {
        // Check digits = 98 - (BBAN + country + "00") mod 97.
        let rearranged = format!("{bban}{country}00");
        let mut rem = 0u32;
        for b in rearranged.bytes() {
            rem = match b {
                b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
                _ => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            };
        }
        format!("{country}{:02}{bban}", 98 - rem)
    }

    /// Base58check of `payload` (version byte included).
    pub(crate) fn b58check(payload: &[u8]) -> String {
        bs58::encode(payload).with_check().into_string()
    }

    #[test]
    fn luhn_known_values() {
        // Published network test numbers (not real cards).
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(!luhn(b""));
        assert!(!luhn(b"4111-1111"));
    }

    #[test]
    fn card_needs_luhn_issuer_and_length() {
        assert!(card(b"4111 1111 1111 1111"));
        assert!(card(b"4111-1111-1111-1111"));
        assert!(card(b"3782 822463 10005")); // Amex 4-6-5
        assert!(card(b"5555555555554444"));
        assert!(card(b"2223003122003222"));
        assert!(card(b"6011111111111117"));
        assert!(card(b"3530111333300000"));
        assert!(card(b"36259600000004")); // Diners, 14 digits
        assert!(card(b"6200000000000005"));
        // Luhn-valid, no issuer: a snowflake-like id and a timestamp-like run.
        let snowflake = with_luhn("117583016749263872");
        assert!(luhn(snowflake.as_bytes()));
        assert!(!card(snowflake.as_bytes()));
        assert!(!card(with_luhn("170000000000000").as_bytes()));
        // Issuer right, Luhn wrong.
        assert!(!card(b"4111111111111112"));
        // Issuer right, length wrong for it (Amex is 15).
        assert!(!card(with_luhn("371449635398431").as_bytes()));
        // One digit repeated.
        assert!(!card(b"0000000000000000"));
        assert!(!card(b"4111x1111"));
    }

    #[test]
    fn iban_known_values() {
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"GB82 WEST 1234 5698 7654 32"));
        assert!(iban(b"DE89370400440532013000"));
        assert!(!iban(b"GB82WEST12345698765433"), "mod-97 fails");
        assert!(!iban(b"DE8937040044053201300"), "length for DE is 22");
        assert!(!iban(b"ZZ89370400440532013000"), "unknown country");
        assert!(!iban(b"gb82west12345698765432"));
        let made = with_iban_check("FR", "20041010050500013M02606");
        assert!(iban(made.as_bytes()), "{made}");
    }

    #[test]
    fn wif_and_bip32() {
        let mut p = vec![0x80];
        p.extend([7u8; 32]);
        let uncompressed = b58check(&p);
        assert!(uncompressed.starts_with('5'), "{uncompressed}");
        assert!(wif(uncompressed.as_bytes()));
        p.push(1);
        let compressed = b58check(&p);
        assert!(wif(compressed.as_bytes()));
        let mut broken = compressed.into_bytes();
        broken[10] = if broken[10] == b'z' { b'y' } else { b'z' };
        assert!(!wif(&broken));

        let mut x = vec![0x04, 0x88, 0xAD, 0xE4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        x.extend([9u8; 32]); // chain code
        x.push(0);
        x.extend([5u8; 32]); // key
        let xprv = b58check(&x);
        assert!(xprv.starts_with("xprv"), "{xprv}");
        assert_eq!(xprv.len(), 111);
        assert!(bip32(xprv.as_bytes()));
        x[..4].copy_from_slice(&[0x04, 0x88, 0xB2, 0x1E]); // xpub: public, not a secret
        assert!(!bip32(b58check(&x).as_bytes()));
    }

    #[test]
    fn basic_credentials() {
        assert!(basic(b"ZGVwbG95OkZBS0VleGFtcGxlUGFzc3cwcmQ="));
        assert!(basic(b"ZGVwbG95OkZBS0VleGFtcGxlUGFzc3cwcmQ"));
        assert!(!basic(b"dXNlcm5hbWU="), "no colon");
        assert!(!basic(b"understanding"), "not base64 of text");
    }

    #[test]
    fn bip39_checksum() {
        let m = bip39::Mnemonic::from_entropy(&[0x5Au8; 16])
            .unwrap()
            .to_string();
        assert!(bip39(m.as_bytes()), "{m}");
        assert!(bip39(format!("{m} and then some prose").as_bytes()));
        let m24 = bip39::Mnemonic::from_entropy(&[0xA7u8; 32])
            .unwrap()
            .to_string();
        assert!(bip39(m24.as_bytes()));
        assert!(bip39(m24.replace(' ', ", ").as_bytes()));
        // Twelve list words whose checksum fails.
        assert!(!bip39(b"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon"));
        assert!(!bip39(
            b"the quick brown fox jumps over the lazy dog and runs away fast"
        ));
        assert!(!bip39(b""));
    }
}
