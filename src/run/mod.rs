//! `airlock run`: start (or use) an airlock and run a command whose only
//! way out is through it. (Being built.)

use std::path::PathBuf;
use std::process::ExitCode;

/// `airlock run [--config FILE] [--isolate] [--proxy ADDR --ca FILE] -- CMD [ARGS...]`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config for the airlock this command starts (default: the embedded default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run CMD in its own network namespace where only airlock is reachable (Linux).
    #[arg(long)]
    pub isolate: bool,
    /// Use an airlock that is already running at this address instead of starting one.
    #[arg(long, requires = "ca")]
    pub proxy: Option<String>,
    /// That airlock's CA certificate (with --proxy).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the command; returns its exit status.
///
/// # Errors
/// airlock could not start, or the command could not be started.
pub fn main(args: &RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("airlock run is not built yet ({:?})", args.command)
}
