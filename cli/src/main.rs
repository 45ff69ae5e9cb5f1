//! `fdrctl`: the command-line client of the fdr agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
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
    /// An incident as one self-contained HTML file (summary, audits, the
    /// snapshot's timeline with histogram, kind toggles and search; no
    /// network needed to open it) to attach to a ticket.
    Report(ctl::ReportArgs),
    /// Who answers: an agent or a console, its instance id, node, version.
    Identity(ctl::IdentityArgs),
    /// The agents a console knows: whether they answer, how far their
    /// evidence is copied (a console only).
    Agents(ctl::AgentsArgs),
    /// Print a shell completion script (bash: source it, or save it as
    /// /usr/share/bash-completion/completions/fdrctl; zsh: as _fdrctl in
    /// a directory of $fpath; fish: as ~/.config/fish/completions/fdrctl.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `fdrctl man | man -l -`), or write
    /// fdrctl.1 and one page per subcommand (fdrctl-events.1, ...) into
    /// --out-dir.
    Man {
        /// Directory to write the pages to, instead of printing fdrctl(1).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// The completion script of `shell` for fdrctl.
fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "fdrctl", out);
}

/// fdrctl(1) as roff, or every page into `out_dir`.
fn man(out_dir: Option<&std::path::Path>, out: &mut dyn std::io::Write) -> Result<()> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("writing the manual pages to {}", dir.display()))
        }
        None => clap_mangen::Man::new(Cli::command())
            .render(out)
            .context("writing the manual page"),
    }
}

fn main() {
    let cli = Cli::parse();
    // Neither needs an agent. Rendered in memory, then written: a reader
    // that goes away (`| head`) ends fdrctl quietly.
    let text = match &cli.command {
        Command::Completions { shell } => {
            let mut text = Vec::new();
            completions(*shell, &mut text);
            Some(Ok(text))
        }
        Command::Man { out_dir } => {
            let mut text = Vec::new();
            Some(man(out_dir.as_deref(), &mut text).map(|()| text))
        }
        _ => None,
    };
    if let Some(text) = text {
        use std::io::Write;
        let written = text.and_then(|t| {
            let mut out = std::io::stdout().lock();
            match out.write_all(&t).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("writing to standard output"))
                }
                _ => Ok(()),
            }
        });
        if let Err(err) = written {
            eprintln!("fdrctl: {err:#}");
            std::process::exit(1);
        }
        return;
    }
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
        // 3: `snapshot verify` ran and something did not verify.
        let unverified = matches!(
            err.downcast_ref::<ctl::CtlError>(),
            Some(ctl::CtlError::Unverified(_))
        );
        std::process::exit(if unverified { 3 } else { 1 });
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
    let mut out = std::io::stdout().lock();
    // The console's own service, on the same kind of channel.
    if let Command::Agents(args) = &cli.command {
        let mut console = client::connect_console(&target)
            .await
            .map_err(|e| hint(e.into(), true))?;
        let done = ctl::agents(&mut console, args, &mut out).await;
        return done.map_err(|e| {
            let unimplemented =
                matches!(&e, ctl::CtlError::Rpc { code, .. } if *code == tonic::Code::Unimplemented);
            let e = anyhow::Error::from(e);
            if unimplemented {
                e.context("`fdrctl agents` asks a console; this looks like an agent")
            } else {
                e
            }
        });
    }
    let mut client = client::connect(&target)
        .await
        .map_err(|e| hint(e.into(), true))?;
    // Against a console, verifying also asks for the keys it pinned.
    if let Command::Snapshot(ctl::SnapshotCmd::Verify(args)) = &cli.command {
        let mut console = client::connect_console(&target)
            .await
            .map_err(|e| hint(e.into(), true))?;
        return ctl::verify(&mut client, Some(&mut console), args, &mut out)
            .await
            .map_err(anyhow::Error::from);
    }
    let done = match cli.command {
        Command::Events(args) => ctl::events(&mut client, &args, &mut out).await,
        Command::Stats(args) => ctl::stats(&mut client, &args, &mut out).await,
        Command::Containers(args) => ctl::containers(&mut client, &args, &mut out).await,
        Command::Snapshot(cmd) => ctl::snapshot(&mut client, &cmd, &mut out).await,
        Command::Query(args) => ctl::query(&mut client, &args, &mut out).await,
        Command::Model(cmd) => ctl::model(&mut client, &cmd, &mut out).await,
        Command::Incidents(cmd) => ctl::incidents(&mut client, &cmd, &mut out).await,
        Command::Identity(args) => ctl::identity(&mut client, &args, &mut out).await,
        Command::Report(args) => ctl::report(&mut client, &args, &mut out).await,
        Command::Completions { .. } | Command::Man { .. } | Command::Agents(_) => {
            unreachable!("handled above")
        }
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

    /// The subcommands a user types, which every completion script and the
    /// manual page must name.
    const SUBCOMMANDS: [&str; 10] = [
        "events",
        "stats",
        "containers",
        "snapshot",
        "query",
        "model",
        "incidents",
        "identity",
        "agents",
        "report",
    ];

    #[test]
    fn completions_name_every_subcommand() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).expect("UTF-8 script");
            assert!(text.len() > 1000, "{shell}: {} bytes", text.len());
            for sub in SUBCOMMANDS {
                assert!(text.contains(sub), "{shell} script lacks {sub}");
            }
            // Nested subcommands and flags too.
            assert!(
                text.contains("relearn") && text.contains("--follow"),
                "{shell}"
            );
        }
    }

    #[test]
    fn man_page_is_roff_naming_the_subcommands() {
        let mut out = Vec::new();
        man(None, &mut out).expect("render");
        let text = String::from_utf8(out).expect("UTF-8 roff");
        // The first macro is .TH, after clap_mangen's definition of the
        // Aq string (.ie/.el) that the page uses for apostrophes.
        let first = text
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .expect("lines");
        assert!(first.starts_with(".TH fdrctl 1 "), "{first}");
        for sub in SUBCOMMANDS {
            assert!(
                text.contains(&format!("fdrctl\\-{sub}(1)")),
                "man page lacks {sub}"
            );
        }
    }

    #[test]
    fn man_pages_are_written_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("fdrctl-man-{}", std::process::id()));
        man(Some(&dir), &mut std::io::sink()).expect("write pages");
        for page in ["fdrctl.1", "fdrctl-events.1", "fdrctl-snapshot-export.1"] {
            let text = std::fs::read_to_string(dir.join(page)).expect(page);
            assert!(text.contains(".TH"), "{page}");
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
