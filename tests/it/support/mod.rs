//! Test harness: a test CA, real TLS origins on 127.0.0.x, an in-process
//! airlock configured through its real TOML, and real clients.

#![allow(dead_code)]

pub mod bao;
pub mod ca;
pub mod client;
pub mod compress;
pub mod fresh;
pub mod origin;
pub mod proxy;

use std::time::Duration;

/// Polls `f` until it returns `Some`, for up to 10 s (audit lines are
/// written by a background thread). Panics with `what` otherwise.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Like [`eventually`], for an async probe.
pub async fn eventually_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Installs ring and a test log subscriber once.
pub fn init() {
    airlock::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "airlock=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The proxy port of process `pid`, read from /proc (the first listening
/// TCP socket it owns).
pub fn listening_port(pid: u32) -> Option<std::net::SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // state 0A = LISTEN
        if f.get(3) != Some(&"0A") || !inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)) {
            return None;
        }
        let (ip, port) = f.get(1)?.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(std::net::SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(ip)),
            port,
        )))
    })
}

/// The usual setup: one HTTPS origin for `api.example.test` on 127.0.0.2,
/// and an airlock whose one rule allows it on the origin's port
/// (`rule_extra` added to that rule), after `configure` has added what else
/// the test needs.
pub async fn api_origin(
    handler: origin::Handler,
    rule_extra: &str,
    configure: impl FnOnce(proxy::ProxyBuilder) -> proxy::ProxyBuilder,
) -> (ca::TestCa, origin::Origin, proxy::TestProxy) {
    api_origin_alpn(handler, &[b"h2", b"http/1.1"], rule_extra, configure).await
}

/// [`api_origin`] with an origin that offers `alpn` only.
pub async fn api_origin_alpn(
    handler: origin::Handler,
    alpn: &[&[u8]],
    rule_extra: &str,
    configure: impl FnOnce(proxy::ProxyBuilder) -> proxy::ProxyBuilder,
) -> (ca::TestCa, origin::Origin, proxy::TestProxy) {
    let ca = ca::TestCa::new("origin ca");
    let origin =
        origin::Origin::https_alpn(&ca, "api.example.test", "127.0.0.2", handler, alpn).await;
    let builder = proxy::ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .allow_loopback()
        .trust(&ca)
        .rule(&format!(
            "match = \"api.example.test\"\nports = [{}]\n{rule_extra}",
            origin.port()
        ));
    let proxy = configure(builder).start().await;
    (ca, origin, proxy)
}

/// `der` as PEM: base64 in 64-character lines between `-----BEGIN LABEL-----`
/// and `-----END LABEL-----`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The errors `airlock.toml` holding `text` compiles to (panics if it
/// compiles): what `check` and `serve` would print.
pub fn config_errors(text: &str) -> String {
    airlock::config::Config::from_text(text, "airlock.toml", std::path::Path::new("/nonexistent"))
        .unwrap_err()
        .to_string()
}
