//! The client TLS config for upstream: verified against the system trust
//! store (default; corporate CAs live there) or Mozilla's roots, plus
//! `[tls] extra_upstream_roots`. There is no switch that disables
//! verification.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsError;
use super::{TlsSettings, UpstreamRoots};

/// Builds the root store from `[tls]`.
///
/// # Errors
/// An extra roots file is missing or holds no certificate; or the system
/// store is empty.
pub fn root_store(settings: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match settings.upstream_roots {
        UpstreamRoots::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        UpstreamRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system trust store");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "the system trust store has no certificates; only extra_upstream_roots are trusted"
                );
            }
        }
    }
    for path in &settings.extra_upstream_roots {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Invalid {
                path: shown,
                message: "no certificate in file".into(),
            });
        }
        for c in certs {
            roots.add(c)?;
        }
    }
    Ok(roots)
}

/// A client config offering `alpn` (e.g. h2 + http/1.1, or http/1.1 only
/// for WebSocket upgrades).
///
/// # Errors
/// rustls refused the protocol versions.
pub fn client_config(
    roots: Arc<RootCertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
