//! The console's configuration: a TOML file with documented defaults
//! (`fdr-console --print-default-config`); flags override it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub agents: AgentsConfig,
    pub evidence: EvidenceConfig,
    pub retention: RetentionConfig,
    pub web: WebConfig,
    pub log: LogConfig,
    pub export: ExportConfig,
}

/// `[export.otlp]`: the OTLP logs export of every incident the console
/// ingests (opened; updated, with its new audits) under its fleet serial,
/// through a durable outbox in the index. The same section as the agent's,
/// documented in `fdr_export::OtlpConfig` (and in deploy/fdr.toml).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    pub otlp: fdr_export::OtlpConfig,
}

/// The console's own gRPC API (`fdr.v1`: incidents and snapshots from its
/// store, `Console.ListAgents`, queries forwarded to agents).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Default `127.0.0.1:7443`. An address other
    /// than loopback requires TLS (`tls_cert_file`, `tls_key_file`) and
    /// client authentication (`token_file` and/or `tls_client_ca_file`):
    /// the console serves forensic data.
    pub listen: SocketAddr,
    /// File holding the bearer token clients must send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate (chain) of the console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA that client certificates must chain to (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

/// The web UI: the forensic timeline responders look at. Never served
/// without authentication: a bearer token (viewer or admin), the session a
/// login with one opens (cookie `HttpOnly; Secure; SameSite=Strict`), or
/// a client certificate (viewer). Only an admin changes anything
/// (snapshot create, model relearn), and only with the session's CSRF
/// token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve it. Default true.
    pub enabled: bool,
    /// Address to listen on (HTTPS). Default `127.0.0.1:7444`. Without TLS
    /// files only a loopback address is allowed (plain HTTP then).
    pub listen: SocketAddr,
    /// PEM certificate (chain) and key. Default: the API's
    /// (`api.tls_cert_file`, `api.tls_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA whose client certificates are accepted as a viewer's
    /// credential (a browser without one still gets the login page). Use
    /// a CA of its own for the people who may read the evidence: every
    /// certificate it signed can. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// File holding the viewers' token. Default: the API's
    /// (`api.token_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// File holding the admins' token. When no credential at all is
    /// configured, the console writes a random admin token to
    /// `<evidence.dir>/web-admin.token` (mode 0600) and logs where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// A session ends this long after its login. Default 8h.
    #[serde(with = "duration_serde")]
    pub session_ttl: Duration,
    /// Sessions held at most (the oldest ends first). Default 10000.
    pub max_sessions: usize,
    /// Memory for decoded snapshots and live queries that timelines page
    /// through (least recently used first out). Default 512 MiB.
    pub cache_bytes: u64,
    /// Events a live timeline (the fleet query) holds at most. Default
    /// 100000.
    pub live_max_events: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7444)),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            token_file: None,
            admin_token_file: None,
            session_ttl: Duration::from_secs(8 * 3600),
            max_sessions: 10_000,
            cache_bytes: 512 << 20,
            live_max_events: 100_000,
        }
    }
}

impl WebConfig {
    /// The TLS certificate and key in effect (the web's, else the API's).
    pub fn tls(&self, api: &ApiConfig) -> Option<(PathBuf, PathBuf)> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => match (&api.tls_cert_file, &api.tls_key_file) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            },
        }
    }

    /// The viewers' token file in effect.
    pub fn viewer_token(&self, api: &ApiConfig) -> Option<PathBuf> {
        self.token_file.clone().or_else(|| api.token_file.clone())
    }
}

/// The agents the console copies from, and how it reaches them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Agents by URL: `https://node-a:7077` (their `api.tcp_listen`), or
    /// `unix:///run/fdr/fdr.sock` for an agent on this machine. Default:
    /// none.
    pub urls: Vec<String>,
    /// Kubernetes discovery: DNS names of the agents' headless Service
    /// (`fdr-agent.fdr.svc.cluster.local`); every A/AAAA record is an
    /// agent, reached at `https://<address>:<dns_port>`. Default: none.
    pub dns: Vec<String>,
    /// Port of the agents found by `dns` (their `api.tcp_listen`, 7077 in
    /// deploy/kubernetes). Default 7077.
    pub dns_port: u16,
    /// How often `dns` names are resolved again. Default 30s.
    #[serde(with = "duration_serde")]
    pub resolve_every: Duration,
    /// Bearer token file sent to the agents (their `api.tcp_token_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM CA the agents' certificates must chain to. Default: the
    /// system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key presented to agents that require one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name checked in the agents' certificates instead of the address
    /// (needed for `dns` agents, reached by IP). Default: the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Agents copied from at the same time: one slow agent never holds up
    /// the others beyond its own slot. Default 16.
    pub concurrency: usize,
    /// Retry delays of an unreachable agent: doubling from `retry_min` up
    /// to `retry_max`. Defaults 1s and 60s.
    #[serde(with = "duration_serde")]
    pub retry_min: Duration,
    #[serde(with = "duration_serde")]
    pub retry_max: Duration,
    /// A call to an agent that takes longer fails (and is retried).
    /// Default 60s.
    #[serde(with = "duration_serde")]
    pub call_timeout: Duration,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            urls: Vec::new(),
            dns: Vec::new(),
            dns_port: 7077,
            resolve_every: Duration::from_secs(30),
            token_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            concurrency: 16,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            call_timeout: Duration::from_secs(60),
        }
    }
}

/// Where evidence is kept: the index (redb) always in `dir`; snapshots in
/// `dir/objects` unless `s3` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// The console's data directory. Default `/var/lib/fdr-console`.
    pub dir: PathBuf,
    /// An S3-compatible object store for the snapshots (AWS S3, MinIO,
    /// Ceph, SeaweedFS). Default: none (local files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            dir: PathBuf::from("/var/lib/fdr-console"),
            s3: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Endpoint URL (`http://127.0.0.1:8333` for a local SeaweedFS or
    /// MinIO); empty: AWS's, by region.
    pub endpoint: String,
    /// Default `us-east-1`.
    pub region: String,
    /// Key prefix of the objects. Default `fdr/snapshots/`.
    pub prefix: String,
    /// Credentials: these, else the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// A file holding the secret key (not the key itself: configs get
    /// shared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Allow an `http://` endpoint. Default false.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// servers want. Default true.
    pub path_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            prefix: "fdr/snapshots/".into(),
            access_key_id: None,
            secret_access_key_file: None,
            allow_http: false,
            path_style: true,
        }
    }
}

/// What the console keeps: snapshots oldest first beyond either cap;
/// incident records longer, beyond their own cap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Default 100.
    pub max_snapshots: u64,
    /// Stored bytes of all snapshots. Default 10 GiB.
    pub max_snapshot_bytes: u64,
    /// Default 100 000.
    pub max_incidents: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_snapshots: 100,
            max_snapshot_bytes: 10 << 30,
            max_incidents: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter. Default "info".
    pub level: String,
    /// "text" or "json". Default "text".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Durations as in every fdr configuration (`"30s"`, `"5m"`).
use fdr_export::config::duration_serde;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn default_toml() -> String {
        toml::to_string(&Config::default()).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let a = &self.api;
        if a.tls_cert_file.is_some() != a.tls_key_file.is_some() {
            return bad("api.tls_cert_file and api.tls_key_file go together".into());
        }
        if a.tls_client_ca_file.is_some() && a.tls_cert_file.is_none() {
            return bad("api.tls_client_ca_file needs api.tls_cert_file (TLS)".into());
        }
        if !a.listen.ip().is_loopback() {
            if a.tls_cert_file.is_none() {
                return bad(format!(
                    "api.listen = {}: an address other than loopback needs TLS \
                     (api.tls_cert_file, api.tls_key_file)",
                    a.listen
                ));
            }
            if a.token_file.is_none() && a.tls_client_ca_file.is_none() {
                return bad(format!(
                    "api.listen = {}: an address other than loopback needs client \
                     authentication (api.token_file and/or api.tls_client_ca_file)",
                    a.listen
                ));
            }
        }
        let g = &self.agents;
        for u in &g.urls {
            let ok = u.starts_with("https://")
                || u.starts_with("unix://")
                || fdr_export::config::is_loopback_http(u);
            if !ok {
                return bad(format!(
                    "agents.urls: {u:?}: https://host:port, unix:///path, or http:// to \
                     loopback only (a token and forensic data never travel in clear text)"
                ));
            }
        }
        for d in &g.dns {
            if d.is_empty() || d.len() > 253 || d.chars().any(|c| c.is_control() || c == ' ') {
                return bad(format!("agents.dns: {d:?} is not a DNS name"));
            }
        }
        if g.concurrency == 0 || g.concurrency > 4096 {
            return bad(format!(
                "agents.concurrency = {}: between 1 and 4096",
                g.concurrency
            ));
        }
        if g.retry_min.is_zero() || g.retry_min > g.retry_max {
            return bad("agents.retry_min: above zero and at most agents.retry_max".into());
        }
        if g.retry_max > Duration::from_secs(3600) {
            return bad("agents.retry_max: at most 1h".into());
        }
        if g.resolve_every < Duration::from_secs(1) {
            return bad("agents.resolve_every: at least 1s".into());
        }
        if g.call_timeout < Duration::from_secs(1) {
            return bad("agents.call_timeout: at least 1s".into());
        }
        if g.cert_file.is_some() != g.key_file.is_some() {
            return bad("agents.cert_file and agents.key_file go together".into());
        }
        if let Some(s3) = &self.evidence.s3 {
            if s3.bucket.is_empty() {
                return bad("evidence.s3.bucket is empty".into());
            }
            if s3.endpoint.starts_with("http://") && !s3.allow_http {
                return bad(format!(
                    "evidence.s3.endpoint = {:?}: plain http needs evidence.s3.allow_http = true",
                    s3.endpoint
                ));
            }
        }
        let w = &self.web;
        if w.tls_cert_file.is_some() != w.tls_key_file.is_some() {
            return bad("web.tls_cert_file and web.tls_key_file go together".into());
        }
        if w.enabled {
            let tls = w.tls(&self.api).is_some();
            if !w.listen.ip().is_loopback() && !tls {
                return bad(format!(
                    "web.listen = {}: an address other than loopback needs TLS \
                     (web.tls_cert_file and web.tls_key_file, or the API's)",
                    w.listen
                ));
            }
            if w.tls_client_ca_file.is_some() && !tls {
                return bad("web.tls_client_ca_file needs TLS (web.tls_cert_file)".into());
            }
            if w.listen == self.api.listen {
                return bad(format!(
                    "web.listen = {}: the API listens there; the web UI needs its own port",
                    w.listen
                ));
            }
        }
        if w.session_ttl < Duration::from_secs(60)
            || w.session_ttl > Duration::from_secs(30 * 86400)
        {
            return bad("web.session_ttl: between 1m and 30days".into());
        }
        if w.max_sessions == 0 || w.max_sessions > 1_000_000 {
            return bad(format!(
                "web.max_sessions = {}: between 1 and 1000000",
                w.max_sessions
            ));
        }
        if w.cache_bytes < 1 << 20 {
            return bad("web.cache_bytes: at least 1 MiB".into());
        }
        if w.live_max_events == 0 || w.live_max_events > 10_000_000 {
            return bad("web.live_max_events: between 1 and 10000000".into());
        }
        let r = &self.retention;
        if r.max_snapshots == 0 || r.max_snapshot_bytes == 0 || r.max_incidents == 0 {
            return bad("retention: every cap must be above 0".into());
        }
        self.export
            .otlp
            .validate(|k| fdr_proto::v1::EventKind::from_name(k).is_some())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.export.otlp.raw_events.enabled {
            return bad(
                "export.otlp.raw_events: the console has no raw events (only agents do)".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(format!(
                "log.format = {:?}: \"text\" or \"json\"",
                self.log.format
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let text = Config::default_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
        back.validate().unwrap();
    }

    #[test]
    fn the_example_config_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fdr-console.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg: Config = toml::from_str(&text).unwrap();
        assert_eq!(cfg, Config::default(), "{}", path.display());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let mut c = Config::default();
        c.api.listen = "0.0.0.0:7443".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("needs TLS"));
        let mut c = Config::default();
        c.agents.urls = vec!["ftp://x".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("agents.urls"));
        let mut c = Config::default();
        for bad in [
            "http://10.0.0.7:7077",
            "http://127.0.0.1:7077@agent.example",
        ] {
            c.agents.urls = vec![bad.into()];
            assert!(c.validate().unwrap_err().to_string().contains("loopback"));
        }
        for ok in [
            "http://127.0.0.1:7077",
            "http://[::1]:7077",
            "http://localhost:1/",
        ] {
            c.agents.urls = vec![ok.into()];
            c.validate().unwrap();
        }
        let mut c = Config::default();
        c.retention.max_snapshots = 0;
        assert!(c.validate().is_err());
        let err = toml::from_str::<Config>("[retention]\nmax_snapshot = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_snapshot"), "{err}");
    }
}
