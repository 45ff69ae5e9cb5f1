//! `fdrctl incidents show`: an incident as text (header, where, account
//! records, audits with their process and ancestry) or one JSON object, then
//! the timeline of the snapshot frozen when it opened. Audits and timeline
//! are capped by `--limit` (with a line saying how many more there are):
//! the timeline shows the events around the incident's first audit. Pages
//! are read as they are printed, so memory stays bounded by the limit
//! (`--json` writes its audits and events as they arrive).

use std::{
    collections::{HashSet, VecDeque},
    io::Write,
};

use fdr_proto::v1::{self as pb, event::Detail};
use serde_json::{json, Value};

use super::{
    escape::escape as e,
    event_json,
    events::table_header,
    incident_view::{
        accounts, audit_json, audit_line, audits_kept, incident_head_json, snapshot_text,
    },
    quiet_pipe, severity_name, shell_words,
    snapshots::SnapshotPages,
    table_row, time_text, CtlError, Result,
};
use crate::client::Client;

/// Audits per `GetIncident` call.
const AUDIT_PAGE: usize = 1000;
/// Events per `GetSnapshot` page.
const EVENT_PAGE: u32 = 1000;

pub(super) async fn show(
    client: &mut Client,
    serial: u64,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let limit = limit.max(1);
    let mut i = audit_page(client, serial, 0, limit.min(AUDIT_PAGE)).await?;
    if json {
        return show_json_streamed(client, i, limit, out).await;
    }
    // Text: the audits shown (at most `limit`), then the timeline's.
    let mut next = i.next_audit_offset;
    while next != 0 && i.audits.len() < limit {
        let want = (limit - i.audits.len()).min(AUDIT_PAGE);
        let p = audit_page(client, serial, next, want).await?;
        next = p.next_audit_offset;
        if p.audits.is_empty() {
            break;
        }
        i.audits.extend(p.audits);
    }
    let timeline = timeline(client, &i, limit, &mut |_| Ok(true)).await?;
    quiet_pipe(out.write_all(show_text(&i, &timeline).as_bytes()))?;
    Ok(())
}

async fn audit_page(
    client: &mut Client,
    serial: u64,
    offset: u64,
    limit: usize,
) -> Result<pb::Incident> {
    let req = pb::GetIncidentRequest {
        serial,
        audit_offset: offset,
        audit_limit: limit as u32,
    };
    Ok(client.get_incident(req).await?.into_inner())
}

/// Events of the timeline not shown: before the first one shown, after
/// the last.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Omitted {
    pub before: u64,
    pub after: u64,
}

/// What `incidents show` can tell of an incident's snapshot.
#[derive(Debug)]
pub(super) enum Timeline {
    NoSnapshot,
    /// Its window has not ended yet.
    Open(u64),
    /// Evicted (or never committed).
    NotFound(u64),
    /// The events shown (none when they were written as they came), the
    /// snapshot's summary and gaps, and how many were left out.
    Events(u64, Box<SnapshotPages>, Omitted),
}

/// Which of a snapshot's events, in order, the timeline shows: up to
/// `limit`, of which at most half before the incident's first audit (the
/// latest of those), the rest from it on.
#[derive(Debug)]
struct Window {
    limit: usize,
    from: (i64, i32),
    lead: VecDeque<pb::Event>,
    started: bool,
    shown: usize,
    omitted: Omitted,
}

impl Window {
    fn new(limit: usize, from: Option<&prost_types::Timestamp>) -> Self {
        Window {
            limit,
            from: ts_key(from),
            lead: VecDeque::new(),
            started: false,
            shown: 0,
            omitted: Omitted::default(),
        }
    }

    /// Whether more events can still be shown.
    fn full(&self) -> bool {
        self.started && self.shown >= self.limit
    }

    /// Takes the next event; `emit` gets those shown, in order.
    fn push(
        &mut self,
        ev: pb::Event,
        emit: &mut impl FnMut(pb::Event) -> Result<()>,
    ) -> Result<()> {
        if !self.started {
            if ts_key(ev.time.as_ref()) < self.from {
                self.lead.push_back(ev);
                if self.lead.len() > self.limit / 2 {
                    self.lead.pop_front();
                    self.omitted.before += 1;
                }
                return Ok(());
            }
            self.start(emit)?;
        }
        if self.shown < self.limit {
            self.shown += 1;
            emit(ev)
        } else {
            self.omitted.after += 1;
            Ok(())
        }
    }

    fn start(&mut self, emit: &mut impl FnMut(pb::Event) -> Result<()>) -> Result<()> {
        self.started = true;
        while let Some(ev) = self.lead.pop_front() {
            self.shown += 1;
            emit(ev)?;
        }
        Ok(())
    }

    /// After the last event read; `total` events in the snapshot (the
    /// ones not read are counted as omitted after).
    fn finish(
        &mut self,
        total: Option<u64>,
        emit: &mut impl FnMut(pb::Event) -> Result<()>,
    ) -> Result<Omitted> {
        if !self.started {
            self.start(emit)?;
        }
        if let Some(total) = total {
            let seen = self.omitted.before + self.shown as u64 + self.omitted.after;
            self.omitted.after += total.saturating_sub(seen);
        }
        Ok(self.omitted)
    }
}

/// Reads the incident's snapshot page by page into a [`Window`] of at most
/// `limit` events. `emit` gets each event shown as soon as it is known
/// (returning `Ok(false)` keeps it out of the returned timeline: it was
/// written already). Stops reading once the window is full: the events
/// not read are counted from the snapshot's event count.
async fn timeline(
    client: &mut Client,
    i: &pb::Incident,
    limit: usize,
    emit: &mut dyn FnMut(&pb::Event) -> Result<bool>,
) -> Result<Timeline> {
    use pb::get_snapshot_response::Item as G;
    let id = i.snapshot_id;
    if id == 0 {
        return Ok(Timeline::NoSnapshot);
    }
    let mut req = pb::GetSnapshotRequest {
        id,
        limit: EVENT_PAGE,
        ..Default::default()
    };
    let mut snap = SnapshotPages::default();
    let mut window = Window::new(limit, i.first.as_ref());
    let mut keep = |ev: pb::Event| -> Result<()> {
        if emit(&ev)? {
            snap.events.push(ev);
        }
        Ok(())
    };
    let mut info: Option<pb::SnapshotInfo> = None;
    let mut gaps = Vec::new();
    loop {
        let mut stream = match client.get_snapshot(req.clone()).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => return Ok(Timeline::Open(id)),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(Timeline::NotFound(id)),
            Err(s) => return Err(s.into()),
        };
        let mut next = None;
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(G::Event(ev)) => window.push(ev, &mut keep)?,
                Some(G::NextCursor(c)) => next = Some(c),
                Some(G::Info(x)) if info.is_none() => info = Some(x),
                Some(G::Gap(g)) => gaps.push(g),
                // Processes and listening sockets are not shown here.
                _ => {}
            }
        }
        match next {
            Some(c) if !window.full() => req.cursor = c,
            _ => break,
        }
    }
    let total = info.as_ref().map(|x| x.event_count);
    let omitted = window.finish(total, &mut keep)?;
    snap.info = info;
    snap.gaps = gaps;
    Ok(Timeline::Events(id, Box::new(snap), omitted))
}

/// Writes `v` (a JSON object) without its closing brace, for fields to be
/// appended.
fn open_object(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let text = super::escape::json(v);
    let head = text.strip_suffix('}').unwrap_or(&text);
    out.write_all(head.as_bytes())
}

fn io(r: std::io::Result<()>) -> Result<()> {
    r.map_err(CtlError::Output)
}

/// `incidents show --json`: one object, written as its pages arrive — the
/// header, `audits` (at most `limit`; `audits_more` left out), then
/// `timeline` (`events`, at most `limit`, and `more_before`/`more_after`).
async fn show_json_streamed(
    client: &mut Client,
    first: pb::Incident,
    limit: usize,
    out: &mut impl Write,
) -> Result<()> {
    let serial = first.serial;
    let kept = audits_kept(&first);
    // What the timeline needs: its snapshot and the first audit's time.
    let head = pb::Incident {
        serial,
        snapshot_id: first.snapshot_id,
        first: first.first,
        ..Default::default()
    };
    io(open_object(out, &incident_head_json(&first)))?;
    io(out.write_all(b",\"audits\":["))?;
    let mut shown = 0usize;
    let mut page = first;
    loop {
        for a in std::mem::take(&mut page.audits) {
            if shown == limit {
                break;
            }
            if shown > 0 {
                io(out.write_all(b","))?;
            }
            io(out.write_all(super::escape::json(&audit_json(&a)).as_bytes()))?;
            shown += 1;
        }
        if page.next_audit_offset == 0 || shown >= limit {
            break;
        }
        let want = (limit - shown).min(AUDIT_PAGE);
        page = audit_page(client, serial, page.next_audit_offset, want).await?;
        if page.audits.is_empty() {
            break;
        }
    }
    io(write!(
        out,
        "],\"audits_more\":{},\"timeline\":",
        kept.saturating_sub(shown as u64)
    ))?;
    let mut first_event = true;
    let mut started = false;
    let t = {
        let mut emit = |ev: &pb::Event| -> Result<bool> {
            if !started {
                io(out.write_all(b"{\"status\":\"ok\",\"events\":["))?;
                started = true;
            }
            if !std::mem::take(&mut first_event) {
                io(out.write_all(b","))?;
            }
            io(out.write_all(super::escape::json(&event_json(ev)).as_bytes()))?;
            Ok(false)
        };
        timeline(client, &head, limit, &mut emit).await?
    };
    let tail = match &t {
        Timeline::Events(_, _, o) => {
            if !started {
                io(out.write_all(b"{\"status\":\"ok\",\"events\":["))?;
            }
            format!(
                "],\"more_before\":{},\"more_after\":{}}}",
                o.before, o.after
            )
        }
        other => super::escape::json(&timeline_json(other)),
    };
    io(writeln!(out, "{tail}}}"))?;
    quiet_pipe(out.flush())?;
    Ok(())
}

fn timeline_json(t: &Timeline) -> Value {
    match t {
        Timeline::NoSnapshot => json!({ "status": "none" }),
        Timeline::Open(_) => json!({ "status": "open" }),
        Timeline::NotFound(_) => json!({ "status": "not-found" }),
        Timeline::Events(_, s, o) => json!({
            "status": "ok",
            "events": s.events.iter().map(event_json).collect::<Vec<_>>(),
            "more_before": o.before,
            "more_after": o.after,
        }),
    }
}

/// `incidents show --json` of an incident and timeline in memory: the same
/// object [`show_json_streamed`] writes.
pub(super) fn show_json(i: &pb::Incident, t: &Timeline) -> Value {
    let mut v = incident_head_json(i);
    v["audits"] = Value::Array(i.audits.iter().map(audit_json).collect());
    v["audits_more"] = json!(audits_kept(i).saturating_sub(i.audits.len() as u64));
    v["timeline"] = timeline_json(t);
    v
}

/// `label   value` lines (the value escaped); empty values are left out.
fn field(s: &mut String, label: &str, value: impl AsRef<str>) {
    let value = value.as_ref();
    if !value.is_empty() {
        *s += &format!("{label:<12}{}\n", e(value));
    }
}

/// `incidents show`: header, where, accounts, audits, then the timeline.
pub(super) fn show_text(i: &pb::Incident, t: &Timeline) -> String {
    let mut s = format!(
        "incident #{}: {} {}\n",
        i.serial,
        severity_name(i.severity),
        e(&i.r#type)
    );
    field(&mut s, "summary", &i.summary);
    field(&mut s, "scope", &i.scope);
    // A console's answer names the agent's node; an agent's, its host.
    field(
        &mut s,
        "node",
        if i.node.is_empty() {
            &i.hostname
        } else {
            &i.node
        },
    );
    if !i.agent_instance.is_empty() {
        field(
            &mut s,
            "agent",
            format!("{} #{}", i.agent_instance, i.agent_serial),
        );
    }
    if let Some(c) = &i.container {
        field(&mut s, "container", format!("{} {}", c.name, c.id).trim());
        if !c.pod_name.is_empty() {
            field(&mut s, "pod", format!("{}/{}", c.pod_namespace, c.pod_name));
        }
        field(
            &mut s,
            "image",
            format!("{} {}", c.image, c.image_digest).trim(),
        );
        field(&mut s, "runtime", &c.runtime);
    }
    field(&mut s, "service", &i.service);
    field(&mut s, "model", &i.model);
    field(&mut s, "first", time_text(i.first.as_ref()));
    field(&mut s, "last", time_text(i.last.as_ref()));
    field(&mut s, "snapshot", snapshot_text(i.snapshot_id));
    s += &accounts_text(i);
    s += &audits_text(i);
    s += &timeline_text(i, t);
    s
}

/// Each account record: the account it names, who made the change, the
/// files and the command; then how many more were not kept.
fn accounts_text(i: &pb::Incident) -> String {
    let mut s = String::new();
    let list = accounts(i);
    for a in list {
        let how = if a.interactive {
            ", interactive"
        } else {
            ", not interactive"
        };
        let name = if a.account.is_empty() {
            "?"
        } else {
            &a.account
        };
        field(
            &mut s,
            "account",
            format!("{name} by {} (uid {}){how}", a.user, a.uid),
        );
        field(&mut s, "  files", a.files.join(", "));
        // Shell words are escaped already.
        let command = shell_words(&a.command);
        if !command.is_empty() {
            s += &format!("{:<12}{command}\n", "  command");
        }
    }
    let more = i.account_count.saturating_sub(list.len() as u64);
    if more > 0 {
        s += &format!("{:<12}… {more} more account records not kept\n", "");
    }
    s
}

fn audits_text(i: &pb::Incident) -> String {
    let shown = i.audits.len() as u64;
    let kept = audits_kept(i);
    let mut s = if i.audit_count > shown {
        format!("\naudits (first {shown} of {}):\n", i.audit_count)
    } else {
        format!("\naudits ({shown}):\n")
    };
    for a in &i.audits {
        s += &audit_line(a);
        s.push('\n');
        if let Some(p) = &a.process {
            s += &format!("    pid {} {} {}\n", p.pid, e(&p.exe), shell_words(&p.argv));
        }
        for x in &a.ancestry {
            s += &format!(
                "    <- {:>7} {} {}\n",
                x.pid,
                e(&x.exe),
                shell_words(&x.argv)
            );
        }
    }
    let more = kept.saturating_sub(shown);
    if more > 0 {
        s += &format!("… {more} more audits (--limit to show more)\n");
    }
    let unkept = i.audit_count.saturating_sub(kept.max(shown));
    if unkept > 0 && kept > 0 {
        s += &format!(
            "… {unkept} more audits not kept in the incident's record \
             (analysis.max_audits_per_incident); they are in its snapshot\n"
        );
    }
    s
}

/// The seqs of this incident's audit events and of the events that raised
/// them.
fn marked_seqs(i: &pb::Incident, events: &[pb::Event]) -> HashSet<u64> {
    let mut marked: HashSet<u64> = i.audits.iter().map(|a| a.event_seq).collect();
    for ev in events {
        if let Some(Detail::Audit(a)) = &ev.detail {
            if a.incident == i.serial || marked.contains(&ev.seq) {
                marked.extend([ev.seq, a.trigger_seq]);
            }
        }
    }
    marked
}

fn timeline_text(i: &pb::Incident, t: &Timeline) -> String {
    let (id, pages, omitted) = match t {
        Timeline::NoSnapshot => return "\nno snapshot: no timeline\n".into(),
        Timeline::Open(id) => {
            return format!("\nsnapshot {id} is still open: no timeline until its window ends\n")
        }
        Timeline::NotFound(id) => {
            return format!("\nsnapshot {id} is not stored (evicted?): no timeline\n")
        }
        Timeline::Events(id, pages, omitted) => (id, pages, omitted),
    };
    let complete = pages.info.as_ref().map_or(String::new(), |info| {
        format!(", {:.1}% complete", info.completeness * 100.0)
    });
    let mut s = format!(
        "\ntimeline (snapshot {id}{complete}; * marks this incident's audits and what raised \
         them):\n  {}\n",
        table_header()
    );
    if omitted.before > 0 {
        s += &format!("  … {} earlier events not shown\n", omitted.before);
    }
    let marked = marked_seqs(i, &pages.events);
    let mut gaps = pages.gaps.iter().peekable();
    let last_shown = pages.events.last().map(|ev| ts_key(ev.time.as_ref()));
    for ev in &pages.events {
        // Each gap where it began, among the events.
        while let Some(g) = gaps.next_if(|g| ts_key(g.from.as_ref()) <= ts_key(ev.time.as_ref())) {
            s += &gap_text(g);
        }
        let mark = if marked.contains(&ev.seq) { '*' } else { ' ' };
        s += &format!("{mark} {}\n", table_row(ev));
    }
    // Gaps after the last event shown: all of them when the timeline is
    // complete, else those before the events left out.
    gaps.filter(|g| omitted.after == 0 || last_shown.is_some_and(|l| ts_key(g.from.as_ref()) <= l))
        .for_each(|g| s += &gap_text(g));
    if omitted.after > 0 {
        s += &format!(
            "  … {} more events not shown (--limit to show more)\n",
            omitted.after
        );
    }
    s
}

fn ts_key(ts: Option<&prost_types::Timestamp>) -> (i64, i32) {
    ts.map_or((0, 0), |t| (t.seconds, t.nanos))
}

fn gap_text(g: &pb::Gap) -> String {
    format!("  -- {} --\n", super::snapshots::gap_line(g))
}

/// What `fdrctl` prints of a snapshot whose `GetSnapshot` pages were
/// `pages` (each page's messages, in order): `snapshot list` (its summary),
/// `snapshot show` and `incidents show` of `incident`, each as text and as
/// JSON. The entry of the `snapshot` fuzz target (`fuzz/`), so that a
/// corrupt stored snapshot is rendered by the very code `fdrctl` runs.
#[doc(hidden)]
pub fn render_fetched(
    pages: Vec<Vec<pb::GetSnapshotResponse>>,
    incident: &pb::Incident,
) -> Vec<u8> {
    let mut snap = SnapshotPages::default();
    for msg in pages.into_iter().flatten() {
        snap.add(msg);
    }
    let mut out = Vec::new();
    if let Some(i) = &snap.info {
        out.extend(
            format!(
                "{}\n{}\n",
                super::snapshots::info_row(i),
                super::snapshots::info_json(i)
            )
            .bytes(),
        );
    }
    for json in [false, true] {
        // Writing to a Vec cannot fail.
        let _ = super::snapshots::write_show(&mut out, &snap, json);
    }
    // The timeline as `incidents show` cuts it (default limit).
    let mut window = Window::new(100, incident.first.as_ref());
    let mut shown = Vec::new();
    let mut keep = |ev: pb::Event| -> Result<()> {
        shown.push(ev);
        Ok(())
    };
    for ev in std::mem::take(&mut snap.events) {
        let _ = window.push(ev, &mut keep);
    }
    let total = snap.info.as_ref().map(|x| x.event_count);
    let omitted = window.finish(total, &mut keep).unwrap_or_default();
    snap.events = shown;
    let id = incident.snapshot_id;
    let timeline = Timeline::Events(id, Box::new(snap), omitted);
    out.extend(show_text(incident, &timeline).bytes());
    out.extend(show_json(incident, &timeline).to_string().bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::incident_view::tests::backdoor;

    #[test]
    fn show_text_has_header_account_audits_and_no_timeline() {
        assert_eq!(
            show_text(&backdoor(), &Timeline::NoSnapshot),
            "incident #7: critical backdoor-account
summary     account fdrdemo added by root
scope       host
node        node-1
service     sshd.service
model       service:sshd.service
first       2023-11-14T22:13:20.000Z
last        2023-11-14T22:14:25.000Z
snapshot    -
account     fdrdemo by root (uid 0), interactive
  files     /etc/passwd, /etc/shadow
  command   useradd -M fdrdemo

audits (2):
2023-11-14T22:13:20.000Z high     account/new-account: account fdrdemo added
    pid 4242 /usr/sbin/useradd useradd -M fdrdemo
    <-    4200 /usr/bin/bash -bash
    <-       1 /usr/lib/systemd/systemd /sbin/init
2023-11-14T22:14:25.000Z high     account: password of fdrdemo set
    pid 4242 /usr/sbin/useradd passwd fdrdemo
    <-    4200 /usr/bin/bash -bash
    <-       1 /usr/lib/systemd/systemd /sbin/init

no snapshot: no timeline
"
        );
    }

    #[test]
    fn hostile_text_cannot_add_lines() {
        let mut i = backdoor();
        i.summary = "x\nincident #1: low fake".into();
        i.audits[0].message = "m\r\x1b[2Jfake".into();
        i.audits[0].process.as_mut().unwrap().exe = "/tmp/a\nb".into();
        i.account.as_mut().unwrap().files = vec!["/etc/x\ny".into()];
        let text = show_text(&i, &Timeline::NoSnapshot);
        let clean = show_text(&backdoor(), &Timeline::NoSnapshot);
        assert_eq!(text.lines().count(), clean.lines().count(), "{text}");
        assert!(!text.contains(['\r', '\x1b']), "{text:?}");
        assert!(
            text.contains(r"summary     x\nincident #1: low fake"),
            "{text}"
        );
        assert!(text.contains(r"m\r\x1b[2Jfake"), "{text}");
        assert!(text.contains(r"pid 4242 /tmp/a\nb useradd"), "{text}");
    }

    #[test]
    fn show_says_when_the_snapshot_is_open_or_gone() {
        let mut i = backdoor();
        i.audit_count = 300;
        let open = show_text(&i, &Timeline::Open(12));
        assert!(open.contains("\naudits (first 2 of 300):\n"), "{open}");
        assert!(open.ends_with("\nsnapshot 12 is still open: no timeline until its window ends\n"));
        let gone = show_text(&i, &Timeline::NotFound(12));
        assert!(gone.ends_with("\nsnapshot 12 is not stored (evicted?): no timeline\n"));
    }

    #[test]
    fn timeline_marks_audits_and_places_gaps_by_time() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let ev = |seq, seconds| pb::Event {
            seq,
            time: at(seconds),
            kind: pb::EventKind::Exec as i32,
            ..Default::default()
        };
        let pages = SnapshotPages {
            info: Some(pb::SnapshotInfo {
                completeness: 0.5,
                ..Default::default()
            }),
            gaps: vec![pb::Gap {
                from: at(1_700_000_001),
                to: at(1_700_000_002),
                lost: 3,
                cause: "kernel drops".into(),
                ..Default::default()
            }],
            events: vec![ev(100, 1_700_000_000), ev(101, 1_700_000_005)],
            ..Default::default()
        };
        let text = timeline_text(
            &backdoor(),
            &Timeline::Events(4, Box::new(pages), Omitted::default()),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "timeline (snapshot 4, 50.0% complete; * marks this incident's audits and what raised them):");
        assert!(lines[2].starts_with("  TIME "), "{text}");
        assert!(
            lines[3].starts_with("  2023-11-14T22:13:20.000Z exec "),
            "{text}"
        );
        assert_eq!(lines[4], "  -- gap 2023-11-14T22:13:21.000Z .. 2023-11-14T22:13:22.000Z: 3 events lost (kernel drops) --");
        assert!(
            lines[5].starts_with("* 2023-11-14T22:13:25.000Z exec "),
            "{text}"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn audit_events_and_their_triggers_are_marked() {
        let trigger = pb::Event {
            seq: 100,
            ..Default::default()
        };
        let audit_ev = pb::Event {
            seq: 101,
            detail: Some(Detail::Audit(pb::AuditDetail {
                incident: 7,
                trigger_seq: 100,
                ..Default::default()
            })),
            ..Default::default()
        };
        let other = pb::Event {
            seq: 102,
            ..Default::default()
        };
        let marked = marked_seqs(&backdoor(), &[trigger, audit_ev, other]);
        assert_eq!(marked, HashSet::from([100, 101, 140]));
    }

    fn ev(seq: u64, seconds: i64) -> pb::Event {
        pb::Event {
            seq,
            time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            kind: pb::EventKind::Exec as i32,
            ..Default::default()
        }
    }

    /// The window keeps at most half its events before the incident, the
    /// latest of them, and counts what it leaves out on both sides.
    #[test]
    fn timeline_window_centres_on_the_incident_and_counts_the_rest() {
        let at = prost_types::Timestamp {
            seconds: 1000,
            nanos: 0,
        };
        let mut w = Window::new(10, Some(&at));
        let mut shown = Vec::new();
        let mut keep = |e: pb::Event| -> Result<()> {
            shown.push(e.seq);
            Ok(())
        };
        // 100 events before, 100 from the incident on; 50 never read.
        for n in 0..200u64 {
            w.push(ev(n, 900 + n as i64), &mut keep).unwrap();
            if w.full() {
                break;
            }
        }
        let o = w.finish(Some(250), &mut keep).unwrap();
        assert_eq!(shown, (95..105).collect::<Vec<_>>());
        assert_eq!(
            o,
            Omitted {
                before: 95,
                after: 145
            }
        );
        // All before: the latest half shown.
        let mut w = Window::new(4, Some(&at));
        let mut shown = Vec::new();
        let mut keep = |e: pb::Event| -> Result<()> {
            shown.push(e.seq);
            Ok(())
        };
        for n in 0..10u64 {
            w.push(ev(n, n as i64), &mut keep).unwrap();
        }
        let o = w.finish(Some(10), &mut keep).unwrap();
        assert_eq!(shown, vec![8, 9]);
        assert_eq!(
            o,
            Omitted {
                before: 8,
                after: 0
            }
        );
    }

    #[test]
    fn more_lines_for_audits_timeline_and_accounts() {
        let mut i = backdoor();
        i.audit_count = 12_000;
        i.audits_kept = 10_000;
        let mut second = i.account.clone().unwrap();
        second.account = "evil".into();
        second.command = vec!["usermod".into(), "-aG".into(), "sudo".into(), "evil".into()];
        i.accounts = vec![i.account.clone().unwrap(), second];
        i.account_count = 70;
        let pages = SnapshotPages {
            events: vec![ev(1, 1_700_000_000)],
            ..Default::default()
        };
        let text = show_text(
            &i,
            &Timeline::Events(
                4,
                Box::new(pages),
                Omitted {
                    before: 3,
                    after: 40,
                },
            ),
        );
        assert!(
            text.contains("\naccount     fdrdemo by root (uid 0), interactive\n"),
            "{text}"
        );
        assert!(
            text.contains("\naccount     evil by root (uid 0), interactive\n"),
            "{text}"
        );
        assert!(
            text.contains("  command   usermod -aG sudo evil\n"),
            "{text}"
        );
        assert!(
            text.contains("… 68 more account records not kept\n"),
            "{text}"
        );
        assert!(text.contains("\naudits (first 2 of 12000):\n"), "{text}");
        assert!(
            text.contains("\n… 9998 more audits (--limit to show more)\n"),
            "{text}"
        );
        assert!(text.contains("\n… 2000 more audits not kept"), "{text}");
        assert!(
            text.contains("\n  … 3 earlier events not shown\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\n  … 40 more events not shown (--limit to show more)\n"),
            "{text}"
        );
        let v = show_json(&i, &Timeline::NoSnapshot);
        assert_eq!(v["accounts"][1]["account"], "evil");
        assert_eq!(v["account_count"], 70);
        assert_eq!(v["audits_more"], 9998);
        assert_eq!(v["timeline"]["status"], "none");
    }
}
