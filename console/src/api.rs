//! The console's gRPC API: `fdr.v1.FlightRecorder`'s incident and snapshot
//! calls answered from the console's store (fleet serials, the console's
//! snapshot ids; so `fdrctl --url <console> incidents …` works as against
//! an agent), `QueryEvents` forwarded to the agents that hold the data,
//! `GetIdentity`, and `fdr.v1.Console.ListAgents`. Served over TCP with
//! the agents' authentication choices (TLS, client certificates, a bearer
//! token: [`fdr_proto::auth`]).

use std::{collections::HashMap, pin::Pin, sync::Arc};

use fdr_proto::{
    auth::{server_tls, BearerAuth},
    render::export::{uid_only, ExportChunks},
    transport::MAX_MESSAGE_BYTES,
    v1::{
        self as pb, console_server::ConsoleServer, flight_recorder_server::FlightRecorderServer,
        get_snapshot_response::Item as G,
    },
};
use futures::Stream;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tonic::{
    service::interceptor::InterceptedService, transport::Server, Request, Response, Status,
};

use crate::{
    config::ApiConfig,
    evidence::EvidenceError,
    index::IndexError,
    sync::{self, unix_timestamp, Console},
};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A page holds about this many bytes at most (as the agent's).
const MAX_PAGE_BYTES: usize = 4 << 20;
const MAX_PAGE_ENTRIES: usize = 10_000;

pub(crate) fn index_status(e: IndexError) -> Status {
    Status::internal(e.to_string())
}

fn not_here(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is answered by an agent, not the console: ask the node's agent \
         (fdrctl --url https://<node>:7077 …; `fdrctl agents` lists them)"
    ))
}

#[derive(Clone)]
pub struct Api {
    con: Arc<Console>,
    stop: watch::Receiver<bool>,
}

impl Api {
    pub fn new(con: Arc<Console>, stop: watch::Receiver<bool>) -> Self {
        Api { con, stop }
    }

    async fn snapshot(&self, id: u64) -> Result<(pb::Snapshot, bytes::Bytes), Status> {
        load_snapshot(&self.con, id).await
    }
}

/// A held snapshot, its object checked against its hash; the info is the
/// console's (its id, node, hash).
pub(crate) async fn load_snapshot(
    con: &Console,
    id: u64,
) -> Result<(pb::Snapshot, bytes::Bytes), Status> {
    let info = con
        .with_index(move |ix| ix.snapshot(id))
        .await
        .map_err(index_status)?;
    let Some(info) = info else {
        return Err(Status::not_found(format!(
            "no snapshot {id} in the console (never copied, or evicted by retention)"
        )));
    };
    let data = match con.evidence.get(&info.sha256).await {
        Ok(d) => d,
        Err(e @ EvidenceError::Corrupt { .. }) => {
            con.corrupt_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(snapshot = id, error = %e, "corrupt evidence object");
            return Err(Status::data_loss(format!("snapshot {id}: {e}")));
        }
        Err(e @ EvidenceError::Missing(_)) => {
            tracing::error!(snapshot = id, error = %e, "evidence object missing");
            return Err(Status::data_loss(format!("snapshot {id}: {e}")));
        }
        Err(e) => return Err(Status::unavailable(format!("snapshot {id}: {e}"))),
    };
    // Tens of MB: decoded off the async threads.
    let bytes = data.clone();
    let mut snap = tokio::task::spawn_blocking(move || pb::Snapshot::decode(bytes))
        .await
        .map_err(|e| Status::internal(format!("snapshot {id}: decoding task: {e}")))?
        .map_err(|e| Status::data_loss(format!("snapshot {id} does not decode: {e}")))?;
    snap.info = Some(info);
    Ok((snap, data))
}

/// An incident with a page of its audits.
fn audit_page(mut inc: pb::Incident, offset: u64, limit: usize) -> pb::Incident {
    let kept = inc.audits.len();
    inc.audits_kept = inc.audits_kept.max(kept as u64);
    let start = (offset as usize).min(kept);
    let mut bytes = 0;
    let mut page = Vec::new();
    for a in inc.audits.drain(..).skip(start) {
        let n = a.encoded_len();
        if page.len() >= limit || (!page.is_empty() && bytes + n > MAX_PAGE_BYTES / 4) {
            break;
        }
        bytes += n;
        page.push(a);
    }
    let end = start + page.len();
    inc.audits_offset = start as u64;
    inc.next_audit_offset = if end < kept { end as u64 } else { 0 };
    inc.audits = page;
    inc
}

fn first_audits(n: u32) -> usize {
    match n {
        0 => 100,
        n => (n as usize).min(1000),
    }
}

fn ts_ns(t: &prost_types::Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

#[tonic::async_trait]
impl pb::flight_recorder_server::FlightRecorder for Api {
    type StreamEventsStream = Stream_<pb::StreamEventsResponse>;
    type GetSnapshotStream = Stream_<pb::GetSnapshotResponse>;
    type ExportSnapshotStream = Stream_<pb::ExportChunk>;
    type StreamIncidentsStream = Stream_<pb::Incident>;

    async fn stream_events(
        &self,
        _: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        Err(not_here("StreamEvents (live events)"))
    }

    async fn get_stats(
        &self,
        _: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        Err(not_here("GetStats"))
    }

    async fn list_containers(
        &self,
        _: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        Err(not_here("ListContainers"))
    }

    async fn create_snapshot(
        &self,
        _: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        Err(not_here("CreateSnapshot"))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let after: u64 = match req.cursor.as_str() {
            "" => 0,
            c => c
                .parse()
                .map_err(|_| Status::invalid_argument(format!("bad cursor {c:?}")))?,
        };
        let limit = match req.limit {
            0 => MAX_PAGE_ENTRIES,
            n => (n as usize).min(MAX_PAGE_ENTRIES),
        };
        let mut list = self
            .con
            .with_index(move |ix| ix.snapshots_after(after, limit + 1))
            .await
            .map_err(index_status)?;
        let mut bytes = 0;
        let mut cut = list.len().min(limit);
        for (i, s) in list.iter().enumerate().take(limit) {
            bytes += s.encoded_len();
            if i > 0 && bytes > MAX_PAGE_BYTES {
                cut = i;
                break;
            }
        }
        let more = list.len() > cut;
        list.truncate(cut);
        let next_cursor = if more {
            list.last().map(|s| s.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: list,
            next_cursor,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let req = request.into_inner();
        let after_seq: u64 = match req.cursor.as_str() {
            "" => 0,
            c => c
                .parse()
                .map_err(|_| Status::invalid_argument(format!("bad cursor {c:?}")))?,
        };
        let limit = match req.limit {
            0 => MAX_PAGE_ENTRIES,
            n => (n as usize).min(MAX_PAGE_ENTRIES),
        };
        let (mut snap, _) = self.snapshot(req.id).await?;
        let item = |i: G| Ok(pb::GetSnapshotResponse { item: Some(i) });
        let mut out = vec![item(G::Info(snap.info.take().unwrap_or_default()))];
        if req.cursor.is_empty() {
            out.extend(snap.gaps.drain(..).map(|g| item(G::Gap(g))));
            out.extend(snap.processes.drain(..).map(|p| item(G::Process(p))));
            out.extend(snap.listening.drain(..).map(|l| item(G::Listening(l))));
        }
        let needle = (!req.text.is_empty()).then(|| req.text.to_lowercase());
        let from = req.from.as_ref().map(ts_ns);
        let to = req.to.as_ref().map(ts_ns);
        let (mut n, mut bytes, mut last) = (0usize, 0usize, 0u64);
        let mut more = false;
        for ev in snap.events {
            let t = ev.time.as_ref().map_or(0, ts_ns);
            let wanted = ev.seq > after_seq
                && (req.kinds.is_empty() || req.kinds.contains(&ev.kind))
                && from.is_none_or(|f| t >= f)
                && to.is_none_or(|x| t <= x)
                && needle.as_deref().is_none_or(|nd| {
                    let mut hay = fdr_proto::render::haystack(&ev);
                    fdr_proto::render::lowercase_contains(&mut hay, nd)
                });
            if !wanted {
                continue;
            }
            let size = ev.encoded_len();
            if n == limit || (n > 0 && bytes + size > MAX_PAGE_BYTES) {
                more = true;
                break;
            }
            n += 1;
            bytes += size;
            last = ev.seq;
            out.push(item(G::Event(ev)));
        }
        if more {
            out.push(item(G::NextCursor(last.to_string())));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
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
                // The evidence exactly as stored (its hash is the name).
                let (_, data) = self.snapshot(req.id).await?;
                let chunks: Vec<Result<pb::ExportChunk, Status>> = data
                    .chunks(64 << 10)
                    .map(|c| Ok(pb::ExportChunk { data: c.to_vec() }))
                    .collect();
                return Ok(Response::new(Box::pin(tokio_stream::iter(chunks))));
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "bad format {:?}: \"csv\", \"jsonl\" or \"protobuf\"",
                    fdr_proto::render::escape(other)
                )))
            }
        };
        let (snap, _) = self.snapshot(req.id).await?;
        let chunks = ExportChunks::new(snap, csv, uid_only())?;
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        query_fleet(&self.con, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Err(not_here("ListModels"))
    }

    async fn get_model(
        &self,
        _: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        Err(not_here("GetModel"))
    }

    async fn relearn_model(
        &self,
        _: Request<pb::RelearnModelRequest>,
    ) -> Result<Response<pb::RelearnModelResponse>, Status> {
        Err(not_here("RelearnModel"))
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n => (n as usize).min(1000),
        };
        let audits = first_audits(req.audit_limit);
        let after = req.after_serial;
        let list = self
            .con
            .with_index(move |ix| {
                let mut n = 0;
                let mut bytes = 0;
                ix.incidents_after(after, |len| {
                    n += 1;
                    bytes += len;
                    n <= limit && (n == 1 || bytes <= MAX_PAGE_BYTES)
                })
            })
            .await
            .map_err(index_status)?;
        let incidents: Vec<pb::Incident> =
            list.into_iter().map(|i| audit_page(i, 0, audits)).collect();
        let last_serial = incidents.last().map_or(after, |i| i.serial);
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents,
            last_serial,
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        let req = request.into_inner();
        let serial = req.serial;
        let inc = self
            .con
            .with_index(move |ix| ix.incident(serial))
            .await
            .map_err(index_status)?
            .ok_or_else(|| Status::not_found(format!("no incident {serial} in the console")))?;
        let limit = match req.audit_limit {
            0 => 10_000,
            n => (n as usize).min(10_000),
        };
        Ok(Response::new(audit_page(inc, req.audit_offset, limit)))
    }

    async fn stream_incidents(
        &self,
        request: Request<pb::StreamIncidentsRequest>,
    ) -> Result<Response<Self::StreamIncidentsStream>, Status> {
        let req = request.into_inner();
        let audits = first_audits(req.audit_limit);
        // Subscribed before listing: nothing ingested meanwhile is missed
        // (what is both listed and live is sent once).
        let mut live = self.con.live.subscribe();
        let con = self.con.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            // Audits sent per incident on this stream.
            let mut sent: HashMap<u64, usize> = HashMap::new();
            // New incidents come from the index, in fleet-serial order
            // (the broadcast only wakes the stream up: two agents' tasks
            // may announce 11 before 10); updates of incidents already
            // sent come from the broadcast.
            let mut last = req.after_serial;
            loop {
                loop {
                    let after = last;
                    let page = con
                        .with_index(move |ix| {
                            let mut n = 0;
                            ix.incidents_after(after, |_| {
                                n += 1;
                                n <= 100
                            })
                        })
                        .await;
                    let page = match page {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(index_status(e))).await;
                            return;
                        }
                    };
                    if page.is_empty() {
                        break;
                    }
                    for inc in page {
                        last = inc.serial;
                        let i = audit_page(inc, 0, audits);
                        sent.insert(i.serial, i.audits_offset as usize + i.audits.len());
                        if tx.send(Ok(i)).await.is_err() {
                            return;
                        }
                    }
                }
                let inc = tokio::select! {
                    r = live.recv() => r,
                    _ = stop.changed() => return,
                    _ = tx.closed() => return,
                };
                let inc = match inc {
                    Ok(i) => i,
                    // Wake-ups lost: the index has every new incident;
                    // updates missed are in the records a client reads.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // New ones are read from the index above.
                let Some(&n) = sent.get(&inc.serial) else {
                    continue;
                };
                let mut i = (*inc).clone();
                let new: Vec<pb::Audit> = i.audits.drain(..).skip(n).collect();
                sent.insert(i.serial, n + new.len());
                i.audits_offset = n as u64;
                i.audits = new;
                i.update = true;
                if tx.send(Ok(i)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_identity(
        &self,
        _: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        Ok(Response::new(pb::Identity {
            instance_id: self.con.index.instance_id().to_owned(),
            node: String::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: Some(unix_timestamp(self.con.started)),
            boot_id: String::new(),
            role: "console".into(),
            signing_key: Vec::new(),
        }))
    }

    async fn list_seals(
        &self,
        _request: Request<pb::ListSealsRequest>,
    ) -> Result<Response<pb::ListSealsResponse>, Status> {
        Err(Status::failed_precondition(
            "a console keeps no chain of its own: each snapshot's seal (the agent's) and what \
             the console's check of it found are in its summary (ListSnapshots), and each \
             agent's problems in ListAgents",
        ))
    }
}

#[tonic::async_trait]
impl pb::console_server::Console for Api {
    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = agents_list(&self.con).await?;
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }
}

/// Every agent the console knows: its stored record with its live state.
pub(crate) async fn agents_list(con: &Console) -> Result<Vec<pb::Agent>, Status> {
    let stored = con
        .with_index(|ix| {
            let agents = ix.agents()?;
            let mut pending = HashMap::new();
            for a in &agents {
                pending.insert(a.instance_id.clone(), ix.pending_count(&a.instance_id)?);
            }
            Ok((agents, pending))
        })
        .await
        .map_err(index_status)?;
    let (stored, pending) = stored;
    let live = con.live_agents();
    let mut out = Vec::new();
    let mut seen_urls = std::collections::HashSet::new();
    for mut a in stored {
        let l = live.iter().find(|l| l.instance_id == a.instance_id);
        a.snapshots_pending = pending.get(&a.instance_id).copied().unwrap_or(0);
        match l {
            Some(l) => {
                seen_urls.insert(l.url.clone());
                a.url = l.url.clone();
                a.reachable = l.reachable;
                a.error = l.error.clone();
                a.last_contact = l.last_contact.map(unix_timestamp);
                a.agent_last_serial = l.agent_last_serial.max(a.synced_serial);
                a.kernel_drops = l.kernel_drops;
                a.runtimes = l.runtimes.clone();
                if let Some(t) = l.last_sync {
                    a.last_sync = Some(unix_timestamp(t));
                }
                if !l.source.is_empty() {
                    a.source = l.source.clone();
                }
            }
            None => {
                a.reachable = false;
                a.error = "not configured or discovered now".into();
                a.agent_last_serial = a.synced_serial;
            }
        }
        a.lag = a.agent_last_serial.saturating_sub(a.synced_serial);
        out.push(a);
    }
    // Agents never reached: by URL only.
    for l in live {
        if seen_urls.contains(&l.url) || !l.instance_id.is_empty() {
            continue;
        }
        out.push(pb::Agent {
            url: l.url,
            source: l.source,
            reachable: l.reachable,
            error: l.error,
            ..Default::default()
        });
    }
    out.sort_by(|a, b| a.node.cmp(&b.node).then(a.url.cmp(&b.url)));
    Ok(out)
}

/// `QueryEvents` at the console: to the agent of `node`, else to every
/// reachable agent (an agent that does not hold the container answers
/// nothing), merged by time. The cursor carries each agent's own.
pub(crate) async fn query_fleet(
    con: &Arc<Console>,
    req: pb::QueryEventsRequest,
) -> Result<pb::QueryEventsResponse, Status> {
    let cursors: HashMap<String, String> = if req.cursor.is_empty() {
        HashMap::new()
    } else {
        serde_json_cursor(&req.cursor)?
    };
    let agents: Vec<sync::Live> = con
        .live_agents()
        .into_iter()
        .filter(|l| l.reachable && !l.instance_id.is_empty())
        .filter(|l| req.node.is_empty() || l.node == req.node)
        .filter(|l| req.cursor.is_empty() || cursors.contains_key(&l.instance_id))
        .collect();
    if agents.is_empty() {
        return Err(Status::unavailable(if req.node.is_empty() {
            "no agent is reachable now".to_owned()
        } else {
            format!(
                "no reachable agent on node {:?}",
                fdr_proto::render::escape(&req.node)
            )
        }));
    }
    // Each agent's page is a share of the page asked for, so that the
    // merged answer stays within one message.
    let asked = match req.limit {
        0 => MAX_PAGE_ENTRIES,
        n => (n as usize).min(MAX_PAGE_ENTRIES),
    };
    let share = (asked / agents.len()).max(1) as u32;
    let mut calls = Vec::new();
    for l in agents {
        let mut r = req.clone();
        r.node = String::new();
        r.limit = share;
        r.cursor = cursors.get(&l.instance_id).cloned().unwrap_or_default();
        let cfg = con.cfg.agents.clone();
        calls.push(async move {
            let url = l.url.clone();
            let tgt = sync::target(&l.url, &cfg).map_err(|e| format!("{url}: {e}"))?;
            let fut = async {
                let mut c = fdr_cli::client::connect(&tgt)
                    .await
                    .map_err(|e| e.to_string())?;
                c.query_events(r)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{}: {}", s.code(), s.message()))
            };
            let resp = tokio::time::timeout(cfg.call_timeout, fut)
                .await
                .map_err(|_| format!("{url}: timed out"))?
                .map_err(|e| format!("{url}: {e}"))?;
            Ok::<_, String>((l.instance_id, l.node, resp))
        });
    }
    let results = futures::future::join_all(calls).await;
    let mut events = Vec::new();
    let mut next = HashMap::new();
    let mut errors = Vec::new();
    let mut answered = 0;
    for r in results {
        match r {
            Ok((inst, _node, resp)) => {
                answered += 1;
                events.extend(resp.events);
                if !resp.next_cursor.is_empty() {
                    next.insert(inst, resp.next_cursor);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    // A partial answer would look complete: the query fails, naming the
    // agents that did not answer (`node` narrows it to one).
    if !errors.is_empty() {
        return Err(Status::unavailable(format!(
            "{} of {} agents did not answer: {}",
            errors.len(),
            errors.len() + answered,
            errors.join("; ")
        )));
    }
    events.sort_by(|a, b| {
        let t = |e: &pb::Event| e.time.as_ref().map_or(0, ts_ns);
        t(a).cmp(&t(b)).then(a.seq.cmp(&b.seq))
    });
    let next_cursor = if next.is_empty() {
        String::new()
    } else {
        let mut parts: Vec<String> = next
            .into_iter()
            .map(|(k, v)| format!("{k}={}", hex(v.as_bytes())))
            .collect();
        parts.sort();
        parts.join(",")
    };
    Ok(pb::QueryEventsResponse {
        events,
        next_cursor,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `instance=hex(cursor),…` back into a map.
fn serde_json_cursor(c: &str) -> Result<HashMap<String, String>, Status> {
    let bad = || Status::invalid_argument(format!("bad cursor {:?}", fdr_proto::render::escape(c)));
    let mut out = HashMap::new();
    for part in c.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        if v.len() % 2 != 0 {
            return Err(bad());
        }
        let hexval = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let bytes: Option<Vec<u8>> = v
            .as_bytes()
            .chunks(2)
            .map(|p| Some(hexval(p[0])? << 4 | hexval(*p.get(1)?)?))
            .collect();
        let s = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
        out.insert(k.to_owned(), s);
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] fdr_proto::auth::AuthError),
    #[error("TLS setup of the console's API: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The bound listener and its settings: what can fail does at start.
pub struct Listener {
    listener: tokio::net::TcpListener,
    builder: Server,
    auth: Option<BearerAuth>,
}

impl Listener {
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }
}

pub async fn bind(cfg: &ApiConfig) -> Result<Listener, ServeError> {
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        let tls = server_tls(cert, key, cfg.tls_client_ca_file.as_deref())?;
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Tls(fdr_proto::transport::error_chain(&e)))?;
    }
    let auth = cfg
        .token_file
        .as_deref()
        .map(BearerAuth::from_file)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(cfg.listen),
        tls = cfg.tls_cert_file.is_some(),
        client_certificates = cfg.tls_client_ca_file.is_some(),
        token = auth.is_some(),
        "console API listening"
    );
    Ok(Listener {
        listener,
        builder,
        auth,
    })
}

/// Serves until `stop`.
pub async fn serve(
    l: Listener,
    con: Arc<Console>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let api = Api::new(con, stop.clone());
    let fr = FlightRecorderServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cs = ConsoleServer::new(api);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<FlightRecorderServer<Api>>().await;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(l.listener);
    let mut stop2 = stop.clone();
    let shutdown = async move {
        let _ = stop2.wait_for(|s| *s).await;
    };
    let mut builder = l.builder;
    match l.auth {
        Some(auth) => {
            builder
                .add_service(InterceptedService::new(fr, auth.clone()))
                .add_service(InterceptedService::new(cs, auth))
                .add_service(health_svc)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        None => {
            builder
                .add_service(fr)
                .add_service(cs)
                .add_service(health_svc)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_pages() {
        let inc = pb::Incident {
            audits: (0..5)
                .map(|i| pb::Audit {
                    event_seq: i,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let p = audit_page(inc.clone(), 0, 2);
        assert_eq!(p.audits.len(), 2);
        assert_eq!(p.next_audit_offset, 2);
        assert_eq!(p.audits_kept, 5);
        let p = audit_page(inc, 4, 2);
        assert_eq!(p.audits[0].event_seq, 4);
        assert_eq!(p.next_audit_offset, 0);
    }

    #[test]
    fn fleet_cursors_round_trip() {
        let m = serde_json_cursor("ab=3132,cd=").unwrap();
        assert_eq!(m["ab"], "12");
        assert_eq!(m["cd"], "");
        assert!(serde_json_cursor("x").is_err());
        assert!(serde_json_cursor("ab=aéb").is_err());
        assert!(serde_json_cursor("ab=zz").is_err());
    }
}
