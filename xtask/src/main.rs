//! `cargo xtask`: set up the toolchain, build, run, test and benchmark fdr.

mod fuzz;
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
    /// as root, also what the tests need: containerd, runc, busybox-static, docker.io.
    Setup,
    /// Build the agent and fdrctl (release).
    Build,
    /// Set up, build, and run the agent with the default config (or the given args).
    Run {
        /// Arguments passed to fdr-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then: fmt check, import check (`layers`), clippy, unit tests and
    /// privileged integration tests.
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
    /// Import check of the agent crate: prints the module graph and every import
    /// that breaks the layering written in xtask/src/layers.rs (fails if any).
    Layers,
    /// Benchmarks (probes attached vs detached, in one run); writes target/bench/results.json.
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
            Ok(())
        }
        Task::Build => build(&root),
        Task::Run { args } => run(&root, &args),
        Task::Test { filter } => test(&root, filter.as_deref()),
        Task::Layers => layers::run(&root, true),
        Task::Bench { args } => bench(&root, &args),
        Task::Fuzz { seconds, target } => fuzz::run(&root, seconds, target.as_deref()),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf())
}

/// Runs a command in the workspace, failing on a non-zero exit.
fn cmd(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
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
        &["build", "--release", "--package", "fdr-agent", "--bins"],
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
    // The end-to-end tests start the real agent binary.
    cmd(
        root,
        "cargo",
        &["build", "--package", "fdr-agent", "--bins"],
    )?;
    // Every test binary runs, so one failure does not hide the others.
    let mut args = vec!["test", "--no-fail-fast", "--", "--test-threads=2"];
    if let Some(f) = filter {
        args.push(f);
    }
    cmd_with_deadline(root, "cargo", &args, TEST_DEADLINE)
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
    let mut child = Command::new(program)
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
