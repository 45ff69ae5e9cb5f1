//! The pipeline's own per-record step (`daemon::flow::Step`, what the
//! agent runs), with runtime models off and on, and two of its parts
//! (decode; decode + attribution), replayed on one core over kernel
//! records recorded from a real workload (the agent's `record_raw` tap):
//! events per second, and the models' cost per event.

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use fdr_agent::{
    api::state::{Parts, State},
    attribution::{containers::ContainerRegistry, scope::ScopeResolver},
    config::{AnalysisConfig, Config},
    daemon::{
        self,
        flow::{PipelineConfig, Step},
        SelfFilter,
    },
    pipeline::decode::decode,
    process::table::ProcessTable,
    recorder::{
        snapshot::{Snapshots, Window},
        Limits, ScopeBuffers,
    },
    store::{Retention, Store},
};
use serde_json::{json, Value};

/// Events replayed per measured pass (the recording, repeated).
const REPLAY_EVENTS: usize = 2_000_000;

/// A mixed workload: per round, a file written, renamed, a sensitive file
/// read, two programs run; and a burst of TCP connections.
fn workload(port: u16) -> Result<()> {
    let script = r#"
d=$(mktemp -d)
i=0
while [ $i -lt 400 ]; do
  echo $i > $d/f$i
  cat /etc/passwd > /dev/null
  mv $d/f$i $d/g$i
  i=$((i+1))
done
rm -rf $d
"#;
    let st = Command::new("/bin/sh").args(["-c", script]).status()?;
    if !st.success() {
        bail!("workload script failed: {st}");
    }
    let py = format!(
        "import socket\nfor _ in range(1000): socket.create_connection(('127.0.0.1', {port})).close()"
    );
    let st = Command::new("python3").args(["-c", &py]).status()?;
    if !st.success() {
        bail!("connect workload failed: {st}");
    }
    Ok(())
}

/// Records the raw kernel records of the workload.
fn record(rt: &tokio::runtime::Runtime, dir: &Path) -> Result<Vec<Vec<u8>>> {
    let file = dir.join("records.raw");
    let mut cfg = Config::default();
    cfg.api.socket = dir.join("rec.sock");
    cfg.recorder.data_dir = dir.join("rec-data");
    cfg.probes.record_raw = Some(file.clone());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let running = rt.block_on(daemon::start(&cfg, SelfFilter::RecordAll))?;
    workload(port)?;
    std::thread::sleep(Duration::from_millis(100));
    rt.block_on(running.shutdown())?;
    let bytes = std::fs::read(&file).context("reading the recorded records")?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            break;
        }
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// What is measured per record: the decoder alone and decode +
/// attribution (parts, labelled so), or the pipeline's own step
/// ([`Step::replay`], as the agent runs it) with the models off or on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Part: `decode` alone.
    Decode,
    /// Part: decode, process table and scope.
    Attribute,
    /// The whole step, analysis disabled.
    StepNoModels,
    /// The whole step, as the agent runs it by default.
    Step,
}

/// Records per call of the step: about one pass over the rings.
const PASS: usize = 1024;

fn replay(records: &[Vec<u8>], stage: Stage, state: &Arc<State>) -> Result<f64> {
    let mut procs = ProcessTable::default();
    let mut scopes = ScopeResolver::new();
    let mut cfg = Config::default();
    cfg.analysis.enabled = stage != Stage::StepNoModels;
    if std::env::var_os("FDR_BENCH_NO_RULES").is_some() {
        cfg.analysis.rules.clear();
    }
    let (wake, _wake_rx) = tokio::sync::mpsc::channel(1);
    let mut step = Step::new(state.clone(), &PipelineConfig::from_config(&cfg), wake)
        .context("the pipeline's step")?;
    let mut one_pass = |stage: Stage| -> usize {
        match stage {
            Stage::Decode => records
                .iter()
                .filter_map(|raw| decode(raw).ok())
                .map(|r| std::hint::black_box(r.boot_ns) as usize & 1)
                .sum(),
            Stage::Attribute => records
                .iter()
                .filter_map(|raw| decode(raw).ok())
                .map(|rec| {
                    let image = procs.apply(&rec);
                    let who = scopes.resolve(rec.task.cgroup_id);
                    std::hint::black_box((&image, &who.scope));
                    1
                })
                .sum(),
            Stage::Step | Stage::StepNoModels => {
                for chunk in records.chunks(PASS) {
                    step.replay(chunk.iter().map(Vec::as_slice));
                }
                records.len()
            }
        }
    };
    // Warm-up pass: caches filled, models learned (steady state).
    one_pass(stage);
    let passes = REPLAY_EVENTS.div_ceil(records.len().max(1));
    let t = Instant::now();
    for _ in 0..passes {
        one_pass(stage);
    }
    let n = passes * records.len();
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn bench_state(dir: &Path) -> Result<Arc<State>> {
    let store = Arc::new(Store::open(
        &dir.join("replay-data"),
        Retention {
            max_snapshots: 10,
            max_bytes: 1 << 30,
        },
    )?);
    let mut acfg = AnalysisConfig::default();
    if std::env::var_os("FDR_BENCH_NO_RULES").is_some() {
        acfg.rules.clear();
    }
    let (models, incidents) = fdr_agent::analysis::restore(&store, &acfg, 0)?;
    Ok(Arc::new(State::new(Parts {
        buffers: ScopeBuffers::new(Limits {
            scope_quota: 1 << 20,
            critical_reserve: 0,
            budget: 1 << 20,
            grace_ns: u64::MAX,
        }),
        snapshots: Snapshots::new(
            store.clone(),
            Window {
                before_ns: 1,
                after_ns: 1,
            },
        ),
        stream_queue: 16,
        stream_queue_bytes: 1 << 20,
        procs: ProcessTable::default(),
        containers: ContainerRegistry::new(Duration::from_secs(60)),
        ancestry_depth: 16,
        ring_bytes: 0,
        critical_ring_bytes: 0,
        store,
        models,
        incidents,
    })))
}

pub fn run(rt: &tokio::runtime::Runtime) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("fdr-bench-attr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let records = record(rt, &dir)?;
    if records.is_empty() {
        bail!("no records were recorded");
    }
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for raw in &records {
        if let Ok(r) = decode(raw) {
            *kinds.entry(r.detail.kind().name()).or_default() += 1;
        }
    }
    let state = bench_state(&dir)?;
    let decode_rate = replay(&records, Stage::Decode, &state)?;
    let attr_rate = replay(&records, Stage::Attribute, &state)?;
    let plain_rate = replay(&records, Stage::StepNoModels, &state)?;
    let full_rate = replay(&records, Stage::Step, &state)?;
    let model_ns = 1e9 / full_rate - 1e9 / plain_rate;
    // The recorded mix as buffered (the step's buffers are full after the
    // replays: every push evicts), and how long the default 16 MiB host
    // quota holds it at the rate it was recorded.
    let buffered = {
        let st = fdr_agent::util::lock(&state.buffers).stats();
        st.bytes as f64 / st.events.max(1) as f64
    };
    let (lo, hi) = records
        .iter()
        .filter_map(|r| decode(r).ok())
        .fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.boot_ns), hi.max(r.boot_ns))
        });
    let recorded_rate = records.len() as f64 / (hi.saturating_sub(lo) as f64 / 1e9).max(1e-3);
    let window_min = f64::from(16u32 << 20) / buffered / recorded_rate / 60.0;
    println!(
        "  buffered: {buffered:.1} bytes per event ({:.0} per MiB); recorded at {recorded_rate:.0} events/s, the default 16 MiB host quota holds {window_min:.1} min of it",
        f64::from(1u32 << 20) / buffered
    );
    println!(
        "replay of {} recorded records ({kinds:?}), one core:\n  parts: decode {:.2} M/s, decode+attribution {:.2} M/s\n  the pipeline's step: models off {:.2} M/s, models on {:.2} M/s ({:.0} ns/event for models)",
        records.len(),
        decode_rate / 1e6,
        attr_rate / 1e6,
        plain_rate / 1e6,
        full_rate / 1e6,
        model_ns,
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "case": "attribution",
        "recorded_records": records.len(),
        "mix": kinds,
        "decode_per_s": decode_rate,
        "decode_attribution_per_s": attr_rate,
        "step_without_models_per_s": plain_rate,
        "model_ns_per_event": model_ns,
        "full_pipeline_per_s": full_rate,
        "bytes_per_buffered_event": buffered,
        "recorded_events_per_s": recorded_rate,
        "default_host_window_min": window_min,
        "target_per_s": 1_000_000,
    }))
}
