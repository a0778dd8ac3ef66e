//! Leaf certificates for the sandbox side of an intercepted tunnel.
//!
//! One ECDSA P-256 leaf key pair, made at start and shared by every leaf:
//! a new name costs one signature (31.6 µs, `cargo bench --bench mint`), not a key generation. Each leaf names
//! exactly one host (DNS or IP SAN), carries the Authority Key Identifier
//! (Python 3.13's strict verification requires it), is valid for
//! `[tls] leaf_validity`, and is cached for half of that. Concurrent first
//! requests for one name mint it once (moka's `try_get_with` coalesces them).
//!
//! Leaves for refused tunnels (names the rules or the guard refuse) live in
//! a cache of their own, smaller: an agent sending CONNECTs to thousands of
//! made-up names fills that one, never the cache of names it may reach.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;
use super::ca::CertificateAuthority;
use crate::policy::Host;

/// Leaves cached for names a tunnel may reach.
const LEAF_CACHE: u64 = 10_000;
/// Leaves cached for refused names.
const REFUSED_LEAF_CACHE: u64 = 1_000;

/// Mints and caches per-host server configs.
pub struct LeafIssuer {
    ca: Arc<CertificateAuthority>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<CryptoProvider>,
    validity: Duration,
    cache: Cache<Host, Arc<ServerConfig>>,
    /// Leaves for refused tunnels, apart so a flood of names cannot evict
    /// the allowed ones.
    refused: Cache<Host, Arc<ServerConfig>>,
    minted: std::sync::atomic::AtomicU64,
    lookups: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LeafIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafIssuer")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl LeafIssuer {
    /// A new issuer with a fresh leaf key.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn new(ca: Arc<CertificateAuthority>, validity: Duration) -> Result<Self, TlsError> {
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&der)?;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            provider: Arc::new(sandbox_side_provider()),
            validity,
            cache: Cache::builder()
                .max_capacity(LEAF_CACHE)
                .time_to_live(validity / 2)
                .build(),
            refused: Cache::builder()
                .max_capacity(REFUSED_LEAF_CACHE)
                .time_to_live(validity / 2)
                .build(),
            minted: std::sync::atomic::AtomicU64::new(0),
            lookups: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The server config presenting a leaf for `host` (cached).
    ///
    /// # Errors
    /// Minting failed.
    pub async fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, Arc<TlsError>> {
        self.lookup(&self.cache, host).await
    }

    /// The server config for a refused tunnel to `host`: the same leaf,
    /// from the refused names' own cache.
    ///
    /// # Errors
    /// Minting failed.
    pub async fn refused_server_config(
        &self,
        host: &Host,
    ) -> Result<Arc<ServerConfig>, Arc<TlsError>> {
        self.lookup(&self.refused, host).await
    }

    /// `host`'s leaf from `cache`, minted on a miss (once for concurrent
    /// first lookups).
    async fn lookup(
        &self,
        cache: &Cache<Host, Arc<ServerConfig>>,
        host: &Host,
    ) -> Result<Arc<ServerConfig>, Arc<TlsError>> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cache
            .try_get_with(host.clone(), async { self.mint(host).map(Arc::new) })
            .await
    }

    /// How many leaf lookups there were (hits + misses), for metrics.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many leaves were minted (cache misses), for tests and metrics.
    pub fn minted(&self) -> u64 {
        self.minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many leaves the cache holds now (approximate: moka counts
    /// lazily), for metrics.
    pub fn cached(&self) -> u64 {
        self.cache.entry_count() + self.refused.entry_count()
    }

    fn mint(&self, host: &Host) -> Result<ServerConfig, TlsError> {
        let certified = Arc::new(self.mint_leaf(host)?);
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // airlock's order (see `sandbox_side_provider`), not the client's.
        config.ignore_client_order = true;
        // No session resumption: every tunnel's handshake is a full one.
        // rustls's defaults send two TLS 1.3 tickets after each handshake
        // (one more write, six `getrandom` calls, two sessions stored) that
        // clients opening one connection per process never use, and give
        // each leaf a store of 256 sessions: times the 11,000 cached leaves,
        // an agent could grow airlock's memory by handshaking.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// Signs a leaf for `host` with the shared leaf key: chain = [leaf, CA].
    fn mint_leaf(&self, host: &Host) -> Result<CertifiedKey, TlsError> {
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host {
            Host::Name(n) => SanType::DnsName(n.clone().try_into()?),
            Host::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_string());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after =
            now + time::Duration::try_from(self.validity).unwrap_or(time::Duration::days(1));
        let cert = params.signed_by(&self.leaf_key, self.ca.issuer())?;
        let chain = vec![cert.der().clone(), self.ca.cert_der().clone()];
        Ok(CertifiedKey::new(chain, Arc::clone(&self.signing_key)))
    }
}

/// The sandbox side's cryptography: *ring*'s, with the AES-128-GCM suites
/// first. Clients (rustls, OpenSSL) put AES-256-GCM with SHA-384 first,
/// and SHA-384 is the handshake's hash too: its key schedule's dozens of
/// HMACs run on SHA-512 blocks in software, where SHA-256 has the CPU's
/// SHA instructions (a new CONNECT + TLS cost 8% less CPU; AES-128's 10
/// rounds to AES-256's 14 did not show in 64 MiB transfers). Every suite
/// stays offered, so every client still connects; the
/// upstream side keeps the default order.
fn sandbox_side_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: each group keeps the default order.
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// Presents one certificate whatever the client hello says: the name is
/// the CONNECT host, checked against SNI before this is used.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tls::ca::CaFiles;

    fn issuer() -> (LeafIssuer, tempfile::TempDir) {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::in_dir(dir.path());
        CertificateAuthority::init(&files, false).unwrap();
        let ca = Arc::new(CertificateAuthority::load(&files).unwrap());
        (LeafIssuer::new(ca, Duration::from_secs(3600)).unwrap(), dir)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn a_flood_of_refused_names_never_evicts_an_allowed_leaf() {
        let (issuer, _dir) = issuer();
        let allowed = Host::parse("api.example.test").unwrap();
        let first = issuer.server_config(&allowed).await.unwrap();
        for i in 0..(LEAF_CACHE + 500) {
            let name = Host::parse(&format!("x{i}.evil.test")).unwrap();
            issuer.refused_server_config(&name).await.unwrap();
        }
        issuer.refused.run_pending_tasks().await;
        issuer.cache.run_pending_tasks().await;
        assert!(issuer.refused.entry_count() <= REFUSED_LEAF_CACHE);
        let minted = issuer.minted();
        let again = issuer.server_config(&allowed).await.unwrap();
        assert_eq!(issuer.minted(), minted, "the allowed leaf was minted again");
        assert!(Arc::ptr_eq(&first, &again));
    }

    /// One handshake in memory: `client` sends `ping` to a server on
    /// `server_config`, which echoes it and closes; the client reads to
    /// the end (a session ticket, sent after the handshake, would arrive
    /// before it) and is returned for what was negotiated.
    async fn ping(
        server_config: Arc<ServerConfig>,
        client: rustls::ClientConfig,
        name: &str,
    ) -> rustls::ClientConnection {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let mut tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), c)
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        server.await.unwrap();
        tls.into_inner().1
    }

    /// A client config trusting only airlock's CA, on `provider` and
    /// `version`.
    fn client(
        issuer: &LeafIssuer,
        provider: CryptoProvider,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(issuer.ca.cert_der().clone()).unwrap();
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// A client that would resume (rustls keeps tickets and session ids by
    /// default) gets a full handshake every time, in TLS 1.3 and 1.2: no
    /// ticket is sent and no session is stored.
    #[tokio::test]
    async fn no_handshake_is_resumed() {
        let (issuer, _dir) = issuer();
        let host = Host::parse("api.example.test").unwrap();
        let server_config = issuer.server_config(&host).await.unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // One config for all three: its session cache is shared.
            let client = client(&issuer, rustls::crypto::ring::default_provider(), version);
            for round in 0..3 {
                let tls = ping(
                    Arc::clone(&server_config),
                    client.clone(),
                    "api.example.test",
                )
                .await;
                assert_eq!(
                    tls.handshake_kind(),
                    Some(rustls::HandshakeKind::Full),
                    "{version:?}, connection {round}"
                );
            }
        }
    }

    /// A client that prefers AES-256-GCM-SHA384 (rustls's and OpenSSL's
    /// default order) gets AES-128-GCM-SHA256, in TLS 1.3 and 1.2; a client
    /// that offers SHA-384 suites only still connects.
    #[tokio::test]
    async fn the_sandbox_side_prefers_aes_128_and_still_meets_every_client() {
        use rustls::crypto::ring::cipher_suite as suites;
        let (issuer, _dir) = issuer();
        let host = Host::parse("api.example.test").unwrap();
        let server_config = issuer.server_config(&host).await.unwrap();
        let cases = [
            (
                &rustls::version::TLS13,
                None,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS12,
                None,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS13,
                Some(vec![suites::TLS13_AES_256_GCM_SHA384]),
                CipherSuite::TLS13_AES_256_GCM_SHA384,
            ),
        ];
        for (version, only, want) in cases {
            let mut provider = rustls::crypto::ring::default_provider();
            if let Some(only) = only {
                provider.cipher_suites = only;
            }
            let client = client(&issuer, provider, version);
            let tls = ping(Arc::clone(&server_config), client, "api.example.test").await;
            let got = tls.negotiated_cipher_suite().unwrap().suite();
            assert_eq!(got, want, "{version:?}");
        }
    }

    #[test]
    fn leaves_share_one_key_that_is_not_the_ca_key_and_carry_aki() {
        let (issuer, _dir) = issuer();
        let a = issuer
            .mint_leaf(&Host::parse("a.example.test").unwrap())
            .unwrap();
        let b = issuer.mint_leaf(&Host::parse("10.1.2.3").unwrap()).unwrap();
        let leaf_pub = issuer.leaf_key.public_key_raw();
        assert!(contains(a.cert[0].as_ref(), leaf_pub));
        assert!(contains(b.cert[0].as_ref(), leaf_pub));
        assert!(
            !contains(issuer.ca.cert_der().as_ref(), leaf_pub),
            "leaf key must differ from the CA key"
        );
        // Authority Key Identifier: OID 2.5.29.35.
        assert!(contains(
            a.cert[0].as_ref(),
            &[0x06, 0x03, 0x55, 0x1d, 0x23]
        ));
        assert!(contains(a.cert[0].as_ref(), b"a.example.test"));
        // An IP SAN is the 4 address bytes under tag [7].
        assert!(contains(b.cert[0].as_ref(), &[0x87, 0x04, 10, 1, 2, 3]));
        assert_eq!(a.cert[1], *issuer.ca.cert_der());
    }

    /// A client that trusts only airlock's CA completes a handshake with a
    /// minted leaf, in memory, for a name and for an IP.
    #[tokio::test]
    async fn minted_leaf_verifies_against_the_ca() {
        let (issuer, _dir) = issuer();
        for host in ["api.example.test", "10.1.2.3"] {
            let server_config = issuer
                .server_config(&Host::parse(host).unwrap())
                .await
                .unwrap();
            let client = client(
                &issuer,
                rustls::crypto::ring::default_provider(),
                &rustls::version::TLS13,
            );
            ping(server_config, client, host).await;
        }
        assert_eq!(issuer.minted(), 2);
        let _again = issuer
            .server_config(&Host::parse("api.example.test").unwrap())
            .await
            .unwrap();
        assert_eq!(issuer.minted(), 2, "cached");
    }
}
