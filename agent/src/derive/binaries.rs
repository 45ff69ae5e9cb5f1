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
    /// Which remembering this is (a key forgotten and remembered again has
    /// a stale place in `order`).
    generation: u64,
}

/// Remembers recently written files (bounded), by inode and by path.
pub struct BinaryTracker {
    by_inode: HashMap<(u32, u64), Written>,
    by_path: HashMap<String, (u32, u64)>,
    order: VecDeque<((u32, u64), u64)>,
    capacity: usize,
    generation: u64,
}

impl BinaryTracker {
    pub fn new(capacity: usize) -> Self {
        BinaryTracker {
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            generation: 0,
        }
    }

    pub fn observe(&mut self, ev: &Event, _procs: &ProcessTable, out: &mut Vec<Record>) {
        match &ev.record.detail {
            Detail::File {
                kind: EventKind::FileWrite,
                file,
            } if file.mode & S_IFMT == S_IFREG => {
                let key = (file.dev, file.ino);
                // The same inode under another path is another file: the
                // inode of a removed one, reused (or a second link). It
                // starts afresh, with nothing reported yet.
                let known = self.by_inode.get(&key).is_some_and(|w| w.path == file.path);
                if !known {
                    self.forget(key);
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
            // A removed file is forgotten: its inode may soon be another
            // file's, which must not inherit its path or what was reported.
            Detail::File {
                kind: EventKind::FileUnlink,
                file,
            } => {
                if let Some(key) = self.by_path.get(&file.path).copied() {
                    self.forget(key);
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

    /// Drops what is known of `key` (its path mapping too; its place in
    /// `order` goes when it comes round).
    fn forget(&mut self, key: (u32, u64)) {
        if let Some(w) = self.by_inode.remove(&key) {
            if self.by_path.get(&w.path) == Some(&key) {
                self.by_path.remove(&w.path);
            }
        }
    }

    fn remember(&mut self, key: (u32, u64), path: &str, ev: &Event) {
        while self.order.len() >= self.capacity {
            let Some((old, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .by_inode
                .get(&old)
                .is_some_and(|w| w.generation == generation)
            {
                self.forget(old);
            }
        }
        self.generation += 1;
        self.order.push_back((key, self.generation));
        self.by_path.insert(path.to_owned(), key);
        self.by_inode.insert(
            key,
            Written {
                generation: self.generation,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{test_support::event, FileDetail};

    fn file(kind: EventKind, path: &str, ino: u64, mode: u32, new_mode: Option<u32>) -> Event {
        event(
            0,
            7,
            Detail::File {
                kind,
                file: Box::new(FileDetail {
                    path: path.into(),
                    dev: 1,
                    ino,
                    mode,
                    new_mode,
                    ..Default::default()
                }),
            },
        )
    }

    fn reasons(out: &[Record]) -> Vec<(String, BinaryReason)> {
        out.iter()
            .filter_map(|r| match &r.detail {
                Detail::Binary(b) => Some((b.path.clone(), b.reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reused_inode_is_a_new_file_with_nothing_reported_yet() {
        let procs = ProcessTable::default();
        let mut t = BinaryTracker::new(16);
        let mut out = Vec::new();
        // An unpacked file made executable, then removed.
        t.observe(
            &file(
                EventKind::FileWrite,
                "/tmp/a/tool",
                42,
                S_IFREG | 0o644,
                None,
            ),
            &procs,
            &mut out,
        );
        t.observe(
            &file(EventKind::FileChmod, "/tmp/a/tool", 42, 0, Some(0o755)),
            &procs,
            &mut out,
        );
        t.observe(
            &file(EventKind::FileUnlink, "/tmp/a/tool", 42, 0, None),
            &procs,
            &mut out,
        );
        // A new file gets the same inode, and is made executable too.
        t.observe(
            &file(
                EventKind::FileWrite,
                "/tmp/b/run.sh",
                42,
                S_IFREG | 0o644,
                None,
            ),
            &procs,
            &mut out,
        );
        t.observe(
            &file(EventKind::FileChmod, "/tmp/b/run.sh", 42, 0, Some(0o755)),
            &procs,
            &mut out,
        );
        assert_eq!(
            reasons(&out),
            [
                ("/tmp/a/tool".to_string(), BinaryReason::MadeExecutable),
                ("/tmp/b/run.sh".to_string(), BinaryReason::MadeExecutable)
            ]
        );
        // Without its unlink seen, a write under another path at the inode
        // is another file as well.
        t.observe(
            &file(EventKind::FileWrite, "/tmp/c/x", 42, S_IFREG | 0o644, None),
            &procs,
            &mut out,
        );
        t.observe(
            &file(EventKind::FileChmod, "/tmp/c/x", 42, 0, Some(0o700)),
            &procs,
            &mut out,
        );
        assert_eq!(reasons(&out).len(), 3);
        assert_eq!(reasons(&out)[2].0, "/tmp/c/x");
    }

    #[test]
    fn forgotten_and_remembered_keys_keep_the_bound() {
        let procs = ProcessTable::default();
        let mut t = BinaryTracker::new(4);
        let mut out = Vec::new();
        for i in 0..50u64 {
            let path = format!("/tmp/f{}", i % 7);
            t.observe(
                &file(EventKind::FileWrite, &path, i % 5, S_IFREG | 0o644, None),
                &procs,
                &mut out,
            );
        }
        assert!(t.by_inode.len() <= 4 && t.order.len() <= 4);
        assert!(t.by_path.len() <= t.by_inode.len());
    }
}
