//! Scopes: the host, or one container. Every event belongs to one, found
//! from its cgroup v2 id: the cgroup's path names the container.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use crate::event::scope::Scope;
use crate::util::host::HostRoot;

fn is_hex_id(s: &str) -> bool {
    s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id a cgroup path names, if any. Knows the cgroupfs and
/// systemd shapes of docker, containerd (CRI and plain), CRI-O, podman and
/// kubelet; a container's own sub-cgroups (systemd running inside it:
/// `init.scope`, …) belong to it.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    if let Some(id) = container_id_at(cgroup_path) {
        return Some(id);
    }
    let mut p = cgroup_path.trim_end_matches('/');
    while let Some((parent, _)) = p.rsplit_once('/') {
        // Only unmistakable ids up the path: `/<namespace>/<name>` of plain
        // containerd would match any two-level host path.
        if let Some(id) = container_id_at(parent).filter(|id| is_hex_id(id)) {
            return Some(id);
        }
        p = parent;
    }
    None
}

/// The container id the last components of `cgroup_path` name.
fn container_id_at(cgroup_path: &str) -> Option<String> {
    let parts: Vec<&str> = cgroup_path.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    // systemd driver: <runtime>-<id>.scope
    if let Some(stem) = last.strip_suffix(".scope") {
        for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
            if let Some(id) = stem.strip_prefix(prefix) {
                return is_hex_id(id).then(|| id.to_owned());
            }
        }
        return None;
    }
    // cgroupfs: /docker/<id>, /libpod_parent/libpod-<id>, /kubepods/.../pod<uid>/<id>
    if let Some(id) = last.strip_prefix("libpod-") {
        return is_hex_id(id).then(|| id.to_owned());
    }
    if parts.len() >= 2 {
        let parent = parts[parts.len() - 2];
        if (parent == "docker" || parent.starts_with("pod") || parent.starts_with("crio"))
            && is_hex_id(last)
        {
            return Some(last.to_owned());
        }
        if parts.iter().any(|p| p.starts_with("kubepods")) && is_hex_id(last) {
            return Some(last.to_owned());
        }
    }
    // containerd without CRI: /<namespace>/<id>, the namespace not a systemd unit.
    if parts.len() == 2 {
        let (ns, id) = (parts[0], parts[1]);
        let systemd = |s: &str| {
            [".slice", ".service", ".scope", ".socket", ".mount"]
                .iter()
                .any(|x| s.ends_with(x))
        };
        if !systemd(ns) && !systemd(id) && !ns.starts_with("kubepods") && ns != "init" {
            return Some(id.to_owned());
        }
    }
    None
}

/// The systemd unit a host cgroup path belongs to: its innermost
/// `.service` or `.scope` component (`system.slice/sshd.service` →
/// `sshd.service`, a login session → `session-3.scope`).
pub fn systemd_unit(cgroup_path: &str) -> Option<String> {
    cgroup_path
        .split('/')
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
}

/// Who an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub scope: Scope,
    /// For host events: the systemd unit (service or session scope).
    pub unit: Option<Arc<str>>,
}

/// cgroup id → attribution, cached; unknown ids are looked up by scanning
/// the v2 hierarchy (once per id, off the common path).
pub struct ScopeResolver {
    root: Option<PathBuf>,
    cache: HashMap<u64, Attribution>,
    /// Containers first seen since the last `take_new`: id, cgroup id and
    /// cgroup path relative to the v2 root.
    new: Vec<(Arc<str>, u64, PathBuf)>,
}

impl ScopeResolver {
    /// Resolves in the agent's own cgroup2 mount.
    pub fn new() -> Self {
        Self::with_root(cgroup2_root(&HostRoot::default()))
    }

    /// Resolves in the cgroup v2 hierarchy mounted at `root` (see
    /// [`cgroup2_root`]).
    pub fn with_root(root: Option<PathBuf>) -> Self {
        ScopeResolver {
            root,
            cache: HashMap::new(),
            new: Vec::new(),
        }
    }

    pub fn resolve(&mut self, cgroup_id: u64) -> Attribution {
        if let Some(a) = self.cache.get(&cgroup_id) {
            return a.clone();
        }
        let path = self.root.as_deref().and_then(|root| {
            let p = cgroup_path(root, cgroup_id)?;
            Some(p.strip_prefix(root).ok()?.to_string_lossy().into_owned())
        });
        let attribution = match path.as_deref().map(|p| (p, container_id(p))) {
            Some((p, Some(id))) => {
                let id: Arc<str> = Arc::from(id);
                self.new.push((id.clone(), cgroup_id, PathBuf::from(p)));
                Attribution {
                    scope: Scope::Container(id),
                    unit: None,
                }
            }
            Some((p, None)) => Attribution {
                scope: Scope::Host,
                unit: systemd_unit(p).map(Arc::from),
            },
            None => Attribution {
                scope: Scope::Host,
                unit: None,
            },
        };
        self.cache.insert(cgroup_id, attribution.clone());
        attribution
    }

    /// Containers seen for the first time since the last call.
    pub fn take_new(&mut self) -> Vec<(Arc<str>, u64, PathBuf)> {
        std::mem::take(&mut self.new)
    }

    /// Whether the cgroup still exists (false once a container is gone).
    pub fn exists(&self, cgroup_id: u64) -> bool {
        self.root
            .as_deref()
            .is_some_and(|r| cgroup_path(r, cgroup_id).is_some())
    }
}

impl Default for ScopeResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the cgroup v2 hierarchy is mounted: with the agent's own root,
/// its mount in `/proc/self/mounts`; with a host root, the host's mount
/// (from `<root>/proc/1/mountinfo`: the host's init sees the host's
/// mounts) taken under the root, as the agent sees it.
pub fn cgroup2_root(host: &HostRoot) -> Option<PathBuf> {
    if host.is_own() {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        return mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        });
    }
    let info = std::fs::read_to_string(host.proc().join("1/mountinfo")).ok()?;
    let mount = info.lines().find_map(|l| {
        // `<id> <parent> <dev> <root> <mount point> <options> [tags] - <fstype> …`
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| unescape_mount(point))
    })?;
    // Canonical: paths the kernel gives back (opened by handle) are. The
    // host's own links are followed inside its root first.
    let dir = host.resolve(mount);
    Some(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape_mount(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|c| (b'0'..=b'7').contains(c))
                .then(|| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
        });
        match oct {
            Some(v) if b[i] == b'\\' && v <= 255 => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `id` under `root`: opened by its id as a file
/// handle (what the kernel exports for cgroup v2: one call, whatever the
/// size of the hierarchy), else found by walking the hierarchy.
fn cgroup_path(root: &Path, id: u64) -> Option<PathBuf> {
    match open_by_id(root, id) {
        Ok(p) => Some(p),
        // Gone: no walk will find it.
        Err(e) if e.raw_os_error() == Some(libc::ESTALE) => None,
        Err(_) => find_cgroup(root, id, 0),
    }
}

/// kernfs file handle: 8 bytes, the cgroup id (`FILEID_KERNFS`).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

const FILEID_KERNFS: i32 = 0xfe;

fn open_by_id(root: &Path, id: u64) -> std::io::Result<PathBuf> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mount = std::fs::File::open(root)?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a valid `struct file_handle` header followed by
    // its 8 bytes, alive for the call; the returned fd is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut handle).cast::<libc::file_handle>(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn find_cgroup(dir: &Path, id: u64, depth: u32) -> Option<PathBuf> {
    if std::fs::metadata(dir).ok()?.ino() == id {
        return Some(dir.to_path_buf());
    }
    if depth > 10 {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(p) = find_cgroup(&e.path(), id, depth + 1) {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f0d2c1b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817065f4e";

    #[test]
    fn container_ids_from_cgroup_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            (&format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            (&format!("/docker/{ID}"), Some(ID)),
            (&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_5678.slice/cri-containerd-{ID}.scope"), Some(ID)),
            (&format!("/kubepods/besteffort/pod0b7e6f5d-1111-2222-3333-444455556666/{ID}"), Some(ID)),
            (&format!("/machine.slice/libpod-{ID}.scope"), Some(ID)),
            (&format!("/libpod_parent/libpod-{ID}"), Some(ID)),
            (&format!("/kubepods.slice/kubepods-burstable.slice/crio-{ID}.scope"), Some(ID)),
            ("/default/redis-1", Some("redis-1")),
            (&format!("/k8s.io/{ID}"), Some(ID)),
            (&format!("/kubepods/pod0b7e6f5d-1111-2222-3333-444455556666/{ID}"), Some(ID)),
            (&format!("/kubepods/burstable/pod0b7e6f5d-1111-2222-3333-444455556666/{ID}"), Some(ID)),
            (&format!("/kubepods.slice/kubepods-pod0b7e6f5d_1111.slice/cri-containerd-{ID}.scope"), Some(ID)),
            (&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/crio-{ID}.scope"), Some(ID)),
            (&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"), Some(ID)),
            (&format!("/system.slice/docker-{ID}.scope/init.scope"), Some(ID)),
            (&format!("/kubepods/besteffort/pod0b7e6f5d-1111-2222-3333-444455556666/{ID}/system.slice/nginx.service"), Some(ID)),
            // Not containers: runtime helpers, pod-level cgroups, daemons.
            (&format!("/system.slice/crio-conmon-{ID}.scope"), None),
            (&format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            ("/kubepods/besteffort/pod0b7e6f5d-1111-2222-3333-444455556666", None),
            ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice", None),
            ("/system.slice/containerd.service", None),
            ("/system.slice/kubelet.service", None),
            ("/system.slice/sshd.service", None),
            ("/user.slice/user-0.slice/session-3.scope", None),
            ("/", None),
            ("/init.scope", None),
            ("/system.slice/docker-notanid.scope", None),
            ("/kubepods.slice/kubepods-besteffort.slice", None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(path).as_deref(), *want, "{path}");
        }
    }

    #[test]
    fn systemd_units_from_host_paths() {
        assert_eq!(
            systemd_unit("/system.slice/sshd.service").as_deref(),
            Some("sshd.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-0.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            systemd_unit("/system.slice/docker.service/x").as_deref(),
            Some("docker.service")
        );
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/user.slice"), None);
    }

    #[test]
    fn scope_keys_round_trip() {
        for s in [Scope::Host, Scope::Container(Arc::from("abc"))] {
            assert_eq!(Scope::from_key(&s.key()), Some(s));
        }
        assert_eq!(Scope::from_key("container:"), None);
        assert_eq!(Scope::from_key("nope"), None);
    }

    #[test]
    fn own_cgroup_resolves() {
        let mut r = ScopeResolver::new();
        use std::os::unix::fs::MetadataExt;
        let root = cgroup2_root(&HostRoot::default()).expect("cgroup v2 mounted");
        let id = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(r.resolve(id).scope, Scope::Host);
        assert!(r.exists(id));
        assert!(!r.exists(u64::MAX));
        // Opened by id, the same directory as walking finds.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line");
        let dir = root.join(rel.trim_start_matches('/'));
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(open_by_id(&root, ino).unwrap(), dir);
        assert_eq!(find_cgroup(&root, ino, 0), Some(dir));
    }

    /// A host root whose `/proc` and `/sys` are the real ones (links):
    /// the host's cgroup2 mount is found from its init's mountinfo, and
    /// the agent's own cgroup resolves through it.
    #[test]
    fn host_roots_cgroup2_mount_comes_from_init_mountinfo() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("fdr-cgroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/proc", dir.join("proc")).unwrap();
        std::os::unix::fs::symlink("/sys", dir.join("sys")).unwrap();
        let own = cgroup2_root(&HostRoot::default()).expect("cgroup v2 mounted");
        let hosted = cgroup2_root(&HostRoot::new(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(hosted.as_ref(), Some(&own));
        let mut r = ScopeResolver::with_root(hosted);
        assert_eq!(
            r.resolve(std::fs::metadata(&own).unwrap().ino()).scope,
            Scope::Host
        );
        assert_eq!(unescape_mount("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount("/x\\9"), "/x\\9");
    }
}
