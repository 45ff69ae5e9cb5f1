//! The agent's health (`grpc.health.v1`) and metrics (`GET /metrics`), as
//! the kubelet, a load balancer and Prometheus see them: the real agent
//! binary, a real health client, a real HTTP request and a Prometheus
//! text-format parser.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use fdr_tests::{AgentProcess, Capture, TempDir, DEADLINE};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The service names the agent reports.
const SERVICES: [&str; 2] = ["", "fdr.v1.FlightRecorder"];

/// A loopback port free right now (the agent binds it a moment later).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The status of `service` through `channel`, or why there is none.
async fn check(channel: Channel, service: &str) -> Result<ServingStatus, String> {
    let mut c = HealthClient::new(channel);
    let r = c
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(r.into_inner().status())
}

/// Waits until every service reports SERVING through the channel `connect`
/// makes (the agent answers NOT_SERVING until its pipeline runs).
async fn wait_serving<F, Fut>(what: &str, connect: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Channel, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let mut all = true;
        match connect().await {
            Ok(ch) => {
                for s in SERVICES {
                    match check(ch.clone(), s).await {
                        Ok(ServingStatus::Serving) => {}
                        other => {
                            all = false;
                            last = format!("{s:?}: {other:?}");
                        }
                    }
                }
            }
            Err(e) => {
                all = false;
                last = e;
            }
        }
        if all {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not SERVING within {DEADLINE:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tcp_channel(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| fdr_proto::transport::error_chain(&e))
}

async fn unix_channel(path: &Path) -> Result<Channel, String> {
    fdr_proto::transport::unix_channel(path, Endpoint::from_static("http://fdr-agent.invalid"))
        .await
        .map_err(|e| fdr_proto::transport::error_chain(&e))
}

/// One HTTP/1.1 request: the status code, the headers (names lower-case)
/// and the body.
fn http_get(addr: SocketAddr, path: &str, accept: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    assert!(!chunked, "the body is sent whole, with its length");
    (status, headers, body.to_owned())
}

fn content_type(headers: &[(String, String)]) -> &str {
    headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map_or("", |(_, v)| v.as_str())
}

/// The metrics, parsed; the value of `name` with the labels `labels`.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// A scrape in the Prometheus text format 0.0.4 (what a client that
    /// does not ask for OpenMetrics gets).
    fn get(addr: SocketAddr) -> Self {
        let (status, headers, body) = http_get(addr, "/metrics", "*/*");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            content_type(&headers),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("the Prometheus parser reads it"))
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                // Typed as declared: a counter's family is its sample's name.
                prometheus_parse::Value::Counter(v) if name.ends_with("_total") => v,
                prometheus_parse::Value::Gauge(v) if !name.ends_with("_total") => v,
                _ => panic!("{name}: {:?} not typed as declared", s.value),
            })
    }

    fn help(&self, name: &str) -> Option<&str> {
        self.0.docs.get(name).map(String::as_str)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_health_and_metrics() {
    let dir = TempDir::new("observe");
    let socket = dir.path().join("fdr.sock");
    let (health, metrics) = (free_port(), free_port());
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\ndata_dir = {data:?}\n\n[health]\nlisten = \"{health}\"\nstall_after = \"10s\"\n",
            data = dir.path().join("data"),
        ),
    )
    .expect("write the config");
    let metrics_flag = metrics.to_string();
    let _agent = AgentProcess::start(
        &socket,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--metrics-listen".as_ref(),
            metrics_flag.as_ref(),
        ],
    );

    // Health: on the plaintext listener and on the unix socket.
    wait_serving("the health listener", || tcp_channel(health)).await;
    wait_serving("the unix socket", || unix_channel(&socket)).await;
    let ch = tcp_channel(health).await.expect("connect");
    let err = check(ch.clone(), "no.such.Service").await.unwrap_err();
    assert!(err.starts_with("NotFound"), "{err}");
    // Only the health service there: not the API.
    let mut api = fdr_proto::v1::flight_recorder_client::FlightRecorderClient::new(ch);
    let err = api
        .get_stats(fdr_proto::v1::GetStatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    // Metrics: what a user alerts on is there, with its help.
    let first = Scrape::get(metrics);
    for (name, labels) in [
        ("fdr_events_total", &[("kind", "exec")][..]),
        (
            "fdr_kernel_drops_total",
            &[("kind", "exec"), ("ring", "critical")],
        ),
        (
            "fdr_kernel_drops_total",
            &[("kind", "connect"), ("ring", "events")],
        ),
        ("fdr_stream_dropped_events_total", &[]),
        ("fdr_buffer_bytes", &[("class", "bulk")]),
        ("fdr_buffer_bytes", &[("class", "critical")]),
        ("fdr_buffer_capacity_bytes", &[]),
        ("fdr_buffer_evicted_events_total", &[]),
        ("fdr_open_snapshot_bytes", &[]),
        ("fdr_snapshots_open", &[]),
        ("fdr_snapshots_committed_total", &[]),
        ("fdr_snapshots_evicted_total", &[]),
        ("fdr_store_bytes", &[]),
        ("fdr_models", &[("state", "learning")]),
        ("fdr_models", &[("state", "active")]),
        (
            "fdr_incidents_opened_total",
            &[("type", "reverse-shell"), ("severity", "critical")],
        ),
        ("fdr_runtime_connected", &[("runtime", "cri")]),
        ("fdr_pipeline_lag_seconds", &[]),
        ("fdr_processes_tracked", &[]),
        ("fdr_serving", &[]),
    ] {
        assert!(
            first.value(name, labels).is_some(),
            "{name} {labels:?} missing from /metrics"
        );
    }
    assert!(first
        .help("fdr_events_total")
        .is_some_and(|h| !h.is_empty()));
    assert!(first.value("fdr_buffer_capacity_bytes", &[]).unwrap() > 0.0);
    assert!(first.value("fdr_processes_tracked", &[]).unwrap() > 0.0);
    assert!(first.value("fdr_store_bytes", &[]).unwrap() > 0.0);
    let lag = first.value("fdr_pipeline_lag_seconds", &[]).unwrap();
    assert!((0.0..5.0).contains(&lag), "pipeline lag {lag}");
    assert_eq!(first.value("fdr_serving", &[]), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        first.value("fdr_build_info", &[("version", version)]),
        Some(1.0)
    );

    // Running a program counts an exec (scrape after scrape until it shows).
    let before = first
        .value("fdr_events_total", &[("kind", "exec")])
        .unwrap();
    let start = Instant::now();
    loop {
        let st = Command::new("/bin/true").status().expect("run /bin/true");
        assert!(st.success());
        let now = Scrape::get(metrics)
            .value("fdr_events_total", &[("kind", "exec")])
            .unwrap();
        if now > before {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "fdr_events_total{{kind=\"exec\"}} stayed at {before}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Prometheus asks for OpenMetrics first, and gets it.
    let (status, headers, body) = http_get(
        metrics,
        "/metrics",
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
    );
    assert_eq!(status, 200);
    assert!(
        content_type(&headers).starts_with("application/openmetrics-text; version=1.0.0"),
        "{headers:?}"
    );
    assert!(body.contains("# TYPE fdr_events counter\n"), "{body}");
    assert!(body.ends_with("# EOF\n"), "a complete exposition");

    // Anything but /metrics is 404.
    let (status, _, _) = http_get(metrics, "/", "*/*");
    assert_eq!(status, 404);
    let (status, _, _) = http_get(metrics, "/metrics/extra", "*/*");
    assert_eq!(status, 404);
}

/// On the API's TCP listener (TLS and a bearer token here) the health
/// service answers over TLS without the token the API requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_the_tcp_api_needs_tls_but_no_token() {
    let dir = TempDir::new("health-token");
    let ca = fdr_tests::pki::Ca::new(dir.path(), "fdr-observe-ca");
    let server = ca.server("agent");
    let token = dir.path().join("token");
    std::fs::write(&token, "fdr-observe-token\n").expect("token file");
    let (cert, key) = (server.cert.clone(), server.key.clone());
    let cap = Capture::start_with("health-token", move |c| {
        c.api.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.api.tls_cert_file = Some(cert);
        c.api.tls_key_file = Some(key);
        c.api.tcp_token_file = Some(token);
    })
    .await;
    let addr = cap.agent.as_ref().and_then(|a| a.tcp).expect("TCP bound");
    let ca_pem = std::fs::read(&ca.cert).expect("CA certificate");
    let tls = move || {
        let ca_pem = ca_pem.clone();
        async move {
            Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| e.to_string())?
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem)),
                )
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| fdr_proto::transport::error_chain(&e))
        }
    };
    wait_serving("the TCP API over TLS", tls.clone()).await;
    // The API itself still wants the token.
    let ch = tls().await.expect("connect");
    let mut api = fdr_proto::v1::flight_recorder_client::FlightRecorderClient::new(ch);
    let err = api
        .get_stats(fdr_proto::v1::GetStatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Plaintext is refused: the listener speaks TLS only.
    assert!(check_plain(addr).await.is_err());
    cap.stop().await;
}

async fn check_plain(addr: SocketAddr) -> Result<ServingStatus, String> {
    let ch = tcp_channel(addr).await?;
    tokio::time::timeout(Duration::from_secs(5), check(ch, ""))
        .await
        .map_err(|_| "timed out".to_owned())?
}
