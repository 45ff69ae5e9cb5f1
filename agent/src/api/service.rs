//! The `fdr.v1.FlightRecorder` service.

use std::sync::Arc;

use fdr_proto::render::export::{ExportChunks, UserLookup};
use fdr_proto::v1::{
    self as pb, flight_recorder_server::FlightRecorder, stream_events_response::Item,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    blocking,
    convert::buffer_stats_to_pb,
    paging::{
        container_key, cut_by_bytes, page, page_limit, smallest, MAX_PAGE_BYTES, MAX_PAGE_ENTRIES,
    },
    query::EventQuery,
    store_status,
};
use crate::{
    api::state::{lock, State},
    attribution::scope::Scope,
    event::wire::{event_to_pb, kind_from_pb, kind_to_pb, timestamp},
    event::{Event, EventKind},
    recorder::live::{LiveFilter, Subscription},
    recorder::naming::{NameWait, NameWaitCounters},
    recorder::snapshot::{self, Freeze},
    util::stats::SubscriberGuard,
};

pub struct Service {
    state: Arc<State>,
    /// Becomes `true` when the agent shuts down: open streams end then.
    stop: watch::Receiver<bool>,
}

impl Service {
    pub fn new(state: Arc<State>, stop: watch::Receiver<bool>) -> Self {
        Service { state, stop }
    }
}

/// Which events a stream wants.
struct Filter {
    live: LiveFilter,
    ancestry: bool,
}

impl Filter {
    fn from_request(req: &pb::StreamEventsRequest) -> Result<Self, Status> {
        let kinds = req
            .kinds
            .iter()
            .map(|&k| {
                kind_from_pb(k)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown event kind {k}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            live: LiveFilter {
                kinds,
                pids: req.pids.iter().copied().collect(),
            },
            ancestry: req.ancestry,
        })
    }

    fn matches(&self, ev: &Event) -> bool {
        self.live.matches(ev)
    }
}

fn event_item(
    ev: &Event,
    state: &State,
    filter: &Filter,
) -> Result<pb::StreamEventsResponse, Status> {
    let depth = if filter.ancestry {
        state.ancestry_depth
    } else {
        0
    };
    let pb = state.with_enrich(depth, |en| event_to_pb(ev, en));
    Ok(pb::StreamEventsResponse {
        item: Some(Item::Event(pb)),
    })
}

/// Messages queued between the stream task and the gRPC transport.
const TRANSPORT_QUEUE: usize = 64;

/// Live events after `last_seq`, until the client goes away. The
/// subscription's own queue absorbs a slow client (the pipeline skips
/// events for it when that is full, counted by kind); what was skipped is
/// announced in a `Lost` notice before the next event. A new container's
/// events wait briefly for its name in `names` (`recorder::naming`).
async fn forward_live(
    live: &mut Subscription,
    names: &mut NameWait,
    tx: &mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    filter: &Filter,
    last_seq: u64,
    state: &State,
) {
    loop {
        while let Some(ev) = names.next_ready() {
            if !send_live(live, tx, &ev, filter, state).await {
                return; // client went away
            }
        }
        tokio::select! {
            ev = live.recv() => match ev {
                // Already sent from the buffer.
                Some(ev) if ev.seq <= last_seq => {}
                Some(ev) => names.offer(ev),
                None => {
                    // The agent stops: what waited goes out as it is.
                    names.release_all();
                    while let Some(ev) = names.next_ready() {
                        if !send_live(live, tx, &ev, filter, state).await {
                            return;
                        }
                    }
                    return;
                }
            },
            () = names.wait(), if names.holding() => {}
        }
    }
}

/// Sends one live event, after the notice of what was skipped before it;
/// false when the client went away.
async fn send_live(
    live: &Subscription,
    tx: &mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    ev: &Event,
    filter: &Filter,
    state: &State,
) -> bool {
    let lost = live.take_lost();
    if !lost.is_empty() {
        let notice = pb::Lost {
            count: lost.iter().map(|(_, n)| n).sum(),
            kinds: lost
                .iter()
                .map(|&(k, n)| pb::LostKind {
                    kind: kind_to_pb(k) as i32,
                    count: n,
                })
                .collect(),
        };
        let item = Ok(pb::StreamEventsResponse {
            item: Some(Item::Lost(notice)),
        });
        if tx.send(item).await.is_err() {
            return false;
        }
    }
    tx.send(event_item(ev, state, filter)).await.is_ok()
}

fn parse_scope(s: &str) -> Result<Scope, Status> {
    Scope::from_key(s).ok_or_else(|| {
        let s = crate::util::clip(s);
        Status::invalid_argument(format!("bad scope {s:?}: \"host\" or \"container:<id>\""))
    })
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Service {
    /// Why snapshot `id` cannot be read yet: still open, or closed and
    /// waiting for the committer.
    fn not_yet(&self, id: u64) -> Option<Status> {
        let snaps = lock(&self.state.snapshots);
        if let Some(info) = snaps.open_infos().into_iter().find(|i| i.id == id) {
            return Some(Status::failed_precondition(format!(
                "snapshot {id} is still open until {}",
                fdr_proto::render::time_text(info.window_end.as_ref())
            )));
        }
        if snaps.committer().is_pending(id) {
            let h = self.state.store.health();
            let why = if h.ok {
                String::new()
            } else {
                format!(" (storage failing: {}; retrying)", h.last_error)
            };
            return Some(Status::failed_precondition(format!(
                "snapshot {id} is pending: its window closed and it waits to be committed{why}"
            )));
        }
        None
    }

    /// A stored snapshot; NotFound, or FailedPrecondition while still open
    /// or waiting to be committed.
    async fn snapshot(&self, id: u64) -> Result<pb::Snapshot, Status> {
        let mut s = self.stored_snapshot(id).await?;
        let state = self.state.clone();
        // The hash and seal it is stored with.
        let sealed = blocking(move || state.store.info(id).map_err(store_status)).await?;
        if let (Some(info), Some(sealed)) = (s.info.as_mut(), sealed) {
            info.sha256 = sealed.sha256;
            info.seal = sealed.seal;
        }
        name_snapshot_containers(&self.state, s.info.as_mut());
        Ok(s)
    }

    /// A committed snapshot exactly as stored (its canonical form: no
    /// naming added, no hash).
    async fn stored_snapshot(&self, id: u64) -> Result<pb::Snapshot, Status> {
        if let Some(s) = self.not_yet(id) {
            return Err(s);
        }
        let state = self.state.clone();
        let got = blocking(move || state.store.get(id).map_err(store_status)).await?;
        match got {
            Some(mut s) => {
                fdr_proto::integrity::canonicalize(&mut s);
                Ok(s)
            }
            // Committed meanwhile is found above; closed meanwhile is here.
            None => Err(self
                .not_yet(id)
                .unwrap_or_else(|| Status::not_found(format!("no snapshot {id}")))),
        }
    }
}

/// Seals per ListSeals page at most.
const MAX_SEALS_PAGE: usize = 10_000;

/// Snapshots of a container not named when they were frozen or stored
/// (still open, or the runtime named it late): named from the registry now.
fn name_snapshot_containers<'a>(
    st: &State,
    infos: impl IntoIterator<Item = &'a mut pb::SnapshotInfo>,
) {
    let reg = lock(&st.containers);
    for info in infos {
        if info.container.as_ref().is_some_and(|c| !c.image.is_empty()) {
            continue;
        }
        let Some(scope) = Scope::from_key(&info.scope) else {
            continue;
        };
        if let Some(m) = scope.container_id().and_then(|id| reg.get(id)) {
            info.container = Some(crate::event::wire::container_to_pb(&m));
        }
    }
}

/// The store's health and the committer's queue.
fn live_naming_stats(c: &NameWaitCounters) -> pb::LiveNamingStats {
    use std::sync::atomic::Ordering::Relaxed;
    pb::LiveNamingStats {
        held: c.held.load(Relaxed),
        released_named: c.named.load(Relaxed),
        released_timeout: c.timed_out.load(Relaxed),
        dropped_by_bound: c.overflowed.load(Relaxed),
        holding: c.holding.load(Relaxed),
    }
}

pub(crate) fn storage_stats(st: &State) -> pb::StorageStats {
    let h = st.store.health();
    let (pending_commits, pending_bytes) = st.committer.pending();
    pb::StorageStats {
        state: if h.ok { "ok" } else { "failing" }.into(),
        last_error: h.last_error,
        since: Some(timestamp(h.since_ns)),
        pending_commits,
        pending_bytes,
        failures: h.failures,
        reopens: h.reopens,
        integrity: h.integrity,
        ids_left: st.store.ids_left(),
    }
}

type Chunks<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[tonic::async_trait]
impl FlightRecorder for Service {
    type StreamEventsStream = ReceiverStream<Result<pb::StreamEventsResponse, Status>>;
    type GetSnapshotStream = Chunks<pb::GetSnapshotResponse>;
    type ExportSnapshotStream = tokio_stream::Iter<ExportChunks>;
    type StreamIncidentsStream = super::analysis_calls::IncidentStream;

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let req = request.get_ref();
        let known = lock(&self.state.containers).list();
        let after = (!req.cursor.is_empty()).then(|| req.cursor.clone());
        let (containers, next) = page(
            known.into_iter(),
            after.as_ref(),
            page_limit(req.limit),
            |k| container_key(k.running, &k.id),
            super::convert::known_container_to_pb,
        );
        Ok(Response::new(pb::ListContainersResponse {
            containers,
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(super::analysis_calls::list_models(
            &self.state,
            request.get_ref(),
        )))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        super::analysis_calls::get_model(&self.state, request.get_ref()).map(Response::new)
    }

    async fn relearn_model(
        &self,
        request: Request<pb::RelearnModelRequest>,
    ) -> Result<Response<pb::RelearnModelResponse>, Status> {
        self.state.refuse_offline()?;
        super::analysis_calls::relearn_model(&self.state, request.get_ref()).map(Response::new)
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        super::analysis_calls::list_incidents(&self.state, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        super::analysis_calls::get_incident(&self.state, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn stream_incidents(
        &self,
        request: Request<pb::StreamIncidentsRequest>,
    ) -> Result<Response<Self::StreamIncidentsStream>, Status> {
        super::analysis_calls::stream_incidents(
            self.state.clone(),
            request.get_ref(),
            self.stop.clone(),
        )
        .await
        .map(Response::new)
    }

    async fn get_identity(
        &self,
        _request: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        // Offline, this machine's boot is not the database's node's.
        let boot_id = if self.state.offline {
            String::new()
        } else {
            let path = self.state.host.resolve("/proc/sys/kernel/random/boot_id");
            std::fs::read_to_string(path).unwrap_or_default()
        };
        Ok(Response::new(pb::Identity {
            instance_id: self.state.store.instance_id().to_owned(),
            node: self.state.node.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: Some(timestamp(crate::util::unix_ns(self.state.started))),
            boot_id: boot_id.trim().to_owned(),
            role: "agent".into(),
            signing_key: self.state.store.signing_key(),
        }))
    }

    async fn list_seals(
        &self,
        request: Request<pb::ListSealsRequest>,
    ) -> Result<Response<pb::ListSealsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => MAX_SEALS_PAGE,
            n => (n as usize).min(MAX_SEALS_PAGE),
        };
        let state = self.state.clone();
        let page =
            blocking(move || state.store.seals(req.after_id, limit).map_err(store_status)).await?;
        Ok(Response::new(page))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        self.state.refuse_offline()?;
        let req = request.into_inner();
        let scope = parse_scope(&req.scope)?;
        let now = crate::util::now_ns();
        let reason = if req.reason.is_empty() {
            "on demand"
        } else {
            req.reason.as_str()
        };
        // A snapshot that could not be kept is refused now, never handed
        // out as an id that would vanish.
        let committer = self.state.committer.clone();
        if !committer.can_accept(0) {
            return Err(Status::resource_exhausted(
                committer.refusal("a new snapshot".into()).to_string(),
            ));
        }
        // Opened under the buffers' lock (cheap); its before-part is read
        // from a copy on a blocking thread, with no lock held.
        let frozen = {
            let mut buffers = lock(&self.state.buffers);
            let frozen = lock(&self.state.snapshots)
                .begin_freeze(scope, reason, now, &buffers, 0)
                .map_err(store_status)?;
            // The copy is charged: the buffers make room.
            buffers.enforce_budget();
            frozen
        };
        let info = match frozen {
            Freeze::Joined(info) => info,
            Freeze::Filling(info, filling) => {
                crate::store::commit::mark_open(&committer, &info);
                let state = self.state.clone();
                blocking(move || {
                    Ok(snapshot::complete(
                        &state.buffers,
                        &state.snapshots,
                        filling,
                    ))
                })
                .await?
                .unwrap_or(info)
            }
        };
        Ok(Response::new(info))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let req = request.get_ref();
        let after: u64 = match req.cursor.as_str() {
            "" => 0,
            c => c
                .parse()
                .map_err(|_| Status::invalid_argument("bad snapshot cursor"))?,
        };
        let limit = page_limit(req.limit);
        // Open and pending ones first: a snapshot moving on meanwhile is
        // then listed twice rather than missed (duplicates dropped below).
        let (open, pending) = {
            let snaps = lock(&self.state.snapshots);
            (snaps.open_infos(), snaps.committer().pending_infos())
        };
        let state = self.state.clone();
        // One more than the page: whether more follow. Stored ones not read
        // have higher ids than all those read, so the page's first `limit`
        // of them all is right.
        let mut snapshots = blocking(move || {
            state
                .store
                .list_after(after, limit.saturating_add(1))
                .map_err(store_status)
        })
        .await?;
        snapshots.extend(pending.into_iter().filter(|i| i.id > after));
        snapshots.extend(open.into_iter().filter(|i| i.id > after));
        // Stable: the stored copy of a snapshot comes first and is kept.
        snapshots.sort_by_key(|i| i.id);
        snapshots.dedup_by_key(|i| i.id);
        let mut more = snapshots.len() > limit;
        snapshots.truncate(limit);
        name_snapshot_containers(&self.state, snapshots.iter_mut());
        more |= cut_by_bytes(&mut snapshots, MAX_PAGE_BYTES);
        let next_cursor = match snapshots.last() {
            Some(last) if more => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots,
            next_cursor,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let req = request.into_inner();
        let q = EventQuery::new(
            &req.kinds,
            req.from.as_ref(),
            req.to.as_ref(),
            &req.text,
            &req.cursor,
            req.limit,
        )?;
        let snap = self.snapshot(req.id).await?;
        let out: Vec<_> = super::query::snapshot_page(&q, snap, req.cursor.is_empty())
            .into_iter()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(out)))
    }

    async fn export_snapshot(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<Self::ExportSnapshotStream>, Status> {
        let req = request.into_inner();
        let csv = match req.format.as_str() {
            "csv" => true,
            "jsonl" => false,
            "protobuf" => {
                // Byte for byte the canonical encoding its seal hashes.
                let snap = self.stored_snapshot(req.id).await?;
                let chunks = ExportChunks::encoded(&snap);
                return Ok(Response::new(tokio_stream::iter(chunks)));
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "bad format {:?}: \"csv\", \"jsonl\" or \"protobuf\"",
                    crate::util::clip(other)
                )))
            }
        };
        let snap = self.snapshot(req.id).await?;
        // Offline, this machine's passwd is not the database's node's: a
        // user the snapshot does not name is its number.
        let lookup: UserLookup = if self.state.offline {
            fdr_proto::render::export::uid_only()
        } else {
            let passwd = self.state.host.resolve("/etc/passwd");
            Box::new(move |uid| crate::derive::accounts::user_name_in(&passwd, uid))
        };
        let chunks = ExportChunks::new(snap, csv, lookup)?;
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        let req = request.into_inner();
        // No scope: every scope's buffer.
        let scope = match req.scope.as_str() {
            "" => None,
            s => Some(parse_scope(s)?),
        };
        let q = EventQuery::new(
            &req.kinds,
            req.from.as_ref(),
            req.to.as_ref(),
            &req.text,
            &req.cursor,
            req.limit,
        )?;
        // Off the runtime's threads: the lock is taken in short holds, the
        // page converted outside it.
        let state = self.state.clone();
        let (page, scan) = tokio::task::spawn_blocking(move || {
            q.page_live(
                &state.buffers,
                scope.as_ref(),
                Some(&state.containers),
                state.ancestry_depth,
                &state.node,
            )
        })
        .await
        .map_err(internal)?;
        tracing::debug!(
            events = page.events.len(),
            holds = scan.holds,
            longest_hold_us = scan.longest_hold.as_micros() as u64,
            examined = scan.examined,
            "query"
        );
        Ok(Response::new(pb::QueryEventsResponse {
            events: page.events,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let req = request.into_inner();
        let filter = Filter::from_request(&req)?;
        // Subscribe before reading the buffer: nothing falls between the two.
        let (max_events, max_bytes) = self.state.stream_queue;
        let mut live = if req.follow {
            Some(
                self.state
                    .live
                    .subscribe(filter.live.clone(), max_events, max_bytes)
                    .map_err(|e| Status::resource_exhausted(e.to_string()))?,
            )
        } else {
            None
        };
        // The backlog is what is buffered now (up to `last_seq`), read a
        // batch at a time: decoding a whole budget's worth under the
        // buffers' lock would stand capture still.
        let last_seq = lock(&self.state.buffers).last_seq();
        let buffered = req.buffered;
        let (tx, rx) = mpsc::channel(TRANSPORT_QUEUE);
        let counters = self.state.counters.clone();
        let state = self.state.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let _guard = SubscriberGuard::new(counters.clone());
            let stream = async move {
                let mut after = 0;
                let mut backlog_done = !buffered;
                let next_batch = |after: &mut u64| {
                    super::query::backlog_batch(&state.buffers, after, last_seq, |e| {
                        filter.matches(e)
                    })
                };
                let Some(live) = live.as_mut() else {
                    while !backlog_done {
                        let (batch, done) = next_batch(&mut after);
                        backlog_done = done;
                        for ev in batch {
                            if tx.send(event_item(&ev, &state, &filter)).await.is_err() {
                                return;
                            }
                        }
                    }
                    return;
                };
                let mut names = NameWait::new(
                    state.name_wait,
                    state.containers.clone(),
                    state.name_wait_counters.clone(),
                );
                // Followed: the buffered events of a container still being
                // named wait with its live ones.
                while !backlog_done {
                    let (batch, done) = next_batch(&mut after);
                    backlog_done = done;
                    for ev in batch {
                        names.offer(ev);
                        while let Some(ev) = names.next_ready() {
                            if tx.send(event_item(&ev, &state, &filter)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                forward_live(live, &mut names, &tx, &filter, last_seq, &state).await;
            };
            tokio::select! {
                _ = stream => {}
                _ = stop.wait_for(|&v| v) => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &self.state;
        let drops = st.kernel_drops();
        let kinds = EventKind::ALL
            .into_iter()
            .map(|k| pb::KindStats {
                kind: kind_to_pb(k) as i32,
                name: k.name().to_owned(),
                seen: st.counters.seen(k),
                kernel_drops: drops.iter().find(|(d, _)| *d == k).map_or(0, |(_, n)| *n),
            })
            .collect();
        let started_ns = crate::util::unix_ns(st.started);
        // One lock at a time, each released at the end of its statement: a
        // guard kept alive across a second `lock` (a temporary in a struct
        // literal lives until the literal's end) would break the lock order.
        let (totals, per_scope, open_snapshot_bytes) = {
            let b = lock(&st.buffers);
            (b.stats(), b.scopes(), b.charged() as u64)
        };
        let [processes_tracked, live, exited, pruned, reaped] =
            st.counters.processes.each_ref().map(|c| c.load(Relaxed));
        let analysis = {
            let now = crate::util::now_ns();
            let (models, learning, items) = {
                let m = lock(&st.models);
                let learning = m.all().filter(|x| x.learning(now)).count();
                (m.len() as u64, learning as u64, m.total_items() as u64)
            };
            let i = lock(&st.incidents);
            pb::AnalysisStats {
                models,
                learning,
                items,
                open_incidents: i.open_count() as u64,
                next_serial: i.next_serial(),
            }
        };
        let containers = {
            let c = lock(&st.containers);
            let n = c.counts();
            pb::ContainerStats {
                runtime: c.runtime.clone().unwrap_or_default(),
                running: n.running,
                tombstones: n.tombstones,
                with_metadata: n.with_metadata,
                runtime_since: (c.runtime_since_ns > 0).then(|| timestamp(c.runtime_since_ns)),
                engine: c.engine.clone().unwrap_or_default(),
            }
        };
        // Within a message however many scopes: the largest ones.
        let scopes_left_out = per_scope.len().saturating_sub(MAX_PAGE_ENTRIES) as u64;
        let mut per_scope = per_scope;
        if scopes_left_out > 0 {
            per_scope = smallest(per_scope, MAX_PAGE_ENTRIES, |(_, b)| {
                std::cmp::Reverse(b.bytes)
            });
            per_scope.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let scopes = per_scope
            .into_iter()
            .map(|(scope, b)| pb::ScopeStats {
                scope: scope.key(),
                buffer: Some(buffer_stats_to_pb(b)),
            })
            .collect();
        Ok(Response::new(pb::Stats {
            kinds,
            decode_errors: st.counters.decode_errors.load(Relaxed),
            buffers: Some(buffer_stats_to_pb(totals)),
            stream_drops: st.counters.stream_drops.load(Relaxed),
            subscribers: st.counters.subscribers.load(Relaxed),
            processes_tracked,
            started: Some(timestamp(started_ns)),
            ring_buffer_bytes: st.ring_bytes,
            critical_ring_buffer_bytes: st.critical_ring_bytes,
            scopes,
            processes: Some(pb::ProcessStats {
                live,
                exited,
                pruned,
                reaped,
            }),
            containers: Some(containers),
            analysis: Some(analysis),
            pipeline_max_step_us: st.counters.pipeline_max_step_us.load(Relaxed),
            pipeline_slow_steps: st.counters.pipeline_slow_steps.load(Relaxed),
            pipeline_max_blocked_us: st.counters.pipeline_max_blocked_us.load(Relaxed),
            open_snapshot_bytes,
            storage: Some(storage_stats(st)),
            scopes_left_out,
            live_naming: Some(live_naming_stats(&st.name_wait_counters)),
            export: Some(super::export::stats(st)),
        }))
    }
}
