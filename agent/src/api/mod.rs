//! The gRPC API: a unix socket (mode 0600) always, TCP when configured.

mod analysis;
pub mod convert;
pub mod convert_models;
pub mod export;
pub mod query;
mod service;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use fdr_proto::v1::flight_recorder_server::FlightRecorderServer;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{service::Interceptor, transport::Server, Request, Status};

pub use service::Service;

use crate::{config::ApiConfig, state::State};

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
    #[error("reading API token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("API token file {0} is empty")]
    EmptyToken(String),
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

/// Requires `authorization: Bearer <token>` on every call.
#[derive(Clone)]
struct BearerAuth {
    expected: Arc<str>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.expected.as_bytes()) => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong bearer token")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the API until `stop` becomes `true`; open streams end then too.
pub async fn serve(
    cfg: &ApiConfig,
    unix: UnixListener,
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
    let Some(addr) = cfg.tcp_listen else {
        return Ok(unix_server.await?);
    };
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::BindTcp {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, auth = cfg.tcp_token_file.is_some(), "gRPC API listening on TCP");
    let svc = FlightRecorderServer::new(Service::new(state, stop));
    type ServeFuture = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    >;
    let incoming = TcpListenerStream::new(tcp);
    let tcp_server: ServeFuture = match &cfg.tcp_token_file {
        Some(path) => {
            let auth = BearerAuth {
                expected: read_token(path)?,
            };
            Box::pin(
                Server::builder()
                    .add_service(tonic::service::interceptor::InterceptedService::new(
                        svc, auth,
                    ))
                    .serve_with_incoming_shutdown(incoming, shutdown.wait()),
            )
        }
        None => Box::pin(
            Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown.wait()),
        ),
    };
    let (a, b) = tokio::join!(unix_server, tcp_server);
    a?;
    b?;
    Ok(())
}

fn read_token(path: &Path) -> Result<Arc<str>, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiError::Token {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ApiError::EmptyToken(path.display().to_string()));
    }
    Ok(Arc::from(token))
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

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn bearer_interceptor_rejects_missing_and_wrong_tokens() {
        let mut auth = BearerAuth {
            expected: Arc::from("s3cret"),
        };
        assert_eq!(
            auth.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            auth.call(req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(auth.call(req).is_ok());
    }

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
