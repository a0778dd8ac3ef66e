//! The recall / precision corpus (issue 11): fresh random credentials of
//! ~40 providers, each written into ~10 kinds of carrier (env file, shell
//! export, JSON, YAML, INI, URL query, HTTP header, Python, JavaScript, log
//! line, Kubernetes manifest), plus near-miss negatives in the same carriers
//! (documentation examples, placeholders, checksum-invalid look-alikes,
//! hashes, UUIDs, ids).
//!
//! Values are generated on every run with the provider's alphabet, length
//! and checksum (never real ones); the seed is printed so a failure can be
//! replayed with `AIRLOCK_CORPUS_SEED`.

use std::{collections::BTreeMap, fmt::Write as _};

use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::checks::tests::{b58check, with_iban_check, with_luhn};
use super::*;

/// xorshift64*: small, seedable, good enough to draw characters.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn from(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| char::from(a[self.below(a.len())])).collect()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

pub(crate) const HEX: &str = "0123456789abcdef";
pub(crate) const HEXU: &str = "0123456789ABCDEF";
pub(crate) const ALNUM: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(crate) const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(crate) const URLSAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const UPPER32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A random payment card number of a random network, formatted plainly or
/// in groups.
pub(crate) fn card(r: &mut Rng) -> String {
    let (prefix, len) = *[
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("37", 15),
        ("34", 15),
        ("6011", 16),
        ("65", 16),
        ("3530", 16),
        ("36", 14),
        ("62", 16),
    ]
    .get(r.below(11))
    .unwrap_or(&("4", 16));
    let body = format!("{prefix}{}", r.from("0123456789", len - prefix.len() - 1));
    let n = with_luhn(&body);
    let sep = r.pick(&["", " ", "-"]);
    if sep.is_empty() {
        return n;
    }
    let groups: &[usize] = match len {
        15 => &[4, 6, 5],
        14 => &[4, 6, 4],
        _ => &[4, 4, 4, 4],
    };
    let mut out = String::new();
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&n[at..at + g]);
        at += g;
    }
    out
}

pub(crate) fn iban(r: &mut Rng) -> String {
    let (cc, bban) = match r.below(4) {
        0 => ("DE", r.from("0123456789", 18)),
        1 => (
            "GB",
            format!(
                "{}{}",
                r.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                r.from("0123456789", 14)
            ),
        ),
        2 => ("FR", r.from("0123456789", 23)),
        _ => (
            "NL",
            format!(
                "{}{}",
                r.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                r.from("0123456789", 10)
            ),
        ),
    };
    with_iban_check(cc, &bban)
}

pub(crate) fn github(r: &mut Rng, prefix: &str) -> String {
    let payload = r.from(ALNUM, 30);
    let mut crc = flate2::Crc::new();
    crc.update(payload.as_bytes());
    let sum = super::patterns::base62_6(crc.sum());
    format!("{prefix}{payload}{}", String::from_utf8_lossy(&sum))
}

fn wif(r: &mut Rng) -> String {
    let mut p = vec![0x80];
    p.extend(r.bytes(32));
    if r.below(2) == 0 {
        p.push(1);
    }
    b58check(&p)
}

fn xprv(r: &mut Rng) -> String {
    let mut x = vec![0x04, 0x88, 0xAD, 0xE4];
    x.extend(r.bytes(9));
    x.extend(r.bytes(32));
    x.push(0);
    x.extend(r.bytes(32));
    b58check(&x)
}

fn mnemonic(r: &mut Rng) -> String {
    let n = if r.below(2) == 0 { 16 } else { 32 };
    bip39::Mnemonic::from_entropy(&r.bytes(n))
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// What a credential looks like in a carrier: the variable names it is
/// stored under, and its value. `secret` is the part that must be found.
struct Cred {
    provider: &'static str,
    /// (ENV_NAME, value) pairs written in order; the last one is the secret
    /// unless `whole` is set.
    vars: Vec<(String, String)>,
    secret: String,
    /// A form that only exists whole (URL with credentials, PEM block,
    /// header line): written as-is, carriers only wrap it.
    whole: Option<String>,
}

fn single(provider: &'static str, name: &str, value: String) -> Cred {
    Cred {
        provider,
        vars: vec![(name.to_string(), value.clone())],
        secret: value,
        whole: None,
    }
}

const PROVIDERS: usize = 41;

fn cred(i: usize, r: &mut Rng) -> Cred {
    match i {
        0 => single(
            "aws-access-key-id",
            "AWS_ACCESS_KEY_ID",
            format!("AKIA{}", r.from(UPPER32, 16)),
        ),
        1 => {
            let id = format!("AKIA{}", r.from(UPPER32, 16));
            let secret = r.from(B64, 40);
            Cred {
                provider: "aws-secret-access-key",
                vars: vec![
                    ("AWS_ACCESS_KEY_ID".into(), id),
                    ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
                ],
                secret,
                whole: None,
            }
        }
        2 => single("github-classic", "GITHUB_TOKEN", github(r, "ghp_")),
        3 => single(
            "github-fine-grained",
            "GH_TOKEN",
            format!("github_pat_11{}_{}", r.from(ALNUM, 20), r.from(ALNUM, 59)),
        ),
        4 => single(
            "gitlab",
            "GITLAB_TOKEN",
            format!("glpat-{}", r.from(URLSAFE, 20)),
        ),
        5 => single(
            "slack-bot",
            "SLACK_BOT_TOKEN",
            format!(
                "xoxb-{}-{}-{}",
                r.from("0123456789", 12),
                r.from("0123456789", 13),
                r.from(ALNUM, 24)
            ),
        ),
        6 => single(
            "slack-webhook",
            "SLACK_WEBHOOK_URL",
            format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                r.from(UPPER32, 8),
                r.from(UPPER32, 10),
                r.from(ALNUM, 24)
            ),
        ),
        7 => single(
            "stripe",
            "STRIPE_SECRET_KEY",
            format!("sk_live_{}", r.from(ALNUM, 99)),
        ),
        8 => single(
            "openai",
            "OPENAI_API_KEY",
            format!(
                "sk-proj-{}T3BlbkFJ{}",
                r.from(URLSAFE, 74),
                r.from(URLSAFE, 74)
            ),
        ),
        9 => single(
            "anthropic",
            "ANTHROPIC_API_KEY",
            format!("sk-ant-api03-{}AA", r.from(URLSAFE, 93)),
        ),
        10 => single(
            "huggingface",
            "HF_TOKEN",
            format!(
                "hf_{}",
                r.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 34)
            ),
        ),
        11 => single(
            "google-api-key",
            "GOOGLE_API_KEY",
            format!("AIza{}", r.from(URLSAFE, 35)),
        ),
        12 => single(
            "gcp-oauth",
            "GOOGLE_CLIENT_SECRET",
            format!("GOCSPX-{}", r.from(URLSAFE, 28)),
        ),
        13 => {
            let key = format!("{}==", r.from(B64, 86));
            let conn = format!(
                "DefaultEndpointsProtocol=https;AccountName={};AccountKey={key};EndpointSuffix=core.windows.net",
                r.from("abcdefghijklmnopqrstuvwxyz", 10)
            );
            Cred {
                provider: "azure-storage",
                vars: vec![("AZURE_STORAGE_CONNECTION_STRING".into(), conn)],
                secret: key,
                whole: None,
            }
        }
        14 => {
            let sig = format!("{}%3D", r.from(ALNUM, 43));
            let url = format!(
                "https://{}.blob.core.windows.net/data/report.csv?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-31T00:00:00Z&st=2026-01-01T00:00:00Z&spr=https&sig={sig}",
                r.from("abcdefghijklmnopqrstuvwxyz", 10)
            );
            Cred {
                provider: "azure-sas",
                vars: vec![("AZURE_BLOB_SAS_URL".into(), url)],
                secret: sig,
                whole: None,
            }
        }
        15 => {
            let sid = format!("AC{}", r.from(HEX, 32));
            let token = r.from(HEX, 32);
            Cred {
                provider: "twilio",
                vars: vec![
                    ("TWILIO_ACCOUNT_SID".into(), sid),
                    ("TWILIO_AUTH_TOKEN".into(), token.clone()),
                ],
                secret: token,
                whole: None,
            }
        }
        16 => single(
            "sendgrid",
            "SENDGRID_API_KEY",
            format!("SG.{}.{}", r.from(URLSAFE, 22), r.from(URLSAFE, 43)),
        ),
        17 => single(
            "mailgun",
            "MAILGUN_API_KEY",
            format!("key-{}", r.from(HEX, 32)),
        ),
        18 => {
            let id = STANDARD
                .encode(format!("1{}", r.from("0123456789", 18)))
                .trim_end_matches('=')
                .to_string();
            single(
                "discord-bot",
                "DISCORD_BOT_TOKEN",
                format!("{id}.{}.{}", r.from(URLSAFE, 6), r.from(URLSAFE, 38)),
            )
        }
        19 => single(
            "telegram",
            "TELEGRAM_BOT_TOKEN",
            format!("{}:AA{}", r.from("0123456789", 10), r.from(URLSAFE, 33)),
        ),
        20 => {
            let body: String = (0..8).map(|_| format!("{}\n", r.from(B64, 64))).collect();
            let pem =
                format!("-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----");
            Cred {
                provider: "pem-private-key",
                vars: vec![],
                secret: "-----BEGIN RSA PRIVATE KEY-----".into(),
                whole: Some(pem),
            }
        }
        21 => single("npm", "NPM_TOKEN", github(r, "npm_")),
        22 => single(
            "digitalocean",
            "DIGITALOCEAN_TOKEN",
            format!("dop_v1_{}", r.from(HEX, 64)),
        ),
        23 => single("datadog-api", "DD_API_KEY", r.from(HEX, 32)),
        24 => single("datadog-app", "DD_APP_KEY", r.from(HEX, 40)),
        25 => single(
            "atlassian",
            "JIRA_API_TOKEN",
            format!("ATATT3{}={}", r.from(URLSAFE, 180), r.from(HEXU, 8)),
        ),
        26 => {
            let user = r.from("abcdefghijklmnopqrstuvwxyz", 8);
            let pass = r.from(ALNUM, 20);
            let url = format!("https://{user}:{pass}@git.corp.example.test/repo.git");
            Cred {
                provider: "basic-auth-url",
                vars: vec![("GIT_REMOTE_URL".into(), url)],
                secret: pass,
                whole: None,
            }
        }
        27 => {
            let user = r.from("abcdefghijklmnopqrstuvwxyz", 8);
            let pass = r.from(ALNUM, 20);
            let b = STANDARD.encode(format!("{user}:{pass}"));
            Cred {
                provider: "basic-auth-header",
                vars: vec![],
                secret: b.clone(),
                whole: Some(format!("Authorization: Basic {b}")),
            }
        }
        28 => single(
            "vault",
            "VAULT_TOKEN",
            format!("hvs.{}", r.from(URLSAFE, 90)),
        ),
        29 => {
            let pass = r.from(ALNUM, 16);
            Cred {
                provider: "postgres-url",
                vars: vec![(
                    "DATABASE_URL".into(),
                    format!("postgres://app:{pass}@db.internal.test:5432/app"),
                )],
                secret: pass,
                whole: None,
            }
        }
        30 => single(
            "shopify",
            "SHOPIFY_ACCESS_TOKEN",
            format!("shpat_{}", r.from(HEX, 32)),
        ),
        31 => single(
            "doppler",
            "DOPPLER_TOKEN",
            format!("dp.st.prd.{}", r.from(ALNUM, 40)),
        ),
        32 => single(
            "linear",
            "LINEAR_API_KEY",
            format!("lin_api_{}", r.from(ALNUM, 40)),
        ),
        33 => single("jwt", "ID_TOKEN", {
            let h = STANDARD
                .encode(r#"{"alg":"HS256","typ":"JWT"}"#)
                .trim_end_matches('=')
                .to_string();
            let p = STANDARD
                .encode(format!(
                    r#"{{"sub":"{}","iat":1700000000}}"#,
                    r.from(HEX, 12)
                ))
                .trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_");
            format!("{h}.{p}.{}", r.from(URLSAFE, 43))
        }),
        34 => single("payment-card", "CARD_NUMBER", card(r)),
        35 => single("iban", "IBAN", iban(r)),
        36 => single(
            "ethereum-private-key",
            "ETH_PRIVATE_KEY",
            format!("0x{}", r.from(HEX, 64)),
        ),
        37 => single("bip32-xprv", "WALLET_XPRV", xprv(r)),
        38 => single("bitcoin-wif", "BTC_WIF_PRIVATE_KEY", wif(r)),
        39 => single("bip39-mnemonic", "WALLET_MNEMONIC", mnemonic(r)),
        _ => single(
            "pypi",
            "PYPI_TOKEN",
            format!("pypi-AgEIcHlwaS5vcmc{}", r.from(URLSAFE, 120)),
        ),
    }
}

const CARRIERS: &[&str] = &[
    "env", "shell", "json", "yaml", "ini", "url", "header", "python", "js", "log", "k8s",
    "k8s-data",
];

/// Samples per provider and carrier.
const REPS: usize = 2;

fn lower_camel(env: &str) -> String {
    let mut out = String::new();
    for (i, w) in env.split('_').enumerate() {
        let w = w.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&w);
        } else {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(c);
            }
        }
    }
    out
}

/// Write `vars` in `carrier`. A few lines of neutral text around.
fn render(carrier: &str, vars: &[(String, String)], r: &mut Rng) -> String {
    let mut s = String::new();
    let pad = format!("request_id={} status=ok\n", r.from(HEX, 12));
    match carrier {
        "env" => {
            s.push_str("# app settings\nPORT=8080\n");
            for (k, v) in vars {
                let _ = writeln!(s, "{k}={v}");
            }
        }
        "shell" => {
            s.push_str("#!/bin/sh\nset -e\n");
            for (k, v) in vars {
                let _ = writeln!(s, "export {k}=\"{v}\"");
            }
            s.push_str("exec ./run.sh\n");
        }
        "json" => {
            s.push_str("{\"service\": \"billing\", ");
            let body: Vec<String> = vars
                .iter()
                .map(|(k, v)| format!("\"{}\": \"{v}\"", lower_camel(k)))
                .collect();
            s.push_str(&body.join(", "));
            s.push_str(", \"retries\": 3}\n");
        }
        "yaml" => {
            s.push_str("service:\n  name: billing\n  env:\n");
            for (k, v) in vars {
                let _ = writeln!(s, "    {}: \"{v}\"", k.to_ascii_lowercase());
            }
        }
        "ini" => {
            s.push_str("[default]\nregion = eu-west-1\n");
            for (k, v) in vars {
                let _ = writeln!(s, "{} = {v}", k.to_ascii_lowercase());
            }
        }
        "url" => {
            let q: Vec<String> = vars
                .iter()
                .map(|(k, v)| {
                    let enc: String = percent_encoding::utf8_percent_encode(
                        v,
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string();
                    // Tokens travel as they are when they need no escaping.
                    let v = if v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        v.clone()
                    } else {
                        enc
                    };
                    format!("{}={v}", k.to_ascii_lowercase())
                })
                .collect();
            let _ = writeln!(
                s,
                "GET https://api.example.test/v1/export?format=csv&{} HTTP/1.1",
                q.join("&")
            );
        }
        "header" => {
            s.push_str("POST /v1/items HTTP/1.1\r\nHost: api.example.test\r\n");
            for (k, v) in vars {
                let _ = write!(s, "X-{}: {v}\r\n", k.replace('_', "-"));
            }
            s.push_str("Content-Length: 0\r\n\r\n");
        }
        "python" => {
            s.push_str("import os\n\n");
            for (k, v) in vars {
                let _ = writeln!(s, "{k} = \"{v}\"");
            }
            s.push_str("\ndef main():\n    pass\n");
        }
        "js" => {
            s.push_str("'use strict';\n");
            for (k, v) in vars {
                let _ = writeln!(s, "const {} = '{v}';", lower_camel(k));
            }
            s.push_str("module.exports = { run };\n");
        }
        "log" => {
            for (k, v) in vars {
                let _ = writeln!(
                    s,
                    "2026-12-02T12:00:{:02}Z INFO worker started with {}={v} pid={}",
                    r.below(60),
                    k.to_ascii_lowercase(),
                    r.below(99999)
                );
            }
        }
        "k8s-data" => {
            s.push_str(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\ndata:\n",
            );
            for (k, v) in vars {
                let _ = writeln!(s, "  {k}: {}", STANDARD.encode(v));
            }
        }
        _ => {
            s.push_str(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ntype: Opaque\nstringData:\n",
            );
            for (k, v) in vars {
                let _ = writeln!(s, "  {k}: \"{v}\"");
            }
        }
    }
    s.push_str(&pad);
    s
}

/// Wrap a whole-form credential (PEM, header line) in a carrier.
fn render_whole(carrier: &str, whole: &str) -> String {
    match carrier {
        "json" => format!(
            "{{\"value\": {}}}\n",
            serde_json::Value::String(whole.into())
        ),
        "yaml" | "k8s" => format!("data: |\n  {}\n", whole.replace('\n', "\n  ")),
        "k8s-data" => format!("data:\n  value: {}\n", STANDARD.encode(whole)),
        "python" => format!("VALUE = \"\"\"{whole}\"\"\"\n"),
        "js" => format!("const value = `{whole}`;\n"),
        "log" => format!("2026-12-02T12:00:00Z DEBUG {whole}\n"),
        _ => format!("{whole}\n"),
    }
}

struct Sample {
    provider: &'static str,
    carrier: &'static str,
    text: String,
    /// The secret's byte range (for positives).
    secret: Option<std::ops::Range<usize>>,
}

fn positives(r: &mut Rng) -> Vec<Sample> {
    let mut out = Vec::new();
    for i in (0..PROVIDERS).flat_map(|i| std::iter::repeat_n(i, REPS)) {
        for carrier in CARRIERS {
            let c = cred(i, r);
            let text = match &c.whole {
                Some(w) => render_whole(carrier, w),
                None => render(carrier, &c.vars, r),
            };
            // Find the secret as written (JSON escapes `\n` in PEM blocks).
            let needle = if *carrier == "k8s-data" {
                // The whole value is encoded; a finding anywhere in it counts.
                let plain = match &c.whole {
                    Some(w) => w.clone(),
                    None => c.vars.last().map(|(_, v)| v.clone()).unwrap_or_default(),
                };
                STANDARD.encode(plain)
            } else if *carrier == "url"
                && c.whole.is_none()
                && !c
                    .secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                percent_encoding::utf8_percent_encode(&c.secret, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            } else {
                c.secret.clone()
            };
            let secret = text.find(&needle).map(|s| s..s + needle.len());
            assert!(
                secret.is_some(),
                "{}/{carrier}: secret not in text",
                c.provider
            );
            out.push(Sample {
                provider: c.provider,
                carrier,
                text,
                secret,
            });
        }
    }
    out
}

/// Near misses: values a precise scanner must leave alone.
fn negatives(r: &mut Rng) -> Vec<Sample> {
    let mut vals: Vec<(&'static str, String, String)> = vec![
        (
            "doc-example",
            "AWS_ACCESS_KEY_ID".into(),
            "AKIAIOSFODNN7EXAMPLE".into(),
        ),
        (
            "doc-example",
            "AWS_SECRET_ACCESS_KEY".into(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ),
        (
            "placeholder",
            "GITHUB_TOKEN".into(),
            "your_api_key_here".into(),
        ),
        ("placeholder", "API_TOKEN".into(), "<TOKEN>".into()),
        (
            "placeholder",
            "SECRET_KEY".into(),
            "xxxxxxxxxxxxxxxxxxxxxxxx".into(),
        ),
        ("placeholder", "GH_TOKEN".into(), "${GITHUB_TOKEN}".into()),
        (
            "placeholder",
            "STRIPE_SECRET_KEY".into(),
            "sk_live_...".into(),
        ),
        (
            "placeholder",
            "DD_API_KEY".into(),
            "<your-datadog-api-key>".into(),
        ),
        (
            "placeholder",
            "DATABASE_URL".into(),
            "postgres://user:${DB_PASSWORD}@db/app".into(),
        ),
    ];
    for _ in 0..4 {
        let mut bad = github(r, "ghp_").into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
        vals.push((
            "bad-checksum",
            "GITHUB_TOKEN".into(),
            String::from_utf8_lossy(&bad).into(),
        ));
        let mut c: Vec<u8> = card(r).into_bytes();
        let l = c.len() - 1;
        c[l] = b'0' + (c[l] - b'0' + 1) % 10;
        vals.push((
            "bad-luhn",
            "CARD_NUMBER".into(),
            String::from_utf8_lossy(&c).into(),
        ));
        let mut ib = iban(r).into_bytes();
        let l = ib.len() - 1;
        ib[l] = b'0' + (ib[l].wrapping_sub(b'0') + 1) % 10;
        vals.push((
            "bad-mod97",
            "IBAN".into(),
            String::from_utf8_lossy(&ib).into(),
        ));
        let mut x = xprv(r).into_bytes();
        x[20] = if x[20] == b'z' { b'y' } else { b'z' };
        vals.push((
            "bad-base58check",
            "WALLET_XPRV".into(),
            String::from_utf8_lossy(&x).into(),
        ));
        // Two words swapped. A 12-word checksum is 4 bits (a 24-word one,
        // 8), and the check also accepts a valid 12..=21-word start, so a
        // swap still verifies now and then: keep only look-alikes that fail.
        let mut words: Vec<String> = mnemonic(r).split(' ').map(str::to_string).collect();
        words.swap(0, 1);
        let phrase = words.join(" ");
        if !super::checks::bip39(phrase.as_bytes()) {
            vals.push(("bad-bip39", "WALLET_MNEMONIC".into(), phrase));
        }
        vals.push(("sha256", "CHECKSUM".into(), r.from(HEX, 64)));
        vals.push(("sha1", "GIT_COMMIT".into(), r.from(HEX, 40)));
        vals.push(("md5", "ETAG".into(), r.from(HEX, 32)));
        vals.push((
            "uuid",
            "REQUEST_ID".into(),
            format!(
                "{}-{}-4{}-a{}-{}",
                r.from(HEX, 8),
                r.from(HEX, 4),
                r.from(HEX, 3),
                r.from(HEX, 3),
                r.from(HEX, 12)
            ),
        ));
        vals.push((
            "snowflake",
            "MESSAGE_ID".into(),
            format!("1{}", r.from("0123456789", 18)),
        ));
        vals.push((
            "order-id",
            "CARD_ORDER_ID".into(),
            format!("9{}", r.from("0123456789", 15)),
        ));
        vals.push((
            "timestamp",
            "CARD_UPDATED_MS".into(),
            format!("17{}", r.from("0123456789", 11)),
        ));
        vals.push((
            "hex-id",
            "ETH_TX_HASH".into(),
            format!("0x{}", r.from(HEX, 64)),
        ));
    }
    let mut out = Vec::new();
    for (kind, name, value) in vals {
        for carrier in CARRIERS {
            out.push(Sample {
                provider: kind,
                carrier,
                text: render(carrier, &[(name.clone(), value.clone())], r),
                secret: None,
            });
        }
    }
    out
}

fn seed() -> u64 {
    std::env::var("AIRLOCK_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

/// Precise mode (incoming redaction, `airlock scan`): verified findings only.
fn counts(f: &Finding) -> bool {
    f.confidence == scanner::Confidence::Verified
}

#[test]
fn corpus_recall_and_precision() {
    let seed = seed();
    eprintln!("corpus seed {seed} (replay with AIRLOCK_CORPUS_SEED={seed})");
    let mut r = Rng::new(seed);
    let sc = Scanner::new(super::tests::rules(), &[]).unwrap_or_else(|e| panic!("{e}"));
    let pos = positives(&mut r);
    let neg = negatives(&mut r);

    let (mut tp, mut fp, mut total) = (0usize, 0usize, 0usize);
    let mut misses: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut fps: BTreeMap<String, usize> = BTreeMap::new();
    for s in &pos {
        let found: Vec<Finding> = sc
            .scan(s.text.as_bytes())
            .into_iter()
            .filter(counts)
            .collect();
        let want = s.secret.clone().unwrap_or(0..0);
        let (ws, we) = (want.start as u64, want.end as u64);
        let hit = found.iter().any(|f| f.start < we && f.end > ws);
        total += 1;
        if hit {
            tp += 1;
        } else {
            *misses.entry((s.provider, s.carrier)).or_default() += 1;
        }
        // A finding elsewhere in a positive sample is a false positive,
        // except the AWS key id written next to its secret (a finding in
        // its own right, also when both are base64 in a Secret's data).
        for f in found.iter().filter(|f| f.end <= ws || f.start >= we) {
            let other = s.text.get(f.start as usize..f.end as usize).unwrap_or("");
            let key_id = other.starts_with("AKIA")
                || (s.provider == "aws-secret-access-key" && &*f.pattern_id == "aws-access-key-id");
            if !key_id {
                *fps.entry(format!("{} in {}/{}", f.pattern_id, s.provider, s.carrier))
                    .or_default() += 1;
                fp += 1;
            }
        }
    }
    let mut negatives = 0;
    for s in &neg {
        negatives += 1;
        for f in sc.scan(s.text.as_bytes()).into_iter().filter(counts) {
            *fps.entry(format!("{} in {}/{}", f.pattern_id, s.provider, s.carrier))
                .or_default() += 1;
            fp += 1;
        }
    }
    let recall = tp as f64 / total.max(1) as f64;
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    eprintln!(
        "corpus: {total} secrets ({PROVIDERS} providers x {} carriers x {REPS}), {negatives} near-miss negatives",
        CARRIERS.len(),
    );
    eprintln!(
        "recall {:.1}% ({tp}/{total}), precision {:.1}% ({fp} false positives)",
        100.0 * recall,
        100.0 * precision
    );
    for ((p, c), n) in &misses {
        eprintln!("  missed {p} in {c} x{n}");
    }
    for (k, n) in &fps {
        eprintln!("  false positive x{n}: {k}");
    }
    assert!(recall >= 0.95, "recall {recall:.3} < 0.95 (seed {seed})");
    assert!(
        precision >= 0.98,
        "precision {precision:.3} < 0.98 (seed {seed})"
    );
}
/// Every BIP39 mnemonic is verified, whatever its words: one of them is
/// "example", a documentation marker elsewhere (about 1% of 24-word
/// mnemonics hold it).
#[test]
fn mnemonics_with_any_words_are_verified() {
    let sc = Scanner::new(super::tests::rules(), &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut r = Rng::new(seed());
    let mut missed = Vec::new();
    for _ in 0..2_000 {
        let m = mnemonic(&mut r);
        let t = format!("WALLET_MNEMONIC={m}\n");
        if !sc.scan(t.as_bytes()).iter().any(counts) {
            missed.push(m);
        }
    }
    assert!(
        missed.is_empty(),
        "{} missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(3)]
    );
}
