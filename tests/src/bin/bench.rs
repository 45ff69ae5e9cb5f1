//! `cargo xtask bench`: overhead of the probes on real workloads, measured
//! as ratios within one run — each case alternates blocks with the probes
//! detached and attached, so machine noise hits both sides alike.
//!
//! Writes `target/bench/results.json` (or `--output`) and prints a table.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fdr_agent::{
    agent::{self, SelfFilter},
    config::Config,
    event::EventKind,
    state::lock,
};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "fdr overhead benchmarks")]
struct Args {
    /// Operations per case and side (attached / detached).
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Blocks each side is split into; sides alternate block by block.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    output: PathBuf,
}

/// One workload: `run(n)` performs `n` operations.
struct Case {
    name: &'static str,
    what: &'static str,
    run: fn(u32) -> Result<()>,
}

fn exec_true(n: u32) -> Result<()> {
    for _ in 0..n {
        let st = Command::new("/bin/true")
            .status()
            .context("spawning /bin/true")?;
        if !st.success() {
            bail!("/bin/true failed: {st}");
        }
    }
    Ok(())
}

const CASES: &[Case] = &[Case {
    name: "exec",
    what: "fork + exec + wait of /bin/true",
    run: exec_true,
}];

struct Side {
    wall: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("fdr-bench-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.api.socket = dir.join("fdr.sock");
    // The workload runs in this process: record its forks too.
    let running = rt.block_on(agent::start(&cfg, SelfFilter::RecordAll))?;
    let state = running.state.clone();
    let set_attached = |on: bool| -> Result<()> {
        let mut probes = lock(&state.probes);
        let p = probes.as_mut().context("probes loaded")?;
        if on {
            p.attach()?;
        } else {
            p.detach()?;
        }
        Ok(())
    };

    let mut results = Vec::new();
    println!(
        "{:<8} {:>8} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "CASE", "OPS", "DETACHED", "ATTACHED", "RATIO", "EVENTS", "DROPS"
    );
    for case in CASES {
        // Warm up caches and the page cache of the binaries.
        set_attached(false)?;
        (case.run)(args.iterations / 10 + 1)?;
        let drops_before = total_drops(&state);
        let seen_before = total_seen(&state);
        let block = (args.iterations / args.rounds).max(1);
        let (mut off, mut on) = (
            Side {
                wall: Duration::ZERO,
            },
            Side {
                wall: Duration::ZERO,
            },
        );
        for round in 0..args.rounds {
            // Alternate which side goes first, so drift cancels out.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for attached in order {
                set_attached(attached)?;
                let t = Instant::now();
                (case.run)(block)?;
                let d = t.elapsed();
                if attached {
                    on.wall += d
                } else {
                    off.wall += d
                }
            }
        }
        set_attached(true)?;
        // Let the pipeline drain before reading the counters.
        std::thread::sleep(Duration::from_millis(300));
        let drops = total_drops(&state) - drops_before;
        let events = total_seen(&state) - seen_before;
        let ops = block * args.rounds;
        let ratio = on.wall.as_secs_f64() / off.wall.as_secs_f64();
        println!(
            "{:<8} {:>8} {:>10.1}µs {:>10.1}µs {:>8.3} {:>10} {:>8}",
            case.name,
            ops,
            off.wall.as_secs_f64() * 1e6 / ops as f64,
            on.wall.as_secs_f64() * 1e6 / ops as f64,
            ratio,
            events,
            drops
        );
        results.push(json!({
            "case": case.name,
            "what": case.what,
            "operations_per_side": ops,
            "detached_us_per_op": off.wall.as_secs_f64() * 1e6 / ops as f64,
            "attached_us_per_op": on.wall.as_secs_f64() * 1e6 / ops as f64,
            "ratio": ratio,
            "events_recorded": events,
            "kernel_drops": drops,
        }));
    }
    rt.block_on(running.shutdown())?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let doc = json!({
        "rounds": args.rounds,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cases": results,
    });
    std::fs::write(&args.output, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("results written to {}", args.output.display());
    Ok(())
}

fn total_drops(state: &fdr_agent::state::State) -> u64 {
    state.kernel_drops().iter().map(|(_, n)| n).sum()
}

fn total_seen(state: &fdr_agent::state::State) -> u64 {
    EventKind::ALL.iter().map(|&k| state.counters.seen(k)).sum()
}
