//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/`, one after the
//! other, each for a bounded time from its checked-in corpus. Optional
//! (never part of `cargo xtask test`): it needs the nightly toolchain and
//! several minutes.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::setup;

/// The targets, and the longest input each is given (a file record with
/// both path areas is about 17 KiB; the seeds of the others are smaller).
pub const TARGETS: [(&str, usize); 3] = [
    ("decode_record", 20 * 1024),
    ("config", 32 * 1024),
    ("snapshot", 128 * 1024),
];

/// What one target's run showed.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    seconds: Option<u64>,
    /// The input that crashed it, as libFuzzer wrote it.
    crash: Option<String>,
    success: bool,
}

pub fn run(root: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let targets: Vec<(&'static str, usize)> = match only {
        None => TARGETS.to_vec(),
        Some(name) => match TARGETS.iter().find(|(t, _)| *t == name) {
            Some(t) => vec![*t],
            None => bail!(
                "no fuzz target {name:?}; one of {}",
                TARGETS.map(|(t, _)| t).join(", ")
            ),
        },
    };
    // The agent's build script needs bpf-linker; cargo-fuzz goes in the same place.
    let tools = setup::ensure(root)?;
    setup::ensure_cargo_fuzz(root, &tools)?;
    let path = format!(
        "{}:{}",
        tools.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fuzz = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.arg("+nightly")
            .arg("fuzz")
            .args(args)
            .current_dir(root)
            .env("PATH", &path);
        // What `cargo run` set for xtask (and CARGO_TARGET_DIR: cargo-fuzz
        // builds in fuzz/target) would make the nested build differ from
        // one run from a shell, and rebuild everything.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if (key.starts_with("CARGO_") && key != "CARGO_HOME")
                || matches!(&*key, "CARGO" | "RUSTC" | "RUSTUP_TOOLCHAIN" | "RUSTFLAGS")
            {
                c.env_remove(&*key);
            }
        }
        c
    };
    eprintln!("+ cargo +nightly fuzz build");
    let status = fuzz(&["build"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("`cargo +nightly fuzz build` failed: {status}");
    }
    let mut outcomes = Vec::new();
    for (target, max_len) in targets {
        outcomes.push(run_target(root, &fuzz, target, max_len, seconds)?);
    }
    eprintln!("\nfuzzing, {seconds} s per target:");
    let mut failed = Vec::new();
    for o in &outcomes {
        let execs = o.executions.map_or("?".into(), |n| n.to_string());
        let rate = match (o.executions, o.seconds) {
            (Some(n), Some(s)) if s > 0 => format!(" ({}/s)", n / s),
            _ => String::new(),
        };
        let result = match (&o.crash, o.success) {
            (Some(input), _) => format!("CRASH, input {input}"),
            (None, true) => "no crash".to_owned(),
            (None, false) => "FAILED (see its output above)".to_owned(),
        };
        eprintln!("  {:<14} {execs:>12} executions{rate}: {result}", o.target);
        if o.crash.is_some() || !o.success {
            failed.push(o.target);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found crashes in {}; reproduce with `cargo +nightly fuzz run TARGET INPUT`",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_target(
    root: &Path,
    fuzz: &dyn Fn(&[&str]) -> Command,
    target: &'static str,
    max_len: usize,
    seconds: u64,
) -> Result<Outcome> {
    // New inputs go to a scratch corpus; the checked-in one is only read.
    let work: PathBuf = root.join("fuzz/target/corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds = root.join("fuzz/corpus").join(target);
    let (work, seeds) = (work.display().to_string(), seeds.display().to_string());
    let max_total_time = format!("-max_total_time={seconds}");
    let max_len = format!("-max_len={max_len}");
    let args = [
        "run",
        target,
        &work,
        &seeds,
        "--",
        &max_total_time,
        &max_len,
        // A single input taking this long is a hang, reported as a crash.
        "-timeout=10",
        "-print_final_stats=1",
    ];
    eprintln!("+ cargo +nightly fuzz {}", args.join(" "));
    let mut child = fuzz(&args)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut outcome = Outcome {
        target,
        executions: None,
        seconds: None,
        crash: None,
        success: false,
    };
    let stderr = child.stderr.take().context("cargo fuzz's stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        eprintln!("{line}");
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            outcome.executions = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 123 runs in 60 second(s)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", secs, ..] = words[..] {
                outcome.executions = outcome.executions.or(runs.parse().ok());
                outcome.seconds = secs.parse().ok();
            }
        } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
            outcome.crash = Some(rest.trim().to_owned());
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    outcome.success = status.success();
    if outcome.seconds.is_none() && outcome.success {
        outcome.seconds = Some(seconds);
    }
    Ok(outcome)
}
