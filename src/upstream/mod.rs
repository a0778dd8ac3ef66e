//! The upstream side: a pooled hyper client whose connector goes through
//! the [`crate::guard`] (resolve, check, dial that address) and then
//! verified TLS, negotiating h2 or http/1.1 by ALPN.

pub mod connector;
pub mod headers;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use connector::Connector;

/// The boxed error type bodies carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type airlock sends and returns.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The pooled clients: one offering h2 + http/1.1, one http/1.1 only (for
/// WebSocket upgrades, which need HTTP/1.1).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// h2 or http/1.1 by ALPN.
    pub any: Client<Connector, ProxyBody>,
    /// http/1.1 only.
    pub h1: Client<Connector, ProxyBody>,
}

impl Upstream {
    /// Builds both clients.
    pub fn new(connector_any: Connector, connector_h1: Connector, idle: Duration) -> Self {
        let build = |c: Connector| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(idle)
                // One idle connection per host forces new handshakes under
                // concurrency; keep enough for the sandbox's parallelism.
                .pool_max_idle_per_host(256)
                .http2_adaptive_window(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_while_idle(false)
                .build(c)
        };
        Self {
            any: build(connector_any),
            h1: build(connector_h1),
        }
    }
}

/// Finds the first error of type `E` in a source chain.
pub fn find_source<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
