//! The command line: `serve`, `ca init`, `check`, `explain`, `scan`, `run`,
//! `approvals`, and the policy tools `learn`, `propose`, `replay`.
//! `main` stays thin; each command returns an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod check;
mod explain;
mod health;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::ConfigSource;
use crate::config::{Config, EMBEDDED_NAME};
use crate::policy::{Host, NormalPath, Refusal, RequestFacts, Scheme, decide};
use crate::server::Server;
use crate::tls::ca::{CaFiles, CertificateAuthority, trust_instructions};

/// airlock: the one door between an agent sandbox and the network.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (without --config: the embedded default; in a checkout it uses rules/ and certs/ of the working directory, installed elsewhere /etc/airlock/rules/allow/ and a CA in $STATE_DIRECTORY, $XDG_STATE_HOME/airlock or /var/lib/airlock).
    Serve {
        /// Config file (airlock.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Learn mode: say where decisions are recorded for `airlock propose`.
        #[arg(long)]
        learn: bool,
        /// With --learn: forward requests the rules refuse (marked
        /// `"learn":"permissive"` in the audit log, warned on stderr), for a
        /// throwaway environment only; kept across reloads.
        #[arg(long, requires = "learn")]
        permissive: bool,
    },
    /// Manage airlock's CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Validate config and rules and run their `[[test]]`s, without starting; non-zero exit on any problem.
    Check {
        /// Config file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Say which rule decides a URL, and why.
    Explain {
        /// Config file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The URL, e.g. https://api.github.com/repos/x/y.
        url: String,
        /// The method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The sandbox the request comes from (when the config has `[[sandbox]]`s).
        #[arg(long)]
        sandbox: Option<String>,
        /// A request header, `Name: value` (repeatable): where a credential
        /// placeholder may travel is judged on these.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Run the secret scanner over files or stdin; exit 1 when anything is found.
    Scan(ScanArgs),
    /// Run a command isolated (Linux namespaces, no capabilities) so that its only way out is through airlock.
    Run(crate::run::RunArgs),
    /// List, approve or deny requests held for approval (through the admin API).
    Approvals(crate::approval::cli::ApprovalsArgs),
    /// GET an admin URL and exit 0 on 200, else 1 (a container HEALTHCHECK or exec probe: the image has no curl).
    Healthcheck {
        /// The admin API's /healthz or /readyz.
        #[arg(default_value = health::DEFAULT_URL)]
        url: String,
    },
    /// Run a command as `run` does, recording every request's decision to an audit log for `propose`.
    Learn(LearnArgs),
    /// Propose rules for what an audit log shows refused, as a diff against the rule files.
    Propose {
        /// The audit log (JSON lines), e.g. from `airlock learn`.
        log: PathBuf,
        /// The config whose rules the proposal extends (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-judge every request an audit log recorded under candidate rules and print what would change.
    ///
    /// Exit status: 0 when nothing would newly be allowed, 3 when something
    /// would (newly allowed, or no longer held for approval), 1 when the log
    /// or the config cannot be read.
    Replay {
        /// The audit log (JSON lines).
        log: PathBuf,
        /// The candidate config (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct LearnArgs {
    /// Config for the airlock the command runs behind (default: the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The audit log written (appended to), whatever `[audit]` says.
    #[arg(long, default_value = "airlock-learn.log")]
    audit: PathBuf,
    /// Forward requests the rules refuse (marked `"learn":"permissive"` in
    /// the audit log), for a throwaway environment only.
    #[arg(long)]
    permissive: bool,
    /// Run the command without isolation (as `run --no-isolate`).
    #[arg(long)]
    no_isolate: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    /// Files to scan; none, or `-`, reads standard input.
    files: Vec<PathBuf>,
    /// One JSON object per finding instead of text.
    #[arg(long)]
    json: bool,
    /// The pattern file [default: the built-in patterns].
    #[arg(long)]
    patterns: Option<PathBuf>,
    /// Report shaped findings too (broken checksum, glued to other
    /// characters, documented examples, placeholders), not only verified
    /// ones.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create an ECDSA P-256 CA (ca.pem, ca-key.pem with mode 0600).
    Init {
        /// Where to write it.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run`'s stdout and stderr belong to the command: only warnings by default.
    init_tracing(
        if matches!(cli.command, Command::Run(_) | Command::Learn(_)) {
            "airlock=warn"
        } else {
            "airlock=info"
        },
    );
    let result = match cli.command {
        Command::Serve {
            config,
            learn,
            permissive,
        } => serve(config.as_deref(), learn.then_some(permissive)),
        Command::Ca {
            command: CaCommand::Init { dir, force },
        } => ca_init(&dir, force),
        Command::Check { config } => check(config.as_deref()),
        Command::Scan(args) => scan(&args),
        Command::Run(args) => crate::run::main(&args),
        Command::Approvals(args) => approvals(&args),
        Command::Healthcheck { url } => Ok(health::healthcheck(&url)),
        Command::Learn(args) => learn(args),
        Command::Propose { log, config } => propose(&log, config.as_deref()),
        Command::Replay { log, config } => replay(&log, config.as_deref()),
        Command::Explain {
            config,
            url,
            method,
            sandbox,
            headers,
        } => explain(
            config.as_deref(),
            &Explain {
                url: &url,
                method: &method,
                sandbox: sandbox.as_deref(),
                headers: &headers,
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ignored = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Loads `--config`, or the embedded default relative to the working directory.
fn load(config: Option<&Path>) -> anyhow::Result<Config> {
    let loaded = match config {
        Some(path) => Config::load(path),
        None => Config::embedded(&crate::config::Layout::detect()),
    };
    loaded.map_err(|errs| anyhow::anyhow!("{errs}"))
}

/// `learn`: `None` without `--learn`, else whether `--permissive` was given.
fn serve(config_path: Option<&Path>, learn: Option<bool>) -> anyhow::Result<ExitCode> {
    // Before any secret is read: no same-uid ptrace, no /proc/<pid>/mem.
    crate::run::make_undumpable()?;
    let mut config = load(config_path)?;
    if let Some(permissive) = learn {
        let output = match &config.audit {
            crate::config::AuditOutput::File(p) => p.display().to_string(),
            other => format!("{other:?} (set [audit] output to a file to keep it)"),
        };
        eprintln!(
            "airlock serve --learn: every decision is recorded to {output}; then: airlock propose AUDIT.log"
        );
        if permissive {
            config.learn_permissive = true;
            eprintln!(
                "airlock serve --learn: WARNING: --permissive forwards every request the rules refuse \
                 (marked \"learn\":\"permissive\" in the audit log); use it only in a throwaway environment"
            );
        }
    }
    tracing::info!(config = %config.source, "config loaded");
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let files = CaFiles {
        cert: config.tls.ca_cert.clone(),
        key: config.tls.ca_key.clone(),
    };
    if !files.cert.exists() && !files.key.exists() {
        if config.source == EMBEDDED_NAME {
            CertificateAuthority::init(&files, false)?;
            tracing::info!(cert = %files.cert.display(), "created a new CA (embedded default); sandboxes must trust it");
        } else {
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
    } else {
        tracing::info!(cert = %files.cert.display(), "CA loaded from file");
    }
    tracing::info!(
        rules = config.policy.len(),
        files = ?config.rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "allowlist loaded"
    );
    tracing::info!(
        patterns = %config.scan.patterns_summary(),
        outgoing = %format!("{:?} ({} and up)", config.scan.outgoing, config.scan.outgoing_confidence),
        incoming = %format!("{:?} ({} and up)", config.scan.incoming, config.scan.incoming_confidence),
        "secret scanner"
    );
    tracing::info!(backend = config.secrets.backend_name(), "secret backend");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        server.watch_config(match config_path {
            Some(p) => ConfigSource::File(p.to_path_buf()),
            None => ConfigSource::Embedded(crate::config::Layout::detect()),
        });
        if let Some(admin) = server.admin_addr() {
            tracing::info!(%admin, "admin API: /healthz /readyz /metrics");
        }
        tracing::info!(addr = %server.local_addr(), "proxy ready: HTTPS_PROXY=http://{}", server.local_addr());
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        server.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    // The runtime's tasks hold the last audit senders: once they are gone
    // the writers write what is queued and stop.
    drop(runtime);
    if !crate::audit::finish_writers(std::time::Duration::from_secs(5)) {
        tracing::warn!("audit writer did not finish within 5 s: its last lines may be missing");
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ignored = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ignored = tokio::signal::ctrl_c().await;
    }
}

fn ca_init(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    crate::install_crypto_provider();
    let files = CaFiles::in_dir(dir);
    CertificateAuthority::init(&files, force)?;
    let mut out = format!(
        "Created airlock CA:\n  certificate: {}\n  private key: {} (mode 0600; keep it secret)\n\n",
        files.cert.display(),
        files.key.display()
    );
    out.push_str(&trust_instructions(&files.cert));
    print_out(&out);
    Ok(ExitCode::SUCCESS)
}

fn check(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("airlock check: config refused");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = check::files(&config);
    if let Err(e) = crate::tls::upstream::root_store(&config.tls) {
        problems.push(format!("upstream roots: {e}"));
    }
    for w in &config.warnings {
        eprintln!("{w}");
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("airlock check: config refused");
        return Ok(ExitCode::FAILURE);
    }
    let failures = crate::policy::rule_tests::run(&config.tests, |sandbox| match sandbox {
        None => Some(&*config.policy),
        Some(id) => config
            .sandboxes
            .iter()
            .find(|s| &*s.id == id)
            .map(|s| &*s.policy),
    });
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        eprintln!(
            "airlock check: {} of {} policy tests failed",
            failures.len(),
            config.tests.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    print_out(&format!(
        "ok: {} ({} rules from {} rule files; {} policy tests passed; {}; listen {})\n",
        config.source,
        config.policy.len(),
        config.rule_files.len(),
        config.tests.len(),
        config.scan.patterns_summary(),
        config.proxy.listen
    ));
    Ok(ExitCode::SUCCESS)
}

/// What `airlock explain` is asked about.
struct Explain<'a> {
    url: &'a str,
    method: &'a str,
    sandbox: Option<&'a str>,
    headers: &'a [String],
}

/// Judges a request the way the proxy does ([`crate::policy::decide`], the
/// same function), without sending it or fetching any secret.
fn explain(config_path: Option<&Path>, ask: &Explain<'_>) -> anyhow::Result<ExitCode> {
    let config = load(config_path)?;
    let url = ask.url;
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => anyhow::bail!("`{url}`: give an http:// or https:// URL"),
    };
    let authority = uri.authority().context("the URL has no host")?;
    let host = Host::parse(authority.host())?;
    let port = authority.port_u16().unwrap_or(scheme.default_port());
    let method = http::Method::from_bytes(ask.method.to_ascii_uppercase().as_bytes())
        .context("not an HTTP method")?;
    let path = NormalPath::parse(uri.path())?;
    let mut headers = http::HeaderMap::new();
    for h in ask.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("`{h}`: give a header as `Name: value`"))?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("`{name}` is not a header name"))?,
            http::HeaderValue::from_str(value.trim())
                .with_context(|| format!("the value of `{name}` is not a header value"))?,
        );
    }
    let Some(policy) = config.policy_for(ask.sandbox) else {
        if let Some(name) = ask.sandbox {
            anyhow::bail!("this config has no sandbox `{name}`");
        }
        let err = crate::error::ProxyError::ProxyAuth("no sandbox identity");
        print_out(&format!(
            "DENY ({})
  this config has [[sandbox]]es: every client must authenticate; \
             name one with --sandbox.\n",
            err.code()
        ));
        return Ok(ExitCode::from(1));
    };
    // The proxy's order: over CONNECT the guard answers right after the
    // host and port pass, before method and path; plain http is guarded
    // when airlock dials, after the whole decision.
    let mut verdict = None;
    if scheme == Scheme::Https && policy.decide_host(&host, port, scheme).is_ok() {
        let v = explain::guard(&config, &host, port)?;
        if let explain::Verdict::Refused(e) = &v {
            print_out(&explain::refused(e));
            return Ok(ExitCode::from(1));
        }
        verdict = Some(v);
    }
    let decision = decide(
        policy,
        &RequestFacts {
            host: &host,
            port,
            scheme,
            connect: false,
            method: &method,
            path: &path,
            websocket: false,
            headers: &headers,
            uri: &uri,
        },
    );
    match decision {
        Err(Refusal::InjectOverHttp(rule)) => {
            print_out(&format!(
                "DENY (inject_over_http)\n  rule: {rule} injects a credential, and this URL is plain http: \
                 airlock never sends a credential unencrypted unless the rule sets danger_inject_over_http = true.\n",
            ));
            Ok(ExitCode::from(1))
        }
        Err(refused @ Refusal::Placeholder(_)) => {
            let code = refused.code();
            let err = crate::error::ProxyError::from(refused);
            print_out(&format!("DENY ({code})\n{}", err.agent_message()));
            Ok(ExitCode::from(1))
        }
        Ok(rule) => {
            let verdict = match verdict {
                Some(v) => v,
                None => explain::guard(&config, &host, port)?,
            };
            if let explain::Verdict::Refused(e) = &verdict {
                print_out(&explain::refused(e));
                return Ok(ExitCode::from(1));
            }
            let mut out = format!(
                "ALLOW {method} {scheme}://{host}:{port}{path}\n  rule: {} (match \"{}\")\n  judged path: {}\n  forwarded path: {}\n",
                rule.source,
                rule.pattern,
                path.decoded(),
                path.encoded(),
                scheme = scheme.as_str(),
                path = path.decoded(),
            );
            match &rule.inject {
                Some(plan) => {
                    for item in plan.items() {
                        let refs: Vec<String> =
                            item.secrets().iter().map(ToString::to_string).collect();
                        let how = match item {
                            crate::credentials::inject::Injection::Template { .. } => {
                                "from a template"
                            }
                            crate::credentials::inject::Injection::Basic { .. } => "as basic auth",
                            crate::credentials::inject::Injection::Placeholder { .. } => {
                                "in place of its placeholder"
                            }
                        };
                        out.push_str(&format!(
                            "  inject: header {} {how}, secret {} (from the {} backend; value not fetched)\n",
                            item.header(),
                            refs.join(" + "),
                            config.secrets.backend_name()
                        ));
                    }
                }
                None => out.push_str("  inject: nothing\n"),
            }
            out.push_str(&format!(
                "  scan: outgoing {:?} ({} and up), incoming {:?} ({} and up); {} + the values airlock holds\n",
                config.scan.outgoing,
                config.scan.outgoing_confidence,
                config.scan.incoming,
                config.scan.incoming_confidence,
                config.scan.patterns_summary(),
            ));
            out.push_str(&explain::guard_lines(&verdict));
            out.push_str(&explain::settings_lines(&config, &rule));
            if !rule.scan_skip.is_empty() {
                out.push_str(&format!(
                    "  scan_skip: {} (this rule's requests may send them; responses are still scanned)\n",
                    rule.scan_skip.join(", ")
                ));
            }
            print_out(&out);
            Ok(ExitCode::SUCCESS)
        }
        Err(Refusal::Denied(denied)) => {
            print_out(&format!(
                "DENY ({})\n{}",
                denied.reason.as_str(),
                denied.agent_message()
            ));
            Ok(ExitCode::from(1))
        }
    }
}

fn scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let min = if args.all {
        crate::scan::Confidence::Shaped
    } else {
        crate::scan::Confidence::Verified
    };
    let found = crate::scan::cli::run(
        args.patterns.as_deref(),
        &args.files,
        args.json,
        min,
        &mut out,
    )?;
    std::io::Write::flush(&mut out)?;
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[expect(clippy::print_stdout, reason = "the CLI's one writer to stdout")]
fn print_out(s: &str) {
    print!("{s}");
}

fn approvals(args: &crate::approval::cli::ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = crate::approval::cli::main(args, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(code)
}

fn learn(args: LearnArgs) -> anyhow::Result<ExitCode> {
    let run = crate::run::RunArgs {
        config: args.config,
        no_isolate: args.no_isolate,
        isolate: false,
        env_clear: false,
        env: Vec::new(),
        proxy: None,
        ca: None,
        netns_helper: None,
        netns_port: None,
        hide: Vec::new(),
        isolate_init: false,
        command: args.command,
        learn: Some(crate::run::Learn {
            audit: args.audit.clone(),
            permissive: args.permissive,
        }),
    };
    let code = crate::run::main(&run)?;
    eprintln!(
        "airlock learn: decisions recorded in {}; next: airlock propose {}",
        args.audit.display(),
        args.audit.display()
    );
    Ok(code)
}

fn propose(log: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let proposal = crate::learn::propose::run(log, &config)?;
    if proposal.rules == 0 {
        print_out("nothing to propose: every request in the log is allowed by the current rules\n");
    } else {
        print_out(&proposal.diff);
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(log: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let report = crate::learn::replay::run(log, &config)?;
    print_out(&report.text);
    Ok(if report.widened {
        ExitCode::from(crate::learn::replay::EXIT_WIDENED)
    } else {
        ExitCode::SUCCESS
    })
}
