//! The composition root: [`Server::start`] binds the proxy and admin
//! addresses, opens the audit output, builds the [`State`], connects the
//! secret backend, and starts the listener and the admin API;
//! [`Server::watch_config`] starts the reload watcher ([`reload`]);
//! [`Server::shutdown`] stops accepting and drains.

pub mod reload;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::audit::AuditSink;
use crate::config::{Config, ConfigSource};
use crate::state::{State, build_state};

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
        let done = tokio::spawn(serve_and_drain(listener, Arc::clone(&state), shutdown_rx));
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
    /// disk; see [`reload`].
    pub fn watch_config(&self, source: ConfigSource) {
        reload::spawn(Arc::clone(&self.state), source, self.shutdown.subscribe());
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

/// Runs the accept loop until shutdown, then waits for the connections it
/// started to finish, up to `drain_timeout`.
async fn serve_and_drain(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    crate::listener::accept_loop(listener, Arc::clone(&state), drain_tx, shutdown).await;
    let drain = state.generation().config.proxy.drain_timeout;
    if tokio::time::timeout(drain, drain_rx.recv()).await.is_err() {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
    }
}
