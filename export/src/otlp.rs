//! Outbox records as OpenTelemetry LogRecords: one per incident opened,
//! incident updated, audit, raw event and gap. Attributes follow the
//! OpenTelemetry semantic conventions where one exists (`host.name`,
//! `container.id`, `process.pid`, …) and are `fdr.*` otherwise. Nothing is
//! escaped (OTLP is structured); odd data never panics.

use fdr_proto::v1 as pb;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use pb::outbox_record::Kind;

use crate::outbox::{now_ns, ts_ns};

/// Who sends: the resource of every record.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `fdr-agent` or `fdr-console`.
    pub service_name: String,
    pub service_version: String,
    /// The agent's or console's instance id (`service.instance.id`, and the
    /// first half of every idempotency key).
    pub instance_id: String,
    pub host_name: String,
    /// Extra resource attributes (`export.otlp.resource_attributes`).
    pub extra: Vec<(String, String)>,
}

pub const SCOPE: &str = "fdr";

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn i(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// Attributes of non-empty values only.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn s(&mut self, key: &str, v: &str) {
        if !v.is_empty() {
            self.0.push(s(key, v));
        }
    }
    fn i(&mut self, key: &str, v: i64) {
        self.0.push(i(key, v));
    }
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|kv| kv.key == key)
    }
}

/// fdr severity → (SeverityNumber, text).
pub fn severity(sev: pb::Severity) -> (SeverityNumber, &'static str) {
    match sev {
        pb::Severity::Low => (SeverityNumber::Info, "low"),
        pb::Severity::Medium => (SeverityNumber::Warn, "medium"),
        pb::Severity::High => (SeverityNumber::Error, "high"),
        pb::Severity::Critical => (SeverityNumber::Fatal, "critical"),
        pb::Severity::Unspecified => (SeverityNumber::Unspecified, ""),
    }
}

/// The event name of a record kind.
pub fn event_name(kind: Kind) -> &'static str {
    match kind {
        Kind::IncidentOpened => "fdr.incident.opened",
        Kind::IncidentUpdated => "fdr.incident.updated",
        Kind::Audit => "fdr.audit",
        Kind::Event => "fdr.event",
        Kind::Gap => "fdr.export.gap",
        Kind::Unspecified => "fdr.unknown",
    }
}

fn container(a: &mut Attrs, c: Option<&pb::ContainerInfo>, id_fallback: &str) {
    let id = c.map_or("", |c| c.id.as_str());
    a.s("container.id", if id.is_empty() { id_fallback } else { id });
    if let Some(c) = c {
        a.s("container.name", &c.name);
        a.s("container.image.name", &c.image);
        a.s(
            "container.runtime",
            c.runtime.split(' ').next().unwrap_or(""),
        );
        a.s("k8s.pod.name", &c.pod_name);
        a.s("k8s.namespace.name", &c.pod_namespace);
        a.s("k8s.pod.uid", &c.pod_uid);
    }
}

fn process(a: &mut Attrs, p: Option<&pb::Process>) {
    let Some(p) = p else { return };
    if p.pid != 0 {
        a.i("process.pid", i64::from(p.pid));
    }
    if p.ppid != 0 {
        a.i("process.parent_pid", i64::from(p.ppid));
    }
    a.s("process.executable.path", &p.exe);
    a.s("process.executable.name", &p.comm);
    if !p.argv.is_empty() {
        a.s("process.command_line", &p.argv.join(" "));
    }
    a.i("user.id", i64::from(p.uid));
}

fn scope_and_host(a: &mut Attrs, scope: &str, hostname: &str, service: &str) {
    a.s("fdr.scope", scope);
    a.s("host.name", hostname);
    // The node of a container is the host it runs on.
    if scope.starts_with("container:") {
        a.s("k8s.node.name", hostname);
    } else {
        // Not `service.name`: that is the resource's (fdr-agent).
        a.s("fdr.service", service);
    }
}

fn incident_attrs(a: &mut Attrs, inc: &pb::Incident, src: &Source, sha: &str) {
    let serial = inc.serial;
    a.i("fdr.incident.serial", serial as i64);
    a.s("fdr.incident.type", &inc.r#type);
    let (_, sev) = severity(inc.severity());
    a.s("fdr.severity", sev);
    scope_and_host(a, &inc.scope, &inc.hostname, &inc.service);
    let cid = inc.scope.strip_prefix("container:").unwrap_or("");
    container(a, inc.container.as_ref(), cid);
    if inc.snapshot_id != 0 {
        a.i("fdr.snapshot.id", inc.snapshot_id as i64);
    }
    a.s(
        "fdr.snapshot.sha256",
        if sha.is_empty() {
            &inc.snapshot_sha256
        } else {
            sha
        },
    );
    a.s("fdr.model", &inc.model);
    let instance = if inc.agent_instance.is_empty() {
        src.instance_id.as_str()
    } else {
        inc.agent_instance.as_str()
    };
    a.s("fdr.agent.instance_id", instance);
    a.s(
        "fdr.node",
        if inc.node.is_empty() {
            &inc.hostname
        } else {
            &inc.node
        },
    );
    if inc.agent_serial != 0 {
        a.i("fdr.agent.incident.serial", inc.agent_serial as i64);
    }
    a.i("fdr.incident.audit_count", inc.audit_count as i64);
    if let Some(acc) = &inc.account {
        a.s("user.name", &acc.user);
        a.s("fdr.account.name", &acc.account);
        if !acc.files.is_empty() {
            a.s("file.path", &acc.files.join(" "));
        }
        if !acc.command.is_empty() && !a.has("process.command_line") {
            a.s("fdr.account.command", &acc.command.join(" "));
        }
    }
}

fn audit_attrs(a: &mut Attrs, au: &pb::Audit) {
    a.s("fdr.audit.rule", &au.rule);
    a.s("fdr.audit.section", &au.section);
    a.s("fdr.audit.item", &au.item);
    if au.event_seq != 0 {
        a.i("fdr.event.seq", au.event_seq as i64);
    }
}

fn kind_name(k: i32) -> String {
    pb::EventKind::name_of(k)
}

fn event_attrs(a: &mut Attrs, e: &pb::Event) -> String {
    a.s("fdr.event.kind", &kind_name(e.kind));
    if e.seq != 0 {
        a.i("fdr.event.seq", e.seq as i64);
    }
    scope_and_host(a, &e.scope, &e.hostname, &e.service);
    container(a, e.container.as_ref(), &e.container_id);
    process(a, e.process.as_ref());
    use pb::event::Detail;
    let mut summary = kind_name(e.kind);
    match &e.detail {
        Some(Detail::Exec(x)) => {
            a.s("process.executable.path", &x.filename);
            if !x.argv.is_empty() && !a.has("process.command_line") {
                a.s("process.command_line", &x.argv.join(" "));
            }
            summary = format!("exec {}", x.filename);
        }
        Some(Detail::File(f)) => {
            a.s("file.path", &f.path);
            if let Some(p2) = &f.path2 {
                a.s("fdr.file.path2", p2);
            }
            summary = format!("{summary} {}", f.path);
        }
        Some(Detail::Net(n)) => {
            a.s("network.transport", &n.protocol);
            a.s("network.local.address", &n.local_address);
            if n.local_port != 0 {
                a.i("network.local.port", i64::from(n.local_port));
            }
            a.s("network.peer.address", &n.remote_address);
            if n.remote_port != 0 {
                a.i("network.peer.port", i64::from(n.remote_port));
            }
            summary = if n.remote_address.is_empty() {
                format!("{summary} {}:{}", n.local_address, n.local_port)
            } else {
                format!("{summary} {}:{}", n.remote_address, n.remote_port)
            };
        }
        Some(Detail::Account(acc)) => {
            a.s("user.name", &acc.user);
            a.s("fdr.account.name", &acc.account);
            if !acc.files.is_empty() {
                a.s("file.path", &acc.files.join(" "));
            }
        }
        Some(Detail::Binary(b)) => {
            a.s("file.path", &b.path);
            summary = format!("{summary} {}", b.path);
        }
        Some(Detail::Audit(au)) => {
            a.s("fdr.audit.rule", &au.rule);
            a.s("fdr.audit.section", &au.section);
            summary = au.message.clone();
        }
        _ => {}
    }
    if let Some(p) = &e.process {
        if summary == kind_name(e.kind) {
            summary = format!("{summary} {} (pid {})", p.comm, p.pid);
        }
    }
    summary
}

/// One LogRecord of `r`; `None` for a record of no known kind.
pub fn log_record(r: &pb::OutboxRecord, src: &Source) -> LogRecord {
    let kind = r.kind();
    let name = event_name(kind);
    let mut a = Attrs::default();
    a.s("event.name", name);
    a.s(
        "fdr.idempotency_key",
        &format!("{}:{}", src.instance_id, r.serial),
    );
    a.i("fdr.record.serial", r.serial as i64);
    let queued = ts_ns(r.queued.as_ref());
    let mut time = queued;
    let mut sev = pb::Severity::Unspecified;
    let body = match kind {
        Kind::IncidentOpened | Kind::IncidentUpdated => {
            let inc = r.incident.clone().unwrap_or_default();
            // The latest audit names the process (the trigger, when opened).
            if let Some(au) = inc.audits.last() {
                process(&mut a, au.process.as_ref());
                audit_attrs(&mut a, au);
            }
            incident_attrs(&mut a, &inc, src, &r.snapshot_sha256);
            sev = inc.severity();
            let t = if kind == Kind::IncidentOpened {
                inc.first.as_ref()
            } else {
                inc.last.as_ref()
            };
            time = ts_ns(t);
            inc.summary
        }
        Kind::Audit => {
            let au = r.audit.clone().unwrap_or_default();
            process(&mut a, au.process.as_ref());
            audit_attrs(&mut a, &au);
            // The record's severity is the incident's (as for its other
            // records); the audit's own is an attribute.
            a.s("fdr.audit.severity", severity(au.severity()).1);
            sev = au.severity();
            if let Some(inc) = &r.incident {
                incident_attrs(&mut a, inc, src, &r.snapshot_sha256);
                sev = inc.severity();
            }
            time = ts_ns(au.time.as_ref());
            au.message
        }
        Kind::Event => {
            let e = r.event.clone().unwrap_or_default();
            a.s("fdr.agent.instance_id", &src.instance_id);
            time = ts_ns(e.time.as_ref());
            event_attrs(&mut a, &e)
        }
        Kind::Gap => {
            let g = r.gap.clone().unwrap_or_default();
            a.i("fdr.gap.incidents", g.incidents as i64);
            a.i("fdr.gap.audits", g.audits as i64);
            a.i("fdr.gap.events", g.events as i64);
            a.i("fdr.gap.records", g.records as i64);
            a.s("fdr.gap.reason", &g.reason);
            a.i("fdr.gap.first_serial", g.first_serial as i64);
            a.i("fdr.gap.last_serial", g.last_serial as i64);
            let (f, l) = (ts_ns(g.first_time.as_ref()), ts_ns(g.last_time.as_ref()));
            if f != 0 {
                a.i("fdr.gap.first_time_unix_nano", f as i64);
                a.i("fdr.gap.last_time_unix_nano", l as i64);
            }
            sev = pb::Severity::High;
            let reason = if g.reason.is_empty() {
                "export outbox full"
            } else {
                g.reason.as_str()
            };
            let unknown = if g.records > 0 {
                format!(", {} records of unknown kind", g.records)
            } else {
                String::new()
            };
            if let Some(inc) = &r.incident {
                incident_attrs(&mut a, inc, src, &r.snapshot_sha256);
            }
            let serials = if g.last_serial > 0 {
                format!(" (record serials {}..={})", g.first_serial, g.last_serial)
            } else {
                String::new()
            };
            format!(
                "records will not arrive ({reason}): {} incident records, {} audits, {} raw \
                 events{unknown}{serials}",
                g.incidents, g.audits, g.events
            )
        }
        Kind::Unspecified => String::new(),
    };
    let (num, text) = severity(sev);
    a.s("fdr.severity", text);
    let mut seen = std::collections::HashSet::new();
    a.0.retain(|kv| seen.insert(kv.key.clone()));
    LogRecord {
        time_unix_nano: if time == 0 { queued } else { time },
        observed_time_unix_nano: if queued == 0 { now_ns() } else { queued },
        severity_number: num as i32,
        severity_text: text.to_ascii_uppercase(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: a.0,
        event_name: name.to_owned(),
        ..Default::default()
    }
}

/// The export request of a batch.
pub fn request(records: &[&pb::OutboxRecord], src: &Source) -> ExportLogsServiceRequest {
    let mut res = vec![
        s("service.name", src.service_name.clone()),
        s("service.version", src.service_version.clone()),
        s("service.instance.id", src.instance_id.clone()),
    ];
    if !src.host_name.is_empty() {
        res.push(s("host.name", src.host_name.clone()));
    }
    for (k, v) in &src.extra {
        res.push(s(k, v.clone()));
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: res,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE.into(),
                    version: src.service_version.clone(),
                    ..Default::default()
                }),
                log_records: records.iter().map(|r| log_record(r, src)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn st(r: &LogRecord, key: &str) -> String {
        match attr(r, key) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            Some(any_value::Value::IntValue(i)) => i.to_string(),
            other => panic!("{key}: {other:?}"),
        }
    }

    fn src() -> Source {
        Source {
            service_name: "fdr-agent".into(),
            service_version: "0.1.0".into(),
            instance_id: "inst".into(),
            host_name: "node-a".into(),
            extra: vec![],
        }
    }

    #[test]
    fn an_incident_maps_to_semantic_conventions() {
        let r = pb::OutboxRecord {
            kind: Kind::IncidentOpened as i32,
            serial: 7,
            snapshot_sha256: "ab".repeat(32),
            incident: Some(pb::Incident {
                serial: 3,
                r#type: "backdoor-account".into(),
                severity: pb::Severity::High as i32,
                scope: "container:c0ffee".into(),
                hostname: "node-a".into(),
                snapshot_id: 5,
                summary: "account \u{0}evil\u{202e} created".into(),
                container: Some(pb::ContainerInfo {
                    id: "c0ffee".into(),
                    name: "web".into(),
                    image: "nginx:1".into(),
                    pod_name: "web-0".into(),
                    pod_namespace: "prod".into(),
                    runtime: "containerd 1.7".into(),
                    ..Default::default()
                }),
                account: Some(pb::AccountDetail {
                    user: "root".into(),
                    account: "evil".into(),
                    files: vec!["/etc/passwd".into()],
                    ..Default::default()
                }),
                audits: vec![pb::Audit {
                    rule: "account-change".into(),
                    section: "rule".into(),
                    process: Some(pb::Process {
                        pid: 42,
                        ppid: 1,
                        uid: 0,
                        exe: "/usr/sbin/useradd".into(),
                        argv: vec!["useradd".into(), "evil".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let lr = log_record(&r, &src());
        assert_eq!(lr.event_name, "fdr.incident.opened");
        assert_eq!(lr.severity_number, SeverityNumber::Error as i32);
        assert_eq!(lr.severity_number, 17);
        assert_eq!(lr.severity_text, "HIGH");
        assert_eq!(st(&lr, "event.name"), "fdr.incident.opened");
        assert_eq!(st(&lr, "fdr.idempotency_key"), "inst:7");
        assert_eq!(st(&lr, "fdr.record.serial"), "7");
        assert_eq!(st(&lr, "fdr.incident.serial"), "3");
        assert_eq!(st(&lr, "fdr.incident.type"), "backdoor-account");
        assert_eq!(st(&lr, "fdr.severity"), "high");
        assert_eq!(st(&lr, "host.name"), "node-a");
        assert_eq!(st(&lr, "k8s.node.name"), "node-a");
        assert_eq!(st(&lr, "k8s.pod.name"), "web-0");
        assert_eq!(st(&lr, "k8s.namespace.name"), "prod");
        assert_eq!(st(&lr, "container.id"), "c0ffee");
        assert_eq!(st(&lr, "container.image.name"), "nginx:1");
        assert_eq!(st(&lr, "container.runtime"), "containerd");
        assert_eq!(st(&lr, "process.pid"), "42");
        assert_eq!(st(&lr, "process.command_line"), "useradd evil");
        assert_eq!(st(&lr, "user.name"), "root");
        assert_eq!(st(&lr, "fdr.snapshot.id"), "5");
        assert_eq!(st(&lr, "fdr.snapshot.sha256").len(), 64);
        assert_eq!(st(&lr, "fdr.agent.instance_id"), "inst");
        assert_eq!(st(&lr, "fdr.audit.rule"), "account-change");
        let Some(any_value::Value::StringValue(body)) =
            lr.body.as_ref().and_then(|b| b.value.as_ref())
        else {
            panic!("body")
        };
        assert!(body.contains('\u{202e}'), "nothing is escaped");
        let keys: Vec<&str> = lr.attributes.iter().map(|k| k.key.as_str()).collect();
        let unique: std::collections::HashSet<&&str> = keys.iter().collect();
        assert_eq!(keys.len(), unique.len(), "no duplicate keys: {keys:?}");
    }

    #[test]
    fn severities_kinds_and_odd_records() {
        let want = [
            (pb::Severity::Low, 9),
            (pb::Severity::Medium, 13),
            (pb::Severity::High, 17),
            (pb::Severity::Critical, 21),
            (pb::Severity::Unspecified, 0),
        ];
        for (s, n) in want {
            assert_eq!(severity(s).0 as i32, n);
        }
        // Records with nothing in them, or kinds from a newer writer, map
        // without panicking.
        for k in [0, 1, 2, 3, 4, 5, 99] {
            let r = pb::OutboxRecord {
                kind: k,
                ..Default::default()
            };
            let _ = log_record(&r, &src());
        }
        let e = pb::OutboxRecord {
            kind: Kind::Event as i32,
            serial: 1,
            event: Some(pb::Event {
                kind: pb::EventKind::NetConnect as i32,
                scope: "host".into(),
                service: "sshd.service".into(),
                detail: Some(pb::event::Detail::Net(pb::NetDetail {
                    remote_address: "10.0.0.9".into(),
                    remote_port: 4444,
                    protocol: "tcp".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let lr = log_record(&e, &src());
        assert_eq!(st(&lr, "fdr.event.kind"), "connect");
        assert_eq!(st(&lr, "network.peer.address"), "10.0.0.9");
        assert_eq!(st(&lr, "network.peer.port"), "4444");
        assert_eq!(st(&lr, "fdr.service"), "sshd.service");
        let g = pb::OutboxRecord {
            kind: Kind::Gap as i32,
            serial: 9,
            gap: Some(pb::OutboxGap {
                incidents: 2,
                first_serial: 1,
                last_serial: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let lr = log_record(&g, &src());
        assert_eq!(lr.event_name, "fdr.export.gap");
        assert_eq!(st(&lr, "fdr.gap.incidents"), "2");
        let req = request(&[&g], &src());
        let res = req.resource_logs[0].resource.as_ref().unwrap();
        assert!(res.attributes.iter().any(|kv| kv.key == "service.name"));
    }
}
