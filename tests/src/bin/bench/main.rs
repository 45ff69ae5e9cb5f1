//! `cargo xtask bench`: overhead of the probes on real workloads, measured
//! as ratios within one run — each case alternates blocks with the probes
//! detached and attached, so machine noise hits both sides alike.
//!
//! These in-process cases are "parts" benches (the probes loaded in this
//! process); `--only agent` runs the release `fdr-agent` binary as users do,
//! side by side with other monitors (`agent_bench`); `--only console` the
//! release `fdr-console` copying from release agents (`console_bench`).
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
    config::Config,
    daemon::{self, SelfFilter},
    event::EventKind,
    util::lock,
};
use serde_json::json;

mod agent_bench;
mod attribution_bench;
mod console_bench;
mod monitors;
mod recorder_bench;
mod ui_bench;

#[derive(Debug, Parser)]
#[command(about = "fdr overhead benchmarks")]
struct Args {
    /// Operations per case and side (attached / detached) for exec; the
    /// cheaper cases run `--scale` times as many.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Multiplier of `--iterations` for the syscall cases.
    #[arg(long, default_value_t = 50)]
    scale: u32,
    /// Blocks each side is split into; sides alternate block by block.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Event kinds to switch off (by name), e.g. to measure the floor cost of
    /// attached programs that report nothing.
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// Rounds of the agent case (each starts every monitor once).
    #[arg(long, default_value_t = 3)]
    agent_rounds: u32,
    /// Execs per block of the agent case; read-only and write opens run 100
    /// times as many, connects 10 times, getppid 2 000 times.
    #[arg(long, default_value_t = 600)]
    agent_iterations: u32,
    /// Seconds of idle measured for fdr in the first round of the agent
    /// case (2 otherwise).
    #[arg(long, default_value_t = 10)]
    agent_idle_secs: u64,
    /// Incident snapshots the agent of the console case holds (ingest).
    #[arg(long, default_value_t = 20)]
    console_snapshots: u32,
    /// Events a snapshot of the console case should hold (the load is
    /// paced for it).
    #[arg(long, default_value_t = 10_000)]
    console_events: u64,
    /// Agents (copies of the database, `fdr-agent --offline`) of the
    /// console case's fan-in.
    #[arg(long, default_value_t = 50)]
    console_agents: u32,
    /// Incident snapshots in the database each agent of the console case's
    /// fan-in serves (the first ones the ingest's agent recorded).
    #[arg(long, default_value_t = 2)]
    console_fan_in_incidents: u32,
    /// Seconds the connected, idle console is measured.
    #[arg(long, default_value_t = 30)]
    console_idle_secs: u64,
    /// Events the snapshot of the ui case holds at least.
    #[arg(long, default_value_t = 100_000)]
    ui_events: u64,
    /// Browser loads (and API queries) of each kind the ui case times.
    #[arg(long, default_value_t = 5)]
    ui_loads: u32,
    /// Only run the cases with these names (exec, open-ro, open-wr, connect,
    /// recorder, attribution, agent, console, ui).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
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

/// A file every open case uses, created once.
fn bench_file() -> &'static std::ffi::CString {
    static FILE: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fdr-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench dir");
        let path = dir.join("data");
        std::fs::write(&path, b"fdr").expect("bench file");
        std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("no NUL")
    })
}

fn open_loop(n: u32, flags: i32) -> Result<()> {
    let path = bench_file();
    for _ in 0..n {
        // SAFETY: a valid path; the descriptor is closed at once.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            bail!("open: {}", std::io::Error::last_os_error());
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn open_read(n: u32) -> Result<()> {
    open_loop(n, libc::O_RDONLY)
}

fn open_write(n: u32) -> Result<()> {
    open_loop(n, libc::O_WRONLY)
}

/// A loopback listener accepting (and dropping) connections forever.
fn listener_addr() -> std::net::SocketAddr {
    static ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bench listener");
        // A deep backlog: connects must never wait for SYN retransmits.
        // SAFETY: a valid listening socket.
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) };
        let addr = l.local_addr().expect("listener address");
        std::thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
        addr
    })
}

fn connect(n: u32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let addr = listener_addr();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for _ in 0..n {
        let s = std::net::TcpStream::connect(addr).context("connect")?;
        // Close with a reset: no TIME_WAIT pile-up to skew later blocks.
        // SAFETY: a valid socket and option struct.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
    }
    Ok(())
}

const CASES: &[Case] = &[
    Case {
        name: "exec",
        what: "fork + exec + wait of /bin/true",
        run: exec_true,
    },
    Case {
        name: "open-ro",
        what: "openat O_RDONLY + close of an ordinary file (filtered in the kernel)",
        run: open_read,
    },
    Case {
        name: "open-wr",
        what: "openat O_WRONLY + close of a file in an uninteresting directory",
        run: open_write,
    },
    Case {
        name: "connect",
        what: "TCP connect + close to a loopback listener",
        run: connect,
    },
];

struct Side {
    wall: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    // Before the overhead cases' agent starts: it records with its own.
    if args.only.is_empty() || args.only.iter().any(|o| o == "attribution") {
        results.push(attribution_bench::run(&rt)?);
    }
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let in_process = ["recorder"]
        .into_iter()
        .chain(CASES.iter().map(|c| c.name))
        .any(selected);
    if in_process {
        results.extend(parts(&args, &rt)?);
    }
    // Alone on the machine: the in-process probes are gone.
    if selected("agent") {
        results.push(agent_bench::run(
            &rt,
            &agent_bench::Opts {
                rounds: args.agent_rounds,
                iterations: args.agent_iterations,
                idle_secs: 2,
                fdr_idle_secs: args.agent_idle_secs,
            },
        )?);
    }
    if selected("console") {
        results.push(console_bench::run(
            &rt,
            &console_bench::Opts {
                snapshots: args.console_snapshots,
                agents: args.console_agents,
                idle_secs: args.console_idle_secs,
                events: args.console_events,
                fan_in_incidents: args.console_fan_in_incidents,
            },
        )?);
    }
    if selected("ui") {
        results.push(ui_bench::run(
            &rt,
            &ui_bench::Opts {
                events: args.ui_events,
                loads: args.ui_loads,
            },
        )?);
    }
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let doc = json!({
        "rounds": args.rounds,
        "disabled_kinds": args.disable,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cases": results,
    });
    std::fs::write(&args.output, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("results written to {}", args.output.display());
    Ok(())
}

/// The in-process ("parts") cases: the probes loaded in this process.
fn parts(args: &Args, rt: &tokio::runtime::Runtime) -> Result<Vec<serde_json::Value>> {
    let mut results = Vec::new();
    let dir = std::env::temp_dir().join(format!("fdr-bench-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.api.socket = dir.join("fdr.sock");
    cfg.capture.disabled_kinds = args.disable.clone();
    // The workload runs in this process: record its forks too.
    let running = rt.block_on(daemon::start(&cfg, SelfFilter::RecordAll))?;
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

    if args.only.is_empty() || args.only.iter().any(|o| o == "recorder") {
        results.push(recorder_bench::run()?);
    }
    println!(
        "{:<8} {:>8} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "CASE", "OPS", "DETACHED", "ATTACHED", "RATIO", "EVENTS", "DROPS"
    );
    for case in CASES
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
    {
        // Warm up caches and the page cache of the binaries.
        set_attached(false)?;
        (case.run)(args.iterations / 10 + 1)?;
        // Rings drained before counting.
        std::thread::sleep(Duration::from_millis(50));
        let drops_before = total_drops(&state);
        let seen_before = total_seen(&state);
        let total = match case.name {
            "exec" => args.iterations,
            // Each connection is a round trip through the loopback stack.
            "connect" => args.iterations * args.scale / 10,
            _ => args.iterations * args.scale,
        };
        let block = (total / args.rounds).max(1);
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
    Ok(results)
}

fn total_drops(state: &fdr_agent::api::state::State) -> u64 {
    state.kernel_drops().iter().map(|(_, n)| n).sum()
}

fn total_seen(state: &fdr_agent::api::state::State) -> u64 {
    EventKind::ALL.iter().map(|&k| state.counters.seen(k)).sum()
}
