//! The agent's metrics over HTTP (`[metrics] listen`): `GET /metrics`,
//! built with `prometheus-client` at scrape time from what `GetStats`
//! reads (the counters the pipeline already keeps, the buffers' and
//! tables' totals): nothing is added to the event path. Any other path is
//! 404.
//!
//! Two formats, by the request's `Accept`: the OpenMetrics text format
//! (`prometheus-client`'s encoder; `application/openmetrics-text`, which
//! Prometheus asks for first) when the client accepts it, else the
//! Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), the same
//! samples with the 0.0.4 family names (`# TYPE fdr_events_total counter`
//! where OpenMetrics says `# TYPE fdr_events counter`; the info metric
//! `fdr_build_info` as a gauge; no `# EOF`). Label values are escaped alike
//! in both (`\\`, `\"`, `\n`).
//!
//! Kernel drops are counted per kind only (one per-CPU counter per kind in
//! the kernel); `ring` is the ring the kind travels in (`critical` for
//! exec, listen and privilege changes, `events` for the others), although a
//! change to a watched path travels in the critical ring whatever its kind.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::watch};

use super::{health::Health, state::State, ApiError};
use crate::{
    analysis::incidents::IncidentType,
    api::state::lock,
    event::{EventKind, Severity},
};

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes served at once; more connections wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (keep-alive included) lasts at most this long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::BindTcp {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listening (HTTP, GET /metrics)");
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures { state, health }));
    let registry = Arc::new(Scraper::new(registry));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let stopped = super::SharedShutdown(stop).wait();
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return Ok(()),
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        let stream = tokio::select! {
            _ = &mut stopped => return Ok(()),
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(err) => {
                    // Out of file descriptors and the like: not fatal.
                    tracing::warn!(%err, "metrics listener: accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| respond(req, registry.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Ok(Err(err)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                tracing::debug!(%err, "metrics connection");
            }
            drop(permit);
        });
    }
}

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The registry, and the one render at a time it allows: a render waiting
/// for a lock a stuck pipeline step holds keeps one blocking thread, not
/// one per scrape.
struct Scraper {
    registry: Arc<Registry>,
    render: Arc<tokio::sync::Semaphore>,
}

impl Scraper {
    fn new(registry: Registry) -> Self {
        Scraper {
            registry: Arc::new(registry),
            render: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

async fn respond<B>(req: hyper::Request<B>, scraper: Arc<Scraper>) -> Result<Reply, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET or HEAD\n");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let Ok(turn) = scraper.render.clone().acquire_owned().await else {
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "shutting down\n",
        ));
    };
    let registry = scraper.registry.clone();
    // Locks and a stat of the database file: off the executor's threads.
    let text = tokio::task::spawn_blocking(move || {
        let mut out = String::with_capacity(16 << 10);
        let r = prometheus_client::encoding::text::encode(&mut out, &registry).map(|()| out);
        drop(turn);
        r
    })
    .await;
    Ok(match text {
        Ok(Ok(body)) if openmetrics => reply(StatusCode::OK, OPENMETRICS, body),
        Ok(Ok(body)) => reply(StatusCode::OK, PROMETHEUS_TEXT, prometheus_text(&body)),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("encoding the metrics failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "encoding failed\n")
        }
    })
}

/// `prometheus-client`'s OpenMetrics text (counters, gauges and infos, no
/// units, no exemplars: what [`Figures`] writes) in the Prometheus text
/// format 0.0.4: the families renamed after their samples, `info` as a
/// gauge, no `# EOF`. The samples are the same lines.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                other => ("", other),
            };
            if let Some((name, text)) = help.take() {
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family}{suffix} {kind}\n"));
            continue;
        }
        if line.starts_with('#') {
            // `# EOF`, `# UNIT`: OpenMetrics only.
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The collector: reads the agent's state at each scrape.
struct Figures {
    state: Arc<State>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Figures")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, each with its labels.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    family(
        enc,
        name,
        help,
        samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    family(
        enc,
        name,
        help,
        samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
    )
}

fn counter_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, one(ConstCounter::new(v)))
}

/// The agent's CPU seconds and resident bytes, from `/proc/self/stat`.
fn own_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's closing parenthesis: state is field 3, utime 14,
    // stime 15, rss 24 (pages).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads its argument.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if tick <= 0 || page <= 0 {
        return None;
    }
    let cpu = (num(14)? + num(15)?) as f64 / tick as f64;
    Some((cpu, (num(24)? * page as u64) as f64))
}

fn one<T>(v: T) -> [(Labels, T); 1] {
    [(Vec::new(), v)]
}

/// Kinds the agent raises itself: never in a kernel ring.
const AGENT_KINDS: [EventKind; 4] = [
    EventKind::ContainerStart,
    EventKind::ContainerStop,
    EventKind::ModelLearned,
    EventKind::Audit,
];

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = &self.state;
        let c = &st.counters;
        let e = &mut enc;

        let drops = st.kernel_drops();
        counter(
            e,
            "fdr_events",
            "Events the pipeline recorded, by kind: the kernel's records and the agent's own events (container-start/stop, model-learned, audit).",
            EventKind::ALL
                .into_iter()
                .map(|k| (vec![("kind", k.name().to_owned())], c.seen(k))),
        )?;
        counter(
            e,
            "fdr_kernel_drops",
            "Records the kernel could not write to a full ring buffer, by kind (ring: the kind's usual ring; the kernel counts per kind).",
            drops.iter().filter(|(k, _)| !AGENT_KINDS.contains(k)).map(|(k, n)| {
                let ring = if k.is_critical() { "critical" } else { "events" };
                (
                    vec![("kind", k.name().to_owned()), ("ring", ring.to_owned())],
                    *n,
                )
            }),
        )?;
        counter(
            e,
            "fdr_decode_errors",
            "Kernel records that could not be decoded.",
            one(c.decode_errors.load(Relaxed)),
        )?;
        counter(
            e,
            "fdr_stream_dropped_events",
            "Events skipped for live subscribers that did not keep up.",
            one(c.stream_drops.load(Relaxed)),
        )?;
        gauge(
            e,
            "fdr_stream_subscribers",
            "Live event subscribers connected.",
            one(f64::from(c.subscribers.load(Relaxed))),
        )?;

        let (totals, open_snapshot_bytes) = {
            let b = lock(&st.buffers);
            (b.stats(), b.charged() as u64)
        };
        gauge(
            e,
            "fdr_buffer_bytes",
            "Memory held by the rolling buffers of every scope, by class (critical kinds have a reserve).",
            [
                (
                    vec![("class", "bulk".to_owned())],
                    totals.bytes.saturating_sub(totals.critical_bytes) as f64,
                ),
                (
                    vec![("class", "critical".to_owned())],
                    totals.critical_bytes as f64,
                ),
            ],
        )?;
        gauge(
            e,
            "fdr_buffer_events",
            "Events held by the rolling buffers, by class.",
            [
                (
                    vec![("class", "bulk".to_owned())],
                    totals.events.saturating_sub(totals.critical_events) as f64,
                ),
                (
                    vec![("class", "critical".to_owned())],
                    totals.critical_events as f64,
                ),
            ],
        )?;
        gauge(
            e,
            "fdr_buffer_capacity_bytes",
            "The memory budget of all buffers (recorder.budget_bytes).",
            one(totals.capacity_bytes as f64),
        )?;
        counter(
            e,
            "fdr_buffer_evicted_events",
            "Events evicted from the rolling buffers to make room.",
            one(totals.evicted),
        )?;
        gauge(
            e,
            "fdr_open_snapshot_bytes",
            "Memory held by snapshots still filling.",
            one(open_snapshot_bytes as f64),
        )?;
        let open = lock(&st.snapshots).open_count();
        gauge(
            e,
            "fdr_snapshots_open",
            "Snapshots still filling (their after-window).",
            one(open as f64),
        )?;
        let (committed, evicted) = st.store.commit_counts();
        counter(
            e,
            "fdr_snapshots_committed",
            "Snapshots written to the store since the agent started.",
            one(committed),
        )?;
        counter(
            e,
            "fdr_snapshots_evicted",
            "Stored snapshots removed by retention since the agent started.",
            one(evicted),
        )?;
        let store_bytes = std::fs::metadata(st.store.path()).map_or(0, |m| m.len());
        gauge(
            e,
            "fdr_store_bytes",
            "Size of the snapshot database file.",
            one(store_bytes as f64),
        )?;
        let sh = st.store.health();
        gauge(
            e,
            "fdr_store_ok",
            "1 while writes to the store succeed, 0 while they fail.",
            one(if sh.ok { 1.0 } else { 0.0 }),
        )?;
        counter(
            e,
            "fdr_store_write_failures",
            "Failed writes to the store since the agent started.",
            one(sh.failures),
        )?;

        let now = crate::util::now_ns();
        let (models, learning) = {
            let m = lock(&st.models);
            (m.len(), m.all().filter(|x| x.learning(now)).count())
        };
        gauge(
            e,
            "fdr_models",
            "Runtime behaviour models, by state.",
            [
                (vec![("state", "learning".to_owned())], learning as f64),
                (
                    vec![("state", "active".to_owned())],
                    models.saturating_sub(learning) as f64,
                ),
            ],
        )?;
        let (open_incidents, opened) = {
            let i = lock(&st.incidents);
            (i.open_count(), i.opened().collect::<Vec<_>>())
        };
        gauge(
            e,
            "fdr_incidents_open",
            "Incidents still open for updates.",
            one(open_incidents as f64),
        )?;
        counter(
            e,
            "fdr_incidents_opened",
            "Incidents opened since the agent started, by type and severity at opening.",
            IncidentType::ALL.into_iter().flat_map(|t| {
                let opened = &opened;
                SEVERITIES.into_iter().map(move |s| {
                    let n = opened
                        .iter()
                        .find(|(ot, os, _)| *ot == t && *os == s)
                        .map_or(0, |x| x.2);
                    (
                        vec![
                            ("type", t.name().to_owned()),
                            ("severity", s.name().to_owned()),
                        ],
                        n,
                    )
                })
            }),
        )?;

        let (cri, engine, running) = {
            let c = lock(&st.containers);
            (c.runtime.is_some(), c.engine.is_some(), c.counts().running)
        };
        gauge(
            e,
            "fdr_runtime_connected",
            "1 while the container runtime API is connected (cri: a CRI runtime such as containerd or CRI-O; docker: the Docker Engine API).",
            [
                (
                    vec![("runtime", "cri".to_owned())],
                    if cri { 1.0 } else { 0.0 },
                ),
                (
                    vec![("runtime", "docker".to_owned())],
                    if engine { 1.0 } else { 0.0 },
                ),
            ],
        )?;
        gauge(
            e,
            "fdr_containers_running",
            "Containers known to be running.",
            one(running as f64),
        )?;

        gauge(
            e,
            "fdr_pipeline_lag_seconds",
            "How long ago the pipeline last finished a step (it steps at least once a second; checked once a second). -1 before its first step.",
            one(self.health.pipeline_lag().map_or(-1.0, |d| d.as_secs_f64())),
        )?;
        gauge(
            e,
            "fdr_pipeline_max_step_seconds",
            "The longest single pipeline step so far (how long capture stood still).",
            one(c.pipeline_max_step_us.load(Relaxed) as f64 / 1e6),
        )?;
        counter(
            e,
            "fdr_pipeline_slow_steps",
            "Pipeline steps blocked for longer than 100 ms.",
            one(c.pipeline_slow_steps.load(Relaxed)),
        )?;
        gauge(
            e,
            "fdr_serving",
            "1 while the agent reports SERVING on grpc.health.v1.",
            one(if self.health.serving() { 1.0 } else { 0.0 }),
        )?;
        gauge(
            e,
            "fdr_processes_tracked",
            "Processes in the process table.",
            one(c.processes[0].load(Relaxed) as f64),
        )?;
        gauge(
            e,
            "fdr_start_time_seconds",
            "When the agent started, in seconds since the Unix epoch.",
            one(crate::util::unix_ns(st.started) as f64 / 1e9),
        )?;
        if let Some((cpu, rss)) = own_usage() {
            counter_f64(
                e,
                "process_cpu_seconds",
                "CPU time the agent used (user and system), in seconds.",
                cpu,
            )?;
            gauge(
                e,
                "process_resident_memory_bytes",
                "The agent's resident memory.",
                one(rss),
            )?;
        }
        if let Some(x) = &st.export {
            let m = x.outbox.metrics();
            gauge(
                e,
                "fdr_export_queued_records",
                "OTLP export: records waiting in the outbox.",
                one(m.queued_records.load(Relaxed) as f64),
            )?;
            gauge(
                e,
                "fdr_export_queued_bytes",
                "OTLP export: bytes of records waiting in the outbox.",
                one(m.queued_bytes.load(Relaxed) as f64),
            )?;
            let p = m.to_pb("");
            gauge(
                e,
                "fdr_export_oldest_queued_seconds",
                "OTLP export: age of the oldest record waiting in the outbox (0: none).",
                one(p.oldest_age_s),
            )?;
            counter(
                e,
                "fdr_export_sent_records",
                "OTLP export: records the collector acknowledged.",
                one(p.sent),
            )?;
            counter(
                e,
                "fdr_export_retried_records",
                "OTLP export: records sent again (duplicates on the wire).",
                one(p.retried),
            )?;
            counter(
                e,
                "fdr_export_rejected_records",
                "OTLP export: records the collector rejected (partial success).",
                one(p.rejected),
            )?;
            counter(
                e,
                "fdr_export_failures",
                "OTLP export: export calls that failed.",
                one(p.failures),
            )?;
            counter(
                e,
                "fdr_export_dropped_records",
                "OTLP export: records the outbox's bound dropped, by kind.",
                [
                    (vec![("kind", "event".to_owned())], p.dropped_events),
                    (vec![("kind", "incident".to_owned())], p.dropped_incidents),
                    (vec![("kind", "audit".to_owned())], p.dropped_audits),
                ],
            )?;
            counter(
                e,
                "fdr_export_gaps",
                "OTLP export: gap records queued in place of dropped incidents and audits.",
                one(p.gaps),
            )?;
            counter(
                e,
                "fdr_export_events_not_queued",
                "OTLP export: raw events not queued (the tap's queue full, the rate limit).",
                one(p.events_not_queued),
            )?;
        }
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_owned())]);
        let m = e.encode_descriptor(
            "fdr_build",
            "The agent's version.",
            None,
            build.metric_type(),
        )?;
        build.encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        #[derive(Debug)]
        struct Odd;
        impl Collector for Odd {
            fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                counter(
                    &mut enc,
                    "odd",
                    "help",
                    [(vec![("v", "a\"b\\c\nd".to_owned())], 3)],
                )?;
                gauge(&mut enc, "plain", "help", one(1.5))
            }
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(Odd));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains("odd_total{v=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE odd counter\n"), "{out}");
        assert!(out.contains("\nplain 1.5\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
        let (cpu, rss) = own_usage().expect("/proc/self/stat");
        assert!(cpu >= 0.0 && rss > 1e6, "{cpu} {rss}");
        let text = prometheus_text(&out);
        assert_eq!(
            text,
            "# HELP odd_total help\n# TYPE odd_total counter\n\
             odd_total{v=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP plain help\n# TYPE plain gauge\nplain 1.5\n"
        );
        let info =
            "# HELP fdr_build v.\n# TYPE fdr_build info\nfdr_build_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            prometheus_text(info),
            "# HELP fdr_build_info v.\n# TYPE fdr_build_info gauge\nfdr_build_info{version=\"1\"} 1\n"
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_methods_405() {
        let registry = Arc::new(Scraper::new(Registry::default()));
        let req = |m: Method, p: &str| hyper::Request::builder().method(m).uri(p).body(()).unwrap();
        let r = respond(req(Method::GET, "/nope"), registry.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = respond(req(Method::POST, "/metrics"), registry.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = respond(req(Method::GET, "/metrics"), registry.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[hyper::header::CONTENT_TYPE], PROMETHEUS_TEXT);
        let mut om = req(Method::GET, "/metrics");
        om.headers_mut().insert(
            hyper::header::ACCEPT,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
            ),
        );
        let r = respond(om, registry).await.unwrap();
        assert_eq!(r.headers()[hyper::header::CONTENT_TYPE], OPENMETRICS);
    }
}
