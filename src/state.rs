//! The composition root's data: what lives for the whole process
//! ([`State`]: the leaf issuer, the audit sink, limits, approvals, the
//! credential cache, the scanner) and what is built from one config
//! ([`Generation`]: the compiled config, the address guard, the upstream
//! clients), swapped whole on reload.
//!
//! The listener, the admin API and reload all depend on this module; it
//! depends on none of them. [`crate::server`] builds it and starts them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};

use crate::audit::AuditSink;
use crate::config::Config;
use crate::config::{SecretBackend, SecretsSettings};
use crate::credentials::{
    CachedSource, FileSource, ProcessEnv, SecretRef, SecretSource, SecretValue, VaultSource,
};
use crate::guard::Guard;
use crate::scan::{BuildError, HeldSecret, PatternSet, Scanner};
use crate::tls::ca::{CaFiles, CertificateAuthority};
use crate::tls::issue::LeafIssuer;
use crate::tls::upstream::{client_config, root_store};
use crate::upstream::{Connector, Upstream};

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
    /// Clients that aborted the handshake of a refused tunnel, by address
    /// and target: their next CONNECT there gets a plain 403.
    pub refused_aborts: moka::future::Cache<(std::net::IpAddr, crate::host::Host, u16), ()>,
}

/// Everything built from one config: swapped whole on reload, so a request
/// that took a snapshot finishes under the rules it started with.
#[derive(Debug)]
pub struct Generation {
    /// The compiled config.
    pub config: Arc<Config>,
    /// Its rules version, shared by every audit event under it.
    pub version: Arc<str>,
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
        self.approvals.set_replica(&generation.config.proxy.replica);
        let decider = generation.config.approval.decider.clone().map(|mut d| {
            d.tls = Some(Arc::clone(&generation.upstream_tls));
            d
        });
        if let Err(e) = self.approvals.set_decider(decider) {
            tracing::error!(error = %e, "approval decider not usable; keeping the previous one");
        }
        let config = &generation.config;
        let urls: Vec<String> = std::iter::once(&config.policy)
            .chain(config.sandboxes.iter().map(|s| &s.policy))
            .flat_map(|p| p.rules())
            .filter_map(|r| match &r.decider {
                Some(crate::approval::RuleDecider::Url(u)) => Some(u.clone()),
                _ => None,
            })
            .collect();
        let template = crate::approval::DeciderSettings {
            url: String::new(),
            timeout: config.approval.decider_timeout,
            token: config.approval.decider_token.clone(),
            tls: Some(Arc::clone(&generation.upstream_tls)),
        };
        if let Err(e) = self.approvals.set_rule_deciders(urls, &template) {
            tracing::error!(error = %e, "a rule's decider is not usable; keeping the previous ones");
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
    ///
    /// Runs in the request that fetched the secret, before that request is
    /// scanned (so the value is blocked from the first request on), and so
    /// does not rebuild the whole scanner: only the held values' search is
    /// built ([`Scanner::with_held`]); the patterns' automata,
    /// built once per generation, are shared.
    pub fn hold_secret(&self, secret: HeldSecret) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if let Some(existing) = held.iter_mut().find(|h| h.id() == secret.id()) {
            *existing = secret;
        } else {
            held.push(secret);
        }
        let generation = self.generation();
        let values = with_placeholders(&held, &generation);
        let built = match self.scanner.load_full() {
            Some(current) => current.with_held(&values).map(Some),
            None => build_scanner(&generation, &values),
        };
        match built {
            Ok(s) => self.scanner.store(s.map(Arc::new)),
            // Keep the previous scanner rather than scan with nothing.
            Err(e) => {
                tracing::error!(error = %e, "cannot add a held secret to the scanner; keeping the previous one")
            }
        }
    }

    /// Builds the scanner from this generation's patterns and the held
    /// values: on start and on reload (the patterns may have changed).
    fn rebuild_scanner(&self) {
        // Under the held lock: a fill and a reload do not interleave.
        let Ok(held) = self.held.lock() else {
            return;
        };
        let generation = self.generation();
        let values = with_placeholders(&held, &generation);
        match build_scanner(&generation, &values) {
            Ok(s) => self.scanner.store(s.map(Arc::new)),
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
            version: Arc::from(config.version.as_str()),
            config: Arc::new(config),
            upstream,
            guard,
            upstream_tls,
        })
    }
}

/// How long a client that aborted the handshake on a refused tunnel's
/// leaf gets a plain `403` to CONNECT for the same target instead.
pub const REFUSED_ABORT_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

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
        refused_aborts: moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(REFUSED_ABORT_MEMORY)
            .build(),
    };
    state.configure_decider(&state.generation());
    state.rebuild_scanner();
    Ok(state)
}

/// The held values plus this generation's placeholders: placeholders
/// travel only in their own header to their own host; anywhere in a body or
/// response they are findings like a secret.
fn with_placeholders(held: &[HeldSecret], generation: &Generation) -> Vec<HeldSecret> {
    let mut values = held.to_vec();
    values.extend(
        generation
            .config
            .policy
            .placeholders()
            .iter()
            .map(|p| HeldSecret::new(format!("placeholder:{p}"), p.as_bytes().to_vec())),
    );
    values
}

/// The whole scanner for `generation` and `held`; `None` when there is
/// nothing to scan for.
fn build_scanner(
    generation: &Generation,
    held: &[HeldSecret],
) -> Result<Option<Scanner>, BuildError> {
    match &generation.config.scan.pattern_set {
        Some(p) => Scanner::new(p, held).map(Some),
        None if held.is_empty() => Ok(None),
        None => {
            let empty =
                PatternSet::parse("", "<none>").map_err(|e| BuildError::new(e.to_string()))?;
            Scanner::new(&empty, held).map(Some)
        }
    }
}
