//! Streaming secret-scan throughput: all patterns of `rules/secrets.toml`
//! plus 10 held values, decoding on (it always is), over 4 MiB of benign
//! log-like text, benign JSON, and benign JSON full of encodings (escaped
//! strings, percent-escaped URLs, base64 blobs, hex digests),
//! pushed in 1.5 KiB, 16 KiB and 64 KiB chunks (block mode, as for an
//! outgoing body), plus the whole-buffer `Scanner::scan` for reference.
//!
//! Run: `cargo bench --bench scan -- --warm-up-time 1 --measurement-time 3`

use std::{hint::black_box, path::Path, sync::Arc};

use airlock::scan::{HeldSecret, PatternSet, ScanMode, ScanState, Scanner};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZE: usize = 4 * 1024 * 1024;
const CHUNKS: [usize; 3] = [1536, 16 * 1024, 64 * 1024];

/// Deterministic xorshift, so every run scans the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "request",
    "was",
    "served",
    "from",
    "cache",
    "and",
    "then",
    "forwarded",
    "to",
    "upstream",
    "server",
    "which",
    "returned",
    "an",
    "error",
    "while",
    "processing",
    "payload",
    "for",
    "user",
    "session",
    "with",
    "retry",
    "after",
    "timeout",
    "connection",
    "reset",
    "by",
    "peer",
    "model",
    "agent",
    "tool",
    "call",
    "completed",
    "successfully",
    "in",
    "milliseconds",
    "data",
    "table",
];

fn benign_text() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let levels = ["INFO", "DEBUG", "WARN", "INFO", "INFO"];
    let mut out = String::with_capacity(SIZE + 256);
    let mut n = 0u64;
    while out.len() < SIZE {
        n += 1;
        out.push_str(&format!(
            "2025-03-0{}T12:{:02}:{:02}.{:03}Z {} worker-{} req_id={:016x} path=/api/v1/{}/{} status={} ",
            1 + n % 9,
            n % 60,
            (n * 7) % 60,
            n % 1000,
            rng.pick(&levels),
            n % 8,
            rng.next(),
            rng.pick(WORDS),
            rng.next() % 10_000,
            [200, 200, 201, 404, 500][(n % 5) as usize],
        ));
        for _ in 0..(6 + rng.next() % 10) {
            out.push_str(rng.pick(WORDS));
            out.push(' ');
        }
        out.push('\n');
    }
    out.truncate(SIZE);
    out.into_bytes()
}

fn benign_json() -> Vec<u8> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut out = String::with_capacity(SIZE + 512);
    out.push('[');
    let mut n = 0u64;
    while out.len() < SIZE {
        n += 1;
        let desc: Vec<&str> = (0..(5 + rng.next() % 12))
            .map(|_| rng.pick(WORDS))
            .collect();
        out.push_str(&format!(
            "{{\"id\":{n},\"uuid\":\"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\",\"name\":\"{} {}\",\
             \"score\":{}.{},\"active\":{},\"tags\":[\"{}\",\"{}\"],\"description\":\"{}\",\
             \"created_at\":\"2025-01-{:02}T08:00:00Z\"}},\n",
            rng.next() as u32,
            rng.next() as u16,
            rng.next() % 0xfff,
            rng.next() % 0xfff,
            rng.next() & 0xffff_ffff_ffff,
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.next() % 100,
            rng.next() % 100,
            n.is_multiple_of(2),
            rng.pick(WORDS),
            rng.pick(WORDS),
            desc.join(" "),
            1 + n % 28,
        ));
    }
    out.truncate(SIZE - 1);
    out.push(']');
    out.into_bytes()
}

/// Benign JSON full of what the decoders look at: escaped strings, URLs
/// with percent-escapes, base64 blobs (small images, integrity hashes),
/// hex digests.
fn benign_encoded() -> Vec<u8> {
    let mut rng = Rng(0x1357_9bdf_2468_ace0);
    let b64 = |rng: &mut Rng, n: usize| {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n)
            .map(|_| A[(rng.next() % 64) as usize] as char)
            .collect::<String>()
    };
    let mut out = String::with_capacity(SIZE + 4096);
    out.push('[');
    let mut n = 0u64;
    while out.len() < SIZE {
        n += 1;
        let desc: Vec<&str> = (0..(5 + rng.next() % 12))
            .map(|_| rng.pick(WORDS))
            .collect();
        let (w1, w2, w3) = (rng.pick(WORDS), rng.pick(WORDS), rng.pick(WORDS));
        let integrity = b64(&mut rng, 86);
        let digest: Vec<u64> = (0..4).map(|_| rng.next()).collect();
        let icon_len = 64 + (rng.next() % 512) as usize;
        let icon = b64(&mut rng, icon_len);
        out.push_str(&format!(
            "{{\"id\":{n},\"text\":\"{}\\n\\\"{w1}\\\" \\u00e9\",\"url\":\"https:\\/\\/cdn.test\\/{w2}%20{w3}?q=a%2Fb\",\
             \"integrity\":\"sha512-{integrity}==\",\"sha256\":\"{:016x}{:016x}{:016x}{:016x}\",\"icon\":\"data:image/png;base64,{icon}\"}},\n",
            desc.join(" "),
            digest[0],
            digest[1],
            digest[2],
            digest[3],
        ));
    }
    out.truncate(SIZE - 1);
    out.push(']');
    out.into_bytes()
}

fn scanner() -> Arc<Scanner> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
    let patterns = match PatternSet::load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let held: Vec<HeldSecret> = (0..10)
        .map(|i| {
            let value: Vec<u8> = (0..40)
                .map(|_| alphabet[(rng.next() % 62) as usize])
                .collect();
            HeldSecret::new(format!("vault:tools/bench-{i}#token"), value)
        })
        .collect();
    match Scanner::new(&patterns, &held) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("{e}"),
    }
}

fn bench(c: &mut Criterion) {
    let sc = scanner();
    let inputs = [
        ("text", Bytes::from(benign_text())),
        ("json", Bytes::from(benign_json())),
        ("encoded", Bytes::from(benign_encoded())),
    ];
    for (name, input) in &inputs {
        assert!(sc.scan(input).is_empty(), "{name} input is not benign");
    }

    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        for chunk in CHUNKS {
            let chunks: Vec<Bytes> = (0..input.len())
                .step_by(chunk)
                .map(|i| input.slice(i..(i + chunk).min(input.len())))
                .collect();
            group.bench_with_input(
                BenchmarkId::new(format!("stream-block/{name}"), chunk),
                &chunks,
                |b, chunks| {
                    b.iter(|| {
                        let mut st = ScanState::new(sc.clone(), ScanMode::Block);
                        let mut out = 0usize;
                        for ch in chunks {
                            out += st.push(ch.clone()).data.len();
                        }
                        out += st.finish().data.len();
                        black_box(out)
                    })
                },
            );
        }
        group.bench_with_input(
            BenchmarkId::new(format!("whole/{name}"), input.len()),
            input,
            |b, input| b.iter(|| black_box(sc.scan(input))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
