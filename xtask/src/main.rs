//! `cargo xtask`: set up the toolchain, build, run, test and benchmark fdr.

mod fuzz;
mod image;
mod install;
mod layers;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "fdr developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the eBPF build needs (idempotent): nightly rust-src and bpf-linker;
    /// as root, also what the tests need: containerd, runc, busybox-static, docker.io,
    /// podman, chromium; and from PyPI the deploy tools and playwright.
    Setup,
    /// Build the agent and fdrctl (release).
    Build,
    /// Build the release binaries and the container image, as an OCI image
    /// layout archive (also loadable by `docker load`), without a registry
    /// or `docker build`; prints its path, tag, size and digest.
    Image {
        /// Where to write the archive (default: <target>/image/fdr-agent.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The image name and tag (default: fdr-agent:<version>-g<git rev>[-dirty]).
        #[arg(long)]
        tag: Option<String>,
        /// The debug binaries (debug info stripped) instead of release ones:
        /// what `cargo xtask test` loads, without a release build.
        #[arg(long)]
        debug: bool,
    },
    /// Set up, build, and run the agent with the default config (or the given args).
    Run {
        /// Arguments passed to fdr-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then: fmt check, import check (`layers`), clippy, fdrctl on
    /// stable Rust without the eBPF toolchain, unit tests and privileged
    /// integration tests.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Fuzz the decoders with cargo-fuzz (optional; not part of `test`): each
    /// target for N seconds from its checked-in corpus (fuzz/corpus); fails on
    /// a crash, whose input is left in fuzz/artifacts/TARGET.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (decode_record, config, snapshot).
        #[arg(long)]
        target: Option<String>,
    },
    /// Import check of the library crates (agent, cli, proto): a line per crate,
    /// the agent's module graph, and every import that breaks the layering
    /// written in xtask/src/layers.rs or closes a cycle (fails if any).
    Layers,
    /// Install the agent and fdrctl on this machine (systemd): release
    /// binaries, the unit, /etc/fdr/fdr.toml (never overwritten),
    /// fdrctl's completions and manual pages. Prints every file.
    Install {
        /// Where binaries, completions and manual pages go.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage everything under this directory instead of / (DESTDIR).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Install the fdr-agent and fdrctl found here instead of building
        /// the release ones.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Benchmarks: parts (probes attached vs detached, in one process), the
    /// release agent side by side with peers (`--only agent`) and the release
    /// console copying from release agents (`--only console`), and the web
    /// UI's timeline of a 100 000-event snapshot in Chromium (`--only ui`);
    /// writes target/bench/results.json.
    Bench {
        /// Arguments passed to the benchmark harness (e.g. --iterations 500).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.task {
        Task::Setup => {
            setup::ensure(&root)?;
            if is_root() {
                setup::ensure_test_packages(&root)?;
            }
            setup::ensure_deploy_tools(&root)
        }
        Task::Build => build(&root),
        Task::Image { out, tag, debug } => image::run(&root, out, tag, debug).map(drop),
        Task::Run { args } => run(&root, &args),
        Task::Test { filter } => test(&root, filter.as_deref()),
        Task::Layers => layers::run(&root, true),
        Task::Bench { args } => bench(&root, &args),
        Task::Fuzz { seconds, target } => fuzz::run(&root, seconds, target.as_deref()),
        Task::Install {
            prefix,
            root: dest,
            bin_dir,
        } => install::run(
            &root,
            &install::Options {
                prefix,
                root: dest,
                bin_dir,
            },
        ),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf())
}

/// `program`, without the variables `cargo run` (how `cargo xtask` starts)
/// set for xtask itself: passed on to a nested cargo, they reach the build
/// scripts that watch them (ring's watches CARGO_MANIFEST_DIR), and those
/// crates and all that depends on them rebuild whenever `cargo xtask …` and
/// a plain `cargo build` take turns.
fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let set_by_cargo_run = key.to_str().is_some_and(|k| {
            matches!(
                k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            ) || k.starts_with("CARGO_PKG_")
        });
        if set_by_cargo_run {
            c.env_remove(key);
        }
    }
    c
}

/// Runs a command in the workspace, failing on a non-zero exit.
fn cmd(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = command(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

fn build(root: &Path) -> Result<()> {
    setup::ensure(root)?;
    cmd(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--package",
            "fdr-agent",
            "--package",
            "fdr-cli",
            "--package",
            "fdr-console",
            "--bins",
        ],
    )
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    build(root)?;
    require_root("running the agent")?;
    let agent = root.join("target/release/fdr-agent");
    eprintln!(
        "fdr-agent starting; query it with: {} events --follow",
        root.join("target/release/fdrctl").display()
    );
    let status = Command::new(&agent)
        .args(args)
        .status()
        .context("starting fdr-agent")?;
    if !status.success() {
        bail!("fdr-agent exited: {status}");
    }
    Ok(())
}

fn test(root: &Path, filter: Option<&str>) -> Result<()> {
    setup::ensure(root)?;
    require_root("the privileged integration tests")?;
    setup::ensure_test_packages(root)?;
    setup::ensure_deploy_tools(root)?;
    cmd(root, "cargo", &["fmt", "--all", "--", "--check"])?;
    eprintln!("+ import check (cargo xtask layers)");
    layers::run(root, false)?;
    cmd(
        root,
        "cargo",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    cmd(
        root,
        "cargo",
        &[
            "+nightly",
            "clippy",
            "--package",
            "fdr-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    stable_only(root)?;
    // The end-to-end tests start the real agent and fdrctl binaries.
    cmd(
        root,
        "cargo",
        &[
            "build",
            "--package",
            "fdr-agent",
            "--package",
            "fdr-cli",
            "--package",
            "fdr-console",
            "--bins",
        ],
    )?;
    // The image test (tests/tests/image.rs) loads this image into a
    // private dockerd: the debug binaries just built (a release build
    // would add minutes to every run; `cargo xtask image` makes the
    // release one from the same code).
    let out = root.join("target/image/fdr-agent-test.oci.tar");
    let image = image::run(root, Some(out), None, true)?;
    std::env::set_var(image::ARCHIVE_ENV, &image.archive);
    // Every test binary runs, so one failure does not hide the others.
    let mut args = vec!["test", "--no-fail-fast", "--", "--test-threads=2"];
    if let Some(f) = filter {
        args.push(f);
    }
    cmd_with_deadline(root, "cargo", &args, TEST_DEADLINE)
}

/// `fdrctl` (crate `fdr-cli`) and what it shares with the agent
/// (`fdr-proto`) build and pass their tests on stable Rust with the eBPF
/// toolchain out of reach: `RUSTUP_TOOLCHAIN=stable`, no fdr tools
/// directory (bpf-linker) on `PATH` nor where the agent's build script
/// looks (`FDR_TOOLS_DIR` set to an empty directory), and a target
/// directory of their own so the build starts clean. The agent's build
/// fails there ("bpf-linker not found"), so this also proves fdr-cli does
/// not depend on it; `cargo tree` says the same before anything builds.
/// fdr's crates in `package`'s dependency tree (itself included).
fn fdr_dependencies(root: &Path, package: &str) -> Result<std::collections::BTreeSet<String>> {
    let out = Command::new("cargo")
        .args(["tree", "--package", package, "--edges", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "`cargo tree --package {package}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("fdr-"))
        .map(str::to_owned)
        .collect())
}

fn stable_only(root: &Path) -> Result<()> {
    // The console needs no eBPF toolchain either: it uses fdrctl's client,
    // the OTLP export and fdr-proto, never the agent (its tree says so; it
    // is not built again here). The export is shared with the agent and
    // needs fdr-proto only.
    let ours = fdr_dependencies(root, "fdr-console")?;
    if ours
        != ["fdr-cli", "fdr-console", "fdr-export", "fdr-proto"]
            .map(String::from)
            .into()
    {
        bail!("fdr-console must depend on fdr-cli, fdr-export and fdr-proto only of fdr's crates; it uses {ours:?}");
    }
    let ours = fdr_dependencies(root, "fdr-export")?;
    if ours != ["fdr-export", "fdr-proto"].map(String::from).into() {
        bail!("fdr-export must depend on fdr-proto only of fdr's crates; it uses {ours:?}");
    }
    let ours = fdr_dependencies(root, "fdr-cli")?;
    if ours != ["fdr-cli", "fdr-proto"].map(String::from).into() {
        bail!("fdr-cli must depend on fdr-proto only of fdr's crates; it uses {ours:?}");
    }
    let tools_bin = setup::tools_dir().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::env::split_paths(&path).filter(|p| *p != tools_bin))
        .context("PATH without the fdr tools")?;
    let target = root.join("target/stable-only");
    let no_tools = target.join("no-tools");
    std::fs::create_dir_all(&no_tools)
        .with_context(|| format!("creating {}", no_tools.display()))?;
    for args in [
        &["build", "--package", "fdr-cli", "--package", "fdr-export"][..],
        &[
            "test",
            "--package",
            "fdr-proto",
            "--package",
            "fdr-cli",
            "--package",
            "fdr-export",
        ],
    ] {
        eprintln!(
            "+ RUSTUP_TOOLCHAIN=stable FDR_TOOLS_DIR={} CARGO_TARGET_DIR={} cargo {}",
            no_tools.display(),
            target.display(),
            args.join(" ")
        );
        let status = Command::new("cargo")
            .args(args)
            .current_dir(root)
            .env("RUSTUP_TOOLCHAIN", "stable")
            .env("PATH", &path)
            .env("FDR_TOOLS_DIR", &no_tools)
            .env("CARGO_TARGET_DIR", &target)
            // Set by the cargo running xtask: they could name another toolchain.
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!(
                "`cargo {}` on stable without the eBPF toolchain failed: {status}",
                args.join(" ")
            );
        }
    }
    Ok(())
}

/// The whole test run normally takes well under a minute; a run that has
/// not finished after this long is stuck, and is stopped with a clear error
/// instead of running into CI's own limit.
const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// Like [`cmd`], but kills the command's process group after `deadline`.
fn cmd_with_deadline(
    root: &Path,
    program: &str,
    args: &[&str],
    deadline: std::time::Duration,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("+ {program} {}", args.join(" "));
    let mut child = command(program)
        .args(args)
        .current_dir(root)
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("`{program} {}` failed: {status}", args.join(" "));
            }
            return Ok(());
        }
        if start.elapsed() > deadline {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            bail!(
                "`{program} {}` did not finish within {deadline:?}: a test is stuck",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    setup::ensure(root)?;
    require_root("the benchmarks (they load the probes)")?;
    // The agent and console cases run the release binaries, found next to
    // fdr-bench; built in one go with it, so that the dependencies'
    // features (and the artifacts) are the ones `cargo run` below finds
    // fresh.
    cmd(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "fdr-agent",
            "-p",
            "fdr-cli",
            "-p",
            "fdr-console",
            "-p",
            "fdr-tests",
            "--bins",
        ],
    )?;
    let mut full = vec![
        "run",
        "--release",
        "--package",
        "fdr-tests",
        "--bin",
        "fdr-bench",
        "--",
    ];
    full.extend(args.iter().map(String::as_str));
    cmd(root, "cargo", &full)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (eBPF programs, tracefs, cgroups): run as root");
    }
    Ok(())
}
