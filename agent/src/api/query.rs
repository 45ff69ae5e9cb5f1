//! Filtering and paging events for `GetSnapshot` and `QueryEvents`.

use std::collections::HashSet;

use fdr_proto::v1 as pb;
use tonic::Status;

use super::convert::kind_from_pb;

/// Which events a query wants, and where its page starts.
pub struct EventQuery {
    kinds: HashSet<i32>,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
    text: Option<String>,
    /// Only events with a larger `seq` (the cursor).
    after_seq: u64,
    limit: usize,
}

fn ts_ns(t: &prost_types::Timestamp) -> Result<u64, Status> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(
            "timestamps must be after 1970 and normalized",
        ));
    }
    // Saturating: a time past 2554 (a corrupt stored event) overflowed.
    Ok((t.seconds as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.nanos as u64))
}

impl EventQuery {
    pub fn new(
        kinds: &[i32],
        from: Option<&prost_types::Timestamp>,
        to: Option<&prost_types::Timestamp>,
        text: &str,
        cursor: &str,
        limit: u32,
    ) -> Result<Self, Status> {
        for &k in kinds {
            if kind_from_pb(k).is_none() {
                return Err(Status::invalid_argument(format!("unknown event kind {k}")));
            }
        }
        let from_ns = from.map(ts_ns).transpose()?;
        let to_ns = to.map(ts_ns).transpose()?;
        if let (Some(f), Some(t)) = (from_ns, to_ns) {
            if f > t {
                return Err(Status::invalid_argument(
                    "bad time range: `from` is after `to`",
                ));
            }
        }
        let after_seq = if cursor.is_empty() {
            0
        } else {
            cursor
                .parse()
                .map_err(|_| Status::invalid_argument(format!("bad cursor {cursor:?}")))?
        };
        Ok(EventQuery {
            kinds: kinds.iter().copied().collect(),
            from_ns,
            to_ns,
            text: (!text.is_empty()).then(|| text.to_lowercase()),
            after_seq,
            limit: if limit == 0 {
                usize::MAX
            } else {
                limit as usize
            },
        })
    }

    pub fn matches(&self, ev: &pb::Event) -> bool {
        if ev.seq <= self.after_seq || (!self.kinds.is_empty() && !self.kinds.contains(&ev.kind)) {
            return false;
        }
        let t = ev.time.as_ref().and_then(|t| ts_ns(t).ok()).unwrap_or(0);
        if self.from_ns.is_some_and(|f| t < f) || self.to_ns.is_some_and(|x| t > x) {
            return false;
        }
        match &self.text {
            None => true,
            Some(needle) => haystack(ev).to_lowercase().contains(needle),
        }
    }

    /// The matching events of `events` (in order) for this page, and the
    /// cursor of the next page when there is one.
    pub fn page<'a>(
        &self,
        events: impl Iterator<Item = &'a pb::Event>,
    ) -> (Vec<&'a pb::Event>, Option<String>) {
        let mut out = Vec::new();
        for ev in events.filter(|e| self.matches(e)) {
            if out.len() == self.limit {
                let last: &pb::Event = out[out.len() - 1];
                return (out, Some(last.seq.to_string()));
            }
            out.push(ev);
        }
        (out, None)
    }
}

/// The text a search looks in: process, command line, and the event's detail.
pub fn haystack(ev: &pb::Event) -> String {
    let p = ev.process.clone().unwrap_or_default();
    format!(
        "{} {} {} {} {}",
        p.comm,
        p.exe,
        p.argv.join(" "),
        crate::ctl::detail_text(ev),
        ev.scope
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, secs: i64, kind: pb::EventKind, comm: &str) -> pb::Event {
        pb::Event {
            seq,
            time: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            kind: kind as i32,
            process: Some(pb::Process {
                comm: comm.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn filters_and_pages() {
        let evs: Vec<pb::Event> = (1..=10)
            .map(|i| {
                ev(
                    i,
                    i as i64,
                    if i % 2 == 0 {
                        pb::EventKind::Exec
                    } else {
                        pb::EventKind::Exit
                    },
                    if i == 4 { "CurL" } else { "sh" },
                )
            })
            .collect();
        let q = EventQuery::new(&[pb::EventKind::Exec as i32], None, None, "", "", 2).unwrap();
        let (page, next) = q.page(evs.iter());
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(next.as_deref(), Some("4"));
        let q = EventQuery::new(&[pb::EventKind::Exec as i32], None, None, "", "4", 2).unwrap();
        let (page, _) = q.page(evs.iter());
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 8]);
        let q = EventQuery::new(&[], None, None, "curl", "", 0).unwrap();
        assert_eq!(q.page(evs.iter()).0.len(), 1);
        let from = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        let to = prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        };
        let q = EventQuery::new(&[], Some(&from), Some(&to), "", "", 0).unwrap();
        assert_eq!(
            q.page(evs.iter())
                .0
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
    }

    #[test]
    fn times_past_u64_nanoseconds_do_not_overflow() {
        // Found by fuzzing a stored snapshot (fuzz/corpus/snapshot/year-4147).
        let late = ev(1, 1 << 36, pb::EventKind::Exec, "sh");
        let from = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        let q = EventQuery::new(&[], Some(&from), None, "", "", 0).unwrap();
        assert_eq!(q.page([late.clone()].iter()).0.len(), 1);
        let q = EventQuery::new(&[], None, Some(&from), "", "", 0).unwrap();
        assert!(q.page([late].iter()).0.is_empty());
    }

    #[test]
    fn bad_input_is_invalid_argument() {
        let a = prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        };
        let b = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        for res in [
            EventQuery::new(&[], Some(&a), Some(&b), "", "", 0),
            EventQuery::new(&[], None, None, "", "not-a-cursor", 0),
            EventQuery::new(&[99], None, None, "", "", 0),
        ] {
            assert_eq!(res.err().unwrap().code(), tonic::Code::InvalidArgument);
        }
    }
}
