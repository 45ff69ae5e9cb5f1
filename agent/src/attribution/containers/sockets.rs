//! Watches the directories of the runtimes' sockets (inotify), so that a
//! runtime that starts or restarts is connected as soon as its socket
//! appears, not at the next reconnect tick. A socket whose directory does
//! not exist yet is watched through its nearest existing ancestor (the
//! directory's creation re-arms the watch one level down).
//!
//! Only directory entries are watched (`IN_CREATE`, `IN_MOVED_TO`, and the
//! watched directory going away): a handful of events when a runtime
//! starts, nothing per container event.

use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use tokio::io::unix::AsyncFd;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// The inotify watches on the sockets' directories.
pub struct SocketWatch {
    fd: AsyncFd<OwnedFd>,
    sockets: Vec<PathBuf>,
    /// Watch descriptor → the directories it watches (two names of one
    /// directory share a watch: `/var/run/x` and `/run/x`).
    dirs: HashMap<i32, Vec<PathBuf>>,
}

impl SocketWatch {
    /// Watches the directories of `sockets` (or their nearest existing
    /// ancestors).
    pub fn new(sockets: Vec<PathBuf>) -> io::Result<SocketWatch> {
        // SAFETY: inotify_init1 has no memory arguments; its result is
        // checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the descriptor stays open for as long as the AsyncFd
        // lives: the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd)? };
        let mut w = SocketWatch {
            fd,
            sockets,
            dirs: HashMap::new(),
        };
        w.arm();
        Ok(w)
    }

    /// Adds a watch on each socket's directory, or its nearest existing
    /// ancestor (again after directories appeared or went away: adding a
    /// watch already there is a no-op).
    fn arm(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for s in &self.sockets {
            let Some(mut dir) = s.parent().map(Path::to_path_buf) else {
                continue;
            };
            while !dir.is_dir() {
                match dir.parent() {
                    Some(p) => dir = p.to_path_buf(),
                    None => break,
                }
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: the fd is ours and `c` a NUL-terminated path.
            let wd =
                unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                let err = io::Error::last_os_error();
                tracing::debug!(%err, dir = %dir.display(), "watching a runtime socket's directory");
                continue;
            }
            let names = self.dirs.entry(wd).or_default();
            if !names.contains(&dir) {
                names.push(dir);
            }
        }
    }

    /// Waits for a change in a watched directory that may concern a
    /// socket: a socket created or moved in, or a directory on the way to
    /// one. Returns the sockets that now exist and were (re)created.
    pub async fn changed(&mut self) -> io::Result<Vec<PathBuf>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 4096];
            let n = match guard.try_io(|fd| {
                // SAFETY: `buf` is valid for its length.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            let names = self.parse(&buf[..n]);
            let mut created = Vec::new();
            let mut rearm = false;
            for (wd, mask, name) in names {
                if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                    self.dirs.remove(&wd);
                    rearm = true;
                    continue;
                }
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    rearm = true;
                    created.extend(self.sockets.iter().filter(|s| s.exists()).cloned());
                    continue;
                }
                let Some(dirs) = self.dirs.get(&wd) else {
                    continue;
                };
                for path in dirs.iter().map(|d| d.join(&name)) {
                    if self.sockets.contains(&path) {
                        created.push(path);
                    } else if self.sockets.iter().any(|s| s.starts_with(&path)) {
                        // A directory on the way to a socket: watch further
                        // down (the socket may be in it already).
                        rearm = true;
                        created.extend(
                            self.sockets
                                .iter()
                                .filter(|s| s.starts_with(&path) && s.exists())
                                .cloned(),
                        );
                    }
                }
            }
            if rearm {
                self.arm();
            }
            if !created.is_empty() {
                created.sort();
                created.dedup();
                return Ok(created);
            }
        }
    }

    /// The (watch, mask, name) of each event in `buf`.
    fn parse(&self, buf: &[u8]) -> Vec<(i32, u32, PathBuf)> {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        let mut out = Vec::new();
        let mut at = 0;
        while at + HEADER <= buf.len() {
            // SAFETY: a header's worth of bytes is there; read unaligned.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let name_at = at + HEADER;
            let end = (name_at + ev.len as usize).min(buf.len());
            let raw = &buf[name_at..end];
            let name = raw.split(|&b| b == 0).next().unwrap_or(&[]);
            out.push((ev.wd, ev.mask, PathBuf::from(OsStr::from_bytes(name))));
            at = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_socket_in_a_directory_made_later_is_seen_at_once() {
        let root = std::env::temp_dir().join(format!("fdr-sockwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let socket = root.join("run/containerd/containerd.sock");
        let mut w = SocketWatch::new(vec![socket.clone(), root.join("other/x.sock")]).unwrap();
        let made = {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
                // Unrelated files do not wake it up with nothing.
                std::fs::write(socket.parent().unwrap().join("noise"), b"").unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::os::unix::net::UnixListener::bind(&socket).unwrap()
            })
        };
        let seen = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("seen within 5 s")
            .unwrap();
        let _listener = made.await.unwrap();
        assert_eq!(seen, std::slice::from_ref(&socket));
        // Again when it is made anew (a runtime restart).
        std::fs::remove_file(&socket).unwrap();
        let _again = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("seen again")
            .unwrap();
        assert_eq!(seen, [socket]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
