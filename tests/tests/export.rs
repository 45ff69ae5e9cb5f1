//! The OTLP logs export (`[export.otlp]`, crate fdr-export) against a real
//! OpenTelemetry collector: `rotel` (PyPI; `cargo xtask setup` installs it),
//! whose debug exporter prints every LogRecord it receives. Incidents are
//! raised by real interactive `useradd`s in a private /etc.
//!
//! - an incident arrives with its attributes;
//! - outage: the collector is down while three incidents open, the agent is
//!   killed (SIGKILL) with them queued and restarted, the collector started:
//!   each arrives exactly once by idempotency key, in serial order;
//! - back-pressure: a collector (mutual TLS, a bearer token) answering
//!   RESOURCE_EXHAUSTED with RetryInfo is retried after exactly the delay
//!   it asked for;
//! - the console exports what it ingests, under its fleet serial.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use fdr_tests::{
    fleet::{free_port, interactive_useradd, pki, poll, serial, Console, Killed, Node, Pki, SLOW},
    TempDir,
};

/// The `rotel-agent` binary of the `rotel` Python package.
fn rotel_binary() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel,os;print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .expect("run python3");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bin = Path::new(&dir).join("rotel-agent");
    assert!(
        out.status.success() && bin.exists(),
        "the rotel collector is missing (python3 -m pip install rotel; `cargo xtask setup` \
         installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A real collector on loopback printing what it receives.
struct Rotel {
    port: u16,
    out: PathBuf,
    process: Option<Killed>,
}

impl Rotel {
    fn new(dir: &Path) -> Rotel {
        Rotel {
            port: free_port(),
            out: dir.join("rotel.out"),
            process: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.out)
            .expect("rotel output");
        let dir = self.out.parent().expect("dir");
        let child = Command::new(rotel_binary())
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--debug-log", "logs", "--debug-log-verbosity", "detailed"])
            .args(["--exporter", "blackhole"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rotel-agent");
        self.process = Some(Killed(child));
        let port = self.port;
        poll("the collector's port", SLOW, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every LogRecord the collector printed so far.
    fn records(&self) -> Vec<Record> {
        parse(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }
}

/// One LogRecord as the collector printed it.
#[derive(Debug, Clone, Default)]
struct Record {
    event_name: String,
    severity_number: String,
    body: String,
    attrs: HashMap<String, String>,
    resource: HashMap<String, String>,
}

impl Record {
    fn a(&self, k: &str) -> &str {
        self.attrs.get(k).map_or("", String::as_str)
    }
    fn text(&self) -> String {
        format!("{} {:?}", self.body, self.attrs)
    }
}

/// `Str(x)` → x, `Int(7)` → 7.
fn value(v: &str) -> String {
    for p in ["Str(", "Int(", "Bool(", "Double("] {
        if let Some(x) = v.strip_prefix(p).and_then(|x| x.strip_suffix(')')) {
            return x.to_owned();
        }
    }
    v.to_owned()
}

/// The collector's debug output (ResourceLog / LogRecord blocks).
fn parse(text: &str) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut resource = HashMap::new();
    let mut in_resource = false;
    let mut cur: Option<Record> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("ResourceLog #") {
            out.extend(cur.take());
            resource = HashMap::new();
            in_resource = true;
        } else if t.starts_with("ScopeLogs #") {
            in_resource = false;
        } else if t.starts_with("LogRecord #") {
            out.extend(cur.take());
            cur = Some(Record {
                resource: resource.clone(),
                ..Default::default()
            });
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            if in_resource {
                resource.insert(k.to_owned(), value(v));
            } else if let Some(r) = cur.as_mut() {
                r.attrs.insert(k.to_owned(), value(v));
            }
        } else if let Some(r) = cur.as_mut() {
            if let Some(v) = t.strip_prefix("EventName: ") {
                r.event_name = v.to_owned();
            } else if let Some(v) = t.strip_prefix("SeverityNumber: ") {
                r.severity_number = v.to_owned();
            } else if let Some(v) = t.strip_prefix("Body: ") {
                r.body = value(v);
            }
        }
    }
    out.extend(cur);
    out
}

/// The agent's export figures (`fdrctl stats --json`).
fn export_stats(node: &Node, pki: &Pki) -> serde_json::Value {
    let out = node.ctl(pki, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("stats JSON");
    v["export"].clone()
}

/// GET /metrics (plain HTTP/1.1 on loopback).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// Every incident the agent on `socket` has stored.
fn stored_incidents(socket: &Path) -> Vec<pb::Incident> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = fdr_cli::client::connect_unix(socket)
            .await
            .expect("connect");
        fdr_tests::all_incidents(&mut c).await
    })
}

fn with_export(endpoint: String) -> impl FnOnce(&mut fdr_agent::config::Config) {
    move |c| {
        let o = &mut c.export.otlp;
        o.enabled = true;
        o.endpoint = endpoint;
        o.backoff_initial = Duration::from_millis(200);
        o.backoff_max = Duration::from_secs(1);
        o.timeout = Duration::from_secs(5);
    }
}

/// The `incident opened` records of the backdoor-account incident(s) that
/// `user`'s account change is part of. Found through any of their records
/// that names the user: another test's `useradd` on this machine, seen by
/// every agent, may have opened the incident that this one then joined.
fn opened_for<'a>(recs: &'a [Record], user: &str) -> Vec<&'a Record> {
    let serials: std::collections::BTreeSet<&str> = recs
        .iter()
        .filter(|r| r.a("fdr.incident.type") == "backdoor-account" && r.text().contains(user))
        .map(|r| r.a("fdr.incident.serial"))
        .collect();
    recs.iter()
        .filter(|r| {
            r.event_name == "fdr.incident.opened"
                && r.a("fdr.incident.type") == "backdoor-account"
                && serials.contains(r.a("fdr.incident.serial"))
        })
        .collect()
}

#[test]
fn an_incident_reaches_a_real_collector_with_its_attributes() {
    let _one = serial();
    let t0 = Instant::now();
    let dir = TempDir::new("export-a");
    let pki = pki(dir.path());
    let mut rotel = Rotel::new(dir.path());
    rotel.start();
    let export = with_export(rotel.endpoint());
    let metrics_port = free_port();
    let node = Node::start_with(dir.path(), "exp-a", &pki, |c| {
        export(c);
        c.metrics.listen = format!("127.0.0.1:{metrics_port}");
        // Raw events too (opt-in), account changes only.
        c.export.otlp.raw_events.enabled = true;
        c.export.otlp.raw_events.kinds = vec!["account".into()];
    });
    let user = interactive_useradd(dir.path());
    let rec = poll("the incident at the collector", SLOW, || {
        opened_for(&rotel.records(), &user)
            .first()
            .cloned()
            .cloned()
    });
    assert_eq!(rec.event_name, "fdr.incident.opened");
    assert_eq!(rec.a("event.name"), "fdr.incident.opened");
    assert_eq!(rec.a("fdr.incident.type"), "backdoor-account", "{rec:?}");
    assert_eq!(rec.a("fdr.severity"), "critical");
    assert!(rec.severity_number.contains("(21)"), "{rec:?}");
    assert_eq!(rec.a("host.name"), "exp-a");
    assert_eq!(rec.a("fdr.node"), "exp-a");
    assert!(rec
        .a("fdr.incident.serial")
        .parse::<u64>()
        .is_ok_and(|s| s > 0));
    assert!(
        rec.a("process.pid").parse::<u32>().is_ok_and(|p| p > 0),
        "{rec:?}"
    );
    assert!(rec.a("process.command_line").contains(&user), "{rec:?}");
    assert_eq!(rec.a("user.name"), "root");
    let instance = rec.a("fdr.agent.instance_id");
    assert_eq!(instance.len(), 32, "{rec:?}");
    let key = rec.a("fdr.idempotency_key");
    assert_eq!(
        key,
        format!("{instance}:{}", rec.a("fdr.record.serial")),
        "{rec:?}"
    );
    assert_eq!(
        rec.resource.get("service.name").map(String::as_str),
        Some("fdr-agent")
    );
    assert_eq!(
        rec.resource.get("service.instance.id").map(String::as_str),
        Some(instance)
    );
    // Its audit follows as a record of its own; the agent counts them sent.
    poll("the audit record", SLOW, || {
        rotel
            .records()
            .iter()
            .any(|r| {
                r.event_name == "fdr.audit"
                    && r.a("fdr.incident.type") == "backdoor-account"
                    && r.text().contains(&user)
            })
            .then_some(())
    });
    // The raw account event, as a record of its own.
    let raw = poll("the raw account event", SLOW, || {
        rotel
            .records()
            .into_iter()
            .find(|r| r.event_name == "fdr.event" && r.text().contains(&user))
    });
    assert_eq!(raw.a("fdr.event.kind"), "account", "{raw:?}");
    assert_eq!(raw.a("user.name"), "root", "{raw:?}");
    assert!(raw.a("file.path").contains("/etc/passwd"), "{raw:?}");
    assert!(
        rotel
            .records()
            .iter()
            .filter(|r| r.event_name == "fdr.event")
            .all(|r| r.a("fdr.event.kind") == "account"),
        "only the kinds asked for"
    );
    let st = poll("the records acknowledged", SLOW, || {
        let st = export_stats(&node, &pki);
        (st["sent"].as_u64() >= Some(3) && st["queued_records"].as_u64() == Some(0)).then_some(st)
    });
    assert_eq!(st["dropped_incidents"], 0, "{st}");
    // The same figures on the Prometheus endpoint.
    let metrics = scrape(metrics_port);
    for name in [
        "fdr_export_sent_records",
        "fdr_export_queued_records",
        "fdr_export_oldest_queued_seconds",
        "fdr_export_dropped_records",
        "fdr_export_retried_records",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let sent: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fdr_export_sent_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("fdr_export_sent_records_total:\n{metrics}"));
    assert!(sent >= 3.0, "{sent}");
    eprintln!("incident to collector: {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn an_outage_and_a_killed_agent_lose_nothing() {
    let _one = serial();
    let t0 = Instant::now();
    let dir = TempDir::new("export-b");
    let pki = pki(dir.path());
    // The collector's port is chosen, nothing listens there yet.
    let mut rotel = Rotel::new(dir.path());
    let mut node = Node::start_with(dir.path(), "exp-b", &pki, with_export(rotel.endpoint()));
    let mut users = Vec::new();
    for i in 0..3 {
        if i > 0 {
            // A new incident, not an update (analysis.incident_window 1s).
            std::thread::sleep(Duration::from_millis(1100));
        }
        users.push(interactive_useradd(dir.path()));
    }
    // All three are stored (ListIncidents reads the database): their
    // records were queued in the same transactions.
    let socket = dir.path().join("exp-b").join("fdr.sock");
    let last = poll("the three incidents", SLOW, || {
        let known = stored_incidents(&socket);
        let serials: Option<Vec<u64>> = users
            .iter()
            .map(|u| {
                known
                    .iter()
                    .find(|i| {
                        i.r#type == "backdoor-account" && i.accounts.iter().any(|a| &a.account == u)
                    })
                    .map(|i| i.serial)
            })
            .collect();
        serials.and_then(|s| s.into_iter().max())
    });
    // The outbox (what is committed) holds the records of the last one.
    let st = poll("the records queued in the outbox", SLOW, || {
        let st = export_stats(&node, &pki);
        (st["last_incident_serial"].as_u64() >= Some(last)
            && st["queued_records"].as_u64() >= Some(6)
            && st["failures"].as_u64() >= Some(1))
        .then_some(st)
    });
    assert_eq!(st["sent"], 0, "{st}");
    // SIGKILL with them queued.
    if let Some(mut p) = node.process.take() {
        let _ = p.0.kill();
        let _ = p.0.wait();
    }
    rotel.start();
    let node = Node::start_with(dir.path(), "exp-b", &pki, with_export(rotel.endpoint()));
    let deadline = Instant::now() + SLOW;
    let recs = loop {
        let recs = rotel.records();
        if users.iter().all(|u| !opened_for(&recs, u).is_empty()) {
            break recs;
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = recs
                .iter()
                .map(|r| {
                    format!(
                        "{} {} #{} rec {} {}",
                        r.event_name,
                        r.a("fdr.incident.type"),
                        r.a("fdr.incident.serial"),
                        r.a("fdr.record.serial"),
                        r.a("process.command_line"),
                    )
                })
                .collect();
            panic!(
                "the three incidents never all reached the collector; users {users:?}; \
                 export {}; the collector saw:\n{}",
                export_stats(&node, &pki),
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Each exactly once by idempotency key (the wire may repeat one).
    let mut by_key: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in &recs {
        by_key
            .entry(r.a("fdr.idempotency_key").to_owned())
            .or_default()
            .push(r);
    }
    let mut serials = Vec::new();
    for u in &users {
        let keys: std::collections::BTreeSet<&str> = opened_for(&recs, u)
            .iter()
            .map(|r| r.a("fdr.idempotency_key"))
            .collect();
        assert_eq!(keys.len(), 1, "{u}: one opened record by key: {keys:?}");
        let r = opened_for(&recs, u)[0];
        serials.push((
            r.a("fdr.incident.serial").parse::<u64>().expect("serial"),
            r.a("fdr.record.serial")
                .parse::<u64>()
                .expect("record serial"),
        ));
    }
    // In serial order: the incidents' and their records' serials rise
    // together, and the collector saw them in that order.
    serials.dedup();
    let mut sorted = serials.clone();
    sorted.sort();
    assert_eq!(serials, sorted, "incident and record serials in order");
    let order: Vec<u64> = recs
        .iter()
        .filter_map(|r| r.a("fdr.record.serial").parse::<u64>().ok())
        .collect();
    let mut first_seen: Vec<u64> = Vec::new();
    for s in order {
        if !first_seen.contains(&s) {
            first_seen.push(s);
        }
    }
    let mut asc = first_seen.clone();
    asc.sort();
    assert_eq!(first_seen, asc, "records arrive in record serial order");
    let dups: usize = by_key.values().map(|v| v.len() - 1).sum();
    let st = poll("the outbox emptied", SLOW, || {
        let st = export_stats(&node, &pki);
        (st["queued_records"].as_u64() == Some(0)).then_some(st)
    });
    // Records handed out before the crash and sent again are counted.
    assert!(
        st["retried"].as_u64() >= Some(dups as u64) && st["retried"].as_u64() >= Some(1),
        "{st} ({dups} duplicates seen)"
    );
    eprintln!(
        "outage, kill -9, restart: {:.1}s, {dups} duplicates on the wire",
        t0.elapsed().as_secs_f64()
    );
}

mod backpressure {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use prost::Message;

    /// Answers the first export with RESOURCE_EXHAUSTED + RetryInfo, then OK;
    /// a call without the bearer token or the configured header is refused.
    struct Pushy {
        delay: Duration,
        calls: Arc<Mutex<Vec<(Instant, usize)>>>,
    }

    #[tonic::async_trait]
    impl LogsService for Pushy {
        async fn export(
            &self,
            req: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let md = req.metadata();
            let bearer = format!("Bearer {}", fdr_tests::fleet::TOKEN);
            if md.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str())
                || md.get("x-tenant").and_then(|v| v.to_str().ok()) != Some("blue")
            {
                return Err(tonic::Status::unauthenticated("token or header missing"));
            }
            let n: usize = req
                .get_ref()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            let first = {
                let mut c = self.calls.lock().unwrap();
                c.push((Instant::now(), n));
                c.len() == 1
            };
            if first {
                let info = fdr_export::sender::RetryInfo {
                    retry_delay: Some(prost_types::Duration {
                        seconds: self.delay.as_secs() as i64,
                        nanos: self.delay.subsec_nanos() as i32,
                    }),
                };
                let st = fdr_export::sender::RpcStatus {
                    code: tonic::Code::ResourceExhausted as i32,
                    message: "slow down".into(),
                    details: vec![prost_types::Any {
                        type_url: fdr_export::sender::RETRY_INFO_TYPE.into(),
                        value: info.encode_to_vec(),
                    }],
                };
                return Err(tonic::Status::with_details(
                    tonic::Code::ResourceExhausted,
                    "slow down",
                    st.encode_to_vec().into(),
                ));
            }
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resource_exhausted_with_retry_info_waits_exactly_that_long_over_mtls_with_a_token() {
        let dir = TempDir::new("export-c");
        let pki = pki(dir.path());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let delay = Duration::from_secs(2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // (localhost resolves to 127.0.0.1 here: the certificate names both.)
        let addr = listener.local_addr().unwrap();
        let svc = LogsServiceServer::new(Pushy {
            delay,
            calls: calls.clone(),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Mutual TLS: the server's certificate and the client's, both from
        // the test CA.
        let read = |p: &Path| std::fs::read(p).unwrap();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                read(&pki.server.cert),
                read(&pki.server.key),
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(read(&pki.ca.cert)));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        // The real outbox and sender over a redb database of the test's.
        let db = Arc::new(redb::Database::create(dir.path().join("outbox.redb")).unwrap());
        let outbox = Arc::new(fdr_export::Outbox::new("test-instance", 1 << 20));
        {
            let tx = db.begin_write().unwrap();
            let recs = fdr_export::incident_records(
                None,
                &pb::Incident {
                    serial: 1,
                    r#type: "backdoor-account".into(),
                    severity: pb::Severity::Critical as i32,
                    audit_count: 1,
                    audits: vec![pb::Audit::default()],
                    ..Default::default()
                },
                "",
            );
            outbox.enqueue(&tx, recs).unwrap();
            tx.commit().unwrap();
        }
        let cfg = fdr_export::OtlpConfig {
            enabled: true,
            endpoint: format!("https://localhost:{}", addr.port()),
            ca_file: Some(pki.ca.cert.clone()),
            cert_file: Some(pki.client.cert.clone()),
            key_file: Some(pki.client.key.clone()),
            token_file: Some(pki.token.clone()),
            headers: [("x-tenant".to_owned(), "blue".to_owned())].into(),
            // A retry not honouring RetryInfo would come within 100 ms.
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let access: Arc<dyn fdr_export::Access> = Arc::new(db.clone());
        let task = fdr_export::spawn(
            cfg,
            outbox.clone(),
            access,
            fdr_export::Source {
                service_name: "fdr-test".into(),
                instance_id: "test-instance".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while outbox
            .metrics()
            .sent
            .load(std::sync::atomic::Ordering::Relaxed)
            < 2
        {
            assert!(Instant::now() < deadline, "the retry never succeeded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = stop_tx.send(());
        let _ = server.await;
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "one refused call, one retry");
        let gap = calls[1].0 - calls[0].0;
        assert!(
            gap >= delay && gap < delay + Duration::from_millis(1500),
            "retried after {gap:?}, asked for {delay:?}"
        );
        assert_eq!(calls[1].1, 2, "the same records (opened, audit) again");
        let m = outbox.metrics();
        assert_eq!(m.retried.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(m.failures.load(std::sync::atomic::Ordering::Relaxed), 1);
        let st = m.to_pb("");
        assert!(st.last_error.contains("ResourceExhausted"), "{st:?}");
        assert_eq!(st.queued_records, 0, "acknowledged");
        eprintln!("retry after RetryInfo(2s): {gap:?}");
    }
}

#[test]
fn the_console_exports_with_its_fleet_serials() {
    let _one = serial();
    let t0 = Instant::now();
    let dir = TempDir::new("export-d");
    let pki = pki(dir.path());
    let mut rotel = Rotel::new(dir.path());
    rotel.start();
    let node = Node::start(dir.path(), "exp-d", &pki);
    let endpoint = rotel.endpoint();
    let mut console = Console::new(dir.path(), &[node.url()], &pki, 10, |c| {
        let o = &mut c.export.otlp;
        o.enabled = true;
        o.endpoint = endpoint;
        o.backoff_initial = Duration::from_millis(200);
        o.backoff_max = Duration::from_secs(1);
    });
    console.start();
    let user = interactive_useradd(dir.path());
    let inc = console.wait_incident("exp-d", &user);
    let rec = poll("the console's record at the collector", SLOW, || {
        rotel.records().into_iter().find(|r| {
            r.event_name == "fdr.incident.opened"
                && r.a("fdr.incident.type") == "backdoor-account"
                && r.resource.get("service.name").map(String::as_str) == Some("fdr-console")
                && r.text().contains(&user)
        })
    });
    assert_eq!(
        rec.a("fdr.incident.serial"),
        inc.serial.to_string(),
        "{rec:?}"
    );
    assert_eq!(
        rec.a("fdr.agent.incident.serial"),
        inc.agent_serial.to_string()
    );
    assert_eq!(rec.a("fdr.node"), "exp-d");
    assert_eq!(rec.a("fdr.agent.instance_id"), inc.agent_instance);
    let console_id = rec
        .resource
        .get("service.instance.id")
        .cloned()
        .unwrap_or_default();
    assert!(!console_id.is_empty() && console_id != inc.agent_instance);
    assert!(
        rec.a("fdr.idempotency_key")
            .starts_with(&format!("{console_id}:")),
        "{rec:?}"
    );
    assert_eq!(rec.a("fdr.incident.type"), "backdoor-account");
    console.stop();
    drop(node);
    eprintln!("console export: {:.1}s", t0.elapsed().as_secs_f64());
}
