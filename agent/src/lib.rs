//! fdr agent: a per-node security flight data recorder.
//!
//! The crate is laid out in data order, one folder per stage; a stage
//! imports only the foundation and the stages before it (checked by
//! `cargo xtask layers`):
//!
//! - foundation: [`event`] (the typed events, their ancestry and their
//!   `fdr.v1` form), [`config`], [`util`];
//! - [`probes`]: load and attach the kernel programs, the watched files;
//! - [`pipeline`]: ring buffers → decoded records, clocks;
//! - [`process`]: the process table and its image chains;
//! - [`attribution`]: cgroup → scope (host or container), runtime metadata;
//! - [`derive`]: events derived from others (account changes, binaries);
//! - [`store`]: the database (snapshots, models, incidents) and its
//!   committer thread;
//! - [`analysis`]: runtime models, rules, detectors, incidents;
//! - [`recorder`]: per-scope rolling buffers, snapshots, live subscribers;
//! - [`api`]: gRPC `fdr.v1`, served from the shared [`api::state::State`];
//! - [`daemon`]: assembles the stages and runs the per-record step.
//!
//! The client side (`fdrctl`) is the crate `fdr-cli`; what both sides
//! share (rendering, transport) is in `fdr-proto`.

pub mod analysis;
pub mod api;
pub mod attribution;
pub mod config;
pub mod daemon;
pub mod derive;
pub mod event;
pub mod pipeline;
pub mod probes;
pub mod process;
pub mod recorder;
pub mod store;
pub mod util;
