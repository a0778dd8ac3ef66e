//! airlock's certificate authority: created by `airlock ca init`, loaded at
//! start. The key is never logged and its file is written with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsError;

/// A loaded CA: its certificate (sent in chains) and an issuer for leaves.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateAuthority(<key redacted>)")
    }
}

/// The two files `airlock ca init` writes.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// `ca.pem`.
    pub cert: PathBuf,
    /// `ca-key.pem` (0600).
    pub key: PathBuf,
}

impl CaFiles {
    /// `dir/ca.pem` and `dir/ca-key.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
        }
    }
}

impl CertificateAuthority {
    /// Creates a new ECDSA P-256 CA and writes it to `files`.
    ///
    /// # Errors
    /// Either file exists and `force` is false; or writing fails.
    pub fn init(files: &CaFiles, force: bool) -> Result<(), TlsError> {
        if !force {
            for p in [&files.cert, &files.key] {
                if p.exists() {
                    return Err(TlsError::Invalid {
                        path: p.display().to_string(),
                        message: "already exists; pass --force to replace it (every sandbox that trusts the old CA must then trust the new one)".into(),
                    });
                }
            }
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "airlock egress CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "airlock");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        if let Some(dir) = files.cert.parent() {
            fs::create_dir_all(dir).map_err(|source| TlsError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        fs::write(&files.cert, cert.pem()).map_err(|source| TlsError::Io {
            path: files.cert.display().to_string(),
            source,
        })?;
        Ok(())
    }

    /// Loads the CA from PEM files.
    ///
    /// # Errors
    /// Missing or malformed files.
    pub fn load(files: &CaFiles) -> Result<Self, TlsError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Invalid {
            path: files.key.display().to_string(),
            message: format!("not a PEM private key: {e}"),
        })?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Invalid {
                path: files.cert.display().to_string(),
                message: format!("not a PEM certificate: {e}"),
            })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| TlsError::Invalid {
            path: files.cert.display().to_string(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(Self { cert_der, issuer })
    }

    /// The CA certificate (DER), appended to every leaf chain.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    // An existing file keeps its old mode through open(); force 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(bytes).map_err(io)
}

/// How to make common clients trust the CA, printed by `airlock ca init`.
pub fn trust_instructions(cert: &Path) -> String {
    let c = cert.display();
    format!(
        "Trust this CA in the sandbox (airlock run sets all of these for you):\n\
         \x20 curl:            curl --cacert {c} ...   (or CURL_CA_BUNDLE={c})\n\
         \x20 Python requests: REQUESTS_CA_BUNDLE={c}\n\
         \x20 Python ssl/httpx/OpenSSL tools: SSL_CERT_FILE={c}\n\
         \x20 Node.js:         NODE_EXTRA_CA_CERTS={c}\n\
         \x20 git:             GIT_SSL_CAINFO={c}   (or git config http.sslCAInfo {c})\n\
         \x20 Debian/Ubuntu system store: cp {c} /usr/local/share/ca-certificates/airlock.crt && update-ca-certificates\n\
         \x20 Fedora/RHEL system store:   cp {c} /etc/pki/ca-trust/source/anchors/airlock.pem && update-ca-trust\n\
         Then point the sandbox at airlock: HTTPS_PROXY=http://127.0.0.1:3128 HTTP_PROXY=http://127.0.0.1:3128\n"
    )
}
