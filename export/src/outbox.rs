//! The durable outbox, in the caller's redb database: records
//! (`fdr.v1.OutboxRecord`) are queued in the caller's own write transaction
//! (the one that stores the incident they carry), and leave only when the
//! collector acknowledged them ([`Outbox::ack`]).
//!
//! Every record gets a record serial, increasing and never reused in one
//! database; with the instance id it is the record's idempotency key
//! (`<instance_id>:<serial>`), so that a consumer can drop the duplicates an
//! at-least-once delivery sends after a crash.
//!
//! Bound: `max_bytes` of encoded records. Beyond it, raw events go first
//! (oldest first, counted); incidents and audits only when no raw event is
//! left, and then never silently: a gap record (counts by kind, serial and
//! time range) takes their place, is counted, logged and exported like any
//! record. A gap record shed in turn is folded into the next one.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc, Mutex,
};

use fdr_proto::v1 as pb;
use pb::outbox_record::Kind;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

/// record serial → encoded `fdr.v1.OutboxRecord`.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("otlp_outbox");
/// record serial → encoded size, of the raw events (shed first).
const EVENTS: TableDefinition<u64, u64> = TableDefinition::new("otlp_outbox_events");
/// Next serial, bytes and records held, highest serial sent.
const META: TableDefinition<&str, u64> = TableDefinition::new("otlp_outbox_meta");
const NEXT: &str = "next_serial";
const BYTES: &str = "bytes";
const RECORDS: &str = "records";
const SENT: &str = "sent_up_to";
const LAST_INCIDENT: &str = "last_incident_serial";

/// Bytes a gap record is budgeted at while shedding.
const GAP_BYTES: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("export outbox: {0}")]
    Db(String),
}

pub(crate) fn db_err<E: std::fmt::Display>(e: E) -> OutboxError {
    OutboxError::Db(e.to_string())
}

/// What the export did since the process started (queued_* and the oldest
/// record's age: the committed outbox as of the sender's last look at it,
/// after each batch and at least every backoff). Read by the agent's and
/// the console's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub queued_records: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Wall-clock ns when the oldest queued record was queued; 0: none.
    pub oldest_queued_ns: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
    pub failures: AtomicU64,
    pub dropped_events: AtomicU64,
    pub dropped_incidents: AtomicU64,
    pub dropped_audits: AtomicU64,
    pub gaps: AtomicU64,
    /// Raw events not queued (tap channel full, rate limit).
    pub events_not_queued: AtomicU64,
    /// The highest incident serial queued (committed).
    pub last_incident_serial: AtomicU64,
    pub last_error: Mutex<String>,
}

impl Metrics {
    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// As `fdr.v1.ExportStats`.
    pub fn to_pb(&self, endpoint: &str) -> pb::ExportStats {
        let oldest = self.oldest_queued_ns.load(Relaxed);
        let age = if oldest == 0 {
            0.0
        } else {
            now_ns().saturating_sub(oldest) as f64 / 1e9
        };
        pb::ExportStats {
            enabled: true,
            endpoint: endpoint.to_owned(),
            queued_records: self.queued_records.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            sent: self.sent.load(Relaxed),
            retried: self.retried.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            dropped_events: self.dropped_events.load(Relaxed),
            dropped_incidents: self.dropped_incidents.load(Relaxed),
            dropped_audits: self.dropped_audits.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            oldest_age_s: age,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            events_not_queued: self.events_not_queued.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_incident_serial: self.last_incident_serial.load(Relaxed),
        }
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn ts_ns(t: Option<&prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| {
        (t.seconds.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos.max(0) as u64)
    })
}

pub(crate) fn ts(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// One queued record, as [`Outbox::peek`] returns it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub serial: u64,
    /// `None`: the stored bytes do not decode (acknowledged with the
    /// batch, counted as rejected).
    pub record: Option<pb::OutboxRecord>,
    pub bytes: u64,
}

/// A batch and the outbox's state when it was read.
#[derive(Debug, Default)]
pub struct Peeked {
    pub items: Vec<Queued>,
    pub records: u64,
    pub bytes: u64,
    /// The highest serial ever handed to the collector (before a crash too).
    pub sent_up_to: u64,
    /// The highest incident serial ever queued.
    pub last_incident_serial: u64,
}

/// The outbox of one database: its bound, the instance id of the records'
/// keys, the sender's wake-up and the metrics.
#[derive(Debug)]
pub struct Outbox {
    instance_id: String,
    max_bytes: u64,
    wake: Notify,
    metrics: Arc<Metrics>,
}

/// A counter of the meta table (0 when absent).
fn meta_get(t: &redb::Table<'_, &str, u64>, k: &str) -> Result<u64, OutboxError> {
    Ok(t.get(k).map_err(db_err)?.map_or(0, |v| v.value()))
}

impl Outbox {
    pub fn new(instance_id: impl Into<String>, max_bytes: u64) -> Self {
        Outbox {
            instance_id: instance_id.into(),
            max_bytes,
            wake: Notify::new(),
            metrics: Arc::default(),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The idempotency key of the record `serial`.
    pub fn key(&self, serial: u64) -> String {
        format!("{}:{serial}", self.instance_id)
    }

    /// Wakes the sender: call after the transaction that queued records
    /// committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Queues `records` in the caller's transaction (each gets the next
    /// record serial, and `queued` = now unless set), then sheds what is
    /// beyond the bound. Nothing is written when `records` is empty.
    pub fn enqueue(
        &self,
        tx: &redb::WriteTransaction,
        records: impl IntoIterator<Item = pb::OutboxRecord>,
    ) -> Result<(), OutboxError> {
        let mut records = records.into_iter().peekable();
        if records.peek().is_none() {
            return Ok(());
        }
        let mut meta = tx.open_table(META).map_err(db_err)?;
        let mut t = tx.open_table(OUTBOX).map_err(db_err)?;
        let mut ev = tx.open_table(EVENTS).map_err(db_err)?;
        let mut next = meta_get(&meta, NEXT)?.max(1);
        let mut bytes = meta_get(&meta, BYTES)?;
        let mut count = meta_get(&meta, RECORDS)?;
        let now = now_ns();
        let mut last_incident = meta_get(&meta, LAST_INCIDENT)?;
        for mut r in records {
            if let Some(i) = &r.incident {
                last_incident = last_incident.max(i.serial);
            }
            r.serial = next;
            next += 1;
            if r.queued.is_none() {
                r.queued = Some(ts(now));
            }
            let enc = r.encode_to_vec();
            t.insert(r.serial, enc.as_slice()).map_err(db_err)?;
            if r.kind() == Kind::Event {
                ev.insert(r.serial, enc.len() as u64).map_err(db_err)?;
            }
            if let (Kind::Gap, Some(g)) = (r.kind(), &r.gap) {
                self.metrics.gaps.fetch_add(1, Relaxed);
                self.metrics.dropped_audits.fetch_add(g.audits, Relaxed);
                tracing::warn!(audits = g.audits, reason = %g.reason, "export: records not queued, a gap record says so");
            }
            bytes += enc.len() as u64;
            count += 1;
        }
        if bytes > self.max_bytes {
            let mut s = Shed {
                t: &mut t,
                ev: &mut ev,
                bytes: &mut bytes,
                count: &mut count,
            };
            if let Some(gap) = s.shed(self.max_bytes, &self.metrics)? {
                let r = pb::OutboxRecord {
                    kind: Kind::Gap as i32,
                    serial: next,
                    queued: Some(ts(now)),
                    gap: Some(gap),
                    ..Default::default()
                };
                next += 1;
                let enc = r.encode_to_vec();
                t.insert(r.serial, enc.as_slice()).map_err(db_err)?;
                bytes += enc.len() as u64;
                count += 1;
            }
        }
        meta.insert(NEXT, next).map_err(db_err)?;
        meta.insert(BYTES, bytes).map_err(db_err)?;
        meta.insert(RECORDS, count).map_err(db_err)?;
        meta.insert(LAST_INCIDENT, last_incident).map_err(db_err)?;
        // `queued_*` are left to the sender's next look (peek, ack): they
        // count what is committed, and the caller's transaction is not yet.
        Ok(())
    }

    /// Up to `max_records` records (and about `max_bytes`, one at least),
    /// oldest first, and the outbox's state.
    pub fn peek(
        &self,
        db: &redb::Database,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Peeked, OutboxError> {
        let tx = db.begin_read().map_err(db_err)?;
        let mut out = Peeked::default();
        match tx.open_table(META) {
            Ok(m) => {
                let g = |k: &str| -> Result<u64, OutboxError> {
                    Ok(m.get(k).map_err(db_err)?.map_or(0, |v| v.value()))
                };
                out.records = g(RECORDS)?;
                out.bytes = g(BYTES)?;
                out.sent_up_to = g(SENT)?;
                out.last_incident_serial = g(LAST_INCIDENT)?;
            }
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(db_err(e)),
        }
        let t = match tx.open_table(OUTBOX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(db_err(e)),
        };
        let mut size = 0u64;
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let b = v.value().len() as u64;
            if !out.items.is_empty() && (out.items.len() >= max_records || size + b > max_bytes) {
                break;
            }
            size += b;
            let record = pb::OutboxRecord::decode(v.value())
                .map_err(|err| {
                    tracing::warn!(serial = k.value(), %err, "undecodable outbox record skipped")
                })
                .ok();
            out.items.push(Queued {
                serial: k.value(),
                record,
                bytes: b,
            });
        }
        let oldest = out
            .items
            .first()
            .and_then(|q| q.record.as_ref())
            .map_or(0, |r| ts_ns(r.queued.as_ref()));
        self.metrics.queued_records.store(out.records, Relaxed);
        self.metrics.queued_bytes.store(out.bytes, Relaxed);
        self.metrics.oldest_queued_ns.store(oldest, Relaxed);
        self.metrics
            .last_incident_serial
            .store(out.last_incident_serial, Relaxed);
        Ok(out)
    }

    /// Notes that records up to `serial` were handed to the collector (so
    /// that those sent again after a crash are counted as retried).
    /// Not synced to disk by itself (it is only a count): the next durable
    /// commit of the database (an acknowledgement, the writer's) carries it.
    pub fn mark_sent(&self, db: &redb::Database, serial: u64) -> Result<(), OutboxError> {
        let mut tx = db.begin_write().map_err(db_err)?;
        tx.set_durability(redb::Durability::None).map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let cur = meta_get(&meta, SENT)?;
            if serial > cur {
                meta.insert(SENT, serial).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// The collector acknowledged every record up to `serial`: they leave
    /// the outbox (durably, when this returns Ok).
    pub fn ack(&self, db: &redb::Database, serial: u64) -> Result<(), OutboxError> {
        self.ack_with_gap(db, serial, None)
    }

    /// [`Outbox::ack`], queueing `gap` (what of the batch will not reach
    /// the collector) in the same transaction.
    pub fn ack_with_gap(
        &self,
        db: &redb::Database,
        serial: u64,
        gap: Option<pb::OutboxGap>,
    ) -> Result<(), OutboxError> {
        let tx = db.begin_write().map_err(db_err)?;
        let (bytes, count) = {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let mut t = tx.open_table(OUTBOX).map_err(db_err)?;
            let mut ev = tx.open_table(EVENTS).map_err(db_err)?;
            let mut bytes = meta_get(&meta, BYTES)?;
            let mut count = meta_get(&meta, RECORDS)?;
            loop {
                let first = t
                    .first()
                    .map_err(db_err)?
                    .map(|(k, v)| (k.value(), v.value().len()));
                let Some((k, len)) = first else { break };
                if k > serial {
                    break;
                }
                t.remove(k).map_err(db_err)?;
                ev.remove(k).map_err(db_err)?;
                bytes = bytes.saturating_sub(len as u64);
                count = count.saturating_sub(1);
            }
            if let Some(gap) = gap {
                let next = meta_get(&meta, NEXT)?.max(1);
                let r = pb::OutboxRecord {
                    kind: Kind::Gap as i32,
                    serial: next,
                    queued: Some(ts(now_ns())),
                    gap: Some(gap),
                    ..Default::default()
                };
                let enc = r.encode_to_vec();
                t.insert(r.serial, enc.as_slice()).map_err(db_err)?;
                bytes += enc.len() as u64;
                count += 1;
                meta.insert(NEXT, next + 1).map_err(db_err)?;
            }
            meta.insert(BYTES, bytes).map_err(db_err)?;
            meta.insert(RECORDS, count).map_err(db_err)?;
            let sent = meta_get(&meta, SENT)?;
            if serial > sent {
                meta.insert(SENT, serial).map_err(db_err)?;
            }
            (bytes, count)
        };
        tx.commit().map_err(db_err)?;
        self.metrics.queued_records.store(count, Relaxed);
        self.metrics.queued_bytes.store(bytes, Relaxed);
        Ok(())
    }
}

struct Shed<'a, 't> {
    t: &'a mut redb::Table<'t, u64, &'static [u8]>,
    ev: &'a mut redb::Table<'t, u64, u64>,
    bytes: &'a mut u64,
    count: &'a mut u64,
}

impl Shed<'_, '_> {
    /// Drops records until the outbox fits `max`: raw events first, then
    /// the oldest records; returns the gap record's content when anything
    /// but raw events went.
    fn shed(&mut self, max: u64, m: &Metrics) -> Result<Option<pb::OutboxGap>, OutboxError> {
        let mut events = 0u64;
        while *self.bytes > max {
            let Some((k, len)) = self
                .ev
                .pop_first()
                .map_err(db_err)?
                .map(|(k, v)| (k.value(), v.value()))
            else {
                break;
            };
            self.t.remove(k).map_err(db_err)?;
            *self.bytes = self.bytes.saturating_sub(len);
            *self.count = self.count.saturating_sub(1);
            events += 1;
        }
        if events > 0 {
            m.dropped_events.fetch_add(events, Relaxed);
            tracing::debug!(events, "export outbox full: oldest raw events dropped");
        }
        if *self.bytes <= max {
            return Ok(None);
        }
        let mut gap = pb::OutboxGap {
            reason: "outbox full".into(),
            ..Default::default()
        };
        let (mut first_t, mut last_t) = (u64::MAX, 0u64);
        while *self.bytes + GAP_BYTES > max {
            let Some((k, bytes)) = self
                .t
                .pop_first()
                .map_err(db_err)?
                .map(|(k, v)| (k.value(), v.value().to_vec()))
            else {
                break;
            };
            *self.bytes = self.bytes.saturating_sub(bytes.len() as u64);
            *self.count = self.count.saturating_sub(1);
            if gap.first_serial == 0 {
                gap.first_serial = k;
            }
            gap.last_serial = k;
            // Unreadable: counted as a record of unknown kind.
            let r = pb::OutboxRecord::decode(bytes.as_slice()).unwrap_or_default();
            let at = ts_ns(r.queued.as_ref());
            match r.kind() {
                Kind::IncidentOpened | Kind::IncidentUpdated => {
                    gap.incidents += 1;
                    m.dropped_incidents.fetch_add(1, Relaxed);
                }
                Kind::Audit => {
                    gap.audits += 1;
                    m.dropped_audits.fetch_add(1, Relaxed);
                }
                Kind::Event => {
                    gap.events += 1;
                    m.dropped_events.fetch_add(1, Relaxed);
                }
                Kind::Gap => {
                    // An earlier gap, shed in turn: folded into this one.
                    if let Some(g) = r.gap {
                        gap.incidents += g.incidents;
                        gap.audits += g.audits;
                        gap.events += g.events;
                        gap.records += g.records;
                        if !g.reason.is_empty() && !gap.reason.contains(&g.reason) {
                            gap.reason = format!("{}; {}", gap.reason, g.reason);
                        }
                        gap.first_serial = gap.first_serial.min(g.first_serial.max(1));
                        first_t = first_t.min(ts_ns(g.first_time.as_ref()).max(1));
                        last_t = last_t.max(ts_ns(g.last_time.as_ref()));
                    }
                }
                Kind::Unspecified => gap.records += 1,
            }
            if at > 0 {
                first_t = first_t.min(at);
                last_t = last_t.max(at);
            }
        }
        if first_t != u64::MAX {
            gap.first_time = Some(ts(first_t));
            gap.last_time = Some(ts(last_t));
        }
        m.gaps.fetch_add(1, Relaxed);
        tracing::warn!(
            incidents = gap.incidents,
            audits = gap.audits,
            events = gap.events,
            first_serial = gap.first_serial,
            last_serial = gap.last_serial,
            "export outbox full (export.otlp.max_bytes): records dropped, a gap record is \
             exported in their place"
        );
        Ok(Some(gap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_with_a_gap_queues_it_after_the_batch() {
        let (d, p) = db("ackgap");
        let o = Outbox::new("i", 1 << 20);
        put(&o, &d, vec![incident(1, 10), incident(2, 10)]);
        let gap = pb::OutboxGap {
            records: 1,
            first_serial: 1,
            last_serial: 2,
            reason: "rejected by the collector: bad".into(),
            ..Default::default()
        };
        o.ack_with_gap(&d, 2, Some(gap)).unwrap();
        let b = o.peek(&d, 10, 1 << 20).unwrap();
        assert_eq!(b.items.len(), 1);
        let r = b.items[0].record.clone().unwrap();
        assert_eq!((r.kind(), r.serial), (Kind::Gap, 3));
        assert_eq!(r.gap.unwrap().records, 1);
        let _ = std::fs::remove_file(p);
    }

    fn db(name: &str) -> (redb::Database, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("fdr-export-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&p);
        (redb::Database::create(&p).unwrap(), p)
    }

    fn incident(serial: u64, pad: usize) -> pb::OutboxRecord {
        pb::OutboxRecord {
            kind: Kind::IncidentOpened as i32,
            incident: Some(pb::Incident {
                serial,
                summary: "x".repeat(pad),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn event(pad: usize) -> pb::OutboxRecord {
        pb::OutboxRecord {
            kind: Kind::Event as i32,
            event: Some(pb::Event {
                service: "e".repeat(pad),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn put(o: &Outbox, db: &redb::Database, recs: Vec<pb::OutboxRecord>) {
        let tx = db.begin_write().unwrap();
        o.enqueue(&tx, recs).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn serials_increase_and_survive_acks_and_reopen() {
        let (d, p) = db("serials");
        let o = Outbox::new("abc", 1 << 20);
        put(&o, &d, vec![incident(1, 10), incident(2, 10)]);
        let got = o.peek(&d, 10, 1 << 20).unwrap();
        let serials: Vec<u64> = got.items.iter().map(|q| q.serial).collect();
        assert_eq!(serials, [1, 2]);
        assert_eq!(got.records, 2);
        assert_eq!(o.key(2), "abc:2");
        o.ack(&d, 2).unwrap();
        assert!(o.peek(&d, 10, 1 << 20).unwrap().items.is_empty());
        drop(d);
        let d = redb::Database::create(&p).unwrap();
        put(&o, &d, vec![incident(3, 10)]);
        let got = o.peek(&d, 10, 1 << 20).unwrap();
        assert_eq!(got.items[0].serial, 3, "serials are never reused");
        assert_eq!(got.sent_up_to, 2);
        assert_eq!(got.records, 1);
        // A batch stops at max_records and max_bytes (one record at least).
        put(&o, &d, vec![incident(4, 10), incident(5, 10)]);
        assert_eq!(o.peek(&d, 2, 1 << 20).unwrap().items.len(), 2);
        assert_eq!(o.peek(&d, 10, 1).unwrap().items.len(), 1);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn raw_events_are_shed_first_then_a_gap_replaces_incidents() {
        let (d, p) = db("shed");
        let o = Outbox::new("i", 4000);
        // 2 incidents of ~1000 bytes, then raw events past the bound.
        put(&o, &d, vec![incident(1, 1000), incident(2, 1000)]);
        for _ in 0..4 {
            put(&o, &d, vec![event(700)]);
        }
        let got = o.peek(&d, 100, u64::MAX).unwrap();
        assert!(got.bytes <= 4000, "{}", got.bytes);
        let kinds: Vec<Kind> = got
            .items
            .iter()
            .map(|q| q.record.as_ref().unwrap().kind())
            .collect();
        assert_eq!(kinds[..2], [Kind::IncidentOpened, Kind::IncidentOpened]);
        assert!(o.metrics().dropped_events.load(Relaxed) >= 1);
        assert_eq!(o.metrics().gaps.load(Relaxed), 0, "raw events only: no gap");
        // More incidents than the bound holds: raw events all go, then the
        // oldest incidents, replaced by one gap record.
        put(&o, &d, vec![incident(3, 1500), incident(4, 1500)]);
        let got = o.peek(&d, 100, u64::MAX).unwrap();
        assert!(got.bytes <= 4000, "{}", got.bytes);
        let recs: Vec<&pb::OutboxRecord> = got
            .items
            .iter()
            .map(|q| q.record.as_ref().unwrap())
            .collect();
        assert!(
            recs.iter().all(|r| r.kind() != Kind::Event),
            "raw events first"
        );
        let gap = recs
            .iter()
            .find(|r| r.kind() == Kind::Gap)
            .and_then(|r| r.gap.clone())
            .expect("a gap record");
        assert_eq!(gap.incidents, 2, "{gap:?}");
        assert_eq!(gap.first_serial, 1);
        assert!(gap.first_time.is_some() && gap.last_time.is_some());
        assert_eq!(o.metrics().gaps.load(Relaxed), 1);
        assert_eq!(o.metrics().dropped_incidents.load(Relaxed), 2);
        let kept: Vec<u64> = recs
            .iter()
            .filter_map(|r| r.incident.as_ref().map(|i| i.serial))
            .collect();
        assert_eq!(kept, [3, 4], "the newest incidents stay");
        std::fs::remove_file(p).unwrap();
    }
}
