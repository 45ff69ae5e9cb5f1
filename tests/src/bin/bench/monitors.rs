//! The monitors the agent bench compares, run as their users run them: the
//! release `fdr-agent` with its default configuration, Debian's libbpf-tools
//! `execsnoop` and `opensnoop`, and a `bpftrace` one-liner set — each in a
//! cgroup of its own (its CPU, every thread and child), its BPF programs
//! found by id in its file descriptors (their run time from the kernel's
//! BPF statistics).

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use fdr_proto::v1 as pb;

/// What runs while the workloads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No monitor: the baseline of the wall-clock ratios.
    None,
    Fdr,
    Execsnoop,
    Opensnoop,
    Bpftrace,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::None,
        Kind::Fdr,
        Kind::Execsnoop,
        Kind::Opensnoop,
        Kind::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Fdr => "fdr",
            Kind::Execsnoop => "execsnoop",
            Kind::Opensnoop => "opensnoop",
            Kind::Bpftrace => "bpftrace",
        }
    }

    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::None => "none (no monitor)",
            Kind::Fdr => "**fdr** (default config, all kinds)",
            Kind::Execsnoop => "execsnoop (libbpf-tools)",
            Kind::Opensnoop => "opensnoop (libbpf-tools)",
            Kind::Bpftrace => "bpftrace (exec + write-open printf)",
        }
    }

    /// Why the monitor cannot run here, if it cannot.
    pub fn missing(self, agent: &Path) -> Option<String> {
        let (path, install) = match self {
            Kind::None => return None,
            Kind::Fdr => (agent.to_path_buf(), "cargo build --release -p fdr-agent"),
            Kind::Execsnoop => (PathBuf::from(EXECSNOOP), "install libbpf-tools"),
            Kind::Opensnoop => (PathBuf::from(OPENSNOOP), "install libbpf-tools"),
            Kind::Bpftrace => match which("bpftrace") {
                Some(p) => (p, ""),
                None => return Some("skipped: install bpftrace".into()),
            },
        };
        (!path.exists()).then(|| format!("skipped: {install} ({} missing)", path.display()))
    }
}

const EXECSNOOP: &str = "/usr/sbin/execsnoop";
const OPENSNOOP: &str = "/usr/sbin/opensnoop";

/// Exec and successful write-opens, printed: what a responder would want of
/// fdr's two busiest kinds. The filename pointer is kept from entry to exit
/// (a failed open is not printed).
const BPFTRACE_SCRIPT: &str = r#"tracepoint:syscalls:sys_enter_execve { printf("exec %d %d %s %s\n", pid, uid, comm, str(args->filename)); }
tracepoint:syscalls:sys_enter_openat /args->flags & 3/ { @f[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@f[tid]/ { if (args->ret >= 0) { printf("open %d %d %s %s\n", pid, uid, comm, str(@f[tid])); } delete(@f[tid]); }
"#;

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A started monitor (for [`Kind::None`], nothing runs).
pub struct Monitor {
    pub kind: Kind,
    child: Option<Child>,
    cgroup: Option<PathBuf>,
    /// Its BPF program ids.
    pub progs: Vec<u32>,
    /// Where its output goes (peers), its log (fdr).
    pub output: PathBuf,
    pub socket: PathBuf,
    /// From spawn to ready (fdr: the socket answers GetStats; peers: every
    /// program it loaded has run).
    pub attach: Duration,
}

impl Monitor {
    /// Starts `kind` with its files in `dir` and its processes in cgroup
    /// `cgroup`, and waits until it is ready.
    pub fn start(
        kind: Kind,
        agent: &Path,
        dir: &Path,
        cgroup: &Path,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Monitor> {
        let mut m = Monitor {
            kind,
            child: None,
            cgroup: None,
            progs: Vec::new(),
            output: dir.join(format!("{}.out", kind.name())),
            socket: dir.join("fdr.sock"),
            attach: Duration::ZERO,
        };
        if kind == Kind::None {
            return Ok(m);
        }
        fs::create_dir_all(cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        m.cgroup = Some(cgroup.to_path_buf());
        let mut cmd = match kind {
            Kind::Fdr => {
                let data = dir.join("data");
                let _ = fs::remove_file(&m.socket);
                let mut c = Command::new(agent);
                c.arg("--socket").arg(&m.socket).arg("--data-dir").arg(data);
                c
            }
            Kind::Execsnoop => Command::new(EXECSNOOP),
            Kind::Opensnoop => Command::new(OPENSNOOP),
            Kind::Bpftrace => {
                let script = dir.join("exec-write-open.bt");
                fs::write(&script, BPFTRACE_SCRIPT)?;
                let mut c = Command::new("bpftrace");
                c.arg(script);
                c
            }
            Kind::None => unreachable!("returned above"),
        };
        let out = fs::File::create(&m.output)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())?;
        // SAFETY: only async-signal-safe calls (prctl, open, write, close)
        // on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Gone with the bench, however it ends.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let t = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", kind.name()))?;
        let pid = child.id();
        m.child = Some(child);
        let deadline = t + Duration::from_secs(120);
        if kind == Kind::Fdr {
            let socket = m.socket.clone();
            rt.block_on(async {
                loop {
                    if stats(&socket).await.is_ok() {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!("fdr-agent not answering on {}", socket.display());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })?;
            m.progs = prog_ids(pid);
        } else {
            m.progs = wait_programs_ran(&mut m, pid, deadline)?;
        }
        m.attach = t.elapsed();
        if m.progs.is_empty() {
            bail!("{}: no BPF program found in its descriptors", kind.name());
        }
        Ok(m)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn exited(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                bail!(
                    "{} exited ({st}); its output: {}",
                    self.kind.name(),
                    tail(&self.output)
                );
            }
        }
        Ok(())
    }

    /// CPU time of the monitor's processes so far (µs).
    pub fn cpu_usec(&self) -> u64 {
        let Some(cg) = &self.cgroup else { return 0 };
        fs::read_to_string(cg.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Run time (ns) and runs of the monitor's BPF programs so far.
    pub fn bpf(&self) -> (u64, u64) {
        self.progs
            .iter()
            .filter_map(|&id| prog_stats(id).ok())
            .fold((0, 0), |(t, n), (dt, dn)| (t + dt, n + dn))
    }

    /// VmRSS of the monitor's main process (KiB).
    pub fn rss_kib(&self) -> Option<u64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Stops the monitor as its user would (fdr: SIGTERM, like systemd;
    /// the others: SIGINT, like Ctrl-C, so they flush their output) and
    /// returns the time until it exited.
    pub fn stop(mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let sig = if self.kind == Kind::Fdr {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let t = Instant::now();
        // SAFETY: our child, not yet waited for.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = t + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within 60 s", self.kind.name());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = t.elapsed();
        let fine = status.success() || status.code() == Some(130);
        if !fine && self.kind == Kind::Fdr {
            bail!("fdr-agent exited with {status}: {}", tail(&self.output));
        }
        Ok(took)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = self.cgroup.take() {
            // Exiting tasks may still be accounted for a moment.
            let t = Instant::now();
            while fs::remove_dir(&cg).is_err() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Removes what an earlier bench that was killed left in `dir`: entries
/// named `<prefix><pid>` whose process is gone (cgroups: their empty
/// children first; temporary directories: all of them).
pub fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let path = e.path();
        if path.join("cgroup.procs").exists() {
            for child in fs::read_dir(&path).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = fs::remove_dir(child.path());
                }
            }
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// The last lines of a file, for errors.
fn tail(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// The lost-event counts a peer printed ("Lost N events …" from libbpf's
/// perf buffer callbacks and bpftrace), summed.
pub fn lost_in_output(path: &Path) -> u64 {
    let Ok(bytes) = fs::read(path) else { return 0 };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| {
            let l = l.trim().to_ascii_lowercase();
            let rest = l.strip_prefix("lost ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Lines in a file.
pub fn line_count(path: &Path) -> u64 {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// The agent's GetStats answer.
pub async fn stats(socket: &Path) -> Result<pb::Stats> {
    let mut c = fdr_cli::client::connect_unix(socket).await?;
    Ok(c.get_stats(pb::GetStatsRequest {}).await?.into_inner())
}

/// Waits until a peer's programs are loaded and have all run (an exec, an
/// open and an openat are made to trigger them), and returns their ids.
fn wait_programs_ran(m: &mut Monitor, pid: u32, deadline: Instant) -> Result<Vec<u32>> {
    let probe = CString::new(
        m.output
            .with_extension("probe")
            .as_os_str()
            .as_encoded_bytes(),
    )?;
    let mut last: Vec<u32> = Vec::new();
    loop {
        m.exited()?;
        let ids = prog_ids(pid);
        let ran = ids
            .iter()
            .all(|&id| prog_stats(id).is_ok_and(|(_, n)| n > 0));
        if !ids.is_empty() && ids == last && ran {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            bail!(
                "{}: programs {ids:?} not all running after {:?}",
                m.kind.name(),
                deadline.elapsed()
            );
        }
        last = ids;
        // Trigger every kind of program the peers load.
        let _ = Command::new("/bin/true").status();
        // SAFETY: a valid path; descriptors closed at once.
        unsafe {
            for fd in [
                libc::syscall(
                    libc::SYS_open,
                    probe.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o600,
                ) as i32,
                libc::openat(libc::AT_FDCWD, probe.as_ptr(), libc::O_WRONLY),
            ] {
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// BPF program ids held by process `pid`: its program and link descriptors
/// name them on a `prog_id:` line of their fdinfo.
pub fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Ok(s) = fs::read_to_string(e.path()) else {
            continue;
        };
        ids.extend(s.lines().filter_map(|l| {
            l.strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse::<u32>().ok())
        }));
    }
    ids.into_iter().collect()
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
/// Offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h; `id` is
/// the second u32).
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i32> {
    // SAFETY: attr is a zeroed `union bpf_attr` of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// Turns on the kernel's BPF run-time statistics while the descriptor is
/// held (what `kernel.bpf_stats_enabled=1` does, counted: they go back off
/// by themselves when the bench exits, however it exits).
pub fn enable_stats() -> Result<OwnedFd> {
    let mut attr = [0u64; 16];
    // attr.enable_stats.type = BPF_STATS_RUN_TIME (0).
    let fd = bpf(BPF_ENABLE_STATS, &mut attr).context("BPF_ENABLE_STATS")?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Run time (ns) and run count of program `id`.
pub fn prog_stats(id: u32) -> std::io::Result<(u64, u64)> {
    let mut attr = [0u64; 16];
    attr[0] = id as u64; // prog_id
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = [0u64; 64];
    let mut attr = [0u64; 16];
    // bpf_fd (u32) | info_len (u32), then the info pointer.
    attr[0] = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32 as u64
        | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let len = (attr[0] >> 32) as usize;
    let got_id = (info[0] >> 32) as u32;
    if len < INFO_RUN_CNT + 8 || got_id != id {
        return Err(std::io::Error::other(
            "bpf_prog_info without run statistics",
        ));
    }
    Ok((info[INFO_RUN_TIME_NS / 8], info[INFO_RUN_CNT / 8]))
}
