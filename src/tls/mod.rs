//! TLS: airlock's CA ([`ca`]), the leaf certificates it mints for the
//! sandbox side ([`issue`]), and the verified client config for upstream
//! ([`upstream`]).

pub mod ca;
pub mod issue;
pub mod upstream;

use std::path::PathBuf;
use std::time::Duration;

/// Which roots verify upstream servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRoots {
    /// The operating system's trust store (corporate CAs live there).
    System,
    /// Mozilla's roots compiled into airlock (webpki-roots).
    Webpki,
}

/// `[tls]`, compiled.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// CA certificate PEM.
    pub ca_cert: PathBuf,
    /// CA private key PEM.
    pub ca_key: PathBuf,
    /// Base roots for upstream verification.
    pub upstream_roots: UpstreamRoots,
    /// Extra PEM bundles trusted upstream.
    pub extra_upstream_roots: Vec<PathBuf>,
    /// Lifetime of minted leaf certificates.
    pub leaf_validity: Duration,
}

/// A TLS setup problem (CA files, PEM, roots).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM or certificate problem.
    #[error("{path}: {message}")]
    Invalid {
        /// Which file.
        path: String,
        /// Why.
        message: String,
    },
    /// Certificate generation failed.
    #[error("minting a certificate failed: {0}")]
    Mint(#[from] rcgen::Error),
    /// rustls refused a config.
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}
