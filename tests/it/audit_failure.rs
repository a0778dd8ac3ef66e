//! The audit output fails (a full disk: `/dev/full` answers every write
//! with ENOSPC): by default airlock keeps serving and counts the failures;
//! with `[audit] on_failure = "deny"` it refuses traffic (503
//! `audit_unavailable`) while decisions cannot be recorded.

use std::time::Duration;

use crate::support::ca::TestCa;
use crate::support::client::{self, read_response};
use crate::support::origin::{Origin, echo};
use crate::support::proxy::{ProxyBuilder, TestProxy};

async fn proxy(origin: &Origin, ca: &TestCa, audit: &[&str]) -> TestProxy {
    let mut b = ProxyBuilder::new()
        .proxy_line("admin = \"127.0.0.1:0\"")
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]",
            origin.port()
        ));
    for l in audit {
        b = b.audit_line(l);
    }
    b.start().await
}

async fn write_errors(proxy: &TestProxy) -> u64 {
    use tokio::io::AsyncWriteExt;
    let admin = proxy.server.admin_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_response(&mut s).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("airlock_audit_write_errors_total "))
        .unwrap_or_else(|| panic!("no write-error counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_with_on_failure_deny_refuses_traffic() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let proxy = proxy(
        &origin,
        &ca,
        &["output = \"/dev/full\"", "on_failure = \"deny\""],
    )
    .await;
    let url = format!("https://api.example.test:{}/x", origin.port());
    let c = client::reqwest(&proxy);
    // The first decisions are written after they are made: the failure is
    // known once the writer has tried. From then on, nothing passes.
    let mut refused = None;
    for _ in 0..100 {
        let resp = c.get(&url).send().await.unwrap();
        if resp.status() == 503 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = refused.expect("airlock kept serving while the audit log failed");
    assert_eq!(resp.headers()["airlock-error"], "audit_unavailable");
    let status = resp.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status.contains("error=proxy_internal_error"), "{status}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("could not be recorded"), "{body}");
    let seen = origin.received().len();
    assert!(seen < 100, "{seen}");
    // Every later request, on this tunnel or a new one, is refused too.
    for _ in 0..5 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
        let fresh = client::reqwest(&proxy).get(&url).send().await;
        assert!(
            fresh.map(|r| r.status() == 503).unwrap_or(true),
            "a new tunnel was served"
        );
    }
    assert_eq!(
        origin.received().len(),
        seen,
        "the origin saw more requests"
    );
    assert!(write_errors(&proxy).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_by_default_keeps_serving_and_counts_the_failures() {
    let ca = TestCa::new("origin ca");
    let origin = Origin::https(&ca, "api.example.test", "127.0.0.2", echo("api")).await;
    let proxy = proxy(&origin, &ca, &["output = \"/dev/full\""]).await;
    let url = format!("https://api.example.test:{}/x", origin.port());
    let c = client::reqwest(&proxy);
    for _ in 0..20 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.received().len(), 20);
    crate::support::eventually_async("audit write errors counted", || async {
        (write_errors(&proxy).await >= 1).then_some(())
    })
    .await;
}

#[test]
fn on_failure_takes_log_or_deny_and_names_the_line() {
    let err = crate::support::config_errors("[audit]\noutput = \"off\"\non_failure = \"maybe\"\n");
    assert!(
        err.contains("airlock.toml:3:14: audit.on_failure: `maybe` is not \"log\" or \"deny\""),
        "{err}"
    );
}
