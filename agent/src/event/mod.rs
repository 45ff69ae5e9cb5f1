//! Foundation: the agent's typed events — what the decoder produces from
//! kernel records, what every stage adds to and works with — and their
//! vocabulary: program images and their ancestry ([`lineage`]), scopes
//! ([`scope`]), container metadata ([`container`]), and their `fdr.v1`
//! form ([`wire`]; the stored form of snapshots too). Imports: `util`.

pub mod container;
pub mod lineage;
pub mod scope;
#[cfg(test)]
pub mod test_support;
pub mod wire;

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
    pub comm: Comm,
    pub has_tty: bool,
}

/// A task's `comm` (at most 15 bytes and a NUL in the kernel), kept
/// inline: no allocation per event. Its bytes are kept exactly, also when
/// they are not UTF-8 (then [`Comm::as_str`] is their valid prefix and
/// `to_string` their lossless text, see [`crate::util::text::lossless`]).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Comm {
    /// Length; [`Comm::NOT_UTF8`] set when the bytes are not UTF-8.
    len: u8,
    buf: [u8; 16],
}

impl Comm {
    /// `s`, cut to 16 bytes at a character boundary.
    pub fn new(s: &str) -> Comm {
        let mut end = s.len().min(16);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; 16];
        buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        Comm {
            len: end as u8,
            buf,
        }
    }

    const NOT_UTF8: u8 = 0x80;

    /// From the kernel's NUL-padded bytes, exactly (cut to 16 bytes).
    pub fn from_kernel(raw: &[u8]) -> Comm {
        let end = raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.len())
            .min(16);
        let mut buf = [0u8; 16];
        buf[..end].copy_from_slice(&raw[..end]);
        let flag = if std::str::from_utf8(&raw[..end]).is_ok() {
            0
        } else {
            Comm::NOT_UTF8
        };
        Comm {
            len: end as u8 | flag,
            buf,
        }
    }

    /// The length byte (with its not-UTF-8 flag) and the bytes: what
    /// [`Comm::from_parts`] takes back (the recorder's compact form).
    pub fn to_parts(&self) -> (u8, &[u8]) {
        (self.len, self.as_bytes())
    }

    /// A name from [`Comm::to_parts`]; `None` when they do not fit together.
    pub fn from_parts(len: u8, bytes: &[u8]) -> Option<Comm> {
        if usize::from(len & !Comm::NOT_UTF8) != bytes.len() || bytes.len() > 16 {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(Comm { len, buf })
    }

    /// The bytes, exactly.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len & !Comm::NOT_UTF8)]
    }

    /// The bytes when they are not UTF-8.
    pub fn raw(&self) -> Option<&[u8]> {
        (self.len & Comm::NOT_UTF8 != 0).then(|| self.as_bytes())
    }

    /// The text; for a name that is not UTF-8, its valid prefix.
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.as_bytes()[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// The text, losslessly (see [`crate::util::text::lossless`]).
impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.raw() {
            None => f.write_str(self.as_str()),
            Some(raw) => f.write_str(&crate::util::text::lossless(raw.to_vec()).0),
        }
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        Comm::new(s)
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
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
        /// Device (kernel encoding) and inode of the executable.
        exe_dev: u32,
        exe_ino: u64,
        argv: Vec<String>,
        old_tid: u32,
        argv_truncated: bool,
        argv_unreadable: bool,
        filename_truncated: bool,
        /// Standard input was a socket when the program started.
        stdin_socket: bool,
        /// Which of `filename`, `exe`, `argv` were not UTF-8 (kept in
        /// [`crate::util::text::lossless`]'s form; for `argv`: every argument).
        not_utf8: NotUtf8,
    },
    Exit {
        /// wait(2) status.
        status: u32,
    },
    /// Every file kind (write, rename, unlink, chmod, chown, link,
    /// truncate, sensitive read).
    File {
        kind: EventKind,
        file: Box<FileDetail>,
    },
    /// listen, bind, connect, accept.
    Net {
        kind: EventKind,
        net: NetDetail,
    },
    Priv(Box<PrivDetail>),
    Account(Box<AccountDetail>),
    Binary(Box<BinaryDetail>),
    /// A container started or stopped.
    Container(Box<ContainerDetail>),
    /// A runtime model learned something.
    Learned(Box<LearnedDetail>),
    /// Behaviour outside a model, or a rule hit.
    Audit(Box<AuditDetail>),
}

/// A file event's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileDetail {
    /// Absolute path (for rename and link: the first argument, i.e. the old
    /// name, or a symlink's target text).
    pub path: String,
    /// The second path: rename's and link's new name.
    pub path2: Option<String>,
    /// A path could not be made absolute in full (too deep, outside the
    /// agent's root, unreadable argument).
    pub incomplete: bool,
    /// `f_flags` of an opened file; `AT_*` / `RENAME_*` flags otherwise.
    pub flags: u32,
    /// `st_mode` when known (opens and descriptor-based calls), else 0.
    pub mode: u32,
    pub new_mode: Option<u32>,
    pub old_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// Device (kernel encoding) and inode, when known.
    pub dev: u32,
    pub ino: u64,
    /// Name of the syscall.
    pub syscall: &'static str,
    /// Which of `path`, `path2` were not UTF-8 (kept in
    /// [`crate::util::text::lossless`]'s form).
    pub not_utf8: NotUtf8,
}

/// Which names of an event were not valid UTF-8: their text is then
/// [`crate::util::text::lossless`]'s escaped form, and
/// [`crate::util::text::lossless_bytes`] gives their exact bytes back (what
/// the API sends in its `*_raw` fields). Empty for valid UTF-8, the
/// common case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct NotUtf8(u8);

impl NotUtf8 {
    pub const NONE: NotUtf8 = NotUtf8(0);
    pub const PATH: NotUtf8 = NotUtf8(1);
    pub const PATH2: NotUtf8 = NotUtf8(2);
    pub const FILENAME: NotUtf8 = NotUtf8(4);
    pub const EXE: NotUtf8 = NotUtf8(8);
    pub const ARGV: NotUtf8 = NotUtf8(16);

    #[must_use]
    pub fn with(self, other: NotUtf8) -> NotUtf8 {
        NotUtf8(self.0 | other.0)
    }

    /// The flags as a byte (the recorder's compact form).
    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> NotUtf8 {
        NotUtf8(bits)
    }

    pub fn contains(self, other: NotUtf8) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

/// A network event's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetDetail {
    /// `IPPROTO_*` (6 TCP, 17 UDP).
    pub protocol: u16,
    pub local: std::net::SocketAddr,
    /// The peer (connect, accept).
    pub remote: Option<std::net::SocketAddr>,
    pub backlog: u32,
    pub ret: i32,
}

impl NetDetail {
    /// Why a connect failed (`ECONNREFUSED`, …); `None` when it succeeded or
    /// is still in progress, and for every other kind.
    pub fn error(&self) -> Option<std::borrow::Cow<'static, str>> {
        const EINPROGRESS: i32 = 115;
        if self.ret >= 0 || self.ret == -EINPROGRESS {
            return None;
        }
        let name = match -self.ret {
            1 => "EPERM",
            4 => "EINTR",
            13 => "EACCES",
            22 => "EINVAL",
            97 => "EAFNOSUPPORT",
            98 => "EADDRINUSE",
            99 => "EADDRNOTAVAIL",
            100 => "ENETDOWN",
            101 => "ENETUNREACH",
            104 => "ECONNRESET",
            110 => "ETIMEDOUT",
            111 => "ECONNREFUSED",
            112 => "EHOSTDOWN",
            113 => "EHOSTUNREACH",
            n => return Some(format!("errno {n}").into()),
        };
        Some(name.into())
    }
}

/// Credentials of a task (the kernel's record, plain data).
pub use fdr_common::Creds;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivDetail {
    pub syscall: &'static str,
    pub old: Creds,
    pub new: Creds,
}

/// One account modification: what the product we model calls a host
/// "accounts modified" record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDetail {
    pub hostname: String,
    /// Who made the change.
    pub uid: u32,
    pub user: String,
    /// Files changed, in order, each once.
    pub files: Vec<String>,
    /// Command line of the process that made the change (the account tool
    /// when one was involved).
    pub command: Vec<String>,
    pub interactive: bool,
    /// Boot-time ns of the first change.
    pub first_boot_ns: u64,
}

/// Why a file counts as a written binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryReason {
    /// Written while it had execute permission.
    WrittenExecutable,
    /// Written, then given execute permission.
    MadeExecutable,
    /// Written, then executed.
    Executed,
}

impl BinaryReason {
    pub fn name(self) -> &'static str {
        match self {
            BinaryReason::WrittenExecutable => "written-executable",
            BinaryReason::MadeExecutable => "made-executable",
            BinaryReason::Executed => "written-then-executed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryDetail {
    pub path: String,
    pub reason: BinaryReason,
    /// Process that wrote it, when known.
    pub writer_pid: Option<u32>,
    pub writer_exe: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetail {
    pub id: Arc<str>,
    pub change: crate::event::container::Change,
    /// `cri`, `containerd`, `docker` or `cgroup`.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedDetail {
    /// `image:<digest or name>` or `service:<unit or executable>`.
    pub model: Arc<str>,
    pub section: &'static str,
    pub item: String,
}

/// How bad an audit or incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }

    pub fn from_raw(v: i32) -> Option<Self> {
        match v {
            1 => Some(Severity::Low),
            2 => Some(Severity::Medium),
            3 => Some(Severity::High),
            4 => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDetail {
    pub model: Arc<str>,
    /// The model section broken, or `rule`.
    pub section: &'static str,
    /// Rule name, or `model` for an anomaly.
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    /// The model item (generalised) that was new.
    pub item: String,
    /// Serial of the incident it belongs to (0: none).
    pub incident: u64,
    /// seq of the event that raised it.
    pub trigger_seq: u64,
}

impl Detail {
    pub fn kind(&self) -> EventKind {
        match self {
            Detail::Fork { .. } => EventKind::Fork,
            Detail::Exec { .. } => EventKind::Exec,
            Detail::Exit { .. } => EventKind::Exit,
            Detail::File { kind, .. } | Detail::Net { kind, .. } => *kind,
            Detail::Priv(_) => EventKind::PrivChange,
            Detail::Account(_) => EventKind::AccountChange,
            Detail::Binary(_) => EventKind::BinaryWritten,
            Detail::Container(c) => match c.change {
                crate::event::container::Change::Started => EventKind::ContainerStart,
                crate::event::container::Change::Stopped { .. } => EventKind::ContainerStop,
            },
            Detail::Learned(_) => EventKind::ModelLearned,
            Detail::Audit(_) => EventKind::Audit,
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
/// process (its program image and the images it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Agent-assigned sequence number, increasing with arrival.
    pub seq: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub record: Record,
    /// The program the process ran (executable and command line, empty
    /// when unknown), linked to its ancestry.
    pub image: Arc<crate::event::lineage::Image>,
    /// The container it happened in, or the host.
    pub scope: crate::event::scope::Scope,
    /// For host events: the systemd unit (service or session) of the process.
    pub unit: Option<Arc<str>>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.record.detail.kind()
    }

    pub fn pid(&self) -> u32 {
        self.record.task.pid
    }

    /// Executable of the process ("" when unknown).
    pub fn exe(&self) -> &str {
        &self.image.exe
    }

    /// Command line of the process.
    pub fn argv(&self) -> &[String] {
        &self.image.argv
    }

    /// Whether the process is in an interactive session.
    pub fn interactive(&self) -> bool {
        let t = &self.record.task;
        crate::event::lineage::interactive(t.has_tty, t.loginuid, &self.image)
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
            Detail::File { file, .. } => {
                std::mem::size_of::<FileDetail>()
                    + file.path.len()
                    + file.path2.as_ref().map_or(0, String::len)
            }
            Detail::Priv(_) => std::mem::size_of::<PrivDetail>(),
            Detail::Account(a) => {
                std::mem::size_of::<AccountDetail>()
                    + a.files
                        .iter()
                        .chain(&a.command)
                        .map(|s| s.len() + 24)
                        .sum::<usize>()
            }
            Detail::Binary(b) => std::mem::size_of::<BinaryDetail>() + b.path.len(),
            Detail::Container(_) => std::mem::size_of::<ContainerDetail>(),
            Detail::Learned(l) => std::mem::size_of::<LearnedDetail>() + l.item.len(),
            Detail::Audit(a) => {
                std::mem::size_of::<AuditDetail>() + a.message.len() + a.rule.len() + a.item.len()
            }
            Detail::Fork { .. } | Detail::Exit { .. } | Detail::Net { .. } => 0,
        };
        std::mem::size_of::<Event>() + detail
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
    fn connect_errors_are_named() {
        let n = |ret| NetDetail {
            protocol: 6,
            local: "0.0.0.0:0".parse().unwrap(),
            remote: Some("10.0.0.1:22".parse().unwrap()),
            backlog: 0,
            ret,
        };
        assert_eq!(n(0).error(), None);
        assert_eq!(n(-115).error(), None, "in progress is not a failure");
        assert_eq!(n(-111).error().as_deref(), Some("ECONNREFUSED"));
        assert_eq!(n(-110).error().as_deref(), Some("ETIMEDOUT"));
        assert_eq!(n(-200).error().as_deref(), Some("errno 200"));
    }

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
