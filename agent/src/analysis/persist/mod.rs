//! What analysis keeps in the store: each model as one `fdr.v1.Model`, each
//! incident as one `fdr.v1.Incident`, and the incident serial lease.

pub mod incidents;
pub mod models;
