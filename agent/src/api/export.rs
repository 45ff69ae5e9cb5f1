//! The OTLP logs export (`[export.otlp]`, crate `fdr-export`) in the agent:
//! its sender over the store's outbox, the raw-event tap (opt-in) and its
//! figures for `GetStats` and the metrics. Incident and audit records are
//! queued by the incident writes themselves (`analysis::persist`).
//!
//! The raw-event tap is a live subscriber like `StreamEvents --follow`:
//! filtered by kind at the source, its bounded queue filled with
//! `try_send` semantics (the pipeline never waits; what it skips is
//! counted), rate limited by a token bucket, and written into the outbox in
//! batches from its own task, off the event path.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use fdr_export::{raw::RawFilter, Outbox, Source};
use fdr_proto::v1 as pb;

use crate::{
    api::state::State,
    event::{wire::event_to_pb, EventKind},
    recorder::live::{LiveFilter, Subscription},
    store::{db_err, outbox::StoreAccess},
};

/// Raw events written in one transaction at most.
const RAW_BATCH: usize = 512;
/// How long the tap gathers a batch after its first event.
const RAW_GATHER: Duration = Duration::from_millis(200);
/// The tap's queue: events, bytes.
const RAW_QUEUE: (usize, usize) = (8192, 8 << 20);

/// Starts the sender (and the raw-event tap when enabled) when the state
/// has an export. Errors: the export's files or endpoint (the collector
/// being down is not one).
pub fn start(cfg: &fdr_export::OtlpConfig, state: &Arc<State>) -> Result<(), String> {
    let Some(export) = &state.export else {
        return Ok(());
    };
    let outbox = export.outbox.clone();
    let source = Source {
        service_name: "fdr-agent".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        instance_id: state.store.instance_id().to_owned(),
        host_name: state.node.to_string(),
        extra: cfg
            .resource_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let access: Arc<dyn fdr_export::Access> = Arc::new(StoreAccess(state.store.clone()));
    fdr_export::spawn(cfg.clone(), outbox.clone(), access, source).map_err(|e| e.to_string())?;
    let raw = &cfg.raw_events;
    if raw.enabled {
        let kinds = raw
            .kinds
            .iter()
            .filter_map(|k| EventKind::from_name(k))
            .collect();
        let sub = state
            .live
            .subscribe(
                LiveFilter {
                    kinds,
                    ..Default::default()
                },
                RAW_QUEUE.0,
                RAW_QUEUE.1,
            )
            .map_err(|e| format!("export.otlp.raw_events: {e}"))?;
        let filter = RawFilter::new(Vec::new(), raw.per_second);
        tokio::spawn(raw_events(state.clone(), outbox, filter, sub));
    }
    Ok(())
}

async fn raw_events(
    state: Arc<State>,
    outbox: Arc<Outbox>,
    mut filter: RawFilter,
    mut sub: Subscription,
) {
    let m = outbox.metrics().clone();
    loop {
        let Some(first) = sub.recv().await else {
            return;
        };
        let deadline = tokio::time::Instant::now() + RAW_GATHER;
        let mut events = vec![first];
        while events.len() < RAW_BATCH {
            match sub.try_recv() {
                Some(ev) => events.push(ev),
                None => match tokio::time::timeout_at(deadline, sub.recv()).await {
                    Ok(Some(ev)) => events.push(ev),
                    Ok(None) => return,
                    Err(_) => break,
                },
            }
        }
        let lost: u64 = sub.take_lost().iter().map(|(_, n)| n).sum();
        if lost > 0 {
            m.events_not_queued.fetch_add(lost, Relaxed);
        }
        let now = Instant::now();
        let mut records = Vec::with_capacity(events.len());
        for ev in &events {
            if !filter.admit(now) {
                m.events_not_queued.fetch_add(1, Relaxed);
                continue;
            }
            let e = state.with_enrich(0, |en| event_to_pb(ev, en));
            records.push(pb::OutboxRecord {
                kind: pb::outbox_record::Kind::Event as i32,
                event: Some(e),
                ..Default::default()
            });
        }
        if records.is_empty() {
            continue;
        }
        let (st, o) = (state.clone(), outbox.clone());
        let n = records.len() as u64;
        let written = tokio::task::spawn_blocking(move || {
            st.store.write(
                || "raw events into the export outbox".into(),
                |db| {
                    let tx = db.begin_write().map_err(db_err)?;
                    o.enqueue(&tx, records).map_err(db_err)?;
                    tx.commit().map_err(db_err)
                },
            )
        })
        .await;
        match written {
            Ok(Ok(())) => outbox.wake(),
            Ok(Err(e)) => {
                m.events_not_queued.fetch_add(n, Relaxed);
                tracing::warn!(err = %e, events = n, "raw events not queued for export");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => tracing::warn!(err = %e, "raw event export task"),
        }
    }
}

/// `GetStats`' export part: `enabled` false when off.
pub fn stats(state: &State) -> pb::ExportStats {
    match &state.export {
        Some(e) => e.outbox.metrics().to_pb(&e.endpoint),
        None => pb::ExportStats::default(),
    }
}
