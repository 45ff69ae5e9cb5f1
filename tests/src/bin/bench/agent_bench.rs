//! `--only agent`: the release `fdr-agent` as a user runs it (default
//! configuration; only its socket and data directory in a temporary
//! directory), side by side with no monitor, `execsnoop`, `opensnoop` and
//! `bpftrace`, on the same workloads.
//!
//! Each round starts every monitor in turn (the order rotates by round, so
//! the VM's noise spreads over all of them), measures its idle CPU, then
//! runs one block of each workload. Per operation it reports the run time
//! of the monitor's own BPF programs (the kernel's BPF statistics, by
//! program id) and the CPU of the monitor's processes (a cgroup v2 of its
//! own), both less their rate in quiet windows around the block (other
//! load on the machine runs the programs too; median of four parts); the
//! workload's own CPU above no monitor's in the same round (the programs
//! run in its context: a figure other load hardly moves); and the
//! wall-clock ratio against no monitor in the same round. The CPU figures
//! are the ones to trust on a shared machine: the wall clock moves with
//! other load.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::monitors::{self, Kind, Monitor};

/// How much the case runs.
pub struct Opts {
    pub rounds: u32,
    /// Execs per block; the other workloads scale from it.
    pub iterations: u32,
    /// Idle measurement of the peers (seconds).
    pub idle_secs: u64,
    /// Idle measurement of fdr in the first round (seconds).
    pub fdr_idle_secs: u64,
}

/// One workload.
struct Op {
    name: &'static str,
    label: &'static str,
    run: fn(u32) -> Result<()>,
    /// Operations per block, from `--agent-iterations`.
    per_iteration: u32,
}

fn getppid(n: u32) -> Result<()> {
    for _ in 0..n {
        // SAFETY: no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    Ok(())
}

const OPS: &[Op] = &[
    Op {
        name: "exec",
        label: "exec",
        run: crate::exec_true,
        per_iteration: 1,
    },
    Op {
        name: "open-ro",
        label: "read-only open+close",
        run: crate::open_read,
        per_iteration: 100,
    },
    Op {
        name: "open-wr",
        label: "write-open+close",
        run: crate::open_write,
        per_iteration: 100,
    },
    Op {
        name: "connect",
        label: "connect",
        run: crate::connect,
        per_iteration: 10,
    },
    Op {
        name: "getppid",
        label: "getppid",
        run: getppid,
        per_iteration: 2000,
    },
];

/// The counters of a monitor at one instant.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_usec: u64,
    bpf_ns: u64,
    bpf_runs: u64,
}

fn sample(m: &Monitor) -> Sample {
    let (bpf_ns, bpf_runs) = m.bpf();
    Sample {
        at: Instant::now(),
        cpu_usec: m.cpu_usec(),
        bpf_ns,
        bpf_runs,
    }
}

/// Per-second rates between two samples.
#[derive(Clone, Copy, Default)]
struct Rates {
    cpu_usec: f64,
    bpf_ns: f64,
    bpf_runs: f64,
}

/// The quiet windows around each part of a workload block.
const BRACKET: Duration = Duration::from_millis(300);
/// Parts a workload block is split into.
const PARTS: u32 = 4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The rates over two windows together.
fn rates2(w1: (Sample, Sample), w2: (Sample, Sample)) -> Rates {
    let (a, b) = (rates(w1.0, w1.1), rates(w2.0, w2.1));
    let (s1, s2) = (
        (w1.1.at - w1.0.at).as_secs_f64(),
        (w2.1.at - w2.0.at).as_secs_f64(),
    );
    let mix = |x: f64, y: f64| (x * s1 + y * s2) / (s1 + s2).max(1e-9);
    Rates {
        cpu_usec: mix(a.cpu_usec, b.cpu_usec),
        bpf_ns: mix(a.bpf_ns, b.bpf_ns),
        bpf_runs: mix(a.bpf_runs, b.bpf_runs),
    }
}

fn rates(a: Sample, b: Sample) -> Rates {
    let s = (b.at - a.at).as_secs_f64().max(1e-9);
    Rates {
        cpu_usec: b.cpu_usec.saturating_sub(a.cpu_usec) as f64 / s,
        bpf_ns: b.bpf_ns.saturating_sub(a.bpf_ns) as f64 / s,
        bpf_runs: b.bpf_runs.saturating_sub(a.bpf_runs) as f64 / s,
    }
}

/// Waits until the monitor's CPU falls back to `idle_usec_per_s` plus 2 %
/// of a core for 0.2 s (it has drained what the workload left), at most
/// `max`.
fn wait_quiet(m: &Monitor, idle_usec_per_s: f64, max: Duration) {
    if m.kind == Kind::None {
        return;
    }
    let step = Duration::from_millis(100);
    let limit = idle_usec_per_s * step.as_secs_f64() + 0.02 * step.as_micros() as f64;
    let t = Instant::now();
    let mut quiet = 0;
    let mut last = m.cpu_usec();
    while quiet < 2 && t.elapsed() < max {
        std::thread::sleep(step);
        let now = m.cpu_usec();
        if (now.saturating_sub(last) as f64) <= limit {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
}

/// One workload block under one monitor.
struct OpRun {
    n: u32,
    wall: Duration,
    /// Per operation, idle rates subtracted.
    cpu_us: f64,
    bpf_ns: f64,
    bpf_runs: f64,
    /// CPU of the workload itself (this process and its children).
    work_us: f64,
}

/// CPU time (user + system) of this process and its waited-for children
/// (µs): the workload's own cost, which the monitors' programs add to (they
/// run in its context), free of the other load on the machine.
fn workload_cpu_us() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: a plain struct the kernel fills.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            for tv in [ru.ru_utime, ru.ru_stime] {
                total += tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
            }
        }
    }
    total
}

/// One monitor started, idle, run through every workload, stopped.
struct Run {
    kind: Kind,
    round: u32,
    attach: Duration,
    detach: Duration,
    progs: usize,
    idle_secs: f64,
    idle_cpu_pct: f64,
    idle_bpf_runs_per_s: f64,
    rss_idle_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    ops: Vec<OpRun>,
    /// fdr: kernel drops (GetStats); peers: lost events they printed.
    drops: Option<u64>,
    /// Peers: lines of output.
    lines: Option<u64>,
    /// fdr: GetStats figures after the workloads.
    bytes_per_event: Option<f64>,
    events_per_mib: Option<f64>,
    buffered_events: Option<u64>,
    events_seen: Option<u64>,
}

pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FDR_AGENT_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fdr-agent")))
        .unwrap_or_else(|| PathBuf::from("fdr-agent"))
}

fn kernel_drops(s: &fdr_proto::v1::Stats) -> u64 {
    s.kinds.iter().map(|k| k.kernel_drops).sum()
}

fn one_run(
    kind: Kind,
    round: u32,
    opts: &Opts,
    agent: &Path,
    base: &Path,
    cgroups: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<Run> {
    let tag = format!("{}-{round}", kind.name());
    let dir = base.join(&tag);
    std::fs::create_dir_all(&dir)?;
    let m = Monitor::start(kind, agent, &dir, &cgroups.join(&tag), rt)?;
    // Settle (an agent reads /proc, resolves watched files at start), then
    // the idle rates.
    wait_quiet(&m, 0.0, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    let idle_secs = match kind {
        Kind::None => 0,
        Kind::Fdr if round == 0 => opts.fdr_idle_secs,
        _ => opts.idle_secs,
    };
    let a = sample(&m);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let b = sample(&m);
    let idle = if kind == Kind::None {
        Rates::default()
    } else {
        rates(a, b)
    };
    let rss_idle_kib = m.rss_kib();
    // Other load on the machine runs the monitor's programs too (and feeds
    // it events): each block is split in parts, each part's figures are
    // less the rate of the quiet windows just before and after it, and the
    // median part is kept (a burst of other load spoils one part, not the
    // figure).
    let quiet_window = |m: &Monitor| {
        let a = sample(m);
        if kind != Kind::None {
            std::thread::sleep(BRACKET);
        }
        (a, sample(m))
    };
    let mut before = quiet_window(&m);
    let mut ops = Vec::new();
    for op in OPS {
        let n = (op.per_iteration * opts.iterations / PARTS).max(1);
        let mut wall = Duration::ZERO;
        let mut parts = Vec::new();
        for _ in 0..PARTS {
            let s0 = sample(&m);
            let w0 = workload_cpu_us();
            let t = Instant::now();
            (op.run)(n).with_context(|| format!("{} under {}", op.name, kind.name()))?;
            wall += t.elapsed();
            let work = (workload_cpu_us() - w0) / n as f64;
            wait_quiet(&m, idle.cpu_usec, Duration::from_secs(2));
            let s1 = sample(&m);
            let after = quiet_window(&m);
            let bg = if kind == Kind::None {
                Rates::default()
            } else {
                rates2(before, after)
            };
            before = after;
            let window = (s1.at - s0.at).as_secs_f64();
            let per = |delta: u64, rate: f64| (delta as f64 - rate * window) / n as f64;
            parts.push([
                per(s1.cpu_usec.saturating_sub(s0.cpu_usec), bg.cpu_usec),
                per(s1.bpf_ns.saturating_sub(s0.bpf_ns), bg.bpf_ns),
                per(s1.bpf_runs.saturating_sub(s0.bpf_runs), bg.bpf_runs),
                work,
            ]);
        }
        let median = |i: usize| median(parts.iter().map(|p| p[i]).collect());
        ops.push(OpRun {
            n: n * PARTS,
            wall,
            cpu_us: median(0),
            bpf_ns: median(1),
            bpf_runs: median(2),
            work_us: median(3),
        });
    }
    let rss_after_kib = m.rss_kib();
    let stats = if kind == Kind::Fdr {
        Some(rt.block_on(monitors::stats(&m.socket))?)
    } else {
        None
    };
    let progs = m.progs.len();
    let attach = m.attach;
    let output = m.output.clone();
    let detach = m.stop()?;
    let (drops, lines) = match kind {
        Kind::None => (None, None),
        Kind::Fdr => (stats.as_ref().map(kernel_drops), None),
        _ => {
            let lines = monitors::line_count(&output);
            if lines == 0 {
                eprintln!("warning: {} captured nothing", kind.name());
            }
            (Some(monitors::lost_in_output(&output)), Some(lines))
        }
    };
    let buffers = stats.as_ref().and_then(|s| s.buffers);
    let bytes_per_event = buffers
        .filter(|b| b.events > 0)
        .map(|b| b.bytes as f64 / b.events as f64);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run {
        kind,
        round,
        attach,
        detach,
        progs,
        idle_secs: (b.at - a.at).as_secs_f64(),
        idle_cpu_pct: idle.cpu_usec / 1e4,
        idle_bpf_runs_per_s: idle.bpf_runs,
        rss_idle_kib,
        rss_after_kib,
        ops,
        drops,
        lines,
        bytes_per_event,
        events_per_mib: bytes_per_event.map(|b| 1048576.0 / b),
        buffered_events: buffers.map(|b| b.events),
        events_seen: stats.as_ref().map(|s| s.kinds.iter().map(|k| k.seen).sum()),
    })
}

/// Runs the case; returns its entry of `results.json`.
pub fn run(rt: &tokio::runtime::Runtime, opts: &Opts) -> Result<Value> {
    let agent = agent_binary();
    let _stats = monitors::enable_stats()?;
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| match k.missing(&agent) {
            Some(why) if *k == Kind::Fdr => {
                eprintln!("fdr: {why}");
                false
            }
            Some(why) => {
                println!("{}: {why}", k.name());
                false
            }
            None => true,
        })
        .collect();
    anyhow::ensure!(
        kinds.contains(&Kind::Fdr),
        "{} missing: `cargo xtask bench` builds it (cargo build --release -p fdr-agent)",
        agent.display()
    );
    let base = std::env::temp_dir().join(format!("fdr-agent-bench-{}", std::process::id()));
    let root = fdr_tests::cgroup2_root();
    monitors::remove_stale(&root, "fdr-bench-");
    monitors::remove_stale(&std::env::temp_dir(), "fdr-agent-bench-");
    let cgroups = root.join(format!("fdr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cgroups)?;
    // Warm the page cache, the listener, the file.
    for op in OPS {
        (op.run)(op.per_iteration * opts.iterations / 20 + 1)?;
    }
    let mut runs = Vec::new();
    let started = Instant::now();
    let result = (|| -> Result<()> {
        for round in 0..opts.rounds {
            for i in 0..kinds.len() {
                let kind = kinds[(i + round as usize) % kinds.len()];
                let r = one_run(kind, round, opts, &agent, &base, &cgroups, rt)?;
                println!(
                    "agent bench: round {round} {:<9} attach {:>6.0} ms, detach {:>5.0} ms, {}",
                    kind.name(),
                    r.attach.as_secs_f64() * 1e3,
                    r.detach.as_secs_f64() * 1e3,
                    r.ops
                        .iter()
                        .zip(OPS)
                        .map(|(o, op)| format!(
                            "{} {:.0} ns + {:.2} µs",
                            op.name, o.bpf_ns, o.cpu_us
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                runs.push(r);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir(&cgroups);
    result?;
    print_table(&kinds, &runs, opts);
    println!(
        "agent bench: {} rounds in {:.0} s",
        opts.rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(to_json(&kinds, &runs, opts))
}

fn range(v: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    v.into_iter().fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// A time in ns, in ns or µs as fits. A negative figure (the block cost
/// less than the noise of the quiet windows around it) shows as 0.
fn fmt_ns(ns: f64) -> String {
    let ns = ns.max(0.0);
    if ns.abs() < 1000.0 {
        format!("{ns:.0} ns")
    } else if ns.abs() < 100_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.0} µs", ns / 1e3)
    }
}

fn fmt_range(r: Option<(f64, f64)>, f: impl Fn(f64) -> String) -> String {
    match r {
        None => "–".into(),
        Some((lo, hi)) if f(lo) == f(hi) => f(lo),
        Some((lo, hi)) => {
            let (a, b) = (f(lo), f(hi));
            // "1.2 µs–1.5 µs" → "1.2–1.5 µs"
            match (a.rsplit_once(' '), b.rsplit_once(' ')) {
                (Some((x, u1)), Some((y, u2))) if u1 == u2 => format!("{x}–{y} {u1}"),
                _ => format!("{a}–{b}"),
            }
        }
    }
}

fn runs_of(runs: &[Run], kind: Kind) -> impl Iterator<Item = &Run> + Clone {
    runs.iter().filter(move |r| r.kind == kind)
}

/// The wall-clock ratios of `kind` against no monitor, round by round.
fn wall_ratios(runs: &[Run], kind: Kind, op: usize) -> Vec<f64> {
    runs_of(runs, kind)
        .filter_map(|r| {
            let none = runs
                .iter()
                .find(|n| n.kind == Kind::None && n.round == r.round)?;
            Some(r.ops[op].wall.as_secs_f64() / none.ops[op].wall.as_secs_f64())
        })
        .collect()
}

/// The workload's extra CPU per operation (ns) under `kind`, against no
/// monitor in the same round.
fn work_deltas(runs: &[Run], kind: Kind, op: usize) -> Vec<f64> {
    runs_of(runs, kind)
        .filter_map(|r| {
            let none = runs
                .iter()
                .find(|n| n.kind == Kind::None && n.round == r.round)?;
            Some((r.ops[op].work_us - none.ops[op].work_us) * 1e3)
        })
        .collect()
}

fn print_table(kinds: &[Kind], runs: &[Run], opts: &Opts) {
    let mut head = vec!["monitor", "per op"];
    head.extend(OPS.iter().map(|o| o.label));
    head.extend(["idle CPU", "RSS idle"]);
    println!();
    println!("| {} |", head.join(" | "));
    println!("|{}", "---|".repeat(head.len()));
    for &kind in kinds {
        let rs = runs_of(runs, kind);
        let idle = if kind == Kind::None {
            "–".to_string()
        } else {
            fmt_range(range(rs.clone().map(|r| r.idle_cpu_pct)), |p| {
                format!("{:.2} %", p.max(0.0))
            })
        };
        let rss = fmt_range(
            range(rs.clone().filter_map(|r| r.rss_idle_kib).map(|k| k as f64)),
            |k| format!("{:.0} MB", k * 1024.0 / 1e6),
        );
        let row = |what: &str, cells: Vec<String>, first: bool| {
            let (i, r) = if first {
                (idle.as_str(), rss.as_str())
            } else {
                ("", "")
            };
            println!(
                "| {} | {what} | {} | {i} | {r} |",
                if first { kind.label() } else { "" },
                cells.join(" | ")
            );
        };
        let per_op = |f: &dyn Fn(&OpRun) -> f64, fmt: &dyn Fn(f64) -> String| {
            (0..OPS.len())
                .map(|i| fmt_range(range(rs.clone().map(|r| f(&r.ops[i]))), fmt))
                .collect::<Vec<_>>()
        };
        if kind == Kind::None {
            row(
                "wall clock",
                per_op(&|o| o.wall.as_secs_f64() * 1e9 / o.n as f64, &fmt_ns),
                true,
            );
            row("workload CPU", per_op(&|o| o.work_us * 1e3, &fmt_ns), false);
            continue;
        }
        row("BPF", per_op(&|o| o.bpf_ns, &fmt_ns), true);
        row("process", per_op(&|o| o.cpu_us * 1e3, &fmt_ns), false);
        row(
            "workload CPU +",
            (0..OPS.len())
                .map(|i| fmt_range(range(work_deltas(runs, kind, i)), fmt_ns))
                .collect(),
            false,
        );
        row(
            "wall ×",
            (0..OPS.len())
                .map(|i| fmt_range(range(wall_ratios(runs, kind, i)), |x| format!("{x:.2}")))
                .collect(),
            false,
        );
    }
    println!();
    println!(
        "(ranges over {} rounds; per block: {}; BPF = run time of the monitor's own \
         programs, process = CPU of its cgroup, both less their rate in the 0.3 s quiet windows \
         around each quarter of a block, median quarter; below 0 shown as 0; workload CPU + = the workload's own CPU \
         (its processes: the programs run in their context) above no monitor's; idle CPU over \
         {} s for fdr's first round, {} s otherwise)",
        opts.rounds,
        OPS.iter()
            .map(|o| format!("{} {}", o.per_iteration * opts.iterations, o.name))
            .collect::<Vec<_>>()
            .join(", "),
        opts.fdr_idle_secs,
        opts.idle_secs,
    );
    for &kind in kinds.iter().filter(|&&k| k != Kind::None) {
        let rs = runs_of(runs, kind);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut line = format!(
            "{}: attach {}, detach {}",
            kind.name(),
            fmt_range(range(rs.clone().map(|r| ms(r.attach))), |x| format!(
                "{x:.0} ms"
            )),
            fmt_range(range(rs.clone().map(|r| ms(r.detach))), |x| format!(
                "{x:.0} ms"
            )),
        );
        let drops = range(rs.clone().filter_map(|r| r.drops).map(|d| d as f64));
        line += &format!(", drops {}", fmt_range(drops, |d| format!("{d:.0}")));
        if kind == Kind::Fdr {
            line += &format!(
                ", RSS after the workloads {}, {} bytes per buffered event ({} events per MiB), \
                 {} events seen a run",
                fmt_range(
                    range(rs.clone().filter_map(|r| r.rss_after_kib).map(|k| k as f64)),
                    |k| format!("{:.0} MB", k * 1024.0 / 1e6)
                ),
                fmt_range(range(rs.clone().filter_map(|r| r.bytes_per_event)), |b| {
                    format!("{b:.0}")
                }),
                fmt_range(range(rs.clone().filter_map(|r| r.events_per_mib)), |b| {
                    format!("{b:.0}")
                }),
                fmt_range(
                    range(rs.clone().filter_map(|r| r.events_seen).map(|e| e as f64)),
                    |e| format!("{e:.0}")
                ),
            );
        } else {
            line += &format!(
                ", output lines {}",
                fmt_range(
                    range(rs.clone().filter_map(|r| r.lines).map(|e| e as f64)),
                    |e| format!("{e:.0}")
                )
            );
        }
        println!("{line}");
    }
}

fn to_json(kinds: &[Kind], runs: &[Run], opts: &Opts) -> Value {
    let monitors: Vec<Value> = kinds
        .iter()
        .map(|&kind| {
            let rs: Vec<Value> = runs_of(runs, kind)
                .map(|r| {
                    let ops: serde_json::Map<String, Value> = OPS
                        .iter()
                        .zip(&r.ops)
                        .map(|(op, o)| {
                            let none = runs
                                .iter()
                                .find(|n| n.kind == Kind::None && n.round == r.round);
                            (
                                op.name.to_string(),
                                json!({
                                    "operations": o.n,
                                    "wall_ns_per_op": o.wall.as_secs_f64() * 1e9 / o.n as f64,
                                    "wall_ratio_vs_none": none.map(|n| o.wall.as_secs_f64()
                                        / n.ops.iter().zip(OPS).find(|(_, p)| p.name == op.name)
                                            .map(|(x, _)| x.wall.as_secs_f64()).unwrap_or(f64::NAN)),
                                    "bpf_ns_per_op": o.bpf_ns,
                                    "bpf_runs_per_op": o.bpf_runs,
                                    "process_cpu_us_per_op": o.cpu_us,
                                    "workload_cpu_us_per_op": o.work_us,
                                }),
                            )
                        })
                        .collect();
                    json!({
                        "round": r.round,
                        "attach_ms": r.attach.as_secs_f64() * 1e3,
                        "detach_ms": r.detach.as_secs_f64() * 1e3,
                        "bpf_programs": r.progs,
                        "idle_seconds": r.idle_secs,
                        "idle_cpu_percent": r.idle_cpu_pct,
                        "idle_bpf_runs_per_s": r.idle_bpf_runs_per_s,
                        "rss_idle_kib": r.rss_idle_kib,
                        "rss_after_workloads_kib": r.rss_after_kib,
                        "drops": r.drops,
                        "output_lines": r.lines,
                        "bytes_per_buffered_event": r.bytes_per_event,
                        "events_per_mib": r.events_per_mib,
                        "buffered_events": r.buffered_events,
                        "events_seen": r.events_seen,
                        "ops": ops,
                    })
                })
                .collect();
            json!({ "monitor": kind.name(), "label": kind.label(), "runs": rs })
        })
        .collect();
    json!({
        "case": "agent",
        "what": "the release fdr-agent (default config) and peers, CPU per operation",
        "rounds": opts.rounds,
        "operations_per_block": OPS.iter()
            .map(|o| (o.name.to_string(), json!(o.per_iteration * opts.iterations)))
            .collect::<serde_json::Map<_, _>>(),
        "monitors": monitors,
    })
}
