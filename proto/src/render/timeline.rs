//! The timeline of a snapshot (or of a live query) as the console's web UI
//! and `fdrctl report` show it: one row per event, the filters (kinds,
//! text, time range, the incident's own events), a histogram, pages and
//! each event's detail. The console answers queries with
//! [`Timeline::query`]; a report carries [`Timeline::inline`] and its
//! script answers the same queries the same way (the contract is in the
//! script, `web/app.js`).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::{
    detail_text,
    escape::escape,
    export::{target, UserLookup},
    haystack, kind_name, time_text,
};
use crate::v1::{self as pb, event::Detail};

/// Rows per page, and the most a query may ask for.
pub const PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Histogram bins, and the most a query may ask for.
pub const BINS: usize = 120;
pub const MAX_BINS: usize = 1000;

/// One event as the grid shows it; every text escaped.
#[derive(Debug, Clone)]
pub struct Row {
    /// Microseconds since the Unix epoch (0: no time).
    pub t_us: i64,
    pub time: String,
    pub kind: i32,
    pub user: String,
    pub pid: u32,
    /// Command or path, and port or address (the CSV's columns).
    pub what: String,
    pub addr: String,
    pub msg: String,
    /// One of the incident's own events (its triggers and audits).
    pub mark: bool,
    /// What a search looks in, lowercased.
    pub hay: String,
}

impl Row {
    fn json(&self, i: usize) -> Value {
        json!({
            "i": i, "t_us": self.t_us, "time": self.time, "kind": kind_name(self.kind),
            "user": self.user, "pid": self.pid, "what": self.what, "addr": self.addr,
            "msg": self.msg, "mark": self.mark,
        })
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Row>()
            + self.time.len()
            + self.user.len()
            + self.what.len()
            + self.addr.len()
            + self.msg.len()
            + self.hay.len()
    }
}

/// The events of an incident to mark: the seqs of the events that raised
/// its audits, and the number the audits' events carry (the agent's own
/// serial of the incident).
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub seqs: HashSet<u64>,
    pub incident: u64,
}

impl Marks {
    pub fn of(inc: &pb::Incident) -> Marks {
        Marks {
            seqs: inc.audits.iter().map(|a| a.event_seq).collect(),
            incident: if inc.agent_serial != 0 {
                inc.agent_serial
            } else {
                inc.serial
            },
        }
    }

    fn marks(&self, ev: &pb::Event) -> bool {
        if self.seqs.contains(&ev.seq) {
            return true;
        }
        matches!(&ev.detail, Some(Detail::Audit(a)) if self.incident != 0 && a.incident == self.incident)
    }
}

/// A loss in the window, as drawn.
#[derive(Debug, Clone)]
struct GapView {
    from_us: i64,
    to_us: i64,
    lost: u64,
    cause: String,
    kind: String,
    host_wide: bool,
}

/// What a query asks for (see the module's docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub offset: usize,
    pub limit: usize,
    /// `None`: every kind.
    pub kinds: Option<Vec<i32>>,
    /// Lowercased.
    pub text: String,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    pub marked: bool,
    pub bins: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            offset: 0,
            limit: PAGE,
            kinds: None,
            text: String::new(),
            from_us: None,
            to_us: None,
            marked: false,
            bins: BINS,
        }
    }
}

impl Query {
    /// From a URL's query parameters; a bad value is an error naming it.
    pub fn parse(params: &HashMap<String, String>) -> Result<Query, String> {
        fn num<T: std::str::FromStr>(
            params: &HashMap<String, String>,
            key: &str,
        ) -> Result<Option<T>, String> {
            match params.get(key).map(|v| v.trim()) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{key}: not a number: {}", escape(v))),
            }
        }
        let mut q = Query::default();
        if let Some(o) = num::<usize>(params, "offset")? {
            q.offset = o;
        }
        if let Some(l) = num::<usize>(params, "limit")? {
            q.limit = l.clamp(1, MAX_PAGE);
        }
        if let Some(b) = num::<usize>(params, "bins")? {
            q.bins = b.clamp(1, MAX_BINS);
        }
        q.from_us = num(params, "from_us")?;
        q.to_us = num(params, "to_us")?;
        if let Some(k) = params.get("kinds") {
            let mut kinds = Vec::new();
            for name in k.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                // A number: a kind this build does not name (a newer
                // agent's), shown by its number.
                match (pb::EventKind::from_name(name), name.parse::<i32>()) {
                    (Some(kind), _) => kinds.push(kind as i32),
                    (None, Ok(n)) => kinds.push(n),
                    (None, Err(_)) => return Err(format!("kinds: no kind {}", escape(name))),
                }
            }
            q.kinds = Some(kinds);
        }
        // As typed (the report's script does not trim either).
        q.text = params
            .get("q")
            .map(|t| t.to_lowercase())
            .unwrap_or_default();
        q.marked = matches!(params.get("marked").map(String::as_str), Some("1" | "true"));
        Ok(q)
    }
}

/// Rows of a source, ready to be queried.
pub struct Timeline {
    rows: Vec<Row>,
    events: Vec<pb::Event>,
    users: HashMap<u32, String>,
    window: (i64, i64),
    gaps: Vec<GapView>,
    completeness: Option<f64>,
    lost: u64,
    bytes: usize,
}

fn micros(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos.clamp(0, 999_999_999) / 1000))
    })
}

/// RFC 3339 with nanoseconds (the detail's time).
fn time_ns_text(t: Option<&prost_types::Timestamp>) -> String {
    let ms = time_text(t);
    match (t, ms.strip_suffix('Z')) {
        (Some(t), Some(head)) if head.len() > 4 && !ms.starts_with('@') => {
            format!(
                "{}.{:09}Z",
                &head[..head.len() - 4],
                t.nanos.clamp(0, 999_999_999)
            )
        }
        _ => ms,
    }
}

impl Timeline {
    /// A snapshot's events; users named from the snapshot, else by
    /// `lookup`.
    pub fn from_snapshot(mut snap: pb::Snapshot, marks: &Marks, lookup: &UserLookup) -> Timeline {
        let info = snap.info.clone().unwrap_or_default();
        let events = std::mem::take(&mut snap.events);
        let users: HashMap<u32, String> =
            snap.users.iter().map(|u| (u.uid, u.name.clone())).collect();
        let gaps = snap
            .gaps
            .iter()
            .map(|g| GapView {
                from_us: micros(g.from.as_ref()),
                to_us: micros(g.to.as_ref()),
                lost: g.lost,
                cause: escape(&g.cause).into_owned(),
                kind: if g.kind == 0 {
                    String::new()
                } else {
                    kind_name(g.kind)
                },
                host_wide: g.host_wide,
            })
            .collect();
        let lost = snap.gaps.iter().map(|g| g.lost).sum();
        let mut t = Timeline::build(events, users, marks, lookup);
        let (ws, we) = (
            micros(info.window_start.as_ref()),
            micros(info.window_end.as_ref()),
        );
        if ws != 0 && we >= ws {
            t.window = if t.window == (0, 0) {
                (ws, we)
            } else {
                (ws.min(t.window.0), we.max(t.window.1))
            };
        }
        t.gaps = gaps;
        t.lost = lost;
        t.completeness = Some(info.completeness);
        t
    }

    /// Events from a query (no snapshot around them: completeness
    /// unknown).
    pub fn from_events(events: Vec<pb::Event>, lookup: &UserLookup) -> Timeline {
        Timeline::build(events, HashMap::new(), &Marks::default(), lookup)
    }

    fn build(
        events: Vec<pb::Event>,
        mut users: HashMap<u32, String>,
        marks: &Marks,
        lookup: &UserLookup,
    ) -> Timeline {
        let mut rows = Vec::with_capacity(events.len());
        let mut bytes = 0;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for ev in &events {
            let p = ev.process.as_ref();
            let uid = p.map_or(0, |p| p.uid);
            let user = users.entry(uid).or_insert_with(|| lookup(uid)).as_str();
            let (what, addr) = target(ev);
            let t_us = micros(ev.time.as_ref());
            if t_us != 0 {
                lo = lo.min(t_us);
                hi = hi.max(t_us);
            }
            let mut hay = haystack(ev);
            hay.make_ascii_lowercase();
            if !hay.is_ascii() {
                hay = hay.to_lowercase();
            }
            let row = Row {
                t_us,
                time: time_text(ev.time.as_ref()),
                kind: ev.kind,
                user: escape(user).into_owned(),
                pid: p.map_or(0, |p| p.pid),
                what,
                addr,
                msg: detail_text(ev),
                mark: marks.marks(ev),
                hay,
            };
            bytes += row.bytes();
            rows.push(row);
        }
        bytes += events
            .iter()
            .map(prost::Message::encoded_len)
            .sum::<usize>()
            * 2;
        if lo > hi {
            (lo, hi) = (0, 0);
        }
        Timeline {
            rows,
            events,
            users,
            window: (lo, hi),
            gaps: Vec::new(),
            completeness: None,
            lost: 0,
            bytes,
        }
    }

    /// About what it holds in memory (for a cache's byte bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn matches_except_kind(&self, r: &Row, q: &Query) -> bool {
        (!q.marked || r.mark)
            && q.from_us.is_none_or(|f| r.t_us >= f)
            && q.to_us.is_none_or(|t| r.t_us <= t)
            && (q.text.is_empty() || r.hay.contains(q.text.as_str()))
    }

    /// The answer to `q` (see the module's docs for its shape).
    pub fn query(&self, q: &Query) -> Value {
        let wanted: Option<HashSet<i32>> = q.kinds.as_ref().map(|k| k.iter().copied().collect());
        let from = q.from_us.unwrap_or(self.window.0);
        let to = q.to_us.unwrap_or(self.window.1).max(from);
        let span = (i128::from(to) - i128::from(from) + 1).max(1);
        let bins = q.bins.max(1);
        // Per kind: rows, rows matching all but the kind filter.
        let mut per_kind: std::collections::BTreeMap<i32, (u64, u64)> = Default::default();
        let mut series: std::collections::BTreeMap<i32, Vec<u64>> = Default::default();
        let mut matched = 0usize;
        let mut page = Vec::new();
        for (i, r) in self.rows.iter().enumerate() {
            let e = per_kind.entry(r.kind).or_default();
            e.0 += 1;
            if !self.matches_except_kind(r, q) {
                continue;
            }
            e.1 += 1;
            if wanted.as_ref().is_some_and(|w| !w.contains(&r.kind)) {
                continue;
            }
            if matched >= q.offset && page.len() < q.limit {
                page.push(r.json(i));
            }
            matched += 1;
            // Rows without a time, or outside the drawn range, are in the
            // grid but in no bar.
            if r.t_us < from || r.t_us > to {
                continue;
            }
            let bin = ((i128::from(r.t_us) - i128::from(from)) * bins as i128 / span)
                .clamp(0, bins as i128 - 1) as usize;
            series.entry(r.kind).or_insert_with(|| vec![0; bins])[bin] += 1;
        }
        let kinds: Vec<Value> = per_kind
            .iter()
            .map(|(k, (count, m))| json!({"kind": kind_name(*k), "count": count, "matched": m}))
            .collect();
        let series: Vec<Value> = series
            .iter()
            .map(|(k, counts)| json!({"kind": kind_name(*k), "counts": counts}))
            .collect();
        json!({
            "total": self.rows.len(),
            "matched": matched,
            "offset": q.offset,
            "rows": page,
            "kinds": kinds,
            "window": {"from_us": self.window.0, "to_us": self.window.1},
            "histogram": {"from_us": from, "to_us": to, "bins": bins, "series": series},
            "gaps": self.gaps_json(),
            "completeness": self.completeness,
            "lost": self.lost,
        })
    }

    fn gaps_json(&self) -> Vec<Value> {
        self.gaps
            .iter()
            .map(|g| {
                json!({"from_us": g.from_us, "to_us": g.to_us, "lost": g.lost,
                       "cause": g.cause, "kind": g.kind, "host_wide": g.host_wide})
            })
            .collect()
    }

    /// Every field of row `i`'s event, and its ancestry; `None` past the
    /// end.
    pub fn detail(&self, i: usize) -> Option<Value> {
        let ev = self.events.get(i)?;
        let mut fields = Vec::new();
        fields.push(("time".to_owned(), time_ns_text(ev.time.as_ref())));
        flatten("", &super::event_json(ev), &mut fields);
        let fields: Vec<Value> = fields.into_iter().map(|(k, v)| json!([k, v])).collect();
        let ancestry: Vec<Value> = ev
            .ancestry
            .iter()
            .map(|a| {
                let user = self
                    .users
                    .get(&a.uid)
                    .cloned()
                    .unwrap_or_else(|| a.uid.to_string());
                json!({
                    "pid": a.pid, "uid": a.uid, "user": escape(&user),
                    "exe": escape(&a.exe), "cmd": super::shell_words(&a.argv),
                })
            })
            .collect();
        Some(json!({"i": i, "fields": fields, "ancestry": ancestry}))
    }

    /// Everything a report's script needs to answer queries itself, as
    /// compact JSON: the rows (with their haystacks), then every event's
    /// detail (last: the script draws the first page before it reads
    /// them).
    pub fn inline(&self) -> String {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut v = r.json(i);
                v["hay"] = Value::String(r.hay.clone());
                v
            })
            .collect();
        let head = json!({
            "total": self.rows.len(),
            "window": {"from_us": self.window.0, "to_us": self.window.1},
            "gaps": self.gaps_json(),
            "completeness": self.completeness,
            "lost": self.lost,
        });
        let mut out = serde_json::to_string(&head).unwrap_or_else(|_| "{}".into());
        out.pop(); // the closing brace
        out.push_str(",\"rows\":");
        out.push_str(&serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()));
        out.push_str(",\"details\":[");
        for i in 0..self.rows.len() {
            if i > 0 {
                out.push(',');
            }
            let d = self.detail(i).unwrap_or(Value::Null);
            out.push_str(&serde_json::to_string(&d).unwrap_or_else(|_| "null".into()));
        }
        out.push_str("]}");
        out
    }
}

/// `value`'s leaves as `a.b` → text, escaped; empty texts, nulls and
/// empty lists left out; lists of texts as shell words.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                // The ancestry has its own list; the time its precise field.
                if prefix.is_empty() && (k == "ancestry" || k == "time") {
                    continue;
                }
                flatten(&key(k), v, out);
            }
        }
        Value::Array(a) if a.is_empty() => {}
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let words: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            out.push((prefix.to_owned(), super::shell_words(&words)));
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::String(s) => out.push((prefix.to_owned(), escape(s).into_owned())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::export::uid_only;

    fn ev(seq: u64, secs: i64, kind: pb::EventKind, argv: &[&str]) -> pb::Event {
        pb::Event {
            seq,
            time: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 5_000,
            }),
            kind: kind as i32,
            process: Some(pb::Process {
                pid: 40 + seq as u32,
                uid: 0,
                comm: "sh".into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            scope: "host".into(),
            detail: (kind == pb::EventKind::Exec).then(|| {
                Detail::Exec(pb::ExecDetail {
                    filename: "/bin/sh".into(),
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })
            }),
            ..Default::default()
        }
    }

    fn snap() -> pb::Snapshot {
        pb::Snapshot {
            info: Some(pb::SnapshotInfo {
                window_start: Some(prost_types::Timestamp {
                    seconds: 100,
                    nanos: 0,
                }),
                window_end: Some(prost_types::Timestamp {
                    seconds: 200,
                    nanos: 0,
                }),
                completeness: 0.5,
                ..Default::default()
            }),
            events: vec![
                ev(1, 110, pb::EventKind::Exec, &["sh", "-c", "Marker\x1b"]),
                ev(2, 120, pb::EventKind::Fork, &["sh"]),
                ev(3, 190, pb::EventKind::Exec, &["id"]),
            ],
            users: vec![pb::UserName {
                uid: 0,
                name: "root".into(),
            }],
            gaps: vec![pb::Gap {
                lost: 7,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn params(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_histogram_and_pages() {
        let marks = Marks {
            seqs: [3].into(),
            incident: 0,
        };
        let t = Timeline::from_snapshot(snap(), &marks, &uid_only());
        let all = t.query(&Query::default());
        assert_eq!(all["total"], 3);
        assert_eq!(all["matched"], 3);
        assert_eq!(all["lost"], 7);
        assert_eq!(all["rows"][0]["user"], "root");
        // Control characters escaped in what the grid shows.
        assert!(all["rows"][0]["what"].as_str().unwrap().contains("\\x1b"));
        let exec = t.query(&Query::parse(&params(&[("kinds", "exec"), ("bins", "10")])).unwrap());
        assert_eq!(exec["matched"], 2);
        let series = exec["histogram"]["series"].as_array().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0]["kind"], "exec");
        // Window 100..200 s in 10 bins: 110 s → bin 1, 190 s → bin 9.
        assert_eq!(series[0]["counts"][1], 1);
        assert_eq!(series[0]["counts"][9], 1);
        // The toggles' counts ignore the kind filter.
        assert_eq!(exec["kinds"].as_array().unwrap().len(), 2);
        let none = t.query(&Query::parse(&params(&[("kinds", "")])).unwrap());
        assert_eq!(none["matched"], 0);
        let text = t.query(&Query::parse(&params(&[("q", "MARKER")])).unwrap());
        assert_eq!(text["matched"], 1);
        assert_eq!(text["rows"][0]["i"], 0);
        let marked = t.query(&Query::parse(&params(&[("marked", "1")])).unwrap());
        assert_eq!(marked["matched"], 1);
        assert_eq!(marked["rows"][0]["mark"], true);
        let page = t.query(&Query::parse(&params(&[("offset", "2"), ("limit", "1")])).unwrap());
        assert_eq!(page["rows"].as_array().unwrap().len(), 1);
        assert_eq!(page["rows"][0]["i"], 2);
        let range = t.query(
            &Query::parse(&params(&[("from_us", "115000000"), ("to_us", "200000000")])).unwrap(),
        );
        assert_eq!(range["matched"], 2);
        assert!(Query::parse(&params(&[("kinds", "nope")])).is_err());
        assert!(Query::parse(&params(&[("offset", "x")])).is_err());
    }

    #[test]
    fn details_and_inline_data() {
        let t = Timeline::from_snapshot(snap(), &Marks::default(), &uid_only());
        let d = t.detail(0).unwrap();
        let fields = d["fields"].as_array().unwrap();
        assert_eq!(fields[0][0], "time");
        assert_eq!(fields[0][1], "1970-01-01T00:01:50.000005000Z");
        assert!(fields.iter().any(|f| f[0] == "process.pid" && f[1] == "41"));
        assert!(fields
            .iter()
            .any(|f| f[0] == "detail.argv" && f[1].as_str().unwrap().contains("\\x1b")));
        assert!(t.detail(3).is_none());
        let text = t.inline();
        assert!(text.ends_with("]}") && text.contains(",\"details\":["));
        assert!(
            text.find("\"details\"") > text.find("\"rows\""),
            "details last"
        );
        let inline: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(inline["rows"].as_array().unwrap().len(), 3);
        assert_eq!(inline["details"].as_array().unwrap().len(), 3);
        assert!(inline["rows"][0]["hay"]
            .as_str()
            .unwrap()
            .contains("marker"));
    }
}
