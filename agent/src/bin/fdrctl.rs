//! `fdrctl`: the command-line client of the fdr agent.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use fdr_agent::{
    client::{self, Target},
    ctl,
};

#[derive(Debug, Parser)]
#[command(version, about = "Query the fdr flight data recorder")]
struct Cli {
    /// Unix socket of the agent.
    #[arg(
        long,
        global = true,
        env = "FDR_SOCKET",
        default_value = "/run/fdr/fdr.sock"
    )]
    socket: PathBuf,
    /// Reach the agent over TCP instead, e.g. http://127.0.0.1:7077.
    #[arg(long, global = true, env = "FDR_URL")]
    url: Option<String>,
    /// Bearer token for TCP.
    #[arg(long, global = true, env = "FDR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recorded events: the buffered ones, then live ones with --follow.
    Events(ctl::EventsArgs),
    /// Counters: events and losses per kind, buffer use.
    Stats(ctl::StatsArgs),
    /// Containers the agent knows: running, and stopped ones still named
    /// (tombstones).
    Containers(ctl::ContainersArgs),
    /// Snapshots: create, list, show, export.
    #[command(subcommand)]
    Snapshot(ctl::SnapshotCmd),
    /// History of a scope by time range, from the live buffers.
    Query(ctl::QueryArgs),
    /// Runtime models: list, show (YAML or JSON), relearn.
    #[command(subcommand)]
    Model(ctl::ModelCmd),
    /// Incidents: list, show (with the snapshot's timeline), watch.
    #[command(subcommand)]
    Incidents(ctl::IncidentsCmd),
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("fdrctl: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = rt.block_on(run(cli)) {
        eprintln!("fdrctl: {err:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let target = match cli.url {
        Some(url) => Target::Tcp {
            url,
            token: cli.token,
        },
        None => Target::Unix(cli.socket),
    };
    let mut client = client::connect(&target).await?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Events(args) => ctl::events(&mut client, &args, &mut out).await,
        Command::Stats(args) => ctl::stats(&mut client, &args, &mut out).await,
        Command::Containers(args) => ctl::containers(&mut client, &args, &mut out).await,
        Command::Snapshot(cmd) => ctl::snapshot(&mut client, &cmd, &mut out).await,
        Command::Query(args) => ctl::query(&mut client, &args, &mut out).await,
        Command::Model(cmd) => ctl::model(&mut client, &cmd, &mut out).await,
        Command::Incidents(cmd) => ctl::incidents(&mut client, &cmd, &mut out).await,
    }?;
    Ok(())
}
