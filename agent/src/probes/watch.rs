//! Turning the configured path lists into what the kernel programs match:
//! watched inodes (`FDR_WATCH`) and absolute-path prefixes.
//!
//! Paths are resolved in a [`Root`]: the host's, or a container's (the
//! root of one of its processes, `/proc/<pid>/root`), so that a
//! container's own `/etc/shadow` or service-account token is watched too.
//!
//! # Which (dev, ino) the kernel sees
//!
//! The probe reads `file->f_inode->i_sb->s_dev` and `file->f_inode->i_ino`
//! of the opened file. For a file in an overlayfs (a container's root),
//! `f_inode` is the *overlay* inode (since Linux 4.19 the opened file is an
//! overlay file; the real one hangs behind it), on the overlay's anonymous
//! device. `stat` does not always say the same: measured on Linux 6.18
//! (`/tmp` overlays, `stat` vs `/proc/self/fdinfo` `ino:` and the mount's
//! `maj:min` in mountinfo), with every layer on one filesystem (what
//! containerd's overlayfs snapshotter makes) `stat` gives the overlay's
//! `st_dev` and the real inode number, and so does `f_inode` — they agree;
//! with layers on different filesystems (lower on tmpfs, upper on ext4)
//! `stat` gives a per-layer pseudo device (0:45) while `f_inode` is on the
//! overlay's device (0:43): a key from `stat` would never match. (btrfs
//! subvolumes differ likewise: `stat` shows the subvolume's device.)
//!
//! So a key is not taken from `stat`: the file is opened (`O_PATH`, no
//! access to its data, no atime), its `f_inode->i_ino` read from
//! `/proc/self/fdinfo/<fd>` (`ino:`, Linux ≥ 5.14) and its superblock's
//! device from the mountinfo line of the fd's `mnt_id` — exactly what the
//! probe reads. `stat` is the fallback for kernels without `ino:`.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use fdr_common::{watch, InodeKey, Prefixes, MAX_PREFIXES, PREFIX_LEN};

use crate::{
    config::CaptureConfig,
    util::{glob::wildcard_match, host::HostRoot},
};

/// Paths a wildcard step of a pattern expands to at most.
pub const MAX_EXPANDED: usize = 1024;

/// The kernel's device number for a `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | minor
}

#[cfg(test)]
fn key_of(path: &Path) -> Option<InodeKey> {
    let md = std::fs::metadata(path).ok()?;
    Some(key_of_metadata(&md))
}

fn key_of_metadata(md: &std::fs::Metadata) -> InodeKey {
    InodeKey {
        dev: kernel_dev(md.dev()),
        _pad: 0,
        ino: md.ino(),
    }
}

/// Watched inodes for the configured lists, resolved now in the host's
/// root (seen at `host`; the files are the host's whatever root the agent
/// runs in). The data directory is the agent's own: resolved in its root.
pub fn watched_inodes(
    cfg: &CaptureConfig,
    data_dir: &Path,
    host: &HostRoot,
) -> HashMap<InodeKey, u32> {
    let mut out: HashMap<InodeKey, u32> = HashMap::new();
    let root = match Root::host_at(host) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(%err, root = %host.root().display(), "opening the host's root to resolve watched files");
            return out;
        }
    };
    root.add_keys(&cfg.sensitive_files, watch::SENSITIVE, &mut out);
    root.add_keys(&cfg.critical_paths, watch::CRITICAL, &mut out);
    root.add_keys(&cfg.excluded_paths, watch::EXCLUDED, &mut out);
    let data = [data_dir.display().to_string()];
    if host.is_own() {
        root.add_keys(&data, watch::EXCLUDED, &mut out);
    } else if let Ok(own) = Root::host() {
        own.add_keys(&data, watch::EXCLUDED, &mut out);
    }
    out
}

/// Watched inodes of a container: its own sensitive files, resolved in its
/// root. (Its critical and excluded directories are matched by path
/// prefix, which the kernel compares in the process's own root.)
pub fn container_inodes(root: &Root, cfg: &CaptureConfig) -> HashMap<InodeKey, u32> {
    let mut out = HashMap::new();
    root.add_keys(&cfg.sensitive_files, watch::SENSITIVE, &mut out);
    out
}

/// What [`merge`] left out for lack of room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    /// Keys beyond a container's share (`per_container`).
    pub over_share: usize,
    /// Keys beyond the map's capacity.
    pub over_capacity: usize,
}

impl Left {
    pub fn total(&self) -> usize {
        self.over_share + self.over_capacity
    }
}

/// The entries of the watch map: the host's first, then each container's
/// (in the order given), at most `per_container` keys each, at most
/// `capacity` in all. A key of several lists gets every bit.
pub fn merge<'a>(
    host: &HashMap<InodeKey, u32>,
    containers: impl IntoIterator<Item = &'a HashMap<InodeKey, u32>>,
    per_container: usize,
    capacity: usize,
) -> (HashMap<InodeKey, u32>, Left) {
    let mut left = Left::default();
    let mut out: HashMap<InodeKey, u32> = HashMap::with_capacity(host.len().min(capacity));
    let put = |out: &mut HashMap<InodeKey, u32>, k: &InodeKey, v: u32, left: &mut Left| {
        if let Some(bits) = out.get_mut(k) {
            *bits |= v;
        } else if out.len() < capacity {
            out.insert(*k, v);
        } else {
            left.over_capacity += 1;
        }
    };
    // Sorted, so that what is left out does not change from one refresh
    // to the next.
    let mut keys: Vec<_> = host.iter().collect();
    keys.sort_unstable_by_key(|(k, _)| (k.dev, k.ino));
    for (k, v) in keys {
        put(&mut out, k, *v, &mut left);
    }
    for c in containers {
        let mut keys: Vec<_> = c.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| (k.dev, k.ino));
        left.over_share += keys.len().saturating_sub(per_container);
        for (k, v) in keys.into_iter().take(per_container) {
            put(&mut out, k, *v, &mut left);
        }
    }
    (out, left)
}

/// A filesystem root paths are resolved in (see the module documentation
/// for how a file's key is found).
#[derive(Debug)]
pub struct Root {
    /// The root directory (`O_PATH`).
    dir: OwnedFd,
    /// Paths resolved inside `dir`, never above it (`RESOLVE_IN_ROOT`):
    /// a container's absolute symlinks (`/var/run -> /run`) stay in it.
    in_root: bool,
    /// The kernel device of each mount, by mount id, as seen by a process
    /// of this root.
    devs: HashMap<u64, u32>,
}

/// `struct open_how` of `openat2(2)` (version 0, 24 bytes).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2`'s `resolve` flags: inside the root, no `/proc` magic links.
const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

impl Root {
    /// The host's root (the agent's own).
    pub fn host() -> io::Result<Root> {
        Ok(Root {
            dir: open_path_dir("/")?,
            in_root: false,
            devs: mount_devs(Path::new("/proc/self/mountinfo")),
        })
    }

    /// The host's root as seen at `host`: the agent's own root, or the
    /// directory where the host's `/` is mounted, paths resolved inside it
    /// (the host's absolute symlinks stay in it), with the agent's mounts
    /// (which include those under that directory).
    pub fn host_at(host: &HostRoot) -> io::Result<Root> {
        if host.is_own() {
            return Root::host();
        }
        Root::at(host.root())
    }

    /// Directory `dir` taken as a root (paths resolved inside it), with
    /// the agent's own mounts.
    pub fn at(dir: &Path) -> io::Result<Root> {
        let dir = dir
            .to_str()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(Root {
            dir: open_path_dir(dir)?,
            in_root: true,
            devs: mount_devs(Path::new("/proc/self/mountinfo")),
        })
    }

    /// The root of process `pid` (a container's, when it runs in one).
    pub fn of_process(pid: u32) -> io::Result<Root> {
        Self::of_process_in(Path::new("/proc"), pid)
    }

    /// The root of process `pid` of the `/proc` at `proc` (the host's,
    /// under a host root).
    pub fn of_process_in(proc: &Path, pid: u32) -> io::Result<Root> {
        let pid_dir = proc.join(pid.to_string());
        let dir = open_path_dir(&pid_dir.join("root").to_string_lossy())?;
        Ok(Root {
            dir,
            in_root: true,
            devs: mount_devs(&pid_dir.join("mountinfo")),
        })
    }

    /// The root directory's own identity (device, inode), as `stat` says:
    /// to tell a container's root from the host's.
    pub fn identity(&self) -> Option<(u64, u64)> {
        let md = std::fs::metadata(fd_path(&self.dir)).ok()?;
        Some((md.dev(), md.ino()))
    }

    /// Opens `rel` (relative to the root) with `flags`, symlinks resolved
    /// inside the root.
    fn open(&self, rel: &str, flags: i32) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        let c = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = flags | libc::O_CLOEXEC;
        let fd = if self.in_root {
            let how = OpenHow {
                flags: flags as u64,
                mode: 0,
                resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
            };
            // SAFETY: a valid directory fd, a NUL-terminated path and an
            // `open_how` of the size passed; the result is checked.
            unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.dir.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                ) as i32
            }
        } else {
            // SAFETY: a valid directory fd and a NUL-terminated path; the
            // result is checked.
            unsafe { libc::openat(self.dir.as_raw_fd(), c.as_ptr(), flags) }
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned to us, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Existing paths (relative to the root, no leading `/`) matching the
    /// absolute `pattern` (`*` within components), at most
    /// [`MAX_EXPANDED`] a wildcard step.
    pub fn expand(&self, pattern: &str) -> Vec<String> {
        let mut current = vec![String::new()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            for dir in &current {
                let join = |name: &str| {
                    if dir.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{dir}/{name}")
                    }
                };
                if comp.contains('*') {
                    let Ok(fd) = self.open(dir, libc::O_RDONLY | libc::O_DIRECTORY) else {
                        continue;
                    };
                    let Ok(entries) = std::fs::read_dir(fd_path(&fd)) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        if wildcard_match(comp, &name) {
                            next.push(join(&name));
                        }
                        // A root decides how many entries a directory has
                        // (a container's huge /home): bounded.
                        if next.len() >= MAX_EXPANDED {
                            tracing::debug!(pattern, "wildcard matches cut");
                            break;
                        }
                    }
                } else {
                    next.push(join(comp));
                }
            }
            current = next;
        }
        current.retain(|p| !p.is_empty() && self.open(p, libc::O_PATH).is_ok());
        current
    }

    /// The key the probe sees for an open file (see the module
    /// documentation).
    fn key(&self, fd: &OwnedFd) -> Option<InodeKey> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok();
        let field = |name: &str| {
            info.as_deref()?
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(ino), Some(dev)) = (
            field("ino"),
            field("mnt_id").and_then(|m| self.devs.get(&m)),
        ) {
            return Some(InodeKey {
                dev: *dev,
                _pad: 0,
                ino,
            });
        }
        std::fs::metadata(fd_path(fd))
            .ok()
            .map(|md| key_of_metadata(&md))
    }

    /// Adds the keys of every file matching `patterns`, with `bit`.
    pub fn add_keys(&self, patterns: &[String], bit: u32, out: &mut HashMap<InodeKey, u32>) {
        for pattern in patterns {
            for rel in self.expand(pattern) {
                let Ok(fd) = self.open(&rel, libc::O_PATH) else {
                    continue;
                };
                if let Some(k) = self.key(&fd) {
                    *out.entry(k).or_default() |= bit;
                }
            }
        }
    }
}

/// An `O_PATH` descriptor of directory `path`.
fn open_path_dir(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `/proc/self/fd` path of a descriptor (opens what it refers to).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mount id → kernel device of its superblock, from a mountinfo file
/// (`<id> <parent> <major>:<minor> …`).
fn mount_devs(mountinfo: &Path) -> HashMap<u64, u32> {
    let Ok(text) = std::fs::read_to_string(mountinfo) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.parse().ok()?;
            let (major, minor) = f.nth(1)?.split_once(':')?;
            let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
            Some((id, kernel_dev(libc::makedev(major, minor))))
        })
        .collect()
}

/// The prefix table for absolute path strings: the entries of
/// `critical_paths` and `excluded_paths` (and the data directory) without
/// wildcards, directories ending in `/`.
pub fn prefixes(cfg: &CaptureConfig, data_dir: &Path) -> Prefixes {
    let mut p = Prefixes::EMPTY;
    let data = format!("{}/", data_dir.display().to_string().trim_end_matches('/'));
    let entries = cfg
        .excluded_paths
        .iter()
        .map(|s| (s.as_str(), watch::EXCLUDED))
        .chain(std::iter::once((data.as_str(), watch::EXCLUDED)))
        .chain(
            cfg.critical_paths
                .iter()
                .map(|s| (s.as_str(), watch::CRITICAL)),
        );
    let mut seen = std::collections::HashSet::new();
    for (text, class) in entries {
        if text.contains('*') || text.is_empty() || text.len() > PREFIX_LEN || !seen.insert(text) {
            continue;
        }
        let i = p.count as usize;
        if i >= MAX_PREFIXES {
            tracing::warn!(prefix = text, "too many path prefixes; ignored");
            continue;
        }
        let bytes = text.as_bytes();
        for (w, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            p.words[i][w] = u64::from_le_bytes(word);
        }
        p.len[i] = bytes.len() as u32;
        p.class[i] = class;
        p.count += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_existing_paths() {
        let root = Root::host().unwrap();
        let found = root.expand("/proc/self/stat*");
        assert!(found.iter().any(|p| p.ends_with("stat")));
        assert!(found.iter().any(|p| p.ends_with("status")));
        assert!(root.expand("/nonexistent-fdr/*").is_empty());
        assert_eq!(root.expand("/etc/passwd"), vec!["etc/passwd".to_owned()]);
    }

    /// A tree laid out like a container's root, under a temporary directory.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(tag: &str) -> FakeRoot {
            let dir = std::env::temp_dir().join(format!(
                "fdr-watch-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            std::fs::create_dir_all(dir.join("run/secrets/kubernetes.io/serviceaccount")).unwrap();
            std::fs::create_dir_all(dir.join("var")).unwrap();
            std::fs::write(dir.join("etc/shadow"), "root:*:1::::::\n").unwrap();
            std::fs::write(
                dir.join("run/secrets/kubernetes.io/serviceaccount/token"),
                "x",
            )
            .unwrap();
            // Absolute, as in images: must resolve inside this root.
            std::os::unix::fs::symlink("/run", dir.join("var/run")).unwrap();
            FakeRoot(dir)
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_root_resolves_absolute_symlinks_inside_itself() {
        let fake = FakeRoot::new("symlink");
        let root = Root::at(&fake.0).unwrap();
        let cfg = CaptureConfig::default();
        let keys = container_inodes(&root, &cfg);
        let token = key_of(
            &fake
                .0
                .join("run/secrets/kubernetes.io/serviceaccount/token"),
        )
        .unwrap();
        let shadow = key_of(&fake.0.join("etc/shadow")).unwrap();
        assert_eq!(keys.get(&token), Some(&watch::SENSITIVE), "{keys:?}");
        assert_eq!(keys.get(&shadow), Some(&watch::SENSITIVE));
        // Only what is inside: not the host's /etc/passwd.
        let host_passwd = key_of(Path::new("/etc/passwd")).unwrap();
        assert!(!keys.contains_key(&host_passwd));
        assert_eq!(keys.len(), 2, "{keys:?}");
        // A symlink out of the root stays in it.
        std::os::unix::fs::symlink("/etc/passwd", fake.0.join("etc/passwd")).unwrap();
        let keys = container_inodes(&root, &cfg);
        assert!(!keys.contains_key(&host_passwd));
    }

    #[test]
    fn a_host_root_resolves_the_lists_in_the_hosts_tree() {
        let fake = FakeRoot::new("hostroot");
        let cfg = CaptureConfig::default();
        let w = watched_inodes(&cfg, Path::new("/var/lib/fdr"), &HostRoot::new(&fake.0));
        let shadow = key_of(&fake.0.join("etc/shadow")).unwrap();
        let etc = key_of(&fake.0.join("etc")).unwrap();
        assert_eq!(
            w.get(&shadow).copied().unwrap_or(0) & watch::SENSITIVE,
            watch::SENSITIVE
        );
        assert_eq!(
            w.get(&etc).copied().unwrap_or(0) & watch::CRITICAL,
            watch::CRITICAL
        );
        // The host's files only, not the agent's own.
        let own_passwd = key_of(Path::new("/etc/passwd")).unwrap();
        let own_etc = key_of(Path::new("/etc")).unwrap();
        assert!(!w.contains_key(&own_passwd), "{w:?}");
        assert!(!w.contains_key(&own_etc), "{w:?}");
        // The token behind the host's absolute /var/run link.
        let token = key_of(
            &fake
                .0
                .join("run/secrets/kubernetes.io/serviceaccount/token"),
        )
        .unwrap();
        assert!(w.contains_key(&token));
        // A process's root found through the host's /proc.
        let own = Root::of_process_in(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(own.identity(), Root::host().unwrap().identity());
    }

    #[test]
    fn keys_from_fdinfo_match_stat_on_a_plain_filesystem() {
        let root = Root::host().unwrap();
        let fd = root.open("etc/passwd", libc::O_PATH).unwrap();
        assert_eq!(root.key(&fd), key_of(Path::new("/etc/passwd")));
        // A process's root is the host's when it runs on the host.
        let own = Root::of_process(std::process::id()).unwrap();
        assert_eq!(own.identity(), root.identity());
        let fd = own.open("etc/passwd", libc::O_PATH).unwrap();
        assert_eq!(own.key(&fd), key_of(Path::new("/etc/passwd")));
    }

    #[test]
    fn merge_bounds_each_container_and_the_whole_map() {
        let key = |dev, ino| InodeKey { dev, _pad: 0, ino };
        let host: HashMap<_, _> = [(key(1, 1), watch::CRITICAL), (key(1, 2), watch::SENSITIVE)]
            .into_iter()
            .collect();
        let a: HashMap<_, _> = (0..5).map(|i| (key(2, i), watch::SENSITIVE)).collect();
        // Shares a key with the host: the bits add up, no room taken.
        let b: HashMap<_, _> = [(key(1, 1), watch::SENSITIVE), (key(3, 1), watch::SENSITIVE)]
            .into_iter()
            .collect();
        let (m, left) = merge(&host, [&a, &b], 3, 100);
        assert_eq!(m.len(), 2 + 3 + 1);
        assert_eq!(m[&key(1, 1)], watch::CRITICAL | watch::SENSITIVE);
        assert_eq!(
            left,
            Left {
                over_share: 2,
                over_capacity: 0
            }
        );
        let (m, left) = merge(&host, [&a, &b], 3, 4);
        assert_eq!(m.len(), 4);
        // The host's keys first.
        assert!(m.contains_key(&key(1, 2)));
        assert_eq!(left.over_share, 2);
        assert_eq!(left.over_capacity, 2);
        assert_eq!(left.total(), 4);
    }

    #[test]
    fn prefixes_pack_words_and_classes() {
        let cfg = CaptureConfig::default();
        let p = prefixes(&cfg, Path::new("/var/lib/fdr"));
        // "/proc/", "/sys/", "/var/lib/fdr/" (once), "/etc/", "/root/.ssh/"
        assert_eq!(p.count, 5);
        assert_eq!(p.len[0], 6);
        assert_eq!(p.words[0][0], u64::from_le_bytes(*b"/proc/\0\0"));
        assert_eq!(p.class[0], watch::EXCLUDED);
        assert_eq!(p.class[3], watch::CRITICAL);
        assert_eq!(p.len[2], "/var/lib/fdr/".len() as u32);
    }

    #[test]
    fn watched_inodes_mark_etc_critical_and_shadow_sensitive() {
        let cfg = CaptureConfig::default();
        let w = watched_inodes(&cfg, Path::new("/var/lib/fdr"), &HostRoot::default());
        let etc = key_of(Path::new("/etc")).unwrap();
        assert_eq!(
            w.get(&etc).copied().unwrap_or(0) & watch::CRITICAL,
            watch::CRITICAL
        );
        let passwd = key_of(Path::new("/etc/passwd")).unwrap();
        assert_eq!(w[&passwd] & watch::SENSITIVE, watch::SENSITIVE);
    }
}
