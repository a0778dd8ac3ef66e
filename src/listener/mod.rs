//! The proxy listener: accept, read the request head, and dispatch:
//! CONNECT → [`connect`] (decide, then intercept TLS), absolute-form
//! `http://` → [`forward`], anything else → 400.
//!
//! Limits live here: a semaphore caps concurrent client connections, every
//! connection has an idle timeout and a header-read timeout, and shutdown
//! stops accepting, asks every connection to finish, and waits up to
//! `drain_timeout`.

pub mod body;
pub mod connect;
pub mod forward;
pub mod io;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::audit::AuditSink;
use crate::config::Config;
use crate::error::ProxyError;
use crate::guard::Guard;
use crate::tls::ca::{CaFiles, CertificateAuthority};
use crate::tls::issue::LeafIssuer;
use crate::tls::upstream::{client_config, root_store};
use crate::upstream::{Connector, ProxyBody, Upstream};

/// Everything a request needs, built once per config generation.
#[derive(Debug)]
pub struct State {
    /// The compiled config.
    pub config: Arc<Config>,
    /// Leaf certificates for intercepted names.
    pub issuer: LeafIssuer,
    /// Pooled upstream clients.
    pub upstream: Upstream,
    /// The address guard.
    pub guard: Arc<Guard>,
    /// Audit events.
    pub audit: AuditSink,
}

/// What a connection task holds so that shutdown can wait for it and the
/// connection limit counts it (tunnels included).
#[derive(Clone)]
pub(crate) struct ConnGuard {
    _permit: Arc<OwnedSemaphorePermit>,
    _drain: mpsc::Sender<()>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// A running proxy. Dropping it starts a graceful shutdown.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads the CA, binds `[proxy] listen`, and starts serving.
    ///
    /// # Errors
    /// The CA cannot be loaded, the roots cannot be read, or the address is taken.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.proxy.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.proxy.listen))?;
        let addr = listener.local_addr()?;
        let audit = AuditSink::start(&config.audit).context("cannot open the audit output")?;
        let state = Arc::new(build_state(config, audit, addr)?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let done = tokio::spawn(accept_loop(listener, Arc::clone(&state), shutdown_rx));
        Ok(Self {
            addr,
            state,
            shutdown,
            done: Some(done),
        })
    }

    /// The bound proxy address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stops accepting, drains in-flight work (up to `drain_timeout`), returns.
    pub async fn shutdown(mut self) {
        let _sent = self.shutdown.send(true);
        if let Some(done) = self.done.take() {
            let _joined = done.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _sent = self.shutdown.send(true);
    }
}

/// Builds the per-generation state: CA, issuer, guard, upstream clients.
///
/// # Errors
/// CA or trust-store problems.
pub fn build_state(config: Config, audit: AuditSink, listen: SocketAddr) -> anyhow::Result<State> {
    crate::install_crypto_provider();
    let files = CaFiles {
        cert: config.tls.ca_cert.clone(),
        key: config.tls.ca_key.clone(),
    };
    let ca = Arc::new(
        CertificateAuthority::load(&files).context("cannot load the CA (run `airlock ca init`)")?,
    );
    let issuer = LeafIssuer::new(ca, config.tls.leaf_validity)?;
    let mut own = vec![listen];
    own.extend(config.proxy.admin);
    let guard = Arc::new(Guard::new(&config.dns, own, config.proxy.connect_timeout));
    let roots = Arc::new(root_store(&config.tls)?);
    let any = client_config(Arc::clone(&roots), &[b"h2", b"http/1.1"])?;
    let h1 = client_config(roots, &[b"http/1.1"])?;
    let timeout = config.proxy.connect_timeout;
    let upstream = Upstream::new(
        Connector::new(Arc::clone(&guard), any, timeout),
        Connector::new(Arc::clone(&guard), h1, timeout),
        config.proxy.idle_timeout,
    );
    Ok(State {
        config: Arc::new(config),
        issuer,
        upstream,
        guard,
        audit,
    })
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let proxy = &state.config.proxy;
    let limit = Arc::new(Semaphore::new(proxy.max_connections));
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "airlock listening");
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
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = ConnGuard {
            _permit: Arc::new(permit),
            _drain: drain_tx.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(serve_client(Arc::clone(&state), stream, peer, conn));
    }
    drop(listener);
    drop(drain_tx);
    let drain = state.config.proxy.drain_timeout;
    if tokio::time::timeout(drain, drain_rx.recv()).await.is_err() {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
    }
}

/// The outer connection: HTTP/1.1 from the sandbox to the proxy port.
async fn serve_client(state: Arc<State>, stream: TcpStream, peer: SocketAddr, conn: ConnGuard) {
    let _nodelay = stream.set_nodelay(true);
    let proxy = &state.config.proxy;
    let io = TokioIo::new(io::IdleTimeout::new(stream, proxy.idle_timeout));
    let svc_state = Arc::clone(&state);
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&svc_state);
        let conn = svc_conn.clone();
        async move { Ok::<_, Infallible>(dispatch(state, peer, conn, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.header_read_timeout)
        .max_buf_size(proxy.max_header_bytes.max(8192))
        .keep_alive(true);
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
