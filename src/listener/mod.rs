//! The proxy listener: accept, read the request head, and dispatch:
//! CONNECT → [`connect`] (decide, then intercept TLS), absolute-form
//! `http://` → [`forward`], anything else → 400.
//!
//! Limits live here: a semaphore caps concurrent client connections, every
//! connection has an idle timeout and a header-read timeout, and shutdown
//! stops accepting and asks every connection to finish ([`crate::server`]
//! waits for them, up to `drain_timeout`).

pub mod body;
pub mod connect;
pub mod forward;
pub mod io;
pub(crate) mod refused;
pub(crate) mod scanning;
pub(crate) mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::error::ProxyError;
use crate::state::State;
use crate::upstream::ProxyBody;

/// What a connection task holds so that shutdown can wait for it and the
/// connection limit counts it (tunnels included).
#[derive(Clone)]
pub(crate) struct ConnGuard {
    _permit: Arc<OwnedSemaphorePermit>,
    _drain: mpsc::Sender<()>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Accepts sandbox connections until `shutdown`, each in its own task
/// holding a clone of `drain` (the caller waits for them all to drop it).
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    drain_tx: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let proxy = state.generation().config.proxy.clone();
    let limit = Arc::new(Semaphore::new(proxy.max_connections));
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "airlock listening");
    let mut accept_failures: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say
                // so on the 1st, 2nd, 4th, ... failure in a row, not 20
                // times a second.
                accept_failures += 1;
                if accept_failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures = accept_failures, "accept failed: new connections wait until descriptors free up");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if accept_failures > 0 {
            tracing::info!(failures = accept_failures, "accepting again");
            accept_failures = 0;
        }
        let conn = ConnGuard {
            _permit: Arc::new(permit),
            _drain: drain_tx.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(serve_client(Arc::clone(&state), stream, peer, conn));
    }
}

/// The outer connection: HTTP/1.1 from the sandbox to the proxy port.
async fn serve_client(state: Arc<State>, stream: TcpStream, peer: SocketAddr, conn: ConnGuard) {
    let _nodelay = stream.set_nodelay(true);
    let generation = state.generation();
    let proxy = &generation.config.proxy;
    let io = TokioIo::new(io::IdleTimeout::new(stream, proxy.idle_timeout));
    let svc_state = Arc::clone(&state);
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&svc_state);
        let conn = svc_conn.clone();
        async move { Ok::<_, Infallible>(dispatch(state, peer, conn, req).await) }
    });
    let mut builder = connect::h1_server(proxy);
    builder.keep_alive(true);
    let served = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(served);
    let mut shutdown = conn.shutdown.clone();
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

async fn dispatch(
    state: Arc<State>,
    peer: SocketAddr,
    conn: ConnGuard,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return connect::handle(state, peer, conn, req).await;
    }
    if req.uri().scheme().is_some() && req.uri().authority().is_some() {
        return forward::absolute_form(state, peer, req).await;
    }
    ProxyError::NotProxyRequest.into_response()
}

/// The one place a failure becomes a response and an audit record:
/// `event` gets the decision (`deny` for a refusal, `error` for a failure),
/// the reason code, the status and, when `start` is given, the duration.
pub(crate) fn fail(
    state: &State,
    mut event: crate::audit::AuditEvent,
    start: Option<std::time::Instant>,
    err: ProxyError,
) -> Response<ProxyBody> {
    event.decision = if err.is_denial() {
        crate::audit::Outcome::Deny
    } else {
        crate::audit::Outcome::Error
    };
    event.reason = err.code();
    event.status = Some(err.status().as_u16());
    // A refused host is whatever the sandbox asked for: a secret written
    // into a name (`<token>.example.test`) must not reach the audit log.
    // A host that carries one is always refused (even under a wildcard
    // rule), so only refusals pay this.
    if let Some(crate::audit::Subject::Host(host)) = &event.host
        && let Some(redacted) = forward::redacted_host(state, host)
    {
        event.host = Some(crate::audit::Subject::Redacted(redacted));
    }
    if let Some(start) = start {
        event.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
    state.audit.emit(event);
    err.into_response()
}
