//! The TCP listener: TLS (optionally mutual) and bearer-token
//! authentication, as configured.

use std::{future::Future, net::SocketAddr, path::Path, pin::Pin, sync::Arc};

use fdr_proto::auth::{server_tls, BearerAuth};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, ServerTlsConfig},
};
use tonic_health::{pb::health_server::HealthServer, server::HealthService};

use super::{ApiError, Service};
use crate::{api::state::State, config::ApiConfig};

pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The TCP listener, bound and with its TLS and token loaded: what can
/// fail does so at start-up, before the agent reports itself running.
pub struct Tcp {
    listener: TcpListener,
    builder: Server,
    auth: Option<BearerAuth>,
}

/// Binds the configured TCP listener, if any.
pub async fn bind(cfg: &ApiConfig) -> Result<Option<Tcp>, ApiError> {
    let Some(addr) = cfg.tcp_listen else {
        return Ok(None);
    };
    let mut builder = Server::builder();
    if let Some(tls) = tls_config(cfg)? {
        builder = builder.tls_config(tls).map_err(|e| ApiError::Tls {
            cert: display(cfg.tls_cert_file.as_deref()),
            key: display(cfg.tls_key_file.as_deref()),
            reason: fdr_proto::transport::error_chain(&e),
        })?;
    }
    let auth = match &cfg.tcp_token_file {
        Some(path) => Some(BearerAuth::from_file(path)?),
        None => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::BindTcp {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        tls = cfg.tls(),
        client_certificates = cfg.tls_client_ca_file.is_some(),
        token = auth.is_some(),
        "gRPC API listening on TCP"
    );
    Ok(Some(Tcp {
        listener,
        builder,
        auth,
    }))
}

impl Tcp {
    /// The address bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The server, to be awaited with the others. `health` is served
    /// without the token (probes carry no credentials), over TLS when TLS
    /// is configured.
    pub fn serve(
        mut self,
        state: Arc<State>,
        health: HealthServer<HealthService>,
        stop: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> ServeFuture {
        let svc = super::flight_recorder_server(Service::new(state, stop));
        let incoming = TcpListenerStream::new(self.listener);
        match self.auth {
            Some(auth) => Box::pin(
                self.builder
                    .add_service(InterceptedService::new(svc, auth))
                    .add_service(health)
                    .serve_with_incoming_shutdown(incoming, shutdown),
            ),
            None => Box::pin(
                self.builder
                    .add_service(svc)
                    .add_service(health)
                    .serve_with_incoming_shutdown(incoming, shutdown),
            ),
        }
    }
}

fn display(p: Option<&Path>) -> String {
    p.map_or_else(|| "-".into(), |p| p.display().to_string())
}

/// The server's TLS settings, when it serves TLS.
fn tls_config(cfg: &ApiConfig) -> Result<Option<ServerTlsConfig>, ApiError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
        return Ok(None);
    };
    Ok(Some(server_tls(
        cert,
        key,
        cfg.tls_client_ca_file.as_deref(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tls_files_are_named() {
        let cfg = ApiConfig {
            tls_cert_file: Some("/nonexistent/tls.crt".into()),
            tls_key_file: Some("/nonexistent/tls.key".into()),
            ..ApiConfig::default()
        };
        let err = tls_config(&cfg).expect_err("an error").to_string();
        assert!(
            err.contains("TLS certificate /nonexistent/tls.crt"),
            "{err}"
        );
    }
}
