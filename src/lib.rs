//! airlock: the one door between an agent sandbox and the network.
//!
//! The modules below are listed in the order a request meets them (not
//! alphabetically), then the ones that build and drive the process:
//!
//! [`listener`] (accept, CONNECT, absolute-form) → [`identity`] (which
//! sandbox) → [`policy`] (host, port, method, path: one decision) →
//! [`limits`] (rate, byte budget) → [`approval`] (held for a human, when the
//! rule says so) → [`guard`] (resolve, refuse private addresses, dial the
//! checked address) → [`tls`] (mint a leaf for the client, verify upstream)
//! → [`credentials`] (fetch a secret, inject it in this host's header) → [`scan`] (request body) → [`upstream`] (pooled h1/h2 client) →
//! [`scan`] (response body) → back to the sandbox, with an [`audit`] event at
//! every decision; [`error`] is the one place a failure becomes a response.
//!
//! [`host`] is the shared vocabulary (names, addresses, host patterns).
//! Around the request path: [`config`] turns the TOML files into a
//! [`config::Config`] and nothing more; [`state`] holds what lives for the
//! process and the generation built from one config; [`server`] is the
//! composition root (binds, builds the state, starts the listener, the
//! [`admin`] API and the reload watcher, drains); [`cli`], [`run`] and [`learn`]
//! (`learn`, `propose`, `replay`: the audit log read back through the
//! policy) are the commands.
//!
//! See `docs/architecture.md` for the chart and the invariant → test table.

// The request path, in order (rustfmt.toml keeps this order).
pub mod listener;
pub mod identity;
pub mod policy;
pub mod limits;
pub mod approval;
pub mod guard;
pub mod tls;
pub mod credentials;
pub mod scan;
pub mod upstream;
pub mod audit;
pub mod error;

// The vocabulary every stage shares (a leaf: it imports no other module).
pub mod host;

// Around it: config, the process state, the composition root, the commands.
pub mod config;
pub mod state;
pub mod server;
pub mod admin;
pub mod cli;
pub mod run;
pub mod learn;

// The properties the fuzz targets check (`fuzz/`), replayed by `cargo test`.
#[doc(hidden)]
pub mod fuzzing;

/// Installs ring as the process-wide rustls crypto provider.
///
/// airlock uses ring everywhere (rustls, rcgen, the upstream client and the
/// test clients): one provider, no C toolchain or cmake at build time, and
/// its ECDSA P-256 signing (the cost of minting a leaf) is fast. Calling this
/// twice is harmless.
pub fn install_crypto_provider() {
    // An Err only means a provider is already installed, which is the goal.
    let _already = rustls::crypto::ring::default_provider().install_default();
}
