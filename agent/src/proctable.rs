//! Process table: what the agent knows of each live (and recently exited)
//! process, kept from fork/exec/exit records and seeded from `/proc` at
//! start, so that processes older than the agent have a parent and a
//! command line.

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::{
    event::{Comm, Detail, Record},
    lineage::Image,
};

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: Comm,
    /// The program it runs now, linked to the images it came from.
    pub image: Arc<Image>,
    /// Boot-time ns of the exit, when it has exited.
    pub exited_at: Option<u64>,
}

impl ProcEntry {
    pub fn exe(&self) -> &Arc<str> {
        &self.image.exe
    }

    pub fn argv(&self) -> &Arc<[String]> {
        &self.image.argv
    }
}

/// Process counts, for `GetStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcCounts {
    pub live: u64,
    /// Exited, kept for the grace period.
    pub exited: u64,
    /// Removed after their grace period since the agent started.
    pub pruned: u64,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcEntry>,
    /// Exits in arrival order, for pruning: (pid, boot-time ns of the exit).
    exits: std::collections::VecDeque<(u32, u64)>,
    pruned: u64,
    unknown: Option<Arc<Image>>,
}

impl ProcessTable {
    /// A table holding every process now in `proc_root` (normally `/proc`),
    /// each linked to its parent's image.
    pub fn seeded_from(proc_root: &Path) -> Self {
        let mut table = ProcessTable::default();
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return table;
        };
        let mut raw: HashMap<u32, RawProc> = HashMap::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(p) = read_proc(&entry.path()) {
                raw.insert(pid, p);
            }
        }
        let pids: Vec<u32> = raw.keys().copied().collect();
        for pid in pids {
            table.seed(pid, &mut raw);
        }
        table
    }

    /// Inserts `pid` from `raw`, its ancestors first.
    fn seed(&mut self, pid: u32, raw: &mut HashMap<u32, RawProc>) {
        // Walk up to the first ancestor already in the table (or unknown),
        // then insert downwards.
        let mut chain = Vec::new();
        let mut cur = pid;
        while !self.procs.contains_key(&cur) && !chain.contains(&cur) {
            let Some(r) = raw.get(&cur) else { break };
            chain.push(cur);
            cur = r.ppid;
        }
        for pid in chain.into_iter().rev() {
            let Some(r) = raw.remove(&pid) else { continue };
            let parent = self.procs.get(&r.ppid).map(|p| p.image.clone());
            let image = Image::child_of(parent.as_ref(), pid, r.uid, r.exe, r.argv);
            self.procs.insert(
                pid,
                ProcEntry {
                    pid,
                    ppid: r.ppid,
                    uid: r.uid,
                    comm: Comm::new(&r.comm),
                    image,
                    exited_at: None,
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.procs.get(&pid)
    }

    pub fn counts(&self) -> ProcCounts {
        let exited = self
            .procs
            .values()
            .filter(|p| p.exited_at.is_some())
            .count() as u64;
        ProcCounts {
            live: self.procs.len() as u64 - exited,
            exited,
            pruned: self.pruned,
        }
    }

    fn image_of_parent(&self, ppid: u32) -> Option<Arc<Image>> {
        self.procs.get(&ppid).map(|p| p.image.clone())
    }

    /// Updates the table with a record and returns the image the process
    /// runs after it (for an exit: the image it ran).
    pub fn apply(&mut self, rec: &Record) -> Arc<Image> {
        let t = &rec.task;
        match &rec.detail {
            // The child starts as a copy of its parent.
            Detail::Fork { .. } => self.insert_copy_of_parent(t),
            Detail::Exec {
                filename,
                exe,
                argv,
                ..
            } => {
                let path = if exe.is_empty() { filename } else { exe };
                let prev = self
                    .procs
                    .get(&t.pid)
                    .filter(|p| p.exited_at.is_none())
                    .map(|p| p.image.clone());
                let parent = self.image_of_parent(t.ppid);
                let image = Image::execed(
                    prev.as_ref(),
                    parent.as_ref(),
                    t.pid,
                    t.uid,
                    Arc::from(path.as_str()),
                    Arc::from(argv.as_slice()),
                );
                let entry = self.procs.entry(t.pid).or_insert_with(|| ProcEntry {
                    pid: t.pid,
                    ppid: t.ppid,
                    uid: t.uid,
                    comm: Comm::default(),
                    image: image.clone(),
                    exited_at: None,
                });
                entry.ppid = t.ppid;
                entry.uid = t.uid;
                entry.comm = t.comm;
                entry.image = image.clone();
                // An exec recorded after its own process's exit (the two
                // travel in different rings) does not bring it back; an
                // exec after an exit is a new process with a reused pid.
                if entry.exited_at.is_some_and(|x| x < rec.boot_ns) {
                    entry.exited_at = None;
                }
                image
            }
            Detail::Exit { .. } => {
                if let Some(e) = self.procs.get_mut(&t.pid) {
                    e.exited_at = Some(rec.boot_ns);
                    self.exits.push_back((t.pid, rec.boot_ns));
                    return e.image.clone();
                }
                self.unknown(t.pid, t.uid)
            }
            _ => {
                // Other kinds tell us the process exists; it may predate us.
                if let Some(p) = self.procs.get(&t.pid) {
                    return p.image.clone();
                }
                self.insert_copy_of_parent(t)
            }
        }
    }

    /// Enters `t` as running a copy of its parent's image (a fork; or a
    /// process first seen by another event) and returns that image.
    fn insert_copy_of_parent(&mut self, t: &crate::event::Task) -> Arc<Image> {
        let image = match self.image_of_parent(t.ppid) {
            Some(parent) => Image::forked(&parent, t.pid, t.uid),
            None => self.unknown(t.pid, t.uid),
        };
        self.procs.insert(
            t.pid,
            ProcEntry {
                pid: t.pid,
                ppid: t.ppid,
                uid: t.uid,
                comm: t.comm,
                image: image.clone(),
                exited_at: None,
            },
        );
        image
    }

    /// The image `pid` runs, without telling the table anything.
    pub fn image(&mut self, pid: u32) -> Arc<Image> {
        match self.procs.get(&pid) {
            Some(p) => p.image.clone(),
            None => self.unknown(pid, 0),
        }
    }

    /// An image for a process the table knows nothing of.
    fn unknown(&mut self, pid: u32, uid: u32) -> Arc<Image> {
        let proto = self
            .unknown
            .get_or_insert_with(|| Image::root(0, 0, Arc::from(""), Arc::from(Vec::new())));
        Image::root(pid, uid, proto.exe.clone(), proto.argv.clone())
    }

    /// Forgets processes that exited more than `grace_ns` before `now_ns`
    /// (boot-time). Returns how many were removed.
    pub fn prune(&mut self, now_ns: u64, grace_ns: u64) -> usize {
        let mut removed = 0;
        while let Some(&(pid, at)) = self.exits.front() {
            if now_ns.saturating_sub(at) < grace_ns {
                break;
            }
            self.exits.pop_front();
            // The pid may have been reused since; only remove the exited one.
            if self
                .procs
                .get(&pid)
                .is_some_and(|p| p.exited_at == Some(at))
            {
                self.procs.remove(&pid);
                removed += 1;
            }
        }
        self.pruned += removed as u64;
        removed
    }
}

struct RawProc {
    ppid: u32,
    uid: u32,
    comm: String,
    exe: Arc<str>,
    argv: Arc<[String]>,
}

fn read_proc(dir: &Path) -> Option<RawProc> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // comm is in parentheses and may itself contain ") ".
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 2..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(RawProc {
        ppid,
        uid,
        comm,
        exe: Arc::from(exe),
        argv: Arc::from(crate::decode::split_argv(&cmdline)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Task;

    fn rec(pid: u32, ppid: u32, boot_ns: u64, detail: Detail) -> Record {
        Record {
            boot_ns,
            cpu: 0,
            task: Task {
                pid,
                tid: pid,
                ppid,
                uid: 0,
                gid: 0,
                loginuid: None,
                cgroup_id: 1,
                start_ns: 0,
                comm: "x".into(),
                has_tty: false,
            },
            detail,
        }
    }

    #[test]
    fn seeded_table_knows_this_process_and_its_parent() {
        let table = ProcessTable::seeded_from(Path::new("/proc"));
        let me = table.get(std::process::id()).expect("own process");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.exe().ends_with(
            &*std::env::current_exe()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        assert!(!me.argv().is_empty());
        let parent = me.image.parent.as_ref().expect("parent image");
        assert_eq!(parent.pid, me.ppid);
    }

    #[test]
    fn fork_inherits_image_exec_replaces_it_exit_prunes_after_grace() {
        let mut t = ProcessTable::default();
        let exec = |argv: &[&str]| Detail::Exec {
            filename: argv[0].into(),
            exe: argv[0].into(),
            exe_incomplete: false,
            exe_dev: 0,
            exe_ino: 0,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            old_tid: 0,
            argv_truncated: false,
            argv_unreadable: false,
            filename_truncated: false,
            stdin_socket: false,
            not_utf8: crate::event::NotUtf8::NONE,
        };
        t.apply(&rec(10, 1, 0, exec(&["/bin/bash", "-l"])));
        let img = t.apply(&rec(11, 10, 1, Detail::Fork { parent_tid: 10 }));
        assert_eq!(&*img.exe, "/bin/bash");
        assert_eq!(&img.argv[..], ["/bin/bash", "-l"]);
        let img = t.apply(&rec(11, 10, 2, exec(&["/usr/bin/id", "-u"])));
        assert_eq!(&*img.exe, "/usr/bin/id");
        assert_eq!(t.get(11).unwrap().ppid, 10);
        let parents: Vec<u32> = img.ancestors(8).map(|a| a.pid).collect();
        assert_eq!(parents, [10], "the fork copy is not an ancestor");
        let img = t.apply(&rec(11, 10, 100, Detail::Exit { status: 0 }));
        assert_eq!(&*img.exe, "/usr/bin/id");
        assert_eq!(t.counts().exited, 1);
        assert_eq!(t.prune(150, 100), 0, "within grace");
        assert!(t.get(11).is_some());
        assert_eq!(t.prune(200, 100), 1);
        assert_eq!(t.counts().pruned, 1);
        // An exec that arrives after its process's exit keeps it exited.
        t.apply(&rec(12, 10, 300, Detail::Fork { parent_tid: 10 }));
        t.apply(&rec(12, 10, 320, Detail::Exit { status: 0 }));
        t.apply(&rec(12, 10, 310, exec(&["/bin/late"])));
        assert_eq!(t.get(12).unwrap().exited_at, Some(320));
        assert_eq!(t.prune(1000, 100), 1);
        assert!(t.get(11).is_none());
        assert!(t.get(10).is_some());
    }
}
