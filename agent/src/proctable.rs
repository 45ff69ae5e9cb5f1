//! Process table: what the agent knows of each live (and recently exited)
//! process, kept from fork/exec/exit records and seeded from `/proc` at
//! start, so that processes older than the agent have a parent and a
//! command line.

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::event::{Detail, Record};

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Arc<str>,
    pub argv: Arc<[String]>,
    /// Boot-time ns of the exit, when it has exited.
    pub exited_at: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcEntry>,
    /// Exits in arrival order, for pruning: (pid, boot-time ns of the exit).
    exits: std::collections::VecDeque<(u32, u64)>,
    empty_argv: Option<Arc<[String]>>,
    empty_exe: Option<Arc<str>>,
}

impl ProcessTable {
    /// A table holding every process now in `proc_root` (normally `/proc`).
    pub fn seeded_from(proc_root: &Path) -> Self {
        let mut table = ProcessTable::default();
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return table;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(p) = read_proc(&entry.path(), pid) {
                table.procs.insert(pid, p);
            }
        }
        table
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

    /// Updates the table with a record and returns the process's executable
    /// and command line as known after it.
    pub fn apply(&mut self, rec: &Record) -> (Arc<str>, Arc<[String]>) {
        let t = &rec.task;
        match &rec.detail {
            Detail::Fork { .. } => {
                // The child starts as a copy of its parent.
                let (exe, argv) = self.image_of(t.ppid);
                let entry = ProcEntry {
                    pid: t.pid,
                    ppid: t.ppid,
                    uid: t.uid,
                    comm: t.comm.clone(),
                    exe: exe.clone(),
                    argv: argv.clone(),
                    exited_at: None,
                };
                self.procs.insert(t.pid, entry);
                (exe, argv)
            }
            Detail::Exec {
                filename,
                exe,
                argv,
                ..
            } => {
                let path = if exe.is_empty() { filename } else { exe };
                let exe: Arc<str> = Arc::from(path.as_str());
                let argv: Arc<[String]> = Arc::from(argv.as_slice());
                let entry = self.procs.entry(t.pid).or_insert_with(|| ProcEntry {
                    pid: t.pid,
                    ppid: t.ppid,
                    uid: t.uid,
                    comm: String::new(),
                    exe: exe.clone(),
                    argv: argv.clone(),
                    exited_at: None,
                });
                entry.ppid = t.ppid;
                entry.uid = t.uid;
                entry.comm.clone_from(&t.comm);
                entry.exe = exe.clone();
                entry.argv = argv.clone();
                entry.exited_at = None;
                (exe, argv)
            }
            Detail::Exit { .. } => {
                let image = self.image_of(t.pid);
                if let Some(e) = self.procs.get_mut(&t.pid) {
                    e.exited_at = Some(rec.boot_ns);
                    self.exits.push_back((t.pid, rec.boot_ns));
                }
                image
            }
            _ => {
                // Other kinds tell us the process exists; it may predate us.
                if !self.procs.contains_key(&t.pid) {
                    let (exe, argv) = self.image_of(t.pid);
                    self.procs.insert(
                        t.pid,
                        ProcEntry {
                            pid: t.pid,
                            ppid: t.ppid,
                            uid: t.uid,
                            comm: t.comm.clone(),
                            exe,
                            argv,
                            exited_at: None,
                        },
                    );
                }
                self.image_of(t.pid)
            }
        }
    }

    fn image_of(&mut self, pid: u32) -> (Arc<str>, Arc<[String]>) {
        match self.procs.get(&pid) {
            Some(p) => (p.exe.clone(), p.argv.clone()),
            None => (
                self.empty_exe.get_or_insert_with(|| Arc::from("")).clone(),
                self.empty_argv
                    .get_or_insert_with(|| Arc::from(Vec::new()))
                    .clone(),
            ),
        }
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
        removed
    }
}

fn read_proc(dir: &Path, pid: u32) -> Option<ProcEntry> {
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
    Some(ProcEntry {
        pid,
        ppid,
        uid,
        comm,
        exe: Arc::from(exe),
        argv: Arc::from(crate::decode::split_argv(&cmdline)),
        exited_at: None,
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
        assert!(me.exe.ends_with(
            &*std::env::current_exe()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        assert!(!me.argv.is_empty());
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
        };
        t.apply(&rec(10, 1, 0, exec(&["/bin/bash", "-l"])));
        let (exe, argv) = t.apply(&rec(11, 10, 1, Detail::Fork { parent_tid: 10 }));
        assert_eq!(&*exe, "/bin/bash");
        assert_eq!(&argv[..], ["/bin/bash", "-l"]);
        let (exe, _) = t.apply(&rec(11, 10, 2, exec(&["/usr/bin/id", "-u"])));
        assert_eq!(&*exe, "/usr/bin/id");
        assert_eq!(t.get(11).unwrap().ppid, 10);
        let (exe, _) = t.apply(&rec(11, 10, 100, Detail::Exit { status: 0 }));
        assert_eq!(&*exe, "/usr/bin/id");
        assert_eq!(t.prune(150, 100), 0, "within grace");
        assert!(t.get(11).is_some());
        assert_eq!(t.prune(200, 100), 1);
        assert!(t.get(11).is_none());
        assert!(t.get(10).is_some());
    }
}
