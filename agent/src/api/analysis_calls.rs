//! The model and incident calls of `fdr.v1.FlightRecorder`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use fdr_proto::v1 as pb;
use tokio::sync::{
    broadcast::error::{RecvError, TryRecvError},
    mpsc, watch,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{
    blocking,
    paging::{model_page, page, page_limit, MAX_PAGE_ENTRIES},
    query::MAX_PAGE_BYTES,
    store_status,
};
use crate::{
    analysis::incidents::{Incident, Incidents},
    analysis::persist::incidents as persist,
    analysis::wire::{incident_page_pb, model_to_pb, stored_page_pb, AuditPage},
    api::state::{lock, State},
};

use crate::util::now_ns;

/// A page of models by key, after `cursor` (see [`super::paging`]).
pub fn list_models(state: &State, req: &pb::ListModelsRequest) -> pb::ListModelsResponse {
    let now = now_ns();
    let models = lock(&state.models);
    let after = (!req.cursor.is_empty()).then_some(req.cursor.as_str());
    let (models, next) = page(
        models.all(),
        after.as_ref(),
        page_limit(req.limit),
        |m| &*m.key,
        |m| model_to_pb(m, now, false),
    );
    pb::ListModelsResponse {
        models,
        next_cursor: next.map(str::to_owned).unwrap_or_default(),
    }
}

/// The one model whose key is `key`, or the only one containing it.
fn find_key(state: &State, key: &str) -> Result<Arc<str>, Status> {
    let models = lock(&state.models);
    if let Some(m) = models.get(key) {
        return Ok(m.key.clone());
    }
    let hits: Vec<Arc<str>> = models
        .all()
        .filter(|m| m.key.contains(key))
        .map(|m| m.key.clone())
        .collect();
    match hits.len() {
        1 => Ok(hits[0].clone()),
        0 => Err(Status::not_found(format!(
            "no model matches {:?}",
            crate::util::clip(key)
        ))),
        _ => {
            let mut names: Vec<&str> = hits.iter().map(|k| &**k).collect();
            names.sort();
            let more = names.len().saturating_sub(10);
            names.truncate(10);
            Err(Status::invalid_argument(format!(
                "{:?} matches several models: {}{}",
                crate::util::clip(key),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )))
        }
    }
}

pub fn get_model(state: &State, req: &pb::GetModelRequest) -> Result<pb::Model, Status> {
    let key = find_key(state, &req.key)?;
    let models = lock(&state.models);
    let m = models
        .get(&key)
        .ok_or_else(|| Status::not_found(format!("no model {key:?}")))?;
    model_page(m, now_ns(), &req.cursor, page_limit(req.limit))
}

pub fn relearn_model(
    state: &State,
    req: &pb::RelearnModelRequest,
) -> Result<pb::RelearnModelResponse, Status> {
    let keys: Vec<Arc<str>> = if req.all {
        lock(&state.models).all().map(|m| m.key.clone()).collect()
    } else {
        vec![find_key(state, &req.key)?]
    };
    let now = now_ns();
    let mut models = lock(&state.models);
    let mut done: Vec<String> = keys
        .iter()
        .filter(|k| models.relearn(k, now))
        .map(|k| k.to_string())
        .collect();
    done.sort();
    let count = done.len() as u64;
    tracing::info!(count, first = ?done.iter().take(20).collect::<Vec<_>>(), "models relearning");
    // Within a message: the first keys (every model may be many).
    let mut bytes = 0;
    let keep = done
        .iter()
        .take(MAX_PAGE_ENTRIES)
        .take_while(|k| {
            bytes += k.len() + 8;
            bytes <= MAX_PAGE_BYTES
        })
        .count();
    done.truncate(keep.max(1).min(done.len()));
    Ok(pb::RelearnModelResponse { keys: done, count })
}

/// Audits per incident in a `ListIncidents` answer and in a stream's first
/// message for an incident, unless asked otherwise; and at most.
pub const FIRST_AUDITS: usize = 100;
pub const MAX_FIRST_AUDITS: usize = 1_000;
/// Audits in one `GetIncident` page at most.
pub const MAX_PAGE_AUDITS: usize = 10_000;
/// Audits in one stream update at most (more follow in the next message),
/// and their bytes.
/// Incidents a ListIncidents call lists at most.
const MAX_LISTED_INCIDENTS: usize = 1000;
const UPDATE_AUDITS: usize = 500;
const UPDATE_BYTES: usize = 1024 * 1024;
/// A stream update that only moves counts and the last time is sent at
/// most this often per incident.
const COUNT_UPDATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn first_audits(asked: u32) -> usize {
    match asked {
        0 => FIRST_AUDITS,
        n => (n as usize).min(MAX_FIRST_AUDITS),
    }
}

/// Incidents above `after_serial`, from the store (read on the blocking
/// pool), with the open ones as they are in memory now (an incident just
/// opened may still wait for the committer: it is added from memory).
/// Each holds its first `audit_limit` audits; the answer stops at about
/// [`MAX_PAGE_BYTES`] (at least one incident).
pub async fn list_incidents(
    state: &Arc<State>,
    req: &pb::ListIncidentsRequest,
) -> Result<pb::ListIncidentsResponse, Status> {
    // Stored records are decoded whole before their first page is cut:
    // a bounded number a call.
    let limit = match req.limit {
        0 => 100,
        n => (n as usize).min(MAX_LISTED_INCIDENTS),
    };
    let first = AuditPage {
        offset: 0,
        limit: first_audits(req.audit_limit),
        max_bytes: MAX_PAGE_BYTES / 4,
    };
    let after = req.after_serial;
    let st = state.clone();
    let mut incidents = blocking(move || {
        persist::after(&st.store, after, limit)
            .map(|list| {
                list.into_iter()
                    .map(|i| stored_page_pb(i, first))
                    .collect::<Vec<_>>()
            })
            .map_err(store_status)
    })
    .await?;
    // Open incidents change in memory first: show them as they are now.
    {
        let open = lock(&state.incidents);
        for i in &mut incidents {
            if let Some(cur) = open.get(i.serial) {
                *i = incident_page_pb(cur, first);
            }
        }
        // Open ones not stored yet (queued while the disk is slow or full).
        let stored: std::collections::HashSet<u64> = incidents.iter().map(|i| i.serial).collect();
        let full = incidents.len() >= limit;
        let last = incidents.last().map_or(u64::MAX, |i| i.serial);
        for cur in open.all() {
            if cur.serial > after && !stored.contains(&cur.serial) && (!full || cur.serial < last) {
                incidents.push(incident_page_pb(cur, first));
            }
        }
    }
    incidents.sort_by_key(|i| i.serial);
    incidents.truncate(limit);
    let st = state.clone();
    let mut incidents = blocking(move || {
        snapshot_hashes(&st, &mut incidents);
        Ok(incidents)
    })
    .await?;
    // Within the message budget: the client continues from last_serial.
    super::paging::cut_by_bytes(&mut incidents, MAX_PAGE_BYTES);
    let last_serial = incidents.last().map_or(req.after_serial, |i| i.serial);
    Ok(pb::ListIncidentsResponse {
        incidents,
        last_serial,
    })
}

/// One incident with a page of its audits.
pub async fn get_incident(
    state: &Arc<State>,
    req: &pb::GetIncidentRequest,
) -> Result<pb::Incident, Status> {
    let page = AuditPage {
        offset: usize::try_from(req.audit_offset).unwrap_or(usize::MAX),
        limit: match req.audit_limit {
            0 => MAX_PAGE_AUDITS,
            n => (n as usize).min(MAX_PAGE_AUDITS),
        },
        max_bytes: MAX_PAGE_BYTES,
    };
    let open = lock(&state.incidents)
        .get(req.serial)
        .map(|cur| incident_page_pb(cur, page));
    let serial = req.serial;
    let st = state.clone();
    blocking(move || {
        let mut inc = match open {
            Some(i) => Some(i),
            None => persist::get(&st.store, serial)
                .map(|i| i.map(|i| stored_page_pb(i, page)))
                .map_err(store_status)?,
        };
        if let Some(i) = inc.as_mut() {
            snapshot_hashes(&st, std::slice::from_mut(i));
        }
        Ok(inc)
    })
    .await?
    .ok_or_else(|| Status::not_found(format!("no incident #{serial}")))
}

/// Fills in each incident's snapshot hash from the store (a committed
/// snapshot's seal); blocking.
fn snapshot_hashes(state: &State, incidents: &mut [pb::Incident]) {
    for i in incidents.iter_mut().filter(|i| i.snapshot_id != 0) {
        match state.store.info(i.snapshot_id) {
            Ok(Some(info)) => i.snapshot_sha256 = info.sha256,
            Ok(None) => {}
            Err(err) => tracing::debug!(%err, id = i.snapshot_id, "a snapshot's hash"),
        }
    }
}

pub type IncidentStream = ReceiverStream<Result<pb::Incident, Status>>;

/// What a stream has sent of one incident.
#[derive(Debug, Clone)]
struct Sent {
    /// The next kept audit to send.
    next_audit: usize,
    audit_count: u64,
    last: Option<prost_types::Timestamp>,
    severity: i32,
    snapshot_id: u64,
    account_count: u64,
    sent_at: std::time::Instant,
}

/// One stream's view of the incidents it has sent: turns an incident as
/// it now stands into the message that carries what changed.
#[derive(Default)]
struct Deltas {
    sent: HashMap<u64, Sent>,
    first: usize,
}

/// What [`Deltas::message`] decided.
#[derive(Debug)]
enum Delta {
    Send(Box<pb::Incident>),
    /// Nothing new.
    Nothing,
    /// Only counts moved, and an update went out less than
    /// [`COUNT_UPDATE_EVERY`] ago: ask again later.
    Later,
}

impl Deltas {
    fn new(first: usize) -> Self {
        Deltas {
            sent: HashMap::new(),
            first,
        }
    }

    /// Notes a first message sent from the backlog: what its first page
    /// left out is read with GetIncident.
    fn note_first(&mut self, p: &pb::Incident, now: std::time::Instant) {
        self.note(p, p.audits_kept as usize, now);
    }

    /// Notes message `p` sent, the next audit to send being `next_audit`.
    fn note(&mut self, p: &pb::Incident, next_audit: usize, now: std::time::Instant) {
        self.sent.insert(
            p.serial,
            Sent {
                next_audit,
                audit_count: p.audit_count,
                last: p.last,
                severity: p.severity,
                snapshot_id: p.snapshot_id,
                account_count: p.account_count,
                sent_at: now,
            },
        );
    }

    /// The message for incident `i` as it stands now. `more` is set when
    /// audits are left for another message.
    fn message(&mut self, i: &Incident, now: std::time::Instant, more: &mut bool) -> Delta {
        let Some(prev) = self.sent.get(&i.serial).cloned() else {
            let p = incident_page_pb(
                i,
                AuditPage {
                    offset: 0,
                    limit: self.first,
                    max_bytes: UPDATE_BYTES,
                },
            );
            // An incident that opened while streaming: every audit is sent,
            // the ones past its first page in the next messages.
            *more = p.next_audit_offset != 0;
            self.note(&p, p.audits.len(), now);
            return Delta::Send(Box::new(p));
        };
        let page = AuditPage {
            offset: prev.next_audit,
            limit: UPDATE_AUDITS,
            max_bytes: UPDATE_BYTES,
        };
        let mut p = incident_page_pb(i, page);
        let new_audits = !p.audits.is_empty();
        let accounts = p.account_count != prev.account_count;
        let marked = p.severity != prev.severity || p.snapshot_id != prev.snapshot_id;
        let counts = p.audit_count != prev.audit_count || p.last != prev.last;
        if !new_audits && !accounts && !marked {
            if !counts {
                return Delta::Nothing;
            }
            if now.duration_since(prev.sent_at) < COUNT_UPDATE_EVERY {
                return Delta::Later;
            }
        }
        *more = p.next_audit_offset != 0;
        if !accounts {
            p.accounts.clear();
        }
        p.update = true;
        self.note(&p, prev.next_audit + p.audits.len(), now);
        Delta::Send(Box::new(p))
    }

    /// Forgets incidents no longer open once many are remembered.
    fn trim(&mut self, open: &Incidents) {
        if self.sent.len() > 4096 {
            self.sent.retain(|s, _| open.get(*s).is_some());
        }
    }
}

/// Stored incidents after `after_serial` (each with its first page of
/// audits), then what changes: an incident opened after is sent whole
/// (its first page), an update carries only what changed since the
/// previous message for it (see [`Deltas`]).
pub async fn stream_incidents(
    state: Arc<State>,
    req: &pb::StreamIncidentsRequest,
    mut stop: watch::Receiver<bool>,
) -> Result<IncidentStream, Status> {
    // Subscribe first: an incident changed meanwhile is in one or the
    // other (or both: the deltas skip what was sent).
    let mut live = state.incident_live.subscribe();
    let first = first_audits(req.audit_limit);
    let (tx, rx) = mpsc::channel(64);
    let after = req.after_serial;
    let all = req.all_updates;
    tokio::spawn(async move {
        let run = async move {
            let mut deltas = Deltas::new(first);
            // The backlog, a few incidents at a time (each stored record
            // is decoded whole before its first page is cut).
            let mut from = after;
            loop {
                let page = match list_incidents(
                    &state,
                    &pb::ListIncidentsRequest {
                        after_serial: from,
                        limit: 10,
                        audit_limit: first as u32,
                    },
                )
                .await
                {
                    Ok(p) => p,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if page.incidents.is_empty() || page.last_serial <= from {
                    break;
                }
                from = page.last_serial;
                for i in page.incidents {
                    deltas.note_first(&i, std::time::Instant::now());
                    if tx.send(Ok(i)).await.is_err() {
                        return;
                    }
                }
            }
            // Incidents changed and not sent yet, with their latest header
            // (used when the incident has left memory meanwhile).
            let mut dirty: BTreeMap<u64, Option<Arc<Incident>>> = BTreeMap::new();
            let mut busy = false;
            loop {
                // Wait for a change (or for deferred count updates) unless
                // audits are left to send.
                let got = if !busy {
                    let wait = async {
                        if dirty.is_empty() {
                            live.recv().await.map(Some)
                        } else {
                            tokio::select! {
                                r = live.recv() => r.map(Some),
                                _ = tokio::time::sleep(COUNT_UPDATE_EVERY) => Ok(None),
                            }
                        }
                    };
                    wait.await
                } else {
                    Ok(None)
                };
                let mut lagged = false;
                match got {
                    // With `all_updates`, any incident that changes: one
                    // opened before `after` and still open (more audits,
                    // its snapshot) is sent whole the first time.
                    Ok(Some(h)) => {
                        if h.serial > after || all {
                            dirty.insert(h.serial, Some(h));
                        }
                    }
                    Ok(None) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "incident stream: resynchronising");
                        lagged = true;
                    }
                    Err(RecvError::Closed) => return,
                }
                // Everything pending now, in one pass.
                for _ in 0..4096 {
                    match live.try_recv() {
                        Ok(h) if h.serial > after || all => {
                            dirty.insert(h.serial, Some(h));
                        }
                        Ok(_) => {}
                        Err(TryRecvError::Lagged(_)) => lagged = true,
                        Err(_) => break,
                    }
                }
                let now = std::time::Instant::now();
                let mut out = Vec::new();
                busy = false;
                {
                    let open = lock(&state.incidents);
                    if lagged {
                        // Notices were lost: every open incident is looked at.
                        for i in open.all().filter(|i| i.serial > after || all) {
                            dirty.entry(i.serial).or_insert(None);
                        }
                    }
                    let serials: Vec<u64> = dirty.keys().copied().collect();
                    for serial in serials {
                        let mut more = false;
                        let d = match open.get(serial) {
                            Some(i) => deltas.message(i, now, &mut more),
                            None => match dirty.get(&serial).cloned().flatten() {
                                // Gone from memory (past its window): its
                                // header as last announced.
                                Some(h) => deltas.message(&h, now, &mut more),
                                None => Delta::Nothing,
                            },
                        };
                        match d {
                            Delta::Send(p) => {
                                out.push(*p);
                                if more {
                                    busy = true;
                                } else {
                                    dirty.remove(&serial);
                                }
                            }
                            Delta::Nothing => {
                                dirty.remove(&serial);
                            }
                            Delta::Later => {}
                        }
                        if out.len() >= 64 {
                            busy = true;
                            break;
                        }
                    }
                    deltas.trim(&open);
                }
                for p in out {
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::select! {
            _ = run => {}
            _ = stop.wait_for(|&v| v) => {}
        }
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::incidents::{AuditEntry, IncidentType},
        analysis::model::AuditDraft,
        attribution::scope::Scope,
        event::{Detail, Severity},
    };

    fn add(incs: &mut Incidents, serial: u64, n: u64, severity: Severity) {
        let ev = crate::event::test_support::event(n + 1, 7, Detail::Exit { status: 0 });
        let draft = AuditDraft {
            section: "listen",
            rule: "model".into(),
            severity,
            message: format!("new listen {n}"),
            item: format!("tcp/{n}"),
            incident: IncidentType::BackdoorListener,
        };
        incs.add(
            serial,
            AuditEntry::new(n, draft, &ev, 4),
            &ev,
            &Arc::from("exe:/bin/t"),
            None,
        );
    }

    fn sent(d: Delta) -> pb::Incident {
        match d {
            Delta::Send(p) => *p,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Each audit goes out once: the first message has the first page,
    /// updates the audits added since, in pages; count-only changes are
    /// paced; severity and snapshot changes go out at once.
    #[test]
    fn stream_deltas_send_each_audit_once() {
        let mut incs = Incidents::new(1, u64::MAX, 10_000);
        let r = incs.raise(&Scope::Host, IncidentType::BackdoorListener, 1);
        add(&mut incs, r.serial, 0, Severity::Low);
        let mut d = Deltas::new(100);
        let t0 = std::time::Instant::now();
        let mut more = false;
        let first = sent(d.message(incs.get(r.serial).unwrap(), t0, &mut more));
        assert!(!first.update && !more);
        assert_eq!(first.audits.len(), 1);
        let mut seen: Vec<u64> = first.audits.iter().map(|a| a.event_seq).collect();
        assert!(matches!(
            d.message(incs.get(r.serial).unwrap(), t0, &mut more),
            Delta::Nothing
        ));
        for n in 1..1200 {
            add(&mut incs, r.serial, n, Severity::Low);
        }
        // 1199 new audits: pages of UPDATE_AUDITS.
        loop {
            let mut more = false;
            let p = sent(d.message(incs.get(r.serial).unwrap(), t0, &mut more));
            assert!(p.update);
            assert!(p.audits.len() <= UPDATE_AUDITS);
            assert_eq!(p.audits_offset as usize, seen.len());
            assert!(p.accounts.is_empty());
            seen.extend(p.audits.iter().map(|a| a.event_seq));
            if !more {
                break;
            }
        }
        assert_eq!(seen, (0..1200).collect::<Vec<_>>());
        // Counts only (the record is full): paced.
        let mut capped = Incidents::new(1, u64::MAX, 2);
        let r2 = capped.raise(&Scope::Host, IncidentType::BackdoorListener, 1);
        add(&mut capped, r2.serial, 0, Severity::Low);
        add(&mut capped, r2.serial, 1, Severity::Low);
        let mut d = Deltas::new(100);
        assert_eq!(
            sent(d.message(capped.get(r2.serial).unwrap(), t0, &mut more))
                .audits
                .len(),
            2
        );
        add(&mut capped, r2.serial, 2, Severity::Low);
        assert!(matches!(
            d.message(capped.get(r2.serial).unwrap(), t0, &mut more),
            Delta::Later
        ));
        let later = t0 + COUNT_UPDATE_EVERY;
        let p = sent(d.message(capped.get(r2.serial).unwrap(), later, &mut more));
        assert!(p.update && p.audits.is_empty());
        assert_eq!(p.audit_count, 3);
        // A severity change goes out at once.
        add(&mut capped, r2.serial, 3, Severity::Critical);
        let p = sent(d.message(capped.get(r2.serial).unwrap(), later, &mut more));
        assert_eq!(p.severity, pb::Severity::Critical as i32);
        assert_eq!(p.audit_count, 4);
    }

    /// An incident that opened while streaming with more audits than a
    /// first page (a burst between two passes): the rest follows, none
    /// skipped.
    #[test]
    fn a_new_incident_past_its_first_page_sends_the_rest() {
        let mut incs = Incidents::new(1, u64::MAX, 10_000);
        let r = incs.raise(&Scope::Host, IncidentType::BackdoorListener, 1);
        for n in 0..250 {
            add(&mut incs, r.serial, n, Severity::Low);
        }
        let mut d = Deltas::new(100);
        let t0 = std::time::Instant::now();
        let mut more = false;
        let first = sent(d.message(incs.get(r.serial).unwrap(), t0, &mut more));
        assert!(more, "audits left for the next message");
        assert_eq!(first.audits.len(), 100);
        let mut seen: Vec<u64> = first.audits.iter().map(|a| a.event_seq).collect();
        while more {
            more = false;
            let p = sent(d.message(incs.get(r.serial).unwrap(), t0, &mut more));
            assert_eq!(p.audits_offset as usize, seen.len());
            seen.extend(p.audits.iter().map(|a| a.event_seq));
        }
        assert_eq!(seen, (0..250).collect::<Vec<_>>());
    }

    /// An incident first sent from the backlog with a first page: later
    /// updates start after the audits it had then.
    #[test]
    fn backlog_first_page_then_only_new_audits() {
        let mut incs = Incidents::new(1, u64::MAX, 10_000);
        let r = incs.raise(&Scope::Host, IncidentType::BackdoorListener, 1);
        for n in 0..300 {
            add(&mut incs, r.serial, n, Severity::Low);
        }
        let first = crate::analysis::wire::incident_page_pb(
            incs.get(r.serial).unwrap(),
            AuditPage {
                offset: 0,
                limit: 100,
                max_bytes: UPDATE_BYTES,
            },
        );
        assert_eq!((first.audits.len(), first.next_audit_offset), (100, 100));
        let mut d = Deltas::new(100);
        let t0 = std::time::Instant::now();
        d.note_first(&first, t0);
        add(&mut incs, r.serial, 300, Severity::Low);
        let mut more = false;
        let p = sent(d.message(incs.get(r.serial).unwrap(), t0, &mut more));
        assert_eq!(p.audits_offset, 300);
        assert_eq!(
            p.audits.iter().map(|a| a.event_seq).collect::<Vec<_>>(),
            vec![300]
        );
    }
}
