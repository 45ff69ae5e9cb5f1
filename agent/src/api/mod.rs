//! Stage 9, the gRPC API (`fdr.v1.FlightRecorder`): a unix socket (mode
//! 0600) always, TCP with mutual TLS when configured. Served from
//! [`state::State`], the handles to every stage's shared data that the
//! daemon's step writes. Beside it: [`health`] (`grpc.health.v1`, on these
//! listeners and a plaintext one), [`metrics`] (Prometheus, over HTTP) and
//! [`export`] (the OTLP logs export: its sender and raw-event tap).
//!
//! Takes: requests. Gives: events, snapshots, models, incidents, stats —
//! paged and bounded; OTLP log records to a collector when enabled. Imports: every stage before it; only the daemon
//! imports it.

mod analysis_calls;
mod authority;
mod convert;
pub mod export;
pub mod health;
pub mod metrics;
mod paging;
pub mod query;
mod service;
pub mod state;
mod tcp;

pub use tcp::{bind as bind_tcp, Tcp};

use std::{
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use fdr_proto::v1::flight_recorder_server::FlightRecorderServer;
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::{wrappers::UnixListenerStream, StreamExt};
use tonic::transport::Server;

pub use service::Service;

use crate::api::state::State;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("creating socket directory {path}: {source}")]
    SocketDir {
        path: String,
        source: std::io::Error,
    },
    #[error("binding unix socket {path}: {source}")]
    BindUnix {
        path: String,
        source: std::io::Error,
    },
    #[error("unix socket {path} is in use: {why}; not starting a second agent on it")]
    SocketInUse { path: String, why: String },
    #[error("unix socket path {path} is {kind}, not a socket: refusing to replace it")]
    NotASocket { path: String, kind: &'static str },
    #[error("binding TCP listener {addr}: {source}")]
    BindTcp {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] fdr_proto::auth::AuthError),
    #[error("TLS setup of the TCP listener (api.tls_cert_file {cert}, api.tls_key_file {key}): {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("starting the health thread's runtime: {0}")]
    HealthRuntime(std::io::Error),
}

/// The agent's unix socket, from [`bind_unix`]: its path, its identity
/// (device and inode at bind time) and the lock that keeps other agents off
/// the path for as long as this value lives.
#[derive(Debug)]
pub struct UnixSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
    _lock: std::fs::File,
}

impl UnixSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket if the path still names the one bound here (same
    /// device and inode); anything else found there is left alone. Returns
    /// whether it removed it.
    pub fn remove(&self) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        match std::fs::symlink_metadata(&self.path) {
            // A socket with our inode (a file made since may reuse the
            // number; it is not a socket, then).
            Ok(md)
                if md.file_type().is_socket() && md.dev() == self.dev && md.ino() == self.ino =>
            {
                std::fs::remove_file(&self.path).is_ok()
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "the socket path names another file now; left alone");
                false
            }
            Err(_) => false,
        }
    }
}

/// Binds the unix socket at `path` so that it is never reachable with a
/// mode looser than 0600, and never at the expense of anything else:
///
/// - `<path>.lock` is locked (`flock`, held while the [`UnixSocket`] lives),
///   so two agents never race for the path;
/// - a socket a live process answers on is refused (another agent); a
///   stale socket (connection refused) is replaced; a path that is not a
///   socket is refused, never replaced;
/// - the socket is bound inside a directory created with mode 0700 next to
///   `path` (only root can reach into it, whatever the process umask), made
///   0600 there, then renamed into place with `RENAME_NOREPLACE`: it
///   appears at `path` already private, and nothing that appeared there
///   meanwhile is overwritten. (Setting the umask around `bind` would do
///   the same, but the umask is process-wide: files other threads create
///   meanwhile would get it too.)
pub fn bind_unix(path: &Path) -> Result<(UnixListener, UnixSocket), ApiError> {
    claim_unix(path)?.bind()
}

/// The socket path, claimed (locked, checked, a stale socket removed) but
/// not bound yet: the agent claims it before anything else, so a second
/// agent stops at once, and binds once its probes are attached.
#[derive(Debug)]
pub struct UnixClaim {
    path: PathBuf,
    dir: PathBuf,
    lock: std::fs::File,
}

/// The first half of [`bind_unix`]: the lock and the checks.
pub fn claim_unix(path: &Path) -> Result<UnixClaim, ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = || path.display().to_string();
    let bind_err = |source| ApiError::BindUnix {
        path: shown(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|source| ApiError::SocketDir {
        path: dir.display().to_string(),
        source,
    })?;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&lock_path)
        .map_err(|source| ApiError::BindUnix {
            path: lock_path.display().to_string(),
            source,
        })?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            ApiError::SocketInUse {
                path: shown(),
                why: format!("another fdr-agent holds {}", lock_path.display()),
            }
        } else {
            bind_err(err)
        });
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
        Ok(md) if md.file_type().is_socket() => match probe(path) {
            Probe::Refused => {
                tracing::info!(path = %shown(), "replacing a stale socket");
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(bind_err(e)),
                }
            }
            Probe::Live => {
                return Err(ApiError::SocketInUse {
                    path: shown(),
                    why: "a process (another agent?) answers on it".into(),
                })
            }
            Probe::Error(e) => return Err(bind_err(e)),
        },
        Ok(md) => {
            return Err(ApiError::NotASocket {
                path: shown(),
                kind: file_kind(&md),
            })
        }
    }
    Ok(UnixClaim {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        lock,
    })
}

impl UnixClaim {
    /// The second half of [`bind_unix`]: binds privately, renames into place.
    pub fn bind(self) -> Result<(UnixListener, UnixSocket), ApiError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let UnixClaim { path, dir, lock } = self;
        let shown = || path.display().to_string();
        let bind_err = |source| ApiError::BindUnix {
            path: shown(),
            source,
        };
        // A private directory of our own next to the target (same filesystem,
        // for the rename); a leftover of a crashed agent of the same pid goes.
        let private = dir.join(format!(".fdr{:x}", std::process::id()));
        if let Ok(md) = std::fs::symlink_metadata(&private) {
            if md.is_dir() {
                let _ = std::fs::remove_dir_all(&private);
            } else {
                let _ = std::fs::remove_file(&private);
            }
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|source| ApiError::SocketDir {
                path: private.display().to_string(),
                source,
            })?;
        let tmp = private.join("s");
        let bound = (|| {
            let listener = UnixListener::bind(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            let md = std::fs::symlink_metadata(&tmp)?;
            rename_noreplace(&tmp, &path)?;
            Ok((listener, md.dev(), md.ino()))
        })();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&private);
        let (listener, dev, ino) = bound.map_err(|e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ApiError::SocketInUse {
                    path: shown(),
                    why: "something appeared at the path while binding".into(),
                }
            } else {
                bind_err(e)
            }
        })?;
        Ok((
            listener,
            UnixSocket {
                path,
                dev,
                ino,
                _lock: lock,
            },
        ))
    }
}

enum Probe {
    Live,
    Refused,
    Error(std::io::Error),
}

/// Whether a process accepts connections on the socket at `path`: a
/// non-blocking connect, so that a full backlog counts as live instead of
/// blocking.
fn probe(path: &Path) -> Probe {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Probe::Error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket calls on an fd we own and close.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Probe::Error(std::io::Error::last_os_error());
        }
        let rc = libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 {
            return Probe::Live;
        }
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Probe::Live,
            Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => Probe::Refused,
            _ => Probe::Error(err),
        }
    }
}

fn file_kind(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

/// `rename(from, to)` failing with `AlreadyExists` when `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid C strings; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: `to` was checked under the lock.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// A store error as a status: corruption is data loss (naming what was
/// read), a store being reopened is unavailable.
pub(crate) fn store_status(e: crate::store::StoreError) -> tonic::Status {
    match e {
        crate::store::StoreError::Corrupt { .. } | crate::store::StoreError::Decode { .. } => {
            tonic::Status::data_loss(e.to_string())
        }
        crate::store::StoreError::Unavailable(_) | crate::store::StoreError::NoIdReserved(_) => {
            tonic::Status::unavailable(e.to_string())
        }
        e => tonic::Status::internal(e.to_string()),
    }
}

/// Runs a read of the database on the blocking pool, never on the
/// executor's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("database read: {e}")))?
}

/// The service with the message size limit of both sides
/// ([`fdr_proto::transport::MAX_MESSAGE_BYTES`]), set explicitly.
pub(crate) fn flight_recorder_server(svc: Service) -> FlightRecorderServer<Service> {
    use fdr_proto::transport::MAX_MESSAGE_BYTES;
    FlightRecorderServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves the API until `stop` becomes `true`; open streams end then too.
pub async fn serve(
    unix: UnixListener,
    tcp: Option<Tcp>,
    state: Arc<State>,
    health: Arc<health::Health>,
    stop: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let shutdown = SharedShutdown(stop.clone());
    let unix_server = Server::builder()
        .add_service(flight_recorder_server(Service::new(
            state.clone(),
            stop.clone(),
        )))
        .add_service(health.server())
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(unix).map(|c| c.map(authority::FixAuthority::new)),
            shutdown.clone().wait(),
        );
    let Some(tcp) = tcp else {
        return Ok(unix_server.await?);
    };
    let tcp_server = tcp.serve(state, health.server(), stop, shutdown.wait());
    let (a, b) = tokio::join!(unix_server, tcp_server);
    a?;
    b?;
    Ok(())
}

/// A shutdown signal several servers can wait on.
#[derive(Clone)]
struct SharedShutdown(tokio::sync::watch::Receiver<bool>);

impl SharedShutdown {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|&v| v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir()
                .join(format!("fdr-api-{tag}-{}-{nanos:x}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn unix_socket_is_private_and_leaves_no_temporary() {
        let dir = Dir::new("private");
        let path = dir.0.join("fdr.sock");
        let (_l, sock) = bind_unix(&path).expect("bind");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(entries(&dir.0), ["fdr.sock", "fdr.sock.lock"]);
        assert!(sock.remove());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_live_socket_is_not_taken_over() {
        let dir = Dir::new("live");
        let path = dir.0.join("fdr.sock");
        let (_l, first) = bind_unix(&path).expect("bind");
        let err = bind_unix(&path).expect_err("a second agent").to_string();
        assert!(err.contains("in use"), "{err}");
        // Another program (not an agent: no lock) listening there.
        drop(first);
        let err = bind_unix(&path).expect_err("a live listener").to_string();
        assert!(err.contains("answers on it"), "{err}");
        std::os::unix::net::UnixStream::connect(&path).expect("the first still serves");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let dir = Dir::new("stale");
        let path = dir.0.join("fdr.sock");
        // A socket nobody listens on any more (a crashed agent's).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_l, sock) = bind_unix(&path).expect("replaces the stale socket");
        std::os::unix::net::UnixStream::connect(&path).expect("serves");
        assert!(sock.remove());
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_socket_is_never_replaced() {
        let dir = Dir::new("file");
        let path = dir.0.join("fdr.sock");
        std::fs::write(&path, "precious").unwrap();
        let err = bind_unix(&path).expect_err("a regular file").to_string();
        assert!(err.contains("a regular file, not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = bind_unix(&path).expect_err("a directory").to_string();
        assert!(err.contains("a directory"), "{err}");
        std::fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let err = bind_unix(&path).expect_err("a symlink").to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert!(!entries(&dir.0).iter().any(|e| e.starts_with(".fdr")));
    }

    #[tokio::test]
    async fn exit_removes_only_our_own_socket() {
        let dir = Dir::new("ours");
        let path = dir.0.join("fdr.sock");
        let (l, sock) = bind_unix(&path).expect("bind");
        drop(l);
        // Someone replaced it meanwhile.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        assert!(!sock.remove());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }
}
