//! `fdrctl`: the command-line client of the fdr agent.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use fdr_cli::{
    client::{self, Target},
    ctl,
};

#[derive(Debug, Parser)]
#[command(name = "fdrctl", version, about = "Query the fdr flight data recorder")]
struct Cli {
    /// Unix socket of the agent.
    #[arg(
        long,
        global = true,
        env = "FDR_SOCKET",
        default_value = "/run/fdr/fdr.sock"
    )]
    socket: PathBuf,
    /// Reach the agent over TCP instead: http://127.0.0.1:7077 (loopback),
    /// or https://node-1:7077 (TLS).
    #[arg(long, global = true, env = "FDR_URL")]
    url: Option<String>,
    /// Bearer token for TCP.
    #[arg(long, global = true, env = "FDR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate the agent's certificate must chain to (https;
    /// default: the system's trusted roots).
    #[arg(long, global = true, env = "FDR_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for an agent that requires one (https).
    #[arg(long, global = true, env = "FDR_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM key of --cert-file.
    #[arg(long, global = true, env = "FDR_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Name to check the agent's certificate against, when it is not the
    /// URL's host.
    #[arg(long, global = true, env = "FDR_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
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
            tls: client::ClientTls {
                ca_file: cli.ca_file,
                cert_file: cli.cert_file,
                key_file: cli.key_file,
                server_name: cli.tls_server_name,
            },
        },
        None => Target::Unix(cli.socket),
    };
    // A TLS 1.3 server that wants a client certificate refuses it after
    // the handshake: the first call fails at the transport (an alert, a
    // closed connection or a broken pipe, depending on timing).
    let certless_tls = matches!(&target, Target::Tcp { url, tls, .. }
        if url.starts_with("https://") && tls.cert_file.is_none());
    let hint = |e: anyhow::Error, transport: bool| {
        if certless_tls && transport && !format!("{e:#}").contains("invalid peer certificate") {
            e.context(
                "the agent refused or closed the TLS connection: does it require a client \
                 certificate (--cert-file, --key-file)?",
            )
        } else {
            e
        }
    };
    let mut client = client::connect(&target)
        .await
        .map_err(|e| hint(e.into(), true))?;
    let mut out = std::io::stdout().lock();
    let done = match cli.command {
        Command::Events(args) => ctl::events(&mut client, &args, &mut out).await,
        Command::Stats(args) => ctl::stats(&mut client, &args, &mut out).await,
        Command::Containers(args) => ctl::containers(&mut client, &args, &mut out).await,
        Command::Snapshot(cmd) => ctl::snapshot(&mut client, &cmd, &mut out).await,
        Command::Query(args) => ctl::query(&mut client, &args, &mut out).await,
        Command::Model(cmd) => ctl::model(&mut client, &cmd, &mut out).await,
        Command::Incidents(cmd) => ctl::incidents(&mut client, &cmd, &mut out).await,
    };
    done.map_err(|e| {
        let transport = matches!(&e, ctl::CtlError::Rpc { code, .. }
            if matches!(code, tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled));
        hint(e.into(), transport)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn version_names_fdrctl() {
        let err = Cli::command()
            .try_get_matches_from(["fdrctl", "--version"])
            .expect_err("--version stops parsing");
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        let text = err.render().to_string();
        assert_eq!(text, format!("fdrctl {}\n", env!("CARGO_PKG_VERSION")));
        assert!(text.starts_with("fdrctl "), "{text}");
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
