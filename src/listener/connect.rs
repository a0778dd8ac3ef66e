//! CONNECT: decide on host and port, refuse or answer `200`, then
//! intercept: peek the first byte (with a timeout), accept TLS with a leaf
//! minted for the CONNECT host, and serve h2 or http/1.1 inside the tunnel,
//! judging every request again in [`super::forward`].
//!
//! # Security
//! The tunnel is never a blind pipe: a client that does not speak HTTP (or
//! TLS then HTTP) inside it gets nothing through. A TLS SNI that names
//! another host than CONNECT does marks the tunnel, and every request in it
//! is refused with `421` (no domain fronting).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::forward::{self, Target};
use super::io::{IdleTimeout, Prefixed};
use super::{ConnGuard, refused};
use crate::audit::{AuditEvent, Kind, Outcome};
use crate::error::{self, ProxyError};
use crate::policy::{Host, Scheme, parse_authority_form};
use crate::state::State;
use crate::upstream::ProxyBody;

/// Handles one CONNECT request on the outer connection.
pub(crate) async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    conn: ConnGuard,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (host, port) = match connect_target(&req) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let generation = state.generation();
    let sandbox = crate::identity::identify(&generation.config, req.headers());
    let sandbox_name = sandbox.as_ref().ok().and_then(Clone::clone);
    // The tunnel decision's audit record; a refusal goes out through
    // `super::fail`, which fills in decision, reason and status.
    let event = |rule: Option<crate::policy::RuleRef>| {
        let mut ev = AuditEvent::new(
            Kind::Connect,
            peer,
            host.clone(),
            port,
            Outcome::Allow,
            "tunnel_intercepted",
        );
        ev.method = Some(http::Method::CONNECT);
        ev.rule = rule;
        ev.sandbox.clone_from(&sandbox_name);
        ev.rules_version = Arc::clone(&generation.version);
        ev
    };
    let sandbox = match sandbox {
        Ok(s) => s,
        Err(err) => return super::fail(&state, event(None), None, err),
    };
    let Some(policy) = generation.config.policy_for(sandbox.as_deref()) else {
        return super::fail(
            &state,
            event(None),
            None,
            ProxyError::ProxyAuth("unknown sandbox"),
        );
    };
    if generation.config.audit_deny_on_failure && state.audit.failing() {
        return super::fail(&state, event(None), None, ProxyError::AuditUnavailable);
    }
    // `airlock learn --permissive` opens the tunnel all the same (the
    // address guard still applies), marked in the audit event.
    let mut permissive = None;
    let decided = match policy.decide_host(&host, port, Scheme::Https) {
        Ok(m) => Ok(m.first().map(|r| r.source.clone())),
        Err(denied) if generation.config.learn_permissive => {
            permissive = Some(denied.reason.as_str());
            Ok(None)
        }
        Err(denied) => Err((None, ProxyError::from(denied))),
    };
    // Refuse private and loopback destinations before opening the tunnel.
    // The connector checks again when it dials (and dials only what it
    // checked).
    // Under a wildcard rule the name is the agent's to write: one that
    // carries a secret is refused before DNS or the origin hear it.
    let leak = state
        .scanner()
        .and_then(|sc| super::scanning::host_leak(&sc, &generation.config.scan, &host));
    let checked = match (decided, leak) {
        (Ok(rule), Some(err)) => Err((rule, err)),
        (Ok(rule), None) => match generation.guard.resolve(&host, port).await {
            Ok(_) => Ok(rule),
            Err(g) => Err((rule, ProxyError::from(g))),
        },
        (Err(refusal), _) => Err(refusal),
    };
    // A refusal opens a refused tunnel (see `super::refused`): the agent
    // reads the explanation inside it; the host is never contacted.
    let rule = match checked {
        Ok(rule) => rule,
        Err((rule, err)) => {
            let ev = event(rule);
            drop(generation);
            // Boxed: the allowed path's future stays the size it was.
            return Box::pin(refused::refuse(
                state,
                peer,
                ev,
                conn,
                req,
                (host, port),
                err,
            ))
            .await;
        }
    };
    let mut ev = event(rule);
    ev.status = Some(StatusCode::OK.as_u16());
    // Outgoing log mode lets a secret in the name through; the audit log
    // still never holds it, here or in the tunnel's requests.
    let audit_host = (generation.config.scan.outgoing.mode() == crate::scan::ScanMode::Log)
        .then(|| forward::redacted_host(&state, &host))
        .flatten();
    if let Some(redacted) = &audit_host {
        ev.host = Some(crate::audit::Subject::Redacted(redacted.clone()));
    }
    if let Some(reason) = permissive {
        crate::learn::permissive::mark(&mut ev, reason);
    }
    state.audit.emit(ev);

    let target = Target {
        host,
        port,
        scheme: Scheme::Https,
        connect: true,
        sandbox,
        client: peer,
        sni_mismatch: None,
        audit_host: audit_host.map(Arc::from),
        upstream_authority: std::sync::OnceLock::new(),
    };
    drop(generation);
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let metrics = std::sync::Arc::clone(state.audit.metrics());
        metrics.tunnel(1);
        // Boxed: a task keeps its future at the size of its largest state
        // for as long as it runs. The TLS handshake's state (the ClientHello
        // reader, the rustls connection being set up, timers) is large and
        // brief; serving an open tunnel is small and long. Inline, every
        // idle tunnel's task was 10 KiB; now the handshake's box is freed
        // when it ends and the task keeps a pointer to what serves.
        if let Some(serving) = Box::pin(intercept(state, target, upgraded, conn)).await {
            serving.await;
        }
        metrics.tunnel(-1);
    });
    Response::new(error::empty())
}

/// The CONNECT target, strictly `host:port` (see
/// [`crate::policy::parse_authority_form`]): refused with `400` before any
/// identity check, policy decision, DNS lookup or upstream contact.
fn connect_target(req: &Request<Incoming>) -> Result<(Host, u16), ProxyError> {
    let uri = req.uri();
    let authority = match uri.authority() {
        Some(a) if uri.scheme().is_none() && uri.path_and_query().is_none() => a,
        _ => {
            return Err(ProxyError::BadRequest(
                "CONNECT target: give host:port alone (no scheme, path, query or fragment)".into(),
            ));
        }
    };
    parse_authority_form(authority.as_str()).map_err(|e| ProxyError::BadRequest(e.to_string()))
}

type ClientIo = IdleTimeout<TcpStream>;

/// An open tunnel's request loop (see [`serve_inner`]).
type Serving = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

async fn intercept(
    state: Arc<State>,
    target: Target,
    upgraded: hyper::upgrade::Upgraded,
    conn: ConnGuard,
) -> Option<Serving> {
    // Recover the raw client socket and any bytes the client sent before our
    // 200 (a pipelined ClientHello), so nothing is lost and no extra layer
    // sits on the hot path.
    match upgraded.downcast::<TokioIo<ClientIo>>() {
        Ok(parts) => {
            let io = Prefixed::new(parts.read_buf, parts.io.into_inner());
            tunnel(state, target, io, conn).await
        }
        Err(upgraded) => {
            let io = Prefixed::new(Bytes::new(), TokioIo::new(upgraded));
            tunnel(state, target, io, conn).await
        }
    }
}

/// Open the tunnel (first byte, TLS handshake) and return what serves it.
async fn tunnel<S>(
    state: Arc<State>,
    mut target: Target,
    io: Prefixed<S>,
    conn: ConnGuard,
) -> Option<Serving>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = handshake(&state, &mut target, io).await?;
    let target = Arc::new(target);
    Some(match inner {
        Inner::Plain(io) => serve_inner(state, target, TokioIo::new(io), conn, Speaks::Either),
        Inner::Tls(tls) => {
            let speaks = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Speaks::Http2,
                Some(b"http/1.1") => Speaks::Http1,
                _ => Speaks::Either,
            };
            serve_inner(state, target, TokioIo::new(tls), conn, speaks)
        }
    })
}

/// What the client inside a tunnel speaks, as far as TLS (ALPN) told.
#[derive(Clone, Copy)]
enum Speaks {
    Http1,
    Http2,
    /// No ALPN (or plain HTTP): sniff the h2 preface.
    Either,
}

/// What a tunnel carries once its first bytes are read.
enum Inner<S> {
    /// Plain HTTP inside the tunnel, judged the same way.
    Plain(Prefixed<S>),
    /// TLS, terminated with a leaf for the tunnel's host.
    Tls(tokio_rustls::server::TlsStream<Prefixed<S>>),
}

/// Read the tunnel's first byte and, for TLS, complete the handshake with a
/// leaf for `target.host`; `None` when the client goes away, stalls past
/// the handshake timeout or fails the handshake.
async fn handshake<S>(state: &State, target: &mut Target, mut io: Prefixed<S>) -> Option<Inner<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = state.generation().config.proxy.handshake_timeout;
    let first = match tokio::time::timeout(timeout, io.first_byte()).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "tunnel read failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(host = %target.shown_host(), "client sent nothing inside the tunnel in time");
            return None;
        }
    };
    if first != 0x16 {
        target.scheme = Scheme::Http;
        return Some(Inner::Plain(io));
    }
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(timeout, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.shown_host(), "bad ClientHello");
            return None;
        }
        Err(_) => return None,
    };
    if let Some(sni) = start.client_hello().server_name()
        && Host::parse(sni).ok().as_ref() != Some(&target.host)
    {
        target.sni_mismatch = Some(sni.to_owned());
    }
    let config = match state.issuer.server_config(&target.host).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, host = %target.shown_host(), "cannot mint a leaf certificate");
            return None;
        }
    };
    match tokio::time::timeout(timeout, start.into_stream(config)).await {
        Ok(Ok(t)) => Some(Inner::Tls(t)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.shown_host(), "TLS handshake with the client failed");
            None
        }
        Err(_) => None,
    }
}

/// The h1/h2 server inside a tunnel (intercepted or refused), with the
/// proxy's header bounds and timeouts, sniffing the protocol from the first
/// bytes.
pub(crate) fn tunnel_server(proxy: &crate::config::ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.header_read_timeout)
        .max_buf_size(proxy.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// An http/1.1 server with the proxy's header bounds and timeouts (the
/// outer connection, and a tunnel whose client chose http/1.1 by ALPN).
pub(crate) fn h1_server(proxy: &crate::config::ProxySettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.header_read_timeout)
        .max_buf_size(proxy.max_header_bytes.max(8192));
    builder
}

/// Serve the requests inside an open tunnel until it closes or airlock
/// drains. Not an `async fn`: one keeps its arguments beside its locals,
/// so `io` would be stored twice for every open tunnel. The connection
/// (which holds `io`) is boxed once and the returned future holds only the
/// box and the drain signal.
///
/// When ALPN named the protocol, that protocol's server is used directly.
/// The sniffing server reads the first bytes into a buffer of its own and
/// hands them back first, so hyper's first read is a few bytes and its
/// read buffer, grown again on the next read, doubles to 16 KiB for the
/// life of the tunnel: 8 KiB more for every idle tunnel.
fn serve_inner<I>(
    state: Arc<State>,
    target: Arc<Target>,
    io: TokioIo<I>,
    conn: ConnGuard,
    speaks: Speaks,
) -> Serving
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let generation = state.generation();
    let proxy = &generation.config.proxy;
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        let target = Arc::clone(&target);
        async move { Ok::<_, Infallible>(forward::forward(state, target, req).await) }
    });
    match speaks {
        Speaks::Http1 => {
            let served = h1_server(proxy).serve_connection(io, svc).with_upgrades();
            until_closed(Box::pin(served), |c| c.graceful_shutdown(), conn)
        }
        Speaks::Http2 => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX))
                .adaptive_window(true);
            let served = builder.serve_connection(io, svc);
            until_closed(Box::pin(served), |c| c.graceful_shutdown(), conn)
        }
        Speaks::Either => {
            let mut builder = tunnel_server(proxy);
            builder.http2().adaptive_window(true);
            let served = builder.serve_connection_with_upgrades(io, svc).into_owned();
            until_closed(Box::pin(served), |c| c.graceful_shutdown(), conn)
        }
    }
}

/// Drive a tunnel's connection until it ends, shutting it down gracefully
/// when airlock drains.
fn until_closed<C, E>(
    mut served: std::pin::Pin<Box<C>>,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>) + Send + 'static,
    conn: ConnGuard,
) -> Serving
where
    C: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send,
{
    Box::pin(async move {
        let mut drain = conn.shutdown.clone();
        let result = tokio::select! {
            r = served.as_mut() => r,
            _ = drain.changed() => {
                shutdown(served.as_mut());
                served.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "tunnel connection ended with an error");
        }
        drop(conn);
    })
}
