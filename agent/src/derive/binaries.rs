//! "Binary written": a file written while executable, written and then made
//! executable, or written and then executed — a dropped miner, a replaced
//! `ls`.

use std::collections::{HashMap, VecDeque};

use crate::{
    event::{BinaryDetail, BinaryReason, Detail, Event, EventKind, Record},
    process::table::ProcessTable,
};

use super::derived;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const EXEC_BITS: u32 = 0o111;

#[derive(Debug, Clone)]
struct Written {
    path: String,
    pid: u32,
    exe: String,
    /// Reasons already reported for this file.
    reported: Vec<BinaryReason>,
}

/// Remembers recently written files (bounded), by inode and by path.
pub struct BinaryTracker {
    by_inode: HashMap<(u32, u64), Written>,
    by_path: HashMap<String, (u32, u64)>,
    order: VecDeque<(u32, u64)>,
    capacity: usize,
}

impl BinaryTracker {
    pub fn new(capacity: usize) -> Self {
        BinaryTracker {
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn observe(&mut self, ev: &Event, _procs: &ProcessTable, out: &mut Vec<Record>) {
        match &ev.record.detail {
            Detail::File {
                kind: EventKind::FileWrite,
                file,
            } if file.mode & S_IFMT == S_IFREG => {
                let key = (file.dev, file.ino);
                if !self.by_inode.contains_key(&key) {
                    self.remember(key, &file.path, ev);
                }
                if file.mode & EXEC_BITS != 0 {
                    self.report(key, BinaryReason::WrittenExecutable, ev, out);
                }
            }
            Detail::File {
                kind: EventKind::FileChmod,
                file,
            } => {
                let made_exec = file.new_mode.is_some_and(|m| m & EXEC_BITS != 0);
                let key = if file.ino != 0 {
                    Some((file.dev, file.ino))
                } else {
                    self.by_path.get(&file.path).copied()
                };
                if let (true, Some(key)) = (made_exec, key) {
                    self.report(key, BinaryReason::MadeExecutable, ev, out);
                }
            }
            Detail::File {
                kind: EventKind::FileRename,
                file,
            } => {
                if let (Some(key), Some(new)) = (self.by_path.remove(&file.path), &file.path2) {
                    if let Some(w) = self.by_inode.get_mut(&key) {
                        w.path.clone_from(new);
                    }
                    self.by_path.insert(new.clone(), key);
                }
            }
            Detail::Exec {
                exe_dev,
                exe_ino,
                filename,
                ..
            } => {
                // A script runs its interpreter: match the script by path.
                let key = match self.by_path.get(filename) {
                    Some(k) => *k,
                    None => (*exe_dev, *exe_ino),
                };
                self.report(key, BinaryReason::Executed, ev, out);
            }
            _ => {}
        }
    }

    fn remember(&mut self, key: (u32, u64), path: &str, ev: &Event) {
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                if let Some(w) = self.by_inode.remove(&old) {
                    self.by_path.remove(&w.path);
                }
            }
        }
        self.order.push_back(key);
        self.by_path.insert(path.to_owned(), key);
        self.by_inode.insert(
            key,
            Written {
                path: path.to_owned(),
                pid: ev.pid(),
                exe: ev.exe().to_owned(),
                reported: Vec::new(),
            },
        );
    }

    fn report(&mut self, key: (u32, u64), reason: BinaryReason, ev: &Event, out: &mut Vec<Record>) {
        let Some(w) = self.by_inode.get_mut(&key) else {
            return;
        };
        if w.reported.contains(&reason) {
            return;
        }
        w.reported.push(reason);
        let detail = BinaryDetail {
            path: w.path.clone(),
            reason,
            writer_pid: Some(w.pid),
            writer_exe: Some(w.exe.clone()),
        };
        out.push(derived(&ev.record, Detail::Binary(Box::new(detail))));
    }
}
