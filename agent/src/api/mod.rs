//! The gRPC API: a unix socket (mode 0600) always, TCP when configured.

mod analysis;
pub mod convert;
pub mod convert_models;
pub mod export;
pub mod query;
mod service;
mod tcp;

pub use tcp::{bind as bind_tcp, Tcp};

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use fdr_proto::v1::flight_recorder_server::FlightRecorderServer;
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

pub use service::Service;

use crate::state::State;

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
    #[error("binding TCP listener {addr}: {source}")]
    BindTcp {
        addr: String,
        source: std::io::Error,
    },
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("API token file {0} is empty")]
    EmptyToken(String),
    #[error("TLS setup of the TCP listener (api.tls_cert_file {cert}, api.tls_key_file {key}): {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds the unix socket: created under a temporary name, made 0600, then
/// renamed into place, so no client ever sees it with looser permissions.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ApiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::SocketDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let bind_err = |source| ApiError::BindUnix {
        path: path.display().to_string(),
        source,
    };
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    std::fs::rename(&tmp, path).map_err(bind_err)?;
    Ok(listener)
}

/// How many characters of a user-supplied value an error message shows.
pub const CLIP_CHARS: usize = 128;

/// `s` for an error message: whole when short, else its first
/// [`CLIP_CHARS`] characters, an ellipsis and its length, so that a huge
/// argument is never echoed back (nor logged) whole.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    clip_to(s, CLIP_CHARS)
}

/// [`clip`] to `chars` characters.
pub fn clip_to(s: &str, chars: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(chars) {
        None => std::borrow::Cow::Borrowed(s),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len())),
    }
}

/// Serves the API until `stop` becomes `true`; open streams end then too.
pub async fn serve(
    unix: UnixListener,
    tcp: Option<Tcp>,
    state: Arc<State>,
    stop: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let shutdown = SharedShutdown(stop.clone());
    let unix_server = Server::builder()
        .add_service(FlightRecorderServer::new(Service::new(
            state.clone(),
            stop.clone(),
        )))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), shutdown.clone().wait());
    let Some(tcp) = tcp else {
        return Ok(unix_server.await?);
    };
    let tcp_server = tcp.serve(state, stop, shutdown.wait());
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

    #[tokio::test]
    async fn unix_socket_is_private() {
        let dir = std::env::temp_dir().join(format!("fdr-api-test-{}", std::process::id()));
        let path = dir.join("fdr.sock");
        let _l = bind_unix(&path).expect("bind");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
