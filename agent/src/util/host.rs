//! Facts about the host the agent runs on: where its filesystem is seen
//! ([`HostRoot`]: `/`, or `/host` in a pod that mounts the host's root
//! there) and its node name ([`NodeName`]), both decided once at start
//! and passed down.

use std::{
    ffi::OsString,
    path::{Component, Path, PathBuf},
};

/// Symbolic links followed at most by [`HostRoot::resolve`] (as the
/// kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Where the host's filesystem is seen. Every host path the agent resolves
/// (watch lists, `/proc`, the cgroup2 mount, runtime sockets,
/// `/etc/passwd`, `/etc/hostname`) is taken under it; what the agent
/// reports stays the host's own path (`/etc/shadow`, never
/// `/host/etc/shadow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// Absolute, without a trailing `/` (but `/` itself).
    root: PathBuf,
}

impl Default for HostRoot {
    /// The agent's own root: paths are used as they are.
    fn default() -> Self {
        HostRoot {
            root: PathBuf::from("/"),
        }
    }
}

impl HostRoot {
    /// The host's filesystem seen at `root` (an absolute path; `/` is the
    /// agent's own root). `..` and `.` are resolved lexically.
    pub fn new(root: impl AsRef<Path>) -> HostRoot {
        HostRoot {
            root: Path::new("/").join(normalized(root.as_ref())),
        }
    }

    /// The root as configured (normalized).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the host's root is the agent's own (`/`): host paths are
    /// used unchanged.
    pub fn is_own(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where the agent finds host path `host_path` (absolute, or taken as
    /// relative to the host's `/`). With the agent's own root, `host_path`
    /// itself; else it is joined under the root with `.` and `..` resolved
    /// lexically, so that it never escapes the root. Globs (`*`) pass
    /// through. Symbolic links in the host's tree are not looked at: see
    /// [`HostRoot::resolve`] for a path that may contain some.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        if self.is_own() {
            return host_path.to_path_buf();
        }
        self.root.join(normalized(host_path))
    }

    /// Like [`HostRoot::path`], with the symbolic links of the host's tree
    /// followed inside the root (an absolute link target, such as the usual
    /// `/var/run -> /run`, is the host's, not the agent's). The part that
    /// does not exist is kept as written. With the agent's own root,
    /// `host_path` itself (the kernel follows the links).
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        if self.is_own() {
            return host_path.to_path_buf();
        }
        // Components still to walk, in reverse (the next one last).
        let mut todo: Vec<OsString> = normalized(host_path)
            .iter()
            .rev()
            .map(|c| c.to_os_string())
            .collect();
        let mut done = PathBuf::new();
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            if comp == ".." {
                done.pop();
                continue;
            }
            let here = self.root.join(&done).join(&comp);
            let target = match std::fs::symlink_metadata(&here) {
                Ok(md) if md.file_type().is_symlink() && links < MAX_LINKS => {
                    std::fs::read_link(&here).ok()
                }
                _ => None,
            };
            let Some(target) = target else {
                done.push(&comp);
                continue;
            };
            links += 1;
            if target.is_absolute() {
                done = PathBuf::new();
            }
            // `..` of the target is walked like any component (and never
            // leaves the root: popping an empty path does nothing).
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => todo.push(n.to_os_string()),
                    Component::ParentDir => todo.push("..".into()),
                    Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                }
            }
        }
        self.root.join(done)
    }

    /// The host's `/proc` (the agent's own with its own root).
    pub fn proc(&self) -> PathBuf {
        self.path("/proc")
    }
}

/// `p` relative to `/`, with `.` and `..` resolved lexically (`..` of the
/// top stays at the top).
fn normalized(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The name of this node, carried by every event, account record,
/// incident and snapshot ("host" on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    pub name: String,
    /// Where it came from: `config`, `NODE_NAME`, `/etc/hostname` or
    /// `kernel` (for the start-up log).
    pub source: &'static str,
}

impl NodeName {
    /// The node name: `configured` when not empty (`host.node_name`,
    /// `--node-name`), else the environment's `NODE_NAME` (Kubernetes'
    /// downward API), else the first line of the host's `/etc/hostname`
    /// (under `root`), else the kernel's host name. Decided once, at start.
    pub fn resolve(configured: &str, root: &HostRoot) -> NodeName {
        Self::resolve_with(configured, std::env::var("NODE_NAME").ok(), root)
    }

    fn resolve_with(configured: &str, env: Option<String>, root: &HostRoot) -> NodeName {
        let clean = |s: &str| {
            let s = s.lines().next().unwrap_or("").trim();
            (!s.is_empty()).then(|| crate::util::clip_to(s, 255).into_owned())
        };
        if let Some(n) = clean(configured) {
            return NodeName {
                name: n,
                source: "config",
            };
        }
        if let Some(n) = env.as_deref().and_then(clean) {
            return NodeName {
                name: n,
                source: "NODE_NAME",
            };
        }
        if let Some(n) = std::fs::read_to_string(root.resolve("/etc/hostname"))
            .ok()
            .as_deref()
            .and_then(clean)
        {
            return NodeName {
                name: n,
                source: "/etc/hostname",
            };
        }
        NodeName {
            name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .as_deref()
                .and_then(clean)
                .unwrap_or_default(),
            source: "kernel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_root_leaves_paths_alone() {
        let r = HostRoot::default();
        assert!(r.is_own());
        assert_eq!(r.path("/etc/shadow"), PathBuf::from("/etc/shadow"));
        assert_eq!(r.path("/etc/../x"), PathBuf::from("/etc/../x"));
        assert_eq!(r.proc(), PathBuf::from("/proc"));
        assert_eq!(HostRoot::new("/"), r);
        assert_eq!(HostRoot::new("//./"), r);
        assert_eq!(
            r.resolve("/var/run/x.sock"),
            PathBuf::from("/var/run/x.sock")
        );
    }

    #[test]
    fn host_paths_are_joined_under_the_root_and_never_escape_it() {
        let r = HostRoot::new("/host/");
        assert!(!r.is_own());
        assert_eq!(r.root(), Path::new("/host"));
        assert_eq!(r.path("/etc/shadow"), PathBuf::from("/host/etc/shadow"));
        assert_eq!(r.path("etc/shadow"), PathBuf::from("/host/etc/shadow"));
        assert_eq!(r.path("/"), PathBuf::from("/host"));
        assert_eq!(
            r.path("/../../etc/shadow"),
            PathBuf::from("/host/etc/shadow")
        );
        assert_eq!(r.path("/etc/../../../x"), PathBuf::from("/host/x"));
        assert_eq!(r.path("/a/./b/../c"), PathBuf::from("/host/a/c"));
        assert_eq!(
            r.path("/home/*/.ssh/id_*"),
            PathBuf::from("/host/home/*/.ssh/id_*")
        );
        assert_eq!(r.proc(), PathBuf::from("/host/proc"));
        assert_eq!(HostRoot::new("/srv/../host").root(), Path::new("/host"));
    }

    #[test]
    fn resolve_follows_the_hosts_links_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("fdr-hostroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run/containerd")).unwrap();
        std::fs::create_dir_all(dir.join("var")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        // Absolute, as on a host: the host's /run, not the agent's.
        std::os::unix::fs::symlink("/run", dir.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", dir.join("run/up")).unwrap();
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        let r = HostRoot::new(&dir);
        assert_eq!(
            r.resolve("/var/run/containerd/containerd.sock"),
            dir.join("run/containerd/containerd.sock")
        );
        assert_eq!(r.resolve("/run/up/hostname"), dir.join("etc/hostname"));
        assert_eq!(r.resolve("/nope/x"), dir.join("nope/x"));
        // A loop ends (the link is then kept as a name).
        assert_eq!(r.resolve("/loop"), dir.join("loop"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_name_comes_from_config_env_hostname_file_then_kernel() {
        let dir = std::env::temp_dir().join(format!("fdr-nodename-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let r = HostRoot::new(&dir);
        let n = NodeName::resolve_with(" node-a\n", Some("env-node".into()), &r);
        assert_eq!((n.name.as_str(), n.source), ("node-a", "config"));
        let n = NodeName::resolve_with("", Some("env-node".into()), &r);
        assert_eq!((n.name.as_str(), n.source), ("env-node", "NODE_NAME"));
        std::fs::write(dir.join("etc/hostname"), "  from-file \nsecond\n").unwrap();
        let n = NodeName::resolve_with("", Some(" ".into()), &r);
        assert_eq!((n.name.as_str(), n.source), ("from-file", "/etc/hostname"));
        std::fs::write(dir.join("etc/hostname"), "\n").unwrap();
        let n = NodeName::resolve_with("", None, &r);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!((n.name.as_str(), n.source), (kernel.trim(), "kernel"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
