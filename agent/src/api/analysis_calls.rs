//! The model and incident calls of `fdr.v1.FlightRecorder`.

use std::sync::Arc;

use fdr_proto::v1 as pb;
use tokio::sync::{broadcast::error::RecvError, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{blocking, store_status};
use crate::{
    analysis::persist::incidents as persist,
    analysis::wire::{incident_to_pb, model_to_pb},
    api::state::{lock, State},
};

use crate::util::now_ns;

pub fn list_models(state: &State) -> pb::ListModelsResponse {
    let now = now_ns();
    let models = lock(&state.models);
    let mut out: Vec<pb::Model> = models.all().map(|m| model_to_pb(m, now, false)).collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    pb::ListModelsResponse { models: out }
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
    Ok(model_to_pb(m, now_ns(), true))
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
    tracing::info!(models = ?done, "models relearning");
    Ok(pb::RelearnModelResponse { keys: done })
}

/// Incidents above `after_serial`, from the store (read on the blocking
/// pool), with the open ones as they are in memory now (an incident just
/// opened may still wait for the committer: it is added from memory).
pub async fn list_incidents(
    state: &Arc<State>,
    req: &pb::ListIncidentsRequest,
) -> Result<pb::ListIncidentsResponse, Status> {
    let limit = if req.limit == 0 {
        100
    } else {
        req.limit as usize
    };
    let after = req.after_serial;
    let st = state.clone();
    let mut incidents =
        blocking(move || persist::after(&st.store, after, limit).map_err(store_status)).await?;
    // Open incidents change in memory first: show them as they are now.
    {
        let open = lock(&state.incidents);
        for i in &mut incidents {
            if let Some(cur) = open.get(i.serial) {
                *i = incident_to_pb(cur);
            }
        }
        // Open ones not stored yet (queued while the disk is slow or full).
        let stored: std::collections::HashSet<u64> = incidents.iter().map(|i| i.serial).collect();
        let full = incidents.len() >= limit;
        let last = incidents.last().map_or(u64::MAX, |i| i.serial);
        for cur in open.all() {
            if cur.serial > after && !stored.contains(&cur.serial) && (!full || cur.serial < last) {
                incidents.push(incident_to_pb(cur));
            }
        }
    }
    incidents.sort_by_key(|i| i.serial);
    incidents.truncate(limit);
    let last_serial = incidents.last().map_or(req.after_serial, |i| i.serial);
    Ok(pb::ListIncidentsResponse {
        incidents,
        last_serial,
    })
}

pub async fn get_incident(
    state: &Arc<State>,
    req: &pb::GetIncidentRequest,
) -> Result<pb::Incident, Status> {
    if let Some(cur) = lock(&state.incidents).get(req.serial) {
        return Ok(incident_to_pb(cur));
    }
    let serial = req.serial;
    let st = state.clone();
    blocking(move || persist::get(&st.store, serial).map_err(store_status))
        .await?
        .ok_or_else(|| Status::not_found(format!("no incident #{serial}")))
}

pub type IncidentStream = ReceiverStream<Result<pb::Incident, Status>>;

/// Stored incidents after `after_serial`, then live openings and updates.
pub async fn stream_incidents(
    state: Arc<State>,
    req: &pb::StreamIncidentsRequest,
    mut stop: watch::Receiver<bool>,
) -> Result<IncidentStream, Status> {
    // Subscribe first: an incident opened meanwhile is in one or the other
    // (or both; duplicates of a serial already sent are skipped).
    let mut live = state.incident_live.subscribe();
    let backlog = list_incidents(
        &state,
        &pb::ListIncidentsRequest {
            after_serial: req.after_serial,
            limit: u32::MAX,
        },
    )
    .await?
    .incidents;
    let (tx, rx) = mpsc::channel(64);
    let after = req.after_serial;
    tokio::spawn(async move {
        let run = async move {
            // What the backlog sent, to skip live copies of the same state.
            let mut sent = std::collections::HashMap::new();
            for i in backlog {
                sent.insert(i.serial, i.clone());
                if tx.send(Ok(i)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(inc) => {
                        if inc.serial <= after {
                            continue;
                        }
                        let pb = incident_to_pb(&inc);
                        if sent.get(&pb.serial) == Some(&pb) {
                            continue;
                        }
                        if tx.send(Ok(pb)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "incident stream client too slow");
                    }
                    Err(RecvError::Closed) => return,
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
