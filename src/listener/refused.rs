//! A refused CONNECT that the agent can read.
//!
//! curl, pip, Python `urllib`, `requests`, git and cargo never show the
//! body of a `403` answer to CONNECT: they print "CONNECT tunnel failed,
//! response 403" and nothing the agent can act on. So for a refusal
//! (policy denial, guard refusal) airlock answers `200`, completes the
//! client's TLS handshake with a leaf minted for the requested name (the
//! same issuer interception uses), and answers every request inside with
//! the refusal: `403`, the explanation as body, `airlock-error` and
//! `Proxy-Status`. The host is never contacted and never resolved again.
//!
//! # Bounds
//! A refused tunnel holds a connection slot like any other, ends after
//! [`MAX_REQUESTS`] requests, and keeps the idle, header-read and
//! handshake timeouts of an ordinary tunnel.
//!
//! # A client that does not trust airlock's CA
//! It aborts the handshake (curl: "SSL certificate problem: unable to get
//! local issuer certificate"). airlock remembers the client address and
//! the target for [`crate::state::REFUSED_ABORT_MEMORY`] (10 minutes): the next CONNECT from it to that
//! target gets the plain `403` (whose `Proxy-Status` details `curl -v`
//! shows), as before refused tunnels existed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::ConnGuard;
use super::io::{IdleTimeout, Prefixed};
use crate::audit::{AuditEvent, Kind, Outcome};
use crate::error::{self, ProxyError};
use crate::policy::{Host, NormalPath};
use crate::state::State;
use crate::upstream::ProxyBody;

/// Requests answered in one refused tunnel before it is closed.
pub const MAX_REQUESTS: u32 = 16;

/// Whether a refusal of CONNECT opens a refused tunnel: refusals with a
/// `403`. A malformed target (`400`), missing proxy credentials (`407`:
/// the client answers that challenge) and failures to reach (`502`)
/// stay answers to CONNECT.
pub(crate) fn opens_tunnel(err: &ProxyError) -> bool {
    err.status() == StatusCode::FORBIDDEN
}

/// The key under which an aborted handshake is remembered.
pub(crate) type AbortKey = (std::net::IpAddr, Host, u16);

/// Answers a refused CONNECT: records the refusal (once), then either
/// answers `200` and serves the refused tunnel, or, when `err` does not
/// open one or this client aborted on a refused tunnel's leaf recently,
/// answers the refusal itself.
pub(crate) async fn refuse(
    state: Arc<State>,
    peer: SocketAddr,
    event: AuditEvent,
    conn: ConnGuard,
    req: Request<Incoming>,
    target: (Host, u16),
    err: ProxyError,
) -> Response<ProxyBody> {
    let key: AbortKey = (peer.ip(), target.0.clone(), target.1);
    if !opens_tunnel(&err) || state.refused_aborts.get(&key).await.is_some() {
        return super::fail(&state, event, None, err);
    }
    let sandbox = event.sandbox.clone();
    // The refusal's record: decision, reason and the status every request
    // in the tunnel will get.
    drop(super::fail(&state, event, None, err.clone()));
    let tunnel = Refused {
        host: target.0,
        port: target.1,
        client: peer,
        sandbox,
        err,
        key,
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<IdleTimeout<TcpStream>>>() {
                Ok(parts) => {
                    let io = Prefixed::new(parts.read_buf, parts.io.into_inner());
                    serve(state, tunnel, io, conn).await;
                }
                Err(upgraded) => {
                    let io = Prefixed::new(Bytes::new(), TokioIo::new(upgraded));
                    serve(state, tunnel, io, conn).await;
                }
            },
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(error::empty())
}

/// What a refused tunnel answers with.
struct Refused {
    host: Host,
    port: u16,
    client: SocketAddr,
    sandbox: Option<Arc<str>>,
    err: ProxyError,
    key: AbortKey,
}

async fn serve<S>(state: Arc<State>, tunnel: Refused, mut io: Prefixed<S>, conn: ConnGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = state.generation().config.proxy.handshake_timeout;
    let first = match tokio::time::timeout(timeout, io.first_byte()).await {
        Ok(Ok(Some(b))) => b,
        _ => return,
    };
    let tunnel = Arc::new(tunnel);
    if first != 0x16 {
        answer(state, tunnel, TokioIo::new(io), conn).await;
        return;
    }
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let Ok(Ok(start)) = tokio::time::timeout(timeout, acceptor).await else {
        return;
    };
    let config = match state.issuer.refused_server_config(&tunnel.host).await {
        Ok(c) => c,
        Err(e) => {
            let host = super::forward::shown_host(&state, &tunnel.host);
            tracing::error!(error = %e, %host, "cannot mint a leaf certificate");
            return;
        }
    };
    match tokio::time::timeout(timeout, start.into_stream(config)).await {
        Ok(Ok(tls)) => answer(state, tunnel, TokioIo::new(tls), conn).await,
        Ok(Err(e)) => {
            // Most likely the client does not trust airlock's CA: its next
            // CONNECT to this target gets the plain 403.
            // A refused name is the sandbox's to write: logged redacted.
            let host = super::forward::shown_host(&state, &tunnel.host);
            tracing::debug!(error = %e, %host, "client refused the refused tunnel's leaf");
            state.refused_aborts.insert(tunnel.key.clone(), ()).await;
        }
        Err(_) => {}
    }
}

/// Serves h2 or http/1.1 inside the refused tunnel: every request gets
/// the refusal and its own audit record; after [`MAX_REQUESTS`] the
/// connection is shut down gracefully.
async fn answer<I>(state: Arc<State>, tunnel: Arc<Refused>, io: TokioIo<I>, conn: ConnGuard)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = super::connect::tunnel_server(&state.generation().config.proxy);
    builder.http2().max_concurrent_streams(MAX_REQUESTS);
    let count = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let svc_state = Arc::clone(&state);
    let svc_count = Arc::clone(&count);
    let svc = service_fn(move |req: Request<Incoming>| {
        let n = svc_count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= MAX_REQUESTS {
            let _ = done_tx.send(true);
        }
        let resp = respond(&svc_state, &tunnel, &req);
        async move { Ok::<_, Infallible>(resp) }
    });
    let served = builder.serve_connection(io, svc);
    tokio::pin!(served);
    let mut shutdown = conn.shutdown.clone();
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
        _ = done.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "refused tunnel ended with an error");
    }
    drop(conn);
}

/// One request inside a refused tunnel: its audit record and the refusal.
fn respond(state: &State, tunnel: &Refused, req: &Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut ev = AuditEvent::new(
        Kind::Request,
        tunnel.client,
        tunnel.host.clone(),
        tunnel.port,
        Outcome::Deny,
        tunnel.err.code(),
    );
    ev.method = Some(req.method().clone());
    ev.sandbox.clone_from(&tunnel.sandbox);
    ev.rules_version = Arc::clone(&state.generation().version);
    ev.path = NormalPath::parse(req.uri().path())
        .ok()
        .map(|p| super::forward::audit_path(state, p.decoded()));
    super::fail(state, ev, Some(start), tunnel.err.clone())
}
