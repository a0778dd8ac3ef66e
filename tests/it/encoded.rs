//! Decode, then scan, through the real proxy: a secret written in base64,
//! hex, percent-encoding, a form, a multipart part, JSON escapes, a
//! Kubernetes Secret or a .dockerconfigjson, or nested, is refused with a
//! 403 naming the pattern and the decoding chain, and the origin never gets
//! it; benign encoded bodies pass intact.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

use crate::support::client;
use crate::support::compress::{gzip, zlib, zlib_at};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::TestProxy;

fn rand_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut x = (STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ t) | 1;
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

/// A fresh AWS access key id.
fn fresh_aws() -> String {
    format!("AKIA{}", pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16))
}

/// A fresh classic GitHub token with a valid checksum.
pub(crate) fn fresh_ghp() -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let payload = pick(B62, 30);
    let mut crc = flate2::Crc::new();
    crc.update(payload.as_bytes());
    let mut n = crc.sum();
    let mut check = [b'0'; 6];
    for slot in check.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    format!("ghp_{payload}{}", String::from_utf8_lossy(&check))
}

fn hex(data: &[u8], pre: &str, sep: &str) -> String {
    data.iter()
        .map(|b| format!("{pre}{b:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn percent(data: &[u8]) -> String {
    data.iter().map(|b| format!("%{b:02X}")).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn setup() -> (crate::support::ca::TestCa, Origin, TestProxy) {
    crate::support::api_origin(echo("api"), "", |b| b.scan(&[])).await
}

/// Neither the secret nor its encoded form, nor any 8-byte piece of
/// either, reached the origin (URL, headers, body).
fn origin_never_saw<F: AsRef<[u8]>>(origin: &Origin, forms: &[F]) {
    for r in origin.received() {
        let mut seen: Vec<&[u8]> = vec![r.target.as_bytes()];
        seen.extend(r.headers.values().map(|v| v.as_bytes()));
        if let Some(b) = &r.body {
            seen.push(b);
        }
        for form in forms {
            let form = form.as_ref();
            for piece in form.windows(8.min(form.len())) {
                for s in &seen {
                    assert!(
                        !contains(s, piece),
                        "the origin got {:?}",
                        String::from_utf8_lossy(piece)
                    );
                }
            }
        }
    }
}

/// POST `body`; expect a 403 naming `pattern` and `chain`.
async fn refused(
    proxy: &TestProxy,
    origin: &Origin,
    ctype: &str,
    body: impl Into<reqwest::Body>,
    pattern: &str,
    chain: &str,
) {
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let r = client::reqwest(proxy)
        .post(&url)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{chain}");
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("pattern {pattern}, decoded {chain}")),
        "{text}"
    );
}

/// POST a JSON body carrying an AWS key; expect a 403 naming the pattern
/// and `chain`.
async fn refused_aws_json(proxy: &TestProxy, origin: &Origin, body: String, chain: &str) {
    refused(
        proxy,
        origin,
        "application/json",
        body,
        "aws-access-key-id",
        chain,
    )
    .await;
}

/// POST a text body carrying an AWS key; expect a 403 naming the pattern
/// and `chain`.
async fn refused_aws_text(proxy: &TestProxy, origin: &Origin, body: String, chain: &str) {
    refused(
        proxy,
        origin,
        "text/plain",
        body,
        "aws-access-key-id",
        chain,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_and_base64url_in_a_json_body() {
    let (_ca, origin, proxy) = setup().await;
    let ghp = fresh_ghp();
    let b64 = STANDARD.encode(format!("token={ghp}\n"));
    let body = format!("{{\"note\":\"hi\",\"blob\":\"{b64}\"}}");
    refused(
        &proxy,
        &origin,
        "application/json",
        body,
        "github-pat-classic",
        "base64",
    )
    .await;
    let aws = fresh_aws();
    let b64u = URL_SAFE_NO_PAD.encode(format!("?? key: {aws} ??"));
    let body = format!("{{\"blob\":\"{b64u}\"}}");
    refused_aws_json(&proxy, &origin, body, "base64").await;
    origin_never_saw(
        &origin,
        &[
            ghp.as_bytes(),
            b64.as_bytes(),
            aws.as_bytes(),
            b64u.as_bytes(),
        ],
    );
    let ev = proxy
        .audit_event("decoded finding", |e| {
            e["kind"] == "finding" && e["chain"] == "base64" && e["decision"] == "block"
        })
        .await;
    assert_eq!(ev["pattern"], "github-pat-classic");
    let log = std::fs::read_to_string(&proxy.audit_path).unwrap();
    assert!(!log.contains(&ghp) && !log.contains(&b64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_with_and_without_delimiters() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    // The last: quoted-printable's escapes (`=41=4B...`).
    for (pre, sep) in [
        ("", ""),
        ("", "-"),
        ("", ":"),
        ("\\x", ""),
        ("0x", ", "),
        ("=", ""),
    ] {
        let aws = fresh_aws();
        let mut h = hex(format!("id {aws} ok").as_bytes(), pre, sep);
        if pre == "=" {
            h = h.to_uppercase();
        }
        let body = format!("dump: {h}\n");
        refused_aws_text(&proxy, &origin, body, "hex").await;
        forms.push(aws);
        forms.push(h);
    }
    origin_never_saw(&origin, &forms);
}

/// Character codes (`[65, 75, 73, ...]`, `String.fromCharCode(...)`, a
/// pretty-printed JSON array, digits glued before them) and HTML character
/// references (`&#65;`, `&#x41;`, mixed with literal characters), in a
/// body, a query string and a header: each is refused naming its chain,
/// and the origin never sees a piece of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn character_codes_and_html_references() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    let codes = |s: &str| -> Vec<String> { s.bytes().map(|b| b.to_string()).collect() };
    for form in 0..5 {
        let aws = fresh_aws();
        let c = codes(&aws);
        let (body, chain) = match form {
            0 => (format!("{{\"key\": [{}]}}", c.join(", ")), "charcodes"),
            1 => (
                format!("eval(String.fromCharCode({}))", c.join(",")),
                "charcodes",
            ),
            2 => (
                format!("{{\"key\": [\n  {}\n]}}", c.join(",\n  ")),
                "charcodes",
            ),
            3 => (
                format!(
                    "<b>{}</b>",
                    c.iter().map(|x| format!("&#{x};")).collect::<String>()
                ),
                "html",
            ),
            _ => {
                let mixed: String = aws
                    .bytes()
                    .enumerate()
                    .map(|(i, b)| {
                        if i % 3 == 0 {
                            format!("&#x{b:x};")
                        } else {
                            (b as char).to_string()
                        }
                    })
                    .collect();
                (format!("<a title=\"{mixed}\">"), "html")
            }
        };
        refused_aws_text(&proxy, &origin, body.clone(), chain).await;
        forms.push(aws);
        forms.push(body);
    }
    // Digits glued before the list, in a query string.
    let aws = fresh_aws();
    let query = format!("7{}", codes(&aws).join(","));
    let url = format!("https://api.example.test:{}/q?ids={query}", origin.port());
    let r = client::reqwest(&proxy).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("pattern aws-access-key-id, decoded charcodes"),
        "{text}"
    );
    forms.push(aws);
    // HTML references in a header value.
    let aws = fresh_aws();
    let header: String = codes(&aws).iter().map(|x| format!("&#{x}")).collect();
    let url = format!("https://api.example.test:{}/h", origin.port());
    let r = client::reqwest(&proxy)
        .get(&url)
        .header("x-note", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("pattern aws-access-key-id, decoded html"),
        "{text}"
    );
    forms.push(aws);
    forms.push(header);
    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());
}

/// UTF-16 (`iconv -t UTF-16`), raw in a body and as PowerShell sends a
/// script (`-EncodedCommand`: base64 of UTF-16LE) in a JSON body: each
/// reached the origin before; each is refused naming its chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_raw_and_powershell_base64() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    for chain in ["utf16", "base64>utf16"] {
        let aws = fresh_aws();
        let script = format!("$env:AWS_ACCESS_KEY_ID = '{aws}'");
        let le: Vec<u8> = script.bytes().flat_map(|b| [b, 0]).collect();
        let url = format!("https://api.example.test:{}/upload", origin.port());
        let body = if chain == "utf16" {
            le
        } else {
            format!(
                "{{\"command\":\"powershell -EncodedCommand {}\"}}",
                STANDARD.encode(&le)
            )
            .into_bytes()
        };
        let r = client::reqwest(&proxy)
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{chain}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&format!("pattern aws-access-key-id, decoded {chain}")),
            "{text}"
        );
        forms.push(aws.into_bytes());
        forms.push(body);
    }
    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());
}

/// Characters glued before an encoding shift a base64 run's quads or a
/// hex run's pairs (`took=89m` on the line before, `xQ` or `a` on the same
/// one): each was a leak, each is refused with its chain, and the origin
/// never sees a piece of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_before_an_encoding_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    for (glue, enc) in [
        ("took=89m\n", "base64"),
        ("status=200 xQ", "base64"),
        ("id=a", "hex"),
        ("dump: 9c0", "hex-"),
    ] {
        let aws = fresh_aws();
        let payload = format!("key {aws} end");
        let encoded = match enc {
            "base64" => STANDARD.encode(&payload),
            "hex" => hex(payload.as_bytes(), "", ""),
            _ => hex(payload.as_bytes(), "", "-"),
        };
        let body = format!("INFO {glue}{encoded}\n");
        refused_aws_text(&proxy, &origin, body, enc.trim_end_matches('-')).await;
        forms.push(aws);
        forms.push(encoded);
    }
    origin_never_saw(&origin, &forms);
}

/// `h` (at least 32 hex digits) cut into a UUID's groups: 8-4-4-4, then
/// the rest.
fn uuid_groups(h: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Hex beside UUIDs, which the hex layers pass over in one step: a key
/// hex-encoded in a field after a record's UUID, glued to the end of a
/// UUID, and written in a UUID's groups (`414b4941-4b4b-...`, its first
/// 36 bytes shaped like one) is refused, naming the chain, among records
/// full of UUIDs; the origin never sees a piece of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_beside_uuids_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let uuid = || {
        let h = hex(&rand_u64().to_be_bytes(), "", "") + &hex(&rand_u64().to_be_bytes(), "", "");
        uuid_groups(&h)
    };
    let mut forms = Vec::new();
    for place in ["field", "glued", "grouped"] {
        let aws = fresh_aws();
        let h = hex(format!("id {aws} ok").as_bytes(), "", "");
        let (value, encoded) = match place {
            "field" => (format!("{}\",\"dump\":\"{h}", uuid()), h.clone()),
            "glued" => (format!("{}{h}", uuid()), h.clone()),
            _ => {
                let g = uuid_groups(&h);
                (g.clone(), g)
            }
        };
        let mut body = String::from("[");
        for i in 0..40 {
            body.push_str(&format!("{{\"id\":{i},\"uuid\":\"{}\"}},", uuid()));
        }
        body.push_str(&format!("{{\"id\":40,\"uuid\":\"{value}\"}}]"));
        refused_aws_json(&proxy, &origin, body, "hex").await;
        forms.push(aws);
        forms.push(encoded);
    }
    origin_never_saw(&origin, &forms);
}

/// A short base64 run whose secret has no 16-character run of base64
/// characters (a database URL: `:`, `@` and `.` break it) is found only by
/// the base64 gate, the keyword's start read off the run's characters in
/// every phase: with glue of zero to three characters before it (each
/// shifts its phase), in base64 and base64url, it is refused, and the
/// origin never sees the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_base64_secret_without_a_long_run_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    for glue in ["", "x", "xQ", "x9Q"] {
        for url_safe in [false, true] {
            let password = pick(b"abcdefghijkmnopqrstuvwxyz23456789", 12);
            let secret = format!("postgres://app:{password}@db.example.test:5432/main");
            let encoded = match url_safe {
                true => URL_SAFE_NO_PAD.encode(&secret),
                false => STANDARD.encode(&secret),
            };
            let body = format!("see {glue}{encoded} for the db\n");
            refused(
                &proxy,
                &origin,
                "text/plain",
                body,
                "postgres-url-password",
                "base64",
            )
            .await;
            forms.push(password);
            forms.push(encoded);
        }
    }
    origin_never_saw(&origin, &forms);
}

/// A short base64 run whose key starts only after an escape is decoded
/// (`%41KIA...`, `\u0041KIA...`, `&#65;KIA...`: no keyword's first
/// bytes in any phase) still gets its nested scan: with glue of zero to
/// three characters before it, it is refused, and the origin never sees
/// the key. (What keeps the quick short-run look from clearing it here is
/// the key's own base64 characters, more than a phase may hold; its
/// escape marks, for shorter escaped text, are held by the unit test
/// `the_quick_short_run_verdict_sends_every_escape_to_a_nested_scan`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_base64_run_holding_an_escaped_key_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms = Vec::new();
    for (escape, chain) in [
        ("%41", "base64>percent"),
        ("\\u0041", "base64>json"),
        ("&#65;", "base64>html"),
    ] {
        for glue in ["", "x", "xQ", "x9Q"] {
            let aws = fresh_aws();
            let escaped = format!("{escape}{}", &aws[1..]);
            let encoded = STANDARD.encode(&escaped);
            let body = format!("see {glue}{encoded} now\n");
            refused_aws_text(&proxy, &origin, body, chain).await;
            forms.push(aws);
            forms.push(encoded);
        }
    }
    origin_never_saw(&origin, &forms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triple_percent_encoding_in_a_query_string() {
    let (_ca, origin, proxy) = setup().await;
    let ghp = fresh_ghp();
    let three = percent(percent(percent(ghp.as_bytes()).as_bytes()).as_bytes());
    let url = format!(
        "https://api.example.test:{}/search?q=x&t={three}",
        origin.port()
    );
    let r = client::reqwest(&proxy).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("URL"), "{text}");
    assert!(
        text.contains("pattern github-pat-classic, decoded percent>percent>percent"),
        "{text}"
    );
    // base64 in a path segment, after other path segments.
    let aws = fresh_aws();
    let seg = URL_SAFE_NO_PAD.encode(format!("id={aws}"));
    for prefix in ["/a", "/ab", "/abc", "/v1/files"] {
        let url = format!("https://api.example.test:{}{prefix}/{seg}", origin.port());
        let r = client::reqwest(&proxy).get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403, "{prefix}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("pattern aws-access-key-id, decoded base64"),
            "{text}"
        );
    }
    // Four layers: more than airlock decodes, refused as such.
    let four = percent(three.as_bytes());
    let url = format!("https://api.example.test:{}/search?t={four}", origin.port());
    let r = client::reqwest(&proxy).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("too-deeply-encoded, decoded percent>percent>percent>percent"),
        "{text}"
    );
    assert!(origin.received().is_empty(), "nothing reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_with_a_pem_key() {
    let (_ca, origin, proxy) = setup().await;
    let der: Vec<u8> = (0..900).map(|_| rand_u64() as u8).collect();
    let pem = crate::support::pem("RSA PRIVATE KEY", &der);
    // What a browser or curl --data-urlencode sends.
    let form: String = pem
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b == b'-' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    assert!(form.starts_with("-----BEGIN+RSA+PRIVATE+KEY-----%0A"));
    let body = format!("name=deploy&key={form}&go=1");
    refused(
        &proxy,
        &origin,
        "application/x-www-form-urlencoded",
        body,
        "pem-private-key",
        "percent",
    )
    .await;
    origin_never_saw(&origin, &[form.as_bytes()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_part_in_base64() {
    let (_ca, origin, proxy) = setup().await;
    let aws = fresh_aws();
    let text = format!(
        "{}\n[default]\naws_access_key_id = {aws}\n",
        "# notes\n".repeat(12)
    );
    let b64 = STANDARD.encode(&text);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = format!(
        "--b0und\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nconfig\r\n\
         --b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"credentials\"\r\n\
         Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b0und--\r\n",
        wrapped.join("\r\n")
    );
    refused(
        &proxy,
        &origin,
        "multipart/form-data; boundary=b0und",
        body,
        "aws-access-key-id",
        "base64",
    )
    .await;
    origin_never_saw(&origin, &[aws.as_bytes(), b64.as_bytes()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_unicode_escapes() {
    let (_ca, origin, proxy) = setup().await;
    let aws = fresh_aws();
    let escaped: String = aws.bytes().map(|b| format!("\\u{b:04x}")).collect();
    let body = format!("{{\"k\":\"{escaped}\",\"path\":\"a\\/b\"}}");
    refused_aws_json(&proxy, &origin, body, "json").await;
    origin_never_saw(&origin, &[aws.as_bytes(), escaped.as_bytes()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_and_a_dockerconfigjson() {
    let (_ca, origin, proxy) = setup().await;
    let ghp = fresh_ghp();
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ci\ntype: Opaque\ndata:\n  GITHUB_TOKEN: {}\n  USER: {}\n",
        STANDARD.encode(&ghp),
        STANDARD.encode("ci-bot"),
    );
    refused(
        &proxy,
        &origin,
        "application/yaml",
        manifest,
        "github-pat-classic",
        "base64",
    )
    .await;

    let ghp2 = fresh_ghp();
    let auth = STANDARD.encode(format!("ci-bot:{ghp2}"));
    let cfg = format!("{{\"auths\":{{\"ghcr.io\":{{\"auth\":\"{auth}\"}}}}}}");
    let outer = STANDARD.encode(&cfg);
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {outer}\n"
    );
    // The registry `auth` value is itself a credential (user:password in
    // base64): it is found one layer down, before the token two layers down.
    refused(
        &proxy,
        &origin,
        "application/yaml",
        manifest,
        "docker-config-auth",
        "base64",
    )
    .await;
    origin_never_saw(
        &origin,
        &[
            ghp.as_bytes(),
            ghp2.as_bytes(),
            auth.as_bytes(),
            outer.as_bytes(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_base64_of_percent_of_hex_and_too_deep() {
    let (_ca, origin, proxy) = setup().await;
    let aws = fresh_aws();
    let inner = hex(format!("k={aws};").as_bytes(), "", "");
    let outer = STANDARD.encode(percent(inner.as_bytes()));
    let body = format!("{{\"payload\":\"{outer}\"}}");
    refused_aws_json(&proxy, &origin, body, "base64>percent>hex").await;

    // One layer more than airlock decodes: refused, named as such.
    let four = STANDARD.encode(STANDARD.encode(percent(inner.as_bytes())));
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(format!("{{\"payload\":\"{four}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["airlock-error"], "unscannable_body");
    let text = r.text().await.unwrap();
    assert!(text.contains("base64>base64>percent>hex"), "{text}");
    assert!(text.contains("more than 3"), "{text}");
    origin_never_saw(
        &origin,
        &[aws.as_bytes(), outer.as_bytes(), four.as_bytes()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_header_value() {
    let (_ca, origin, proxy) = setup().await;
    let ghp = fresh_ghp();
    let b64 = STANDARD.encode(format!("{ghp}:x-oauth-basic"));
    let url = format!("https://api.example.test:{}/x", origin.port());
    let r = client::reqwest(&proxy)
        .get(&url)
        .header("x-debug", format!("dump {b64}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("header x-debug"), "{text}");
    assert!(
        text.contains("pattern github-pat-classic, decoded base64"),
        "{text}"
    );
    assert!(origin.received().is_empty());
}

/// Benign encoded bodies go through byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benign_encoded_bodies_pass_intact() {
    let (_ca, origin, proxy) = setup().await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let c = client::reqwest(&proxy);
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut json = String::from("[");
    for i in 0..300u64 {
        let r = rand_u64();
        json.push_str(&format!(
            "{{\"id\":{i},\"uuid\":\"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\",\"title\":\"caf\\u00e9 \\\"{i}\\\"\\n\",\"url\":\"https:\\/\\/x.test\\/a%20b\"}},",
            r as u32, (r >> 32) as u16, r % 4096, (r >> 12) % 4096, r >> 16
        ));
    }
    json.push_str("{}]");
    bodies.push(json.into_bytes());
    let img: Vec<u8> = (0..512 * 1024).map(|_| rand_u64() as u8).collect();
    bodies.push(
        format!(
            "{{\"image\":\"data:image/png;base64,{}\"}}",
            STANDARD.encode(&img)
        )
        .into_bytes(),
    );
    let mut lock = String::new();
    for i in 0..200 {
        let h: Vec<u8> = (0..64).map(|_| rand_u64() as u8).collect();
        let s: String = (0..32)
            .map(|_| format!("{:02x}", rand_u64() as u8))
            .collect();
        lock.push_str(&format!(
            "\"pkg-{i}\": {{\"integrity\": \"sha512-{}\", \"sha256\": \"{s}\"}},\n",
            STANDARD.encode(&h)
        ));
    }
    bodies.push(lock.into_bytes());
    // A file as a Node `Buffer` in JSON (random bytes as decimal codes),
    // numeric arrays, and HTML with character references.
    let file: Vec<String> = (0..4096).map(|_| (rand_u64() as u8).to_string()).collect();
    bodies.push(format!("{{\"type\":\"Buffer\",\"data\":[{}]}}", file.join(",")).into_bytes());
    let pixels: Vec<String> = (0..2000)
        .map(|i| format!("[{}, {}, {}]", i % 256, (i * 7) % 256, 255))
        .collect();
    bodies.push(format!("{{\"pixels\":[{}]}}", pixels.join(", ")).into_bytes());
    bodies.push(
        "<p>&#169; 2026 caf&#233; &#x2014; na&#xEF;ve &#8220;quoted&#8221; &amp; more</p>\n"
            .repeat(200)
            .into_bytes(),
    );
    // Text the unicode layer reads and must leave alone: a byte order
    // mark, emoji with zero-width joiners and variation selectors, CJK
    // with fullwidth punctuation and digits, soft hyphens, bidi marks.
    bodies.push(
        "\u{feff}1,Zoë,\u{1f469}\u{200d}\u{1f4bb} ships \u{2764}\u{fe0f} today,\
         请在（２０２５年）前提交：报告、代码和测试！,Donau\u{ad}dampf\u{ad}schiff \u{200f}שלום\u{200e}\n"
            .repeat(300)
            .into_bytes(),
    );
    // Russian and Greek, whose look-alike letters the unicode layer reads
    // as Latin ones: capitals, a tax number and a postcode among them.
    bodies.push(
        "Съешь же ещё этих мягких французских булок, да выпей чаю. \
         ТОКЕН АККАУНТА: СМОТРИ ВЫШЕ. ОАО «РОСТЕХ», ИНН 7704274402. \
         ΚΑΛΗΜΕΡΑ ΑΘΗΝΑ, ΤΚ 10431. Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.\n"
            .repeat(300)
            .into_bytes(),
    );
    for (n, body) in bodies.iter().enumerate() {
        let r = c
            .post(format!("{url}/{n}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "body {n}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let got = origin.received();
    assert_eq!(got.len(), bodies.len());
    for (n, body) in bodies.iter().enumerate() {
        let r = got
            .iter()
            .find(|r| r.target == format!("/upload/{n}"))
            .unwrap();
        assert!(r.body.as_deref() == Some(&body[..]), "body {n} changed");
    }
}

/// A Kubernetes Secret's `data:` values are base64 and their names plain:
/// a value that is a secret only beside its name (an AWS secret access
/// key, a Mailgun key) is found under its name, and a named value with
/// text glued after its value or before its name is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_values_in_a_kubernetes_secret_and_glued() {
    let (_ca, origin, proxy) = setup().await;
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+";
    let aws_secret = pick(B64, 40);
    let mailgun = format!("key-{}", pick(b"0123456789abcdef", 32));
    let (v1, v2) = (STANDARD.encode(&aws_secret), STANDARD.encode(&mailgun));
    for (name, value, pattern) in [
        ("AWS_SECRET_ACCESS_KEY", &v1, "aws-secret-access-key"),
        ("MAILGUN_API_KEY", &v2, "mailgun-api-key"),
    ] {
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\ndata:\n  USER: {}\n  {name}: {value}\n",
            STANDARD.encode("app-bot"),
        );
        refused(
            &proxy,
            &origin,
            "application/yaml",
            manifest,
            pattern,
            "base64",
        )
        .await;
    }
    // Glued: `...KEY=<secret>Lorem` (no decoding: the chain is empty).
    let glued = pick(B64, 40);
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(format!("export AWS_SECRET_KEY={glued}Lorem ipsum"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("pattern aws-secret-access-key"), "{text}");
    // Glued before the name: `xAWS_SECRET_KEY=...`, `xmysql://...`.
    let glued_before = pick(B64, 40);
    let password = pick(
        b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
        20,
    );
    for (body, pattern) in [
        (
            format!("xAWS_SECRET_KEY={glued_before}Lorem ipsum"),
            "aws-secret-access-key",
        ),
        (
            format!("see xmysql://root:{password}@db.notreal.test/app"),
            "mysql-url-password",
        ),
    ] {
        let r = client::reqwest(&proxy)
            .post(&url)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{pattern}");
        let text = r.text().await.unwrap();
        assert!(text.contains(&format!("pattern {pattern}")), "{text}");
    }
    origin_never_saw(
        &origin,
        &[
            aws_secret.as_bytes(),
            mailgun.as_bytes(),
            v1.as_bytes(),
            v2.as_bytes(),
            glued.as_bytes(),
            glued_before.as_bytes(),
            password.as_bytes(),
        ],
    );
}

/// POST to `url` through the proxy with `curl` (`args` give the body);
/// returns what curl printed: the response body, then its status on a line
/// of its own.
async fn curl_post(proxy: &TestProxy, url: &str, args: &[&str]) -> String {
    let (via, ca) = (proxy.url(), proxy.ca_pem_path.display().to_string());
    let mut all = vec!["--proxy", &via, "--cacert", &ca];
    all.extend_from_slice(args);
    all.extend(["-w", "\n%{http_code}", url]);
    let (code, out, err) = client::curl(&all).await;
    assert_eq!(code, 0, "{err}");
    out
}

/// A credentials file long enough that deflate compresses it (a few lines
/// go out in a stored block, the key in plain text).
fn credentials_file(aws: &str) -> String {
    let profiles: String = (0..40)
        .map(|i| format!("[profile p{i}]\nregion = eu-west-1\noutput = json\n"))
        .collect();
    format!("{profiles}[default]\naws_access_key_id = {aws}\n{profiles}")
}

/// Compressed data inside a request, the moves after "compress the whole
/// body": base64 of gzip in JSON, base64 of zlib in a query string, a
/// `.gz` file uploaded by `curl -F`, a body gzipped twice (undeclared and
/// declared), a second gzip member behind a harmless one, a zip archive
/// (whole and in base64). Each reached the
/// origin before (200); each is refused, and the origin sees no piece of
/// the key or its compressed form. A benign `.gz` upload arrives byte for
/// byte; a decompression bomb in base64 is refused (400), not scanned for
/// minutes or sent unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_data_inside_a_request() {
    let (_ca, origin, proxy) = setup().await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let mut forms: Vec<Vec<u8>> = Vec::new();

    let aws = fresh_aws();
    let gz = gzip(credentials_file(&aws).as_bytes());
    let body = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&gz));
    refused_aws_text(&proxy, &origin, body, "base64>gzip").await;
    forms.extend([aws.into_bytes(), gz]);

    let aws = fresh_aws();
    let z = zlib(credentials_file(&aws).as_bytes());
    let r = client::reqwest(&proxy)
        .get(format!("{url}?d={}", URL_SAFE_NO_PAD.encode(&z)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("aws-access-key-id"));
    forms.extend([aws.into_bytes(), z]);

    // `curl -F file=@credentials.gz`
    let aws = fresh_aws();
    let gz = gzip(credentials_file(&aws).as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.gz");
    std::fs::write(&file, &gz).unwrap();
    let upload = format!("file=@{}", file.display());
    let out = curl_post(&proxy, &url, &["-F", &upload]).await;
    assert!(out.ends_with("\n403"), "{out}");
    assert!(
        out.contains("pattern aws-access-key-id, decoded gzip"),
        "{out}"
    );
    forms.extend([aws.into_bytes(), gz]);

    // Twice: undeclared, declared, and a second member behind a first.
    for how in ["gzip|gzip", "content-encoding: gzip of gzip", "two members"] {
        let aws = fresh_aws();
        let inner = gzip(credentials_file(&aws).as_bytes());
        let (body, declared) = match how {
            "gzip|gzip" => (gzip(&inner), false),
            "two members" => {
                let mut b = gzip(b"a harmless first member\n");
                b.extend_from_slice(&inner);
                (b, false)
            }
            _ => (gzip(&inner), true),
        };
        let mut req = client::reqwest(&proxy)
            .post(&url)
            .header("content-type", "application/octet-stream");
        if declared {
            req = req.header("content-encoding", "gzip");
        }
        let r = req.body(body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{how}");
        assert!(
            r.text().await.unwrap().contains("aws-access-key-id"),
            "{how}"
        );
        forms.extend([aws.into_bytes(), inner]);
    }
    // `zip -r`: an archive written by Python's `zipfile` (deflated
    // entries, the key in the second), uploaded whole and in base64.
    let aws = fresh_aws();
    let creds = dir.path().join("credentials");
    std::fs::write(&creds, credentials_file(&aws)).unwrap();
    let archive = dir.path().join("home.zip");
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
             z.writestr('README.md', '# notes\\n' * 50)\n\
             z.write(sys.argv[2], '.aws/credentials')\n\
             z.close()",
            archive.to_str().unwrap(),
            creds.to_str().unwrap(),
        ])
        .status()
        .expect("python3 (scripts/test needs it too)");
    assert!(made.success());
    let zip = std::fs::read(&archive).unwrap();
    let data = format!("@{}", archive.display());
    let zip_type = "content-type: application/zip";
    let out = curl_post(&proxy, &url, &["-H", zip_type, "--data-binary", &data]).await;
    assert!(out.ends_with("\n403"), "{out}");
    assert!(
        out.contains("pattern aws-access-key-id, decoded zip"),
        "{out}"
    );
    let body = format!("{{\"archive\":\"{}\"}}", STANDARD.encode(&zip));
    refused_aws_text(&proxy, &origin, body, "base64>zip").await;
    forms.extend([aws.into_bytes(), zip]);

    // Header variations a receiver still reads: `zlib.compress(d, 3)`
    // (`78 5e`), and a gzip header with a reserved flag bit set
    // (Python's `gzip.decompress` reads past it).
    let aws = fresh_aws();
    let z = zlib_at(credentials_file(&aws).as_bytes(), 3);
    let body = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&z));
    refused_aws_text(&proxy, &origin, body, "base64>zlib").await;
    forms.extend([aws.into_bytes(), z]);
    let aws = fresh_aws();
    let mut g = gzip(credentials_file(&aws).as_bytes());
    g[3] |= 0x20;
    let body = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&g));
    refused_aws_text(&proxy, &origin, body, "base64>gzip").await;
    forms.extend([aws.into_bytes(), g]);

    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());

    // A bomb: 8 MiB of one byte, gzipped and in base64.
    let bomb = STANDARD.encode(gzip(&vec![b'a'; 8 << 20]));
    let r = client::reqwest(&proxy)
        .post(&url)
        .header("content-type", "application/json")
        .body(format!("{{\"file\":\"{bomb}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("expands more than 100 times"), "{text}");
    assert!(origin.received().is_empty());

    // A benign `.gz` upload arrives byte for byte.
    let readme = gzip("# A project\n\nIt does things.\n".repeat(200).as_bytes());
    std::fs::write(&file, &readme).unwrap();
    let out = curl_post(&proxy, &url, &["-F", &upload]).await;
    assert!(out.ends_with("\n200"), "{out}");
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert!(contains(
        got[0].body.as_deref().unwrap_or_default(),
        &readme
    ));
}

/// A gzip member where a reader that decodes one member at a time, or
/// holds a header whole, would not look: in a gzip extra field, behind a
/// 3,000-byte name and comment (Python's `gzip.decompress`
/// reads them), in a zip entry's extra field, glued behind an unfinished
/// stored block. Each is refused, raw (a body that is a gzip member is
/// also scanned as sent, not only as decoded: its header's fields leave
/// with it) and in base64 inside JSON; so is a key in plain text in the
/// gzip comment of a body declared `Content-Encoding: gzip`. The origin
/// gets no piece of a key or of a hidden member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_data_hidden_in_or_behind_another_member_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for how in ["extra", "long name", "zip extra", "behind stored"] {
        let aws = fresh_aws();
        let gz = gzip(credentials_file(&aws).as_bytes());
        let harmless = gzip(b"a harmless member\n");
        let len = |n: usize| u16::try_from(n).unwrap().to_le_bytes();
        let body = match how {
            "extra" => {
                let mut b = vec![0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 3];
                b.extend_from_slice(&len(gz.len()));
                b.extend_from_slice(&gz);
                b.extend_from_slice(&harmless[10..]);
                b
            }
            "long name" => {
                let mut b = vec![0x1f, 0x8b, 0x08, 0x08 | 0x10, 0, 0, 0, 0, 0, 3];
                b.extend_from_slice(&b"n".repeat(3000));
                b.push(0);
                b.extend_from_slice(&b"c".repeat(3000));
                b.push(0);
                b.extend_from_slice(&gz[10..]);
                b
            }
            "zip extra" => {
                // A local file header (deflated, name `a`), its extra
                // field the member, then the entry's data.
                let data = &harmless[10..];
                let mut b = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(&len(1));
                b.extend_from_slice(&len(gz.len()));
                b.push(b'a');
                b.extend_from_slice(&gz);
                b.extend_from_slice(data);
                b
            }
            _ => {
                let mut b = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 0x00];
                b.extend_from_slice(&len(5000));
                b.extend_from_slice(&(!5000u16).to_le_bytes());
                b.extend_from_slice(&b"f".repeat(5000));
                b.extend_from_slice(&gz);
                b
            }
        };
        if how == "long name" {
            // A receiver reads it: the member behind the header is the key.
            let mut py = std::process::Command::new("python3")
                .args(["-c", "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3");
            std::io::Write::write_all(&mut py.stdin.take().unwrap(), &body).unwrap();
            let got = py.wait_with_output().unwrap();
            assert!(contains(&got.stdout, aws.as_bytes()), "{how}");
        }
        // A body that is a gzip member is refused for the key (found in
        // what it decodes to, or by the header search in its bytes); one
        // whose deflate data runs into the next member does not decode,
        // and is refused for that.
        let r = client::reqwest(&proxy)
            .post(format!("https://api.example.test:{}/upload", origin.port()))
            .header("content-type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if how == "behind stored" {
            assert_eq!(status, 400, "{how}");
            assert!(text.contains("cannot decode gzip body"), "{how}: {text}");
        } else {
            assert_eq!(status, 403, "{how}");
            assert!(text.contains("pattern aws-access-key-id"), "{how}: {text}");
        }
        let json = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&body));
        refused_aws_text(&proxy, &origin, json, "base64>gzip").await;
        forms.extend([aws.into_bytes(), gz]);
    }
    // The key in plain text in a gzip comment, the body declared gzip:
    // what it decodes to is harmless, the comment leaves with it.
    let aws = fresh_aws();
    let mut body = vec![0x1f, 0x8b, 0x08, 0x10, 0, 0, 0, 0, 0, 3];
    body.extend_from_slice(format!("aws_access_key_id = {aws}\0").as_bytes());
    body.extend_from_slice(&gzip(b"a harmless member\n")[10..]);
    let r = client::reqwest(&proxy)
        .post(format!("https://api.example.test:{}/upload", origin.port()))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("pattern aws-access-key-id")
    );
    forms.push(aws.into_bytes());
    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());
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

/// A gzip member that decodes a byte per kilobyte (a one-byte stored
/// block, then 200 empty ones) would pin the scan at a byte it still
/// holds, and the stream with it. Sent, as is or declared gzip, it is
/// refused as unreadable; downloaded, it arrives byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_gzip_member_is_refused_up_and_passed_down() {
    let body = sparse_gzip(&b"INFO request served from cache\n".repeat(40), 200);
    assert!(body.len() > 1 << 20);
    let (_ca, origin, proxy) = setup().await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    for encoding in [None, Some("gzip")] {
        let mut req = client::reqwest(&proxy)
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body.clone());
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{encoding:?}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("compressed data airlock cannot read (gzip)"),
            "{encoding:?}: {text}"
        );
    }
    assert!(
        origin
            .received()
            .iter()
            .all(|r| r.body.as_deref() != Some(&body[..])),
        "the origin got the member whole"
    );

    let served = bytes::Bytes::from(body);
    assert_eq!(
        download_blocking(served.clone(), "/log.gz").await,
        (200, served, true)
    );
}

/// GET `path` from an origin that serves `body`, through a proxy that
/// blocks responses on a finding (`incoming = "block"`): the status, the
/// body bytes the client got, and whether the body ended cleanly (a
/// response cut after its head ends in a reset; one cut before its head
/// reads as status 0 with no bytes).
async fn download_blocking(body: bytes::Bytes, path: &str) -> (u16, bytes::Bytes, bool) {
    let handler: crate::support::origin::Handler = std::sync::Arc::new(move |req, rec| {
        let body = body.clone();
        Box::pin(async move {
            crate::support::origin::record(req, &rec).await;
            hyper::Response::new(crate::support::origin::full(body))
        })
    });
    let (_ca, origin, proxy) =
        crate::support::api_origin(handler, "", |b| b.scan(&["incoming = \"block\""])).await;
    let url = format!("https://api.example.test:{}{path}", origin.port());
    // A secret in the first chunk may reset the stream before the head
    // reaches the client (HTTP/2): nothing was passed, status 0.
    let mut r = match client::reqwest(&proxy).get(&url).send().await {
        Ok(r) => r,
        Err(_) => return (0, bytes::Bytes::new(), false),
    };
    let status = r.status().as_u16();
    let mut got = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (status, got.into(), true),
            Err(_) => return (status, got.into(), false),
        }
    }
}

/// Compressed data glued into text crowded with its headers' first bytes
/// (`x` for zlib, `P` for zip, `\x1f`, `7`, `B`, `R`, half headers like
/// `PK` and `BZh`): the header search, which looks for a rarer byte at a
/// fixed offset in each header, still finds the real one in the middle,
/// whatever sits right before it. A gzip member and a zlib stream at two
/// levels each carry a fresh key inside an undeclared text body; each is
/// refused naming the chain, and the origin gets no piece of a key or of
/// its compressed form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_data_among_its_headers_first_bytes_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let mut forms: Vec<Vec<u8>> = Vec::new();
    let crowd = b"Px xP PK P K BZh Rar 7z \x1f Pxx xx PP ".repeat(300);
    for (n, chain) in ["gzip", "zlib", "zlib"].into_iter().enumerate() {
        let aws = fresh_aws();
        let packed = match n {
            0 => gzip(credentials_file(&aws).as_bytes()),
            1 => zlib(credentials_file(&aws).as_bytes()),
            _ => zlib_at(credentials_file(&aws).as_bytes(), 1),
        };
        // Glued to the crowd: its last bytes `x`, `P` and `PK` right
        // before the header.
        for glue in [&b"x"[..], b"P", b"PK", b"xP"] {
            let mut body = crowd.clone();
            body.extend_from_slice(glue);
            body.extend_from_slice(&packed);
            body.extend_from_slice(&crowd);
            refused(
                &proxy,
                &origin,
                "text/plain",
                body,
                "aws-access-key-id",
                chain,
            )
            .await;
        }
        forms.extend([aws.into_bytes(), packed]);
    }
    origin_never_saw(&origin, &forms);
    // The crowd alone is text: it arrives byte for byte.
    let r = client::reqwest(&proxy)
        .post(&url)
        .header("content-type", "text/plain")
        .body(crowd.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got.len(), 1, "only the benign body arrived");
    assert_eq!(got[0].body.as_deref(), Some(&crowd[..]));
}

/// The smallest compressed secret: one line gzipped, or compressed by
/// zlib at each of its four header levels, then base64 (both alphabets)
/// in a line of text. It decodes to fewer than 128
/// bytes, so it never streams into a nested scan: the short-segment check
/// (whose compressed-header gate the scanner's speed work keeps
/// reshaping) must send it there. Each is refused, naming the chain; the
/// origin gets no piece of the key or of its compressed form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_compressed_secret_in_base64_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let mut forms: Vec<Vec<u8>> = Vec::new();
    // `None`: gzip; a level: zlib, with the header byte it writes.
    for level in [
        None,
        Some((1, 0x01)),
        Some((3, 0x5e)),
        Some((6, 0x9c)),
        Some((9, 0xda)),
    ] {
        let aws = fresh_aws();
        // The repeat makes the encoder code the line (a line alone is
        // stored as it is, and the key would be found without inflating).
        let line = format!("aws_access_key_id = {aws}\naws_access_key_id = {aws}\n");
        let (packed, chain) = match level {
            None => (gzip(line.as_bytes()), "base64>gzip"),
            Some((l, flag)) => {
                let z = zlib_at(line.as_bytes(), l);
                assert_eq!(z[..2], [0x78, flag], "zlib level {l}");
                (z, "base64>zlib")
            }
        };
        assert!(packed.len() < 128, "{} bytes", packed.len());
        assert!(!contains(&packed, aws.as_bytes()), "stored, not coded");
        for encoded in [STANDARD.encode(&packed), URL_SAFE_NO_PAD.encode(&packed)] {
            let body = format!("see {encoded} for the key\n");
            refused_aws_text(&proxy, &origin, body, chain).await;
        }
        forms.extend([aws.into_bytes(), packed]);
    }
    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());
}

/// Run `python3 -c script args...` (scripts/test needs python3 too).
fn python(script: &str, args: &[&str]) {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .status()
        .expect("python3");
    assert!(ok.success(), "{script}");
}

/// Run a compressor from the command line (scripts/test installs it).
fn tool(cmd: &str, args: &[&str]) {
    let ok = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/test installs it)"));
    assert!(ok.success(), "{cmd} {args:?}");
}

/// POST `body` as is; expect a 400 saying airlock cannot read `chain`.
async fn refused_unreadable(proxy: &TestProxy, url: &str, body: Vec<u8>, chain: &str) {
    let r = client::reqwest(proxy)
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{chain}");
    assert_eq!(r.headers()["airlock-error"], "unscannable_body", "{chain}");
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("compressed data airlock cannot read ({chain})")),
        "{chain}: {text}"
    );
}

/// The compressors the gzip/zlib/zip layer does not read, tried as an
/// agent told to hide a key would: `xz`, `bzip2`, `zstd` and an encrypted
/// `zip -P`, each a credentials file, sent as the body, in base64 inside
/// JSON, or as a `curl -F` upload; a 7z archive's signature; and gzip one
/// decoding too deep (`base64>base64>base64>gzip`). Each reached the origin
/// before (200); each is refused (400 naming the format), and the origin
/// sees no piece of the key or the compressed file. A rule with `scan_skip
/// = ["unreadable-compressed"]` sends such a file byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_compressed_data_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut forms: Vec<Vec<u8>> = Vec::new();

    let aws = fresh_aws();
    std::fs::write(path("credentials"), credentials_file(&aws)).unwrap();
    python(
        "import lzma, sys\n\
         d = open(sys.argv[1], 'rb').read()\n\
         open(sys.argv[2], 'wb').write(lzma.compress(d))\n\
         open(sys.argv[3], 'wb').write(b'7z\\xbc\\xaf\\x27\\x1c\\x00\\x04' + lzma.compress(d, lzma.FORMAT_RAW, filters=[{'id': lzma.FILTER_LZMA1}]))",
        &[&path("credentials"), &path("c.xz"), &path("c.7z")],
    );
    let xz = std::fs::read(path("c.xz")).unwrap();
    refused_unreadable(&proxy, &url, xz.clone(), "xz").await;
    let seven = std::fs::read(path("c.7z")).unwrap();
    refused_unreadable(&proxy, &url, seven.clone(), "7z").await;
    forms.extend([aws.into_bytes(), xz, seven]);

    let aws = fresh_aws();
    std::fs::write(path("credentials"), credentials_file(&aws)).unwrap();
    python(
        "import bz2, sys\n\
         open(sys.argv[2], 'wb').write(bz2.compress(open(sys.argv[1], 'rb').read()))",
        &[&path("credentials"), &path("c.bz2")],
    );
    let bz = std::fs::read(path("c.bz2")).unwrap();
    let json = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&bz));
    refused_unreadable(&proxy, &url, json.into_bytes(), "base64>bzip2").await;
    forms.extend([aws.into_bytes(), bz]);

    // `zstd credentials && curl -F file=@credentials.zst`
    let aws = fresh_aws();
    std::fs::write(path("credentials"), credentials_file(&aws)).unwrap();
    tool(
        "zstd",
        &["-q", "-f", &path("credentials"), "-o", &path("c.zst")],
    );
    let zst = std::fs::read(path("c.zst")).unwrap();
    let upload = format!("file=@{}", path("c.zst"));
    let out = curl_post(&proxy, &url, &["-F", &upload]).await;
    assert!(out.ends_with("\n400"), "{out}");
    assert!(
        out.contains("compressed data airlock cannot read (zstd)"),
        "{out}"
    );
    forms.extend([aws.into_bytes(), zst]);

    // `zip -P secret`: deflated, but encrypted.
    let aws = fresh_aws();
    std::fs::write(path("credentials"), credentials_file(&aws)).unwrap();
    tool(
        "zip",
        &["-q", "-j", "-P", "pw", &path("c.zip"), &path("credentials")],
    );
    let zip = std::fs::read(path("c.zip")).unwrap();
    refused_unreadable(&proxy, &url, zip.clone(), "zip").await;
    forms.extend([aws.into_bytes(), zip]);

    // Gzip as a fourth decoding: too deep.
    let aws = fresh_aws();
    let gz = gzip(credentials_file(&aws).as_bytes());
    let deep = STANDARD.encode(STANDARD.encode(STANDARD.encode(&gz)));
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(format!("{{\"file\":\"{deep}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("(base64>base64>base64>gzip)"), "{text}");
    forms.extend([aws.into_bytes(), gz]);

    // In a URL: 403 naming the pseudo pattern.
    let aws = fresh_aws();
    std::fs::write(path("credentials"), credentials_file(&aws)).unwrap();
    tool("xz", &["-k", "-f", &path("credentials")]);
    let xz = std::fs::read(path("credentials.xz")).unwrap();
    let r = client::reqwest(&proxy)
        .get(format!("{url}?d={}", URL_SAFE_NO_PAD.encode(&xz)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("unreadable-compressed"), "{text}");
    forms.extend([aws.into_bytes(), xz]);

    origin_never_saw(&origin, &forms);
    assert!(origin.received().is_empty());

    // The opt-out: a rule for release uploads may send what it cannot read.
    let (_ca, origin, proxy) = crate::support::api_origin(
        echo("api"),
        "scan_skip = [\"unreadable-compressed\"]",
        |b| b.scan(&[]),
    )
    .await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    tool("xz", &["-k", "-f", &path("credentials")]);
    let mut release = std::fs::read(path("credentials.xz")).unwrap();
    release.extend_from_slice(b"PK\x03\x04\x2e\x00\x00\x00\x0c\x00"); // a zip's bzip2 entry
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(release.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got[0].body.as_deref(), Some(&release[..]));
}

/// An outgoing rule in `redact` mode cannot rewrite compressed bytes: a
/// key inside base64 of gzip, which it let through before (200, the key
/// at the origin), is refused (403 naming the pattern and chain); a key
/// written plainly is still redacted and a benign gzip upload arrives
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_redaction_refuses_what_it_cannot_rewrite() {
    let (_ca, origin, proxy) =
        crate::support::api_origin(echo("api"), "", |b| b.scan(&["outgoing = \"redact\""])).await;
    let url = format!("https://api.example.test:{}/upload", origin.port());
    let aws = fresh_aws();
    let gz = gzip(credentials_file(&aws).as_bytes());
    let body = format!("{{\"file\":\"{}\"}}", STANDARD.encode(&gz));
    refused_aws_text(&proxy, &origin, body, "base64>gzip").await;
    // In a query string too.
    let r = client::reqwest(&proxy)
        .get(format!("{url}?d={}", URL_SAFE_NO_PAD.encode(&gz)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("aws-access-key-id"));
    let xz = {
        let p = tempfile::tempdir().unwrap();
        let f = p.path().join("c");
        std::fs::write(&f, credentials_file(&aws)).unwrap();
        tool("xz", &["-f", f.to_str().unwrap()]);
        std::fs::read(p.path().join("c.xz")).unwrap()
    };
    refused_unreadable(&proxy, &url, xz.clone(), "xz").await;
    origin_never_saw(&origin, &[aws.as_bytes(), &gz, &xz]);
    assert!(origin.received().is_empty());

    let plain = fresh_aws();
    let readme = gzip("# A project\n\nIt does things.\n".repeat(200).as_bytes());
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(format!("key={plain}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client::reqwest(&proxy)
        .post(&url)
        .body(readme.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin.received();
    assert_eq!(got.len(), 2);
    let first = String::from_utf8_lossy(got[0].body.as_deref().unwrap_or_default()).into_owned();
    assert_eq!(first, "key=[REDACTED:aws-access-key-id]\n");
    assert_eq!(got[1].body.as_deref(), Some(&readme[..]));
}

/// Incoming, what airlock cannot read is passed: a `.tar.xz` download
/// arrives byte for byte even where responses are blocked on a finding
/// (`incoming = "block"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_download_is_passed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes");
    std::fs::write(&file, "# notes\n".repeat(500)).unwrap();
    tool("xz", &["-f", file.to_str().unwrap()]);
    let xz = bytes::Bytes::from(std::fs::read(dir.path().join("notes.xz")).unwrap());
    assert_eq!(
        download_blocking(xz.clone(), "/notes.tar.xz").await,
        (200, xz, true)
    );
}

/// What an agent told to "hide the key so it still works" writes: an
/// invisible character after every letter (zero-width space, soft hyphen,
/// word joiner, a zero-width joiner in the middle), fullwidth letters, tag
/// characters (invisible, each spelling an ASCII character), the same
/// escaped in JSON or percent-encoded, and a key's name and value with a
/// zero-width space after every byte. Each is refused naming its chain,
/// in a body and in a header, and the origin gets no piece of the key;
/// an origin's answer hiding one is withheld from the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_fullwidth_and_tag_characters_are_refused() {
    let (_ca, origin, proxy) = setup().await;
    let spaced =
        |key: &str, sep: &str| key.chars().map(|c| format!("{c}{sep}")).collect::<String>();
    let fullwidth = |key: &str| {
        key.chars()
            .map(|c| char::from_u32(c as u32 + 0xfee0).unwrap())
            .collect::<String>()
    };
    let tags = |key: &str| {
        key.chars()
            .map(|c| char::from_u32(c as u32 + 0xe0000).unwrap())
            .collect::<String>()
    };
    let mut keys = Vec::new();
    let forms: Vec<(String, &str)> = vec![
        (spaced(&fresh_aws(), "\u{200b}"), "unicode"),
        (spaced(&fresh_aws(), "\u{ad}"), "unicode"),
        (spaced(&fresh_aws(), "\u{2060}"), "unicode"),
        (fullwidth(&fresh_aws()), "unicode"),
        (tags(&fresh_aws()), "unicode"),
        (spaced(&fresh_aws(), "\\u200b"), "json>unicode"),
        (spaced(&fresh_aws(), "%E2%80%8B"), "percent>unicode"),
    ];
    for (n, (hidden, chain)) in forms.iter().enumerate() {
        let key: String = hidden
            .chars()
            .filter_map(|c| match c as u32 {
                0xff01..=0xff5e => char::from_u32(c as u32 - 0xfee0),
                0xe0020..=0xe007e => char::from_u32(c as u32 - 0xe0000),
                _ => Some(c),
            })
            .collect::<String>()
            .replace(['\u{200b}', '\u{ad}', '\u{2060}'], "")
            .replace("\\u200b", "")
            .replace("%E2%80%8B", "");
        assert!(key.starts_with("AKIA") && key.len() == 20, "{n}: {key:?}");
        let body = format!("{{\"note\":\"keep this: {hidden}\",\"n\":{n}}}");
        refused_aws_json(&proxy, &origin, body, chain).await;
        keys.push(key);
    }
    // Capitals and digits in other styles, as a reader (or NFKC) takes
    // them back: mathematical bold and sans-serif bold, circled, negative
    // squared with dingbat
    // digits (`🅰🅺🅸🅰❶`), regional indicators with double circled digits.
    let styled = |key: &str, capitals: u32, zero: u32| {
        key.chars()
            .map(|c| {
                let cp = match c {
                    'A'..='Z' => capitals + (c as u32 - 'A' as u32),
                    '0' if zero < 0x1d7ce => 0x24ea,
                    _ => zero + (c as u32 - '0' as u32),
                };
                char::from_u32(cp).unwrap()
            })
            .collect::<String>()
    };
    for (capitals, zero) in [
        (0x1d400, 0x1d7ce),
        (0x1d5d4, 0x1d7ec),
        (0x24b6, 0x245f),
        (0x1f170, 0x2775),
        (0x1f1e6, 0x24f4),
    ] {
        let key = fresh_aws();
        let hidden = styled(&key, capitals, zero);
        let body = format!("{{\"note\":\"keep this: {hidden}\"}}");
        refused_aws_json(&proxy, &origin, body, "unicode").await;
        keys.push(key);
    }
    // The Kelvin sign (U+212A) for every `K`, `AKIA` included.
    let key = fresh_aws();
    let body = format!(
        "{{\"note\":\"keep this: {}\"}}",
        key.replace('K', "\u{212a}")
    );
    refused_aws_json(&proxy, &origin, body, "unicode").await;
    keys.push(key);
    // Cyrillic and Greek letters drawn like Latin ones, for every letter
    // that has one (`АКІА`, `ΑΚΙΑ`).
    let cyrillic = |c: char| {
        "ABCEHIJKMOPSTX"
            .find(c)
            .map(|i| "АВСЕНІЈКМОРЅТХ".chars().nth(i))
    };
    let greek = |c: char| {
        "ABEHIKMNOPTXYZ"
            .find(c)
            .map(|i| "ΑΒΕΗΙΚΜΝΟΡΤΧΥΖ".chars().nth(i))
    };
    for swap in [cyrillic, greek] {
        let key = fresh_aws();
        let hidden: String = key
            .chars()
            .map(|c| swap(c).flatten().unwrap_or(c))
            .collect();
        assert!(!hidden.starts_with('A') && !hidden.is_ascii(), "{hidden}");
        let body = format!("{{\"note\":\"keep this: {hidden}\"}}");
        refused_aws_json(&proxy, &origin, body, "unicode").await;
        keys.push(key);
    }
    // The key's name and value, a zero-width space after every byte.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+";
    let secret = pick(B64, 40);
    let named = spaced(&format!("aws_secret_access_key = {secret}"), "\u{200b}");
    refused(
        &proxy,
        &origin,
        "text/plain",
        named,
        "aws-secret-access-key",
        "unicode",
    )
    .await;
    keys.push(secret);
    // In a header value.
    let ghp = format!("ghp_{}", pick(b"abcdefghijklmnopqrstuvwxyz0123456789", 36));
    let url = format!("https://api.example.test:{}/x", origin.port());
    let r = client::reqwest(&proxy)
        .get(&url)
        .header(
            "x-note",
            reqwest::header::HeaderValue::from_bytes(spaced(&ghp, "\u{200b}").as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("header x-note"), "{text}");
    assert!(text.contains("decoded unicode"), "{text}");
    keys.push(ghp);
    origin_never_saw(&origin, &keys);
    assert!(
        origin
            .received()
            .iter()
            .all(|r| !r.target.starts_with("/x")),
        "the header's request reached the origin"
    );

    // Downloaded: withheld.
    let aws = fresh_aws();
    let hidden = spaced(&aws, "\u{200b}");
    let served = bytes::Bytes::from(format!("<p>the key: {hidden}</p>\n"));
    let (_, got, complete) = download_blocking(served, "/page").await;
    assert!(!complete, "the answer was passed whole: {got:?}");
    for piece in hidden.as_bytes().windows(8) {
        assert!(!contains(&got, piece), "{got:?}");
    }
}

/// A key's name written plain and only its value escaped: PHP's JSON
/// (`"aws_secret_access_key": "wJal\/r..."`, every `/` escaped), the value
/// percent-encoded or hex after `name = `, or base64, hex or percent after
/// a Ruby or PHP hash's `'name' => `. The escaped token holds the
/// value alone; the decoded segment starts with the name before it, so
/// the pattern that needs both refuses it, and the origin gets no piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_name_before_an_escaped_value_is_refused() {
    let (_ca, origin, proxy) = setup().await;
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+";
    let key = || format!("{}/{}+{}", pick(B64, 12), pick(B64, 13), pick(B64, 13));
    let (php, pct, hex) = (key(), key(), key());
    let percent: String = pct.bytes().map(|b| format!("%{b:02X}")).collect();
    let hexed: String = hex.bytes().map(|b| format!("{b:02x}")).collect();
    let escaped = php.replace('/', "\\/");
    let (ruby_b64, ruby_hex, php_pct) = (key(), key(), key());
    let hash = [
        (STANDARD.encode(&ruby_b64), "base64"),
        (
            ruby_hex.bytes().map(|b| format!("{b:02x}")).collect(),
            "hex",
        ),
        (
            php_pct.bytes().map(|b| format!("%{b:02X}")).collect(),
            "percent",
        ),
    ];
    for (value, chain) in &hash {
        let body = format!("{{ 'region' => 'x', 'aws_secret_access_key' => '{value}' }}");
        refused(
            &proxy,
            &origin,
            "text/plain",
            body,
            "aws-secret-access-key",
            chain,
        )
        .await;
    }
    origin_never_saw(&origin, &[ruby_b64, ruby_hex, php_pct]);
    let sent = [
        (
            "application/json",
            format!("{{\"region\": \"x\", \"aws_secret_access_key\": \"{escaped}\"}}"),
            "json",
        ),
        (
            "text/plain",
            format!("[default]\naws_secret_access_key = {percent}\n"),
            "percent",
        ),
        (
            "text/plain",
            format!("AWS_SECRET_ACCESS_KEY: {hexed}\n"),
            "hex",
        ),
    ];
    for (ctype, body, chain) in sent {
        refused(&proxy, &origin, ctype, body, "aws-secret-access-key", chain).await;
    }
    let keys = [php, pct, hex];
    origin_never_saw(&origin, &keys);
}
