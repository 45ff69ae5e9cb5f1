//! fdr agent: a per-node security flight data recorder.
//!
//! Modules follow the data: [`probes`] (load and attach the kernel
//! programs) → [`pipeline`] (ring buffer reader) with [`decode`] and
//! [`clock`] → [`proctable`] (process context) → [`buffer`] (the recorder)
//! → [`api`] (gRPC `fdr.v1`). [`agent`] assembles them. The client side
//! (`fdrctl`) is the crate `fdr-cli`; what both share is in `fdr-proto`.

pub mod agent;
pub mod analysis;
pub mod api;
pub mod buffer;
pub mod clock;
pub mod config;
pub mod containers;
pub mod decode;
pub mod derive;
pub mod event;
pub mod host;
pub mod incidents;
pub mod lineage;
pub mod model;
pub mod pipeline;
pub mod probes;
pub mod proctable;
pub mod recorder;
pub mod scope;
pub mod state;
pub mod stats;
pub mod watch;
