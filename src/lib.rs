//! airlock: the one door between an agent sandbox and the network.
//!
//! A request moves through these modules, in this order:
//!
//! [`listener`] (accept, CONNECT, absolute-form) → [`policy`] (host, port,
//! method, path) → [`guard`] (resolve, refuse private addresses, dial the
//! checked address) → [`tls`] (mint a leaf for the client, verify upstream) →
//! [`scan`] (request body) → [`upstream`] (pooled h1/h2 client) → [`scan`]
//! (response body) → back to the sandbox, with an [`audit`] event at every
//! decision. [`config`] turns the TOML files into the compiled types all of
//! these share; [`error`] is the one place a failure becomes a response.
//!
//! See `docs/architecture.md` for the chart and the invariant → test table.

pub mod admin;
pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod error;
pub mod guard;
pub mod identity;
pub mod inject;
pub mod limits;
pub mod listener;
pub mod policy;
pub mod run;
pub mod scan;
pub mod tls;
pub mod upstream;

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
