//! Scopes: the host, or one container. Every event belongs to one, found
//! from its cgroup v2 id: the cgroup's path names the container.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Where an event happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Host,
    /// A container, by runtime id.
    Container(Arc<str>),
}

impl Scope {
    /// `host` or `container:<id>`.
    pub fn key(&self) -> String {
        match self {
            Scope::Host => "host".into(),
            Scope::Container(id) => format!("container:{id}"),
        }
    }

    pub fn from_key(s: &str) -> Option<Scope> {
        match s {
            "host" => Some(Scope::Host),
            _ => s
                .strip_prefix("container:")
                .filter(|id| !id.is_empty())
                .map(|id| Scope::Container(Arc::from(id))),
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Scope::Host => None,
            Scope::Container(id) => Some(id),
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id a cgroup path names, if any. Knows the cgroupfs and
/// systemd shapes of docker, containerd (CRI and plain), CRI-O, podman and
/// kubelet.
pub fn container_id(cgroup_path: &str) -> Option<String> {
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
    pub fn new() -> Self {
        ScopeResolver {
            root: cgroup2_root(),
            cache: HashMap::new(),
            new: Vec::new(),
        }
    }

    pub fn resolve(&mut self, cgroup_id: u64) -> Attribution {
        if let Some(a) = self.cache.get(&cgroup_id) {
            return a.clone();
        }
        let path = self.root.as_deref().and_then(|root| {
            let p = find_cgroup(root, cgroup_id, 0)?;
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
            .is_some_and(|r| find_cgroup(r, cgroup_id, 0).is_some())
    }
}

impl Default for ScopeResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
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
        let root = cgroup2_root().expect("cgroup v2 mounted");
        let id = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(r.resolve(id).scope, Scope::Host);
        assert!(r.exists(id));
        assert!(!r.exists(u64::MAX));
    }
}
