//! `fdrctl stats`: counters of events and losses per kind, buffer use.

use std::io::Write;

use fdr_proto::v1 as pb;
use serde_json::{json, Value};

use super::{escape::escape as e, quiet_pipe, time_text, Result};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn stats(client: &mut Client, args: &StatsArgs, out: &mut impl Write) -> Result<()> {
    let s = client.get_stats(pb::GetStatsRequest {}).await?.into_inner();
    let text = if args.json {
        super::escape::json(&stats_json(&s)) + "\n"
    } else {
        stats_table(&s)
    };
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

fn stats_json(s: &pb::Stats) -> Value {
    let b = s.buffers.unwrap_or_default();
    json!({
        "kinds": s.kinds.iter().map(|k| json!({
            "kind": k.name, "seen": k.seen, "kernel_drops": k.kernel_drops,
        })).collect::<Vec<_>>(),
        "decode_errors": s.decode_errors,
        "buffers": {
            "events": b.events, "bytes": b.bytes, "capacity_bytes": b.capacity_bytes, "evicted": b.evicted,
        },
        "stream_drops": s.stream_drops,
        "subscribers": s.subscribers,
        "processes_tracked": s.processes_tracked,
        "processes": s.processes.map(|p| json!({ "live": p.live, "exited": p.exited, "pruned": p.pruned, "reaped": p.reaped })),
        "analysis": s.analysis.map(|a| json!({
            "models": a.models, "learning": a.learning, "items": a.items,
            "open_incidents": a.open_incidents, "next_serial": a.next_serial,
        })),
        "containers": s.containers.as_ref().map(|c| json!({
            "runtime": c.runtime, "running": c.running, "tombstones": c.tombstones,
            "with_metadata": c.with_metadata, "runtime_since": time_text(c.runtime_since.as_ref()),
            "engine": c.engine,
        })),
        "live_naming": s.live_naming.map(|n| json!({
            "held": n.held, "released_named": n.released_named,
            "released_timeout": n.released_timeout, "dropped_by_bound": n.dropped_by_bound,
            "holding": n.holding,
        })),
        "storage": s.storage.as_ref().map(|st| json!({
            "state": st.state, "last_error": st.last_error, "since": time_text(st.since.as_ref()),
            "pending_commits": st.pending_commits, "pending_bytes": st.pending_bytes,
            "failures": st.failures, "reopens": st.reopens, "integrity": st.integrity,
            "ids_left": st.ids_left,
        })),
        "export": s.export.as_ref().filter(|x| x.enabled).map(|x| json!({
            "endpoint": x.endpoint, "queued_records": x.queued_records,
            "queued_bytes": x.queued_bytes, "oldest_age_s": x.oldest_age_s,
            "sent": x.sent, "retried": x.retried, "rejected": x.rejected,
            "failures": x.failures, "dropped_events": x.dropped_events,
            "dropped_incidents": x.dropped_incidents, "dropped_audits": x.dropped_audits,
            "gaps": x.gaps, "events_not_queued": x.events_not_queued,
            "last_error": x.last_error, "last_incident_serial": x.last_incident_serial,
        })),
        "started": time_text(s.started.as_ref()),
        "ring_buffer_bytes": s.ring_buffer_bytes,
        "scopes": s.scopes.iter().map(|sc| {
            let b = sc.buffer.unwrap_or_default();
            json!({ "scope": sc.scope, "events": b.events, "bytes": b.bytes, "evicted": b.evicted })
        }).collect::<Vec<_>>(),
        "scopes_left_out": s.scopes_left_out,
    })
}

fn stats_table(s: &pb::Stats) -> String {
    let mut t = format!("{:<16} {:>12} {:>12}\n", "KIND", "SEEN", "KERNEL_DROPS");
    for k in &s.kinds {
        t += &format!("{:<16} {:>12} {:>12}\n", e(&k.name), k.seen, k.kernel_drops);
    }
    let b = s.buffers.unwrap_or_default();
    let per_event = b.bytes.checked_div(b.events).unwrap_or(0);
    t += &format!(
        "\nbuffers            {} events, {} / {} bytes ({} bytes/event), {} evicted\n",
        b.events, b.bytes, b.capacity_bytes, per_event, b.evicted
    );
    for sc in &s.scopes {
        let b = sc.buffer.unwrap_or_default();
        t += &format!(
            "  {:<30} {} events, {} bytes, {} evicted\n",
            e(&sc.scope),
            b.events,
            b.bytes,
            b.evicted
        );
    }
    if s.scopes_left_out > 0 {
        t += &format!("  ({} smaller scopes not listed)\n", s.scopes_left_out);
    }
    t += &format!("decode errors      {}\n", s.decode_errors);
    t += &format!(
        "stream drops       {} ({} subscribers now)\n",
        s.stream_drops, s.subscribers
    );
    let n = s.live_naming.unwrap_or_default();
    t += &format!(
        "live naming        {} events held for their container's name: {} sent named, {} unnamed (wait up), {} unnamed (hold full), {} held now\n",
        n.held, n.released_named, n.released_timeout, n.dropped_by_bound, n.holding
    );
    let p = s.processes.unwrap_or_default();
    t += &format!(
        "processes          {} live, {} exited (kept for grace), {} pruned, {} reaped (exit record lost)\n",
        p.live, p.exited, p.pruned, p.reaped
    );
    let c = s.containers.clone().unwrap_or_default();
    t += &format!(
        "containers         {} running, {} tombstones, {} with metadata; runtime: {}\n",
        c.running,
        c.tombstones,
        c.with_metadata,
        if c.runtime.is_empty() {
            "none".into()
        } else {
            format!(
                "{} (since {})",
                e(&c.runtime),
                time_text(c.runtime_since.as_ref())
            )
        }
    );
    if !c.engine.is_empty() {
        t += &format!("  engine API       {}\n", e(&c.engine));
    }
    let a = s.analysis.unwrap_or_default();
    t += &format!(
        "models             {} ({} learning), {} items; {} open incidents, next serial {}\n",
        a.models, a.learning, a.items, a.open_incidents, a.next_serial
    );
    if let Some(st) = &s.storage {
        t += &format!(
            "storage            {} since {}; {} writes ({} bytes) pending; {} failures, {} reopens; integrity at open: {}\n",
            e(&st.state),
            time_text(st.since.as_ref()),
            st.pending_commits,
            st.pending_bytes,
            st.failures,
            st.reopens,
            e(&st.integrity)
        );
        if !st.last_error.is_empty() {
            t += &format!("  last error       {}\n", e(&st.last_error));
        }
    }
    match s.export.as_ref().filter(|x| x.enabled) {
        Some(x) => {
            t += &format!(
                "export (OTLP)      to {}: {} records ({} bytes) queued, oldest {:.1}s; {} sent, {} retried, {} rejected, {} failed calls; dropped {} events, {} incident records, {} audits ({} gap records); {} raw events not queued\n",
                e(&x.endpoint),
                x.queued_records,
                x.queued_bytes,
                x.oldest_age_s,
                x.sent,
                x.retried,
                x.rejected,
                x.failures,
                x.dropped_events,
                x.dropped_incidents,
                x.dropped_audits,
                x.gaps,
                x.events_not_queued
            );
            if !x.last_error.is_empty() {
                t += &format!("  last error       {}\n", e(&x.last_error));
            }
        }
        None => t += "export (OTLP)      off\n",
    }
    t += &format!("ring buffer        {} bytes\n", s.ring_buffer_bytes);
    t += &format!("agent started      {}\n", time_text(s.started.as_ref()));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_state_in_the_table_and_json() {
        let s = pb::Stats {
            storage: Some(pb::StorageStats {
                state: "failing".into(),
                last_error: "I/O error: No space left on device\n(os error 28)".into(),
                pending_commits: 3,
                pending_bytes: 4096,
                failures: 2,
                reopens: 2,
                integrity: "ok".into(),
                ids_left: 40,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = stats_table(&s);
        let line = t
            .lines()
            .find(|l| l.starts_with("storage"))
            .expect("a storage line");
        assert!(
            line.contains("failing") && line.contains("3 writes (4096 bytes) pending"),
            "{line}"
        );
        assert!(
            t.contains("last error       I/O error: No space left on device\\n(os error 28)"),
            "{t}"
        );
        let j = stats_json(&s);
        assert_eq!(j["storage"]["state"], "failing");
        assert_eq!(j["storage"]["pending_commits"], 3);
        assert_eq!(j["storage"]["ids_left"], 40);
    }
}
