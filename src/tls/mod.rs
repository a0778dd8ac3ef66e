//! TLS: airlock's CA ([`ca`]), the leaf certificates it mints for the
//! sandbox side ([`issue`]), and the verified client config for upstream
//! ([`upstream`]).

pub mod ca;
pub mod issue;
pub mod upstream;

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
