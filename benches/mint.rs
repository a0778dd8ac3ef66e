//! Leaf certificates: what a CONNECT to a name not yet in the cache costs
//! (a certificate for the shared leaf key signed by the CA, and its rustls
//! server config) and
//! what a cached one costs. The load model in docs/scale.md uses both.
//!
//! `cargo bench --bench mint`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use airlock::host::Host;
use airlock::tls::ca::{CaFiles, CertificateAuthority};
use airlock::tls::issue::LeafIssuer;
use criterion::{Criterion, criterion_group, criterion_main};

fn mint(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = CaFiles::in_dir(dir.path());
    CertificateAuthority::init(&files, false).unwrap_or_else(|e| panic!("{e}"));
    let ca = Arc::new(CertificateAuthority::load(&files).unwrap_or_else(|e| panic!("{e}")));
    let issuer = LeafIssuer::new(ca, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut n: u64 = 0;
    let mut g = c.benchmark_group("leaf");
    g.bench_function("mint (a name not in the cache)", |b| {
        b.iter(|| {
            n += 1;
            let host = Host::parse(&format!("h{n}.mint.test")).unwrap_or_else(|e| panic!("{e}"));
            black_box(rt.block_on(issuer.server_config(&host)).is_ok())
        });
    });
    let cached = Host::parse("cached.mint.test").unwrap_or_else(|e| panic!("{e}"));
    let _ = rt.block_on(issuer.server_config(&cached));
    g.bench_function("cached", |b| {
        b.iter(|| black_box(rt.block_on(issuer.server_config(&cached)).is_ok()));
    });
    g.finish();
}

criterion_group!(benches, mint);
criterion_main!(benches);
