//! The soak: mixed traffic through a real airlock process for
//! `SOAK_SECONDS` (default 120; `scripts/soak` runs 1800 and plots the
//! samples), sampling its RSS, descriptors and threads every few seconds.
//!
//! Traffic, from 4 workers in turn: keep-alive GETs with a credential
//! injected from a real OpenBao (cache TTL 5 s, so it is read again and
//! again), a new connection per GET, 256 KiB uploads, 1 MiB downloads, an
//! upload carrying an AWS key (refused), a host no rule allows (refused),
//! a write held for approval and allowed by a decider URL, a
//! server-sent-event stream, and a WebSocket session (two messages echoed); the rule file is rewritten (a reload) every
//! `SOAK_SECONDS / 30` seconds (at most every minute).
//!
//! It fails when a request gets an answer it should not (each kind of
//! error is counted), or when the fitted slope over the last two thirds of
//! the run is above: RSS 512 KiB per minute, descriptors or tokio tasks 1
//! per minute (for runs under 10 minutes, which still fit part of the
//! warm-up and in CI share the machine with every other test: 2 MiB, 3 and
//! 5 per minute), when the leaf cache holds more than the two names, or when, with traffic stopped, the
//! descriptors do not fall back to within 16 of their count at the start.
//! Samples go to `target/soak/samples.csv`, the summary to
//! `target/soak/summary.txt`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::service::service_fn;

use crate::support::bao::Bao;
use crate::support::ca::TestCa;
use crate::support::origin::{Handler, Origin, full, record};

const AWS_KEY: &str = "AKIAZ7VRSQ5TBHXNJMQE";

fn origin_handler() -> Handler {
    Arc::new(|mut req, rec| {
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            if path == "/ws" {
                // Echoes each whole message back as one frame, until the
                // client closes.
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let Ok(up) = upgrade.await else { return };
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    let mut message = Vec::new();
                    while let Some((fin, opcode, payload)) = crate::scan::ws_read(&mut io).await {
                        if opcode == 0x8 {
                            return;
                        }
                        message.extend_from_slice(&payload);
                        if fin {
                            let frame = crate::scan::ws_frame(true, 0x1, None, &message);
                            if io.write_all(&frame).await.is_err() {
                                return;
                            }
                            message.clear();
                        }
                    }
                });
                return crate::support::origin::switching_to_websocket();
            }
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let r = record(req, &rec).await;
            // Keep the recorder small over a long run.
            {
                let mut got = rec.received.lock().unwrap();
                if got.len() > 64 {
                    got.clear();
                }
            }
            match path.as_str() {
                "/down" => Response::new(full(Bytes::from(vec![b'd'; 1024 * 1024]))),
                "/sse" => {
                    let mut resp =
                        Response::new(full("data: one\n\ndata: two\n\ndata: three\n\n".to_owned()));
                    resp.headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    resp
                }
                _ => Response::new(full(format!(
                    "{} {} {} auth={}",
                    r.method,
                    r.target,
                    r.body.map_or(0, |b| b.len()),
                    auth.as_deref() == Some("Bearer soak-token-value-0001"),
                ))),
            }
        })
    })
}

/// A decider that allows everything it is asked about.
async fn decider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/decide", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(full(r#"{"decision":"allow"}"#)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    url
}

/// A WebSocket session through the tunnel: upgrade, two messages echoed
/// back, close.
async fn ws_session(listen: u16, ca_pem: &str, target: &str) -> bool {
    use tokio::io::AsyncWriteExt;
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    let mut tls = crate::support::client::tls_tunnel_via(
        proxy,
        ca_pem,
        target,
        "api.soak.test",
        &[b"http/1.1"],
        true,
    )
    .await;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    if tls.write_all(upgrade.as_bytes()).await.is_err() {
        return false;
    }
    if crate::support::client::read_response(&mut tls).await.status != 101 {
        return false;
    }
    for msg in [&b"soak-ws-one"[..], b"soak-ws-two"] {
        let frame = crate::scan::ws_frame(true, 0x1, Some([7, 1, 3, 9]), msg);
        if tls.write_all(&frame).await.is_err() {
            return false;
        }
        let echoed =
            tokio::time::timeout(Duration::from_secs(10), crate::scan::ws_read(&mut tls)).await;
        match echoed {
            Ok(Some((true, 0x1, payload))) if payload == msg => {}
            _ => return false,
        }
    }
    let close = crate::scan::ws_frame(true, 0x8, Some([7, 1, 3, 9]), b"");
    let _ = tls.write_all(&close).await;
    let _ = tls.shutdown().await;
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rules(port: u16, generation: u64) -> String {
    format!(
        "# soak rules, generation {generation}\n\
         [[host]]\nmatch = \"api.soak.test\"\nports = [{port}]\nmethods = [\"GET\", \"POST\"]\n\
         paths = [\"/get\", \"/down\", \"/up\", \"/leak\", \"/sse\", \"/ws\"]\nrate = \"unlimited\"\nwebsocket = true\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{{{secret}}}}\", secret = \"tools/soak#token\" }}\n\n\
         [[host]]\nmatch = \"api.soak.test\"\nports = [{port}]\nmethods = [\"POST\"]\npaths = [\"/held\"]\n\
         rate = \"unlimited\"\napproval = \"required\"\n"
    )
}

#[derive(Default, Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    secrets_cached: u64,
    tunnels: u64,
    tasks: u64,
    leaves: u64,
}

fn proc_sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

async fn metrics(http: &reqwest::Client, admin: &str) -> BTreeMap<String, u64> {
    let Ok(resp) = http.get(format!("http://{admin}/metrics")).send().await else {
        return BTreeMap::new();
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The RSS no sample of a run under 10 minutes may reach (80 MiB).
const SHORT_RSS_CEILING_KIB: u64 = 80 * 1024;

/// The slope (KiB per minute) of the RSS floor: the lowest sample of each
/// of eight equal stretches of `window`, fitted over the stretches' middles.
fn floor_slope(window: &[&Sample]) -> f64 {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return 0.0;
    };
    let width = (last.at - first.at) / 8.0;
    if width <= 0.0 {
        return 0.0;
    }
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for k in 0..8 {
        let (from, to) = (
            first.at + width * k as f64,
            first.at + width * (k + 1) as f64,
        );
        let floor = window
            .iter()
            .filter(|s| s.at >= from && (s.at < to || k == 7))
            .map(|s| s.rss_kib)
            .min();
        if let Some(floor) = floor {
            xs.push((from + to) / 2.0 / 60.0);
            ys.push(floor as f64);
        }
    }
    slope(&xs, &ys)
}

#[test]
fn the_floor_slope_sees_a_leak_through_in_flight_bodies_and_not_the_bodies() {
    // 80 s sampled each second: a floor of 45 MiB, and in the second half
    // every other sample 4 MiB above it (bodies in flight).
    let sample = |i: u64, leak_kib_per_min: u64| Sample {
        at: i as f64,
        rss_kib: 45 * 1024
            + leak_kib_per_min * i / 60
            + if i >= 40 && i.is_multiple_of(2) {
                4096
            } else {
                0
            },
        ..Sample::default()
    };
    let flat: Vec<Sample> = (0..80).map(|i| sample(i, 0)).collect();
    let leaking: Vec<Sample> = (0..80).map(|i| sample(i, 2500)).collect();
    let every = |w: &[Sample]| {
        let xs: Vec<f64> = w.iter().map(|s| s.at / 60.0).collect();
        slope(&xs, &w.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>())
    };
    // Every sample's fit takes the bodies for a leak; the floor does not.
    assert!(every(&flat) > 2048.0, "{}", every(&flat));
    let floor = floor_slope(&flat.iter().collect::<Vec<_>>());
    assert!(floor.abs() < 1.0, "{floor}");
    // A real leak moves the floor at its own rate.
    let floor = floor_slope(&leaking.iter().collect::<Vec<_>>());
    assert!((2400.0..2600.0).contains(&floor), "{floor}");
}

/// Least-squares slope of `ys` over `xs` (per unit of x).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_traffic_grows_nothing_without_bound() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let bao = Bao::start().await;
    bao.put_secret("tools/soak", &[("token", "soak-token-value-0001")])
        .await;
    let ca = TestCa::new("soak origin ca");
    let origin = Origin::https(&ca, "api.soak.test", "127.0.0.2", origin_handler()).await;
    let decider = decider().await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(dir.path().join("upstream-ca.pem"), &ca.pem).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/soak.toml"), rules(origin.port(), 0)).unwrap();
    std::fs::write(
        dir.path().join("airlock.toml"),
        format!(
            "include = [\"rules/*.toml\"]\n\n\
             [proxy]\nlisten = \"127.0.0.1:{listen}\"\nadmin = \"127.0.0.1:{admin}\"\n\n\
             [tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\nupstream_roots = \"webpki\"\n\
             extra_upstream_roots = [\"upstream-ca.pem\"]\n\n\
             [dns]\nresolve = {{ \"api.soak.test\" = \"127.0.0.2\", \"denied.soak.test\" = \"127.0.0.3\" }}\n\
             allow_cidrs = [\"127.0.0.0/8\"]\n\n\
             [secrets]\nbackend = \"vault\"\ncache_ttl = \"5s\"\nvault.address = \"{}\"\n\n\
             [approval]\ntimeout = \"10s\"\ndecider = \"{decider}\"\n\n\
             [scan]\n\n[audit]\noutput = \"audit.log\"\n",
            bao.address()
        ),
    )
    .unwrap();
    airlock::tls::ca::CertificateAuthority::init(
        &airlock::tls::ca::CaFiles::in_dir(dir.path()),
        false,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config", "airlock.toml"])
        .current_dir(dir.path())
        .env("VAULT_TOKEN", bao.root_token())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let admin_addr = format!("127.0.0.1:{admin}");
    crate::support::eventually_async("airlock ready", || {
        let http = http.clone();
        let url = format!("http://{admin_addr}/readyz");
        async move {
            let r = http.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let ws_ca = ca_pem.clone();
    let client = move || {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{listen}")).unwrap())
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let base = format!("https://api.soak.test:{}", origin.port());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // Milliseconds spent per kind of traffic: where a slow run's time went.
    let spent: Arc<Mutex<BTreeMap<&'static str, (u64, u128)>>> = Arc::default();
    let (_, fds_at_start, _) = proc_sample(pid).unwrap();

    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (stop, done, errors) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&errors));
        let spent = Arc::clone(&spent);
        let (base, client) = (base.clone(), client.clone());
        let (ws_ca, ws_target) = (ws_ca.clone(), format!("api.soak.test:{}", origin.port()));
        workers.push(tokio::spawn(async move {
            let keep = client();
            let upload = Bytes::from(vec![b'u'; 256 * 1024]);
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let began = Instant::now();
                if i % 9 == 8 {
                    if !ws_session(listen, &ws_ca, &ws_target).await {
                        *errors
                            .lock()
                            .unwrap()
                            .entry("websocket".into())
                            .or_default() += 1;
                    }
                    let mut spent = spent.lock().unwrap();
                    let e = spent.entry("websocket").or_default();
                    *e = (e.0 + 1, e.1 + began.elapsed().as_millis());
                    done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (kind, outcome) = match i % 9 {
                    0 => ("keepalive", keep.get(format!("{base}/get")).send().await),
                    1 => (
                        "new_connection",
                        client().get(format!("{base}/get")).send().await,
                    ),
                    2 => (
                        "upload",
                        keep.post(format!("{base}/up"))
                            .body(upload.clone())
                            .send()
                            .await,
                    ),
                    3 => ("download", keep.get(format!("{base}/down")).send().await),
                    4 => (
                        "secret_upload",
                        keep.post(format!("{base}/leak"))
                            .body(format!("key={AWS_KEY}"))
                            .send()
                            .await,
                    ),
                    5 => (
                        "denied_host",
                        keep.get("https://denied.soak.test/".to_owned())
                            .send()
                            .await,
                    ),
                    6 => (
                        "held",
                        keep.post(format!("{base}/held")).body("x").send().await,
                    ),
                    _ => ("sse", keep.get(format!("{base}/sse")).send().await),
                };
                let ok = match (kind, outcome) {
                    ("secret_upload", Ok(r)) => r.status() == 403,
                    ("denied_host", Ok(r)) => r.status() == 403,
                    ("denied_host", Err(_)) => true,
                    (_, Ok(r)) => {
                        let status = r.status();
                        let body = r.bytes().await.map(|b| b.len()).unwrap_or(0);
                        status == 200
                            && match kind {
                                "download" => body == 1024 * 1024,
                                _ => body > 0,
                            }
                    }
                    (_, Err(_)) => false,
                };
                if !ok {
                    *errors.lock().unwrap().entry(kind.to_owned()).or_default() += 1;
                }
                {
                    let mut spent = spent.lock().unwrap();
                    let e = spent.entry(kind).or_default();
                    *e = (e.0 + 1, e.1 + began.elapsed().as_millis());
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // A short run first lets the traffic run 30 s unsampled: at CI's 12-17
    // requests/s the allocator's floor still climbs through the first
    // minute (39.7 -> 44.3 MiB in a clean CI run) and flattens after; the
    // 30-minute run's first third covers that.
    let warm_up: u64 = if seconds < 600 { 30 } else { 0 };
    tokio::time::sleep(Duration::from_secs(warm_up)).await;
    let started = Instant::now();
    let sample_every = Duration::from_secs(if seconds >= 600 { 5 } else { 1 });
    let reload_every = Duration::from_secs((seconds / 30).clamp(2, 60));
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_reload = Instant::now();
    let mut generation = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(sample_every).await;
        if last_reload.elapsed() >= reload_every {
            generation += 1;
            std::fs::write(
                dir.path().join("rules/soak.toml"),
                rules(origin.port(), generation),
            )
            .unwrap();
            last_reload = Instant::now();
        }
        let (rss_kib, fds, threads) = proc_sample(pid).expect("airlock exited");
        let m = metrics(&http, &format!("127.0.0.1:{admin}")).await;
        samples.push(Sample {
            at: started.elapsed().as_secs_f64(),
            rss_kib,
            fds,
            threads,
            secrets_cached: m.get("airlock_secrets_cached").copied().unwrap_or(0),
            tunnels: m.get("airlock_active_tunnels").copied().unwrap_or(0),
            tasks: m.get("airlock_tasks").copied().unwrap_or(0),
            leaves: m.get("airlock_cert_cache_entries").copied().unwrap_or(0),
        });
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    // Traffic stopped: the descriptors fall back.
    let settled = crate::support::eventually("descriptors to fall back", || {
        let (_, fds, _) = proc_sample(pid)?;
        (fds <= fds_at_start + 16).then_some(fds)
    })
    .await;
    // The last rule edit is applied too (the watcher debounces).
    let m = crate::support::eventually_async("the last reload", || {
        let http = http.clone();
        let admin = format!("127.0.0.1:{admin}");
        async move {
            let m = metrics(&http, &admin).await;
            (m.get("airlock_reloads_total").copied() == Some(generation)).then_some(m)
        }
    })
    .await;
    let _ = child.kill().await;

    // Fit over the last two thirds (the first third warms caches and pools).
    let tail: Vec<&Sample> = samples.iter().skip(samples.len() / 3).collect();
    let xs: Vec<f64> = tail.iter().map(|s| s.at / 60.0).collect();
    let rss_slope = slope(
        &xs,
        &tail.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>(),
    );
    // A sample taken while a 1 MiB download and two 256 KiB uploads are in
    // flight reads up to ~4 MiB above one taken between them, and the
    // allocator hands that back; so the fit over every sample swings by
    // more than a leak does in two minutes (CI runs saw 1.0 and 2.6 MiB/min
    // on the same code). A leak raises the floor the process falls back to
    // between bodies: the bound holds the slope of the lowest sample of each
    // of eight equal stretches of the window.
    let rss_floor_slope = floor_slope(&tail);
    // The 30-minute run is held to 512 KiB per minute of floor. A short run
    // (CI's 2 minutes) is still in the allocator's warm-up: its floor moves
    // in steps as the allocator meets new peaks of bodies in flight, toward
    // the ~50 MiB the 30-minute run levels at (steps of 1.7 and 5 MiB came
    // inside the window in two runs here, 1.1 and 5.1 MiB/min), so its slope
    // cannot tell a leak from warm-up. It is held to a ceiling instead:
    // 80 MiB at any sample, which a leaked upload body (one request in
    // nine, 256 KiB each: ~45 MiB over a CI run) would cross. Under CI's
    // load its fd and task slopes are noisy too: looser bounds that still
    // catch a leak per request (hundreds of requests a minute).
    let short = seconds < 600;
    let rss_peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fd_limit = if short { 3.0 } else { 1.0 };
    let task_limit = if short { 5.0 } else { 1.0 };
    let fd_slope = slope(&xs, &tail.iter().map(|s| s.fds as f64).collect::<Vec<_>>());
    let task_slope = slope(
        &xs,
        &tail.iter().map(|s| s.tasks as f64).collect::<Vec<_>>(),
    );
    let at = |secs: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.at - secs).abs().total_cmp(&(b.at - secs).abs()))
            .copied()
            .unwrap_or_default()
    };
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let errors = errors.lock().unwrap().clone();
    let mean_ms: BTreeMap<&str, u128> = spent
        .lock()
        .unwrap()
        .iter()
        .map(|(kind, (n, ms))| (*kind, ms / u128::from((*n).max(1))))
        .collect();
    let requests = done.load(Ordering::Relaxed);
    let summary = format!(
        "soak: {seconds} s sampled after {warm_up} s of warm-up, {requests} requests ({:.0}/s), {generation} reloads ({} refused), errors by kind: {errors:?}\n\
         mean ms by kind: {mean_ms:?}\n\
         RSS KiB: first sample {}, at 10 min {}, end {}; over the last 2/3: slope of the floor {rss_floor_slope:.1} KiB/min (limit 512 in runs of 10 minutes or more), of every sample {rss_slope:.1}; peak {rss_peak} (limit {SHORT_RSS_CEILING_KIB} in shorter runs)\n\
         fds: at start {fds_at_start}, first sample {}, at 10 min {}, end {}, settled {settled}; slope {fd_slope:.2}/min (limit {fd_limit})\n\
         threads: first {}, end {}; tasks: first {}, at 10 min {}, end {}, slope {task_slope:.2}/min (limit {task_limit}); \
         leaf certs cached at end {}; secrets cached at end {}; tunnels at end {}\n",
        requests as f64 / (seconds + warm_up) as f64,
        m.get("airlock_reloads_refused_total").copied().unwrap_or(0),
        first.rss_kib,
        at(600.0).rss_kib,
        last.rss_kib,
        first.fds,
        at(600.0).fds,
        last.fds,
        first.threads,
        last.threads,
        first.tasks,
        at(600.0).tasks,
        last.tasks,
        last.leaves,
        last.secrets_cached,
        last.tunnels,
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&out).unwrap();
    let mut csv = String::from("seconds,rss_kib,fds,threads,secrets_cached,tunnels,tasks,leaves\n");
    for s in &samples {
        csv.push_str(&format!(
            "{:.1},{},{},{},{},{},{},{}\n",
            s.at, s.rss_kib, s.fds, s.threads, s.secrets_cached, s.tunnels, s.tasks, s.leaves
        ));
    }
    std::fs::write(out.join("samples.csv"), csv).unwrap();
    std::fs::write(out.join("summary.txt"), &summary).unwrap();
    eprintln!("{summary}");
    assert!(errors.is_empty(), "{summary}");
    assert!(requests > seconds, "{summary}");
    if short {
        assert!(rss_peak < SHORT_RSS_CEILING_KIB, "{summary}");
    } else {
        assert!(rss_floor_slope < 512.0, "{summary}");
    }
    assert!(fd_slope < fd_limit, "{summary}");
    assert!(task_slope < task_limit, "{summary}");
    // One name is ever intercepted, and the denied one is never minted for
    // more than its own tunnels: the leaf cache holds at most both.
    assert!(last.leaves <= 2, "{summary}");
}
