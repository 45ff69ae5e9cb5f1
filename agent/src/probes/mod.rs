//! Loading, configuring and attaching the kernel programs.

pub mod btf;
pub mod offsets;
pub mod tracefs;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, RawTracePoint,
        TracePoint,
    },
    Ebpf, EbpfLoader,
};
use fdr_common::{globals, maps, EventKind, MAX_KINDS};

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
        target: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
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
    /// Size of the event ring buffer in bytes (a power of two, ≥ one page).
    pub ring_bytes: u32,
    /// Process id whose events never leave the kernel (the agent's own).
    pub agent_tgid: u32,
}

/// Where each program attaches.
enum Hook {
    Tracepoint(&'static str, &'static str),
    Raw(&'static str),
}

const PROGRAMS: &[(&str, Hook)] = &[
    ("fdr_fork", Hook::Raw("sched_process_fork")),
    ("fdr_exec", Hook::Tracepoint("sched", "sched_process_exec")),
    ("fdr_exit", Hook::Tracepoint("sched", "sched_process_exit")),
];

enum Link {
    Tracepoint(&'static str, TracePointLinkId),
    Raw(&'static str, RawTracePointLinkId),
}

/// The loaded programs and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    drops: PerCpuArray<MapData, u64>,
    links: Vec<Link>,
}

impl Probes {
    /// Loads the programs into the kernel (not yet attached) and returns them
    /// with the ring buffer the events arrive on.
    pub fn load(opts: &ProbeOptions) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        let tracefs = tracefs::ensure_mounted()?;
        raise_memlock()?;
        let kernel_btf = btf::Btf::from_kernel()?;
        let offs = offsets::resolve(&kernel_btf, &tracefs)?;
        let ring_bytes = opts.ring_bytes.next_power_of_two().max(4096);
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OFFSETS, &offs, true)
            .override_global(globals::AGENT_TGID, &opts.agent_tgid, true)
            .override_global(globals::WAKEUP_BYTES, &wakeup_bytes(ring_bytes), true)
            .map_max_entries(maps::EVENTS, ring_bytes)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        for (name, hook) in PROGRAMS {
            let prog = ebpf.program_mut(name).ok_or(ProbeError::NoMap(name))?;
            let res = match hook {
                Hook::Tracepoint(..) => <&mut TracePoint>::try_from(prog).and_then(|p| p.load()),
                Hook::Raw(_) => <&mut RawTracePoint>::try_from(prog).and_then(|p| p.load()),
            };
            res.map_err(|source| ProbeError::Program { name, source })?;
        }
        let ring = take_map(&mut ebpf, maps::EVENTS)?;
        let drops = take_map(&mut ebpf, maps::DROPS)?;
        let ring = RingBuf::try_from(ring).map_err(|source| ProbeError::Map {
            name: maps::EVENTS,
            source,
        })?;
        let drops = PerCpuArray::try_from(drops).map_err(|source| ProbeError::Map {
            name: maps::DROPS,
            source,
        })?;
        Ok((
            Probes {
                ebpf,
                drops,
                links: Vec::new(),
            },
            ring,
        ))
    }

    /// Attaches every program to its hook (no-op when attached).
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        for (name, hook) in PROGRAMS {
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
                Hook::Tracepoint(_, tp) | Hook::Raw(tp) => *tp,
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
                target: "detach",
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

/// Pending bytes at which the kernel wakes the reader early: an eighth of
/// the ring, so a burst is drained well before it fills, while ordinary
/// traffic waits for the reader's poll tick.
fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8)
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::NoMap(name))
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
