//! The agent's typed events: what the decoder produces from kernel records
//! and what the buffer, the process table and the API work with.

use std::sync::Arc;

pub use fdr_common::EventKind;

/// The task a record is about, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Audit login uid; `None` when unset.
    pub loginuid: Option<u32>,
    pub cgroup_id: u64,
    /// `CLOCK_MONOTONIC` start time of the process.
    pub start_ns: u64,
    pub comm: String,
    pub has_tty: bool,
}

/// What kind of thing happened, with its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Fork {
        parent_tid: u32,
    },
    Exec {
        /// The path given to `execve`; when that was relative, the
        /// executable's absolute path.
        filename: String,
        /// The executable's real absolute path (symlinks resolved), from the
        /// kernel's dentry cache; empty when it could not be walked.
        exe: String,
        /// The walk of `exe` was cut short (too deep) or ended outside the
        /// agent's root (another mount namespace, a deleted file).
        exe_incomplete: bool,
        argv: Vec<String>,
        old_tid: u32,
        argv_truncated: bool,
        argv_unreadable: bool,
        filename_truncated: bool,
    },
    Exit {
        /// wait(2) status.
        status: u32,
    },
}

impl Detail {
    pub fn kind(&self) -> EventKind {
        match self {
            Detail::Fork { .. } => EventKind::Fork,
            Detail::Exec { .. } => EventKind::Exec,
            Detail::Exit { .. } => EventKind::Exit,
        }
    }
}

/// A decoded kernel record, before the agent adds context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub boot_ns: u64,
    pub cpu: u32,
    pub task: Task,
    pub detail: Detail,
}

/// A recorded event: the kernel's record plus what the agent knows of the
/// process (executable and command line from the process table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Agent-assigned sequence number, increasing with arrival.
    pub seq: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub record: Record,
    /// Executable of the process, when known.
    pub exe: Arc<str>,
    /// Command line of the process, when known.
    pub argv: Arc<[String]>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.record.detail.kind()
    }

    pub fn pid(&self) -> u32 {
        self.record.task.pid
    }

    /// Approximate heap + inline bytes this event holds in a buffer, for
    /// memory accounting. Shared strings are counted by their owner.
    pub fn approx_bytes(&self) -> usize {
        let detail = match &self.record.detail {
            Detail::Exec {
                filename,
                exe,
                argv,
                ..
            } => filename.len() + exe.len() + argv.iter().map(|a| a.len() + 24).sum::<usize>(),
            _ => 0,
        };
        std::mem::size_of::<Event>() + self.record.task.comm.len() + detail
    }
}

/// Exit status split the way wait(2) macros do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl ExitStatus {
    pub fn from_wait_status(status: u32) -> Self {
        let sig = (status & 0x7f) as i32;
        if sig == 0 {
            ExitStatus {
                code: Some(((status >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        } else {
            ExitStatus {
                code: None,
                signal: Some(sig),
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(
            ExitStatus::from_wait_status(7 << 8),
            ExitStatus {
                code: Some(7),
                signal: None,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus {
                code: None,
                signal: Some(9),
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(11 | 0x80),
            ExitStatus {
                code: None,
                signal: Some(11),
                core_dumped: true
            }
        );
    }
}
