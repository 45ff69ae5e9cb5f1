//! What a test containerd leaves behind and how it is removed: runc
//! containers, shims, mounts, cgroups, files under /run/containerd.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{pod_cgroup_parent, NAMESPACE};

/// Container ids in a runc state directory.
pub(super) fn runc_ids(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("state.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// containerd-shim processes serving the daemon at `socket`.
pub(super) fn shim_pids(socket: &Path) -> Vec<i32> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|&b| b == 0);
            let is_shim = args
                .next()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
            is_shim && args.any(|a| a == socket)
        })
        .collect()
}

/// Lazily unmounts every mount at or under `dir`, deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount paths in mountinfo escape space, tab, newline and backslash in octal.
pub(super) fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| p.get(i + 1..i + 4))
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of every cgroup hierarchy (v1 and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(dir))
        })
        .collect()
}

/// Removes a pod's cgroup (and leftover container cgroups in it) from every
/// hierarchy, then `besteffort` and `kubepods` when they are left empty.
pub(super) fn remove_pod_cgroups(uid: &str) {
    let relative = pod_cgroup_parent(uid);
    let relative = relative.trim_start_matches('/');
    for mount in cgroup_mounts() {
        let pod = mount.join(relative);
        if pod.exists() {
            remove_cgroup_tree(&pod);
        }
        // rmdir fails on a non-empty cgroup: other pods' parents stay.
        let besteffort = mount.join("kubepods/besteffort");
        if std::fs::remove_dir(&besteffort).is_ok() || !besteffort.exists() {
            let _ = std::fs::remove_dir(mount.join("kubepods"));
        }
    }
}

/// Kills what is left in a `ctr run` container's cgroup (`/k8s.io/<id>`)
/// and removes it, and the namespace's cgroup when empty.
pub(super) fn remove_ctr_cgroups(id: &str) {
    for mount in cgroup_mounts() {
        let dir = mount.join(NAMESPACE).join(id);
        if dir.exists() {
            // cgroup v2 only; v1 hierarchies have no cgroup.kill.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            remove_cgroup_tree(&dir);
        }
        let _ = std::fs::remove_dir(mount.join(NAMESPACE));
    }
}

/// Removes a cgroup directory and its children, retrying while exiting
/// tasks are still accounted to them.
pub(crate) fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let start = Instant::now();
    while std::fs::remove_dir(dir).is_err()
        && dir.exists()
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// containerd makes `/run/containerd/{s,fifo,runc}` whatever its
/// configuration says; removes them (and `/run/containerd`) when empty and
/// no system containerd uses them.
pub(super) fn remove_run_containerd_leftovers() {
    let run = Path::new("/run/containerd");
    // Shim sockets nobody listens on any more (a shim killed in cleanup
    // cannot remove its own); live shims of any containerd answer.
    if let Ok(entries) = std::fs::read_dir(run.join("s")) {
        for e in entries.flatten() {
            let refused = std::os::unix::net::UnixStream::connect(e.path())
                .err()
                .is_some_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if run.join("containerd.sock").exists() {
        return;
    }
    for sub in [
        "s",
        "fifo",
        "runc/k8s.io",
        "runc",
        "io.containerd.runtime.v2.task",
    ] {
        let _ = std::fs::remove_dir(run.join(sub));
    }
    let _ = std::fs::remove_dir(run);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b\011c\134d"),
            "/tmp/a b\tc\\d"
        );
        assert_eq!(unescape_mount_path(r"/tmp/x\04"), r"/tmp/x\04");
    }
}
