//! `fdr-agent`: the per-node daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use fdr_agent::{
    config::{Config, ConfigError, LogFormat},
    daemon::{self as agent, SelfFilter},
    util::notify::{self, Notifier},
};
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

/// jemalloc returns memory freed after large replies (query pages,
/// exports) to the system within seconds; glibc's malloc kept it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// fdr: a security flight data recorder for this node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), read again on SIGHUP. Without it, the
    /// defaults apply.
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
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Where the host's filesystem is seen, e.g. /host in a pod (overrides
    /// `host.root`).
    #[arg(long, env = "HOST_ROOT")]
    host_root: Option<PathBuf>,
    /// The node's name on events, records, incidents and snapshots
    /// (overrides `host.node_name`; else NODE_NAME, else the host's
    /// /etc/hostname, else the kernel's host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Serve the API over the database in the data directory without
    /// capturing anything (no eBPF, no pipeline, no /proc scan; runs
    /// unprivileged): a copy of a dead node's data directory, read with
    /// fdrctl. Its incidents, snapshots and models are answered as they
    /// were stored; creating a snapshot or relearning a model is refused.
    /// The node name is the one the database keeps.
    #[arg(long)]
    offline: bool,
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

/// The configuration: the file (or the defaults), the command line's
/// overrides applied, checked.
fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = &cli.socket {
        cfg.api.socket = s.clone();
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
    if let Some(d) = &cli.data_dir {
        cfg.recorder.data_dir = d.clone();
    }
    if let Some(b) = cli.ring_buffer_bytes {
        cfg.probes.ring_buffer_bytes = b;
    }
    if let Some(l) = &cli.log_level {
        cfg.log.level = l.clone();
    }
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
    if let Some(r) = &cli.host_root {
        cfg.host.root = r.clone();
    }
    if let Some(n) = &cli.node_name {
        cfg.host.node_name = n.clone();
    }
    cfg.validate()?;
    fdr_agent::analysis::model::rules::check(&cfg.analysis)?;
    Ok(cfg)
}

/// Changes the log filter at run time.
type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Installs the subscriber: `RUST_LOG`, else `log.level`; text or JSON
/// lines on stderr.
fn init_logging(cfg: &Config) -> Result<FilterHandle> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .context("invalid log filter")?;
    let (filter, handle) = reload::Layer::new(filter);
    let json = cfg.log.format == LogFormat::Json;
    // Colours only on a terminal (not in journald or a log file).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(handle)
}

fn run(cli: Cli) -> Result<()> {
    let cfg = load(&cli)?;
    let log = init_logging(&cfg)?;
    let notifier = match Notifier::from_env() {
        Some(Ok(n)) => Some(std::sync::Arc::new(n)),
        Some(Err(err)) => {
            tracing::warn!(%err, "NOTIFY_SOCKET is set but unusable: no systemd notifications");
            None
        }
        None => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        // Before the socket appears: a SIGTERM as soon as a client sees it
        // still shuts down cleanly (and removes it). SIGHUP too: it never
        // terminates the agent.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let mut running = if cli.offline {
            agent::start_offline(&cfg).await?
        } else {
            agent::start(&cfg, SelfFilter::ExcludeSelf).await?
        };
        if cfg.log.format == LogFormat::Json {
            // Nothing but JSON lines on stderr for a log pipeline.
            tracing::info!(socket = %running.socket.display(), "listening");
        } else {
            eprintln!("fdr-agent: listening on {}", running.socket.display());
        }
        let ready = if cli.offline {
            format!(
                "READY=1\nSTATUS=offline: serving the database of {}",
                running.state.node.as_ref()
            )
        } else {
            format!(
                "READY=1\nSTATUS=recording on {}",
                running.state.node.as_ref()
            )
        };
        if let Some(n) = &notifier {
            n.send(&ready);
        }
        let watchdog = notifier
            .as_ref()
            .and(notify::watchdog_interval())
            .map(|every| {
                tokio::spawn(feed_watchdog(
                    notifier.clone(),
                    every,
                    running.state.counters.clone(),
                    cli.offline,
                ))
            });
        loop {
            tokio::select! {
                _ = int.recv() => {
                    tracing::info!("interrupted, shutting down");
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("terminated, shutting down");
                    break;
                }
                _ = hup.recv() => {
                    if let Some(n) = &notifier {
                        n.send(&notify::reloading_message());
                    }
                    reload(&cli, &mut running, &log);
                    if let Some(n) = &notifier {
                        n.send(&ready);
                    }
                }
                res = running.wait_failure() => {
                    if let Err(err) = res {
                        if let Some(n) = &notifier {
                            n.send("STOPPING=1");
                        }
                        return Err(err.into());
                    }
                    break;
                }
            }
        }
        if let Some(n) = &notifier {
            n.send("STOPPING=1\nSTATUS=shutting down");
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        running.shutdown().await?;
        Ok(())
    })
}

/// SIGHUP: reads the configuration file again and applies what can change
/// at run time (the analysis rules, the log level); logs each other
/// changed key as needing a restart. A bad file changes nothing (logged
/// at error level with the reason). Never fails.
fn reload(cli: &Cli, running: &mut agent::Running, log: &FilterHandle) {
    let Some(path) = &cli.config else {
        tracing::info!("SIGHUP: started without --config, nothing to reload");
        return;
    };
    let new = match load(cli) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, file = %path.display(), "configuration reload refused: keeping the running settings");
            return;
        }
    };
    // The filter first: a bad one refuses the whole reload.
    let filter = match EnvFilter::try_new(&new.log.level) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(%err, file = %path.display(), "configuration reload refused: log.level: keeping the running settings");
            return;
        }
    };
    let outcome = match running.reload(&new) {
        Ok(o) => o,
        Err(err) => {
            tracing::error!(%err, file = %path.display(), "configuration reload refused: keeping the running settings");
            return;
        }
    };
    if outcome.changed("log.level") {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing::warn!(
                level = %new.log.level,
                "log.level changed, but RUST_LOG is set and overrides it"
            );
        } else if let Err(err) = log.reload(filter) {
            tracing::error!(%err, "applying log.level");
        }
    }
    if !outcome.needs_restart.is_empty() {
        tracing::warn!(
            keys = %outcome.needs_restart.join(", "),
            "configuration changed: these keys need a restart to take effect"
        );
    }
    tracing::info!(
        file = %path.display(),
        applied = %outcome.applied.join(", "),
        needs_restart = outcome.needs_restart.len(),
        "configuration reloaded"
    );
}

/// Sends `WATCHDOG=1` every `every` while the pipeline advances (always
/// when `offline`: there is no pipeline).
async fn feed_watchdog(
    notifier: Option<std::sync::Arc<Notifier>>,
    every: std::time::Duration,
    counters: std::sync::Arc<fdr_agent::util::stats::Counters>,
    offline: bool,
) {
    let Some(n) = notifier else { return };
    if offline {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            n.send("WATCHDOG=1");
        }
    }
    let steps = || {
        counters
            .pipeline_steps
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut dog = notify::Watchdog::new(every, steps(), std::time::Instant::now());
    let mut tick = tokio::time::interval(every);
    let mut starving = false;
    loop {
        tick.tick().await;
        if dog.feed(steps(), std::time::Instant::now()) {
            starving = false;
            n.send("WATCHDOG=1");
        } else if !starving {
            starving = true;
            tracing::error!("the pipeline has not advanced: the systemd watchdog is no longer fed");
        }
    }
}
