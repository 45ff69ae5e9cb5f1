//! The records an incident write queues: `incident opened` (none stored
//! before) or `incident updated`, and one `audit` per audit added since the
//! stored version. The same for the agent (its serials) and the console
//! (its fleet serials).

use fdr_proto::v1 as pb;
use pb::outbox_record::Kind;

/// Audit records one incident write queues at most.
pub const MAX_AUDIT_RECORDS: usize = 1000;

/// The incident as a record carries it: its latest audit only (it names the
/// process), and the latest account record only.
fn slim(inc: &pb::Incident, keep_last_audit: bool) -> pb::Incident {
    let mut out = inc.clone();
    let last = if keep_last_audit {
        out.audits.pop()
    } else {
        None
    };
    out.audits = last.into_iter().collect();
    out.accounts = Vec::new();
    out
}

/// The records for storing `new` over `prev` (the stored version, if any).
/// `sha256`: the incident's snapshot hash when the writer knows it ("").
pub fn incident_records(
    prev: Option<&pb::Incident>,
    new: &pb::Incident,
    sha256: &str,
) -> Vec<pb::OutboxRecord> {
    let mut out = Vec::new();
    let kind = if prev.is_some() {
        Kind::IncidentUpdated
    } else {
        Kind::IncidentOpened
    };
    out.push(pb::OutboxRecord {
        kind: kind as i32,
        incident: Some(slim(new, true)),
        snapshot_sha256: sha256.to_owned(),
        ..Default::default()
    });
    let before = prev.map_or(0, |p| p.audit_count);
    let added = new.audit_count.saturating_sub(before) as usize;
    if added > 0 {
        let skip = new.audits.len().saturating_sub(added);
        // An audit's identity (the stored version's are not sent again).
        fn key(a: &pb::Audit) -> (u64, &str, Option<prost_types::Timestamp>) {
            (a.event_seq, a.rule.as_str(), a.time)
        }
        let seen: std::collections::HashSet<_> = prev
            .map(|p| p.audits.iter().map(key).collect())
            .unwrap_or_default();
        let bare = slim(new, false);
        let mut fresh = new
            .audits
            .iter()
            .skip(skip)
            .filter(|a| !seen.contains(&key(a)));
        for a in fresh.by_ref().take(MAX_AUDIT_RECORDS) {
            out.push(pb::OutboxRecord {
                kind: Kind::Audit as i32,
                incident: Some(bare.clone()),
                audit: Some(a.clone()),
                snapshot_sha256: sha256.to_owned(),
                ..Default::default()
            });
        }
        // One write that adds more audits than that (a console catching
        // up with a huge incident) exports the first ones and says, in a
        // gap record, how many it did not.
        let (mut rest, mut first_t, mut last_t) = (0u64, None, None);
        for a in fresh {
            rest += 1;
            first_t = first_t.or(a.time);
            last_t = a.time.or(last_t);
        }
        if rest > 0 {
            out.push(pb::OutboxRecord {
                kind: Kind::Gap as i32,
                incident: Some(bare),
                gap: Some(pb::OutboxGap {
                    audits: rest,
                    first_time: first_t,
                    last_time: last_t,
                    reason: format!(
                        "incident {}: more than {MAX_AUDIT_RECORDS} audits added at once; \
                         the rest are in the incident itself",
                        new.serial
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(seq: u64) -> pb::Audit {
        pb::Audit {
            event_seq: seq,
            rule: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn opened_then_updated_with_the_new_audits_only() {
        let mut inc = pb::Incident {
            serial: 4,
            audit_count: 1,
            audits: vec![audit(1)],
            accounts: vec![pb::AccountDetail::default(); 3],
            ..Default::default()
        };
        let recs = incident_records(None, &inc, "");
        let kinds: Vec<Kind> = recs.iter().map(|r| r.kind()).collect();
        assert_eq!(kinds, [Kind::IncidentOpened, Kind::Audit]);
        let carried = recs[0].incident.as_ref().unwrap();
        assert!(carried.accounts.is_empty() && carried.audits.len() == 1);
        let prev = inc.clone();
        inc.audit_count = 3;
        inc.audits.extend([audit(2), audit(3)]);
        let recs = incident_records(Some(&prev), &inc, "");
        let kinds: Vec<Kind> = recs.iter().map(|r| r.kind()).collect();
        assert_eq!(kinds, [Kind::IncidentUpdated, Kind::Audit, Kind::Audit]);
        let seqs: Vec<u64> = recs[1..]
            .iter()
            .map(|r| r.audit.as_ref().unwrap().event_seq)
            .collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(recs[0].incident.as_ref().unwrap().audits[0].event_seq, 3);
        // Only a change of other fields: one update, no audit.
        let recs = incident_records(Some(&inc), &inc, "");
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn a_huge_write_exports_the_first_audits_and_a_gap_for_the_rest() {
        let n = MAX_AUDIT_RECORDS as u64 + 250;
        let inc = pb::Incident {
            serial: 9,
            audit_count: n,
            audits: (1..=n).map(audit).collect(),
            ..Default::default()
        };
        let recs = incident_records(None, &inc, "");
        assert_eq!(recs.len(), 1 + MAX_AUDIT_RECORDS + 1);
        assert_eq!(recs[1].audit.as_ref().unwrap().event_seq, 1);
        let gap = recs.last().unwrap();
        assert_eq!(gap.kind(), Kind::Gap);
        assert_eq!(gap.gap.as_ref().unwrap().audits, 250);
    }
}
