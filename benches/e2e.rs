//! End-to-end benchmark: direct-to-origin versus through airlock, in one run.
//!
//! ```text
//! cargo build --release --bin airlock && cargo bench --bench e2e
//! ```
//!
//! A loopback HTTPS origin (hyper 1 + rustls/ring) serves `GET /small`
//! (~100 bytes), `GET /big` (64 MiB streamed in 64 KiB chunks) and
//! `POST /upload` (counts the body). It runs in its own process (this
//! executable re-run with `E2E_ROLE=origin`), like a real origin: a
//! same-thread client/origin loop would cost the direct route no context
//! switch at all. airlock runs as a separate process too
//! (`target/release/airlock serve`), so its CPU time (`/proc/<pid>/stat`) and
//! memory (`/proc/<pid>/status`) are its own. Every client is a hyper 1
//! HTTP/1.1 connection over tokio-rustls, with `TCP_NODELAY`; through airlock
//! it sends `CONNECT`, reads the `200`, and does TLS inside the tunnel
//! trusting airlock's CA, SNI = the origin's name (mapped by `[dns] resolve`).
//!
//! Scenarios (each direct, then through airlock):
//! 1. keep-alive small GET, 32 connections looping;
//! 2. a new connection per request (TCP [+ CONNECT] + full TLS handshake +
//!    one GET + close), 32 workers;
//! 3. 64 MiB download, 4. 64 MiB upload (streamed), MiB/s on one connection;
//! 5. airlock's RSS with 1,000 idle intercepted tunnels (a fresh airlock
//!    process, so its peak is the tunnels' own);
//! 6. (through airlock only) keep-alive small GET with credential injection
//!    off versus on: the origin's second name, `inject.e2e.test`, has the
//!    same rule plus `inject` (a file-backend secret, cached after warm-up).
//!    The two sides alternate in short timed runs (A B, B A, …) on
//!    connections opened once; one untimed `GET /check` per name first proves
//!    the origin gets `Authorization: Bearer <token>` only on the injecting
//!    name (the run fails otherwise);
//! 7. (through airlock only) 64 MiB download and upload with the secret
//!    scanner on versus off: a second airlock process on the same CPU runs
//!    the same config without `[scan]` (and without `inject`, so it holds no
//!    secret to scan for either); the two alternate transfer by transfer on
//!    one connection each, like scenario 6.
//!
//! By default (at least 2 CPUs) airlock is pinned to the last CPU and the
//! clients and origin to the others, as in the "What to beat" table of the
//! design; `E2E_PIN=0` lets the scheduler place everything.
//!
//! Environment: `E2E_SECS` (seconds per timed run, default 5), `E2E_CONNS`
//! (32), `E2E_TUNNELS` (1000), `E2E_MIB` (64), `E2E_PIN` (1), `E2E_ONLY`
//! (scenario numbers to run, e.g. `1,5`; default all), `E2E_ORIGIN_H2` (0:
//! the origin offers http/1.1 only; 1: h2 too, which airlock's upstream
//! client then uses), `E2E_AUDIT` (`off` default, or `file`), `E2E_RESUME`
//! (0: clients never resume TLS sessions, so every new connection is a full
//! handshake; 1 resumes direct only: airlock sends no tickets), `E2E_AB_ROUNDS` (64) and `E2E_AB_SECS` (0.25: seconds per
//! side per round) and `E2E_AB_INJECT` (1; 0 = an A/A calibration run, the
//! second rule without `inject`; with `E2E_AB_PAD=1` the client sends a
//! header as long as the injected one to the second name instead) and
//! `E2E_AB_SIDE` (unset; `0` or `1` times
//! that side only, for profiling it) for scenario 6, `E2E_SCAN_ROUNDS` (8:
//! rounds of one transfer per side) for scenario 7, `AIRLOCK_BIN` (default
//! `target/release/airlock`).
//!
//! Timing is printed, never asserted.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const ORIGIN_NAME: &str = "origin.bench.test";
/// The origin's second name (same address, same certificate): its rule is
/// the first one plus an `inject`, so scenario 6 compares the two names.
const INJECT_NAME: &str = "inject.e2e.test";
/// The test-only credential airlock injects for [`INJECT_NAME`].
const INJECT_SECRET_REF: &str = "tools/bench#token";
const INJECT_TOKEN: &str = "e2e-bench-token-7f3a9c2b-not-a-real-credential";
const CHUNK: usize = 64 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

// ------------------------------------------------------------------ options

#[derive(Debug, Clone)]
struct Opts {
    secs: f64,
    conns: usize,
    tunnels: usize,
    mib: u64,
    pin: bool,
    origin_h2: bool,
    audit_file: bool,
    resume: bool,
    /// Scenario 6: A/B rounds (each = one timed run per side).
    ab_rounds: usize,
    /// Scenario 6: seconds per side per round.
    ab_secs: f64,
    /// Scenario 6: false (`E2E_AB_INJECT=0`) leaves `inject` out of the
    /// second rule, an A/A run that shows the bench's own bias between names.
    ab_inject: bool,
    /// Scenario 6, A/A only: the client sends a header as long as the
    /// injected one on the second name (`E2E_AB_PAD=1`).
    ab_pad: bool,
    /// Scenario 6: time only this side (`E2E_AB_SIDE=0` off, `1` on), to
    /// profile one side on its own; the ratio is then meaningless.
    ab_side: Option<usize>,
    /// Scenario 7: rounds, each one transfer per side and direction.
    scan_rounds: usize,
    /// Scenario numbers to run (`E2E_ONLY=1,5`); empty = all.
    only: Vec<u8>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Opts {
    fn wants(&self, scenario: u8) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }

    fn from_env() -> Self {
        Self {
            secs: env_or("E2E_SECS", 5.0_f64).max(0.5),
            conns: env_or("E2E_CONNS", 32_usize).max(1),
            tunnels: env_or("E2E_TUNNELS", 1000_usize),
            mib: env_or("E2E_MIB", 64_u64).max(1),
            pin: env_or("E2E_PIN", 1_u8) != 0,
            origin_h2: env_or("E2E_ORIGIN_H2", 0_u8) != 0,
            audit_file: std::env::var("E2E_AUDIT").is_ok_and(|v| v == "file"),
            resume: env_or("E2E_RESUME", 0_u8) != 0,
            ab_rounds: env_or("E2E_AB_ROUNDS", 64_usize).max(1),
            ab_secs: env_or("E2E_AB_SECS", 0.25_f64).max(0.05),
            ab_inject: env_or("E2E_AB_INJECT", 1_u8) != 0,
            ab_pad: env_or("E2E_AB_PAD", 0_u8) != 0,
            ab_side: std::env::var("E2E_AB_SIDE")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|s| *s < 2),
            scan_rounds: env_or("E2E_SCAN_ROUNDS", 8_usize).max(1),
            only: std::env::var("E2E_ONLY")
                .unwrap_or_default()
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect(),
        }
    }
}

// ------------------------------------------------------------------ entry

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let _provider = rustls::crypto::ring::default_provider().install_default();
    if std::env::var("E2E_ROLE").is_ok_and(|r| r == "origin") {
        return match origin_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("e2e origin failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = Opts::from_env();
    match run_main(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(opts: Opts) -> anyhow::Result<()> {
    let bin = airlock_binary()?;
    raise_nofile(2 * opts.tunnels as u64 + 1024);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pinning = if opts.pin && cpus >= 2 && which("taskset") {
        let bench_cpus = if cpus == 2 {
            "0".to_owned()
        } else {
            format!("0-{}", cpus - 2)
        };
        let ok = Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &bench_cpus,
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Pinning {
            bench_cpus,
            airlock_cpu: cpus - 1,
            bench_threads: cpus - 1,
        })
    } else {
        None
    };
    let threads = pinning.as_ref().map_or(cpus, |p| p.bench_threads);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(run(opts, bin, pinning, cpus))
}

#[derive(Debug, Clone)]
struct Pinning {
    bench_cpus: String,
    airlock_cpu: usize,
    bench_threads: usize,
}

fn airlock_binary() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target/release/airlock"));
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release --bin airlock` (or set AIRLOCK_BIN)",
            bin.display()
        );
    }
    // A stale binary silently benchmarks old code: say so.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest_src = newest_mtime(&manifest.join("src"));
    if let (Some(built), Some(src)) = (built, newest_src)
        && src > built
    {
        eprintln!(
            "warning: {} is older than src/: run `cargo build --release --bin airlock` to bench the current code",
            bin.display()
        );
    }
    Ok(bin)
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn which(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Raises the soft open-files limit (1,000 tunnels need ~2,000 descriptors
/// in airlock and ~1,000 here). There is no `unsafe` in this crate, so this
/// goes through util-linux `prlimit`; children inherit the new limit.
fn raise_nofile(want: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft_hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut it = l.split_whitespace().skip(3);
            Some((
                it.next()?.parse::<u64>().ok()?,
                it.next()?.parse::<u64>().unwrap_or(u64::MAX),
            ))
        });
    let Some((soft, hard)) = soft_hard else {
        return;
    };
    if soft >= want {
        return;
    }
    let target = want.min(hard);
    let ok = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:{hard}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok || target < want {
        eprintln!(
            "warning: open-files limit is {soft} (want {want}); run `ulimit -n 4096` before the bench"
        );
    }
}

// ------------------------------------------------------------------ run

struct Row {
    scenario: String,
    direct: String,
    airlock: String,
    ratio: String,
    cpu: String,
    target: String,
    verdict: &'static str,
}

struct Detail {
    scenario: String,
    route: &'static str,
    count: u64,
    errors: u64,
    secs: f64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    origin_accepts: u64,
    self_cpu_us: Option<f64>,
}

async fn run(
    opts: Opts,
    bin: PathBuf,
    pinning: Option<Pinning>,
    cpus: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let origin_ca = TestCa::new("airlock e2e bench origin CA");
    std::fs::write(dir.path().join("origin-ca.pem"), &origin_ca.pem)?;
    let mut origin = Origin::start(&origin_ca, dir.path(), opts.origin_h2, opts.mib)?;
    let _set = ORIGIN_PID.set(origin.pid);

    let status = Command::new(&bin)
        .args(["ca", "init", "--dir"])
        .arg(dir.path().join("certs"))
        .stdout(Stdio::null())
        .status()
        .context("running `airlock ca init`")?;
    if !status.success() {
        bail!("`airlock ca init` failed: {status}");
    }
    let config = config_text(&opts, origin.addr, true);
    let config_path = dir.path().join("airlock.toml");
    std::fs::write(&config_path, &config)?;
    write_secrets(dir.path())?;
    let airlock_cpu = pinning.as_ref().map(|p| p.airlock_cpu);
    let mut airlock = Airlock::start(&bin, &config_path, airlock_cpu)?;

    let clients = Clients::new(
        &origin_ca,
        &dir.path().join("certs/ca.pem"),
        &origin,
        opts.resume,
    )?;
    let mut inject_clients = clients.named(INJECT_NAME);
    if opts.ab_pad && !opts.ab_inject {
        // As long as `authorization: Bearer <token>`, and nothing a
        // pattern matches: the bytes of a credential header, no injection.
        inject_clients.extra = Some((
            "x-bench-extra",
            "Bearer e2e-bench-pad-7f3a9c2b-not-a-credential-at-all",
        ));
    }
    let direct = Route::Direct;
    let proxied = Route::Proxy(airlock.addr);

    // Warm up every route: the leaves are minted, the upstream pool is warm
    // and the injected secret is cached before anything is timed (the
    // targets assume a cached leaf and a cached secret).
    for (c, route) in [
        (&clients, direct),
        (&clients, proxied),
        (&inject_clients, proxied),
    ] {
        let mut s = c
            .connect(route)
            .await
            .with_context(|| format!("warm-up connection ({} {route:?})", c.name))?;
        for _ in 0..10 {
            c.get(&mut s, "/small")
                .await
                .with_context(|| format!("warm-up GET ({} {route:?})", c.name))?;
        }
    }

    println!("## airlock e2e benchmark\n");
    println!("- machine: {cpus} CPUs, {}", mem_total());
    match &pinning {
        Some(p) => println!(
            "- pinning: airlock on CPU {}; clients (this process) and the origin (a child process), {} tokio worker(s) each, on CPU {}",
            p.airlock_cpu, p.bench_threads, p.bench_cpus
        ),
        None => println!("- pinning: none (the scheduler places airlock, client and origin)"),
    }
    println!(
        "- {} s per timed run, {} connections/workers, {} MiB transfers, origin ALPN {}, client TLS resumption {}, airlock {}",
        opts.secs,
        opts.conns,
        opts.mib,
        if opts.origin_h2 {
            "h2 + http/1.1"
        } else {
            "http/1.1"
        },
        if opts.resume {
            "on"
        } else {
            "off (full handshake per new connection)"
        },
        git_rev()
    );
    println!();

    let mut rows = Vec::new();
    let mut details = Vec::new();

    // Runs one scenario, recording how many TLS connections the origin accepted meanwhile.
    macro_rules! measured {
        ($e:expr) => {{
            let before = origin.accepts();
            let mut o = $e.await?;
            o.origin_accepts = origin.accepts() - before;
            o
        }};
    }
    let me = Some(airlock.pid);

    // 1. keep-alive small GET
    if opts.wants(1) {
        let name = format!("keep-alive small GET, {} conns", opts.conns);
        let d = measured!(keep_alive(&clients, direct, opts.conns, opts.secs, None));
        let a = measured!(keep_alive(&clients, proxied, opts.conns, opts.secs, me));
        rows.push(rate_row(&name, &d, &a, "req/s", 0.40));
        details.push(d.detail(&name, "direct"));
        details.push(a.detail(&name, "airlock"));
    }

    // 2. new connection per request
    if opts.wants(2) {
        let name = format!("new {{TCP, CONNECT, TLS}} per GET, {} workers", opts.conns);
        let d = measured!(new_conn(&clients, direct, opts.conns, opts.secs, None));
        let a = measured!(new_conn(&clients, proxied, opts.conns, opts.secs, me));
        rows.push(rate_row(&name, &d, &a, "req/s", 0.50));
        details.push(d.detail(&name, "direct"));
        details.push(a.detail(&name, "airlock"));
    }

    // 3. and 4. bulk transfers
    for upload in [false, true] {
        if !opts.wants(if upload { 4 } else { 3 }) {
            continue;
        }
        let kind = if upload { "upload" } else { "download" };
        let name = format!("{} MiB {kind}", opts.mib);
        let (mib, secs) = (opts.mib, opts.secs);
        let d = measured!(transfer(&clients, direct, upload, mib, secs, None));
        let a = measured!(transfer(&clients, proxied, upload, mib, secs, me));
        rows.push(transfer_row(&name, &d, &a, opts.mib, 0.50));
        details.push(d.detail(&name, "direct"));
        details.push(a.detail(&name, "airlock"));
    }

    // 6. injection on versus off, through the same airlock, A/B in rounds.
    let mut ab = None;
    if opts.wants(6) {
        // Once, untimed: the origin must see the credential on the injecting
        // name only, or the comparison means nothing.
        verify_injection(
            &clients,
            &inject_clients,
            proxied,
            opts.ab_inject,
            &mut origin,
        )
        .await
        .context("scenario 6: credential injection check")?;
        let r = inject_ab(
            &clients,
            &inject_clients,
            proxied,
            &opts,
            airlock.pid,
            &mut origin,
        )
        .await?;
        let name = format!("keep-alive small GET, {} conns, via airlock", opts.conns);
        details.push(r.off.detail(&name, "injection off"));
        details.push(r.on.detail(&name, "injection on"));
        ab = Some(r);
    }

    // 7. scanner on versus off, 64 MiB each way, against a second airlock.
    let mut scan_ab_result = None;
    let mut config_off = None;
    if opts.wants(7) {
        let text = config_text(&opts, origin.addr, false);
        let path = dir.path().join("airlock-noscan.toml");
        std::fs::write(&path, &text)?;
        let mut off = Airlock::start(&bin, &path, airlock_cpu)?;
        let r = scan_ab(
            &clients,
            (proxied, airlock.pid),
            (Route::Proxy(off.addr), off.pid),
            &opts,
        )
        .await;
        off.stop();
        scan_ab_result = Some(r?);
        config_off = Some(text);
    }

    let (peak_rss, peak_hwm) = proc_mem(airlock.pid);
    let fds_main = count_fds(airlock.pid);
    airlock.stop();

    // 5. idle tunnels, on a fresh airlock so its peak is the tunnels' own.
    let mut idle_result = None;
    if opts.wants(5) {
        let mut fresh = Airlock::start(&bin, &config_path, airlock_cpu)?;
        let idle = idle_tunnels(&clients, fresh.addr, fresh.pid, opts.tunnels).await?;
        fresh.stop();
        let verdict = if idle.established == opts.tunnels && idle.alive == idle.established {
            pass(idle.hwm_kib as f64 / 1024.0 < 60.0)
        } else {
            "FAIL"
        };
        rows.push(Row {
            scenario: format!(
                "{} idle tunnels (CONNECT + TLS + 1 GET each, kept open)",
                opts.tunnels
            ),
            direct: "—".into(),
            airlock: format!(
                "{:.1} MiB RSS, {:.1} MiB peak",
                idle.rss_kib as f64 / 1024.0,
                idle.hwm_kib as f64 / 1024.0
            ),
            ratio: "—".into(),
            cpu: format!(
                "{:.1} KiB/tunnel",
                (idle.rss_kib.saturating_sub(idle.baseline_kib)) as f64
                    / idle.established.max(1) as f64
            ),
            target: "< 60 MiB".into(),
            verdict,
        });
        idle_result = Some(idle);
    }

    if !rows.is_empty() {
        println!(
            "| scenario | direct | via airlock | airlock ÷ direct | airlock CPU | target | result |"
        );
        println!("|---|---:|---:|---:|---:|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.scenario, r.direct, r.airlock, r.ratio, r.cpu, r.target, r.verdict
            );
        }
        println!();
    }
    if let Some(ab) = &ab {
        ab.print(&opts);
    }
    if let Some(r) = &scan_ab_result {
        r.print(&opts);
    }
    println!("Details:\n");
    println!(
        "| scenario | route | requests | errors | seconds | p50 latency | p99 latency | origin TLS accepts | client + origin CPU/op |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for d in &details {
        let us = |v: Option<u64>| v.map_or("—".to_owned(), fmt_us);
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            d.scenario,
            d.route,
            d.count,
            d.errors,
            d.secs,
            us(d.p50_us),
            us(d.p99_us),
            d.origin_accepts,
            d.self_cpu_us
                .map_or("—".to_owned(), |c| fmt_us(c.round() as u64))
        );
    }
    println!();
    println!(
        "- airlock after scenarios 1–4 and 6 (those run): VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} open fds",
        peak_rss as f64 / 1024.0,
        peak_hwm as f64 / 1024.0,
        fds_main
    );
    if let Some(idle) = &idle_result {
        println!(
            "- idle tunnels: {} established, {} still answering after the RSS reading, airlock had {} open fds; \
             RSS before opening them {:.1} MiB",
            idle.established,
            idle.alive,
            idle.fds,
            idle.baseline_kib as f64 / 1024.0
        );
    }
    println!(
        "- airlock CPU is utime + stime from /proc/<pid>/stat over the timed window, per request (or per transfer)."
    );
    println!(
        "\n<details><summary>airlock.toml used (test-only)</summary>\n\n```toml\n{config}```\n</details>"
    );
    if let Some(off) = &config_off {
        println!(
            "\n<details><summary>scenario 7's scanner-off airlock.toml (test-only)</summary>\n\n```toml\n{off}```\n</details>"
        );
    }
    drop(origin);
    Ok(())
}

// ------------------------------------------------------------------ scenario 7

/// The scanner target: 64 MiB transfers keep ≥ 80% of their throughput.
const SCAN_TARGET: f64 = 0.80;

/// One direction of scenario 7: per side, the transfers summed over rounds.
struct ScanAbRow {
    upload: bool,
    off: Outcome,
    on: Outcome,
    /// Per round: (off MiB/s, on MiB/s).
    rounds: Vec<(f64, f64)>,
}

struct ScanAbResult {
    rows: Vec<ScanAbRow>,
}

impl ScanAbResult {
    fn print(&self, opts: &Opts) {
        let mib = opts.mib as f64;
        println!(
            "Scenario 7: {} MiB transfers through two airlock processes on the same CPU, one with \
             `[scan]` (all patterns in `rules/secrets.toml`, outgoing block, incoming redact) and \
             one without, {} rounds of one transfer per side, alternating (off, on, on, off, …):\n",
            opts.mib, opts.scan_rounds
        );
        println!(
            "| scenario | scanner off | scanner on | on ÷ off | airlock CPU off | airlock CPU on | target | result |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|---|");
        for r in &self.rows {
            let rate = |o: &Outcome| o.rate() * mib;
            let cpu = |o: &Outcome| {
                o.cpu_per_op().map_or("—".into(), |c| {
                    format!("{:.0} ms/transfer", c.as_secs_f64() * 1e3)
                })
            };
            let ratio = rate(&r.on) / rate(&r.off);
            let ok = ratio >= SCAN_TARGET && r.on.errors == 0 && r.off.errors == 0;
            println!(
                "| {} MiB {}, secret scanner | {:.0} MiB/s | {:.0} MiB/s | {ratio:.2}× | {} | {} | ≥ {SCAN_TARGET:.2}× | {} |",
                opts.mib,
                if r.upload { "upload" } else { "download" },
                rate(&r.off),
                rate(&r.on),
                cpu(&r.off),
                cpu(&r.on),
                pass(ok)
            );
        }
        println!();
        for r in &self.rows {
            let mut per: Vec<f64> = r.rounds.iter().map(|(off, on)| on / off).collect();
            per.sort_by(f64::total_cmp);
            if let (Some(lo), Some(hi)) = (per.first(), per.last()) {
                println!(
                    "- {}: per-round on ÷ off median {:.2}×, range {lo:.2}×–{hi:.2}× over {} rounds",
                    if r.upload { "upload" } else { "download" },
                    per[per.len() / 2],
                    per.len()
                );
            }
        }
        println!();
    }
}

/// 64 MiB transfers through the scanning airlock (`on`) and the one without
/// a scanner (`off`), one connection each, alternating one transfer at a
/// time with the order swapped every round.
async fn scan_ab(
    clients: &Clients,
    on: (Route, u32),
    off: (Route, u32),
    opts: &Opts,
) -> anyhow::Result<ScanAbResult> {
    let clients = Arc::new(clients.clone_handles());
    let len = opts.mib * 1024 * 1024;
    let mut rows = Vec::new();
    for upload in [false, true] {
        let mut sides = Vec::new();
        for (route, pid) in [off, on] {
            let mut s = clients.connect(route).await?;
            // Untimed warm-up: the upstream pool and buffers are in place.
            one_transfer(&clients, &mut s, upload, len).await?;
            sides.push((route, pid, s, empty_outcome()));
        }
        let mut rounds = Vec::with_capacity(opts.scan_rounds);
        for round in 0..opts.scan_rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut rate = [0.0_f64; 2];
            for i in order {
                let (route, pid, s, out) = &mut sides[i];
                let cpu0 = proc_cpu(*pid);
                let t = Instant::now();
                match one_transfer(&clients, s, upload, len).await {
                    Ok(()) => out.count += 1,
                    Err(e) => {
                        eprintln!("transfer failed ({route:?}): {e:#}");
                        out.errors += 1;
                        *s = clients.connect(*route).await?;
                    }
                }
                let took = t.elapsed();
                out.elapsed += took;
                out.cpu = Some(out.cpu.unwrap_or_default() + proc_cpu(*pid).saturating_sub(cpu0));
                out.latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                rate[i] = opts.mib as f64 / took.as_secs_f64();
            }
            rounds.push((rate[0], rate[1]));
        }
        let mut it = sides.into_iter().map(|(_, _, _, out)| out);
        let (off, on) = (
            it.next().context("off side")?,
            it.next().context("on side")?,
        );
        rows.push(ScanAbRow {
            upload,
            off,
            on,
            rounds,
        });
    }
    Ok(ScanAbResult { rows })
}

async fn one_transfer(
    clients: &Clients,
    s: &mut SendRequest<ReqBody>,
    upload: bool,
    len: u64,
) -> anyhow::Result<()> {
    let n = if upload {
        clients.upload(s, len).await?
    } else {
        clients.get(s, "/big").await?
    };
    if n != len {
        bail!("transfer of {len} bytes moved {n}");
    }
    Ok(())
}

fn empty_outcome() -> Outcome {
    Outcome {
        count: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: Some(Duration::ZERO),
        self_cpu: None,
        latencies_us: Vec::new(),
        origin_accepts: 0,
    }
}

// ------------------------------------------------------------------ scenario 6

/// The injection target: a cached injection costs < 5% of small-GET req/s.
const INJECT_TARGET: f64 = 0.95;

/// Scenario 6's two sides, each summed over its rounds.
struct AbResult {
    off: Outcome,
    on: Outcome,
    /// Per round: (off req/s, on req/s).
    rounds: Vec<(f64, f64)>,
}

impl AbResult {
    fn ratio(&self) -> f64 {
        self.on.rate() / self.off.rate()
    }

    fn print(&self, opts: &Opts) {
        let cpu = |o: &Outcome| {
            o.cpu_per_op().map_or("—".into(), |c| {
                format!("{:.1} µs/req", c.as_secs_f64() * 1e6)
            })
        };
        let ratio = self.ratio();
        let ok = ratio >= INJECT_TARGET && self.on.errors == 0 && self.off.errors == 0;
        if !opts.ab_inject && opts.ab_pad {
            println!(
                "**Padding control (`E2E_AB_INJECT=0 E2E_AB_PAD=1`): no `inject`; the client sends \
                 a header as long as the injected one to the second name, so \"injection on\" \
                 below is the cost of carrying such a header (both legs, and its scan), without \
                 injection.**\n"
            );
        } else if !opts.ab_inject {
            println!(
                "**A/A calibration (`E2E_AB_INJECT=0`): the second rule has no `inject`, so \
                 \"injection on\" below is the same work under another name.**\n"
            );
        }
        println!(
            "Scenario 6: keep-alive small GET, {} conns, through airlock to `{ORIGIN_NAME}` (no \
             injection) and to `{INJECT_NAME}` (same origin, same rule plus `inject`: \
             `Authorization: Bearer {{{{secret}}}}`, secret cached), {} rounds × {} s per side, \
             alternating (off, on, on, off, …):\n",
            opts.conns, opts.ab_rounds, opts.ab_secs
        );
        println!(
            "| scenario | injection off | injection on | on ÷ off | airlock CPU off | airlock CPU on | target | result |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|---|");
        println!(
            "| keep-alive small GET, {} conns, credential injection | {} req/s | {} req/s | {ratio:.3}× | {} | {} | ≥ {INJECT_TARGET:.2}× | {} |",
            opts.conns,
            fmt_num(self.off.rate()),
            fmt_num(self.on.rate()),
            cpu(&self.off),
            cpu(&self.on),
            pass(ok)
        );
        let mut per: Vec<f64> = self.rounds.iter().map(|(off, on)| on / off).collect();
        per.sort_by(f64::total_cmp);
        if let (Some(lo), Some(hi)) = (per.first(), per.last()) {
            let median = if per.len() % 2 == 1 {
                per[per.len() / 2]
            } else {
                (per[per.len() / 2 - 1] + per[per.len() / 2]) / 2.0
            };
            let (ci_lo, ci_hi) = bootstrap_ratio(&self.rounds);
            println!(
                "\n- on ÷ off, 95% bootstrap interval over rounds: {ci_lo:.3}×–{ci_hi:.3}×; \
                 per-round on ÷ off: median {median:.3}×, range {lo:.3}×–{hi:.3}× over {} rounds; \
                 req/s per round (off / on): {}",
                per.len(),
                self.rounds
                    .iter()
                    .map(|(off, on)| format!("{} / {}", fmt_num(*off), fmt_num(*on)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if opts.ab_inject {
            println!(
                "- checked before timing: the origin received `Authorization: Bearer <token>` via \
                 `{INJECT_NAME}` and no `Authorization` via `{ORIGIN_NAME}`.\n"
            );
        } else {
            println!(
                "- checked before timing: the origin received no `Authorization` via either name.\n"
            );
        }
    }
}

/// A 95% interval for mean(on) ÷ mean(off) over paired rounds, by
/// resampling rounds (2,000 times; a fixed seed, so a run repeats its own
/// interval). Rounds are equal in length, so this is the req/s ratio.
fn bootstrap_ratio(rounds: &[(f64, f64)]) -> (f64, f64) {
    if rounds.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: plenty for picking round indices.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let n = rounds.len();
    let mut ratios: Vec<f64> = (0..2000)
        .map(|_| {
            let (mut off, mut on) = (0.0, 0.0);
            for _ in 0..n {
                let (f, o) = rounds[(next() % n as u64) as usize];
                off += f;
                on += o;
            }
            on / off
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() * 25 / 1000],
        ratios[ratios.len() * 975 / 1000],
    )
}

/// One untimed `GET /check` through airlock per name: the origin must have
/// received exactly airlock's credential on the injecting name, and none on
/// the plain one. Errors (and so fails the run) otherwise.
async fn verify_injection(
    plain: &Clients,
    inject: &Clients,
    proxied: Route,
    injecting: bool,
    origin: &mut Origin,
) -> anyhow::Result<()> {
    let want = format!("Bearer {INJECT_TOKEN}");
    let on = injecting.then_some(want.as_str());
    for (c, expect) in [(plain, None), (inject, on)] {
        let _stale = origin.take_check()?;
        let mut s = c.connect(proxied).await?;
        c.get(&mut s, "/check")
            .await
            .with_context(|| format!("GET /check via airlock to {}", c.name))?;
        drop(s);
        let (host, auth) = origin
            .take_check()?
            .with_context(|| format!("the origin saw no GET /check for {}", c.name))?;
        if host.split(':').next() != Some(c.name) {
            bail!(
                "GET /check to {} arrived at the origin with Host {host:?}",
                c.name
            );
        }
        if auth.as_deref() != expect {
            let shown = |a: Option<&str>| {
                a.map_or("no Authorization header".to_owned(), |v| {
                    // Never print a token that is not the test one.
                    if v == want {
                        format!("{v:?}")
                    } else {
                        format!("an Authorization header of {} bytes", v.len())
                    }
                })
            };
            bail!(
                "INJECTION CHECK FAILED: via {}, the origin received {}, expected {}",
                c.name,
                shown(auth.as_deref()),
                shown(expect)
            );
        }
    }
    Ok(())
}

/// Keep-alive small GETs through airlock, to the plain name (off) and to the
/// injecting name (on): both connection sets are opened once and reused, and
/// the sides alternate in short timed runs, the order swapped every round
/// (off on, on off, off on, …), so drift on a busy machine falls on both.
async fn inject_ab(
    plain: &Clients,
    inject: &Clients,
    proxied: Route,
    opts: &Opts,
    pid: u32,
    origin: &mut Origin,
) -> anyhow::Result<AbResult> {
    let empty = || Outcome {
        count: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: Some(Duration::ZERO),
        self_cpu: Some(Duration::ZERO),
        latencies_us: Vec::new(),
        origin_accepts: 0,
    };
    let sides = [
        Arc::new(plain.clone_handles()),
        Arc::new(inject.clone_handles()),
    ];
    let mut states = Vec::with_capacity(2);
    for c in &sides {
        let senders = connect_many(c, proxied, opts.conns).await?;
        states.push(
            senders
                .into_iter()
                .map(|s| (Arc::clone(c), s))
                .collect::<Vec<_>>(),
        );
    }
    // One short untimed run per side first: both sets of connections and
    // airlock's upstream pool for each name are warm.
    for st in &mut states {
        let (_, back) = timed(std::mem::take(st), opts.ab_secs / 2.0, None, small_get).await;
        *st = back;
    }
    let mut sum = [empty(), empty()];
    let mut rounds = Vec::with_capacity(opts.ab_rounds);
    for round in 0..opts.ab_rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut rates = [0.0; 2];
        for side in order {
            if opts.ab_side.is_some_and(|only| only != side) {
                continue;
            }
            let before = origin.accepts();
            let (o, back) = timed(
                std::mem::take(&mut states[side]),
                opts.ab_secs,
                Some(pid),
                small_get,
            )
            .await;
            states[side] = back;
            let acc = &mut sum[side];
            acc.origin_accepts += origin.accepts() - before;
            rates[side] = o.rate();
            acc.count += o.count;
            acc.errors += o.errors;
            acc.elapsed += o.elapsed;
            acc.cpu = Some(acc.cpu.unwrap_or_default() + o.cpu.unwrap_or_default());
            acc.self_cpu = Some(acc.self_cpu.unwrap_or_default() + o.self_cpu.unwrap_or_default());
            acc.latencies_us.extend(o.latencies_us);
        }
        rounds.push((rates[0], rates[1]));
    }
    let [off, on] = sum;
    Ok(AbResult { off, on, rounds })
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn fmt_num(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_row(name: &str, d: &Outcome, a: &Outcome, unit: &str, target: f64) -> Row {
    let ratio = a.rate() / d.rate();
    Row {
        scenario: name.to_owned(),
        direct: format!("{} {unit}", fmt_num(d.rate())),
        airlock: format!("{} {unit}", fmt_num(a.rate())),
        ratio: format!("{ratio:.2}×"),
        cpu: a.cpu_per_op().map_or("—".into(), |c| {
            format!("{} µs/req", fmt_num(c.as_secs_f64() * 1e6))
        }),
        target: format!("≥ {target:.2}×"),
        verdict: pass(ratio >= target && a.errors == 0),
    }
}

fn transfer_row(name: &str, d: &Outcome, a: &Outcome, mib: u64, target: f64) -> Row {
    let rate = |o: &Outcome| o.rate() * mib as f64;
    let ratio = rate(a) / rate(d);
    Row {
        scenario: name.to_owned(),
        direct: format!("{:.0} MiB/s", rate(d)),
        airlock: format!("{:.0} MiB/s", rate(a)),
        ratio: format!("{ratio:.2}×"),
        cpu: a.cpu_per_op().map_or("—".into(), |c| {
            format!("{:.0} ms/transfer", c.as_secs_f64() * 1e3)
        }),
        target: format!("≥ {target:.2}×"),
        verdict: pass(ratio >= target && a.errors == 0),
    }
}

/// The bench's airlock config; `scanner = false` (scenario 7's other side)
/// leaves out `[scan]` and the `inject` (a held secret would turn the
/// scanner on for it).
fn config_text(opts: &Opts, origin: SocketAddr, scanner: bool) -> String {
    let patterns = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
    let scan = if !scanner {
        "# [scan] left out: scenario 7's scanner-off side\n\n".to_owned()
    } else if patterns.is_file() {
        format!(
            "[scan]\npatterns = \"{}\"\noutgoing = \"block\"\nincoming = \"redact\"\n\n",
            patterns.display()
        )
    } else {
        String::new()
    };
    format!(
        "# airlock.toml written by benches/e2e.rs: test-only (private CAs, loopback origin).\n\
         [proxy]\n\
         listen = \"127.0.0.1:0\"\n\
         \n\
         [tls]\n\
         ca_cert = \"certs/ca.pem\"\n\
         ca_key = \"certs/ca-key.pem\"\n\
         upstream_roots = \"webpki\"\n\
         extra_upstream_roots = [\"origin-ca.pem\"]\n\
         \n\
         [dns]\n\
         resolve = {{ \"{ORIGIN_NAME}\" = \"{ip}\", \"{INJECT_NAME}\" = \"{ip}\" }}\n\
         allow_cidrs = [\"127.0.0.0/8\"]\n\
         \n\
         {scan}\
         [audit]\n\
         output = \"{audit}\"\n\
         \n\
         [secrets]\n\
         backend = \"file\"\n\
         file = \"{SECRETS_FILE}\"\n\
         \n\
         [[host]]\n\
         match = \"{ORIGIN_NAME}\"\n\
         ports = [{port}]\n\
         methods = [\"GET\", \"POST\"]\n\
         paths = [\"/small\", \"/big\", \"/upload\", \"/check\"]\n\
         \n\
         # Scenario 6: the rule above plus an injection. `rate = \"unlimited\"`\n\
         # keeps its limits the same as the rule above's (an injecting rule\n\
         # that allows POST would otherwise get the default write rate).\n\
         [[host]]\n\
         match = \"{INJECT_NAME}\"\n\
         ports = [{port}]\n\
         methods = [\"GET\", \"POST\"]\n\
         paths = [\"/small\", \"/big\", \"/upload\", \"/check\"]\n\
         rate = \"unlimited\"\n\
         {inject}",
        inject = if !scanner {
            "# inject left out: scenario 7's scanner-off side\n".to_owned()
        } else if opts.ab_inject {
            format!(
                "inject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"{INJECT_SECRET_REF}\" }}\n"
            )
        } else {
            "# inject left out: E2E_AB_INJECT=0 (A/A calibration run)\n".to_owned()
        },
        ip = origin.ip(),
        port = origin.port(),
        audit = if opts.audit_file { "audit.log" } else { "off" },
    )
}

const SECRETS_FILE: &str = "secrets.toml";

/// Writes the file backend's secrets beside the config, mode 0600 from the
/// start (airlock refuses a group- or world-readable secrets file).
fn write_secrets(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (path, key) = INJECT_SECRET_REF
        .split_once('#')
        .context("INJECT_SECRET_REF is path#key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(SECRETS_FILE))
        .context("writing the secrets file")?;
    write!(
        f,
        "# Test-only secret for benches/e2e.rs scenario 6.\n[\"{path}\"]\n{key} = \"{INJECT_TOKEN}\"\n"
    )?;
    Ok(())
}

fn git_rev() -> String {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "(unknown revision)".into(),
    }
}

fn mem_total() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("? memory".into(), |kib| {
            format!("{:.0} GiB", kib as f64 / MIB)
        })
}

// ------------------------------------------------------------------ /proc

/// utime + stime of `pid` (all threads, including exited ones).
fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / clk_tck() as f64)
}

fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

static ORIGIN_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// CPU time of this process (the clients) plus the origin process.
fn client_origin_cpu() -> Duration {
    proc_cpu(std::process::id()) + ORIGIN_PID.get().map_or(Duration::ZERO, |&p| proc_cpu(p))
}

/// (VmRSS, VmHWM) in KiB.
fn proc_mem(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn count_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// ------------------------------------------------------------------ airlock process

struct Airlock {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Airlock {
    fn start(bin: &Path, config: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(config.parent().unwrap_or(Path::new(".")))
            .env("RUST_LOG", "airlock=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let log_w = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if let Some(addr) = ready_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    let _sent = tx.send(addr);
                }
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("[airlock {pid}] {line}");
                }
                let mut log = log_w.lock().unwrap();
                if log.len() == 50 {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let mut this = Self {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => {
                this.addr = addr;
                Ok(this)
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                let log = this
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(anyhow!(
                    "airlock did not print \"proxy ready\" within 15 s; its log:\n{log}"
                ))
            }
        }
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _killed = child.kill();
        let _reaped = child.wait();
    }
}

impl Drop for Airlock {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in airlock's "proxy ready: HTTPS_PROXY=http://ADDR" line.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("proxy ready") {
        return None;
    }
    let rest = line.split_once("HTTPS_PROXY=http://")?.1;
    rest.split_whitespace()
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

// ------------------------------------------------------------------ origin CA

// The integration tests' CA, shared rather than copied.
#[allow(dead_code)]
#[path = "../tests/it/support/ca.rs"]
mod ca;
use ca::TestCa;

// ------------------------------------------------------------------ bodies

/// `len` bytes as 64 KiB slices of one shared buffer: streamed, never whole.
struct Chunks {
    left: u64,
    chunk: Bytes,
}

impl Chunks {
    fn new(len: u64) -> Self {
        const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; ";
        let chunk: Vec<u8> = TEXT.iter().copied().cycle().take(CHUNK).collect();
        Self {
            left: len,
            chunk: Bytes::from(chunk),
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(this.chunk.len() as u64) as usize;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type OriginBody = Either<Full<Bytes>, Chunks>;
type ReqBody = Either<Empty<Bytes>, Chunks>;

// ------------------------------------------------------------------ origin

/// The origin runs in its own process (this executable, `E2E_ROLE=origin`),
/// like a real origin: direct requests then cost the same process hops a
/// real client pays, instead of a same-thread loop no proxy could match.
/// It answers `stats` on stdin with its accept count, and exits at EOF.
struct Origin {
    addr: SocketAddr,
    big_len: u64,
    pid: u32,
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

impl Origin {
    fn start(ca: &TestCa, dir: &Path, h2: bool, mib: u64) -> anyhow::Result<Self> {
        use std::io::Write as _;
        let (chain, key) = ca.leaf_pem(&[ORIGIN_NAME, INJECT_NAME]);
        std::fs::write(dir.join("origin-chain.pem"), chain)?;
        std::fs::write(dir.join("origin-key.pem"), key)?;
        let mut child = Command::new(std::env::current_exe()?)
            .env("E2E_ROLE", "origin")
            .env("E2E_ORIGIN_DIR", dir)
            .env("E2E_ORIGIN_H2", if h2 { "1" } else { "0" })
            .env("E2E_MIB", mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the origin process")?;
        let pid = child.id();
        let stdin = child.stdin.take().context("origin stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("origin stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .strip_prefix("ORIGIN ")
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("origin process did not start: {line:?}"))?;
        let mut this = Self {
            addr,
            big_len: mib * 1024 * 1024,
            pid,
            child,
            stdin,
            stdout,
        };
        this.stdin.flush()?;
        Ok(this)
    }

    /// TLS connections the origin accepted so far (through airlock: its
    /// upstream connections, which a working pool keeps few).
    fn accepts(&mut self) -> u64 {
        use std::io::Write as _;
        let mut line = String::new();
        let asked = writeln!(self.stdin, "stats").and_then(|()| self.stdin.flush());
        if asked.is_err() || self.stdout.read_line(&mut line).is_err() {
            return 0;
        }
        line.trim()
            .strip_prefix("accepts ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The `Host` and `Authorization` (if any) of the last `GET /check` the
    /// origin answered since the previous call, which clears it.
    fn take_check(&mut self) -> anyhow::Result<Option<(String, Option<String>)>> {
        use std::io::Write as _;
        writeln!(self.stdin, "check")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let rest = line
            .trim_end_matches(['\r', '\n'])
            .strip_prefix("check")
            .with_context(|| format!("origin answered {line:?} to `check`"))?;
        let mut fields = rest.split('\t').skip(1);
        Ok(fields.next().map(|host| {
            let auth = fields.next().map(str::to_owned);
            (host.to_owned(), auth)
        }))
    }
}

/// `E2E_ROLE=origin`: serve until stdin closes.
fn origin_main() -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject as _;
    let dir = PathBuf::from(std::env::var_os("E2E_ORIGIN_DIR").context("E2E_ORIGIN_DIR")?);
    let chain = CertificateDer::pem_file_iter(dir.join("origin-chain.pem"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("origin-key.pem"))?;
    let h2 = env_or("E2E_ORIGIN_H2", 0_u8) != 0;
    let big_len = env_or("E2E_MIB", 64_u64).max(1) * 1024 * 1024;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = TlsAcceptor::from(Arc::new(config));
    // Inherits the parent's CPU set: as many workers as CPUs it may use.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let accepts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepts);
    let checked: Checked = Arc::default();
    let checked_r = Arc::clone(&checked);
    rt.block_on(async move {
        // 127.0.0.2 keeps the origin's ports apart from airlock's (127.0.0.1).
        let listener = match TcpListener::bind("127.0.0.2:0").await {
            Ok(l) => l,
            Err(_) => TcpListener::bind("127.0.0.1:0").await?,
        };
        println!("ORIGIN {}", listener.local_addr()?);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("stats") => println!("accepts {}", accepts.load(Ordering::Relaxed)),
                    // `check[\tHOST[\tAUTHORIZATION]]`: the last `GET /check`.
                    Ok("check") => match checked_r.lock().unwrap().take() {
                        Some((host, Some(auth))) => println!("check\t{host}\t{auth}"),
                        Some((host, None)) => println!("check\t{host}"),
                        None => println!("check"),
                    },
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            std::process::exit(0);
        });
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let _nodelay = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let checked = Arc::clone(&checked);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = service_fn(move |req| origin_handle(req, big_len, Arc::clone(&checked)));
                let io = TokioIo::new(tls);
                if is_h2 {
                    let _done = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _done = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    })
}

/// What the last `GET /check` carried: (`Host`, `Authorization`).
type Checked = Arc<Mutex<Option<(String, Option<String>)>>>;

async fn origin_handle(
    req: Request<Incoming>,
    big_len: u64,
    checked: Checked,
) -> Result<Response<OriginBody>, Infallible> {
    const SMALL: &[u8] = b"{\"ok\":true,\"msg\":\"a small JSON answer from the loopback origin, about one hundred bytes.\"}\n";
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/small") => {
            Response::new(Either::Left(Full::new(Bytes::from_static(SMALL))))
        }
        (&Method::GET, "/big") => Response::new(Either::Right(Chunks::new(big_len))),
        // Records what arrived (scenario 6 checks the injected header here,
        // outside the timed runs, so `/small` stays as cheap as it was).
        (&Method::GET, "/check") => {
            let text = |name| {
                req.headers()
                    .get(name)
                    .map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            // HTTP/1.1 `Host`; over h2, the `:authority` airlock sent.
            let host = text(HOST)
                .or_else(|| req.uri().authority().map(ToString::to_string))
                .unwrap_or_default();
            let auth = text(http::header::AUTHORIZATION);
            *checked.lock().unwrap() = Some((host, auth));
            Response::new(Either::Left(Full::new(Bytes::from_static(SMALL))))
        }
        (&Method::POST, "/upload") => {
            let mut body = req.into_body();
            let mut n = 0_u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(Either::Left(Full::new(Bytes::from(n.to_string()))))
        }
        _ => {
            let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"not found\n"))));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

// ------------------------------------------------------------------ clients

#[derive(Debug, Clone, Copy)]
enum Route {
    Direct,
    Proxy(SocketAddr),
}

struct Clients {
    origin: SocketAddr,
    /// The origin name asked for: SNI, `CONNECT` target and `Host`.
    name: &'static str,
    host_header: String,
    /// A header every request carries (scenario 6's padding control).
    extra: Option<(&'static str, &'static str)>,
    big_len: u64,
    direct_tls: TlsConnector,
    proxy_tls: TlsConnector,
}

fn client_tls(ca_der: CertificateDer<'static>, resume: bool) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der)?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Clients {
    fn new(
        origin_ca: &TestCa,
        airlock_ca: &Path,
        origin: &Origin,
        resume: bool,
    ) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        let airlock_der =
            CertificateDer::from_pem_file(airlock_ca).context("reading airlock's CA")?;
        Ok(Self {
            origin: origin.addr,
            name: ORIGIN_NAME,
            host_header: format!("{ORIGIN_NAME}:{}", origin.addr.port()),
            extra: None,
            big_len: origin.big_len,
            direct_tls: client_tls(origin_ca.cert_der.clone(), resume)?,
            proxy_tls: client_tls(airlock_der, resume)?,
        })
    }

    /// TCP (+ CONNECT) + TLS + HTTP/1.1 handshake. The connection task is
    /// returned so a caller can wait for the close.
    async fn connect_full(
        &self,
        route: Route,
    ) -> anyhow::Result<(SendRequest<ReqBody>, tokio::task::JoinHandle<()>)> {
        let (tcp, tls) = match route {
            Route::Direct => {
                let tcp = TcpStream::connect(self.origin).await?;
                (tcp, &self.direct_tls)
            }
            Route::Proxy(proxy) => {
                let mut tcp = TcpStream::connect(proxy).await?;
                tcp.set_nodelay(true)?;
                let head = format!(
                    "CONNECT {h} HTTP/1.1\r\nHost: {h}\r\n\r\n",
                    h = self.host_header
                );
                tcp.write_all(head.as_bytes()).await?;
                read_connect_reply(&mut tcp).await?;
                (tcp, &self.proxy_tls)
            }
        };
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.name)?;
        let tls = tls.connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let task = tokio::spawn(async move {
            let _done = conn.await;
        });
        Ok((sender, task))
    }

    async fn connect(&self, route: Route) -> anyhow::Result<SendRequest<ReqBody>> {
        Ok(self.connect_full(route).await?.0)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
    ) -> anyhow::Result<Request<ReqBody>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host_header);
        if let Some((name, value)) = self.extra {
            b = b.header(name, value);
        }
        if let Some(len) = body.size_hint().exact().filter(|&n| n > 0) {
            b = b.header(CONTENT_LENGTH, len);
        }
        Ok(b.body(body)?)
    }

    /// One request; returns the response body length.
    async fn send(
        &self,
        s: &mut SendRequest<ReqBody>,
        req: Request<ReqBody>,
    ) -> anyhow::Result<(StatusCode, Bytes, u64)> {
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0_u64;
        let mut first = Bytes::new();
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame?.into_data() {
                n += d.len() as u64;
                if first.is_empty() && d.len() <= 256 {
                    first = d;
                }
            }
        }
        Ok((status, first, n))
    }

    async fn get(&self, s: &mut SendRequest<ReqBody>, path: &str) -> anyhow::Result<u64> {
        let req = self.request(Method::GET, path, Either::Left(Empty::new()))?;
        let (status, first, n) = self.send(s, req).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&first));
        }
        Ok(n)
    }

    async fn upload(&self, s: &mut SendRequest<ReqBody>, len: u64) -> anyhow::Result<u64> {
        let req = self.request(Method::POST, "/upload", Either::Right(Chunks::new(len)))?;
        let (status, first, _) = self.send(s, req).await?;
        if status != StatusCode::OK {
            bail!(
                "POST /upload: {status}: {}",
                String::from_utf8_lossy(&first)
            );
        }
        let got: u64 = String::from_utf8_lossy(&first).trim().parse().unwrap_or(0);
        if got != len {
            bail!("POST /upload: origin counted {got} bytes of {len}");
        }
        Ok(got)
    }
}

async fn read_connect_reply(tcp: &mut TcpStream) -> anyhow::Result<()> {
    // airlock sends nothing after its reply until the ClientHello, so
    // reading until the blank line never eats tunnel bytes.
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0_u8; 512];
    loop {
        let n = tcp.read(&mut byte).await?;
        if n == 0 {
            bail!(
                "proxy closed during CONNECT: {}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 16 * 1024 {
            bail!("CONNECT reply too long");
        }
    }
    if !(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")) {
        bail!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&buf).lines().next().unwrap_or("")
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ scenarios

struct Outcome {
    count: u64,
    errors: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
    /// This process's (client + origin) CPU time over the same window.
    self_cpu: Option<Duration>,
    latencies_us: Vec<u32>,
    origin_accepts: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_op(&self) -> Option<Duration> {
        self.cpu
            .map(|c| c / u32::try_from(self.count.max(1)).unwrap_or(u32::MAX))
    }

    fn detail(&self, scenario: &str, route: &'static str) -> Detail {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct =
            |p: f64| (!l.is_empty()).then(|| u64::from(l[((l.len() - 1) as f64 * p) as usize]));
        Detail {
            scenario: scenario.to_owned(),
            route,
            count: self.count,
            errors: self.errors,
            secs: self.elapsed.as_secs_f64(),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            origin_accepts: self.origin_accepts,
            self_cpu_us: self
                .self_cpu
                .map(|c| c.as_secs_f64() * 1e6 / self.count.max(1) as f64),
        }
    }
}

/// Runs `workers` copies of `step` until `secs` have passed; `pid`'s CPU
/// time is read over exactly that window. The states come back (in no
/// particular order), so connections can be reused by the next run.
async fn timed<F, Fut, St>(
    states: Vec<St>,
    secs: f64,
    pid: Option<u32>,
    step: F,
) -> (Outcome, Vec<St>)
where
    St: Send + 'static,
    F: Fn(St) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (St, anyhow::Result<()>)> + Send + 'static,
{
    let cpu0 = pid.map(proc_cpu);
    let self0 = client_origin_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for st in states {
        let step = step.clone();
        let stop = Arc::clone(&stop);
        set.spawn(async move {
            let mut st = st;
            let (mut n, mut errs, mut lat) = (0_u64, 0_u64, Vec::with_capacity(4096));
            let mut first_err = None;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (next, r) = step(st).await;
                st = next;
                match r {
                    Ok(()) => {
                        n += 1;
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    Err(e) => {
                        errs += 1;
                        first_err.get_or_insert(e);
                        if errs > 100 {
                            break;
                        }
                    }
                }
            }
            (st, n, errs, lat, first_err)
        });
    }
    let mut out = Outcome {
        count: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: None,
        self_cpu: None,
        latencies_us: Vec::new(),
        origin_accepts: 0,
    };
    let mut states = Vec::new();
    while let Some(joined) = set.join_next().await {
        let Ok((st, n, errs, lat, first_err)) = joined else {
            continue;
        };
        states.push(st);
        out.count += n;
        out.errors += errs;
        out.latencies_us.extend(lat);
        if let Some(e) = first_err {
            eprintln!("error ({errs} in this worker): {e:#}");
        }
    }
    out.elapsed = start.elapsed();
    out.cpu = pid.map(|p| proc_cpu(p).saturating_sub(cpu0.unwrap_or_default()));
    out.self_cpu = Some(client_origin_cpu().saturating_sub(self0));
    (out, states)
}

async fn connect_many(
    clients: &Arc<Clients>,
    route: Route,
    n: usize,
) -> anyhow::Result<Vec<SendRequest<ReqBody>>> {
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let c = Arc::clone(clients);
        set.spawn(async move {
            let mut s = c.connect(route).await?;
            c.get(&mut s, "/small").await?;
            Ok::<_, anyhow::Error>(s)
        });
        // Batches of 50 in flight.
        if set.len() >= 50 || i + 1 == n {
            while let Some(r) = set.join_next().await {
                out.push(r??);
            }
        }
    }
    Ok(out)
}

/// One keep-alive `GET /small`: the step of scenarios 1 and 6.
async fn small_get(
    (c, mut s): (Arc<Clients>, SendRequest<ReqBody>),
) -> ((Arc<Clients>, SendRequest<ReqBody>), anyhow::Result<()>) {
    let r = c.get(&mut s, "/small").await.map(|_| ());
    ((c, s), r)
}

async fn keep_alive(
    clients: &Clients,
    route: Route,
    conns: usize,
    secs: f64,
    pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let clients = Arc::new(clients.clone_handles());
    let senders = connect_many(&clients, route, conns).await?;
    let states: Vec<_> = senders
        .into_iter()
        .map(|s| (Arc::clone(&clients), s))
        .collect();
    Ok(timed(states, secs, pid, small_get).await.0)
}

async fn new_conn(
    clients: &Clients,
    route: Route,
    workers: usize,
    secs: f64,
    pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let clients = Arc::new(clients.clone_handles());
    let states: Vec<_> = (0..workers).map(|_| Arc::clone(&clients)).collect();
    Ok(timed(states, secs, pid, move |c| async move {
        let r = async {
            let (mut s, task) = c.connect_full(route).await?;
            c.get(&mut s, "/small").await?;
            drop(s);
            // The connection task ends once the sender is gone: the close is
            // part of the measured cycle.
            let _closed = task.await;
            Ok(())
        }
        .await;
        (c, r)
    })
    .await
    .0)
}

async fn transfer(
    clients: &Clients,
    route: Route,
    upload: bool,
    mib: u64,
    secs: f64,
    pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let clients = Arc::new(clients.clone_handles());
    let mut s = clients.connect(route).await?;
    clients.get(&mut s, "/small").await?;
    let len = mib * 1024 * 1024;
    // One connection, back-to-back transfers, at least 3 of them.
    let cpu0 = pid.map(proc_cpu);
    let self0 = client_origin_cpu();
    let start = Instant::now();
    let mut out = Outcome {
        count: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: None,
        self_cpu: None,
        latencies_us: Vec::new(),
        origin_accepts: 0,
    };
    while out.count < 3 || start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let r = if upload {
            clients.upload(&mut s, len).await
        } else {
            clients.get(&mut s, "/big").await
        };
        match r {
            Ok(n) if n == len => {
                out.count += 1;
                out.latencies_us
                    .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok(n) => bail!("transfer of {len} bytes moved {n}"),
            Err(e) => {
                eprintln!("transfer failed ({route:?}): {e:#}");
                out.errors += 1;
                if out.errors > 3 {
                    break;
                }
                s = clients.connect(route).await?;
            }
        }
    }
    out.elapsed = start.elapsed();
    out.cpu = pid.map(|p| proc_cpu(p).saturating_sub(cpu0.unwrap_or_default()));
    out.self_cpu = Some(client_origin_cpu().saturating_sub(self0));
    Ok(out)
}

impl Clients {
    fn clone_handles(&self) -> Self {
        Self {
            origin: self.origin,
            name: self.name,
            host_header: self.host_header.clone(),
            extra: self.extra,
            big_len: self.big_len,
            direct_tls: self.direct_tls.clone(),
            proxy_tls: self.proxy_tls.clone(),
        }
    }

    /// The same clients, asking for the origin by another of its names.
    fn named(&self, name: &'static str) -> Self {
        Self {
            name,
            host_header: format!("{name}:{}", self.origin.port()),
            ..self.clone_handles()
        }
    }
}

struct Idle {
    established: usize,
    alive: usize,
    baseline_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    fds: usize,
}

async fn idle_tunnels(
    clients: &Clients,
    proxy: SocketAddr,
    pid: u32,
    n: usize,
) -> anyhow::Result<Idle> {
    let clients = Arc::new(clients.clone_handles());
    let route = Route::Proxy(proxy);
    // One warm-up tunnel so the leaf is minted, then measure the baseline.
    let mut warm = clients.connect(route).await?;
    clients.get(&mut warm, "/small").await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (baseline_kib, _) = proc_mem(pid);
    let mut tunnels = connect_many(&clients, route, n).await?;
    let established = tunnels.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_kib, hwm_kib) = proc_mem(pid);
    let fds = count_fds(pid);
    // Prove they are still open: one more GET on each.
    let mut alive = 0;
    for batch in tunnels.chunks_mut(100) {
        let mut set = JoinSet::new();
        for s in batch.iter_mut() {
            let c = Arc::clone(&clients);
            let fut = {
                // SendRequest is not Clone for http1; move a fresh future per sender.
                let ready = s.ready().await.is_ok();
                let req = c.request(Method::GET, "/small", Either::Left(Empty::new()));
                match (ready, req) {
                    (true, Ok(req)) => Some(s.send_request(req)),
                    _ => None,
                }
            };
            if let Some(fut) = fut {
                set.spawn(async move {
                    let resp = fut.await.ok()?;
                    let ok = resp.status() == StatusCode::OK;
                    resp.into_body().collect().await.ok()?;
                    ok.then_some(())
                });
            }
        }
        while let Some(r) = set.join_next().await {
            if matches!(r, Ok(Some(()))) {
                alive += 1;
            }
        }
    }
    drop(tunnels);
    Ok(Idle {
        established,
        alive,
        baseline_kib,
        rss_kib,
        hwm_kib,
        fds,
    })
}
