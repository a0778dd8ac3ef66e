//! Live reload: on SIGHUP, and when the config or a rule file changes on
//! disk, re-read and compile everything off the request path, then swap the
//! new generation in atomically. A config that does not compile is refused
//! with file and line, and the last good one keeps running.
//!
//! Requests already in flight keep the generation they started with;
//! every request inside a long-lived tunnel is judged by the generation in
//! force when it arrives, so a host removed from the rules is cut off at
//! the tunnel's next request.
//!
//! Not reloaded (they need a restart, and a reload that changes them says
//! so in the log): the listen and admin addresses, the connection limit, the
//! CA, and the audit output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::audit::AuditEvent;
use crate::config::{Config, ConfigSource};
use crate::state::State;

/// Loads `source` and installs it in `state` if it compiles. Returns the
/// new rules version, or the errors (the old generation stays).
///
/// # Errors
/// The config did not compile or its trust store could not be read.
pub fn reload(state: &State, source: &ConfigSource) -> Result<String, String> {
    let old = state.generation();
    let result = source
        .load()
        .map_err(|e| e.to_string())
        .and_then(|mut config| {
            // `serve --learn --permissive` is a process setting, not the file's.
            config.learn_permissive = old.config.learn_permissive;
            warn_fixed_settings(&old.config, &config);
            let version = config.version.clone();
            state.install(config).map_err(|e| format!("{e:#}"))?;
            Ok(version)
        });
    match &result {
        Ok(version) => {
            tracing::info!(version = %version, previous = %old.config.version, "config reloaded");
            state.audit.emit(AuditEvent::reload(
                true,
                &old.config.source,
                version,
                "reloaded",
            ));
        }
        Err(errors) => {
            for line in errors.lines() {
                tracing::error!(error = %line, "config reload refused; the last good config keeps running");
            }
            state.audit.emit(AuditEvent::reload(
                false,
                &old.config.source,
                &old.config.version,
                "reload_refused",
            ));
        }
    }
    result
}

fn warn_fixed_settings(old: &Config, new: &Config) {
    if old.proxy.listen != new.proxy.listen || old.proxy.admin != new.proxy.admin {
        tracing::warn!("listen/admin addresses changed: they take effect only after a restart");
    }
    if old.tls.ca_cert != new.tls.ca_cert || old.tls.ca_key != new.tls.ca_key {
        tracing::warn!(
            "CA paths changed: the CA is loaded only at start; restart to use the new one"
        );
    }
    if old.audit != new.audit {
        tracing::warn!("audit output changed: it takes effect only after a restart");
    }
}

/// Spawns the watcher: SIGHUP and file changes trigger [`reload`].
pub fn spawn(state: Arc<State>, source: ConfigSource, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let watcher = start_watcher(&state, &source, tx.clone());
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading config");
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            // Editors write in several steps (truncate, write, rename):
            // let the burst settle, then reload once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let _ = reload(&state, &source);
            // Rule files may have been added or removed: watch the new set.
            _watcher = start_watcher(&state, &source, tx.clone());
        }
    });
}

/// Watches the config file, every rule file, and the folders they live in
/// (new files matching an include glob count as changes).
fn start_watcher(
    state: &State,
    source: &ConfigSource,
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let generation = state.generation();
    let mut paths: Vec<PathBuf> = generation
        .config
        .rule_files
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    match source {
        ConfigSource::File(p) => paths.push(
            p.parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from(".")),
        ),
        ConfigSource::Embedded(layout) => paths.push(layout.rules.join("rules/allow")),
    }
    paths.sort();
    paths.dedup();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event
                && (e.kind.is_modify() || e.kind.is_create() || e.kind.is_remove())
                && e.paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "toml") || p.is_dir())
            {
                let _ = tx.try_send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch rule files; reload with SIGHUP");
                return None;
            }
        };
    for p in &paths {
        let dir = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p.as_path()
        };
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot watch; reload with SIGHUP");
        }
    }
    Some(watcher)
}
