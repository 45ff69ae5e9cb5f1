//! fdr-console: copies every agent's incidents and snapshots, so that the
//! evidence outlives the node; numbers incidents fleet-wide; keeps
//! snapshots by content in a local directory or an S3-compatible store;
//! serves them over `fdr.v1` (the agents' API) plus `Console.ListAgents`.
//!
//! Data order: [`discovery`] (which agents) → [`sync`] (copying, per
//! agent, each copy checked by [`verify`]) → [`evidence`] + [`index`]
//! (what is held) → [`api`] (serving).

pub mod api;
pub mod config;
pub mod discovery;
pub mod error;
pub mod evidence;
pub mod index;
pub mod sync;
pub mod verify;
pub mod web;
