//! The OTLP export's outbox lives in the store's database: the sender
//! reads and acknowledges through the store (its panic guard, its handle
//! kept across reopens); queuing happens inside the incident writes
//! (`analysis::persist::incidents`).

use std::sync::Arc;

use fdr_export::{Access, OutboxError};

use super::Store;

/// The store as the export sender reaches it.
pub struct StoreAccess(pub Arc<Store>);

fn err(e: super::StoreError) -> OutboxError {
    OutboxError::Db(e.to_string())
}

impl Access for StoreAccess {
    fn read(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        let f = std::sync::Mutex::new(f);
        self.0
            .read(
                || "the export outbox".into(),
                |db| {
                    let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                    Ok((*f)(db))
                },
            )
            .map_err(err)?
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        self.0
            .write(|| "the export outbox".into(), |db| Ok(f(db)))
            .map_err(err)?
    }
}
