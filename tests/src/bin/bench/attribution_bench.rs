//! Decode + attribution, and the pipeline with runtime models on, replayed
//! on one core over kernel records recorded from a real workload (the
//! agent's `record_raw` tap): events per second, and the models' cost per
//! event.

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use fdr_agent::{
    agent::{self, SelfFilter},
    analysis::Analyzer,
    config::{AnalysisConfig, Config},
    containers::ContainerRegistry,
    decode::decode,
    derive::Deriver,
    event::{Event, Record},
    proctable::ProcessTable,
    recorder::{
        snapshot::{Snapshots, Window},
        store::{Retention, Store},
        Limits, ScopeBuffers,
    },
    scope::ScopeResolver,
    state::{Parts, State},
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
    let running = rt.block_on(agent::start(&cfg, SelfFilter::RecordAll))?;
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

/// What the pipeline does per record, up to `stage`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Decode,
    Attribute,
    Models,
    Derive,
    Full,
}

struct Replay {
    procs: ProcessTable,
    scopes: ScopeResolver,
    deriver: Deriver,
    analyzer: Analyzer,
    buffers: ScopeBuffers,
    state: Arc<State>,
    seq: u64,
    /// `FDR_BENCH_DEBUG` set: print what the models raise.
    debug: bool,
}

impl Replay {
    fn one(&mut self, raw: &[u8], stage: Stage) -> usize {
        let Ok(rec) = decode(raw) else { return 0 };
        if stage == Stage::Decode {
            return std::hint::black_box(rec.boot_ns) as usize & 1;
        }
        let image = self.procs.apply(&rec);
        let who = self.scopes.resolve(rec.task.cgroup_id);
        self.seq += 1;
        let ev = Arc::new(Event {
            seq: self.seq,
            time_ns: rec.boot_ns,
            record: rec,
            image,
            scope: who.scope,
            unit: who.unit,
        });
        if stage == Stage::Attribute {
            return std::hint::black_box(&ev).seq as usize & 1;
        }
        let raised = self.analyzer.analyze(&ev, &self.state, self.seq + 1);
        if self.debug {
            for d in &raised {
                eprintln!("{:?}", d);
            }
        }
        self.seq += raised.len() as u64;
        if stage == Stage::Models {
            return raised.len();
        }
        let mut derived: Vec<Record> = Vec::new();
        self.deriver.observe(&ev, &self.procs, &mut derived);
        if stage == Stage::Derive {
            return derived.len();
        }
        self.buffers.push(ev);
        derived.len() + raised.len()
    }
}

fn replay(records: &[Vec<u8>], stage: Stage, state: &Arc<State>) -> (f64, usize) {
    let mut r = Replay {
        procs: ProcessTable::default(),
        scopes: ScopeResolver::new(),
        deriver: Deriver::new(&Config::default().capture),
        analyzer: Analyzer::new(&AnalysisConfig::default(), 16),
        buffers: ScopeBuffers::new(Limits {
            scope_quota: 16 << 20,
            critical_reserve: 4 << 20,
            budget: 128 << 20,
            grace_ns: u64::MAX,
        }),
        state: state.clone(),
        seq: 0,
        debug: std::env::var_os("FDR_BENCH_DEBUG").is_some(),
    };
    // Warm-up pass: caches filled, models learned (steady state).
    for raw in records {
        r.one(raw, stage);
    }
    let passes = REPLAY_EVENTS.div_ceil(records.len().max(1));
    let mut extra = 0;
    let t = Instant::now();
    for _ in 0..passes {
        for raw in records {
            extra += r.one(raw, stage);
        }
    }
    let n = passes * records.len();
    (n as f64 / t.elapsed().as_secs_f64(), extra)
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
    if std::env::var_os("FDR_BENCH_STAGES").is_some() {
        for (name, stage) in [
            ("models", Stage::Models),
            ("derive", Stage::Derive),
            ("full", Stage::Full),
        ] {
            let (rate, _) = replay(&records, stage, &state);
            println!("{name} {:.2} M/s", rate / 1e6);
        }
    }
    let (decode_rate, _) = replay(&records, Stage::Decode, &state);
    let (attr_rate, _) = replay(&records, Stage::Attribute, &state);
    let (model_rate, raised) = replay(&records, Stage::Models, &state);
    let (full_rate, _) = replay(&records, Stage::Full, &state);
    let model_ns = 1e9 / model_rate - 1e9 / attr_rate;
    println!(
        "replay of {} recorded records ({kinds:?}), one core:\n  decode {:.2} M/s, decode+attribution {:.2} M/s, +models {:.2} M/s ({:.0} ns/event for models, {raised} events raised), full pipeline step {:.2} M/s",
        records.len(),
        decode_rate / 1e6,
        attr_rate / 1e6,
        model_rate / 1e6,
        model_ns,
        full_rate / 1e6,
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "case": "attribution",
        "recorded_records": records.len(),
        "mix": kinds,
        "decode_per_s": decode_rate,
        "decode_attribution_per_s": attr_rate,
        "with_models_per_s": model_rate,
        "model_ns_per_event": model_ns,
        "full_pipeline_per_s": full_rate,
        "target_per_s": 1_000_000,
    }))
}
