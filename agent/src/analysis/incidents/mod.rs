//! Incidents: audits of one scope correlated by type. The first audit of a
//! type on a scope opens an incident (a new serial, and a snapshot frozen
//! around it); more of the same type within the incident window update it.

pub mod detect;

use std::{collections::HashMap, sync::Arc};

use crate::{
    analysis::model::AuditDraft,
    attribution::containers::ContainerMeta,
    attribution::scope::Scope,
    event::{AccountDetail, Detail, Event, Severity},
};

pub use crate::analysis::model::IncidentType;

/// The process behind an audit, as the incident record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcSummary {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
}

/// One image of its ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AncestorSummary {
    pub pid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
}

/// An audit as an incident keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// seq of the audit event.
    pub event_seq: u64,
    pub time_ns: u64,
    pub draft: AuditDraft,
    pub process: ProcSummary,
    pub ancestry: Vec<AncestorSummary>,
}

impl AuditEntry {
    /// The entry for an audit raised by `trigger`, with up to `depth`
    /// ancestors.
    pub fn new(event_seq: u64, draft: AuditDraft, trigger: &Event, depth: usize) -> AuditEntry {
        let t = &trigger.record.task;
        AuditEntry {
            event_seq,
            time_ns: trigger.time_ns,
            draft,
            process: ProcSummary {
                pid: t.pid,
                ppid: t.ppid,
                uid: t.uid,
                comm: t.comm.to_string(),
                exe: trigger.exe().to_owned(),
                argv: trigger.argv().to_vec(),
            },
            ancestry: trigger
                .image
                .ancestors(depth)
                .map(|a| AncestorSummary {
                    pid: a.pid,
                    uid: a.uid,
                    exe: a.exe.to_string(),
                    argv: a.argv.to_vec(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub serial: u64,
    pub kind: IncidentType,
    pub severity: Severity,
    pub scope: Scope,
    pub container: Option<Arc<ContainerMeta>>,
    pub service: Option<Arc<str>>,
    pub hostname: String,
    pub model: Arc<str>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub audits: Vec<AuditEntry>,
    pub audit_count: u64,
    pub snapshot_id: u64,
    pub summary: String,
    pub account: Option<AccountDetail>,
}

/// Open incidents (those that can still be updated) and serials.
pub struct Incidents {
    /// (scope, type) → the incident open for it.
    open: HashMap<(Scope, IncidentType), Incident>,
    next_serial: u64,
    window_ns: u64,
    max_audits: usize,
}

/// What raising an audit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub serial: u64,
    /// A new incident: its snapshot is to be frozen.
    pub opened: bool,
}

impl Incidents {
    pub fn new(next_serial: u64, window_ns: u64, max_audits: usize) -> Self {
        Incidents {
            open: HashMap::new(),
            next_serial: next_serial.max(1),
            window_ns,
            max_audits,
        }
    }

    /// The serial the audit belongs to: the open incident of its type on
    /// the scope, or a new one.
    pub fn raise(&mut self, scope: &Scope, kind: IncidentType, now_ns: u64) -> Raised {
        let window = self.window_ns;
        let key = (scope.clone(), kind);
        if let Some(inc) = self.open.get(&key) {
            if now_ns.saturating_sub(inc.last_ns) < window {
                return Raised {
                    serial: inc.serial,
                    opened: false,
                };
            }
            self.open.remove(&key);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        Raised {
            serial,
            opened: true,
        }
    }

    /// Adds an audit raised by `trigger` to incident `serial` (created by
    /// the `raise` that returned it). Returns the incident as it now stands.
    pub fn add(
        &mut self,
        serial: u64,
        entry: AuditEntry,
        trigger: &Event,
        model: &Arc<str>,
        container: Option<Arc<ContainerMeta>>,
    ) -> &Incident {
        let kind = entry.draft.incident;
        let key = (trigger.scope.clone(), kind);
        let inc = self.open.entry(key).or_insert_with(|| Incident {
            serial,
            kind,
            severity: entry.draft.severity,
            scope: trigger.scope.clone(),
            container: None,
            service: trigger.unit.clone(),
            hostname: crate::util::host::hostname().to_owned(),
            model: model.clone(),
            first_ns: entry.time_ns,
            last_ns: entry.time_ns,
            audits: Vec::new(),
            audit_count: 0,
            snapshot_id: 0,
            summary: String::new(),
            account: None,
        });
        if container.is_some() {
            inc.container = container;
        }
        inc.severity = inc.severity.max(entry.draft.severity);
        inc.last_ns = inc.last_ns.max(entry.time_ns);
        inc.audit_count += 1;
        if let Detail::Account(a) = &trigger.record.detail {
            let a = (**a).clone();
            if a.interactive {
                inc.severity = inc.severity.max(Severity::Critical);
            }
            inc.account = Some(a);
        }
        if inc.audits.len() < self.max_audits {
            inc.audits.push(entry);
        }
        inc.summary = summary(inc);
        inc
    }

    /// The runtime named container `id`: its open incidents opened before
    /// show its pod and image, and its model's key. Returns those changed.
    pub fn name_container(
        &mut self,
        id: &str,
        meta: &Arc<ContainerMeta>,
        model: &Arc<str>,
    ) -> Vec<Incident> {
        let mut out = Vec::new();
        for inc in self.open.values_mut() {
            if inc.scope.container_id() != Some(id) || inc.container.as_ref() == Some(meta) {
                continue;
            }
            inc.container = Some(meta.clone());
            if !meta.sandbox {
                inc.model = model.clone();
            }
            inc.summary = summary(inc);
            out.push(inc.clone());
        }
        out
    }

    /// Records the snapshot frozen for an incident.
    pub fn set_snapshot(&mut self, serial: u64, snapshot_id: u64) -> Option<&Incident> {
        let inc = self.open.values_mut().find(|i| i.serial == serial)?;
        inc.snapshot_id = snapshot_id;
        Some(inc)
    }

    /// The open incidents, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    pub fn get(&self, serial: u64) -> Option<&Incident> {
        self.open.values().find(|i| i.serial == serial)
    }

    /// Restores an incident still within its window after a restart.
    pub fn restore(&mut self, inc: Incident) {
        self.next_serial = self.next_serial.max(inc.serial + 1);
        self.open.insert((inc.scope.clone(), inc.kind), inc);
    }

    /// Incidents that can still be updated.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn next_serial(&self) -> u64 {
        self.next_serial
    }

    /// Forgets incidents whose window has passed (they are in the store).
    pub fn expire(&mut self, now_ns: u64) {
        let window = self.window_ns;
        self.open
            .retain(|_, i| now_ns.saturating_sub(i.last_ns) < window);
    }
}

fn summary(inc: &Incident) -> String {
    let first = inc.audits.first().map_or("", |a| a.draft.message.as_str());
    let more = inc.audit_count.saturating_sub(1);
    let where_ = match (&inc.scope, &inc.container) {
        (Scope::Container(_), Some(m)) if !m.pod_name.is_empty() => {
            format!("pod {}/{} ({})", m.pod_namespace, m.pod_name, m.image)
        }
        (Scope::Container(id), _) => format!("container {}", &id[..id.len().min(12)]),
        (Scope::Host, _) => match &inc.service {
            Some(s) => format!("host {} ({s})", inc.hostname),
            None => format!("host {}", inc.hostname),
        },
    };
    if more > 0 {
        format!("{} on {where_}: {first} (+{more} more)", inc.kind.name())
    } else {
        format!("{} on {where_}: {first}", inc.kind.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, t: u64, sev: Severity) -> (AuditEntry, Event) {
        let ev = crate::event::test_support::event(t, 7, Detail::Exit { status: 0 });
        let draft = AuditDraft {
            section: "listen",
            rule: "model".into(),
            severity: sev,
            message: format!("new listen: tcp/{seq}"),
            item: format!("tcp/{seq}"),
            incident: IncidentType::BackdoorListener,
        };
        (AuditEntry::new(seq, draft, &ev, 4), ev)
    }

    #[test]
    fn same_type_same_scope_within_window_updates_the_open_incident() {
        let mut inc = Incidents::new(5, 100, 2);
        let model: Arc<str> = Arc::from("image:x");
        let kind = IncidentType::BackdoorListener;
        let r = inc.raise(&Scope::Host, kind, 10);
        assert_eq!(
            r,
            Raised {
                serial: 5,
                opened: true
            }
        );
        let (e, ev) = entry(1, 10, Severity::Medium);
        inc.add(5, e, &ev, &model, None);
        let r = inc.raise(&Scope::Host, kind, 50);
        assert_eq!(
            r,
            Raised {
                serial: 5,
                opened: false
            }
        );
        let (e, ev) = entry(2, 50, Severity::High);
        inc.add(5, e, &ev, &model, None);
        let (e, ev) = entry(3, 60, Severity::Low);
        let i = inc.add(5, e, &ev, &model, None);
        assert_eq!(i.audits[0].process.pid, 7);
        assert_eq!(i.audit_count, 3);
        assert_eq!(i.audits.len(), 2, "capped");
        assert_eq!(i.severity, Severity::High);
        assert_eq!((i.first_ns, i.last_ns), (10_000, 60_000));
        assert!(
            i.summary.starts_with("backdoor-listener on host ")
                && i.summary.ends_with(": new listen: tcp/1 (+2 more)"),
            "{}",
            i.summary
        );
        // Another type: another incident.
        let r = inc.raise(&Scope::Host, IncidentType::PortScan, 61);
        assert_eq!(r.serial, 6);
        // After the window: a new one.
        let r = inc.raise(&Scope::Host, kind, 60_200);
        assert_eq!(
            r,
            Raised {
                serial: 7,
                opened: true
            }
        );
        inc.expire(100_000);
        assert!(inc.get(5).is_none());
    }
}
