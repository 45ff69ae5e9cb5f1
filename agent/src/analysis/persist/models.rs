//! Models in the agent's store: one protobuf `fdr.v1.Model` per key, so
//! they survive restarts and read the same as over the API.

use std::sync::Arc;

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::analysis::model::Model;
use crate::{
    analysis::wire::{model_from_pb, model_to_pb},
    store::{db_err, Store, StoreError},
};

const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");

/// Every stored model (records this build cannot decode are skipped).
pub fn load(store: &Store) -> Result<Vec<Model>, StoreError> {
    // Make sure the table exists before reading.
    store.write(
        || "the model table".into(),
        |db| {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(MODELS).map_err(db_err)?;
            tx.commit().map_err(db_err)
        },
    )?;
    let rows: Vec<(String, Vec<u8>)> = store.read(
        || "the models".into(),
        |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(MODELS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        },
    )?;
    let mut out = Vec::new();
    for (k, v) in rows {
        match pb::Model::decode(v.as_slice()) {
            Ok(m) => out.push(model_from_pb(&m)),
            Err(err) => tracing::warn!(model = k, %err, "undecodable model skipped"),
        }
    }
    Ok(out)
}

/// Models encoded for the store, and keys to remove: what a write needs,
/// detached from the model set (the committer writes it later).
#[derive(Debug, Default, Clone)]
pub struct Encoded {
    pub changed: Vec<(Arc<str>, Vec<u8>)>,
    pub removed: Vec<Arc<str>>,
}

impl Encoded {
    pub fn new(changed: &[&Model], removed: &[Arc<str>]) -> Self {
        Encoded {
            changed: changed
                .iter()
                .map(|m| (m.key.clone(), model_to_pb(m, 0, true).encode_to_vec()))
                .collect(),
            removed: removed.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    /// Bytes held until written, roughly.
    pub fn approx_bytes(&self) -> usize {
        self.changed
            .iter()
            .map(|(k, v)| k.len() + v.len() + 64)
            .sum::<usize>()
            + self.removed.iter().map(|k| k.len() + 64).sum::<usize>()
    }

    /// Writes changed models and removes evicted ones, in one transaction.
    pub fn write(&self, store: &Store) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        store.write(
            || "the models".into(),
            |db| {
                let tx = db.begin_write().map_err(db_err)?;
                {
                    let mut t = tx.open_table(MODELS).map_err(db_err)?;
                    for (k, bytes) in &self.changed {
                        t.insert(&**k, bytes.as_slice()).map_err(db_err)?;
                    }
                    for k in &self.removed {
                        t.remove(&**k).map_err(db_err)?;
                    }
                }
                tx.commit().map_err(db_err)
            },
        )
    }
}

/// Writes changed models and removes evicted ones, in one transaction
/// (synchronously: startup and tests; the agent queues [`Encoded`] writes
/// on the committer).
pub fn save(store: &Store, changed: &[&Model], removed: &[Arc<str>]) -> Result<(), StoreError> {
    Encoded::new(changed, removed).write(store)
}
