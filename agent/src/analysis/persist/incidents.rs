//! Incidents in the agent's store: one protobuf `fdr.v1.Incident` per
//! serial, and the next serial, so serials are never reused across
//! restarts.

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::store::{db_err, Store, StoreError, META};

const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
const NEXT_SERIAL: &str = "next_incident_serial";

/// Incidents kept; the oldest are removed beyond it.
pub const MAX_INCIDENTS: u64 = 10_000;

/// The next serial to hand out: above every stored incident and every
/// serial handed out before (the persisted lease included, so a serial
/// handed out by an agent that then crashed is not reused).
pub fn next_serial(store: &Store) -> Result<u64, StoreError> {
    let next = store.write(
        || "the incident serial".into(),
        |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let next = {
                let t = tx.open_table(INCIDENTS).map_err(db_err)?;
                let meta = tx.open_table(META).map_err(db_err)?;
                let stored = meta
                    .get(NEXT_SERIAL)
                    .map_err(db_err)?
                    .map_or(1, |v| v.value());
                let after_last = t.last().map_err(db_err)?.map_or(1, |(k, _)| k.value() + 1);
                stored.max(after_last)
            };
            tx.commit().map_err(db_err)?;
            Ok(next)
        },
    )?;
    let next = next.max(store.serial_floor());
    store.note_serial(next);
    Ok(next)
}

/// Stores incidents (new or updated) and the next serial, atomically;
/// then removes the oldest beyond [`MAX_INCIDENTS`].
pub fn put(store: &Store, incidents: &[pb::Incident], next_serial: u64) -> Result<(), StoreError> {
    let encoded: Vec<(u64, Vec<u8>)> = incidents
        .iter()
        .map(|i| (i.serial, i.encode_to_vec()))
        .collect();
    put_encoded(store, &encoded, next_serial, None)
}

/// [`put`] of incidents already encoded (serial, bytes): the committer's
/// write. With `outbox` (the OTLP export enabled), the same transaction
/// queues what each write means for the export: `incident opened` (no
/// record of its serial stored before) or `incident updated`, and one
/// `audit` per audit added since the stored record.
pub fn put_encoded(
    store: &Store,
    incidents: &[(u64, Vec<u8>)],
    next_serial: u64,
    outbox: Option<&fdr_export::Outbox>,
) -> Result<(), StoreError> {
    store.write(
        || "the incidents".into(),
        |db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut meta = tx.open_table(META).map_err(db_err)?;
                let stored = meta
                    .get(NEXT_SERIAL)
                    .map_err(db_err)?
                    .map_or(1, |v| v.value());
                meta.insert(NEXT_SERIAL, stored.max(next_serial))
                    .map_err(db_err)?;
                let mut t = tx.open_table(INCIDENTS).map_err(db_err)?;
                let mut records = Vec::new();
                for (serial, bytes) in incidents {
                    if outbox.is_some() {
                        let prev = t
                            .get(*serial)
                            .map_err(db_err)?
                            .and_then(|v| decode(*serial, v.value()));
                        if let Some(new) = decode(*serial, bytes) {
                            // The snapshot's hash once it is committed
                            // (sealed); empty before.
                            let sha = match new.snapshot_id {
                                0 => String::new(),
                                id => store
                                    .info(id)
                                    .ok()
                                    .flatten()
                                    .map(|i| i.sha256)
                                    .unwrap_or_default(),
                            };
                            records.extend(fdr_export::incident_records(prev.as_ref(), &new, &sha));
                        }
                    }
                    t.insert(*serial, bytes.as_slice()).map_err(db_err)?;
                }
                if let Some(o) = outbox {
                    o.enqueue(&tx, records).map_err(db_err)?;
                }
                while t.len().map_err(db_err)? > MAX_INCIDENTS {
                    if t.pop_first().map_err(db_err)?.is_none() {
                        break;
                    }
                }
            }
            tx.commit().map_err(db_err)?;
            if let Some(o) = outbox {
                o.wake();
            }
            Ok(())
        },
    )
}

fn decode(serial: u64, bytes: &[u8]) -> Option<pb::Incident> {
    pb::Incident::decode(bytes)
        .map_err(|err| tracing::warn!(serial, %err, "undecodable incident skipped"))
        .ok()
}

/// Up to `limit` incidents with a serial above `after`, in serial order.
pub fn after(store: &Store, after: u64, limit: usize) -> Result<Vec<pb::Incident>, StoreError> {
    store.read(
        || format!("the incidents after #{after}"),
        |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = match tx.open_table(INCIDENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let mut out = Vec::new();
            for row in t.range(after.saturating_add(1)..).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                if let Some(i) = decode(k.value(), v.value()) {
                    out.push(i);
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        },
    )
}

pub fn get(store: &Store, serial: u64) -> Result<Option<pb::Incident>, StoreError> {
    store.read(
        || format!("incident #{serial}"),
        |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = match tx.open_table(INCIDENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(db_err(e)),
            };
            let v = t.get(serial).map_err(db_err)?;
            Ok(v.and_then(|v| decode(serial, v.value())))
        },
    )
}
/// Incidents whose last audit is at or after `since_ns` (wall clock): the
/// ones that may still be updated.
pub fn recent(store: &Store, since_ns: u64) -> Result<Vec<pb::Incident>, StoreError> {
    let all = after(store, 0, usize::MAX)?;
    Ok(all
        .into_iter()
        .filter(|i| {
            i.last.as_ref().is_some_and(|t| {
                (t.seconds.max(0) as u64).saturating_mul(1_000_000_000) + t.nanos.max(0) as u64
                    >= since_ns
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Retention;

    #[test]
    fn incident_serials_are_leased_too() {
        let d = std::env::temp_dir().join(format!("fdr-serials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        let first = next_serial(&store).unwrap();
        assert_eq!(first, 1);
        // Serials 1..=5 handed out in memory, none stored: a crash.
        store.note_serial(6);
        drop(store);
        let store = Store::open(&d, r).unwrap();
        let next = next_serial(&store).unwrap();
        assert!(
            next > 5,
            "serials handed out before the crash are not reused: {next}"
        );
        assert!(store.serial_lease() > next);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn incident_writes_queue_export_records_in_their_transaction() {
        use fdr_proto::v1::outbox_record::Kind;
        let d = std::env::temp_dir().join(format!("fdr-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let r = Retention {
            max_snapshots: 10,
            max_bytes: u64::MAX,
        };
        let store = Store::open(&d, r).unwrap();
        let outbox = fdr_export::Outbox::new(store.instance_id(), 1 << 20);
        let audit = |seq| pb::Audit {
            event_seq: seq,
            ..Default::default()
        };
        let mut inc = pb::Incident {
            serial: 1,
            r#type: "backdoor-account".into(),
            audit_count: 1,
            audits: vec![audit(1)],
            ..Default::default()
        };
        let enc = |i: &pb::Incident| vec![(i.serial, i.encode_to_vec())];
        put_encoded(&store, &enc(&inc), 2, Some(&outbox)).unwrap();
        inc.audit_count = 2;
        inc.audits.push(audit(2));
        put_encoded(&store, &enc(&inc), 2, Some(&outbox)).unwrap();
        // Without the export: nothing queued.
        put_encoded(&store, &enc(&inc), 2, None).unwrap();
        let got = store
            .read(
                || "outbox".into(),
                |db| outbox.peek(db, 100, u64::MAX).map_err(db_err),
            )
            .unwrap();
        let kinds: Vec<(u64, Kind)> = got
            .items
            .iter()
            .map(|q| (q.serial, q.record.as_ref().unwrap().kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, Kind::IncidentOpened),
                (2, Kind::Audit),
                (3, Kind::IncidentUpdated),
                (4, Kind::Audit),
            ]
        );
        let last = got.items[3].record.as_ref().unwrap();
        assert_eq!(last.audit.as_ref().unwrap().event_seq, 2);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
