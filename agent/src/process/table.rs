//! Process table: what the agent knows of each live (and recently exited)
//! process, kept from fork/exec/exit records and seeded from `/proc` at
//! start, so that processes older than the agent have a parent and a
//! command line.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    event::lineage::Image,
    event::{Comm, Detail, Record},
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
    /// `CLOCK_MONOTONIC` ns the thread-group leader started at (the
    /// kernel's `task_struct.start_time`); 0 when unknown. Tells a process
    /// from a later one with its pid.
    pub start_ns: u64,
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
    /// Marked exited because they were gone from `/proc` though their exit
    /// record never arrived (lost to a full ring), since the agent started.
    pub reaped: u64,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcEntry>,
    /// Exits in arrival order, for pruning: (pid, boot-time ns of the exit).
    exits: std::collections::VecDeque<(u32, u64)>,
    pruned: u64,
    unknown: Option<Arc<Image>>,
    /// The sweep that finds processes whose exit record was lost.
    sweep: Sweep,
    /// The `/proc` it was seeded from and that the sweep reads (`None`:
    /// `/proc`; the host's, `<root>/proc`, under a host root).
    proc_root: Option<PathBuf>,
}

impl ProcessTable {
    /// A table holding every process now in `proc_root` (normally `/proc`),
    /// each linked to its parent's image.
    pub fn seeded_from(proc_root: &Path) -> Self {
        let mut table = ProcessTable {
            proc_root: (proc_root != Path::new("/proc")).then(|| proc_root.to_path_buf()),
            ..ProcessTable::default()
        };
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
                    start_ns: r.start_ns,
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
            reaped: self.sweep.reaped,
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
            // The child starts as a copy of its parent — unless the table
            // already knows this very process (same start time) from a
            // record of its that was recorded first: an exec read from the
            // critical ring ahead of its fork is not undone by the fork.
            Detail::Fork { .. } => match self.procs.get_mut(&t.pid) {
                Some(p) if t.start_ns != 0 && p.start_ns == t.start_ns => {
                    p.ppid = t.ppid;
                    p.image.clone()
                }
                _ => self.insert_copy_of_parent(t),
            },
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
                    start_ns: t.start_ns,
                });
                entry.ppid = t.ppid;
                if t.start_ns != 0 {
                    entry.start_ns = t.start_ns;
                }
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
                start_ns: t.start_ns,
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

/// How often a sweep looks for processes whose exit record was lost, while
/// exits may be missed (see [`sweep_dropped_exits`]).
pub const SWEEP_EVERY_NS: u64 = 2_000_000_000;
/// How often otherwise: a safety net that keeps an idle agent idle.
pub const SWEEP_CALM_EVERY_NS: u64 = 30_000_000_000;
/// Live processes checked against `/proc` per sweep (each an open and a
/// read of `/proc/<pid>/stat` on a blocking thread): the whole table is
/// covered in table size / this many sweeps.
const SWEEP_BATCH: usize = 1024;
/// How long a process found gone stays "live" before it is reaped: its
/// exit record may still be in the ring, behind a backlog.
const REAP_AFTER_NS: u64 = 5_000_000_000;
/// Processes found gone and waiting for [`REAP_AFTER_NS`], at most.
const MAX_SUSPECTS: usize = 1 << 16;
/// Slack of the start-time comparison: `/proc` counts clock ticks.
const START_SLACK_TICKS: u64 = 2;

/// The state of the sweep that reaps processes whose exit was lost.
#[derive(Debug, Default)]
struct Sweep {
    /// Pids above this are checked next (round robin over the table).
    cursor: u32,
    /// Boot-time ns of the last sweep start.
    last_ns: u64,
    /// A batch is being checked on a blocking thread.
    in_flight: bool,
    /// (pid, start_ns, boot-time ns found gone), oldest first.
    suspects: std::collections::VecDeque<(u32, u64, u64)>,
    reaped: u64,
    /// Full passes over the table so far.
    passes: u64,
    /// Whether the `/proc` swept shows the kernel's pids (checked once).
    kernel_pids: Option<bool>,
}

impl ProcessTable {
    /// The next batch of up to `max` live processes (pid, start_ns) to
    /// check, round robin by pid.
    fn next_batch(&mut self, max: usize) -> Vec<(u32, u64)> {
        let cursor = self.sweep.cursor;
        let mut live: Vec<(u32, u64)> = self
            .procs
            .values()
            .filter(|p| p.exited_at.is_none())
            .map(|p| (p.pid, p.start_ns))
            .collect();
        // Those after the cursor first, then from the start (wrap around).
        let key = |&(pid, _): &(u32, u64)| (pid <= cursor, pid);
        if live.len() > max {
            live.select_nth_unstable_by_key(max, key);
            live.truncate(max);
        }
        live.sort_unstable_by_key(key);
        self.sweep.cursor = match live.last() {
            Some(&(pid, _)) if live.len() == max => pid,
            _ => {
                self.sweep.passes += 1;
                0
            }
        };
        live
    }

    /// Notes processes a sweep found gone from `/proc` at `now_ns`.
    fn note_gone(&mut self, gone: &[(u32, u64)], now_ns: u64) {
        for &(pid, start) in gone {
            if self.sweep.suspects.len() >= MAX_SUSPECTS {
                break;
            }
            self.sweep.suspects.push_back((pid, start, now_ns));
        }
    }

    /// Marks exited the processes found gone at least `after_ns` before
    /// `now_ns` that are still live here, the same process (start time)
    /// as the one checked: their exit record was lost. Returns how many.
    fn reap_suspects(&mut self, now_ns: u64, after_ns: u64) -> usize {
        let mut reaped = 0;
        while let Some(&(pid, start, at)) = self.sweep.suspects.front() {
            if now_ns.saturating_sub(at) < after_ns {
                break;
            }
            self.sweep.suspects.pop_front();
            if let Some(e) = self.procs.get_mut(&pid) {
                if e.exited_at.is_none() && e.start_ns == start {
                    e.exited_at = Some(now_ns);
                    self.exits.push_back((pid, now_ns));
                    reaped += 1;
                }
            }
        }
        self.sweep.reaped += reaped as u64;
        reaped
    }
}

/// Periodic, from the pipeline's housekeeping: reaps the processes whose
/// exit record was lost (found gone from `/proc` a while ago and still
/// "live" here), and starts checking the next batch against `/proc` on a
/// blocking thread, without the table's lock held while it reads. Cheap
/// when not due: every [`SWEEP_EVERY_NS`] while exits may be missed
/// (`eager`: exit records dropped or not captured, the first moments after
/// start), until the first full pass over the table is done, and while
/// processes found gone wait to be reaped; else every
/// [`SWEEP_CALM_EVERY_NS`]. Does nothing outside the initial pid namespace
/// (the kernel's pids would not be ours to look up).
pub fn sweep_dropped_exits(table: &Arc<std::sync::Mutex<ProcessTable>>, eager: bool) {
    let now = crate::pipeline::clock::BootClock::boot_now_ns();
    let (batch, proc_root) = {
        let mut procs = crate::util::lock(table);
        let proc_root = procs.proc_root.clone();
        let kernel_pids = *procs
            .sweep
            .kernel_pids
            .get_or_insert_with(|| match &proc_root {
                None => host_pid_namespace(),
                Some(p) => initial_pid_namespace_proc(p),
            });
        if !kernel_pids {
            return;
        }
        let every_ns = if eager || procs.sweep.passes == 0 || !procs.sweep.suspects.is_empty() {
            SWEEP_EVERY_NS
        } else {
            SWEEP_CALM_EVERY_NS
        };
        if procs.sweep.in_flight || now.saturating_sub(procs.sweep.last_ns) < every_ns {
            return;
        }
        procs.sweep.last_ns = now;
        let reaped = procs.reap_suspects(now, REAP_AFTER_NS);
        if reaped > 0 {
            tracing::debug!(reaped, "processes whose exit record was lost reaped");
        }
        procs.sweep.in_flight = true;
        (procs.next_batch(SWEEP_BATCH), proc_root)
    };
    let table = table.clone();
    tokio::task::spawn_blocking(move || {
        let proc_root = proc_root.as_deref().unwrap_or(Path::new("/proc"));
        let gone = gone_from_proc(proc_root, &batch);
        let mut procs = crate::util::lock(&table);
        procs.note_gone(&gone, crate::pipeline::clock::BootClock::boot_now_ns());
        procs.sweep.in_flight = false;
    });
}

/// Those of `batch` (pid, start_ns) that no longer run: no
/// `/proc/<pid>`, or one started at another time (the pid was reused).
fn gone_from_proc(proc_root: &Path, batch: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let slack = START_SLACK_TICKS * tick_ns();
    let offset = boot_minus_monotonic_ns();
    batch
        .iter()
        .copied()
        .filter(|&(pid, start)| match proc_start_boot_ns(proc_root, pid) {
            Err(e) => {
                e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
            }
            // Unknown start (or unreadable stat): existence is all we know.
            Ok(None) => false,
            Ok(Some(_)) if start == 0 => false,
            // The boot-time start is the monotonic one plus the time
            // suspended before it started, at most the total so far.
            Ok(Some(boot)) => {
                boot.saturating_add(slack) < start
                    || boot > start.saturating_add(offset).saturating_add(slack)
            }
        })
        .collect()
}

/// The start of `pid` from `/proc/<pid>/stat` (field 22), in boot-time ns.
fn proc_start_boot_ns(proc_root: &Path, pid: u32) -> std::io::Result<Option<u64>> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))?;
    let Some(close) = stat.rfind(')') else {
        return Ok(None);
    };
    let ticks = stat
        .get(close + 1..)
        .and_then(|rest| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse::<u64>().ok());
    Ok(ticks.map(|t| t.saturating_mul(tick_ns())))
}

/// Nanoseconds per clock tick of `/proc` times.
fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz)
        .ok()
        .filter(|&h| h > 0)
        .map_or(10_000_000, |h| 1_000_000_000 / h)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Time spent suspended since boot (`CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`).
fn boot_minus_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC))
}

/// Whether this process and its `/proc` are in the initial pid namespace,
/// where the kernel's pids are the ones `/proc` shows.
fn host_pid_namespace() -> bool {
    static HOST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        // PROC_PID_INIT_INO: the initial pid namespace's inode number.
        const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
        let ns = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino());
        let own_proc = std::fs::read_link("/proc/self")
            .is_ok_and(|p| p.to_str() == Some(&std::process::id().to_string()));
        let host = ns.is_ok_and(|i| i == PROC_PID_INIT_INO) && own_proc;
        if !host {
            tracing::info!(
                "not in the initial pid namespace: processes whose exit was lost are not reaped"
            );
        }
        host
    })
}

/// Whether the `/proc` at `proc` (the host's, under a host root) shows
/// the initial pid namespace, whose pids the kernel's records carry: its
/// pid 1 is in it, or (when pid 1's namespace cannot be read) the agent
/// runs in it and sees itself there.
fn initial_pid_namespace_proc(proc: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    let host = match std::fs::metadata(proc.join("1/ns/pid")) {
        Ok(m) => m.ino() == PROC_PID_INIT_INO,
        Err(_) => {
            std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
                && std::fs::read_link(proc.join("self"))
                    .is_ok_and(|p| p.to_str() == Some(&std::process::id().to_string()))
        }
    };
    if !host {
        tracing::info!(
            proc = %proc.display(),
            "the host root's /proc is not the initial pid namespace's: processes whose exit was lost are not reaped"
        );
    }
    host
}

struct RawProc {
    ppid: u32,
    /// Monotonic ns, estimated from `/proc/<pid>/stat`'s boot-time start.
    start_ns: u64,
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
    // Field 22 (the 20th after the comm); boot time → monotonic.
    let start_ns = rest
        .nth(17)
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(0, |ticks| {
            (ticks.saturating_mul(tick_ns())).saturating_sub(boot_minus_monotonic_ns())
        });
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
        start_ns,
        uid,
        comm,
        exe: Arc::from(exe),
        argv: Arc::from(crate::pipeline::decode::split_argv(&cmdline)),
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

    fn forked(t: &mut ProcessTable, pid: u32, start_ns: u64) {
        let mut r = rec(pid, 1, 0, Detail::Fork { parent_tid: 1 });
        r.task.start_ns = start_ns;
        t.apply(&r);
    }

    #[test]
    fn sweep_batches_go_round_robin_over_live_processes() {
        let mut t = ProcessTable::default();
        for pid in 1..=10 {
            forked(&mut t, pid, 1000 + u64::from(pid));
        }
        t.apply(&rec(3, 1, 5, Detail::Exit { status: 0 }));
        let pids = |b: Vec<(u32, u64)>| b.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(pids(t.next_batch(4)), [1, 2, 4, 5]);
        assert_eq!(pids(t.next_batch(4)), [6, 7, 8, 9]);
        assert_eq!(pids(t.next_batch(4)), [10, 1, 2, 4]);
        assert_eq!(pids(t.next_batch(100)).len(), 9);
        assert_eq!(
            pids(t.next_batch(4)),
            [1, 2, 4, 5],
            "a short batch restarts"
        );
    }

    #[test]
    fn gone_from_proc_spots_missing_and_reused_pids() {
        let me = std::process::id();
        let boot = proc_start_boot_ns(Path::new("/proc"), me)
            .unwrap()
            .expect("own start");
        let mono = boot.saturating_sub(boot_minus_monotonic_ns());
        let absent = 0x7fff_fff0; // above any pid_max
        let batch = [
            (me, mono),                                // this process: running
            (me, 0),                                   // start unknown: exists, so running
            (me, mono + 10_000_000_000),               // a later process with this pid
            (me, mono.saturating_sub(10_000_000_000)), // an earlier one
            (absent, 5),
        ];
        let gone = gone_from_proc(Path::new("/proc"), &batch);
        assert_eq!(gone, [batch[2], batch[3], batch[4]]);
        // The seeded table's estimate of our own start matches /proc.
        let seeded = ProcessTable::seeded_from(Path::new("/proc"));
        let entry = seeded.get(me).unwrap();
        assert!(gone_from_proc(Path::new("/proc"), &[(me, entry.start_ns)]).is_empty());
    }

    #[test]
    fn suspects_are_reaped_after_a_delay_unless_their_exit_arrived() {
        let mut t = ProcessTable::default();
        forked(&mut t, 20, 100);
        forked(&mut t, 21, 100);
        forked(&mut t, 22, 100);
        t.note_gone(&[(20, 100), (21, 100), (22, 99)], 1_000);
        // 21's exit record arrives late, within the delay.
        t.apply(&rec(21, 1, 1_100, Detail::Exit { status: 0 }));
        assert_eq!(t.reap_suspects(1_500, 1_000), 0, "too early");
        assert_eq!(t.counts().live, 2);
        // 20 is reaped; 21 exited by its record; 22 is another process
        // than the one checked (other start).
        assert_eq!(t.reap_suspects(2_000, 1_000), 1);
        assert_eq!(t.get(20).unwrap().exited_at, Some(2_000));
        assert_eq!(t.get(21).unwrap().exited_at, Some(1_100));
        assert_eq!(t.get(22).unwrap().exited_at, None);
        let c = t.counts();
        assert_eq!((c.live, c.exited, c.reaped), (1, 2, 1));
        // Reaped ones are pruned after the grace like any exited one.
        assert_eq!(t.prune(2_000 + 500, 500), 2);
        assert!(t.get(20).is_none());
    }

    #[test]
    fn a_host_roots_proc_is_swept_when_it_shows_the_kernels_pids() {
        let dir = std::env::temp_dir().join(format!("fdr-procroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/proc", dir.join("proc")).unwrap();
        let proc = dir.join("proc");
        let t = ProcessTable::seeded_from(&proc);
        assert_eq!(t.proc_root.as_deref(), Some(proc.as_path()));
        assert!(t.get(std::process::id()).is_some());
        assert_eq!(initial_pid_namespace_proc(&proc), host_pid_namespace());
        assert!(!initial_pid_namespace_proc(&dir.join("nothing")));
        assert_eq!(
            ProcessTable::seeded_from(Path::new("/proc")).proc_root,
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
        let exec = |argv: &[&str]| crate::event::test_support::exec_detail(argv[0], argv[0], argv);
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
        // An exec recorded ahead of its own fork (they travel in different
        // rings) is not undone by the fork; a fork of another process
        // with the same pid (another start) replaces the entry.
        let with_start = |mut r: Record, start_ns: u64| {
            r.task.start_ns = start_ns;
            r
        };
        t.apply(&with_start(
            rec(13, 10, 1010, exec(&["/usr/sbin/useradd", "u"])),
            500,
        ));
        let img = t.apply(&with_start(
            rec(13, 10, 1000, Detail::Fork { parent_tid: 10 }),
            500,
        ));
        assert_eq!(&*img.exe, "/usr/sbin/useradd");
        assert_eq!(&*t.get(13).unwrap().image.exe, "/usr/sbin/useradd");
        t.apply(&with_start(
            rec(13, 10, 1020, Detail::Exit { status: 0 }),
            500,
        ));
        let img = t.apply(&with_start(
            rec(13, 10, 1030, Detail::Fork { parent_tid: 10 }),
            900,
        ));
        assert_eq!(&*img.exe, "/bin/bash", "a new process with the pid");
    }
}
