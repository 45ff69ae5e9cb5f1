//! Runtime models and incidents ↔ `fdr.v1` messages (also their stored
//! form).

use std::{collections::BTreeMap, sync::Arc};

use fdr_proto::v1 as pb;

use crate::event::wire::{
    account_from_pb, account_to_pb, container_to_pb, ns_of, severity_to_pb, timestamp,
};
use crate::{
    analysis::incidents::{AncestorSummary, AuditEntry, Incident, IncidentType, ProcSummary},
    analysis::model::{AuditDraft, Model, Section},
    attribution::containers::ContainerMeta,
    attribution::scope::Scope,
    event::{AccountDetail, Severity},
};

/// A model; `with_items` false for listings.
pub fn model_to_pb(m: &Model, now_ns: u64, with_items: bool) -> pb::Model {
    pb::Model {
        key: m.key.to_string(),
        state: if m.learning(now_ns) {
            pb::ModelState::Learning
        } else {
            pb::ModelState::Active
        } as i32,
        learning_since: Some(timestamp(m.learning_since)),
        learning_until: Some(timestamp(m.learning_until)),
        sections: if with_items {
            m.sections
                .iter()
                .map(|(s, items)| pb::ModelSection {
                    name: s.name().to_owned(),
                    items: {
                        // Sorted: stored and shown the same way every time.
                        let mut items: Vec<pb::ModelItem> = items
                            .iter()
                            .map(|(v, at)| pb::ModelItem {
                                value: v.clone(),
                                learned_at: Some(timestamp(*at)),
                            })
                            .collect();
                        items.sort_by(|a, b| a.value.cmp(&b.value));
                        items
                    },
                })
                .collect()
        } else {
            Vec::new()
        },
        item_count: m.item_count() as u64,
        anomalies: m.anomalies,
        next_cursor: String::new(),
    }
}

pub fn model_from_pb(p: &pb::Model) -> Model {
    let sections: BTreeMap<Section, std::collections::HashMap<String, u64>> = p
        .sections
        .iter()
        .filter_map(|s| {
            let section = Section::from_name(&s.name)?;
            let items = s
                .items
                .iter()
                .map(|i| (i.value.clone(), ns_of(i.learned_at.as_ref())))
                .collect();
            Some((section, items))
        })
        .collect();
    Model::restored(
        Arc::from(p.key.as_str()),
        ns_of(p.learning_since.as_ref()),
        ns_of(p.learning_until.as_ref()),
        sections,
        p.anomalies,
    )
}

pub fn audit_to_pb(a: &AuditEntry) -> pb::Audit {
    let p = &a.process;
    pb::Audit {
        event_seq: a.event_seq,
        time: Some(timestamp(a.time_ns)),
        section: a.draft.section.to_owned(),
        rule: a.draft.rule.clone(),
        severity: severity_to_pb(a.draft.severity) as i32,
        message: a.draft.message.clone(),
        item: a.draft.item.clone(),
        process: Some(pb::Process {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            argv: p.argv.clone(),
            ..Default::default()
        }),
        ancestry: a
            .ancestry
            .iter()
            .map(|x| pb::Ancestor {
                pid: x.pid,
                uid: x.uid,
                exe: x.exe.clone(),
                argv: x.argv.clone(),
            })
            .collect(),
    }
}

/// An account record as an incident lists it: with the account it
/// created or changed, from the command.
fn incident_account_pb(a: &AccountDetail) -> pb::AccountDetail {
    pb::AccountDetail {
        account: crate::analysis::incidents::account_name(&a.command).unwrap_or_default(),
        ..account_to_pb(a, None)
    }
}

/// An incident without its audits (`audits_kept` says how many the record
/// holds).
pub fn incident_header_pb(i: &Incident) -> pb::Incident {
    pb::Incident {
        serial: i.serial,
        r#type: i.kind.name().to_owned(),
        severity: severity_to_pb(i.severity) as i32,
        scope: i.scope.key(),
        container: match (&i.scope, &i.container) {
            (_, Some(m)) => Some(container_to_pb(m)),
            (Scope::Container(id), None) => Some(pb::ContainerInfo {
                id: id.to_string(),
                ..Default::default()
            }),
            (Scope::Host, None) => None,
        },
        hostname: i.hostname.clone(),
        service: i.service.as_deref().unwrap_or_default().to_owned(),
        model: i.model.to_string(),
        first: Some(timestamp(i.first_ns)),
        last: Some(timestamp(i.last_ns)),
        audits: Vec::new(),
        audit_count: i.audit_count,
        snapshot_id: i.snapshot_id,
        summary: i.summary.clone(),
        account: i.account.as_ref().map(incident_account_pb),
        audits_offset: 0,
        audits_kept: i.audits.len() as u64,
        next_audit_offset: 0,
        update: false,
        accounts: i.accounts.iter().map(incident_account_pb).collect(),
        account_count: i.account_count,
        // A console sets them.
        node: String::new(),
        agent_instance: String::new(),
        agent_serial: 0,
        snapshot_sha256: String::new(),
    }
}

/// The whole incident, every kept audit included: its stored form.
pub fn incident_to_pb(i: &Incident) -> pb::Incident {
    pb::Incident {
        audits: i.audits.iter().map(audit_to_pb).collect(),
        ..incident_header_pb(i)
    }
}

/// Bytes an audit adds to an `Incident` message.
pub fn audit_wire_len(a: &pb::Audit) -> usize {
    use prost::Message;
    let n = a.encoded_len();
    1 + prost::encoding::encoded_len_varint(n as u64) + n
}

/// Which audits a page holds: from `offset`, at most `limit` and about
/// `max_bytes` of them (at least one when any is left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPage {
    pub offset: usize,
    pub limit: usize,
    pub max_bytes: usize,
}

impl AuditPage {
    /// The page of `audits` (the record's, in order), and where the next
    /// starts (0: none). `convert` is called only for audits in the page.
    fn cut<T>(&self, audits: &[T], convert: impl Fn(&T) -> pb::Audit) -> (Vec<pb::Audit>, u64) {
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = self.offset.min(audits.len());
        for (n, a) in audits[start..].iter().enumerate() {
            if out.len() >= self.limit {
                return (out, (start + n) as u64);
            }
            let pb = convert(a);
            let size = audit_wire_len(&pb);
            if !out.is_empty() && bytes + size > self.max_bytes {
                return (out, (start + n) as u64);
            }
            bytes += size;
            out.push(pb);
        }
        (out, 0)
    }
}

/// An incident with one page of its audits, converted from memory (only
/// the page's audits are).
pub fn incident_page_pb(i: &Incident, page: AuditPage) -> pb::Incident {
    let (audits, next) = page.cut(&i.audits, audit_to_pb);
    pb::Incident {
        audits,
        audits_offset: page.offset.min(i.audits.len()) as u64,
        next_audit_offset: next,
        ..incident_header_pb(i)
    }
}

/// A stored incident (all its kept audits) cut to one page of them.
pub fn stored_page_pb(mut p: pb::Incident, page: AuditPage) -> pb::Incident {
    let all = std::mem::take(&mut p.audits);
    // Records stored before `audits_kept` existed hold every kept audit.
    p.audits_kept = all.len() as u64;
    let (audits, next) = page.cut(&all, |a| {
        // Moved would be cheaper; a page is small next to the record.
        a.clone()
    });
    p.audits = audits;
    p.audits_offset = page.offset.min(all.len()) as u64;
    p.next_audit_offset = next;
    if p.accounts.is_empty() {
        // Stored before every record was listed: the one it kept.
        p.accounts.extend(p.account.clone());
        p.account_count = p.account_count.max(p.accounts.len() as u64);
    }
    p
}

/// Section names as the audit drafts hold them.
fn static_section(s: &str) -> &'static str {
    Section::from_name(s).map_or("rule", Section::name)
}

/// An incident read back from the store (to keep updating it after a
/// restart). `None` when the record is not one this build understands.
pub fn incident_from_pb(p: &pb::Incident) -> Option<Incident> {
    let kind = IncidentType::from_name(&p.r#type)?;
    let scope = Scope::from_key(&p.scope)?;
    let audits = p
        .audits
        .iter()
        .map(|a| {
            let proc_ = a.process.clone().unwrap_or_default();
            AuditEntry {
                event_seq: a.event_seq,
                time_ns: ns_of(a.time.as_ref()),
                draft: AuditDraft {
                    section: static_section(&a.section),
                    rule: a.rule.clone(),
                    severity: Severity::from_raw(a.severity).unwrap_or(Severity::Low),
                    message: a.message.clone(),
                    item: a.item.clone(),
                    incident: kind,
                },
                process: ProcSummary {
                    pid: proc_.pid,
                    ppid: proc_.ppid,
                    uid: proc_.uid,
                    comm: proc_.comm,
                    exe: proc_.exe,
                    argv: proc_.argv,
                },
                ancestry: a
                    .ancestry
                    .iter()
                    .map(|x| AncestorSummary {
                        pid: x.pid,
                        uid: x.uid,
                        exe: x.exe.clone(),
                        argv: x.argv.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    Some(Incident {
        serial: p.serial,
        kind,
        severity: Severity::from_raw(p.severity).unwrap_or(Severity::Low),
        scope,
        container: p
            .container
            .as_ref()
            .filter(|c| !c.name.is_empty() || !c.image.is_empty())
            .map(|c| {
                Arc::new(ContainerMeta {
                    id: Arc::from(c.id.as_str()),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_digest: c.image_digest.clone(),
                    pod_name: c.pod_name.clone(),
                    pod_namespace: c.pod_namespace.clone(),
                    pod_uid: c.pod_uid.clone(),
                    labels: c.labels.clone().into_iter().collect(),
                    runtime: c.runtime.clone(),
                    sandbox: c.sandbox,
                    ..Default::default()
                })
            }),
        service: (!p.service.is_empty()).then(|| Arc::from(p.service.as_str())),
        hostname: p.hostname.clone(),
        model: Arc::from(p.model.as_str()),
        first_ns: ns_of(p.first.as_ref()),
        last_ns: ns_of(p.last.as_ref()),
        audits,
        audit_count: p.audit_count,
        snapshot_id: p.snapshot_id,
        summary: p.summary.clone(),
        account: p.account.as_ref().map(account_from_pb),
        accounts: if p.accounts.is_empty() {
            // Stored before every record was listed: the one it kept.
            p.account.iter().map(account_from_pb).collect()
        } else {
            p.accounts.iter().map(account_from_pb).collect()
        },
        account_count: p.account_count.max(p.account.is_some() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_round_trip() {
        let mut sections = BTreeMap::new();
        sections.insert(
            Section::Exec,
            [("/bin/sh -> /bin/true".to_string(), 5u64)]
                .into_iter()
                .collect(),
        );
        let m = Model::restored(Arc::from("image:x"), 1, 10, sections, 3);
        let pb = model_to_pb(&m, 5, true);
        assert_eq!(pb.state, pb::ModelState::Learning as i32);
        assert_eq!(pb.item_count, 1);
        assert_eq!(model_from_pb(&pb), m);
        assert_eq!(
            model_to_pb(&m, 11, false).state,
            pb::ModelState::Active as i32
        );
    }

    #[test]
    fn incidents_round_trip() {
        let ev = crate::event::test_support::event(9, 7, crate::event::Detail::Exit { status: 0 });
        let draft = AuditDraft {
            section: "listen",
            rule: "model".into(),
            severity: Severity::High,
            message: "new listen".into(),
            item: "tcp/1".into(),
            incident: IncidentType::BackdoorListener,
        };
        let mut inc = crate::analysis::incidents::Incidents::new(1, 100, 10);
        let r = inc.raise(&Scope::Host, IncidentType::BackdoorListener, 9);
        let i = inc
            .add(
                r.serial,
                AuditEntry::new(4, draft, &ev, 4),
                &ev,
                &Arc::from("exe:/bin/t"),
                None,
            )
            .clone();
        let back = incident_from_pb(&incident_to_pb(&i)).expect("decodes");
        assert_eq!(back, i);
    }

    fn incident_with(audits: u64) -> Incident {
        let mut inc = crate::analysis::incidents::Incidents::new(1, u64::MAX, 100_000);
        let r = inc.raise(&Scope::Host, IncidentType::BackdoorListener, 9);
        let mut last = None;
        for n in 0..audits {
            let ev = crate::event::test_support::event(
                n + 1,
                7,
                crate::event::Detail::Exit { status: 0 },
            );
            let draft = AuditDraft {
                section: "listen",
                rule: "model".into(),
                severity: Severity::High,
                message: format!("new listen {n}"),
                item: "x".repeat(1000),
                incident: IncidentType::BackdoorListener,
            };
            last = Some(
                inc.add(
                    r.serial,
                    AuditEntry::new(n, draft, &ev, 4),
                    &ev,
                    &Arc::from("exe:/bin/t"),
                    None,
                )
                .clone(),
            );
        }
        last.expect("audits")
    }

    #[test]
    fn audit_pages_follow_each_other_within_count_and_bytes() {
        let i = incident_with(50);
        // By count: 20, 20, 10, each once, in order.
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let p = incident_page_pb(
                &i,
                AuditPage {
                    offset,
                    limit: 20,
                    max_bytes: usize::MAX,
                },
            );
            assert_eq!(p.audits_offset, offset as u64);
            assert_eq!((p.audits_kept, p.audit_count), (50, 50));
            seen.extend(p.audits.iter().map(|a| a.event_seq));
            if p.next_audit_offset == 0 {
                break;
            }
            offset = p.next_audit_offset as usize;
        }
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        // By bytes: about 1 KB each, 5 KB pages.
        let p = incident_page_pb(
            &i,
            AuditPage {
                offset: 0,
                limit: 1000,
                max_bytes: 5000,
            },
        );
        let bytes: usize = p.audits.iter().map(audit_wire_len).sum();
        assert!(
            bytes <= 5000 && p.audits.len() >= 4,
            "{bytes} {}",
            p.audits.len()
        );
        assert_eq!(p.next_audit_offset, p.audits.len() as u64);
        // One audit over the budget still makes a page.
        let p = incident_page_pb(
            &i,
            AuditPage {
                offset: 49,
                limit: 10,
                max_bytes: 10,
            },
        );
        assert_eq!((p.audits.len(), p.next_audit_offset), (1, 0));
        // Past the end: an empty page.
        let p = incident_page_pb(
            &i,
            AuditPage {
                offset: 80,
                limit: 10,
                max_bytes: 10,
            },
        );
        assert!(p.audits.is_empty() && p.next_audit_offset == 0);
        // The stored form pages the same way.
        let stored = stored_page_pb(
            incident_to_pb(&i),
            AuditPage {
                offset: 20,
                limit: 20,
                max_bytes: usize::MAX,
            },
        );
        let mem = incident_page_pb(
            &i,
            AuditPage {
                offset: 20,
                limit: 20,
                max_bytes: usize::MAX,
            },
        );
        assert_eq!(stored, mem);
    }

    #[test]
    fn an_old_record_with_one_account_lists_it() {
        let mut p = incident_to_pb(&incident_with(1));
        p.account = Some(pb::AccountDetail {
            user: "root".into(),
            command: vec!["useradd".into(), "x".into()],
            ..Default::default()
        });
        p.accounts.clear();
        p.account_count = 0;
        let back = incident_from_pb(&p).expect("decodes");
        assert_eq!((back.accounts.len(), back.account_count), (1, 1));
        let page = stored_page_pb(
            p,
            AuditPage {
                offset: 0,
                limit: 1,
                max_bytes: usize::MAX,
            },
        );
        assert_eq!(page.accounts.len(), 1);
        assert_eq!(incident_header_pb(&back).accounts[0].account, "x");
    }
}
