//! Stage 1, probes: loads the kernel programs (`ebpf/probes`), sizes
//! their ring buffers, fills their filter maps (the agent's own pid, the
//! watched files from [`watch`]) and attaches them to tracepoints.
//!
//! Takes: the config. Gives: the rings the pipeline reads ([`Rings`]) and
//! the loaded programs' drop counters. Imports: the foundation only.

pub mod btf;
pub mod offsets;
pub mod syscalls;
pub mod tracefs;
pub mod watch;

use std::path::Path;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, RawTracePoint,
        TracePoint,
    },
    Ebpf, EbpfLoader,
};
use fdr_common::{
    globals, maps, op, sys_tp, DropKey, EventKind, InodeKey, KernelOffsets, Prefixes, MAX_KINDS,
    SENSITIVE_WORDS,
};

/// The kernel programs, built by this crate's build script.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FDR_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("resolving kernel structure offsets: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("raising RLIMIT_MEMLOCK: {0}")]
    Rlimit(std::io::Error),
    #[error("loading the eBPF object: {0}{hint}", hint = privilege_hint(.0))]
    Load(#[source] aya::EbpfError),
    #[error("loading program {name}: {source}{hint}", hint = privilege_hint(source))]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching program {name} to {target}: {source}")]
    Attach {
        name: &'static str,
        target: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
    #[error(
        "no usable syscalls:sys_exit_* tracepoint on this kernel (tracefs {0}): file, network \
         and credential changes cannot be watched (a kernel without CONFIG_FTRACE_SYSCALLS?)"
    )]
    NoSyscallTracepoints(String),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn privilege_hint(err: &dyn std::error::Error) -> &'static str {
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if s.contains("Operation not permitted") || s.contains("Permission denied") {
            return " (fdr-agent must run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)";
        }
        cur = e.source();
    }
    ""
}

/// Settings for loading the programs.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Size of the ring of all but the critical kinds, in bytes (rounded up
    /// to a power of two, at least a page).
    pub ring_bytes: u32,
    /// Size of the critical kinds' ring, likewise.
    pub critical_ring_bytes: u32,
    /// Process id whose events never leave the kernel (the agent's own).
    pub agent_tgid: u32,
    /// Kinds to capture (others are dropped in the kernel).
    pub kinds: Vec<EventKind>,
    /// Prefixes of absolute paths: excluded or critical.
    pub prefixes: Prefixes,
}

/// Where a program attaches.
#[derive(Debug, Clone)]
enum Hook {
    Tracepoint(&'static str, String),
    Raw(&'static str),
}

/// Programs by kind of hook (each loaded once; the syscall programs are
/// attached to the tracepoints of every watched syscall).
const TRACEPOINT_PROGRAMS: &[&str] = &[
    "fdr_exec",
    "fdr_exit",
    sys_tp::EXIT_PROGRAM,
    sys_tp::ENTER_PROGRAMS[0],
    sys_tp::ENTER_PROGRAMS[1],
    sys_tp::ENTER_PROGRAMS[2],
    sys_tp::ENTER_PROGRAMS[3],
    sys_tp::ENTER_PROGRAMS[4],
    sys_tp::ENTER_PROGRAMS[5],
];
const RAW_PROGRAMS: &[&str] = &["fdr_fork"];

/// The process lifecycle attachments: program and hook.
fn process_hooks() -> Vec<(&'static str, Hook)> {
    vec![
        ("fdr_fork", Hook::Raw("sched_process_fork")),
        (
            "fdr_exec",
            Hook::Tracepoint("sched", "sched_process_exec".into()),
        ),
        (
            "fdr_exit",
            Hook::Tracepoint("sched", "sched_process_exit".into()),
        ),
    ]
}

/// The syscall attachments: `syscalls:sys_exit_<name>` of every watched
/// syscall, and its `sys_enter_<name>` when its exit needs the state
/// before the call (credential changes, fchmod): the others' exit reads
/// the arguments from the saved registers. Each tracepoint attached costs
/// the kernel an RCU grace period when it is detached, so fewer is faster. Returns them
/// with the names of the watched syscalls this kernel has no tracepoints
/// for, or whose records are laid out unlike the others (not attached).
fn syscall_hooks(
    tracefs: &Path,
    offs: &KernelOffsets,
) -> (Vec<(&'static str, Hook)>, Vec<&'static str>) {
    let mut hooks = Vec::new();
    let mut missing = Vec::new();
    for sc in syscalls::SYSCALLS {
        let needs_enter = sc.op == op::CRED || sc.op == op::FCHMOD;
        let enter = format!("sys_enter_{}", sc.name);
        let exit = format!("sys_exit_{}", sc.name);
        let format = |tp: &str| {
            tracefs::Format::read(tracefs, "syscalls", tp)
                .ok()
                .filter(|f| f.offset(offsets::SYSCALL_NR).ok() == Some(offs.tp_sys_nr))
        };
        let exit_fits =
            || format(&exit).is_some_and(|f| f.offset("ret").ok() == Some(offs.tp_sys_ret));
        // The entry program that reads exactly this syscall's arguments.
        let enter_program = || {
            let f = format(&enter)?;
            if f.offset_after(offsets::SYSCALL_NR) != Some(offs.tp_sys_args) {
                return None;
            }
            let n = f.args_after(offsets::SYSCALL_NR);
            sys_tp::ENTER_PROGRAMS.get(n.checked_sub(1)?).copied()
        };
        if offs.tp_sys_nr == u32::MAX || !exit_fits() {
            missing.push(sc.name);
            continue;
        }
        if needs_enter {
            let Some(program) = enter_program() else {
                missing.push(sc.name);
                continue;
            };
            hooks.push((program, Hook::Tracepoint("syscalls", enter)));
        }
        hooks.push((sys_tp::EXIT_PROGRAM, Hook::Tracepoint("syscalls", exit)));
    }
    (hooks, missing)
}

enum Link {
    Tracepoint(&'static str, TracePointLinkId),
    Raw(&'static str, RawTracePointLinkId),
}

/// The two rings events arrive on.
pub struct Rings {
    /// Everything but the critical kinds.
    pub events: RingBuf<MapData>,
    /// Critical kinds, so that floods of others cannot crowd them out.
    pub critical: RingBuf<MapData>,
    /// The reader's sleep flag.
    pub sleep: ReaderSleep,
}

/// Tells the programs whether the reader sleeps.
pub struct ReaderSleep(Array<MapData, u32>);

impl ReaderSleep {
    /// `true`: the next record of either ring wakes the reader at once,
    /// however little is pending. `false` (awake): it is woken only when a
    /// ring is an eighth full, and otherwise reads on its own poll tick.
    pub fn set(&mut self, asleep: bool) -> Result<(), ProbeError> {
        self.0
            .set(0, u32::from(asleep), 0)
            .map_err(|source| ProbeError::Map {
                name: maps::READER,
                source,
            })
    }
}

/// The loaded programs and the maps user space reads and writes.
pub struct Probes {
    ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    scope_drops: PerCpuHashMap<MapData, DropKey, u64>,
    watch: HashMap<MapData, InodeKey, u32>,
    sensitive_bits: Array<MapData, [u64; SENSITIVE_WORDS]>,
    hooks: Vec<(&'static str, Hook)>,
    links: Vec<Link>,
    /// Watched syscalls without tracepoints on this kernel (not watched).
    missing_syscalls: Vec<&'static str>,
}

impl Probes {
    /// Loads the programs into the kernel (not yet attached) and returns them
    /// with the ring buffers the events arrive on.
    pub fn load(opts: &ProbeOptions) -> Result<(Self, Rings), ProbeError> {
        let tracefs = tracefs::ensure_mounted()?;
        raise_memlock()?;
        let kernel_btf = btf::Btf::from_kernel()?;
        let offs = offsets::resolve(&kernel_btf, &tracefs)?;
        let mut hooks = process_hooks();
        let (sys_hooks, missing_syscalls) = syscall_hooks(&tracefs, &offs);
        if sys_hooks.is_empty() {
            return Err(ProbeError::NoSyscallTracepoints(
                tracefs.display().to_string(),
            ));
        }
        hooks.extend(sys_hooks);
        if !missing_syscalls.is_empty() {
            tracing::warn!(
                syscalls = %missing_syscalls.join(","),
                "no usable syscalls:sys_enter_/sys_exit_ tracepoints for these syscalls on this \
                 kernel: they are not watched"
            );
        }
        let ring_bytes = opts.ring_bytes.next_power_of_two().max(4096);
        let critical_bytes = opts.critical_ring_bytes.next_power_of_two().max(4096);
        let enabled: u64 = opts.kinds.iter().fold(0, |m, k| m | 1 << (*k as u64));
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OFFSETS, &offs, true)
            .override_global(globals::AGENT_TGID, &opts.agent_tgid, true)
            .override_global(
                globals::WAKEUP_BYTES,
                &wakeup_bytes(ring_bytes.min(critical_bytes)),
                true,
            )
            .override_global(globals::ENABLED_KINDS, &enabled, true)
            .override_global(globals::PREFIXES, &opts.prefixes, true)
            .map_max_entries(maps::EVENTS, ring_bytes)
            .map_max_entries(maps::CRITICAL, critical_bytes)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        for &name in TRACEPOINT_PROGRAMS {
            let prog = ebpf.program_mut(name).ok_or(ProbeError::NoMap(name))?;
            <&mut TracePoint>::try_from(prog)
                .and_then(|p| p.load())
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        for &name in RAW_PROGRAMS {
            let prog = ebpf.program_mut(name).ok_or(ProbeError::NoMap(name))?;
            <&mut RawTracePoint>::try_from(prog)
                .and_then(|p| p.load())
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        let mut table: Array<MapData, u8> = typed_map(&mut ebpf, maps::SYSCALLS)?;
        for sc in syscalls::SYSCALLS {
            table
                .set(sc.nr as u32, sc.op, 0)
                .map_err(|source| ProbeError::Map {
                    name: maps::SYSCALLS,
                    source,
                })?;
        }
        let rings = Rings {
            events: typed_map(&mut ebpf, maps::EVENTS)?,
            critical: typed_map(&mut ebpf, maps::CRITICAL)?,
            sleep: ReaderSleep(typed_map(&mut ebpf, maps::READER)?),
        };
        Ok((
            Probes {
                drops: typed_map(&mut ebpf, maps::DROPS)?,
                scope_drops: typed_map(&mut ebpf, maps::SCOPE_DROPS)?,
                watch: typed_map(&mut ebpf, maps::WATCH)?,
                sensitive_bits: typed_map(&mut ebpf, maps::SENSITIVE_BITS)?,
                ebpf,
                hooks,
                links: Vec::new(),
                missing_syscalls,
            },
            rings,
        ))
    }

    /// Replaces the watched inodes with `entries`.
    ///
    /// New entries go in before the bitmap of sensitive inode numbers is
    /// rewritten, stale ones out after: a program that sees a bit always
    /// finds the entry it stands for.
    pub fn set_watch(
        &mut self,
        entries: &std::collections::HashMap<InodeKey, u32>,
    ) -> Result<(), ProbeError> {
        let err = |source| ProbeError::Map {
            name: maps::WATCH,
            source,
        };
        for (k, v) in entries {
            self.watch.insert(k, v, 0).map_err(err)?;
        }
        let mut bits = Box::new([0u64; SENSITIVE_WORDS]);
        for (k, v) in entries {
            if v & fdr_common::watch::SENSITIVE != 0 {
                let (word, bit) = fdr_common::sensitive_bit(k.ino);
                bits[word] |= bit;
            }
        }
        self.sensitive_bits
            .set(0, *bits, 0)
            .map_err(|source| ProbeError::Map {
                name: maps::SENSITIVE_BITS,
                source,
            })?;
        let stale: Vec<InodeKey> = self
            .watch
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !entries.contains_key(k))
            .collect();
        for k in stale {
            self.watch.remove(&k).map_err(err)?;
        }
        Ok(())
    }

    /// Watched syscalls this kernel has no (usable) tracepoints for: their
    /// events are not captured.
    pub fn missing_syscalls(&self) -> &[&'static str] {
        &self.missing_syscalls
    }

    /// Attaches every program to its hooks (no-op when attached).
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let res = self.attach_all();
        tracing::info!(
            tracepoints = self.links.len(),
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "attached the kernel programs"
        );
        res
    }

    fn attach_all(&mut self) -> Result<(), ProbeError> {
        for (name, hook) in &self.hooks {
            let name = *name;
            let prog = self.ebpf.program_mut(name).ok_or(ProbeError::NoMap(name))?;
            let link = match hook {
                Hook::Tracepoint(cat, tp) => <&mut TracePoint>::try_from(prog)
                    .and_then(|p| p.attach(cat, tp))
                    .map(|id| Link::Tracepoint(name, id)),
                Hook::Raw(tp) => <&mut RawTracePoint>::try_from(prog)
                    .and_then(|p| p.attach(tp))
                    .map(|id| Link::Raw(name, id)),
            };
            let target = match hook {
                Hook::Tracepoint(_, tp) => tp.clone(),
                Hook::Raw(tp) => (*tp).to_owned(),
            };
            self.links.push(link.map_err(|source| ProbeError::Attach {
                name,
                target,
                source,
            })?);
        }
        Ok(())
    }

    /// Detaches every program; the maps and the ring buffer stay.
    pub fn detach(&mut self) -> Result<(), ProbeError> {
        let started = std::time::Instant::now();
        let n = self.links.len();
        let res = self.detach_all();
        tracing::info!(
            tracepoints = n,
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "detached the kernel programs"
        );
        res
    }

    fn detach_all(&mut self) -> Result<(), ProbeError> {
        for link in self.links.drain(..) {
            let (name, res) = match link {
                Link::Tracepoint(name, id) => (
                    name,
                    self.ebpf
                        .program_mut(name)
                        .ok_or(ProbeError::NoMap(name))
                        .map(|p| <&mut TracePoint>::try_from(p).and_then(|p| p.detach(id))),
                ),
                Link::Raw(name, id) => (
                    name,
                    self.ebpf
                        .program_mut(name)
                        .ok_or(ProbeError::NoMap(name))
                        .map(|p| <&mut RawTracePoint>::try_from(p).and_then(|p| p.detach(id))),
                ),
            };
            res?.map_err(|source| ProbeError::Attach {
                name,
                target: "(detach)".into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Records the ring buffer refused so far, per kind, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(EventKind, u64)>, ProbeError> {
        let mut out = Vec::new();
        for kind in EventKind::ALL {
            let per_cpu = self
                .drops
                .get(&(kind as u32), 0)
                .map_err(|source| ProbeError::Map {
                    name: maps::DROPS,
                    source,
                })?;
            out.push((kind, per_cpu.iter().sum()));
        }
        debug_assert!(out.len() <= MAX_KINDS as usize);
        Ok(out)
    }
}

impl Probes {
    /// Records refused per cgroup and kind, summed over CPUs, since the
    /// programs were loaded (as far as the map remembers: the least recently
    /// dropping cgroups are forgotten beyond its size).
    pub fn scope_drops(&self) -> Result<Vec<(u64, EventKind, u64)>, ProbeError> {
        let mut out = Vec::new();
        for entry in self.scope_drops.iter() {
            let (key, per_cpu) = entry.map_err(|source| ProbeError::Map {
                name: maps::SCOPE_DROPS,
                source,
            })?;
            let Some(kind) = u16::try_from(key.kind).ok().and_then(EventKind::from_raw) else {
                continue;
            };
            out.push((key.cgroup_id, kind, per_cpu.iter().sum()));
        }
        Ok(out)
    }
}

/// Pending bytes at which the kernel wakes the reader early: an eighth of
/// the ring, so a burst is drained well before it fills, while ordinary
/// traffic waits for the reader's poll tick.
fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8)
}

/// Takes map `name` out of the object as its typed handle.
fn typed_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn raise_memlock() -> Result<(), ProbeError> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        let err = std::io::Error::last_os_error();
        // Kernels ≥ 5.11 charge BPF memory to the cgroup; the limit is moot there.
        tracing::debug!(%err, "could not raise RLIMIT_MEMLOCK");
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(ProbeError::Rlimit(err));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
";

    fn write_format(root: &Path, tp: &str, fields: &str) {
        let dir = root.join("events/syscalls").join(tp);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("format"),
            format!("name: {tp}\nID: 1\nformat:\n{COMMON}{fields}\nprint fmt: \"\"\n"),
        )
        .unwrap();
    }

    fn exit_fields() -> &'static str {
        "\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n"
    }

    #[test]
    fn syscall_hooks_attach_what_the_kernel_has_and_name_the_rest() {
        let root = std::env::temp_dir().join(format!("fdr-tracefs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // openat: exit only; setuid: entry (1 argument) and exit;
        // setresuid: entry with 3 arguments; connect: exit only;
        // setgid: its entry record is laid out differently (skipped).
        write_format(&root, "sys_exit_openat", exit_fields());
        write_format(
            &root,
            "sys_enter_openat",
            "\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n",
        );
        for name in ["setuid", "setresuid", "connect", "setgid"] {
            write_format(&root, &format!("sys_exit_{name}"), exit_fields());
        }
        write_format(
            &root,
            "sys_enter_setuid",
            "\tfield:uid_t uid;\toffset:16;\tsize:8;\tsigned:0;\n",
        );
        write_format(
            &root,
            "sys_enter_setresuid",
            "\tfield:uid_t ruid;\toffset:16;\tsize:8;\tsigned:0;
\tfield:uid_t euid;\toffset:24;\tsize:8;\tsigned:0;
\tfield:uid_t suid;\toffset:32;\tsize:8;\tsigned:0;\n",
        );
        write_format(
            &root,
            "sys_enter_setgid",
            "\tfield:gid_t gid;\toffset:24;\tsize:8;\tsigned:0;\n",
        );
        let mut offs = KernelOffsets::UNSET;
        offs.tp_sys_nr = 8;
        offs.tp_sys_args = 16;
        offs.tp_sys_ret = 16;
        let (hooks, missing) = syscall_hooks(&root, &offs);
        let got: Vec<(&str, String)> = hooks
            .iter()
            .map(|(p, h)| match h {
                Hook::Tracepoint(cat, tp) => (*p, format!("{cat}:{tp}")),
                Hook::Raw(tp) => (*p, (*tp).to_owned()),
            })
            .collect();
        let want = [
            ("fdr_sys_exit", "syscalls:sys_exit_openat"),
            ("fdr_sys_exit", "syscalls:sys_exit_connect"),
            ("fdr_sys_enter1", "syscalls:sys_enter_setuid"),
            ("fdr_sys_exit", "syscalls:sys_exit_setuid"),
            ("fdr_sys_enter3", "syscalls:sys_enter_setresuid"),
            ("fdr_sys_exit", "syscalls:sys_exit_setresuid"),
        ];
        for (p, tp) in want {
            assert!(
                got.iter().any(|(gp, gtp)| *gp == p && gtp == tp),
                "{p} on {tp} in {got:?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert!(missing.contains(&"setgid"), "{missing:?}");
        assert!(missing.contains(&"unlink") && missing.contains(&"open"));
        assert!(!missing.contains(&"openat") && !missing.contains(&"setuid"));
        assert_eq!(
            missing.len() + 4,
            syscalls::SYSCALLS.len(),
            "every watched syscall is attached or named: {missing:?}"
        );
        // No syscall tracepoints at all: every watched syscall is named.
        let (hooks, missing) = syscall_hooks(&root, &KernelOffsets::UNSET);
        assert!(hooks.is_empty());
        assert_eq!(missing.len(), syscalls::SYSCALLS.len());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
