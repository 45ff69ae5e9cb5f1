//! Stage 5, derive: events the agent derives from the kernel's — account
//! modifications (a tool or process that changed `/etc/passwd`, `shadow`,
//! `sudoers`…) and written binaries. Each is placed in the stream right
//! after the event that completed it.
//!
//! Takes: attributed events and the process table. Gives: derived records,
//! which go through the same step as the kernel's. Imports: the
//! foundation, `pipeline`, `process`.

pub mod accounts;
pub mod binaries;

use crate::{
    config::CaptureConfig,
    event::{Detail, Event, Record},
    process::table::ProcessTable,
};

pub use accounts::AccountTracker;
pub use binaries::BinaryTracker;

pub struct Deriver {
    pub accounts: AccountTracker,
    pub binaries: BinaryTracker,
}

impl Deriver {
    /// Account records name `node` as their host and take user names from
    /// the host's `/etc/passwd` (under `host`).
    pub fn new(cfg: &CaptureConfig, node: &str, host: &crate::util::host::HostRoot) -> Self {
        Deriver {
            accounts: AccountTracker::new(cfg, node, host),
            binaries: BinaryTracker::new(4096),
        }
    }

    /// Derived records that `ev` completes.
    pub fn observe(&mut self, ev: &Event, procs: &ProcessTable, out: &mut Vec<Record>) {
        self.binaries.observe(ev, procs, out);
        self.accounts.observe(ev, procs, out);
    }

    /// Records of changes by processes that have been quiet for `idle_ns`
    /// (tools: and are gone, by `alive`).
    pub fn flush_idle(
        &mut self,
        now_boot_ns: u64,
        idle_ns: u64,
        alive: impl Fn(u32) -> bool,
        out: &mut Vec<Record>,
    ) {
        self.accounts.flush_idle(now_boot_ns, idle_ns, alive, out);
    }
}

/// A derived record for `detail`, attributed to the task of `ev`.
pub(crate) fn derived(ev_record: &Record, detail: Detail) -> Record {
    Record {
        boot_ns: ev_record.boot_ns,
        cpu: ev_record.cpu,
        task: ev_record.task.clone(),
        detail,
    }
}
