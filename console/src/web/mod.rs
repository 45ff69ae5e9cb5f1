//! The web UI (`[web]`): takes the console's index, evidence store and
//! agents ([`Console`]); gives HTML pages (incidents, an incident, a
//! snapshot's or a live scope's timeline, agents, models), the timeline's
//! JSON, forensic packages, and the admin actions forwarded to agents.
//! Served over HTTPS (rustls) with axum; every page and call but the login
//! page and the static files needs a credential ([`auth`]).

mod auth;
mod data;
mod pages;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{header, HeaderValue},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
    Router,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::{config::Config, sync::Console};

pub use auth::Role;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web: {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("web: TLS: {0}")]
    Tls(String),
    #[error("web: binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("web: {0}")]
    Auth(String),
}

/// Connections served at the same time; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// A connection that has not finished its TLS handshake by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request whose headers have not arrived by then ends its connection
/// (HTTP/1); an HTTP/2 connection that does not answer a ping by then too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// No connection lives longer (a browser opens a new one).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// Connections served at once from one address.
const PER_PEER: usize = 64;

/// What every handler shares.
pub struct Web {
    pub(crate) con: Arc<Console>,
    pub(crate) auth: auth::Auth,
    pub(crate) cache: data::Cache,
    pub(crate) tls: bool,
    /// Heavy work at once (a snapshot decoded, a package built, a live
    /// query fetched): bounds the memory a few clients can make it use.
    pub(crate) heavy: Semaphore,
}

/// What a connection brought with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    /// A client certificate from `web.tls_client_ca_file`, verified.
    pub client_cert: bool,
    pub peer: SocketAddr,
}

/// The bound listener and everything that could fail at start.
pub struct WebListener {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    web: Arc<Web>,
}

impl WebListener {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, WebError> {
    let err = |message: String| WebError::Pem {
        what: "TLS certificate",
        path: path.display().to_string(),
        message,
    };
    let list: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect();
    let list = list.map_err(|e| err(e.to_string()))?;
    if list.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    Ok(list)
}

fn server_config(cfg: &Config) -> Result<Option<rustls::ServerConfig>, WebError> {
    let Some((cert, key)) = cfg.web.tls(&cfg.api) else {
        return Ok(None);
    };
    let chain = certs(&cert)?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| WebError::Pem {
        what: "TLS private key",
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?;
    let builder = match &cfg.web.tls_client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| WebError::Tls(format!("client CA {}: {e}", ca.display())))?;
            }
            // A browser without a certificate still reaches the login page.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| WebError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder
        .with_single_cert(chain, key)
        .map_err(|e| WebError::Tls(e.to_string()))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(sc))
}

/// Reads the credentials and TLS files and binds `web.listen`; `None`
/// when the web UI is off.
pub async fn bind(cfg: &Config, con: Arc<Console>) -> Result<Option<WebListener>, WebError> {
    if !cfg.web.enabled {
        return Ok(None);
    }
    let sc = server_config(cfg)?;
    let auth = auth::Auth::load(cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.web.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: cfg.web.listen.to_string(),
            source,
        })?;
    let scheme = if sc.is_some() { "https" } else { "http" };
    tracing::info!(
        url = %format!("{scheme}://{}", listener.local_addr().unwrap_or(cfg.web.listen)),
        client_certificates = cfg.web.tls_client_ca_file.is_some(),
        "web UI listening"
    );
    let web = Arc::new(Web {
        con,
        auth,
        cache: data::Cache::new(cfg.web.cache_bytes),
        tls: sc.is_some(),
        heavy: Semaphore::new(2),
    });
    Ok(Some(WebListener {
        listener,
        tls: sc.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c))),
        web,
    }))
}

fn router(web: Arc<Web>) -> Router {
    let open = Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/app.js", get(pages::app_js))
        .route("/static/app.css", get(pages::app_css))
        .route("/healthz", get(|| async { "ok\n" }));
    let closed = Router::new()
        .route("/", get(pages::root))
        .route("/incidents", get(pages::incidents))
        .route("/incidents/{serial}", get(pages::incident))
        .route("/snapshots/{id}", get(pages::snapshot))
        .route("/snapshots/{id}/package", get(data::package))
        .route("/snapshots/create", post(pages::create_snapshot))
        .route("/agents", get(pages::agents))
        .route("/models", get(pages::models))
        .route("/models/{node}/{key}", get(pages::model))
        .route("/models/relearn", post(pages::relearn))
        .route("/live", get(pages::live))
        .route("/logout", post(auth::logout))
        .route("/api/timeline/{kind}/{id}/query", get(data::query))
        .route("/api/timeline/{kind}/{id}/event/{i}", get(data::event))
        .layer(middleware::from_fn_with_state(web.clone(), auth::require));
    open.merge(closed)
        .layer(middleware::from_fn_with_state(web.clone(), headers))
        .with_state(web)
}

/// Headers on every answer: nothing cached (forensic data), no framing,
/// no sniffing, no referrer, scripts and styles from this origin only.
async fn headers(
    axum::extract::State(web): axum::extract::State<Arc<Web>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if web.tls {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    resp
}

/// Serves until `stop`.
pub async fn serve(l: WebListener, mut stop: watch::Receiver<bool>) {
    let router = router(l.web.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers: Peers = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = &mut shutdown => return,
        };
        let (tcp, peer) = tokio::select! {
            r = l.listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let Some(peer_slot) = PeerSlot::take(&peers, peer.ip()) else {
            tracing::debug!(%peer, "web: too many connections from this address");
            continue;
        };
        let router = router.clone();
        let tls = l.tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _peer_slot = peer_slot;
            match tls {
                Some(acc) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "web: TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "web: TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = Conn {
                        peer,
                        client_cert: stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty()),
                    };
                    serve_conn(TokioIo::new(stream), router, conn, peer).await;
                }
                None => {
                    let conn = Conn {
                        client_cert: false,
                        peer,
                    };
                    serve_conn(TokioIo::new(tcp), router, conn, peer).await;
                }
            }
        });
    }
}

async fn serve_conn<I>(io: I, router: Router, conn: Conn, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(conn);
        let r = router.clone();
        async move { Ok::<_, Infallible>(r.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HEADER_TIMEOUT)
        .keep_alive_timeout(HEADER_TIMEOUT);
    match tokio::time::timeout(CONNECTION_LIFETIME, builder.serve_connection(io, svc)).await {
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web: connection ended"),
        Err(_) => tracing::debug!(%peer, "web: connection closed at the end of its lifetime"),
        Ok(Ok(())) => {}
    }
}

type Peers = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of the connections an address may hold ([`PER_PEER`]).
struct PeerSlot {
    peers: Peers,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(peers: &Peers, ip: std::net::IpAddr) -> Option<PeerSlot> {
        let mut m = peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
