//! Decode, then scan: every codec and nesting finds fresh random secrets,
//! whatever the chunking; benign inputs give nothing; the bounds hold.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn scanner() -> Arc<Scanner> {
    static SCANNER: OnceLock<Arc<Scanner>> = OnceLock::new();
    SCANNER
        .get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
            let set = PatternSet::load(&path).unwrap_or_else(|e| panic!("{e}"));
            Arc::new(Scanner::new(&set, &[]).unwrap())
        })
        .clone()
}

/// xorshift seeded from the clock and a counter: fresh values every run.
pub(crate) fn rand_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ t | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn pick(alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[(rand_u64() % alphabet.len() as u64) as usize] as char)
        .collect()
}

/// A fresh AWS access key id (`AKIA` + 16 of `A-Z2-7`).
pub(crate) fn fresh_aws() -> String {
    format!("AKIA{}", pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16))
}

/// A fresh classic GitHub token with a valid CRC32 checksum.
pub(crate) fn fresh_ghp() -> String {
    let payload = pick(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        30,
    );
    let mut crc = flate2::Crc::new();
    crc.update(payload.as_bytes());
    let check = super::patterns::base62_6(crc.sum());
    format!("ghp_{payload}{}", String::from_utf8_lossy(&check))
}

/// A fresh-looking PEM RSA key block (random body).
pub(crate) fn fresh_pem() -> String {
    let body: Vec<u8> = (0..600).map(|_| rand_u64() as u8).collect();
    let b64 = STANDARD.encode(body);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enc {
    B64,
    B64Url,
    Hex,
    HexDash,
    HexColon,
    HexBackslash,
    HexZeroX,
    /// Quoted-printable's escapes: `=41=4B...`.
    HexQp,
    Percent,
    Json,
    /// Decimal character codes: `65, 75, 73` (a Python list's items).
    Codes,
    /// `65,75,73` (a JSON array, `String.fromCharCode`'s arguments).
    CodesCompact,
    /// HTML decimal character references: `&#65;&#75;`.
    EntDec,
    /// HTML hex character references: `&#x41;&#x4b;`.
    EntHex,
    /// A gzip member (`gzip -c`).
    Gzip,
    /// A zlib stream (`zlib.compress`).
    Zlib,
    /// UTF-16, little endian: `A\0K\0`.
    Utf16Le,
    /// UTF-16, big endian: `\0A\0K`.
    Utf16Be,
    /// A zero-width space after every byte: `A\u{200b}K\u{200b}`.
    ZeroWidth,
    /// Printable ASCII as fullwidth forms: `ＡＫ`.
    Fullwidth,
    /// Printable ASCII as tag characters (U+E0020..U+E007E).
    Tags,
    /// Letters and digits as mathematical bold ones: `𝐀𝐊`, `𝟎`.
    Math,
    /// Letters and digits in circles: `ⒶⓀ`, `ⓐ`, `⓪①`.
    Circled,
}

pub(crate) const ENCS: [Enc; 23] = [
    Enc::B64,
    Enc::B64Url,
    Enc::Hex,
    Enc::HexDash,
    Enc::HexColon,
    Enc::HexBackslash,
    Enc::HexZeroX,
    Enc::HexQp,
    Enc::Percent,
    Enc::Json,
    Enc::Codes,
    Enc::CodesCompact,
    Enc::EntDec,
    Enc::EntHex,
    Enc::Utf16Le,
    Enc::Utf16Be,
    Enc::Gzip,
    Enc::Zlib,
    Enc::ZeroWidth,
    Enc::Fullwidth,
    Enc::Tags,
    Enc::Math,
    Enc::Circled,
];

/// Could `encs` (outermost first) be applied, each to the last one's
/// output? Compressed data is binary, and JSON escapes, HTML references and
/// UTF-16 write characters, not bytes: `\u008b` decodes to two UTF-8
/// bytes, so none of them carries gzip (nor would an agent write it so).
///
/// The unicode encodings write characters that are not ASCII: bytes those
/// same three would escape as other characters. And the unicode layer
/// reads a token, as the percent layer does: it carries what has no
/// blank, control byte or quote in it (not character codes written with
/// `, `, UTF-16, compressed data), and not another unicode encoding.
pub(crate) fn carries(encs: &[Enc]) -> bool {
    let text_only = |e: &Enc| {
        matches!(
            e,
            Enc::Json | Enc::EntDec | Enc::EntHex | Enc::Utf16Le | Enc::Utf16Be
        )
    };
    let unicode = |e: &Enc| {
        matches!(
            e,
            Enc::ZeroWidth | Enc::Fullwidth | Enc::Tags | Enc::Math | Enc::Circled
        )
    };
    let blanks = |e: &Enc| {
        e.header() != 0
            || unicode(e)
            || matches!(e, Enc::Codes | Enc::HexZeroX | Enc::Utf16Le | Enc::Utf16Be)
    };
    encs.iter().enumerate().all(|(i, e)| {
        let outer = &encs[..i];
        (e.header() == 0 && !unicode(e) || !outer.iter().any(text_only))
            && (!blanks(e) || !outer.iter().any(unicode))
    })
}

impl Enc {
    pub(crate) fn apply(self, data: &[u8]) -> Vec<u8> {
        let hex = |sep: &str, pre: &str| {
            data.iter()
                .map(|b| format!("{pre}{b:02x}"))
                .collect::<Vec<_>>()
                .join(sep)
                .into_bytes()
        };
        // Each byte in `range` as the character `offset` above it.
        let shift = |range: std::ops::RangeInclusive<u8>, offset: u32| {
            data.iter()
                .flat_map(|&b| match range.contains(&b) {
                    true => char::from_u32(u32::from(b) + offset)
                        .unwrap_or_default()
                        .to_string()
                        .into_bytes(),
                    false => vec![b],
                })
                .collect::<Vec<u8>>()
        };
        // Each letter and digit as the character `to` gives, in UTF-8.
        let alnum = |to: fn(u8) -> u32| {
            data.iter()
                .flat_map(|&b| match b.is_ascii_alphanumeric() {
                    true => char::from_u32(to(b))
                        .unwrap_or_default()
                        .to_string()
                        .into_bytes(),
                    false => vec![b],
                })
                .collect::<Vec<u8>>()
        };
        let codes = |sep: &str, pre: &str| {
            let end = if pre.is_empty() { "" } else { ";" };
            data.iter()
                .map(|b| format!("{pre}{b}{end}"))
                .collect::<Vec<_>>()
                .join(sep)
                .into_bytes()
        };
        match self {
            Enc::B64 => STANDARD.encode(data).into_bytes(),
            Enc::B64Url => URL_SAFE_NO_PAD.encode(data).into_bytes(),
            Enc::Hex => hex("", ""),
            Enc::HexDash => hex("-", ""),
            Enc::HexColon => hex(":", ""),
            Enc::HexBackslash => hex("", "\\x"),
            Enc::HexZeroX => hex(", ", "0x"),
            Enc::HexQp => data
                .iter()
                .flat_map(|b| format!("={b:02X}").into_bytes())
                .collect(),
            Enc::Percent => data
                .iter()
                .flat_map(|b| format!("%{b:02X}").into_bytes())
                .collect(),
            Enc::Json => data
                .iter()
                .flat_map(|&b| match b {
                    b'\n' => b"\\n".to_vec(),
                    b'"' => b"\\\"".to_vec(),
                    b'\\' => b"\\\\".to_vec(),
                    b'/' => b"\\/".to_vec(),
                    _ => format!("\\u{b:04x}").into_bytes(),
                })
                .collect(),
            Enc::Codes => codes(", ", ""),
            Enc::CodesCompact => codes(",", ""),
            Enc::EntDec => codes("", "&#"),
            Enc::EntHex => data
                .iter()
                .flat_map(|b| format!("&#x{b:02x};").into_bytes())
                .collect(),
            Enc::Utf16Le => data.iter().flat_map(|&b| [b, 0]).collect(),
            Enc::Utf16Be => data.iter().flat_map(|&b| [0, b]).collect(),
            Enc::Gzip => gzip(data),
            Enc::Zlib => zlib(data, 6),
            Enc::ZeroWidth => data.iter().flat_map(|&b| [b, 0xe2, 0x80, 0x8b]).collect(),
            Enc::Fullwidth => shift(0x21..=0x7e, 0xfee0),
            Enc::Tags => shift(0x20..=0x7e, 0xe0000),
            Enc::Math => alnum(|b| match b {
                b'A'..=b'Z' => 0x1d400 + u32::from(b - b'A'),
                b'a'..=b'z' => 0x1d41a + u32::from(b - b'a'),
                _ => 0x1d7ce + u32::from(b - b'0'),
            }),
            Enc::Circled => alnum(|b| match b {
                b'A'..=b'Z' => 0x24b6 + u32::from(b - b'A'),
                b'a'..=b'z' => 0x24d0 + u32::from(b - b'a'),
                b'0' => 0x24ea,
                _ => 0x2460 + u32::from(b - b'1'),
            }),
        }
    }

    /// Bytes every output of this codec starts with (a compressed
    /// stream's header), shared by the encodings of unrelated data.
    pub(crate) fn header(self) -> usize {
        match self {
            Enc::Gzip => 10,
            Enc::Zlib => 2,
            _ => 0,
        }
    }

    /// The chain name this codec shows in a finding.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Enc::B64 | Enc::B64Url => "base64",
            Enc::Hex
            | Enc::HexDash
            | Enc::HexColon
            | Enc::HexBackslash
            | Enc::HexZeroX
            | Enc::HexQp => "hex",
            Enc::Percent => "percent",
            Enc::Json => "json",
            Enc::Codes | Enc::CodesCompact => "charcodes",
            Enc::EntDec | Enc::EntHex => "html",
            Enc::Utf16Le | Enc::Utf16Be => "utf16",
            Enc::Gzip => "gzip",
            Enc::Zlib => "zlib",
            Enc::ZeroWidth | Enc::Fullwidth | Enc::Tags | Enc::Math | Enc::Circled => "unicode",
        }
    }
}

fn stream(sc: &Arc<Scanner>, mode: ScanMode, input: &[u8], cut: usize) -> (Vec<u8>, Vec<Finding>) {
    stream_as(sc, mode, false, input, cut)
}

/// [`stream`], of what the sandbox sends when `outgoing`.
fn stream_as(
    sc: &Arc<Scanner>,
    mode: ScanMode,
    outgoing: bool,
    input: &[u8],
    cut: usize,
) -> (Vec<u8>, Vec<Finding>) {
    let mut st = ScanState::new(sc.clone(), mode);
    if outgoing {
        st = st.outgoing();
    }
    let mut out = Vec::new();
    let mut found = Vec::new();
    for c in input.chunks(cut.max(1)) {
        let o = st.push(Bytes::copy_from_slice(c));
        out.extend_from_slice(&o.data);
        found.extend(o.findings);
    }
    let o = st.finish();
    out.extend_from_slice(&o.data);
    found.extend(o.findings);
    (out, found)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Streamed (at `cut`) == whole buffer, in all three modes; block releases
/// nothing from the first finding on.
fn equivalent(sc: &Arc<Scanner>, input: &[u8], cut: usize) -> Result<Vec<Finding>, TestCaseError> {
    let whole = sc.scan(input);
    let (out, found) = stream(sc, ScanMode::Log, input, cut);
    // Log mode ignores [`TOO_DEEP`] (a fourth decoding's probe can hit a
    // keyword in noise: one fresh token in about 300 under utf16>hex>base64)
    // and [`UNREADABLE`].
    let logged: Vec<Finding> = whole
        .iter()
        .filter(|f| &*f.pattern_id != TOO_DEEP && &*f.pattern_id != UNREADABLE)
        .cloned()
        .collect();
    prop_assert_eq!(&found, &logged, "log findings, cut {}", cut);
    prop_assert!(out == input);
    let (out, found) = stream(sc, ScanMode::Redact, input, cut);
    let (want, want_found) = sc.redact(input);
    prop_assert_eq!(&found, &want_found, "redact findings, cut {}", cut);
    prop_assert!(out == want, "redact output, cut {}", cut);
    // Block: the whole scan is what the sandbox sends is judged by; an
    // incoming stream does not refuse what it cannot read.
    for outgoing in [true, false] {
        let (out, found) = stream_as(sc, ScanMode::Block, outgoing, input, cut);
        let first = whole
            .iter()
            .find(|f| outgoing || &*f.pattern_id != UNREADABLE);
        match first {
            Some(first) => {
                prop_assert_eq!(found.as_slice(), std::slice::from_ref(first));
                prop_assert!(
                    out == input[..first.start as usize],
                    "block output, cut {}",
                    cut
                );
            }
            None => prop_assert!(out == input),
        }
    }
    // Outgoing redaction reads compressed data, and refuses what it
    // cannot rewrite, whatever the chunking.
    let (out, found) = stream_as(sc, ScanMode::Redact, true, input, cut);
    match sc.redact_outgoing(input, Confidence::Shaped, |_| false) {
        Ok((want, want_found)) => {
            prop_assert_eq!(&found, &want_found, "outgoing redact findings, cut {}", cut);
            prop_assert!(out == want, "outgoing redact output, cut {}", cut);
        }
        Err(stop) => {
            prop_assert_eq!(
                found.last(),
                Some(&stop),
                "outgoing redact stop, cut {}",
                cut
            );
            let one = stream_as(sc, ScanMode::Redact, true, input, input.len().max(1));
            prop_assert!(one == (out, found), "outgoing redact, cut {}", cut);
        }
    }
    Ok(whole)
}

fn secrets() -> Vec<(String, &'static str)> {
    vec![
        (fresh_aws(), "aws-access-key-id"),
        (fresh_ghp(), "github-pat-classic"),
    ]
}

#[test]
fn chain_names_outermost_first() {
    let sc = scanner();
    let aws = fresh_aws();
    let inner = Enc::Hex.apply(aws.as_bytes());
    let mid = Enc::Percent.apply(&inner);
    let outer = Enc::B64.apply(&mid);
    let mut body = b"{\"blob\":\"".to_vec();
    body.extend_from_slice(&outer);
    body.extend_from_slice(b"\"}");
    let found = sc.scan(&body);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(&*found[0].pattern_id, "aws-access-key-id");
    assert_eq!(found[0].chain.to_string(), "base64>percent>hex");
    assert_eq!(
        found[0].label(),
        "aws-access-key-id, decoded base64>percent>hex"
    );
    // The span is the encoded base64 that produced it: inside the value.
    assert!(found[0].start >= 9 && found[0].end <= 9 + outer.len() as u64);
}

#[test]
fn every_codec_alone_finds_fresh_secrets_at_every_cut() {
    let sc = scanner();
    for (secret, id) in secrets() {
        for enc in ENCS {
            for pad in ["", "x ", "xy "] {
                // Each alignment of the secret inside the encoded text.
                let plain = format!("key {pad}{secret} end");
                let mut input = b"{\"v\":\"".to_vec();
                input.extend_from_slice(&enc.apply(plain.as_bytes()));
                input.extend_from_slice(b"\"}\n");
                let whole = sc.scan(&input);
                assert!(
                    whole
                        .iter()
                        .any(|f| &*f.pattern_id == id && f.chain.to_string() == enc.name()),
                    "{enc:?} {pad:?}: {whole:?}"
                );
                for cut in [1, 2, 3, 5, 7, 64] {
                    equivalent(&sc, &input, cut).unwrap_or_else(|e| panic!("{enc:?}: {e}"));
                }
            }
        }
    }
}

#[test]
fn triple_percent_form_plus_and_query_strings() {
    let sc = scanner();
    let aws = fresh_aws();
    let once = Enc::Percent.apply(aws.as_bytes());
    let twice = Enc::Percent.apply(&once);
    let thrice = Enc::Percent.apply(&twice);
    let url = format!("/search?q=1&k={}&z=2", String::from_utf8_lossy(&thrice));
    let found = sc.scan(url.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].chain.to_string(), "percent>percent>percent");
    // Four layers: refused as too deep.
    let four = Enc::Percent.apply(&thrice);
    let found = sc.scan(&four);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(&*found[0].pattern_id, TOO_DEEP);
    assert_eq!(
        found[0].chain.to_string(),
        "percent>percent>percent>percent"
    );

    // A form body: `+` for spaces, %0A for newlines.
    let pem = fresh_pem();
    let form: String = pem
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b'\n' => "%0A".to_string(),
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    let body = format!("name=x&key={form}&submit=1");
    let found = sc.scan(body.as_bytes());
    assert!(
        found
            .iter()
            .any(|f| &*f.pattern_id == "pem-private-key" && f.chain.to_string() == "percent"),
        "{found:?}"
    );
    for cut in [1, 13, 100] {
        equivalent(&sc, body.as_bytes(), cut).unwrap();
    }
}

#[test]
fn json_escapes_and_kubernetes_and_dockerconfig() {
    let sc = scanner();
    let ghp = fresh_ghp();
    // `\u0067hp_...`: only the first letters escaped.
    let body = format!("{{\"t\":\"\\u0067\\u0068p_{}\"}}", &ghp[4..]);
    let found = sc.scan(body.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].chain.to_string(), "json");

    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: gh\ntype: Opaque\ndata:\n  token: {}\n  user: {}\n",
        STANDARD.encode(&ghp),
        STANDARD.encode("deploy-bot"),
    );
    let found = sc.scan(manifest.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].chain.to_string(), "base64");

    let auth = STANDARD.encode(format!("bot:{ghp}"));
    let cfg = format!("{{\"auths\":{{\"ghcr.io\":{{\"auth\":\"{auth}\"}}}}}}");
    let manifest = format!(
        "kind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        STANDARD.encode(&cfg)
    );
    let found = sc.scan(manifest.as_bytes());
    // The token under both layers, and (from the financial/credential
    // pack) the registry `auth` value itself once the outer layer is off.
    let got: Vec<(String, String)> = found
        .iter()
        .map(|f| (f.pattern_id.to_string(), f.chain.to_string()))
        .collect();
    assert!(
        got.contains(&("github-pat-classic".into(), "base64>base64".into())),
        "{found:?}"
    );
    assert!(
        got.contains(&("docker-config-auth".into(), "base64".into())),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    for cut in [1, 3, 50] {
        equivalent(&sc, manifest.as_bytes(), cut).unwrap();
    }
}

#[test]
fn multipart_base64_part_with_wrapped_lines() {
    let sc = scanner();
    let aws = fresh_aws();
    let text = format!(
        "{}\naws_access_key_id = {aws}\n{}",
        "lorem ipsum ".repeat(20),
        "dolor ".repeat(30)
    );
    let b64 = STANDARD.encode(text);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XyZ\r\n\
         Content-Disposition: form-data; name=\"f\"; filename=\"f.txt\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--XyZ--\r\n",
        wrapped.join("\r\n")
    );
    let found = sc.scan(body.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].chain.to_string(), "base64");
    for cut in [1, 7, 77, 1000] {
        equivalent(&sc, body.as_bytes(), cut).unwrap();
    }
}

#[test]
fn redaction_replaces_the_encoded_span() {
    let sc = scanner();
    let ghp = fresh_ghp();
    let b64 = STANDARD.encode(format!("token {ghp} ok"));
    let input = format!("{{\"a\":\"{b64}\",\"b\":1}}");
    let (out, found) = sc.redact(input.as_bytes());
    assert_eq!(found.len(), 1);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("[REDACTED:github-pat-classic]"), "{out}");
    assert!(
        out.starts_with("{\"a\":\"") && out.ends_with("\",\"b\":1}"),
        "{out}"
    );
    // Nothing of the secret survives in any encoding: decode what is left.
    assert!(sc.scan(out.as_bytes()).is_empty(), "{out}");
    let (streamed, _) = stream(&sc, ScanMode::Redact, input.as_bytes(), 3);
    assert_eq!(streamed, out.as_bytes());
}

#[test]
fn block_releases_no_encoded_byte_of_the_secret() {
    let sc = scanner();
    for enc in ENCS {
        let aws = fresh_aws();
        let enc_secret = enc.apply(aws.as_bytes());
        let mut input = b"{\"pad\":\"".to_vec();
        input.extend_from_slice(&enc.apply(b"prefix text "));
        input.extend_from_slice(&enc_secret);
        input.extend_from_slice(b"\"} tail");
        for cut in 1..24 {
            let (out, found) = stream(&sc, ScanMode::Block, &input, cut);
            assert_eq!(found.len(), 1, "{enc:?} {cut}");
            // No 8-byte piece of the encoded secret went out.
            for w in enc_secret[enc.header()..].windows(8) {
                assert!(
                    !contains(&out, w),
                    "{enc:?} cut {cut} leaked {:?}",
                    String::from_utf8_lossy(w)
                );
            }
        }
    }
}

/// Benign traffic: none of it is a finding, and streaming holds back
/// under 1 KiB.
#[test]
fn benign_corpus_has_no_findings_and_small_hold_back() {
    let sc = scanner();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    // JSON with numeric ids and UUIDs.
    let mut json = String::from("[");
    for i in 0..200u64 {
        let r = rand_u64();
        json.push_str(&format!(
            "{{\"id\":{i},\"uuid\":\"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\",\"name\":\"item \\\"{i}\\\"\\n\",\"price\":{}.{:02}}},",
            r as u32, (r >> 32) as u16, r % 4096, (r >> 12) % 4096, r >> 16, r % 1000, r % 100
        ));
    }
    json.push_str("{}]");
    corpus.push(json.into_bytes());
    // Minified JS.
    corpus.push(
        b"!function(e,t){\"use strict\";var n=function(e){return e&&e.__esModule?e:{default:e}};\
          const resolveModuleSpecifierFromImportMap=(e,t)=>t.imports[e]||e.replace(/\\/+$/,\"\");\
          window.__INITIAL_STATE__={\"route\":\"\\/dashboard\\/settings\",\"flags\":[\"new_ui\",\"beta\"]};\
          e.exports={encodeURIComponent:encodeURIComponent,x:\"%20\",y:100%3}}(this,function(){});"
            .repeat(20),
    );
    // An image as a base64 data URL (random bytes, 200 KiB): see below.
    let img: Vec<u8> = (0..200 * 1024).map(|_| rand_u64() as u8).collect();
    let img = format!(
        "<img src=\"data:image/png;base64,{}\">",
        STANDARD.encode(&img)
    )
    .into_bytes();
    assert!(sc.scan(&img).is_empty());
    // Lockfiles: sha512 integrity strings and hex sha256.
    let mut lock = String::new();
    for i in 0..300 {
        let h: Vec<u8> = (0..64).map(|_| rand_u64() as u8).collect();
        let s: String = (0..32)
            .map(|_| format!("{:02x}", rand_u64() as u8))
            .collect();
        lock.push_str(&format!(
            "    \"node_modules/pkg-{i}\": {{\n      \"version\": \"1.{i}.0\",\n      \"resolved\": \"https://registry.npmjs.org/pkg-{i}/-/pkg-{i}-1.{i}.0.tgz\",\n      \"integrity\": \"sha512-{}\"\n    }},\n[[package]]\nname = \"crate-{i}\"\nchecksum = \"{s}\"\n",
            STANDARD.encode(&h)
        ));
    }
    corpus.push(lock.into_bytes());
    // Docs and URLs with percent-encoding.
    corpus.push(
        b"See https://example.test/search?q=hello%20world&lang=en%2Dus and the C string \"line\\n\\ttab\".\n\
          Use `base64 -d` to decode; git commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it.\n\
          MAC 00:1a:2b:3c:4d:5e, bytes 0x01, 0x02, 0x03.\n"
            .repeat(30),
    );
    // Text the unicode layer reads: a byte order mark, emoji joined by
    // zero-width joiners and with variation selectors, CJK text with
    // fullwidth punctuation and digits, soft hyphens, right-to-left marks.
    corpus.push(
        "\u{feff}id,name,note\n1,Zoë,\u{1f469}\u{200d}\u{1f4bb} ships \u{2764}\u{fe0f} today\n\
         2,李雷,请在（２０２５年）前提交：报告、代码和测试！\n\
         3,Anna,Donau\u{ad}dampf\u{ad}schiff\u{ad}fahrt \u{200f}שלום\u{200e} ok\n"
            .repeat(40)
            .into_bytes(),
    );
    for input in &corpus {
        let found = sc.scan(input);
        let name = String::from_utf8_lossy(&input[..60.min(input.len())]).to_string();
        assert!(found.is_empty(), "{found:?} in {name:?}");
        for cut in [1536, 16 * 1024] {
            let mut st = ScanState::new(sc.clone(), ScanMode::Block);
            let mut out = Vec::new();
            for c in input.chunks(cut) {
                let o = st.push(Bytes::copy_from_slice(c));
                out.extend_from_slice(&o.data);
                // Random data can hold a short keyword (`a3t`, `sk-`) whose
                // regex window is then held, as without decoding.
                let held = &input[st.emitted() as usize..st.seen() as usize];
                assert!(
                    held.len() < 1024 || sc.may_match(held),
                    "held {} at cut {cut} in {name:?}",
                    held.len()
                );
            }
            out.extend_from_slice(&st.finish().data);
            assert!(out == *input);
        }
    }
}

/// A 10 MiB base64 data URL streams: the hold-back stays small throughout
/// (random bytes can contain a short keyword such as `sk-`, whose regex
/// window is then held, as in plain binary: at most the scanner's own
/// bound, in encoded bytes).
#[test]
fn long_base64_streams() {
    let sc = scanner();
    let mut st = ScanState::new(sc, ScanMode::Block);
    st.push(Bytes::from_static(b"{\"image\":\"data:image/png;base64,"));
    let chunk: Vec<u8> = (0..48 * 1024).map(|_| rand_u64() as u8).collect();
    let b64 = Bytes::from(STANDARD.encode(&chunk)); // 64 KiB, a multiple of 4
    let mut max_held = 0;
    for _ in 0..160 {
        st.push(b64.clone());
        max_held = max_held.max(st.seen() - st.emitted());
    }
    let sc = scanner();
    assert!(
        max_held <= (sc.max_hold_back() as u64) * 4 / 3 + 1024,
        "{max_held}"
    );
    st.finish();
    assert!(st.blocked().is_none());
}

fn nest(data: &[u8], encs: &[Enc]) -> Vec<u8> {
    // Innermost first.
    let mut v = data.to_vec();
    for e in encs.iter().rev() {
        v = e.apply(&v);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    /// For fresh secrets and shipped examples, each encoding nested up to
    /// three deep, and any chunking: the stream finds what the whole buffer
    /// finds, the whole buffer finds the secret under its chain, and block
    /// mode stops it.
    #[test]
    fn nested_encodings_stream_exactly(
        which in 0usize..3,
        encs in prop::collection::vec(prop::sample::select(ENCS.to_vec()), 1..=3),
        pre in "[a-z]{0,5}",
        cut in prop_oneof![Just(1usize), 2usize..40, 40usize..2000],
    ) {
        prop_assume!(carries(&encs));
        let (secret, id) = match which {
            0 => (fresh_aws(), "aws-access-key-id"),
            1 => (fresh_ghp(), "github-pat-classic"),
            _ => ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE".to_string(), "aws-access-key-id"),
        };
        let plain = format!("{pre} {secret} ");
        let mut input = b"{\"data\":\"".to_vec();
        input.extend_from_slice(&nest(plain.as_bytes(), &encs));
        input.extend_from_slice(b"\"}\n");
        let chain: Vec<&str> = encs.iter().map(|e| e.name()).collect();
        let whole = equivalent(&scanner(), &input, cut)?;
        // A few bytes compressed go out in a stored block, readable as they
        // are: a finding without that decoding is the same span, and the
        // one kept.
        let text = |c: &str| {
            c.split('>').filter(|n| !matches!(*n, "gzip" | "zlib")).collect::<Vec<_>>().join(">")
        };
        prop_assert!(
            whole.iter().any(|f| &*f.pattern_id == id
                && (f.chain.to_string() == chain.join(">")
                    || text(&f.chain.to_string()) == text(&chain.join(">")))),
            "{:?} under {:?}: {:?}", id, chain, whole
        );
    }
}

/// Runs shorter than the minimum are not decoded (ordinary words), runs at
/// the minimum are; a run that looks like hex needs `LONG_B64` characters.
#[test]
fn base64_minimum_run_length() {
    let sc = scanner();
    let mut out = Vec::new();
    let run = b"QUtJQUZBS0VGQUtF"; // 16 characters
    let mut d = decode::Decoders::new(0, crate::scan::Confidence::Shaped);
    d.feed(&sc, &[], run, 0, 0, &mut out);
    assert!(d.b64_active(), "a 16-character run is a segment");
    let mut d = decode::Decoders::new(0, crate::scan::Confidence::Shaped);
    d.feed(&sc, &[], &run[..15], 0, 0, &mut out);
    assert!(!d.b64_active(), "a 15-character run is not");
    // Hex-looking runs (digests, UUIDs without dashes) are not base64
    // below 128 characters.
    let digest = "3f786850e387550fdab836ed7e6dc881de23001b3f786850e387550fdab836ed";
    let mut d = decode::Decoders::new(0, crate::scan::Confidence::Shaped);
    d.feed(&sc, &[], digest.as_bytes(), 0, 0, &mut out);
    assert!(!d.b64_active());
    let long = digest.repeat(2);
    d.feed(&sc, &[], long.as_bytes(), 0, digest.len(), &mut out);
    assert!(d.b64_active());
    assert!(out.is_empty());
}

/// A base64 value's name (`AWS_SECRET_ACCESS_KEY: `) is read before the
/// run, from the kept tail when the run starts a chunk: every cut finds the
/// named secret the whole buffer finds.
#[test]
fn a_named_base64_value_is_found_under_its_name_at_every_cut() {
    let sc = scanner();
    let secret = pick(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
        40,
    );
    let manifest = format!(
        "kind: Secret\ndata:\n  AWS_SECRET_ACCESS_KEY: {}\n  other: {}\n",
        STANDARD.encode(&secret),
        STANDARD.encode("plain value, nothing here"),
    );
    let whole = sc.scan(manifest.as_bytes());
    assert!(
        whole
            .iter()
            .any(|f| &*f.pattern_id == "aws-secret-access-key" && f.chain.to_string() == "base64"),
        "{whole:?}"
    );
    for cut in 1..manifest.len() {
        equivalent(&sc, manifest.as_bytes(), cut).unwrap();
    }
    // Not a label: no separator, or a name glued to more text before it.
    for before in [
        "AWS_SECRET_ACCESS_KEY ",
        "x AWS_SECRET_ACCESS_KEY",
        "a=b c ",
    ] {
        let hay = format!("{before}{}\n", STANDARD.encode(&secret));
        assert!(
            sc.scan(hay.as_bytes())
                .iter()
                .all(|f| &*f.pattern_id != "aws-secret-access-key"),
            "{before:?}"
        );
    }
}

/// A pending base64 run (one character, then padding that neither ends nor
/// extends it) must not hold the stream back behind its start: 1 MiB of
/// `\r` after `x A` was held back whole, a body buffered in full. Every
/// padding an agent might try stays within the stream's bound.
#[test]
fn padding_after_a_run_start_never_holds_the_stream_back() {
    let sc = scanner();
    let pads: &[&[u8]] = &[
        b"\r", b"\r\n", b"\n", b" ", b"-", b":", b"=", b"%", b"\\", b"a ", b"0 ", b"0-", b"0x",
        b"A\r\n", b"A\n", b"ab\r", b"A\r",
    ];
    for pad in pads {
        let mut st = ScanState::new(sc.clone(), ScanMode::Block);
        st.push(Bytes::from_static(b"x A"));
        let mut v = Vec::new();
        while v.len() < 16 * 1024 {
            v.extend_from_slice(pad);
        }
        let chunk = Bytes::from(v);
        for _ in 0..64 {
            st.push(chunk.clone());
            let held = st.seen() - st.emitted();
            assert!(
                held <= sc.max_hold_back() as u64,
                "padding {:?}: {held} bytes held back",
                String::from_utf8_lossy(pad)
            );
        }
    }
}

/// Glue before an encoding: one to three alphabet characters (or a line
/// that ends in them) before a base64 or hex encoded secret shift its
/// quads or pairs, and the run decoded from its first character is noise.
/// Every glue length, on the same line or the line before, is found, and
/// streaming at cuts down to one byte finds what the whole buffer finds
/// (each was a leak: `took=89m\n<base64>`, `a414b49...`, `9c04b-49-...`).
#[test]
fn glue_before_an_encoding_never_hides_it() {
    let sc = scanner();
    for (secret, id) in [
        (fresh_aws(), "aws-access-key-id"),
        (fresh_ghp(), "github-pat-classic"),
    ] {
        let payload = format!("key {secret} end");
        let b64 = STANDARD.encode(&payload);
        let url = URL_SAFE_NO_PAD.encode(&payload);
        let hex: String = payload.bytes().map(|b| format!("{b:02x}")).collect();
        let dashed: Vec<String> = payload.bytes().map(|b| format!("{b:02x}")).collect();
        let dashed = dashed.join("-");
        for (enc, chain, glue) in [
            (&b64, "base64", "xQ9"),
            (&url, "base64", "a-_"),
            (&hex, "hex", "a4f"),
            (&dashed, "hex", "9c0"),
        ] {
            for n in 0..=glue.len() {
                let g = &glue[..n];
                for before in [
                    format!("INFO status=200 {g}"),
                    format!("took=89{g}\n"),
                    format!("took=89{g}\r\n"),
                ] {
                    let body = format!("{before}{enc}\n");
                    let whole = equivalent(&sc, body.as_bytes(), 7).unwrap();
                    assert!(
                        whole
                            .iter()
                            .any(|f| &*f.pattern_id == id && f.chain.to_string() == chain),
                        "{id} {chain} after {before:?}: {whole:?}"
                    );
                    for cut in [1, 3, 16, 64] {
                        equivalent(&sc, body.as_bytes(), cut).unwrap();
                    }
                }
            }
        }
    }
}

/// A request part as the proxy joins them: a fresh secret (bare or
/// encoded up to two deep, with characters glued on either side) or benign
/// text of the kinds a request head carries.
fn head_part() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..5,
        prop::collection::vec(prop::sample::select(ENCS.to_vec()), 0..=2),
        "[a-zA-Z0-9%=/]{0,4}",
        "[a-zA-Z0-9%=/]{0,4}",
    )
        .prop_filter("a head carries text", |(_, encs, _, _)| {
            encs.iter().all(|e| e.header() == 0)
        })
        .prop_map(|(which, encs, pre, post)| {
            let core = match which {
                0 => fresh_aws(),
                1 => fresh_ghp(),
                2 => "/api/v1/items/4711?q=a%2Fb&page=2".to_string(),
                3 => "Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0".to_string(),
                _ => "application/json; charset=utf-8".to_string(),
            };
            let mut out = pre.into_bytes();
            out.extend_from_slice(&nest(core.as_bytes(), &encs));
            out.extend_from_slice(post.as_bytes());
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The proxy scans a request's URL and header values joined by blank
    /// lines and judges them apart only when the joint scan finds
    /// something: what either part alone holds, the joint scan finds too
    /// (at both confidence floors).
    #[test]
    fn joining_parts_with_a_blank_line_hides_nothing(
        parts in prop::collection::vec(head_part(), 2..4),
    ) {
        let sc = scanner();
        let joined = parts.join(&b"\n\n"[..]);
        for min in [Confidence::Shaped, Confidence::Verified] {
            let alone = parts.iter().any(|p| !sc.scan_min(p, min).is_empty());
            let together = !sc.scan_min(&joined, min).is_empty();
            prop_assert!(
                !alone || together,
                "{:?} at {:?}", String::from_utf8_lossy(&joined), min
            );
        }
    }
}

/// A blank line ends a character-code run, so digits after it do not
/// glue a byte to a listed key (the proxy joins a URL and its headers
/// with one; proptest found `..., 52\n\n50/api`, a verified key alone,
/// only shaped once joined).
#[test]
fn a_blank_line_ends_character_codes() {
    let sc = scanner();
    let aws = fresh_aws();
    let codes: Vec<String> = aws.bytes().map(|b| b.to_string()).collect();
    let list = codes.join(", ");
    let verified = |text: &str| {
        sc.scan_min(text.as_bytes(), Confidence::Verified)
            .iter()
            .any(|f| &*f.pattern_id == "aws-access-key-id")
    };
    assert!(verified(&list));
    assert!(verified(&format!("{list}\n\n50/api/v1/items")));
    assert!(verified(&format!("{list}\r\n\r\n50/api/v1/items")));
    // One line break is a separator: a pretty-printed array stays a run.
    assert!(verified(&format!("[\n  {}\n]", codes.join(",\n  "))));
    for cut in [1, 2, 5] {
        equivalent(&sc, format!("{list}\n\n50/api").as_bytes(), cut).unwrap();
    }
}

/// Character codes and HTML references in the forms tools write them:
/// a Python list, a pretty-printed JSON array, `String.fromCharCode`, a
/// Node `Buffer` as JSON, digits glued before the list, references mixed
/// with literal characters and without their `;`.
#[test]
fn character_codes_in_the_forms_agents_write() {
    let sc = scanner();
    let aws = fresh_aws();
    let codes: Vec<String> = aws.bytes().map(|b| b.to_string()).collect();
    let pretty = format!("[\n  {}\n]", codes.join(",\n  "));
    let crlf = format!("[\r\n  {}\r\n]", codes.join(",\r\n  "));
    let mixed: String = aws
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                format!("&#{b};")
            } else {
                (b as char).to_string()
            }
        })
        .collect();
    let cases = [
        (format!("key = [{}]", codes.join(", ")), "charcodes"),
        (format!("{{\"data\":{pretty}}}"), "charcodes"),
        (format!("{{\"data\":{crlf}}}"), "charcodes"),
        (
            format!("String.fromCharCode({})", codes.join(",")),
            "charcodes",
        ),
        (
            format!("{{\"type\":\"Buffer\",\"data\":[{}]}}", codes.join(",")),
            "charcodes",
        ),
        (format!("id=2025999{}", codes.join(";")), "charcodes"),
        (format!("<p title=\"{mixed}\">"), "html"),
        (
            format!(
                "<p>{}</p>",
                codes.iter().map(|c| format!("&#{c}")).collect::<String>()
            ),
            "html",
        ),
        (
            format!("v={}", Enc::EntHex.apply(aws.as_bytes()).escape_ascii()),
            "html",
        ),
    ];
    for (text, chain) in &cases {
        let found = sc.scan(text.as_bytes());
        assert!(
            found
                .iter()
                .any(|f| &*f.pattern_id == "aws-access-key-id" && f.chain.to_string() == *chain),
            "{text:?}: {found:?}"
        );
        for cut in [1, 2, 3, 7] {
            equivalent(&sc, text.as_bytes(), cut).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }
    // Numbers that are not byte values, or too far apart, are no run.
    for benign in [
        format!(
            "[{}]",
            codes
                .iter()
                .map(|c| format!("{c}00"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        format!("[{}]", codes.join(",          ")),
    ] {
        assert!(sc.scan(benign.as_bytes()).is_empty(), "{benign}");
    }
}

/// UTF-16 in both byte orders, raw and as PowerShell sends it (base64 of
/// UTF-16LE), with a line break inside and a BOM before.
#[test]
fn utf16_raw_and_in_base64() {
    let sc = scanner();
    let aws = fresh_aws();
    let text = format!("$k = '{aws}'\r\nWrite-Output $k");
    let le: Vec<u8> = text.bytes().flat_map(|b| [b, 0]).collect();
    let be: Vec<u8> = text.bytes().flat_map(|b| [0, b]).collect();
    let mut bom = vec![0xff, 0xfe];
    bom.extend_from_slice(&le);
    let ps = format!("powershell -EncodedCommand {}", STANDARD.encode(&le));
    for (input, chain) in [
        (le, "utf16"),
        (be, "utf16"),
        (bom, "utf16"),
        (ps.into_bytes(), "base64>utf16"),
    ] {
        aws_found_at_every_cut(&sc, &input, chain, &[1, 2, 3, 7]);
    }
    // Binary with zero bytes is not a finding.
    let bin: Vec<u8> = (0..4096u32)
        .map(|i| if i % 3 == 0 { 0 } else { rand_u64() as u8 })
        .collect();
    assert!(sc.scan(&bin).is_empty());
}

/// `input` holds an AWS key found under `chain`, and streaming it at each
/// of `cuts` finds what the whole buffer does.
fn aws_found_at_every_cut(sc: &Arc<Scanner>, input: &[u8], chain: &str, cuts: &[usize]) {
    let found = sc.scan(input);
    assert!(
        found
            .iter()
            .any(|f| &*f.pattern_id == "aws-access-key-id" && f.chain.to_string() == chain),
        "{chain}: {found:?}"
    );
    for &cut in cuts {
        equivalent(sc, input, cut).unwrap_or_else(|e| panic!("{chain}: {e}"));
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A zip archive (local headers, deflated entries, central directory), as
/// `zip` and Python's `zipfile` write one.
pub(crate) fn zip_file(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        let packed = e.finish().unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let mut fields = Vec::new();
        fields.extend_from_slice(&20u16.to_le_bytes()); // version needed
        fields.extend_from_slice(&0u16.to_le_bytes()); // flags
        fields.extend_from_slice(&8u16.to_le_bytes()); // deflate
        fields.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        fields.extend_from_slice(&crc.sum().to_le_bytes());
        fields.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        fields.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fields.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fields.extend_from_slice(&0u16.to_le_bytes()); // extra
        let offset = out.len() as u32;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&fields);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        central.extend_from_slice(b"PK\x01\x02\x14\x03");
        central.extend_from_slice(&fields);
        central.extend_from_slice(&[0; 6]); // comment, disk, internal attributes
        central.extend_from_slice(&0o100644u32.wrapping_shl(16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = (entries.len() as u16).to_le_bytes();
    out.extend_from_slice(&[n[0], n[1], n[0], n[1]]);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Compressed data inside a stream, in the forms an agent told to hide a
/// key reaches for: the compressed file as it is, its base64, a `.gz` in a
/// multipart part, compressed twice, a second gzip member behind a first,
/// a false header right before the real one, a broken checksum.
#[test]
fn compressed_data_inside_a_stream() {
    let sc = scanner();
    let aws = fresh_aws();
    // Long and repetitive enough that deflate compresses it (a few lines
    // would be sent in a stored block, the key in plain text).
    let profiles = (0..40)
        .map(|i| format!("[profile p{i}]\nregion = eu-west-1\noutput = json\n"))
        .collect::<String>();
    let text = format!("{profiles}[default]\naws_access_key_id = {aws}\n{profiles}");
    let gz = gzip(text.as_bytes());
    assert!(!contains(&gz, aws.as_bytes()));
    let mut named = vec![0x1f, 0x8b, 0x08, 0x08 | 0x10, 0, 0, 0, 0, 0, 3];
    named.extend_from_slice(b"credentials\0a comment\0");
    named.extend_from_slice(&gz[10..]);
    let mut multipart = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"k.gz\"\r\n\
        Content-Type: application/gzip\r\n\r\n"
        .to_vec();
    multipart.extend_from_slice(&gz);
    multipart.extend_from_slice(b"\r\n--b--\r\n");
    let mut two = gzip(b"nothing to see here, a first member of a plain file\n");
    two.extend_from_slice(&gz);
    let mut false_start = b"x\x9c\x01\x02junk".to_vec();
    false_start.extend_from_slice(&[0x1f, 0x8b, 0x08, 0, 1, 2]);
    false_start.extend_from_slice(&gz);
    // A reserved flag bit set: zlib's gunzip refuses the header, Python's
    // `gzip.decompress` reads past it.
    let mut reserved_flag = gz.clone();
    reserved_flag[3] |= 0x20;
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let readme = "# notes\n".repeat(50);
    let zip = zip_file(&[
        ("README.md", readme.as_bytes()),
        (".aws/credentials", text.as_bytes()),
    ]);
    let zb64_zip = format!("upload={}", STANDARD.encode(&zip));
    let b64 = format!("{{\"blob\": \"{}\"}}", STANDARD.encode(&gz));
    let zb64 = format!("data={}", STANDARD.encode(zlib(text.as_bytes(), 6)));
    let hidden = hidden_members(&gz);
    for (input, chain) in hidden.into_iter().map(|(_, input)| (input, "gzip")).chain([
        (gz.clone(), "gzip"),
        (named, "gzip"),
        (multipart, "gzip"),
        (two, "gzip"),
        (false_start, "gzip"),
        (bad_crc, "gzip"),
        (gzip(&gz), "gzip>gzip"),
        (zlib(text.as_bytes(), 1), "zlib"),
        (zlib(text.as_bytes(), 9), "zlib"),
        // Levels 2 to 5 write `78 5e`.
        (zlib(text.as_bytes(), 3), "zlib"),
        (reserved_flag, "gzip"),
        (b64.into_bytes(), "base64>gzip"),
        (zb64.into_bytes(), "base64>zlib"),
        (zip, "zip"),
        (zb64_zip.into_bytes(), "base64>zip"),
    ]) {
        aws_found_at_every_cut(&sc, &input, chain, &[1, 2, 3, 7, 64, 1000]);
    }
}

/// A gzip member (`gz`) where one member at a time would not look for it,
/// each named: in a gzip header's extra field, behind a gzip name or
/// comment longer than any file name (Python's `gzip` and zlib read them
/// to their zero byte), in a zip entry's extra field, and glued behind an
/// unfinished stored block (the first member reads its header as more
/// deflate data). Each receiver gets the member back by slicing.
pub(crate) fn hidden_members(gz: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let harmless = gzip(b"a harmless member\n");
    let mut extra = vec![0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 3];
    extra.extend_from_slice(&u16::try_from(gz.len()).unwrap().to_le_bytes());
    extra.extend_from_slice(gz);
    extra.extend_from_slice(&harmless[10..]);
    let mut long_name = vec![0x1f, 0x8b, 0x08, 0x08 | 0x10 | 0x02, 0, 0, 0, 0, 0, 3];
    long_name.extend_from_slice(&b"n".repeat(3000));
    long_name.push(0);
    long_name.extend_from_slice(&b"c".repeat(70_000));
    long_name.extend_from_slice(&[0, 0xaa, 0xbb]);
    long_name.extend_from_slice(&gz[10..]);
    let mut zip_extra = zip_file(&[("README.md", b"# notes\n")]);
    // The entry's extra-field length (at 28) and the field itself, right
    // after the name.
    let name_end = 30 + "README.md".len();
    zip_extra[28..30].copy_from_slice(&u16::try_from(gz.len()).unwrap().to_le_bytes());
    zip_extra.splice(name_end..name_end, gz.iter().copied());
    // A stored block of 5,000 bytes, not the last, then the member.
    let mut behind = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 0x00];
    behind.extend_from_slice(&5000u16.to_le_bytes());
    behind.extend_from_slice(&(!5000u16).to_le_bytes());
    behind.extend_from_slice(&b"f".repeat(5000));
    behind.extend_from_slice(gz);
    vec![
        ("in a gzip extra field", extra),
        ("behind a long gzip name and comment", long_name),
        ("in a zip entry's extra field", zip_extra),
        ("behind an unfinished stored block", behind),
    ]
}

/// A gzip header's fields are stepped over as they stream, not held:
/// a 60 KiB extra field and a 100 KiB name of benign text before a benign
/// member leave the stream at most the piece being read and the one
/// before it behind, plus the header search's wait.
#[test]
fn a_long_gzip_header_is_not_held() {
    let sc = scanner();
    let log: String = (0..400)
        .map(|i| format!("INFO request {i} served from cache\n"))
        .collect();
    let text = log.as_bytes();
    let mut input = vec![0x1f, 0x8b, 0x08, 0x04 | 0x08, 0, 0, 0, 0, 0, 3];
    input.extend_from_slice(&60_000u16.to_le_bytes());
    input.extend(text.iter().cycle().take(60_000));
    input.extend(text.iter().cycle().take(100_000));
    input.push(0);
    input.extend_from_slice(&gzip(text)[10..]);
    for cut in [1, 500, 4096] {
        let mut st = ScanState::new(sc.clone(), ScanMode::Block);
        let (mut out, mut worst) = (0, 0);
        for c in input.chunks(cut) {
            out += st.push(Bytes::copy_from_slice(c)).data.len();
            worst = worst.max(st.seen() - st.emitted());
        }
        out += st.finish().data.len();
        assert_eq!(out, input.len());
        assert!(st.blocked().is_none());
        assert!(
            worst <= 256 + cut as u64,
            "held back {worst} bytes at cut {cut}"
        );
    }
}

/// A gzip member that decodes `text` a byte at a time, each byte in a
/// stored block of its own followed by `empty` empty stored blocks.
fn sparse_gzip(text: &[u8], empty: usize) -> Vec<u8> {
    let mut m = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3];
    for &b in text {
        m.extend_from_slice(&[0x00, 0x01, 0x00, 0xfe, 0xff, b]);
        for _ in 0..empty {
            m.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        }
    }
    m.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    m.extend_from_slice(&[0; 8]);
    m
}

/// A member that decodes a byte now and then pins the stream at a decoded
/// byte the nested scan still holds. Past [`decode::PINNED_MAX`] behind,
/// it is cut: read no further, refused as unreadable outgoing, passed
/// incoming, the stream held back by at most that (it held all of a 1 MiB
/// member before). A key spread thinner than that is still found.
#[test]
fn a_sparse_member_does_not_pin_the_stream() {
    let sc = scanner();
    // 1 KiB of compressed data per decoded byte: about 1 MiB in all.
    let log = b"INFO request 42 served from cache in 3 ms\n".repeat(25);
    let input = sparse_gzip(&log, 200);
    assert!(input.len() > 1 << 20);
    let bound = decode::PINNED_MAX + 2 * 4096;
    for outgoing in [true, false] {
        for cut in [1, 700, 16384] {
            let mut st = ScanState::new(sc.clone(), ScanMode::Block);
            if outgoing {
                st = st.outgoing();
            }
            let (mut out, mut worst, mut found) = (0, 0, Vec::new());
            for c in input.chunks(cut) {
                let o = st.push(Bytes::copy_from_slice(c));
                out += o.data.len();
                found.extend(o.findings);
                worst = worst.max(st.seen() - st.emitted());
            }
            let o = st.finish();
            out += o.data.len();
            found.extend(o.findings);
            assert!(
                worst <= bound + cut as u64,
                "held back {worst} bytes (outgoing {outgoing}, cut {cut})"
            );
            if outgoing {
                assert!(st.blocked().is_some(), "cut {cut}");
                assert!(
                    found.iter().any(|f| &*f.pattern_id == UNREADABLE),
                    "{found:?}"
                );
            } else {
                assert!(found.is_empty(), "{found:?}");
                assert_eq!(out, input.len());
            }
        }
    }
    // 500 bytes of compressed data between a key's characters: found.
    let key = fresh_aws();
    let text = format!("aws_access_key_id = {key}\n");
    let input = sparse_gzip(text.as_bytes(), 100);
    for cut in [1, 4096] {
        let (_, found) = stream_as(&sc, ScanMode::Block, true, &input, cut);
        assert!(
            found.iter().any(|f| &*f.pattern_id == "aws-access-key-id"),
            "{found:?}"
        );
    }
    // 5 KiB between them: refused, as the key or as unreadable.
    let input = sparse_gzip(text.as_bytes(), 1000);
    for cut in [1, 4096] {
        let (out, found) = stream_as(&sc, ScanMode::Block, true, &input, cut);
        assert!(!found.is_empty(), "cut {cut}");
        assert!(out.len() < input.len(), "cut {cut}");
    }
}

/// Stored blocks nested [`MAX_MEMBERS`] + 1 deep (each member's data holds
/// the next member whole) keep that many members open at the last header:
/// it is refused outgoing as unreadable, at every cut; one fewer is read.
#[test]
fn members_open_at_once_are_bounded() {
    let sc = scanner();
    let nest = |depth: usize| {
        let mut m = b"plain text at the bottom\n".repeat(20);
        for _ in 0..depth {
            let len = u16::try_from(m.len()).unwrap();
            let mut outer = vec![0x78, 0x01, 0x01];
            outer.extend_from_slice(&len.to_le_bytes());
            outer.extend_from_slice(&(!len).to_le_bytes());
            outer.extend_from_slice(&m);
            m = outer;
        }
        m
    };
    for cut in [1, 7, 64, 100_000] {
        let (_, found) = stream_as(
            &sc,
            ScanMode::Block,
            true,
            &nest(decode::MAX_MEMBERS + 1),
            cut,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&*found[0].pattern_id, UNREADABLE);
        assert_eq!(found[0].start, 7 * decode::MAX_MEMBERS as u64);
        let (out, found) = stream_as(&sc, ScanMode::Block, true, &nest(decode::MAX_MEMBERS), cut);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(out, nest(decode::MAX_MEMBERS));
    }
}

/// Binary data with header-like bytes, a benign gzip file and a PNG-like
/// zlib stream are no finding; a decompression bomb is refused as
/// [`TOO_DEEP`], outgoing only.
#[test]
fn compressed_data_benign_and_bombs() {
    let sc = scanner();
    let mut bin: Vec<u8> = (0..200_000).map(|_| rand_u64() as u8).collect();
    for i in (0..bin.len() - 4).step_by(997) {
        bin[i..i + 2].copy_from_slice(if i % 2 == 0 { b"x\x9c" } else { b"\x1f\x8b" });
    }
    assert!(sc.scan(&bin).is_empty());
    equivalent(&sc, &bin, 4096).unwrap();
    let readme = gzip(b"# A project\n\nIt does things. See https://example.test/docs.\n");
    assert!(sc.scan(&readme).is_empty());
    let docs = b"# A project\n\nIt does things.\n".repeat(100);
    let archive = zip_file(&[("README.md", &docs), ("docs/x.md", &docs)]);
    assert!(sc.scan(&archive).is_empty());
    equivalent(&sc, &archive, 7).unwrap();
    let bomb = gzip(&vec![b'a'; 8 << 20]);
    let found = sc.scan(&bomb);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(&*found[0].pattern_id, TOO_DEEP);
    assert_eq!(found[0].chain.to_string(), "gzip");
    let (_, redacted) = stream(&sc, ScanMode::Redact, &bomb, 16384);
    assert!(redacted.is_empty());
}

/// A benign gzipped stream is held back a bounded amount:
/// 4 KiB from its header until inflating it has gone that far, then only
/// what the nested scan of the text holds (the README's 5 KiB).
#[test]
fn compressed_data_hold_back_is_bounded() {
    let sc = scanner();
    let log: String = (0..4000)
        .map(|i| format!("INFO request {i} served in {}ms from cache\n", i % 97))
        .collect();
    let gz = gzip(log.as_bytes());
    let mut st = ScanState::new(sc.clone(), ScanMode::Block);
    let (mut fed, mut out, mut worst) = (0usize, 0usize, 0usize);
    for c in gz.chunks(512) {
        fed += c.len();
        out += st.push(Bytes::copy_from_slice(c)).data.len();
        worst = worst.max(fed - out);
    }
    out += st.finish().data.len();
    assert_eq!(out, gz.len());
    assert!(worst <= 5 * 1024, "held back {worst} bytes");
}

/// The first bytes of each compressed format airlock knows but does not
/// read, as its tools write them, followed by `payload` (what follows a
/// header does not change the verdict).
fn unreadable_samples(payload: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let with = |head: &[u8]| [head, payload].concat();
    // A zstd frame: single segment with a checksum, a one-byte content
    // size, then a compressed block that is the last.
    let block = (1u32 | 2 << 1 | (payload.len() as u32) << 3).to_le_bytes();
    let zstd = [&[0x28, 0xb5, 0x2f, 0xfd, 0x24, 0xff][..], &block[..3]].concat();
    let zip = |version: u16, flags: u16, method: u16| {
        let mut h = b"PK\x03\x04".to_vec();
        for v in [version, flags, method, 0, 0x21] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&[0; 12]); // crc, sizes
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(b"x.gz");
        h
    };
    vec![
        ("xz", with(b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46")),
        ("bzip2", with(b"BZh91AY&SY")),
        ("zstd", with(&zstd)),
        ("7z", with(b"7z\xbc\xaf\x27\x1c\x00\x04")),
        ("rar", with(b"Rar!\x1a\x07\x01\x00")),
        ("zip", with(&zip(20, 1, 8))),  // encrypted (ZipCrypto)
        ("zip", with(&zip(46, 0, 12))), // bzip2 inside
        ("zip", with(&zip(51, 1, 99))), // AES
    ]
}

/// Compressed data airlock cannot read is refused outgoing, wherever it
/// is and however it is cut: as is, in base64, in a multipart part, glued
/// to text. Incoming and in log mode it is no finding.
#[test]
fn unreadable_compressed_data_is_refused_outgoing() {
    let sc = scanner();
    let payload: Vec<u8> = (0..3000).map(|_| rand_u64() as u8).collect();
    for (format, data) in unreadable_samples(&payload) {
        let mut multipart =
            b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"k\"\r\n\r\n".to_vec();
        multipart.extend_from_slice(&data);
        multipart.extend_from_slice(b"\r\n--b--\r\n");
        let glued = [b"see the attached notes:".as_slice(), &data].concat();
        for (input, chain) in [
            (data.clone(), format.to_string()),
            (multipart, format.to_string()),
            (glued, format.to_string()),
            (
                format!("{{\"f\":\"{}\"}}", STANDARD.encode(&data)).into_bytes(),
                format!("base64>{format}"),
            ),
        ] {
            let found = sc.scan(&input);
            assert_eq!(found.len(), 1, "{chain}: {found:?}");
            assert_eq!(&*found[0].pattern_id, UNREADABLE, "{chain}");
            assert_eq!(found[0].chain.to_string(), chain);
            for cut in [1, 2, 5, 64, 4096] {
                equivalent(&sc, &input, cut).unwrap_or_else(|e| panic!("{chain}: {e}"));
                let (out, found) = stream_as(&sc, ScanMode::Block, true, &input, cut);
                assert!(out.len() as u64 <= found[0].start, "{chain}");
                let (out, found) = stream(&sc, ScanMode::Block, &input, cut);
                assert!(found.is_empty() && out == input, "incoming {chain}");
            }
        }
        // A rule's `scan_skip = ["unreadable-compressed"]` sends it.
        let skip = sc.skip_mask(&[Arc::from(UNREADABLE)]);
        let mut st = ScanState::new(sc.clone(), ScanMode::Block)
            .outgoing()
            .skipping(skip);
        let mut out = st.push(Bytes::from(data.clone())).data.to_vec();
        out.extend_from_slice(&st.finish().data);
        assert!(st.blocked().is_none() && out == data, "{format}: skipped");
    }
}

/// Bytes that begin like those headers but are not one: binary data is
/// not refused for a magic number alone.
#[test]
fn header_like_bytes_are_not_unreadable_data() {
    let sc = scanner();
    let mut bin: Vec<u8> = (0..400_000).map(|_| rand_u64() as u8).collect();
    let near: [&[u8]; 9] = [
        b"BZh91AY&SX",                           // not a block magic
        b"BZh01AY&SY",                           // level 0
        b"\xfd7zXZ\x00\x01\x04",                 // stream flags
        b"7z\xbc\xaf\x27\x1c\x01",               // version
        b"Rar!\x1a\x07\x02",                     // version
        b"\x28\xb5\x2f\xfd\x08",                 // reserved bit
        b"\x28\xb5\x2f\xfd\x20\xff\x07\x00\x00", // reserved block type
        b"PK\x03\x04\x14\x00\x00\x00\x00\x00",   // stored: plain bytes
        b"PK\x03\x04\xff\x00\x01\x00\x08\x00",   // version out of range
    ];
    for (i, at) in (0..bin.len() - 64).step_by(1009).enumerate() {
        let n = near[i % near.len()];
        bin[at..at + n.len()].copy_from_slice(n);
    }
    assert!(sc.scan(&bin).is_empty());
    equivalent(&sc, &bin, 4096).unwrap();
    equivalent(&sc, &bin, 7).unwrap();
}

/// Binary data is not read as text: a look-alike letter beside an ASCII
/// one in binary bytes (hex-decoded here, as a hex dump of a file
/// decodes) does not open a unicode segment that reads on through the
/// bytes after it, adding a decoding to them. Gzip in gzip there is three
/// decodings, `hex>gzip>gzip`, not a fourth under `hex>unicode` (refused
/// as too deep: random bytes, read so, were refused now and then).
#[test]
fn binary_bytes_are_not_read_as_text() {
    let sc = scanner();
    let mut bin: Vec<u8> = b"\x9b\x01x".to_vec();
    bin.extend_from_slice("\u{410}".as_bytes());
    bin.extend_from_slice(&gzip(&gzip(b"nothing to see here, ".repeat(4).as_slice())));
    bin.extend((0..64).map(|i| (i * 37 + 11) as u8));
    let dump: String = bin.iter().map(|b| format!("{b:02x}")).collect();
    for input in [
        dump.clone(),
        format!("{dump}\n"),
        format!("blob: {dump} end"),
    ] {
        assert!(sc.scan(input.as_bytes()).is_empty(), "{input}");
        equivalent(&sc, input.as_bytes(), 5).unwrap();
    }
    // A key in look-alikes between such bytes is still read.
    let aws = fresh_aws();
    let look = look_alike(&aws, &CYRILLIC);
    for cut in ["\x00", "\x01", "\x7f"] {
        let input = format!("id\x1b{look}{cut}tail");
        let found = sc.scan(input.as_bytes());
        assert_eq!(found.len(), 1, "{cut:?}: {found:?}");
        assert_eq!(found[0].chain.to_string(), "unicode");
    }
}

/// Compressed data as a fourth decoding (`base64>base64>base64>gzip`) is
/// refused as too deep rather than passed: the probing depth looks for
/// headers as it looks for keywords (and one that is not read is
/// unreadable at any depth).
#[test]
fn compressed_data_one_decoding_too_deep_is_refused() {
    let sc = scanner();
    let mut cases = Vec::new();
    // Several keys: a zlib-like pair of bytes inside the compressed data
    // must not add a finding of its own.
    for _ in 0..40 {
        let aws = fresh_aws();
        cases.push((
            gzip(format!("id {aws} ").repeat(8).as_bytes()),
            TOO_DEEP,
            "gzip",
        ));
    }
    cases.push((
        unreadable_samples(b"not read").remove(0).1,
        UNREADABLE,
        "xz",
    ));
    for (data, pattern, format) in cases {
        let deep = STANDARD.encode(STANDARD.encode(STANDARD.encode(&data)));
        let input = format!("v={deep} ");
        let found = sc.scan(input.as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&*found[0].pattern_id, pattern);
        let chain = format!("base64>base64>base64>{format}");
        assert_eq!(found[0].chain.to_string(), chain);
        for cut in [1, 3, 100] {
            equivalent(&sc, input.as_bytes(), cut).unwrap();
        }
    }
}

/// An outgoing redacting stream reads compressed data and refuses a
/// secret inside it (its bytes cannot be rewritten), after redacting what
/// came before; a benign gzip file passes unchanged; incoming redaction
/// still passes compressed data as it came.
#[test]
fn outgoing_redaction_refuses_secrets_in_compressed_data() {
    let sc = scanner();
    let (ghp, aws) = (fresh_ghp(), fresh_aws());
    let gz = gzip(format!("id {aws} ").repeat(8).as_bytes());
    let input = format!("token={ghp}\nblob={}\n", STANDARD.encode(&gz));
    for cut in [1, 7, 1000] {
        let (out, found) = stream_as(&sc, ScanMode::Redact, true, input.as_bytes(), cut);
        let last = found.last().expect("a finding");
        assert_eq!(&*last.pattern_id, "aws-access-key-id");
        assert_eq!(last.chain.to_string(), "base64>gzip");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("token=[REDACTED:github-pat-classic]"),
            "{text}"
        );
        assert!(!contains(&out, ghp.as_bytes()) && out.len() <= input.len());
        assert!(!text.contains("blob=H4sI"), "{text}");
        let (out, found) = stream(&sc, ScanMode::Redact, input.as_bytes(), cut);
        assert_eq!(found.len(), 1);
        assert!(contains(&out, STANDARD.encode(&gz).as_bytes()), "incoming");
    }
    let readme = gzip("# A project\n\nIt does things.\n".repeat(100).as_bytes());
    let (out, found) = stream_as(&sc, ScanMode::Redact, true, &readme, 100);
    assert!(found.is_empty() && out == readme);
    let xz = unreadable_samples(b"x").remove(0).1;
    let (out, found) = stream_as(&sc, ScanMode::Redact, true, &xz, 3);
    assert_eq!(&*found[0].pattern_id, UNREADABLE);
    assert!(out.is_empty());
}

/// The start of every kind of header the search knows: the unreadable
/// formats, a gzip member, zlib at two levels, a zip entry.
fn sample_headers() -> Vec<Vec<u8>> {
    let mut heads: Vec<Vec<u8>> = unreadable_samples(b"")
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    heads.extend([gzip(b"x")[..10].to_vec(), zlib(b"x", 3), zlib(b"x", 9)]);
    heads.push(b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec());
    heads
}

/// The header search (one pass for the bytes that anchor a header, at a
/// fixed offset in it) finds the first header its definition does: in
/// noise and in text full of the headers' first bytes (`x`, `P`, `B`,
/// `R`), with up to two headers planted whole or cut, at random places,
/// from a random start, at the end of a stream and before it.
#[test]
fn the_header_search_finds_the_first_header_by_its_definition() {
    let heads = sample_headers();
    let lookalikes = b"xPBR7&(\x1f\x8b\x03\xfd\xbc\x1a^ \x01";
    for round in 0..4000 {
        let len = round % 120;
        let mut hay: Vec<u8> = (0..len)
            .map(|_| match round % 3 {
                0 => rand_u64() as u8,
                _ => lookalikes[(rand_u64() as usize) % lookalikes.len()],
            })
            .collect();
        for _ in 0..(round % 3) {
            let h = &heads[(rand_u64() as usize) % heads.len()];
            let cut = match rand_u64() % 3 {
                0 => (rand_u64() as usize) % (h.len() + 1),
                _ => h.len(),
            };
            let at = (rand_u64() as usize) % (hay.len() + 1);
            hay.splice(at..at, h[..cut].iter().copied());
        }
        let from = (rand_u64() as usize) % (hay.len() + 1);
        for eof in [false, true] {
            let [searched, looped, defined] = decode::header_next_both(&hay, from, eof);
            assert_eq!(searched, defined, "from {from}, eof {eof}: {hay:?}");
            assert_eq!(
                looped, defined,
                "byte loop, from {from}, eof {eof}: {hay:?}"
            );
        }
    }
}

/// The byte loop that judges short segments finds a header exactly where
/// the header search does: in noise, in noise with each header planted at
/// every offset, and in the headers' first bytes alone.
#[test]
fn the_short_header_test_equals_the_search() {
    let heads = sample_headers();
    for round in 0..3000 {
        let mut dec: Vec<u8> = (0..(round % 200)).map(|_| rand_u64() as u8).collect();
        if round % 2 == 0 && !heads.is_empty() {
            let h = &heads[round % heads.len()];
            let cut = (rand_u64() as usize) % (h.len() + 1);
            let at = (rand_u64() as usize) % (dec.len() + 1);
            dec.splice(at..at, h[..cut].iter().copied());
        }
        let searched = decode::header_searched(&dec);
        assert_eq!(decode::has_compressed(&dec), searched, "{dec:?}");
    }
}

/// A short run is passed over only when every phase, after its label,
/// decodes to fewer than [`SHORT`] bytes: at every label length and every
/// run length around the most characters the short path reads, none that
/// would fill a phase comes back as noise (the path judges the character
/// count after its loop, not per character).
#[test]
fn a_short_run_that_would_fill_a_phase_is_left_to_the_segment_path() {
    let sc = scanner();
    let limit = decode::SHORT / 3 * 4 + 4;
    // Letters only: no hex run, nothing any phase decodes to a literal of.
    let alphabet = b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ";
    let mut passed = 0;
    for label_len in [0, 1, 5, 17, 40, decode::LABEL_MAX] {
        let label: Vec<u8> = (0..label_len).map(|i| b"key_name:"[i % 9]).collect();
        for n in 1..=2 * limit + 2 {
            let mut run: Vec<u8> = (0..n)
                .map(|_| alphabet[(rand_u64() % alphabet.len() as u64) as usize])
                .collect();
            run.extend_from_slice(b" rest");
            let longest = (0..decode::PHASES)
                .map(|ph| {
                    let c = n.saturating_sub(ph);
                    label_len + c / 4 * 3 + [0, 0, 1, 2][c % 4]
                })
                .max()
                .unwrap_or(0);
            if let Some(end) = decode::short_run(&sc, &label, &run, true) {
                passed += 1;
                assert_eq!(end, n, "label {label_len}, run {n}");
                assert!(
                    longest < decode::SHORT && n <= limit,
                    "label {label_len}, run {n}: a phase of {longest} bytes passed as noise"
                );
            }
        }
    }
    // The path is taken at all (else this test would hold vacuously).
    assert!(passed > 100, "{passed} runs passed as noise");
}

/// The hex layers pass over a UUID and the byte after it in one step; what
/// they find, and the state they stop in, is what the digit-by-digit walk
/// finds (and the character-code layer, whose runs are shorter, never
/// takes the step): for UUIDs whole and broken (a letter past `f`, a digit
/// more or less), digits with dashes or other separators at only some of
/// a UUID's places (34 hex digits make a run, 17 decimal ones a code run),
/// glued to digits or dashes or followed by any kind of byte (one that
/// ends a stretch, a gap, a backslash, a digit), cut anywhere as a stream
/// is.
#[test]
fn a_uuid_is_passed_over_as_its_digits_would_be() {
    let pick = |xs: &[u8]| xs[(rand_u64() as usize) % xs.len()];
    let after = b"\", :-=\\x;\t\n}]g7aZ\x00";
    let mut runs = [0, 0];
    for round in 0..6000 {
        let codes = round % 2 == 1;
        let digits: &[u8] = match codes {
            true => b"0123456789",
            false => b"0123456789abcdefABCDEF",
        };
        let mut hay = Vec::new();
        for _ in 0..(1 + round % 5) {
            match rand_u64() % 4 {
                0 => hay.extend((0..rand_u64() % 6).map(|_| pick(digits))),
                1 => hay.extend((0..rand_u64() % 4).map(|_| pick(after))),
                _ => {}
            }
            // Dashes (or separators) at every place of a UUID's, or at
            // some of them.
            let places = match rand_u64() % 2 {
                0 => 0b1111,
                _ => rand_u64() % 16,
            };
            let mut u: Vec<u8> = (0..36)
                .map(|i| match [8, 13, 18, 23].iter().position(|&d| d == i) {
                    Some(d) if places >> d & 1 == 1 => pick(b"---, ;:"),
                    _ => pick(digits),
                })
                .collect();
            match rand_u64() % 6 {
                0 => u[(rand_u64() as usize) % 36] = pick(b"g-:z \\"),
                1 => u.insert((rand_u64() as usize) % 36, pick(digits)),
                2 => {
                    u.remove((rand_u64() as usize) % 36);
                }
                _ => {}
            }
            hay.extend_from_slice(&u);
            if !rand_u64().is_multiple_of(4) {
                hay.push(pick(after));
            }
        }
        let cuts: Vec<usize> = {
            let mut c: Vec<usize> = (0..rand_u64() % 3)
                .map(|_| (rand_u64() as usize) % (hay.len() + 1))
                .collect();
            c.sort_unstable();
            c
        };
        let [skipping, walking] = decode::stretch_both(&hay, &cuts, codes);
        runs[usize::from(codes)] += walking.iter().filter(|s| s.1.is_some()).count();
        assert_eq!(
            skipping,
            walking,
            "codes {codes}, cuts {cuts:?}: {:?}",
            String::from_utf8_lossy(&hay)
        );
    }
    // Runs were found (the inputs reach the cases the shortcut must leave
    // to the walk).
    assert!(runs.iter().all(|&n| n > 100), "{runs:?}");
}

/// The unicode layer reads exactly the characters [`uni_char`] names, in
/// their UTF-8 form, and the gates that send decoded bytes to a nested
/// scan see each of them by its first two bytes.
#[test]
fn the_unicode_layer_reads_the_characters_it_names() {
    use decode::{
        Uni, escape_pair, has_escape, next_uni_lead, uni_at, uni_char, uni_lead, uni_pair,
    };
    let mut read = 0;
    for cp in 0..=0x10ffffu32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        let at = uni_at(bytes);
        match uni_char(cp) {
            Some(v) => {
                read += 1;
                assert!(uni_lead(bytes[0]) && uni_pair(bytes[0], bytes[1]), "{cp:x}");
                assert!(
                    escape_pair(bytes[0], bytes[1]) && has_escape(bytes),
                    "{cp:x}"
                );
                match v {
                    None => assert_eq!(at, Uni::Drop(bytes.len()), "{cp:x}"),
                    Some(a) => {
                        assert!(a.is_ascii_graphic() || a == b' ', "{cp:x}");
                        assert_eq!(at, Uni::Ascii(a, bytes.len()), "{cp:x}");
                    }
                }
                for cut in 1..bytes.len() {
                    assert_eq!(uni_at(&bytes[..cut]), Uni::Cut, "{cp:x} cut at {cut}");
                }
            }
            None => assert_eq!(at, Uni::Not, "{cp:x}"),
        }
    }
    assert!(read > 400, "{read}");
    // Broken UTF-8 is read as what it is: bytes.
    assert_eq!(uni_at(&[0xe2, 0x80, 0x41]), Uni::Not);
    assert_eq!(uni_at(&[0xe2, 0x41]), Uni::Not);
    assert_eq!(
        next_uni_lead(b"plain ascii text, longer than thirty-two bytes"),
        None
    );
    let mut t = b"a".repeat(70);
    t[40] = 0xc3;
    t[65] = 0xe2;
    t[66] = 0x80;
    assert_eq!(next_uni_lead(&t), Some(65));
    t[33] = 0xef;
    t[34] = 0xbc;
    assert_eq!(next_uni_lead(&t), Some(33));
    // Every pair of bytes, anywhere: found where it starts a character
    // the layer reads; a lead byte alone only at the very end.
    for a in 0x80..=0xffu8 {
        for b in 0..=0xffu8 {
            for pos in [0, 5, 15, 16, 31, 40] {
                let mut t = b"x".repeat(48);
                t[pos] = a;
                t[pos + 1] = b;
                let want = uni_pair(a, b).then_some(pos);
                let got = next_uni_lead(&t);
                assert_eq!(got, want, "{a:#x} {b:#x} at {pos}");
            }
        }
        let mut t = b"x".repeat(20);
        t[19] = a;
        assert_eq!(next_uni_lead(&t), uni_lead(a).then_some(19), "{a:#x} last");
    }
}

/// What an agent told to hide a key in plain sight writes: an invisible
/// character after every letter, fullwidth letters, tag characters, soft
/// hyphens, and a JSON or percent escape of those. Each is found under
/// its chain at every cut, and the key written with invisible characters
/// only between its name and value, or in a PEM block, too.
#[test]
fn invisible_fullwidth_and_tag_characters_hide_nothing() {
    let sc = scanner();
    let aws = fresh_aws();
    let spaced = |sep: &str| aws.chars().map(|c| format!("{c}{sep}")).collect::<String>();
    let cases: Vec<(String, &str)> = vec![
        (spaced("\u{200b}"), "unicode"),
        (spaced("\u{ad}"), "unicode"),
        (spaced("\u{2060}"), "unicode"),
        (spaced("\u{feff}"), "unicode"),
        (spaced("\u{fe0f}"), "unicode"),
        (format!("AKIA\u{200d}{}", &aws[4..]), "unicode"),
        (
            String::from_utf8(Enc::Fullwidth.apply(aws.as_bytes())).unwrap(),
            "unicode",
        ),
        (
            String::from_utf8(Enc::Tags.apply(aws.as_bytes())).unwrap(),
            "unicode",
        ),
        (
            String::from_utf8(Enc::Math.apply(aws.as_bytes())).unwrap(),
            "unicode",
        ),
        (
            String::from_utf8(Enc::Circled.apply(aws.as_bytes())).unwrap(),
            "unicode",
        ),
        // Script capitals (with the letterlike gaps: `ℬ`, `ℰ`, `ℋ`...) and
        // double-struck digits; fraktur and sans-serif bold digits.
        (restyle(&aws, 0x1d49c, 0x1d7d8), "unicode"),
        (restyle(&aws, 0x1d504, 0x1d7ec), "unicode"),
        // Negative squared capitals and dingbat negative circled digits
        // (`🅰🅺🅸🅰❶`), regional indicators and double circled digits.
        (restyle(&aws, 0x1f170, 0x2775), "unicode"),
        (restyle(&aws, 0x1f1e6, 0x24f4), "unicode"),
        (aws.replace('K', "\u{212a}"), "unicode"),
        // Every letter that has one as a Cyrillic or a Greek look-alike
        // (`АКІА`, `ΑΚΙΑ`).
        (look_alike(&aws, &CYRILLIC), "unicode"),
        (look_alike(&aws, &GREEK), "unicode"),
        // Only `АКІА`, before ASCII; only the last letter, after ASCII.
        (
            format!("\u{410}\u{41a}\u{406}\u{410}{}", &aws[4..]),
            "unicode",
        ),
        (format!("{}\u{425}", &aws[..19]), "unicode"),
        (
            STANDARD.encode(look_alike(&aws, &CYRILLIC)),
            "base64>unicode",
        ),
        (
            aws.chars().map(|c| format!("{c}\\u200b")).collect(),
            "json>unicode",
        ),
        (
            aws.chars().map(|c| format!("{c}%E2%80%8B")).collect(),
            "percent>unicode",
        ),
    ];
    for (hidden, chain) in &cases {
        let input = format!("{{\"note\":\"the key is {hidden} ok\"}}\n");
        let whole = sc.scan(input.as_bytes());
        assert!(
            whole
                .iter()
                .any(|f| &*f.pattern_id == "aws-access-key-id" && f.chain.to_string() == *chain),
            "{hidden:?}: {whole:?}"
        );
        for cut in [1, 2, 3, 5, 64] {
            equivalent(&sc, input.as_bytes(), cut).unwrap_or_else(|e| panic!("{hidden:?}: {e}"));
        }
        let (out, found) = stream(&sc, ScanMode::Block, input.as_bytes(), 3);
        assert!(!found.is_empty(), "{hidden:?}");
        for w in hidden.as_bytes().windows(8) {
            assert!(
                !contains(&out, w),
                "{hidden:?} leaked {:?}",
                String::from_utf8_lossy(w)
            );
        }
    }
    // A name and a value far apart, joined by invisible characters after
    // every byte: one segment, so the pattern that needs the name sees it.
    let secret: String = pick(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
        40,
    );
    let plain = format!("aws_secret_access_key = {secret}");
    let hidden = String::from_utf8(Enc::ZeroWidth.apply(plain.as_bytes())).unwrap();
    let found = sc.scan(format!("config: {hidden}\n").as_bytes());
    assert!(
        found
            .iter()
            .any(|f| &*f.pattern_id == "aws-secret-access-key"),
        "{found:?}"
    );
    // A PEM block with a zero-width space after every byte, lines and all.
    let pem = fresh_pem();
    let hidden = Enc::ZeroWidth.apply(pem.as_bytes());
    let found = sc.scan(&hidden);
    assert!(
        found
            .iter()
            .any(|f| f.pattern_id.contains("private-key") && f.chain.to_string() == "unicode"),
        "{found:?}"
    );
}

/// The Cyrillic letters drawn like a Latin one, and that letter.
const CYRILLIC: [(u32, u8); 24] = [
    (0x405, b'S'),
    (0x406, b'I'),
    (0x408, b'J'),
    (0x410, b'A'),
    (0x412, b'B'),
    (0x415, b'E'),
    (0x41a, b'K'),
    (0x41c, b'M'),
    (0x41d, b'H'),
    (0x41e, b'O'),
    (0x420, b'P'),
    (0x421, b'C'),
    (0x422, b'T'),
    (0x425, b'X'),
    (0x430, b'a'),
    (0x435, b'e'),
    (0x43e, b'o'),
    (0x440, b'p'),
    (0x441, b'c'),
    (0x443, b'y'),
    (0x445, b'x'),
    (0x455, b's'),
    (0x456, b'i'),
    (0x458, b'j'),
];

/// The Greek letters drawn like a Latin one, and that letter.
const GREEK: [(u32, u8); 17] = [
    (0x391, b'A'),
    (0x392, b'B'),
    (0x395, b'E'),
    (0x396, b'Z'),
    (0x397, b'H'),
    (0x399, b'I'),
    (0x39a, b'K'),
    (0x39c, b'M'),
    (0x39d, b'N'),
    (0x39f, b'O'),
    (0x3a1, b'P'),
    (0x3a4, b'T'),
    (0x3a5, b'Y'),
    (0x3a7, b'X'),
    (0x3bf, b'o'),
    (0x3c1, b'p'),
    (0x3c5, b'u'),
];

/// `text` with each letter that has a look-alike in `table` written as it.
fn look_alike(text: &str, table: &[(u32, u8)]) -> String {
    text.bytes()
        .map(|b| match table.iter().find(|&&(_, l)| l == b) {
            Some(&(cp, _)) => char::from_u32(cp).unwrap_or_default(),
            None => char::from(b),
        })
        .collect()
}

/// Each Greek and Cyrillic look-alike reads as its Latin letter; their
/// other letters read as nothing, and text in either script is no
/// finding and passes a blocking stream byte for byte.
#[test]
fn look_alike_letters_read_as_latin_and_their_text_as_itself() {
    use decode::uni_char;
    for &(cp, latin) in CYRILLIC.iter().chain(&GREEK) {
        assert_eq!(uni_char(cp), Some(Some(latin)), "{cp:x}");
    }
    // Б Д Ж И Л Я б ж я, λ π ω Σ Ω α ν: no Latin letter looks so.
    for cp in [
        0x411, 0x414, 0x416, 0x418, 0x41b, 0x42f, 0x431, 0x436, 0x44f, 0x3bb, 0x3c0, 0x3c9, 0x3a3,
        0x3a9, 0x3b1, 0x3bd,
    ] {
        assert_eq!(uni_char(cp), None, "{cp:x}");
    }
    let sc = scanner();
    let text = "Съешь же ещё этих мягких французских булок, да выпей чаю. \
                ТОКЕН АККАУНТА: СМОТРИ ВЫШЕ. ОАО «РОСТЕХ», ИНН 7704274402. \
                Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. ΚΑΛΗΜΕΡΑ ΑΘΗΝΑ, ΤΚ 10431. \
                Пароль: СЕКРЕТ-2024, ключ ΑΒΓΔ-ΕΖΗΘ.\n"
        .repeat(40);
    assert!(
        sc.scan(text.as_bytes()).is_empty(),
        "{:?}",
        sc.scan(text.as_bytes())
    );
    for cut in [1, 3, 64, 4096] {
        let (out, found) = stream(&sc, ScanMode::Block, text.as_bytes(), cut);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(out, text.as_bytes(), "cut {cut}");
    }
}

/// The letters the mathematical alphabets leave out, as the letterlike
/// symbols that stand in for them: (the gap's code point, the symbol).
const MATH_GAPS: [(u32, u32); 24] = [
    (0x1d455, 0x210e),
    (0x1d49d, 0x212c),
    (0x1d4a0, 0x2130),
    (0x1d4a1, 0x2131),
    (0x1d4a3, 0x210b),
    (0x1d4a4, 0x2110),
    (0x1d4a7, 0x2112),
    (0x1d4a8, 0x2133),
    (0x1d4ad, 0x211b),
    (0x1d4ba, 0x212f),
    (0x1d4bc, 0x210a),
    (0x1d4c4, 0x2134),
    (0x1d506, 0x212d),
    (0x1d50b, 0x210c),
    (0x1d50c, 0x2111),
    (0x1d515, 0x211c),
    (0x1d51d, 0x2128),
    (0x1d53a, 0x2102),
    (0x1d53f, 0x210d),
    (0x1d545, 0x2115),
    (0x1d547, 0x2119),
    (0x1d548, 0x211a),
    (0x1d549, 0x211d),
    (0x1d551, 0x2124),
];

/// `text`'s capitals from the alphabet at `capitals`, each digit `d` as
/// `zero + d` (0 as a circled zero where `zero` is not a math zero), a
/// mathematical gap written as its letterlike symbol.
fn restyle(text: &str, capitals: u32, zero: u32) -> String {
    let math_zero = (0x1d7ce..=0x1d7ff).contains(&zero);
    text.bytes()
        .map(|b| {
            let cp = match b {
                b'A'..=b'Z' => capitals + u32::from(b - b'A'),
                b'0' if !math_zero => 0x24ea,
                b'0'..=b'9' => zero + u32::from(b - b'0'),
                _ => u32::from(b),
            };
            let cp = MATH_GAPS.iter().find(|g| g.0 == cp).map_or(cp, |g| g.1);
            char::from_u32(cp).unwrap_or_default()
        })
        .collect()
}

/// Every letter and digit of every mathematical style, and every circled,
/// squared and regional-indicator letter and digit, reads as its ASCII
/// character (a gap in an alphabet as the letterlike symbol that fills it).
#[test]
fn every_styled_letter_and_digit_reads_as_ascii() {
    use decode::uni_char;
    let want = |i: u32, of: &[u8]| Some(Some(of[i as usize]));
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const DIGITS: &[u8] = b"0123456789";
    for style in 0..13 {
        for i in 0..52 {
            let cp = 0x1d400 + 52 * style + i;
            let cp = MATH_GAPS.iter().find(|g| g.0 == cp).map_or(cp, |g| g.1);
            assert_eq!(uni_char(cp), want(i, LETTERS), "{cp:x}");
        }
    }
    for cp in 0x1d7ce..=0x1d7ff {
        assert_eq!(uni_char(cp), want((cp - 0x1d7ce) % 10, DIGITS), "{cp:x}");
    }
    for first in [0x24b6, 0x1f130, 0x1f150, 0x1f170, 0x1f1e6] {
        for i in 0..26 {
            assert_eq!(uni_char(first + i), want(i, UPPER), "{:x}", first + i);
        }
    }
    for i in 0..26 {
        assert_eq!(uni_char(0x24d0 + i), Some(Some(b'a' + i as u8)));
    }
    for one in [0x2460, 0x24f5, 0x2776, 0x2780, 0x278a] {
        for i in 0..9 {
            assert_eq!(uni_char(one + i), want(i + 1, DIGITS), "{:x}", one + i);
        }
    }
    assert_eq!(uni_char(0x24ea), Some(Some(b'0')));
    assert_eq!(uni_char(0x212a), Some(Some(b'K')));
    // Ten, the trademark sign, a heart and an emoji are not letters.
    for cp in [0x2469, 0x2122, 0x2764, 0x1f600, 0x1d6a8] {
        assert_eq!(uni_char(cp), None, "{cp:x}");
    }
}

/// A name written plain and only its value encoded (`key = %77%4A...`,
/// `"key": "\u0077..."`, `key = 774a...`): every text layer starts its
/// segment with the label before the value, so a pattern that needs the
/// name beside the value sees both, whole and cut as a stream is.
/// JSON's `\/` (PHP writes every `/` so) is the form no agent has to try.
#[test]
fn a_plain_name_before_an_encoded_value_is_read_with_it() {
    let sc = scanner();
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+";
    let secret = format!("{}/{}", pick(B64, 12), pick(B64, 27));
    let mut cases: Vec<(Vec<u8>, &[u8], &[u8])> = vec![(
        secret.replace('/', "\\/").into_bytes(),
        b"{\"aws_secret_access_key\": \"",
        b"\"}",
    )];
    // Binary forms (UTF-16, compressed) and quoted-printable (whose `=`
    // reads as a second separator) are left out: see the README.
    let text = ENCS.iter().filter(|e| {
        !matches!(
            e,
            Enc::Gzip | Enc::Zlib | Enc::Utf16Le | Enc::Utf16Be | Enc::HexQp
        )
    });
    for enc in text {
        let v = enc.apply(secret.as_bytes());
        for (pre, post) in [
            (&b"aws_secret_access_key = "[..], &b"\n"[..]),
            (&b"{\"aws_secret_access_key\": \""[..], &b"\"}"[..]),
            (&b"export AWS_SECRET_ACCESS_KEY='"[..], &b"'\n"[..]),
        ] {
            cases.push((v.clone(), pre, post));
        }
    }
    for (value, pre, post) in &cases {
        let mut input = b"padding before it, ".repeat(5);
        input.extend_from_slice(pre);
        input.extend_from_slice(value);
        input.extend_from_slice(post);
        let shown = String::from_utf8_lossy(&input).into_owned();
        let found = sc.scan(&input);
        assert!(
            found
                .iter()
                .any(|f| &*f.pattern_id == "aws-secret-access-key" && !f.chain.is_empty()),
            "{shown}: {found:?}"
        );
        for cut in [1, 7, 64, 100] {
            equivalent(&sc, &input, cut).unwrap_or_else(|e| panic!("{shown}: {e}"));
        }
    }
    // What the README says passes: the value alone in a binary form or in
    // quoted-printable after a plain name (the name-free patterns and the
    // held values still read these; this pattern needs the name).
    for enc in [Enc::Gzip, Enc::Zlib, Enc::Utf16Le, Enc::Utf16Be, Enc::HexQp] {
        let mut input = b"aws_secret_access_key = ".to_vec();
        input.extend_from_slice(&enc.apply(secret.as_bytes()));
        input.push(b'\n');
        let found = sc.scan(&input);
        assert!(
            !found
                .iter()
                .any(|f| &*f.pattern_id == "aws-secret-access-key"),
            "{enc:?} is found now: say so in the README"
        );
    }
}
