//! API-only conversions: what the other stages never store.

use fdr_proto::v1 as pb;

use crate::{
    attribution::containers::Known,
    event::wire::{container_to_pb, timestamp},
    recorder::buffer::BufferStats,
};

pub fn known_container_to_pb(k: &Known) -> pb::KnownContainer {
    pb::KnownContainer {
        info: Some(
            k.meta
                .as_deref()
                .map(container_to_pb)
                .unwrap_or_else(|| pb::ContainerInfo {
                    id: k.id.to_string(),
                    ..Default::default()
                }),
        ),
        running: k.running,
        stopped: (!k.running).then(|| timestamp(k.stopped_ns)),
        cgroup_id: k.cgroup_id,
    }
}

pub fn buffer_stats_to_pb(s: BufferStats) -> pb::BufferStats {
    pb::BufferStats {
        events: s.events,
        bytes: s.bytes,
        capacity_bytes: s.capacity_bytes,
        evicted: s.evicted,
        critical_events: s.critical_events,
        critical_bytes: s.critical_bytes,
    }
}
