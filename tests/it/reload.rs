use airlock::config::ConfigSource;

use crate::support::client::connect;
use crate::support::eventually;
use crate::support::proxy::{ProxyBuilder, TestProxy};

fn rules(hosts: &[&str]) -> ProxyBuilder {
    let mut b = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback();
    for h in hosts {
        b = b.rule(&format!("match = \"{h}\""));
    }
    b
}

/// 200 when the rules open a tunnel to `target`; for a refused tunnel
/// (airlock answers CONNECT with 200 and the refusal inside), the status
/// of the refusal read inside it.
async fn status(proxy: &TestProxy, target: &str) -> u16 {
    let (_s, r) = connect(proxy.addr, target).await;
    if r.status != 200 {
        return r.status;
    }
    let inner = crate::support::client::refused(proxy, target).await;
    if inner.head.contains("airlock-error: host_not_allowed") {
        inner.status
    } else {
        200
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_edit_applies_to_the_next_request_without_restart() {
    let proxy = rules(&["api.example.test"]).start().await;
    proxy
        .server
        .watch_config(ConfigSource::File(proxy.config_path()));
    let before = proxy.server.state().generation().config.version.clone();
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
    assert_eq!(status(&proxy, "other.example.test:443").await, 403);

    // A tunnel opened under the old rules...
    let (mut old_tunnel, r) = connect(proxy.addr, "api.example.test:443").await;
    assert_eq!(r.status, 200);

    std::fs::write(
        proxy.config_path(),
        rules(&["other.example.test"]).config_text(),
    )
    .unwrap();
    let reload = proxy
        .audit_event("reload applied", |e| {
            e["kind"] == "reload" && e["decision"] == "allow"
        })
        .await;
    assert_ne!(reload["rules_version"], before.as_str());
    eventually("new rules in force", || {
        let v = proxy.server.state().generation().config.version.clone();
        (v != before).then_some(())
    })
    .await;
    assert_eq!(status(&proxy, "other.example.test:443").await, 200);
    assert_eq!(status(&proxy, "api.example.test:443").await, 403);

    // ...is judged by the new rules at its next request: plain HTTP inside
    // the tunnel to a host that is no longer allowed is refused.
    use tokio::io::AsyncWriteExt;
    old_tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n")
        .await
        .unwrap();
    let r = crate::support::client::read_response(&mut old_tunnel).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_is_refused_and_the_last_good_rules_keep_working() {
    let proxy = rules(&["api.example.test"]).start().await;
    proxy
        .server
        .watch_config(ConfigSource::File(proxy.config_path()));
    let good = proxy.server.state().generation().config.version.clone();
    let mut broken = rules(&["other.example.test"]).config_text();
    broken.push_str("\n[[host]]\nmatch = \"evil.*.test\"\n");
    std::fs::write(proxy.config_path(), broken).unwrap();
    let ev = proxy
        .audit_event("reload refused", |e| {
            e["kind"] == "reload" && e["decision"] == "deny"
        })
        .await;
    assert_eq!(ev["reason"], "reload_refused");
    assert_eq!(ev["rules_version"], good.as_str());
    assert_eq!(proxy.server.state().generation().config.version, good);
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
    assert_eq!(status(&proxy, "other.example.test:443").await, 403);
}
