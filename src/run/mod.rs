//! `airlock run`: start (or use) an airlock and run a command, isolated so
//! that its only way out is through it.
//!
//! ```text
//! airlock run [--config FILE] [--no-isolate] [--env-clear] [--env NAME]... -- CMD [ARGS...]
//! airlock run --proxy ADDR --ca FILE [--no-isolate] [...] -- CMD [ARGS...]
//! ```
//!
//! Without `--proxy`, an airlock starts in this process from `--config`
//! (or the embedded default, which creates `certs/ca.pem` in the working
//! directory if it is missing, as `serve` does), listening on
//! `127.0.0.1:<free port>` whatever `[proxy] listen` says (and on another
//! free port for `[proxy] admin` if the config has one, printed on stderr,
//! so it runs beside a `serve` of the same config); the rest of the
//! config applies as written. The rules are read once: `SIGHUP` belongs to
//! the command (use `serve` plus `--proxy` for live reload). With `--proxy
//! ADDR --ca FILE` the command uses an airlock that is already running.
//!
//! # The command's environment
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and their lowercase twins are
//! `http://127.0.0.1:PORT` (curl reads only lowercase `http_proxy`; most
//! tools read either). `NO_PROXY` and `no_proxy` are set empty so no host
//! skips the proxy. `NODE_USE_ENV_PROXY=1` makes Node 24+'s `fetch`/`http`
//! honour the proxy variables.
//!
//! Trust: airlock writes, in a private 0700 run directory removed on exit,
//! `airlock-ca.pem` (its CA) and `ca-bundle.pem` (its CA followed by the
//! bundle the user's `SSL_CERT_FILE` names, else the first system bundle of
//! `/etc/ssl/certs/ca-certificates.crt`, `/etc/pki/tls/certs/ca-bundle.crt`,
//! `/etc/ssl/ca-bundle.pem`, `/etc/pki/tls/cacert.pem`,
//! `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem`, `/etc/ssl/cert.pem`).
//! Variables that *replace* a tool's roots point at the bundle, so setting
//! them never takes away the public roots the tool trusted before:
//!
//! | variable | read by |
//! |---|---|
//! | `SSL_CERT_FILE` | OpenSSL's default verify file (Python `ssl`/urllib/httpx/aiohttp, Ruby, PHP, wget, uv), Go's `crypto/x509`, rustls-native-certs |
//! | `REQUESTS_CA_BUNDLE` | Python requests (it uses certifi, not OpenSSL's default), and pip through it |
//! | `CURL_CA_BUNDLE` | the curl tool (first choice), Python requests |
//! | `GIT_SSL_CAINFO` | git over https |
//! | `PIP_CERT` | pip (`--cert`) |
//! | `CARGO_HTTP_CAINFO` | cargo (`http.cainfo`) |
//! | `AWS_CA_BUNDLE` | AWS CLI and SDKs |
//! | `DENO_CERT` | Deno |
//! | `HTTPLIB2_CA_CERTS` | httplib2 (Google API clients) |
//! | `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` | gRPC core (grpcio, C++, Ruby) |
//! | `NPM_CONFIG_CAFILE` | npm (`cafile` replaces its CA list) |
//! | `BUNDLE_SSL_CA_CERT` | Ruby Bundler |
//! | `YARN_HTTPS_CA_FILE_PATH` | Yarn 2+ |
//! | `NIX_SSL_CERT_FILE` | OpenSSL and curl built by Nix (checked before `SSL_CERT_FILE`) |
//! | `CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE` | gcloud |
//!
//! `NODE_EXTRA_CA_CERTS` *adds* to Node's bundled roots, so it names
//! `airlock-ca.pem` alone. `SSL_CERT_DIR` is left as it is: OpenSSL and Go
//! search it in addition to `SSL_CERT_FILE`, which already carries the CA,
//! and a hashed directory would need OpenSSL's subject hashes. Java reads
//! none of these (it needs a keystore and `-Djavax.net.ssl.trustStore`);
//! isolated, it fails closed rather than bypassing.
//!
//! # Output, signals, exit status
//! stdout belongs to the command. airlock's logs go to stderr at
//! `airlock=warn` unless `RUST_LOG` says otherwise; with the embedded default
//! its audit events go to stderr too (a `--config` keeps its `[audit]`
//! output). `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`, `SIGUSR1` and `SIGUSR2`
//! sent to airlock are forwarded to the command; Ctrl-C and Ctrl-\\ typed in
//! the terminal already reach the command directly, so `SIGINT`/`SIGQUIT`
//! are not forwarded again while airlock is in the terminal's foreground
//! process group.
//! airlock exits with the command's status, `128 + N` if it died of signal
//! `N`, `125` if airlock itself failed before the command started, `126` if
//! the command could not be executed and `127` if it was not found (the
//! conventions of `env`, `timeout` and `docker run`).
//!
//! # What the command gets of airlock's
//! Its environment is airlock's without `VAULT_*`, `BAO_*` and `AIRLOCK_*`
//! (airlock's own settings and credentials, whatever their case); with
//! `--env-clear` only `PATH`, `HOME`, `TERM`, `LANG` and the `--env` names
//! are kept. `--env` of a scrubbed name is refused (125). airlock's variables
//! above are set over all of it. airlock itself is non-dumpable before it
//! reads its config (see [`make_undumpable`]).
//!
//! # Isolation (the default)
//! The command runs in its own user, network, mount and PID namespaces
//! without capabilities: only airlock's port is reachable, the files
//! airlock reads secrets from are unreadable, and airlock's process is not
//! visible; see `src/run/isolate.rs` for how, and what it requires. Where
//! that is not available airlock says so, names `--no-isolate`, and exits
//! 125: it never runs the command unisolated on its own. With
//! `--no-isolate` the command shares airlock's network, files and processes
//! (as root: all of root's powers); airlock then warns once on stderr which
//! of its secret files the command can read. `--isolate` is accepted (and
//! hidden) for compatibility.

mod env;
#[cfg(target_os = "linux")]
mod isolate;

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{AuditOutput, Config, EMBEDDED_NAME};
use crate::server::Server;
use crate::tls::ca::{CaFiles, CertificateAuthority};

pub use env::{
    BASE_VARS, BUNDLE_VARS, CA_ONLY_VARS, NO_PROXY_VARS, OTHER_VARS, PROXY_VARS, ProxyAddr,
    SCRUBBED_PREFIXES, SYSTEM_BUNDLES,
};

/// Exit status when airlock fails before the command starts.
pub const EXIT_SETUP: u8 = 125;
/// Exit status when the command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status when the command is not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// `airlock run [--config FILE | --proxy ADDR --ca FILE] [--no-isolate] [--env-clear] [--env NAME]... -- CMD [ARGS...]`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config for the airlock this command starts (default: the embedded default).
    /// `[proxy] listen` is replaced by 127.0.0.1 on a free port, and so is
    /// `[proxy] admin` if the config has one (its address is printed on stderr).
    #[arg(long, conflicts_with = "proxy")]
    pub config: Option<PathBuf>,
    /// Run CMD without isolation: it then shares airlock's network (it can
    /// ignore the proxy variables and connect directly) and files. airlock
    /// warns which of its secret files CMD can read.
    #[arg(long)]
    pub no_isolate: bool,
    /// Accepted for compatibility: isolation is the default.
    #[arg(long, hide = true, conflicts_with = "no_isolate")]
    pub isolate: bool,
    /// Start CMD from an empty environment plus PATH, HOME, TERM, LANG and
    /// the variables airlock sets.
    #[arg(long)]
    pub env_clear: bool,
    /// Pass this variable from airlock's environment to CMD, also under
    /// --env-clear (repeatable). airlock's own settings and credentials
    /// (VAULT_*, BAO_*, AIRLOCK_*) never reach CMD: naming one is refused.
    #[arg(long = "env", value_name = "NAME")]
    pub env: Vec<String>,
    /// Use an airlock that is already running at this address (HOST:PORT or
    /// `http://[USER:TOKEN@]HOST:PORT`) instead of starting one.
    #[arg(long, requires = "ca")]
    pub proxy: Option<String>,
    /// That airlock's CA certificate (with --proxy).
    #[arg(long, requires = "proxy")]
    pub ca: Option<PathBuf>,
    /// Internal: run as the isolation helper, handing the inner listener to this socket.
    #[arg(long, hide = true, requires = "netns_port")]
    pub netns_helper: Option<PathBuf>,
    /// Internal: the port the isolation helper listens on inside the namespace.
    #[arg(long, hide = true, requires = "netns_helper")]
    pub netns_port: Option<u16>,
    /// Internal: a file the isolation helper hides from the command (repeatable).
    #[arg(long, hide = true, requires = "netns_helper")]
    pub hide: Vec<PathBuf>,
    /// Internal: the isolation helper's second stage, PID 1 of the command's namespace.
    #[arg(long, hide = true)]
    pub isolate_init: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Set by `airlock learn`: where decisions are recorded, and whether
    /// refused requests are forwarded.
    #[arg(skip)]
    pub learn: Option<Learn>,
}

/// `airlock learn`'s settings for the airlock `run` starts.
#[derive(Debug, Clone)]
pub struct Learn {
    /// The audit log, whatever `[audit]` says.
    pub audit: PathBuf,
    /// Forward what the rules refuse (marked in the audit log).
    pub permissive: bool,
}

/// Runs the command; returns its exit status.
///
/// # Errors
/// None in practice: airlock's own failures are reported on stderr and
/// become exit status 125, so they cannot be mistaken for the command's.
pub fn main(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if let (Some(socket), Some(port)) = (&args.netns_helper, args.netns_port) {
        return Ok(netns_helper(socket, port, &args.hide, &args.command));
    }
    if args.isolate_init {
        return Ok(isolate_init(&args.command));
    }
    if let Err(e) = make_undumpable() {
        eprintln!("airlock run: {e:#}");
        return Ok(ExitCode::from(EXIT_SETUP));
    }
    let dispatch = log_dispatch();
    let result = tracing::dispatcher::with_default(&dispatch, || run(args, &dispatch));
    Ok(result.unwrap_or_else(|e| {
        eprintln!("airlock run: {e:#}");
        ExitCode::from(EXIT_SETUP)
    }))
}

/// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): a process of the
/// same uid without `CAP_SYS_PTRACE` can then neither ptrace it nor read its
/// `/proc/<pid>/mem`, `environ` or `maps`, and it leaves no core dump.
/// `serve` and `run` call it first, before any config or secret is read.
///
/// # Errors
/// The kernel refused (then airlock does not start).
pub fn make_undumpable() -> anyhow::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make airlock non-dumpable (PR_SET_DUMPABLE)")?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn netns_helper(socket: &Path, port: u16, hide: &[PathBuf], command: &[String]) -> ExitCode {
    isolate::helper(socket, port, hide, command)
}

#[cfg(not(target_os = "linux"))]
fn netns_helper(_socket: &Path, _port: u16, _hide: &[PathBuf], _command: &[String]) -> ExitCode {
    eprintln!("airlock run: isolation needs Linux namespaces; use --no-isolate");
    ExitCode::from(EXIT_SETUP)
}

#[cfg(target_os = "linux")]
fn isolate_init(command: &[String]) -> ExitCode {
    isolate::init(command)
}

#[cfg(not(target_os = "linux"))]
fn isolate_init(_command: &[String]) -> ExitCode {
    ExitCode::from(EXIT_SETUP)
}

/// airlock's own log while the command runs: stderr, `airlock=warn` unless
/// `RUST_LOG` is set. Installed as the default of this thread and of every
/// runtime thread, over the global one the CLI set up.
fn log_dispatch() -> tracing::Dispatch {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("airlock=warn"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish();
    tracing::Dispatch::new(subscriber)
}

thread_local! {
    static LOG_GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> = const { RefCell::new(None) };
}

/// Where the command's proxy traffic goes.
enum Proxy {
    /// Start one from this config.
    InProcess(Box<Config>),
    /// Use a running one.
    External(ProxyAddr),
}

fn run(args: &RunArgs, dispatch: &tracing::Dispatch) -> anyhow::Result<ExitCode> {
    #[cfg(not(target_os = "linux"))]
    if !args.no_isolate {
        anyhow::bail!(
            "isolating the command needs Linux namespaces; refusing to run it unisolated \
             (pass --no-isolate to run it without isolation)"
        );
    }
    env::check_passed(&args.env)?;
    let (proxy, ca_path, secret_files) = match (&args.proxy, &args.ca) {
        (Some(addr), Some(ca)) => (
            Proxy::External(ProxyAddr::parse(addr)?),
            ca.clone(),
            Vec::new(),
        ),
        _ => {
            let mut config = load_config(args.config.as_deref())?;
            if let Some(learn) = &args.learn {
                config.audit = AuditOutput::File(learn.audit.clone());
                if learn.permissive {
                    config.learn_permissive = true;
                    eprintln!(
                        "airlock learn: WARNING: --permissive forwards every request the rules refuse \
                         (marked \"learn\":\"permissive\" in {}); use it only in a throwaway environment",
                        learn.audit.display()
                    );
                }
            }
            let ca = config.tls.ca_cert.clone();
            let mut files = config.secret_files.clone();
            // Not a secret, but the command must not rewrite the record of
            // what it did: hidden the same way.
            if let AuditOutput::File(path) = &config.audit {
                files.push(crate::config::SecretFile {
                    setting: "audit.output",
                    path: path.clone(),
                });
            }
            (Proxy::InProcess(Box::new(config)), ca, files)
        }
    };
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("cannot read airlock's CA {}", ca_path.display()))?;
    let dir = RunDir::create()?;
    let user_bundle = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let trust = env::write_trust_files(dir.path(), &ca_path, &ca_pem, user_bundle.as_deref())?;
    tracing::debug!(bundle = %trust.bundle.display(), base = ?trust.base, "trust files written");
    if args.no_isolate {
        warn_readable(secret_files.iter().filter(|f| f.setting != "audit.output"));
    }
    let launch = Launch {
        args,
        trust: &trust,
        dir: dir.path(),
        secret_files: &secret_files,
    };

    let thread_dispatch = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&thread_dispatch);
            LOG_GUARD.with(|g| *g.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| {
            LOG_GUARD.with(|g| drop(g.borrow_mut().take()));
        })
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(supervise(&launch, proxy));
    // Every task, and with them the proxy's audit sink, is dropped here.
    runtime.shutdown_timeout(Duration::from_millis(500));
    wait_for_audit_writer(Duration::from_secs(2));
    drop(dir);
    result
}

/// The audit writer thread writes and flushes what is queued, then exits
/// once the last sender is gone. Without this wait, the events of the
/// command's last requests could be lost when airlock exits right after it.
/// (`AuditSink` offers no join handle, so the thread is watched by name.)
fn wait_for_audit_writer(limit: Duration) {
    let running = || {
        std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|name| name.trim_end() == "airlock-audit")
            })
        })
    };
    let deadline = std::time::Instant::now() + limit;
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if running() {
        tracing::warn!("audit writer still busy at exit: the last events may be lost");
    }
}

/// Loads the config for an in-process airlock: listen on loopback, a free
/// port; with the embedded default, create the CA if missing and audit to stderr.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::load(p),
        None => Config::embedded(&crate::config::Layout::detect()),
    }
    .map_err(|errs| anyhow::anyhow!("{errs}"))?;
    config.proxy.listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    // Its own admin port too, so it runs beside a `serve` of the same config.
    if config.proxy.admin.is_some() {
        config.proxy.admin = Some(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )));
    }
    let files = CaFiles {
        cert: config.tls.ca_cert.clone(),
        key: config.tls.ca_key.clone(),
    };
    if config.source == EMBEDDED_NAME {
        if config.audit == AuditOutput::Stdout {
            config.audit = AuditOutput::Stderr;
        }
        if !files.cert.exists() && !files.key.exists() {
            CertificateAuthority::init(&files, false)?;
            eprintln!(
                "airlock run: created a new CA in {} (embedded default)",
                files.cert.display()
            );
        }
    } else if !files.cert.exists() {
        anyhow::bail!(
            "CA {} not found: run `airlock ca init --dir {}`",
            files.cert.display(),
            files
                .cert
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    Ok(config)
}

/// What the command is started with.
struct Launch<'a> {
    args: &'a RunArgs,
    trust: &'a env::TrustFiles,
    /// The private run directory.
    dir: &'a Path,
    /// The files hidden under isolation: those airlock reads secrets from,
    /// and the audit log file.
    secret_files: &'a [crate::config::SecretFile],
}

impl Launch<'_> {
    /// The command's whole environment, for this proxy URL.
    fn env(&self, proxy_url: &str) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        env::command_env(
            std::env::vars_os(),
            self.args.env_clear,
            &self.args.env,
            &env::child_env(proxy_url, self.trust),
        )
    }
}

/// Without isolation: says once, on stderr, which of airlock's secret files
/// the command (same uid, same capabilities) could read.
fn warn_readable<'a>(files: impl Iterator<Item = &'a crate::config::SecretFile>) {
    let readable: Vec<String> = files
        .filter(|f| rustix::fs::access(&f.path, rustix::fs::Access::READ_OK).is_ok())
        .map(|f| format!("{} ({})", f.path.display(), f.setting))
        .collect();
    if readable.is_empty() {
        return;
    }
    // The command inherits airlock's capabilities: with CAP_SYS_PTRACE
    // (root, usually) non-dumpable does not keep it out.
    let ptrace = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_PTRACE)
    });
    let root = if ptrace {
        " With airlock's CAP_SYS_PTRACE it can also read airlock's memory."
    } else {
        ""
    };
    eprintln!(
        "airlock run: --no-isolate: the command runs as the same user and can read {}.{root} \
         Drop --no-isolate (isolation hides them), or run airlock as another user.",
        readable.join(", ")
    );
}

/// Starts the proxy (if ours), then the command, forwards signals until it
/// exits, and stops the proxy.
async fn supervise(launch: &Launch<'_>, proxy: Proxy) -> anyhow::Result<ExitCode> {
    // Handlers go in first: a signal while the proxy starts is forwarded to
    // the command once it exists, and airlock still cleans up.
    let mut signals = Signals::new()?;
    let (server, addr) = match proxy {
        Proxy::InProcess(config) => {
            let server = Server::start(*config).await?;
            let port = server.local_addr().port();
            let addr = ProxyAddr {
                userinfo: None,
                host: "127.0.0.1".to_owned(),
                port,
            };
            tracing::info!(proxy = %addr.authority(), "airlock ready");
            if let Some(admin) = server.admin_addr() {
                eprintln!("airlock run: admin API on http://{admin}");
            }
            (Some(server), addr)
        }
        Proxy::External(addr) => (None, addr),
    };
    let mut bridge = None;
    let spawned = if launch.args.no_isolate {
        let url = addr.url_via(&addr.host);
        spawn_direct(&launch.args.command, &launch.env(&url))
    } else {
        spawn_isolated(launch, &addr, &mut bridge)
    };
    let result = match spawned {
        Ok(mut child) => {
            let status = signals.forward_until_exit(&mut child, false).await;
            status.map(exit_code).context("cannot wait for the command")
        }
        Err(code) => Ok(code),
    };
    if let Some(b) = bridge {
        b.abort();
    }
    if let Some(server) = server
        && tokio::time::timeout(Duration::from_secs(2), server.shutdown())
            .await
            .is_err()
    {
        tracing::debug!("proxy drain cut short: the command has exited");
    }
    result
}

fn spawn_direct(
    command: &[String],
    vars: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<tokio::process::Child, ExitCode> {
    let Some((program, rest)) = command.split_first() else {
        eprintln!("airlock run: no command given");
        return Err(ExitCode::from(EXIT_SETUP));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest).env_clear().envs(vars.iter().cloned());
    cmd.spawn().map_err(|e| report_spawn_error(program, &e))
}

#[cfg(target_os = "linux")]
fn spawn_isolated(
    launch: &Launch<'_>,
    addr: &ProxyAddr,
    bridge_task: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<tokio::process::Child, ExitCode> {
    let fail = |e: anyhow::Error| {
        eprintln!("airlock run: {e:#}");
        ExitCode::from(EXIT_SETUP)
    };
    let socket = launch.dir.join("netns.sock");
    let bridge = isolate::Bridge::bind(&socket).map_err(fail)?;
    // This very binary, even if the file was replaced since it started.
    let exe = Path::new("/proc/self/exe");
    // Inside, the proxy is on the namespace's own loopback, same port.
    let url = addr.url_via("127.0.0.1");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("run")
        .arg("--netns-helper")
        .arg(&socket)
        .arg("--netns-port")
        .arg(addr.port.to_string());
    for f in launch.secret_files {
        let mut hide = std::ffi::OsString::from("--hide=");
        hide.push(std::path::absolute(&f.path).unwrap_or_else(|_| f.path.clone()));
        cmd.arg(hide);
    }
    cmd.arg("--")
        .args(&launch.args.command)
        .env_clear()
        .envs(launch.env(&url));
    let child = cmd
        .spawn()
        .context("cannot start the isolation helper")
        .map_err(fail)?;
    *bridge_task = Some(bridge.serve(addr.authority()));
    Ok(child)
}

#[cfg(not(target_os = "linux"))]
fn spawn_isolated(
    _launch: &Launch<'_>,
    _addr: &ProxyAddr,
    _bridge_task: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<tokio::process::Child, ExitCode> {
    eprintln!("airlock run: isolation needs Linux namespaces; use --no-isolate");
    Err(ExitCode::from(EXIT_SETUP))
}

/// Starts `cmd` and waits for it on a runtime of this thread, forwarding
/// airlock's signals and running `beside` meanwhile; returns its status as
/// ours (the isolation stages).
#[cfg(target_os = "linux")]
fn supervise_blocking(
    mut cmd: tokio::process::Command,
    beside: Option<impl std::future::Future<Output = ()> + Send + 'static>,
    on_spawn_error: impl FnOnce(&std::io::Error) -> ExitCode,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airlock run: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    runtime.block_on(async move {
        let _beside = beside.map(|b| AbortOnDrop(tokio::spawn(b)));
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("airlock run: {e:#}");
                return ExitCode::from(EXIT_SETUP);
            }
        };
        // Before the init can mount its `/proc` over ours.
        let _proc = proc_dir();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return on_spawn_error(&e),
        };
        let reaper = (std::process::id() == 1)
            .then(|| {
                child
                    .id()
                    .map(|pid| tokio::spawn(isolate::reap_orphans(pid)))
            })
            .flatten();
        // The helper's child is the init, PID 1 of its namespace: the
        // kernel drops a signal PID 1 has no handler for, so one that
        // arrives while the init is still starting waits for its handler.
        let child_is_init = std::process::id() != 1;
        let status = signals.forward_until_exit(&mut child, child_is_init).await;
        if let Some(r) = reaper {
            r.abort();
        }
        match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                eprintln!("airlock run: cannot wait for the command: {e}");
                ExitCode::from(EXIT_SETUP)
            }
        }
    })
}

/// Aborts its task when dropped.
#[cfg(target_os = "linux")]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(target_os = "linux")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Says why `program` could not be started; returns 127 (not found) or 126.
fn report_spawn_error(program: &str, e: &std::io::Error) -> ExitCode {
    eprintln!("airlock run: cannot run `{program}`: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::from(EXIT_CANNOT_EXECUTE)
    }
}

/// The command's exit status as ours: its code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1));
    }
    if let Some(sig) = status.signal() {
        return ExitCode::from(u8::try_from((128 + sig) & 0xff).unwrap_or(1));
    }
    ExitCode::FAILURE
}

/// The signals forwarded to the command.
struct Signals {
    streams: Vec<(tokio::signal::unix::Signal, rustix::process::Signal)>,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use rustix::process::Signal as S;
        use tokio::signal::unix::{SignalKind as K, signal};
        let mut streams = Vec::new();
        for (kind, sig) in [
            (K::interrupt(), S::INT),
            (K::terminate(), S::TERM),
            (K::hangup(), S::HUP),
            (K::quit(), S::QUIT),
            (K::user_defined1(), S::USR1),
            (K::user_defined2(), S::USR2),
        ] {
            streams.push((
                signal(kind).with_context(|| format!("cannot handle {sig:?}"))?,
                sig,
            ));
        }
        Ok(Self { streams })
    }

    /// Waits for `child`, forwarding every signal that arrives meanwhile;
    /// with `wait_for_handler`, each only once the child catches it (see
    /// [`until_caught`]).
    async fn forward_until_exit(
        &mut self,
        child: &mut tokio::process::Child,
        wait_for_handler: bool,
    ) -> std::io::Result<ExitStatus> {
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        loop {
            let next =
                futures_util::future::select_all(self.streams.iter_mut().map(|(stream, sig)| {
                    Box::pin(async move { stream.recv().await.map(|()| *sig) })
                }));
            tokio::select! {
                status = child.wait() => return status,
                (got, _, _) = next => {
                    if let (Some(sig), Some(pid)) = (got, pid) {
                        if terminal_sent(sig) {
                            tracing::debug!(signal = ?sig, "from the terminal: the command has it already");
                            continue;
                        }
                        tracing::debug!(signal = ?sig, "forwarding to the command");
                        if wait_for_handler {
                            until_caught(pid, sig).await;
                        }
                        if let Err(e) = rustix::process::kill_process(pid, sig) {
                            tracing::debug!(error = %e, "forwarding failed (the command is exiting)");
                        }
                    }
                }
            }
        }
    }
}

/// Waits until `pid` catches `sig` (`SigCgt` in its `status` under
/// [`proc_dir`]), has
/// exited, or [`HANDLER_WAIT`] has passed. The isolation init is PID 1 of
/// its namespace, and the kernel discards a signal PID 1 has no handler for:
/// a `SIGTERM` forwarded while the init was still starting was lost, and
/// `airlock run` waited for the command to end by itself. Reads `/proc`
/// synchronously: the helper that calls this may start no thread.
async fn until_caught(pid: rustix::process::Pid, sig: rustix::process::Signal) {
    let Some(bit) = u32::try_from(sig.as_raw() - 1)
        .ok()
        .and_then(|n| 1u64.checked_shl(n))
    else {
        return;
    };
    let path = format!("{}/status", pid.as_raw_nonzero());
    let deadline = tokio::time::Instant::now() + HANDLER_WAIT;
    while tokio::time::Instant::now() < deadline {
        let Some(status) = read_proc(&path) else {
            return;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let caught = field("SigCgt:").and_then(|v| u64::from_str_radix(v, 16).ok());
        let exited = field("State:").is_some_and(|v| v.starts_with('Z') || v.starts_with('X'));
        if exited || caught.is_some_and(|c| c & bit != 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// How long a forwarded signal waits for the isolation init's handler: its
/// start (mount `/proc`, drop capabilities, a runtime) takes milliseconds.
const HANDLER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Ctrl-C and Ctrl-\\ go to the terminal's whole foreground process group,
/// the command included: forwarding them again would deliver them twice.
/// When airlock is in that group, `SIGINT`/`SIGQUIT` are taken to come
/// from the terminal; a `kill` from elsewhere while airlock runs in a
/// terminal's foreground is then not forwarded (the command can be signalled
/// directly).
fn terminal_sent(sig: rustix::process::Signal) -> bool {
    use rustix::process::Signal as S;
    if sig != S::INT && sig != S::QUIT {
        return false;
    }
    [
        rustix::termios::tcgetpgrp(std::io::stdin()),
        rustix::termios::tcgetpgrp(std::io::stdout()),
        rustix::termios::tcgetpgrp(std::io::stderr()),
    ]
    .into_iter()
    .any(|fg| match fg {
        Ok(fg) => own_process_group() == Some(fg.as_raw_pid()),
        // A terminal whose foreground group this PID namespace cannot see
        // (the isolation init): ours too is outside, so it is ours.
        Err(rustix::io::Errno::OPNOTSUPP) => own_process_group() == Some(0),
        Err(_) => false,
    })
}

/// This process's group as this PID namespace sees it (0 when it lies
/// outside), from `/proc/self/stat`: `pid (comm) state ppid pgrp ...`.
/// (`getpgrp` cannot say 0.)
fn own_process_group() -> Option<i32> {
    let stat = read_proc("self/stat")?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(2)?.parse().ok()
}

/// `/proc` as this process first opened it. The isolation init mounts a
/// `/proc` of its own PID namespace over the one it shares with the
/// helper; through that one the helper finds neither the init (by the PID
/// it knows) nor itself. A forwarded signal waited for the init's handler,
/// read no status there, took the init for exited and sent the signal
/// before the handler was set: the kernel dropped it, and `airlock run`
/// did not exit on `SIGTERM`. The helper opens this before it starts the
/// init; the init, after it has mounted its own.
fn proc_dir() -> Option<&'static OwnedFd> {
    static PROC: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    PROC.get_or_init(|| {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        rustix::fs::open("/proc", flags, Mode::empty()).ok()
    })
    .as_ref()
}

/// A file under [`proc_dir`], read whole (they are a few hundred bytes).
fn read_proc(path: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(proc_dir()?, path, flags, Mode::empty()).ok()?;
    std::io::read_to_string(std::fs::File::from(fd)).ok()
}

/// A private (0700) directory for the trust files and the isolation socket,
/// removed when dropped.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut last = None;
        for attempt in 0..16u32 {
            let path = base.join(format!(
                "airlock-run-{}-{:x}",
                std::process::id(),
                nanos.wrapping_add(attempt.wrapping_mul(0x9e37_79b9))
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        Err(anyhow::anyhow!(
            "cannot create a run directory in {}: {last:?}",
            base.display()
        ))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _removed = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod signal_tests {
    use std::os::unix::process::ExitStatusExt;

    use super::until_caught;

    fn pid(child: &tokio::process::Child) -> rustix::process::Pid {
        child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
            .expect("a running child")
    }

    /// A signal forwarded to a child that has not set its handler yet waits
    /// for it: the shell sets its `TERM` trap only after a pause, and the
    /// signal still reaches the trap (exit 7), not the default action.
    #[tokio::test]
    async fn a_forwarded_signal_waits_for_the_childs_handler() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "sleep 0.3; trap 'exit 7' TERM; while :; do sleep 0.05; done",
            ])
            .spawn()
            .expect("sh runs");
        let pid = pid(&child);
        until_caught(pid, rustix::process::Signal::TERM).await;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill");
        let status = child.wait().await.expect("wait");
        assert_eq!(
            status.code(),
            Some(7),
            "{status:?} (signal {:?})",
            status.signal()
        );
    }

    /// A child that has exited is not waited for.
    #[tokio::test]
    async fn an_exited_child_is_not_waited_for() {
        let mut child = tokio::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = pid(&child);
        // Exited but not reaped: a zombie.
        while std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero())).is_ok_and(
            |s| {
                !s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            },
        ) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        until_caught(pid, rustix::process::Signal::TERM).await;
        assert!(child.wait().await.expect("wait").success());
    }
}
