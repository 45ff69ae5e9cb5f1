//! `fdr-console`: serves the fleet's evidence (see the crate's docs).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fdr_console::{
    api,
    config::Config,
    discovery,
    evidence::Evidence,
    index::Index,
    sync::{self, Console},
    web,
};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "fdr-console",
    version,
    about = "fdr's console: evidence that outlives the node"
)]
struct Cli {
    /// Configuration file (TOML; see --print-default-config).
    #[arg(short, long, env = "FDR_CONSOLE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// API listener (overrides `api.listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides `evidence.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Agent URL to copy from (added to `agents.urls`; repeatable).
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Log filter (overrides `log.level`; RUST_LOG overrides both).
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingests the incidents and snapshots of an agent's data directory
    /// taken from a node (`snapshots.redb` inside), then exits. The console
    /// itself must not be running on the same data directory. It reads the
    /// database through `fdr-agent --offline` (no capture, nothing
    /// deleted).
    Import {
        /// The agent's data directory (holding snapshots.redb).
        dir: PathBuf,
        /// The fdr-agent binary (default: next to fdr-console, else PATH).
        #[arg(long)]
        agent_binary: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = cli.listen {
        cfg.api.listen = l;
    }
    if let Some(d) = &cli.data_dir {
        cfg.evidence.dir = d.clone();
    }
    cfg.agents.urls.extend(cli.agents.iter().cloned());
    if let Some(l) = &cli.log_level {
        cfg.log.level = l.clone();
    }
    cfg.validate()?;
    init_log(&cfg);
    // object_store's S3 client speaks rustls with ring, as tonic does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cli.command {
            None => serve(cfg).await,
            Some(Command::Import { dir, agent_binary }) => import(cfg, &dir, agent_binary).await,
        }
    })
}

/// The OTLP export's sender (when `[export.otlp]` is enabled), and a log
/// line with its figures each minute they changed (the console has no
/// metrics endpoint).
fn start_export(con: &Arc<Console>) -> Result<()> {
    let Some(outbox) = con.index.outbox().cloned() else {
        return Ok(());
    };
    let cfg = con.cfg.export.otlp.clone();
    let (o, db) = (outbox.clone(), con.index.database());
    let source = fdr_export::Source {
        service_name: "fdr-console".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        instance_id: con.index.instance_id().to_owned(),
        host_name: hostname(),
        extra: cfg
            .resource_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let access: Arc<dyn fdr_export::Access> = Arc::new(db);
    fdr_export::spawn(cfg.clone(), o, access, source).context("starting the OTLP export")?;
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let s = outbox.metrics().to_pb(&cfg.endpoint);
            let now = format!("{s:?}");
            if now != last {
                tracing::info!(
                    queued = s.queued_records,
                    queued_bytes = s.queued_bytes,
                    oldest_s = s.oldest_age_s,
                    sent = s.sent,
                    retried = s.retried,
                    rejected = s.rejected,
                    failures = s.failures,
                    dropped_incidents = s.dropped_incidents,
                    dropped_audits = s.dropped_audits,
                    gaps = s.gaps,
                    last_error = %s.last_error,
                    "OTLP export"
                );
                last = now;
            }
        }
    });
    Ok(())
}

/// This machine's name, for the export's `host.name`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn init_log(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn open(cfg: Config) -> Result<Arc<Console>> {
    let mut index = Index::open(&cfg.evidence.dir, cfg.retention.clone())?;
    if cfg.export.otlp.enabled {
        index.enable_export(cfg.export.otlp.max_bytes);
    }
    let evidence = Evidence::open(&cfg.evidence)?;
    let con = Console::new(cfg, index, evidence);
    reconcile(&con).await?;
    Ok(con)
}

/// Objects no index entry names (a crash between writing one and
/// recording it) are removed; objects the index names but the store
/// lacks are reported.
async fn reconcile(con: &Arc<Console>) -> Result<()> {
    let listed = con
        .evidence
        .list()
        .await
        .with_context(|| format!("listing the evidence store {}", con.evidence.describe))?;
    let l2 = listed.clone();
    let orphans = con.with_index(move |ix| ix.orphans(&l2)).await?;
    for sha in &orphans {
        tracing::info!(%sha, "removing an object no snapshot refers to (left by a crash)");
        con.evidence.delete(sha).await?;
    }
    let named = con.with_index(|ix| ix.objects()).await?;
    let have: std::collections::HashSet<&String> = listed.iter().collect();
    let missing = named.iter().filter(|s| !have.contains(s)).count();
    if missing > 0 {
        tracing::error!(missing, store = %con.evidence.describe, "snapshot objects named by the index are missing from the evidence store");
    }
    let (n, bytes) = con.with_index(|ix| ix.snapshot_totals()).await?;
    tracing::info!(snapshots = n, bytes, store = %con.evidence.describe, orphans = orphans.len(), "evidence store opened");
    Ok(())
}

async fn serve(cfg: Config) -> Result<()> {
    let api_cfg = cfg.api.clone();
    let con = open(cfg).await?;
    start_export(&con)?;
    let listener = api::bind(&api_cfg).await?;
    // The web UI failing to start (its port taken, a token file
    // unreadable) leaves the evidence collection and the API running.
    let web_listener = match web::bind(&con.cfg, con.clone()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the web UI is not served");
            None
        }
    };
    let (stop_tx, stop) = watch::channel(false);
    let disc = tokio::spawn(discovery::run(con.clone(), stop.clone()));
    let server = tokio::spawn(api::serve(listener, con.clone(), stop.clone()));
    let web_server = web_listener.map(|l| tokio::spawn(web::serve(l, stop.clone())));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), disc).await;
    if let Some(w) = web_server {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => bail!("API task: {e}"),
        Err(_) => tracing::warn!("API did not stop within 10s"),
    }
    Ok(())
}

fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut b,
    )
    .context("reading /dev/urandom")?;
    let dir = std::env::temp_dir().join(format!(
        "fdr-console-import-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(b)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn agent_binary(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fdr-agent")))
        .filter(|p| p.exists())
    {
        return p;
    }
    PathBuf::from("fdr-agent")
}

async fn import(cfg: Config, dir: &Path, agent_binary_path: Option<PathBuf>) -> Result<()> {
    if !dir.join("snapshots.redb").is_file() {
        bail!(
            "{}: no snapshots.redb there (an fdr-agent data directory?)",
            dir.display()
        );
    }
    let con = open(cfg).await?;
    // A directory of our own (0700, a name nobody could have guessed and
    // created first): the socket the evidence comes through.
    let tmp = private_dir()?;
    let sock = tmp.join("agent.sock");
    let bin = agent_binary(agent_binary_path);
    let mut child = tokio::process::Command::new(&bin)
        .arg("--offline")
        .arg("--data-dir")
        .arg(dir)
        .arg("--socket")
        .arg(&sock)
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} --offline", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        if let Some(st) = child.try_wait()? {
            bail!("{} --offline exited early: {st}", bin.display());
        }
        if Instant::now() > deadline {
            bail!(
                "{} --offline did not open its socket within 60s",
                bin.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("unix://{}", sock.display());
    let before = con.with_index(|ix| ix.last_serial()).await?;
    let r = sync::sync_once(&con, &url, &format!("import:{}", dir.display())).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&tmp);
    r?;
    let after = con.with_index(|ix| ix.last_serial()).await?;
    let (n, bytes) = con.with_index(|ix| ix.snapshot_totals()).await?;
    println!(
        "imported {} incidents from {} (fleet serials {}..={}); the console holds {n} snapshots, {bytes} bytes",
        after - before,
        dir.display(),
        before + 1,
        after
    );
    Ok(())
}
