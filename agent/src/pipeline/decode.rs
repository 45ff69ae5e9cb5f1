//! Kernel records → [`Record`]s. Never panics: short, unknown or malformed
//! input is an error the caller counts.

use std::mem::size_of;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use fdr_common::{
    flags, EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent, PathRef,
    PrivEvent, TaskInfo, ARGV_MAX, FILENAME_MAX, NAME_BUF, PATH_AREA, PATH_MAX,
};

use crate::{
    event::{Detail, FileDetail, NetDetail, NotUtf8, PrivDetail, Record, Task},
    probes::syscalls::name_of,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} its kind needs")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("length field {field} = {value} exceeds its buffer")]
    BadLength { field: &'static str, value: usize },
}

/// Copies the first `size_of::<T>()` bytes of `data` into a `T`.
///
/// Only for the plain-old-data record types of `fdr_common`, for which every
/// bit pattern is valid.
fn read_pod<T: Copy>(data: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if data.len() < need {
        return Err(DecodeError::Short {
            len: data.len(),
            need,
        });
    }
    // SAFETY: `data` holds at least `size_of::<T>()` bytes; `T` is one of the
    // `#[repr(C)]` integer/array records, valid for any bytes; the read is
    // unaligned-safe.
    Ok(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// Decodes one ring buffer record.
pub fn decode(data: &[u8]) -> Result<Record, DecodeError> {
    let header: EventHeader = read_pod(data)?;
    let kind = EventKind::from_raw(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let (task, detail) = match kind {
        EventKind::Fork => {
            let ev: ForkEvent = read_pod(data)?;
            (
                ev.task,
                Detail::Fork {
                    parent_tid: ev.parent_tid,
                },
            )
        }
        EventKind::Exit => {
            let ev: ExitEvent = read_pod(data)?;
            (
                ev.task,
                Detail::Exit {
                    status: ev.exit_status,
                },
            )
        }
        EventKind::Exec => decode_exec(data, header.flags)?,
        EventKind::FileWrite
        | EventKind::FileRename
        | EventKind::FileUnlink
        | EventKind::FileChmod
        | EventKind::FileChown
        | EventKind::FileLink
        | EventKind::FileTruncate
        | EventKind::SensitiveRead => decode_file(data, kind)?,
        EventKind::NetListen
        | EventKind::NetBind
        | EventKind::NetConnect
        | EventKind::NetAccept => {
            let ev: NetEvent = read_pod(data)?;
            (
                ev.task,
                Detail::Net {
                    kind,
                    net: net_detail(&ev)?,
                },
            )
        }
        EventKind::PrivChange => {
            let ev: PrivEvent = read_pod(data)?;
            let detail = PrivDetail {
                syscall: name_of(ev.syscall_nr).unwrap_or("?"),
                old: ev.old,
                new: ev.new,
            };
            (ev.task, Detail::Priv(Box::new(detail)))
        }
        EventKind::AccountChange
        | EventKind::BinaryWritten
        | EventKind::ContainerStart
        | EventKind::ContainerStop
        | EventKind::ModelLearned
        | EventKind::Audit => {
            return Err(DecodeError::UnknownKind(header.kind)); // made by the agent only
        }
    };
    Ok(Record {
        boot_ns: header.ts_ns,
        cpu: header.cpu,
        task: task_from(&task, header.flags),
        detail,
    })
}

fn decode_exec(data: &[u8], fl: u16) -> Result<(TaskInfo, Detail), DecodeError> {
    if data.len() < ExecEvent::FIXED_LEN {
        return Err(DecodeError::Short {
            len: data.len(),
            need: ExecEvent::FIXED_LEN,
        });
    }
    // The record is sent cut to the bytes of argv in use.
    let fixed: ExecFixed = read_pod(data)?;
    let filename_len = fixed.filename_len as usize;
    if filename_len > FILENAME_MAX {
        return Err(DecodeError::BadLength {
            field: "filename_len",
            value: filename_len,
        });
    }
    let argv_len = fixed.argv_len as usize;
    if argv_len > ARGV_MAX {
        return Err(DecodeError::BadLength {
            field: "argv_len",
            value: argv_len,
        });
    }
    let exe_len = fixed.exe_len as usize;
    if exe_len > PATH_MAX + NAME_BUF {
        return Err(DecodeError::BadLength {
            field: "exe_len",
            value: exe_len,
        });
    }
    let var = &data[ExecEvent::FIXED_LEN..];
    let need = ExecEvent::FIXED_LEN + argv_len + exe_len;
    if var.len() < argv_len + exe_len {
        return Err(DecodeError::Short {
            len: data.len(),
            need,
        });
    }
    let (argv_bytes, rest) = var.split_at(argv_len);
    let (exe, exe_raw) = lossless(join_walked_bytes(&rest[..exe_len], fl));
    let (mut filename, mut filename_raw) = c_str_lossless(&fixed.filename[..filename_len]);
    if !filename.starts_with('/') && exe.starts_with('/') {
        filename.clone_from(&exe);
        filename_raw = exe_raw;
    }
    let (argv, argv_raw) = split_argv_lossless(argv_bytes);
    let mut not_utf8 = NotUtf8::NONE;
    for (set, bit) in [
        (filename_raw, NotUtf8::FILENAME),
        (exe_raw, NotUtf8::EXE),
        (argv_raw, NotUtf8::ARGV),
    ] {
        if set {
            not_utf8 = not_utf8.with(bit);
        }
    }
    Ok((
        fixed.task,
        Detail::Exec {
            filename,
            exe,
            exe_incomplete: fl & (flags::PATH_TRUNCATED | flags::PATH_DISCONNECTED) != 0,
            exe_dev: fixed.exe_dev,
            exe_ino: fixed.exe_ino,
            argv,
            old_tid: fixed.old_tid,
            argv_truncated: fl & flags::ARGV_TRUNCATED != 0,
            argv_unreadable: fl & flags::ARGV_UNREADABLE != 0,
            filename_truncated: fl & flags::FILENAME_TRUNCATED != 0,
            stdin_socket: fl & flags::STDIN_SOCKET != 0,
            not_utf8,
        },
    ))
}

fn net_detail(ev: &NetEvent) -> Result<NetDetail, DecodeError> {
    let addr = |bytes: &[u8; 16], port: u16| -> Result<SocketAddr, DecodeError> {
        Ok(match ev.family {
            2 => SocketAddr::from((Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]), port)),
            10 => SocketAddr::from((Ipv6Addr::from(*bytes), port)),
            f => {
                return Err(DecodeError::BadLength {
                    field: "family",
                    value: f as usize,
                })
            }
        })
    };
    let local = addr(&ev.local_addr, ev.local_port)?;
    let remote = addr(&ev.remote_addr, ev.remote_port)?;
    let has_peer = ev.header.kind == EventKind::NetConnect as u16
        || ev.header.kind == EventKind::NetAccept as u16;
    Ok(NetDetail {
        protocol: ev.protocol,
        local,
        remote: has_peer.then_some(remote),
        // Only listen has a backlog; the kernel record's field is
        // meaningless for the other kinds (older probes put connect's
        // sockaddr pointer there).
        backlog: if ev.header.kind == EventKind::NetListen as u16 {
            ev.backlog
        } else {
            0
        },
        ret: ev.ret,
    })
}

/// [`FileEvent`] without its variable-length `data`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FileFixed {
    header: EventHeader,
    task: TaskInfo,
    syscall_nr: u32,
    flags: u32,
    mode: u32,
    new_mode: u32,
    old_mode: u32,
    _pad2: u32,
    uid: u32,
    gid: u32,
    dev: u32,
    _pad: u32,
    ino: u64,
    size: u64,
    path: PathRef,
    path2: PathRef,
}
const _: () = assert!(size_of::<FileFixed>() == FileEvent::FIXED_LEN);

fn decode_file(data: &[u8], kind: EventKind) -> Result<(TaskInfo, Detail), DecodeError> {
    let f: FileFixed = read_pod(data)?;
    let var = &data[FileEvent::FIXED_LEN..];
    let (path, inc1) = path_in(var, 0, &f.path)?;
    let (path, path_raw) = lossless(path);
    let two = matches!(kind, EventKind::FileRename | EventKind::FileLink);
    let (path2, inc2, path2_raw) = if two {
        let (p, i) = path_in(var, 1, &f.path2)?;
        let (p, raw) = lossless(p);
        (Some(p), i, raw)
    } else {
        (None, false, false)
    };
    let mut not_utf8 = NotUtf8::NONE;
    if path_raw {
        not_utf8 = not_utf8.with(NotUtf8::PATH);
    }
    if path2_raw {
        not_utf8 = not_utf8.with(NotUtf8::PATH2);
    }
    let some = |v: u32| (v != u32::MAX).then_some(v);
    let detail = FileDetail {
        path,
        path2,
        incomplete: inc1 || inc2,
        flags: f.flags,
        mode: f.mode,
        new_mode: (kind == EventKind::FileChmod).then_some(f.new_mode),
        old_mode: (kind == EventKind::FileChmod && f.old_mode != 0).then_some(f.old_mode),
        uid: if kind == EventKind::FileChown {
            some(f.uid)
        } else {
            None
        },
        gid: if kind == EventKind::FileChown {
            some(f.gid)
        } else {
            None
        },
        size: (kind == EventKind::FileTruncate).then_some(f.size),
        dev: f.dev,
        ino: f.ino,
        syscall: name_of(f.syscall_nr).unwrap_or("?"),
        not_utf8,
    };
    Ok((
        f.task,
        Detail::File {
            kind,
            file: Box::new(detail),
        },
    ))
}

/// Path number `slot` of a file record's data (its bytes, exactly), and
/// whether it is incomplete.
fn path_in(var: &[u8], slot: usize, r: &PathRef) -> Result<(Vec<u8>, bool), DecodeError> {
    let area_start = slot * PATH_AREA;
    let tail_len = r.tail_len as usize;
    let walk = r.walk_off as usize..r.walk_off as usize + r.walk_len as usize;
    if tail_len > PATH_MAX || walk.end > PATH_AREA {
        return Err(DecodeError::BadLength {
            field: "path",
            value: walk.end.max(tail_len),
        });
    }
    let short = |need: usize| DecodeError::Short {
        len: FileEvent::FIXED_LEN + var.len(),
        need: FileEvent::FIXED_LEN + need,
    };
    let area = var.get(area_start..).unwrap_or_default();
    let tail = area
        .get(..tail_len)
        .ok_or_else(|| short(area_start + tail_len))?;
    let walked = if walk.is_empty() {
        &[][..]
    } else {
        area.get(walk.clone())
            .ok_or_else(|| short(area_start + walk.end))?
    };
    let walk_flags = r.flags & (flags::PATH_TRUNCATED | flags::PATH_DISCONNECTED);
    let mut incomplete = walk_flags != 0 || r.flags & PathRef::TAIL_UNREADABLE != 0;
    let path = if r.flags & PathRef::TAIL_ONLY != 0 {
        if tail.starts_with(b"/") {
            normalize_bytes(tail)
        } else {
            tail.to_vec() // a symlink's target text, as written
        }
    } else {
        // Room for the tail too: one allocation for the whole path.
        let mut dir = join_walked_into(walked, walk_flags, 1 + tail.len());
        if dir.is_empty() && tail.is_empty() {
            incomplete = true;
        }
        if tail.is_empty() {
            dir
        } else {
            dir.push(b'/');
            dir.extend_from_slice(tail);
            // Nearly always normal already (a plain name after the
            // walked directory): kept as it is, without another copy.
            if is_normal(&dir) {
                dir
            } else {
                normalize_bytes(&dir)
            }
        }
    };
    Ok((path, incomplete))
}

/// `.` and `..` resolved lexically, repeated and trailing `/` removed.
pub fn normalize(path: &str) -> String {
    // Splitting valid UTF-8 at `/` keeps it valid.
    String::from_utf8(normalize_bytes(path.as_bytes())).unwrap_or_default()
}

/// Whether `normalize_bytes(path)` is `path` itself: the root, or no
/// empty, `.` or `..` component (after an absolute path's leading `/`).
fn is_normal(path: &[u8]) -> bool {
    if path == b"/" {
        return true;
    }
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    rest.split(|&b| b == b'/')
        .all(|c| !matches!(c, b"" | b"." | b".."))
}

/// [`normalize`] on a path's bytes (which need not be UTF-8).
pub fn normalize_bytes(path: &[u8]) -> Vec<u8> {
    let absolute = path.starts_with(b"/");
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(b"..");
                }
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for (i, p) in parts.iter().enumerate() {
        if absolute || i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if absolute && out.is_empty() {
        out.push(b'/');
    }
    out
}

use crate::util::text::escape_not_utf8;
pub use crate::util::text::{lossless, lossless_bytes};

/// [`ExecEvent`] without its variable-length `data`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExecFixed {
    header: EventHeader,
    task: TaskInfo,
    filename_len: u16,
    argv_len: u16,
    exe_len: u16,
    _pad: u16,
    old_tid: u32,
    exe_dev: u32,
    exe_ino: u64,
    filename: [u8; FILENAME_MAX],
}

/// A path the kernel walked (components leaf first, each ended by NUL) as
/// an absolute path. A walk that did not reach the root (flags say so) is
/// returned without the leading `/`, so it is never mistaken for a full path.
pub fn join_walked_path(bytes: &[u8], fl: u16) -> String {
    lossless(join_walked_bytes(bytes, fl)).0
}

/// [`join_walked_path`] as bytes, exactly.
pub fn join_walked_bytes(bytes: &[u8], fl: u16) -> Vec<u8> {
    join_walked_into(bytes, fl, 0)
}

/// [`join_walked_bytes`] with room for `extra` more bytes.
fn join_walked_into(bytes: &[u8], fl: u16, extra: usize) -> Vec<u8> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    let complete = fl & (flags::PATH_TRUNCATED | flags::PATH_DISCONNECTED) == 0;
    if bytes.is_empty() {
        let mut out = Vec::with_capacity(1 + extra);
        if complete {
            out.push(b'/');
        }
        return out;
    }
    let mut out = Vec::with_capacity(bytes.len() + 1 + extra);
    for (i, p) in bytes.rsplit(|&b| b == 0).enumerate() {
        if complete || i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    out
}
const _: () = assert!(size_of::<ExecFixed>() == ExecEvent::FIXED_LEN);

fn task_from(t: &TaskInfo, fl: u16) -> Task {
    Task {
        pid: t.tgid,
        tid: t.tid,
        ppid: t.ppid,
        uid: t.uid,
        gid: t.gid,
        loginuid: (t.loginuid != u32::MAX).then_some(t.loginuid),
        cgroup_id: t.cgroup_id,
        start_ns: t.start_ns,
        comm: crate::event::Comm::from_kernel(&t.comm),
        has_tty: fl & flags::HAS_TTY != 0,
    }
}

/// Text up to the first NUL, lossily decoded.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Text up to the first NUL, losslessly (see [`lossless`]).
pub fn c_str_lossless(bytes: &[u8]) -> (String, bool) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    lossless(bytes[..end].to_vec())
}

/// `argv` bytes as the kernel lays them out: each argument ends with NUL. A
/// final argument without NUL (truncated) is kept.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    split_argv_lossless(bytes).0
}

/// [`split_argv`], and whether some argument was not UTF-8: then every
/// argument is in [`lossless`]'s escaped form, so that one flag covers all.
pub fn split_argv_lossless(bytes: &[u8]) -> (Vec<String>, bool) {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return (Vec::new(), false);
    }
    let args = bytes.split(|&b| b == 0);
    let utf8: Option<Vec<String>> = args
        .clone()
        .map(|a| std::str::from_utf8(a).ok().map(str::to_owned))
        .collect();
    match utf8 {
        Some(argv) => (argv, false),
        None => (args.map(escape_not_utf8).collect(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdr_common::COMM_LEN;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a POD value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn task() -> TaskInfo {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"sh");
        TaskInfo {
            tgid: 42,
            tid: 43,
            ppid: 1,
            uid: 1000,
            gid: 100,
            loginuid: u32::MAX,
            cgroup_id: 777,
            start_ns: 5,
            comm,
        }
    }

    fn exec_record(argv: &[u8], filename: &[u8], fl: u16) -> Vec<u8> {
        exec_record_with_exe(argv, filename, b"dash\0bin\0usr\0", fl)
    }

    fn exec_record_with_exe(argv: &[u8], filename: &[u8], exe: &[u8], fl: u16) -> Vec<u8> {
        let mut ev = Box::new(ExecEvent {
            header: EventHeader {
                kind: EventKind::Exec as u16,
                flags: fl,
                cpu: 1,
                ts_ns: 99,
            },
            task: task(),
            filename_len: filename.len() as u16,
            argv_len: argv.len() as u16,
            exe_len: exe.len() as u16,
            _pad: 0,
            old_tid: 42,
            exe_dev: 0,
            exe_ino: 0,
            filename: [0; FILENAME_MAX],
            data: [0; ARGV_MAX + PATH_MAX + NAME_BUF],
        });
        ev.filename[..filename.len()].copy_from_slice(filename);
        ev.data[..argv.len()].copy_from_slice(argv);
        ev.data[argv.len()..argv.len() + exe.len()].copy_from_slice(exe);
        let mut bytes = as_bytes(&*ev);
        bytes.truncate(ExecEvent::FIXED_LEN + argv.len() + exe.len());
        bytes
    }

    #[test]
    fn a_path_found_normal_is_what_normalizing_gives() {
        let paths: &[&[u8]] = &[
            b"/",
            b"",
            b"//",
            b"/a",
            b"/a/",
            b"/a//b",
            b"/a/./b",
            b"/a/../b",
            b"/..",
            b"a",
            b"a/b",
            b"./a",
            b"../a",
            b"a/..",
            b"/a/b.c/..d/...",
            b"/a/\xff/b",
            b"/.a/b.",
        ];
        for p in paths {
            if is_normal(p) {
                assert_eq!(
                    normalize_bytes(p),
                    p.to_vec(),
                    "{:?}",
                    String::from_utf8_lossy(p)
                );
            }
        }
        assert!(is_normal(b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!is_normal(b"/tmp//x"));
    }

    #[test]
    fn only_listen_keeps_a_backlog() {
        let net = |kind: EventKind| NetEvent {
            header: EventHeader {
                kind: kind as u16,
                flags: 0,
                cpu: 0,
                ts_ns: 1,
            },
            task: task(),
            family: 10,
            protocol: 6,
            local_port: 40551,
            remote_port: 80,
            ret: 0,
            // What older probes left there for connect: a sockaddr pointer.
            backlog: 1_000_204_052,
            local_addr: [0; 16],
            remote_addr: [0; 16],
        };
        let listen = net_detail(&net(EventKind::NetListen)).unwrap();
        assert_eq!(listen.backlog, 1_000_204_052);
        for kind in [
            EventKind::NetConnect,
            EventKind::NetAccept,
            EventKind::NetBind,
        ] {
            assert_eq!(net_detail(&net(kind)).unwrap().backlog, 0, "{kind:?}");
        }
    }

    #[test]
    fn names_are_kept_exactly_and_never_merge() {
        // Valid UTF-8 (control characters included) is kept as is.
        assert_eq!(
            lossless(b"/tmp/a\nb\\x".to_vec()),
            ("/tmp/a\nb\\x".into(), false)
        );
        let names: [&[u8]; 5] = [
            b"/tmp/b-\xff\xfe",
            b"/tmp/b-\xfe\xff",
            b"/tmp/b-\\xff\xfe",
            b"\xc3",
            b"\\\xff\\xzz\\x4",
        ];
        let mut texts = std::collections::HashSet::new();
        for n in names {
            let (text, not_utf8) = lossless(n.to_vec());
            assert!(not_utf8, "{n:?}");
            assert_eq!(lossless_bytes(&text), n, "{text}");
            assert!(texts.insert(text));
        }
        assert_eq!(lossless(names[0].to_vec()).0, r"/tmp/b-\xff\xfe");
        assert_eq!(lossless(names[2].to_vec()).0, r"/tmp/b-\\xff\xfe");
        // The flag tells the escaped text from a valid name spelled so.
        assert_eq!(
            lossless(br"/tmp/b-\xff\xfe".to_vec()),
            (r"/tmp/b-\xff\xfe".into(), false)
        );
        // Paths join and normalise on bytes.
        assert_eq!(join_walked_bytes(b"\xff\0tmp\0", 0), b"/tmp/\xff");
        assert_eq!(normalize_bytes(b"/a/./\xfe/../b\xff//"), b"/a/b\xff");
        assert_eq!(normalize("/a/../"), "/");
        assert_eq!(normalize("a/../../b/"), "../b");
    }

    #[test]
    fn exec_names_that_are_not_utf8_are_flagged() {
        let rec = decode(&exec_record(b"cat\0b-\xff\0a\\b\0", b"/bin/c\xfe", 0)).unwrap();
        match rec.detail {
            Detail::Exec {
                filename,
                exe,
                argv,
                not_utf8,
                ..
            } => {
                assert_eq!(filename, r"/bin/c\xfe");
                assert_eq!(exe, "/usr/bin/dash");
                // One flag for all arguments: every one escaped.
                assert_eq!(argv, ["cat", r"b-\xff", r"a\\b"]);
                assert!(not_utf8.contains(NotUtf8::FILENAME));
                assert!(not_utf8.contains(NotUtf8::ARGV));
                assert!(!not_utf8.contains(NotUtf8::EXE));
            }
            other => panic!("{other:?}"),
        }
        let rec = decode(&exec_record(b"a\\b\0", b"/bin/c", 0)).unwrap();
        match rec.detail {
            Detail::Exec { argv, not_utf8, .. } => {
                assert_eq!(argv, [r"a\b"]);
                assert_eq!(not_utf8, NotUtf8::NONE);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file record: `paths` are (tail, walked components leaf first,
    /// flags) for path and path2.
    fn file_record(kind: EventKind, paths: [(&[u8], &[u8], u16); 2]) -> Vec<u8> {
        let mut refs = [PathRef {
            tail_len: 0,
            walk_len: 0,
            walk_off: 0,
            flags: 0,
        }; 2];
        let mut var = vec![0u8; 2 * PATH_AREA];
        for (i, (tail, walked, fl)) in paths.into_iter().enumerate() {
            let area = &mut var[i * PATH_AREA..];
            area[..tail.len()].copy_from_slice(tail);
            let off = PATH_MAX;
            area[off..off + walked.len()].copy_from_slice(walked);
            refs[i] = PathRef {
                tail_len: tail.len() as u16,
                walk_len: walked.len() as u16,
                walk_off: off as u16,
                flags: fl,
            };
        }
        let fixed = FileFixed {
            header: EventHeader {
                kind: kind as u16,
                flags: 0,
                cpu: 0,
                ts_ns: 1,
            },
            task: task(),
            syscall_nr: 0,
            flags: 0,
            mode: 0,
            new_mode: 0,
            old_mode: 0,
            _pad2: 0,
            uid: 0,
            gid: 0,
            dev: 0,
            _pad: 0,
            ino: 0,
            size: 0,
            path: refs[0],
            path2: refs[1],
        };
        let mut bytes = as_bytes(&fixed);
        bytes.extend_from_slice(&var);
        bytes
    }

    #[test]
    fn file_paths_are_decoded_exactly() {
        let file = |rec: Vec<u8>| match decode(&rec).unwrap().detail {
            Detail::File { file, .. } => file,
            other => panic!("{other:?}"),
        };
        // A relative name in a walked directory, both not UTF-8.
        let f = file(file_record(
            EventKind::FileRename,
            [
                (b"./b-\xff\xfe", b"d\xe9\0tmp\0", 0),
                (b"/tmp/ok/../x", b"", PathRef::TAIL_ONLY),
            ],
        ));
        assert_eq!(f.path, r"/tmp/d\xe9/b-\xff\xfe");
        assert_eq!(lossless_bytes(&f.path), b"/tmp/d\xe9/b-\xff\xfe");
        assert_eq!(f.path2.as_deref(), Some("/tmp/x"));
        assert_eq!(f.not_utf8, NotUtf8::PATH);
        // The other order of the same bytes is another name.
        let g = file(file_record(
            EventKind::FileWrite,
            [(b"b-\xfe\xff", b"tmp\0", 0), (b"", b"", 0)],
        ));
        assert_eq!(g.path, r"/tmp/b-\xfe\xff");
        assert!(g.not_utf8.contains(NotUtf8::PATH) && g.path2.is_none());
        // Valid UTF-8 with control characters: kept as is, no flag.
        let h = file(file_record(
            EventKind::FileWrite,
            [(b"a\nb\x1b\\x", b"tmp\0", 0), (b"", b"", 0)],
        ));
        assert_eq!(
            (h.path.as_str(), h.not_utf8),
            ("/tmp/a\nb\x1b\\x", NotUtf8::NONE)
        );
    }

    #[test]
    fn comm_keeps_its_bytes() {
        let a = crate::event::Comm::from_kernel(b"b-\xff\xfe\0\0");
        let b = crate::event::Comm::from_kernel(b"b-\xfe\xff\0\0");
        assert_ne!(a, b);
        assert_eq!(a.raw(), Some(&b"b-\xff\xfe"[..]));
        assert_eq!(a.to_string(), r"b-\xff\xfe");
        assert_eq!(a.as_str(), "b-");
        let c = crate::event::Comm::from_kernel(b"sh\0");
        assert_eq!((c.raw(), c.to_string()), (None, "sh".into()));
    }

    #[test]
    fn walked_paths_join_leaf_last() {
        assert_eq!(join_walked_path(b"dash\0bin\0usr\0", 0), "/usr/bin/dash");
        assert_eq!(join_walked_path(b"", 0), "/");
        assert_eq!(
            join_walked_path(b"x\0deep\0", flags::PATH_TRUNCATED),
            "deep/x"
        );
        assert_eq!(join_walked_path(b"", flags::PATH_DISCONNECTED), "");
    }

    #[test]
    fn relative_filename_takes_the_walked_path() {
        let rec = decode(&exec_record_with_exe(b"./t\0", b"./t", b"t\0tmp\0", 0)).unwrap();
        match rec.detail {
            Detail::Exec {
                filename,
                exe,
                exe_incomplete,
                ..
            } => {
                assert_eq!(filename, "/tmp/t");
                assert_eq!(exe, "/tmp/t");
                assert!(!exe_incomplete);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_exec_cut_to_argv() {
        let rec = decode(&exec_record(
            b"/bin/sh\0-c\0exit 7\0",
            b"/bin/sh",
            flags::HAS_TTY,
        ))
        .expect("decodes");
        assert_eq!(rec.boot_ns, 99);
        assert_eq!(rec.cpu, 1);
        assert_eq!(rec.task.pid, 42);
        assert_eq!(rec.task.tid, 43);
        assert_eq!(rec.task.uid, 1000);
        assert_eq!(rec.task.comm, "sh");
        assert_eq!(rec.task.loginuid, None);
        assert!(rec.task.has_tty);
        match rec.detail {
            Detail::Exec {
                filename,
                exe,
                argv,
                argv_truncated,
                ..
            } => {
                assert_eq!(filename, "/bin/sh");
                assert_eq!(exe, "/usr/bin/dash");
                assert_eq!(argv, ["/bin/sh", "-c", "exit 7"]);
                assert!(!argv_truncated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_argv_keeps_last_partial_argument() {
        let rec = decode(&exec_record(b"a\0bc", b"/x", flags::ARGV_TRUNCATED)).unwrap();
        match rec.detail {
            Detail::Exec {
                argv,
                argv_truncated,
                ..
            } => {
                assert_eq!(argv, ["a", "bc"]);
                assert!(argv_truncated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_fork_and_exit() {
        let fork = ForkEvent {
            header: EventHeader {
                kind: EventKind::Fork as u16,
                flags: 0,
                cpu: 0,
                ts_ns: 1,
            },
            task: task(),
            parent_tid: 7,
            _pad: 0,
        };
        let rec = decode(&as_bytes(&fork)).unwrap();
        assert_eq!(rec.detail, Detail::Fork { parent_tid: 7 });
        assert_eq!(rec.task.ppid, 1);
        let exit = ExitEvent {
            header: EventHeader {
                kind: EventKind::Exit as u16,
                flags: 0,
                cpu: 0,
                ts_ns: 1,
            },
            task: task(),
            exit_status: 7 << 8,
            _pad: 0,
        };
        assert_eq!(
            decode(&as_bytes(&exit)).unwrap().detail,
            Detail::Exit { status: 7 << 8 }
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let exec = exec_record(b"/bin/true\0", b"/bin/true", 0);
        for len in 0..exec.len() {
            assert!(decode(&exec[..len]).is_err(), "exec cut to {len}");
        }
        let exit = ExitEvent {
            header: EventHeader {
                kind: EventKind::Exit as u16,
                flags: 0,
                cpu: 0,
                ts_ns: 1,
            },
            task: task(),
            exit_status: 0,
            _pad: 0,
        };
        let exit = as_bytes(&exit);
        for len in 0..exit.len() {
            assert!(matches!(
                decode(&exit[..len]),
                Err(DecodeError::Short { .. })
            ));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[0xff; 64]), Err(DecodeError::UnknownKind(0xffff)));
        // A known kind with absurd length fields.
        let mut exec = exec_record(b"x\0", b"/x", 0);
        exec[72..74].copy_from_slice(&u16::MAX.to_le_bytes()); // filename_len
        assert!(matches!(decode(&exec), Err(DecodeError::BadLength { .. })));
        let mut exec = exec_record(b"x\0", b"/x", 0);
        exec[74..76].copy_from_slice(&2000u16.to_le_bytes()); // argv_len beyond data
        assert!(matches!(decode(&exec), Err(DecodeError::Short { .. })));
        let mut exec = exec_record(b"x\0", b"/x", 0);
        exec[76..78].copy_from_slice(&u16::MAX.to_le_bytes()); // exe_len
        assert!(matches!(decode(&exec), Err(DecodeError::BadLength { .. })));
        // Pseudo-random bytes of every length: never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..600 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }
}
