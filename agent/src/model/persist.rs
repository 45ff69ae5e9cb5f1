//! Models in the agent's store: one protobuf `fdr.v1.Model` per key, so
//! they survive restarts and read the same as over the API.

use std::sync::Arc;

use fdr_proto::v1 as pb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::Model;
use crate::{
    api::convert_models::{model_from_pb, model_to_pb},
    recorder::store::{db_err, Store, StoreError},
};

const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");

/// Every stored model (records this build cannot decode are skipped).
pub fn load(store: &Store) -> Result<Vec<Model>, StoreError> {
    let db = store.database();
    {
        // Make sure the table exists before reading.
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(MODELS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    let tx = db.begin_read().map_err(db_err)?;
    let t = tx.open_table(MODELS).map_err(db_err)?;
    let mut out = Vec::new();
    for row in t.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        match pb::Model::decode(v.value()) {
            Ok(m) => out.push(model_from_pb(&m)),
            Err(err) => tracing::warn!(model = k.value(), %err, "undecodable model skipped"),
        }
    }
    Ok(out)
}

/// Writes changed models and removes evicted ones, in one transaction.
pub fn save(store: &Store, changed: &[&Model], removed: &[Arc<str>]) -> Result<(), StoreError> {
    if changed.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let tx = store.database().begin_write().map_err(db_err)?;
    {
        let mut t = tx.open_table(MODELS).map_err(db_err)?;
        for m in changed {
            let bytes = model_to_pb(m, 0, true).encode_to_vec();
            t.insert(&*m.key, bytes.as_slice()).map_err(db_err)?;
        }
        for k in removed {
            t.remove(&**k).map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}
