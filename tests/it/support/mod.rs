//! Test harness: a test CA, real TLS origins on 127.0.0.x, an in-process
//! airlock configured through its real TOML, and real clients.

#![allow(dead_code)]

pub mod bao;
pub mod ca;
pub mod client;
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
