//! The properties the fuzz targets (`fuzz/fuzz_targets/*.rs`) check, one
//! function per parser that sees untrusted bytes. They live here, not in
//! the fuzz crate, so that `cargo test` replays every committed input under
//! `fuzz/corpus/` and `fuzz/artifacts/` on the stable toolchain (see the
//! test at the end), and a crash found once stays a regression test: once
//! fixed, its input is committed as `fuzz/corpus/<target>/crash-*` (the
//! first: `authority`, a host that IDNA mapping turned into an all-digit
//! name after the address check; see `host::tests`).
//!
//! Each function panics when its property fails (libFuzzer reports that as
//! a crash) and returns quietly for inputs the parser refuses: refusing is
//! allowed, panicking, hanging and judging one thing while forwarding
//! another are not.

use std::{path::Path, sync::Arc, sync::OnceLock};

use bytes::Bytes;

use crate::{
    host::{Host, parse_authority_form},
    policy::path::NormalPath,
    scan::{
        ContentCoding, EncodedForward, HeldSecret, PatternSet, ScanBody, ScanMode, ScanState,
        Scanner,
    },
};

/// The built-in patterns plus two held values, built once per process.
fn scanner() -> Arc<Scanner> {
    static SCANNER: OnceLock<Arc<Scanner>> = OnceLock::new();
    SCANNER
        .get_or_init(|| {
            let held = [
                HeldSecret::new("fuzz:held#a", "held-Secret-Value-0001"),
                HeldSecret::new("fuzz:held#b", "p@ss/w+rd=Held!Value\"2"),
            ];
            let built = PatternSet::builtin()
                .map_err(|e| e.to_string())
                .and_then(|set| Scanner::new(&set, &held).map_err(|e| e.to_string()));
            match built {
                Ok(s) => Arc::new(s),
                Err(e) => panic!("built-in patterns do not build: {e}"),
            }
        })
        .clone()
}

/// CONNECT targets and host names: a parsed host prints as a string that
/// parses back to the same host (what is judged is what is dialled).
pub fn authority(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((host, port)) = parse_authority_form(text) {
        assert!(port != 0, "port 0 accepted in {text:?}");
        let again = Host::parse(&host.to_string());
        assert_eq!(again.as_ref(), Ok(&host), "{text:?} -> {host}");
    }
    if let Ok(host) = Host::parse(text) {
        let again = Host::parse(&host.to_string());
        assert_eq!(again.as_ref(), Ok(&host), "{text:?} -> {host}");
    }
}

/// Request paths: the path airlock judges (decoded) is the path it forwards
/// (encoded): the forwarded form normalises to the same path again.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = NormalPath::parse(text) else {
        return;
    };
    let again = NormalPath::parse(p.encoded());
    assert_eq!(
        again.as_ref(),
        Ok(&p),
        "{text:?}: forwarded as {:?}, judged as {:?}",
        p.encoded(),
        p.decoded()
    );
    assert!(!p.decoded().contains("//"), "{text:?} -> {:?}", p.decoded());
    assert!(
        !p.decoded().split('/').any(|s| s == ".." || s == "."),
        "{text:?} -> {:?}",
        p.decoded()
    );
}

/// The first byte picks the chunk lengths; the rest is the stream.
fn chunks(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, body)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut out = Vec::new();
    let mut rest = body;
    let mut x = u32::from(seed) | 1;
    while !rest.is_empty() {
        // xorshift: chunk lengths from 1 to 64 bytes, repeatable per seed.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 64 + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    (out, body)
}

fn stream(mode: ScanMode, outgoing: bool, parts: &[&[u8]]) -> (Vec<u8>, Vec<(String, u64, u64)>) {
    let mut state = ScanState::new(scanner(), mode);
    if outgoing {
        state = state.outgoing();
    }
    let mut data = Vec::new();
    let mut found = Vec::new();
    let mut take = |out: crate::scan::StreamOutput| {
        data.extend_from_slice(&out.data);
        found.extend(
            out.findings
                .into_iter()
                .map(|f| (f.pattern_id.to_string(), f.start, f.end)),
        );
    };
    for part in parts {
        take(state.push(Bytes::copy_from_slice(part)));
    }
    take(state.finish());
    (data, found)
}

/// The scanner, differential: a stream cut into arbitrary chunks finds
/// exactly what the whole buffer finds, and emits the same bytes, in every
/// mode, incoming and outgoing.
pub fn scan_chunks(data: &[u8]) {
    let (parts, body) = chunks(data);
    for (mode, outgoing) in [
        (ScanMode::Block, false),
        (ScanMode::Block, true),
        (ScanMode::Redact, false),
        (ScanMode::Redact, true),
        (ScanMode::Log, false),
    ] {
        let whole = stream(mode, outgoing, &[body]);
        let cut = stream(mode, outgoing, &parts);
        assert_eq!(
            whole, cut,
            "{mode:?} (outgoing: {outgoing}): chunking changed the result"
        );
        if mode == ScanMode::Log {
            assert_eq!(whole.0, body, "log mode changed the bytes");
        }
    }
}

/// Content decoders (gzip, deflate, br) over arbitrary bytes: an error or
/// a result, never a panic or a hang, and never more out than the cap.
pub fn content_decoders(data: &[u8]) {
    let Some(&pick) = data.first() else {
        return;
    };
    let coding = match pick % 3 {
        0 => ContentCoding::Gzip,
        1 => ContentCoding::Deflate,
        _ => ContentCoding::Brotli,
    };
    let forward = if pick & 4 == 0 {
        EncodedForward::Original
    } else {
        EncodedForward::Decoded
    };
    let (parts, _) = chunks(data);
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = parts
        .iter()
        .map(|p| Ok(http_body::Frame::data(Bytes::copy_from_slice(p))))
        .collect();
    let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let scanned = ScanBody::decoding(inner, scanner(), ScanMode::Redact, coding, forward);
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    let collected = runtime.block_on(http_body_util::BodyExt::collect(scanned));
    if let Ok(all) = collected {
        // Forwarded decoded bytes are bounded by the decoder's cap.
        let len = all.to_bytes().len();
        assert!(len <= 256 * 1024 * 1024, "{len} bytes out");
    }
}

#[cfg(any(test, feature = "fuzzing"))]
/// WebSocket frames from the sandbox: the relay's frame parser and
/// per-message scanning over arbitrary bytes end (EOF or a close), never
/// panic, and never pass more bytes upstream than the client sent (plus
/// nothing: airlock adds no frame of its own upstream but a close).
pub fn websocket(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    runtime.block_on(async {
        let cap = data.len() + 64 * 1024;
        let (mut sandbox, client) = tokio::io::duplex(cap);
        let (upstream, mut origin) = tokio::io::duplex(cap);
        let scan = crate::listener::websocket::WsScan {
            scanner: scanner(),
            outgoing: ScanMode::Block,
            incoming: ScanMode::Redact,
            outgoing_min: crate::scan::Confidence::Shaped,
            incoming_min: crate::scan::Confidence::Verified,
            out_sink: Arc::new(|_| {}),
            in_sink: Arc::new(|_| {}),
        };
        if sandbox.write_all(data).await.is_err() {
            return;
        }
        let _ = sandbox.shutdown().await;
        let drain = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = origin.read_to_end(&mut got).await;
            got.len()
        });
        let relay = crate::listener::websocket::relay(client, upstream, scan);
        // Paused time: the relay's timers (a held message tail) advance
        // as soon as nothing else can run, so a hang here is a real one.
        if tokio::time::timeout(std::time::Duration::from_secs(3600), relay)
            .await
            .is_err()
        {
            panic!("the relay did not end after its input did");
        }
        let sent = drain.await.unwrap_or(0);
        // The frames upstream are re-encoded (a 2- to 14-byte head each)
        // around at most the payload bytes the client sent, plus a close.
        assert!(
            sent <= 2 * data.len() + 256,
            "{sent} bytes upstream from {}",
            data.len()
        );
    });
}

/// Config and rule files: `Config::from_text` refuses or accepts, and every
/// refusal names the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that holds nothing, so includes and files resolve to
    // nothing real.
    let base = Path::new("/nonexistent-airlock-fuzz");
    if let Err(errors) = crate::config::Config::from_text(text, "fuzz.toml", base) {
        let shown = errors.to_string();
        assert!(!shown.trim().is_empty(), "an empty error for {text:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every committed fuzz input (seed corpora and any crash found) through
    /// its target, on the stable toolchain.
    #[test]
    fn committed_fuzz_inputs_hold_their_properties() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let targets: [(&str, fn(&[u8])); 6] = [
            ("authority", super::authority),
            ("path", super::path),
            ("scan_chunks", super::scan_chunks),
            ("content_decoders", super::content_decoders),
            ("config", super::config),
            ("websocket", super::websocket),
        ];
        let mut ran = 0;
        for (name, check) in targets {
            for dir in ["corpus", "artifacts"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    assert!(dir == "artifacts", "no seed corpus for {name}");
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    check(&data);
                    ran += 1;
                }
            }
        }
        assert!(ran >= 25, "only {ran} committed fuzz inputs");
    }
}
