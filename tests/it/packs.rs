//! The financial pack through the real proxy: card numbers going out are
//! blocked (unless the rule opts out with `scan_skip`), card numbers coming
//! back are masked to their last four digits, and ids that only look like
//! cards pass untouched.

use std::sync::Arc;

use http::Response;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::origin::{self, Origin, full, record};
use crate::support::proxy::{ProxyBuilder, TestProxy};

/// A fresh random digit string of `n` digits (seeded from the clock).
fn digits(n: usize, seed: &mut u64) -> String {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            char::from(b'0' + (*seed % 10) as u8)
        })
        .collect()
}

fn luhn_ok(s: &str) -> bool {
    let sum: u32 = s
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn with_luhn(body: &str) -> String {
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|s| luhn_ok(s))
        .unwrap()
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// A fresh random Visa number (16 digits, Luhn valid).
fn visa(seed: &mut u64) -> String {
    with_luhn(&format!("4{}", digits(14, seed)))
}

fn grouped(n: &str, sep: &str) -> String {
    n.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(sep)
}

/// One origin, two rules: `/pay/**` may send card numbers, the rest not.
async fn setup(handler: origin::Handler) -> (TestCa, Origin, TestProxy) {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", handler).await;
    let proxy = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\npaths = [\"/pay/**\"]\nscan_skip = [\"payment-card\"]",
            origin.port()
        ))
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ))
        .scan(&[])
        .start()
        .await;
    (ca, origin, proxy)
}

fn echo_body() -> origin::Handler {
    Arc::new(|req, rec| {
        Box::pin(async move {
            let r = record(req, &rec).await;
            Response::new(full(r.body.unwrap_or_default()))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_going_out_is_blocked_unless_the_rule_opts_out() {
    let (_ca, origin, proxy) = setup(echo_body()).await;
    let c = client::reqwest(&proxy);
    let base = format!("https://api.example.test:{}", origin.port());
    let mut s = seed();
    let card = grouped(&visa(&mut s), " ");
    let json = format!("{{\"amount\": 1200, \"card_number\": \"{card}\", \"exp\": \"12/30\"}}");

    let r = c
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(json.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["airlock-error"], "secret_blocked");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("payment-card") && !text.contains(&card),
        "{text}"
    );
    let first8 = &card[..9]; // "dddd dddd"
    for got in origin.received() {
        let body = got.body.unwrap_or_default();
        assert!(
            !body.windows(first8.len()).any(|w| w == first8.as_bytes()),
            "the origin saw the start of the card"
        );
    }

    // The payment rule (`scan_skip = ["payment-card"]`) sends it.
    let r = c
        .post(format!("{base}/pay/charge"))
        .header("content-type", "application/json")
        .body(json.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = origin
        .received()
        .into_iter()
        .find(|g| g.target == "/pay/charge")
        .expect("the payment API got the request");
    assert_eq!(got.body.unwrap_or_default(), json.as_bytes());

    // The opt-out names only cards: an AWS key id to the same rule
    // is still blocked.
    let aws = format!("AKIA{}", "QWERTYUIOPASDFGH");
    let r = c
        .post(format!("{base}/pay/charge"))
        .body(format!("key={aws}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_card_is_masked_to_its_last_four_digits() {
    let mut s = seed();
    let spaced = grouped(&visa(&mut s), " ");
    let dashed = grouped(&visa(&mut s), "-");
    let plain = visa(&mut s);
    let body =
        format!("{{\"card\": \"{spaced}\", \"backup_card\": \"{dashed}\", \"card_no\": {plain}}}");
    let sent = body.clone();
    let handler: origin::Handler = Arc::new(move |req, rec| {
        let sent = sent.clone();
        Box::pin(async move {
            record(req, &rec).await;
            Response::new(full(sent))
        })
    });
    let (_ca, origin, proxy) = setup(handler).await;
    let c = client::reqwest(&proxy);
    for path in ["/cards", "/pay/cards"] {
        let r = c
            .get(format!("https://api.example.test:{}{path}", origin.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r.text().await.unwrap();
        let want = format!(
            "{{\"card\": \"**** **** **** {}\", \"backup_card\": \"****-****-****-{}\", \"card_no\": ************{}}}",
            &spaced[spaced.len() - 4..],
            &dashed[dashed.len() - 4..],
            &plain[plain.len() - 4..],
        );
        assert_eq!(got, want, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_only_look_like_cards_pass_untouched() {
    let mut s = seed();
    // 16 digits after a card word that fail Luhn; a Luhn-valid 19-digit
    // snowflake id (no issuer starts with 1); a 13-digit millisecond
    // timestamp; a Visa-shaped run inside a longer number.
    let mut order = format!("4{}", digits(15, &mut s));
    if luhn_ok(&order) {
        let last = (order.pop().unwrap() as u8 - b'0' + 1) % 10;
        order.push(char::from(b'0' + last));
    }
    let snowflake = with_luhn(&format!("1{}", digits(17, &mut s)));
    let ts = format!("17{}", digits(11, &mut s));
    let embedded = format!("9{}", visa(&mut s));
    let body = format!(
        "{{\"card_order_id\": \"{order}\", \"card_message_id\": {snowflake}, \"card_updated_ms\": {ts}, \"card_batch\": \"{embedded}\"}}"
    );
    let sent = body.clone();
    let handler: origin::Handler = Arc::new(move |req, rec| {
        let sent = sent.clone();
        Box::pin(async move {
            record(req, &rec).await;
            Response::new(full(sent))
        })
    });
    let (_ca, origin, proxy) = setup(handler).await;
    let c = client::reqwest(&proxy);
    let r = c
        .post(format!("https://api.example.test:{}/orders", origin.port()))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "outgoing ids were refused");
    assert_eq!(r.text().await.unwrap(), body, "incoming ids were rewritten");
    let got = origin.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_deref().unwrap_or_default(), body.as_bytes());
}

#[test]
fn explain_names_the_patterns_a_rule_may_send() {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
    std::fs::write(
        dir.path().join("airlock.toml"),
        format!(
            "[scan]\npatterns = {:?}\n\n[[host]]\nmatch = \"pay.example.test\"\nscan_skip = [\"payment-card\", \"iban\"]\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "explain",
            "--config",
            "airlock.toml",
            "https://pay.example.test/charge",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "scan_skip: payment-card, iban (this rule's requests may send them; responses are still scanned)"
        ),
        "{text}"
    );
}
