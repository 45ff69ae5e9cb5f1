//! `fdr-agent`: the per-node daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use fdr_agent::{
    config::{Config, ConfigError},
    daemon::{self as agent, SelfFilter},
};
use tracing_subscriber::EnvFilter;

/// jemalloc returns memory freed after large replies (query pages,
/// exports) to the system within seconds; glibc's malloc kept it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// fdr: a security flight data recorder for this node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, the defaults apply.
    #[arg(short, long, env = "FDR_CONFIG")]
    config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Unix socket of the API (overrides `api.socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TCP listener of the API, e.g. 127.0.0.1:7077 (overrides `api.tcp_listen`).
    #[arg(long)]
    tcp_listen: Option<std::net::SocketAddr>,
    /// Plaintext gRPC health listener, e.g. 0.0.0.0:6789 (overrides `health.listen`).
    #[arg(long)]
    health_listen: Option<std::net::SocketAddr>,
    /// HTTP metrics listener, e.g. 0.0.0.0:9477 (overrides `metrics.listen`).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Memory budget of all buffers in bytes (overrides `recorder.budget_bytes`).
    #[arg(long)]
    budget_bytes: Option<u64>,
    /// Data directory (overrides `recorder.data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kernel ring buffer size in bytes (overrides `probes.ring_buffer_bytes`).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Log filter (overrides `log.level`; RUST_LOG overrides both).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return;
    }
    if let Err(err) = run(cli) {
        eprintln!("fdr-agent: {err:#}");
        std::process::exit(exit_code(&err));
    }
}

/// 2 for a configuration the agent refuses (like a bad command line),
/// 1 for any other failure.
fn exit_code(err: &anyhow::Error) -> i32 {
    let config = err.chain().any(|e| {
        e.downcast_ref::<ConfigError>().is_some()
            || matches!(
                e.downcast_ref::<agent::AgentError>(),
                Some(
                    agent::AgentError::Config(_)
                        | agent::AgentError::Restore(fdr_agent::analysis::RestoreError::Config(_))
                )
            )
    });
    if config {
        2
    } else {
        1
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = cli.socket {
        cfg.api.socket = s;
    }
    if let Some(t) = cli.tcp_listen {
        cfg.api.tcp_listen = Some(t);
    }
    if let Some(a) = cli.health_listen {
        cfg.health.listen = a.to_string();
    }
    if let Some(a) = cli.metrics_listen {
        cfg.metrics.listen = a.to_string();
    }
    if let Some(b) = cli.budget_bytes {
        cfg.recorder.budget_bytes = b;
    }
    if let Some(d) = cli.data_dir {
        cfg.recorder.data_dir = d;
    }
    if let Some(b) = cli.ring_buffer_bytes {
        cfg.probes.ring_buffer_bytes = b;
    }
    if let Some(l) = cli.log_level {
        cfg.log.level = l;
    }
    cfg.validate()?;
    fdr_agent::analysis::model::rules::check(&cfg.analysis)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .context("invalid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        // Before the socket appears: a SIGTERM as soon as a client sees it
        // still shuts down cleanly (and removes it).
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut running = agent::start(&cfg, SelfFilter::ExcludeSelf).await?;
        eprintln!("fdr-agent: listening on {}", running.socket.display());
        tokio::select! {
            _ = int.recv() => tracing::info!("interrupted, shutting down"),
            _ = term.recv() => tracing::info!("terminated, shutting down"),
            res = running.wait_failure() => {
                res?;
            }
        }
        running.shutdown().await?;
        Ok(())
    })
}
