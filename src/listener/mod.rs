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
pub(crate) mod scanning;
pub(crate) mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::audit::AuditSink;
use crate::config::Config;
use crate::config::{SecretBackend, SecretsSettings};
use crate::credentials::{
    CachedSource, FileSource, ProcessEnv, SecretRef, SecretSource, SecretValue, VaultSource,
};
use crate::error::ProxyError;
use crate::guard::Guard;
use crate::scan::{HeldSecret, PatternSet, Scanner};
use crate::tls::ca::{CaFiles, CertificateAuthority};
use crate::tls::issue::LeafIssuer;
use crate::tls::upstream::{client_config, root_store};
use crate::upstream::{Connector, ProxyBody, Upstream};

/// What lives for the whole process: the leaf issuer (and so the CA), the
/// audit sink and its counters, and the current config generation.
pub struct State {
    generation: ArcSwap<Generation>,
    /// Leaf certificates for intercepted names.
    pub issuer: LeafIssuer,
    /// Audit events (and the metrics derived from them).
    pub audit: AuditSink,
    /// Rate limits and byte budgets.
    pub limiter: crate::limits::Limiter,
    /// Requests held for approval, and scoped grants (survive reloads).
    approvals: Arc<crate::approval::Approvals>,
    /// airlock's own listeners: never a destination.
    own: Vec<SocketAddr>,
    /// The secret scanner: this generation's patterns plus the values
    /// airlock holds. `None` when there is nothing to scan for.
    scanner: ArcSwapOption<Scanner>,
    /// The secret values airlock has fetched (for the scanner).
    held: Mutex<Vec<HeldSecret>>,
    /// Where credentials come from, cached. `None` when no backend is set up
    /// (the file backend without its file): injections then fail closed.
    secrets: ArcSwapOption<CachedSource>,
}

/// Everything built from one config: swapped whole on reload, so a request
/// that took a snapshot finishes under the rules it started with.
#[derive(Debug)]
pub struct Generation {
    /// The compiled config.
    pub config: Arc<Config>,
    /// Pooled upstream clients (dialing through this generation's guard).
    pub upstream: Upstream,
    /// The address guard.
    pub guard: Arc<Guard>,
    /// The upstream TLS config (http/1.1), reused for an https decider.
    pub upstream_tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The generation in force now.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// The approval gate.
    pub fn approvals(&self) -> &Arc<crate::approval::Approvals> {
        &self.approvals
    }

    /// Points the approval gate at this generation's decider (with the
    /// generation's upstream trust for an https decider).
    fn configure_decider(&self, generation: &Generation) {
        let decider = generation.config.approval.decider.clone().map(|mut d| {
            d.tls = Some(Arc::clone(&generation.upstream_tls));
            d
        });
        if let Err(e) = self.approvals.set_decider(decider) {
            tracing::error!(error = %e, "approval decider not usable; keeping the previous one");
        }
    }

    /// The credential cache, if a backend is configured.
    pub fn secrets(&self) -> Option<Arc<CachedSource>> {
        self.secrets.load_full()
    }

    /// Connects the secret backend of `settings` and installs its cache. Values
    /// it fetches are registered with the scanner.
    ///
    /// # Errors
    /// A misconfigured backend (unsafe file permissions, bad Vault settings).
    pub async fn connect_secrets(
        self: &Arc<Self>,
        settings: &SecretsSettings,
        needed: bool,
    ) -> anyhow::Result<()> {
        let source: Arc<dyn SecretSource> = match &settings.backend {
            SecretBackend::File(path) => {
                if !path.exists() && !needed {
                    tracing::info!(file = %path.display(), "no secrets file; no rule injects a credential");
                    self.secrets.store(None);
                    return Ok(());
                }
                Arc::new(FileSource::load(path).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            SecretBackend::Vault(v) => Arc::new(
                VaultSource::connect(v.clone(), &ProcessEnv)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        let cache = CachedSource::new(source, settings.cache_ttl);
        let weak = Arc::downgrade(self);
        cache.on_fill(Arc::new(move |r: &SecretRef, v: &SecretValue| {
            if let Some(state) = weak.upgrade() {
                state.hold_secret(HeldSecret::new(r.to_string(), v.expose_secret().to_vec()));
            }
        }));
        tracing::info!(source = %cache.describe(), "secret backend connected");
        let cache = Arc::new(cache);
        // Expired values leave memory within a second, busy or idle.
        CachedSource::spawn_sweeper(&cache, std::time::Duration::from_secs(1));
        self.secrets.store(Some(cache));
        Ok(())
    }

    /// The scanner in force now.
    pub fn scanner(&self) -> Option<Arc<Scanner>> {
        self.scanner.load_full()
    }

    /// Registers a secret value airlock holds, so the scanner finds it in
    /// any body, header or URL, in the encodings a leak would take.
    pub fn hold_secret(&self, secret: HeldSecret) {
        if let Ok(mut held) = self.held.lock() {
            if let Some(existing) = held.iter_mut().find(|h| h.id() == secret.id()) {
                *existing = secret;
            } else {
                held.push(secret);
            }
        }
        self.rebuild_scanner();
    }

    /// Rebuilds the scanner from the current patterns and held values.
    /// Off the request path: on start, reload, and when a secret is fetched.
    fn rebuild_scanner(&self) {
        let generation = self.generation();
        let mut held = self.held.lock().map(|h| h.clone()).unwrap_or_default();
        // Placeholders travel only in their own header to their own host;
        // anywhere in a body or response they are findings like a secret.
        held.extend(
            generation
                .config
                .policy
                .placeholders()
                .iter()
                .map(|p| HeldSecret::new(format!("placeholder:{p}"), p.as_bytes().to_vec())),
        );
        let patterns = generation.config.scan.pattern_set.clone();
        if patterns.is_none() && held.is_empty() {
            self.scanner.store(None);
            return;
        }
        let empty = PatternSet::parse("", "<none>");
        let built = match (&patterns, &empty) {
            (Some(p), _) => Scanner::new(p, &held),
            (None, Ok(e)) => Scanner::new(e, &held),
            (None, Err(e)) => {
                tracing::error!(error = %e, "cannot build an empty pattern set");
                return;
            }
        };
        match built {
            Ok(s) => self.scanner.store(Some(Arc::new(s))),
            // Keep the previous scanner rather than scan with nothing.
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the secret scanner; keeping the previous one")
            }
        }
    }

    /// Builds a generation from `config` and swaps it in.
    ///
    /// # Errors
    /// The new config's trust store cannot be read; the old one stays.
    pub fn install(&self, config: Config) -> anyhow::Result<()> {
        let generation = Generation::build(config, &self.own)?;
        self.audit
            .metrics()
            .set_rules_version(&generation.config.version);
        self.configure_decider(&generation);
        self.generation.store(Arc::new(generation));
        self.rebuild_scanner();
        Ok(())
    }
}

impl Generation {
    fn build(config: Config, own: &[SocketAddr]) -> anyhow::Result<Self> {
        let guard = Arc::new(Guard::new(
            &config.dns,
            own.to_vec(),
            config.proxy.connect_timeout,
        ));
        let roots = Arc::new(root_store(&config.tls)?);
        let any = client_config(Arc::clone(&roots), &[b"h2", b"http/1.1"])?;
        let h1 = client_config(roots, &[b"http/1.1"])?;
        let upstream_tls = Arc::clone(&h1);
        let timeout = config.proxy.connect_timeout;
        let upstream = Upstream::new(
            Connector::new(Arc::clone(&guard), any, timeout),
            Connector::new(Arc::clone(&guard), h1, timeout),
            config.proxy.idle_timeout,
        );
        Ok(Self {
            config: Arc::new(config),
            upstream,
            guard,
            upstream_tls,
        })
    }
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
    admin: Option<SocketAddr>,
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
    /// Loads the CA, binds `[proxy] listen` (and `admin`), and starts serving.
    ///
    /// # Errors
    /// The CA cannot be loaded, the roots cannot be read, or an address is taken.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.proxy.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.proxy.listen))?;
        let addr = listener.local_addr()?;
        let admin_listener = match config.proxy.admin {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on admin address {a}"))?,
            ),
            None => None,
        };
        let admin = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let audit = AuditSink::start(&config.audit).context("cannot open the audit output")?;
        let own = std::iter::once(addr).chain(admin).collect();
        let admin_token = config.proxy.admin_token.clone();
        let secrets = config.secrets.clone();
        let needed = config.policy.rules().iter().any(|r| r.inject.is_some());
        if admin.is_some()
            && admin_token.is_none()
            && config.policy.rules().iter().any(|r| r.approval)
        {
            tracing::warn!(
                "approval rules with an admin API and no admin_token_file: a sandbox on this \
                 host that can reach the admin address directly (not through the proxy) could \
                 approve its own requests; set admin_token_file, or isolate it (airlock run isolates by default)"
            );
        }
        let state = Arc::new(build_state(config, audit, own)?);
        state.connect_secrets(&secrets, needed).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        if let Some(l) = admin_listener {
            tokio::spawn(crate::admin::serve(
                l,
                Arc::clone(&state),
                admin_token,
                shutdown_rx.clone(),
            ));
        }
        let done = tokio::spawn(accept_loop(listener, Arc::clone(&state), shutdown_rx));
        Ok(Self {
            addr,
            admin,
            state,
            shutdown,
            done: Some(done),
        })
    }

    /// The bound proxy address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Reloads on SIGHUP and whenever the config or a rule file changes on
    /// disk; see [`crate::config::reload`].
    pub fn watch_config(&self, source: crate::config::reload::ConfigSource) {
        crate::config::reload::spawn(Arc::clone(&self.state), source, self.shutdown.subscribe());
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

/// Builds the process state: CA, issuer, and the first generation.
///
/// # Errors
/// CA or trust-store problems.
pub fn build_state(
    config: Config,
    audit: AuditSink,
    own: Vec<SocketAddr>,
) -> anyhow::Result<State> {
    crate::install_crypto_provider();
    let files = CaFiles {
        cert: config.tls.ca_cert.clone(),
        key: config.tls.ca_key.clone(),
    };
    let ca = Arc::new(
        CertificateAuthority::load(&files).context("cannot load the CA (run `airlock ca init`)")?,
    );
    let issuer = LeafIssuer::new(ca, config.tls.leaf_validity)?;
    audit.metrics().set_rules_version(&config.version);
    let generation = Generation::build(config, &own)?;
    let state = State {
        generation: ArcSwap::from_pointee(generation),
        issuer,
        approvals: Arc::new(crate::approval::Approvals::new(audit.clone())),
        audit,
        limiter: crate::limits::Limiter::default(),
        own,
        scanner: ArcSwapOption::empty(),
        held: Mutex::new(Vec::new()),
        secrets: ArcSwapOption::empty(),
    };
    state.configure_decider(&state.generation());
    state.rebuild_scanner();
    Ok(state)
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let proxy = state.generation().config.proxy.clone();
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
    let drain = state.generation().config.proxy.drain_timeout;
    if tokio::time::timeout(drain, drain_rx.recv()).await.is_err() {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
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
