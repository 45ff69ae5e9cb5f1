//! `fdrctl incidents show`: an incident as text (header, where, account
//! record, audits with their process and ancestry) or one JSON object, then
//! the timeline of the snapshot frozen when it opened.

use std::{collections::HashSet, io::Write};

use fdr_proto::v1::{self as pb, event::Detail};
use serde_json::{json, Value};

use super::{
    escape::escape as e,
    event_json,
    events::table_header,
    incident_view::{incident_json, snapshot_text},
    quiet_pipe, severity_name, shell_words,
    snapshots::{fetch_snapshot, SnapshotPages},
    table_row, time_text, Result,
};
use crate::client::Client;

pub(super) async fn show(
    client: &mut Client,
    serial: u64,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let req = pb::GetIncidentRequest { serial };
    let i = client.get_incident(req).await?.into_inner();
    let timeline = timeline(client, i.snapshot_id).await?;
    let text = if json {
        super::escape::json(&show_json(&i, &timeline)) + "\n"
    } else {
        show_text(&i, &timeline)
    };
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

/// What `incidents show` can tell of an incident's snapshot.
#[derive(Debug)]
pub(super) enum Timeline {
    NoSnapshot,
    /// Its window has not ended yet.
    Open(u64),
    /// Evicted (or never committed).
    NotFound(u64),
    Events(u64, Box<SnapshotPages>),
}

async fn timeline(client: &mut Client, id: u64) -> Result<Timeline> {
    if id == 0 {
        return Ok(Timeline::NoSnapshot);
    }
    let req = pb::GetSnapshotRequest {
        id,
        limit: 1000,
        ..Default::default()
    };
    match fetch_snapshot(client, req).await {
        Ok(pages) => Ok(Timeline::Events(id, Box::new(pages))),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Timeline::Open(id)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Timeline::NotFound(id)),
        Err(s) => Err(s.into()),
    }
}

/// `incidents show --json`: the incident, and its timeline's events.
pub(super) fn show_json(i: &pb::Incident, t: &Timeline) -> Value {
    let mut v = incident_json(i);
    v["timeline"] = match t {
        Timeline::NoSnapshot => json!({ "status": "none" }),
        Timeline::Open(_) => json!({ "status": "open" }),
        Timeline::NotFound(_) => json!({ "status": "not-found" }),
        Timeline::Events(_, s) => json!({
            "status": "ok",
            "events": s.events.iter().map(event_json).collect::<Vec<_>>(),
        }),
    };
    v
}

/// `label   value` lines (the value escaped); empty values are left out.
fn field(s: &mut String, label: &str, value: impl AsRef<str>) {
    let value = value.as_ref();
    if !value.is_empty() {
        *s += &format!("{label:<12}{}\n", e(value));
    }
}

/// `incidents show`: header, where, account, audits, then the timeline.
pub(super) fn show_text(i: &pb::Incident, t: &Timeline) -> String {
    let mut s = format!(
        "incident #{}: {} {}\n",
        i.serial,
        severity_name(i.severity),
        e(&i.r#type)
    );
    field(&mut s, "summary", &i.summary);
    field(&mut s, "scope", &i.scope);
    field(&mut s, "node", &i.hostname);
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
    if let Some(a) = &i.account {
        let how = if a.interactive {
            ", interactive"
        } else {
            ", not interactive"
        };
        field(
            &mut s,
            "account",
            format!("{} (uid {}){how}", a.user, a.uid),
        );
        field(&mut s, "  files", a.files.join(", "));
        // Shell words are escaped already.
        let command = shell_words(&a.command);
        if !command.is_empty() {
            s += &format!("{:<12}{command}\n", "  command");
        }
    }
    s += &audits_text(i);
    s += &timeline_text(i, t);
    s
}

fn audits_text(i: &pb::Incident) -> String {
    let shown = i.audits.len() as u64;
    let mut s = if i.audit_count > shown {
        format!("\naudits (first {shown} of {}):\n", i.audit_count)
    } else {
        format!("\naudits ({shown}):\n")
    };
    for a in &i.audits {
        let what = [a.section.as_str(), a.rule.as_str()]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        s += &format!(
            "{} {:<8} {}: {}\n",
            time_text(a.time.as_ref()),
            severity_name(a.severity),
            e(&what),
            e(&a.message)
        );
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
    let (id, pages) = match t {
        Timeline::NoSnapshot => return "\nno snapshot: no timeline\n".into(),
        Timeline::Open(id) => {
            return format!("\nsnapshot {id} is still open: no timeline until its window ends\n")
        }
        Timeline::NotFound(id) => {
            return format!("\nsnapshot {id} is not stored (evicted?): no timeline\n")
        }
        Timeline::Events(id, pages) => (id, pages),
    };
    let complete = pages.info.as_ref().map_or(String::new(), |info| {
        format!(", {:.1}% complete", info.completeness * 100.0)
    });
    let mut s = format!(
        "\ntimeline (snapshot {id}{complete}; * marks this incident's audits and what raised \
         them):\n  {}\n",
        table_header()
    );
    let marked = marked_seqs(i, &pages.events);
    let mut gaps = pages.gaps.iter().peekable();
    for ev in &pages.events {
        // Each gap where it began, among the events.
        while let Some(g) = gaps.next_if(|g| ts_key(g.from.as_ref()) <= ts_key(ev.time.as_ref())) {
            s += &gap_text(g);
        }
        let mark = if marked.contains(&ev.seq) { '*' } else { ' ' };
        s += &format!("{mark} {}\n", table_row(ev));
    }
    gaps.for_each(|g| s += &gap_text(g));
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
    let id = incident.snapshot_id;
    let timeline = Timeline::Events(id, Box::new(snap));
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
account     root (uid 0), interactive
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
        let text = timeline_text(&backdoor(), &Timeline::Events(4, Box::new(pages)));
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
}
