//! HTML shared by the console's web UI and `fdrctl report`: the page
//! around the content, an incident's summary (where, account records,
//! audits with their ancestry) and the timeline's section, which the one
//! script (`web/app.js`) builds. Every text from an event or an incident
//! is escaped twice over: control characters ([`super::escape`]), then
//! HTML.

use std::fmt::Write as _;

use super::{escape::escape, kind_name, severity_name, shell_words, time_text};
use crate::v1 as pb;

/// The script and the style sheet of every page.
pub const APP_JS: &str = include_str!("web/app.js");
pub const APP_CSS: &str = include_str!("web/app.css");

/// Text as HTML: control characters escaped, then `& < > " '`.
pub fn h(text: &str) -> String {
    h_escaped(&escape(text))
}

/// Text escaped already (shell words, `fdrctl`'s renderings) as HTML:
/// `& < > " '` only (its backslashes are its escapes, not doubled).
pub fn h_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL path segment or query value, percent-encoded (RFC 3986
/// unreserved characters kept).
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// How a page gets the script and the style sheet.
pub enum Assets<'a> {
    /// From the console (`/static/…`), with the session's CSRF token.
    Served { csrf: Option<&'a str> },
    /// In the page itself (a report: no network at all).
    Inline,
}

/// A whole page: `header` (the navigation, already HTML) and `main`
/// (the content, already HTML).
pub fn page(title: &str, assets: Assets<'_>, header: &str, main: &str) -> String {
    let mut s = String::with_capacity(main.len() + 4096);
    s += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
    s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    let _ = writeln!(s, "<title>{}</title>", h(title));
    match &assets {
        Assets::Served { csrf } => {
            s += "<link rel=\"stylesheet\" href=\"/static/app.css\">\n";
            if let Some(t) = csrf {
                let _ = writeln!(s, "<meta name=\"csrf-token\" content=\"{}\">", h(t));
            }
        }
        Assets::Inline => {
            s += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
                  style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n";
            // `</` cannot end the element early: the sheet has no such text.
            let _ = writeln!(s, "<style>\n{}\n</style>", APP_CSS.replace("</", "<\\/"));
        }
    }
    s += "</head><body>\n";
    s += header;
    s += "\n<main>\n";
    s += main;
    s += "\n</main>\n<footer>All times are UTC (+00:00).</footer>\n";
    match assets {
        Assets::Served { .. } => s += "<script src=\"/static/app.js\"></script>\n",
        Assets::Inline => {
            let _ = writeln!(s, "<script>\n{}\n</script>", APP_JS.replace("</", "<\\/"));
        }
    }
    s += "</body></html>\n";
    s
}

fn dd(s: &mut String, label: &str, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "<dt>{}</dt><dd data-field=\"{field}\">{}</dd>",
        h(label),
        h(value)
    );
}

/// A snapshot's window and completeness, as summary fields.
fn window_and_completeness(s: &mut String, i: &pb::SnapshotInfo) {
    let window = format!(
        "{} – {}",
        time_text(i.window_start.as_ref()),
        time_text(i.window_end.as_ref())
    );
    dd(s, "Window", "window", &window);
    let completeness = format!("{:.2} %", i.completeness * 100.0);
    dd(s, "Completeness", "completeness", &completeness);
}

/// A severity as a badge.
pub fn severity_badge(raw: i32) -> String {
    let name = severity_name(raw);
    format!("<span class=\"sev sev-{name}\">{name}</span>")
}

/// Where the console keeps its pages of incidents and snapshots; `None`
/// in a report (no links to follow).
pub struct Links {
    pub snapshot: Option<String>,
}

/// An incident's summary, account records and audits (with their
/// ancestry), as `section`s; `snap` is its snapshot's description when
/// there is one.
pub fn incident(inc: &pb::Incident, snap: Option<&pb::SnapshotInfo>, links: &Links) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<h1>Incident {} <span class=\"type\">{}</span> {}</h1>",
        inc.serial,
        h(&inc.r#type),
        severity_badge(inc.severity)
    );
    s += "<section class=\"incident\"><dl class=\"summary\">\n";
    dd(&mut s, "Summary", "summary", &inc.summary);
    dd(&mut s, "Serial", "serial", &inc.serial.to_string());
    dd(&mut s, "Type", "type", &inc.r#type);
    let _ = writeln!(
        s,
        "<dt>Severity</dt><dd data-field=\"severity\">{}</dd>",
        severity_badge(inc.severity)
    );
    let node = if inc.node.is_empty() {
        &inc.hostname
    } else {
        &inc.node
    };
    dd(&mut s, "Node", "node", node);
    dd(&mut s, "Scope", "scope", &inc.scope);
    if let Some(c) = &inc.container {
        dd(&mut s, "Pod", "pod", &c.pod_name);
        dd(&mut s, "Namespace", "namespace", &c.pod_namespace);
        dd(&mut s, "Container", "container", &c.name);
        dd(&mut s, "Image", "image", &c.image);
        dd(&mut s, "Image digest", "image-digest", &c.image_digest);
    }
    dd(&mut s, "Host service", "service", &inc.service);
    dd(&mut s, "Model", "model", &inc.model);
    dd(
        &mut s,
        "First seen",
        "first",
        &time_text(inc.first.as_ref()),
    );
    dd(&mut s, "Last seen", "last", &time_text(inc.last.as_ref()));
    if inc.agent_serial != 0 {
        dd(
            &mut s,
            "Agent serial",
            "agent-serial",
            &inc.agent_serial.to_string(),
        );
        dd(
            &mut s,
            "Agent instance",
            "agent-instance",
            &inc.agent_instance,
        );
    }
    if inc.snapshot_id != 0 {
        let text = format!("{}", inc.snapshot_id);
        match &links.snapshot {
            Some(href) => {
                let _ = writeln!(
                    s,
                    "<dt>Snapshot</dt><dd data-field=\"snapshot\"><a href=\"{}\">{}</a></dd>",
                    h(href),
                    h(&text)
                );
            }
            None => dd(&mut s, "Snapshot", "snapshot", &text),
        }
    } else {
        dd(&mut s, "Snapshot", "snapshot", "none");
    }
    if let Some(i) = snap {
        dd(&mut s, "Snapshot SHA-256", "sha256", &i.sha256);
        seal_rows(&mut s, i);
        window_and_completeness(&mut s, i);
    } else if !inc.snapshot_sha256.is_empty() {
        dd(&mut s, "Snapshot SHA-256", "sha256", &inc.snapshot_sha256);
    }
    s += "</dl></section>\n";
    s += &accounts(inc);
    s += &audits(inc);
    s
}

fn accounts(inc: &pb::Incident) -> String {
    let list: &[pb::AccountDetail] = if inc.accounts.is_empty() {
        inc.account.as_slice()
    } else {
        &inc.accounts
    };
    if list.is_empty() {
        return String::new();
    }
    let mut s = String::from("<section class=\"account\"><h2>Account records</h2>\n");
    for a in list {
        s += "<dl class=\"summary account-record\">\n";
        dd(
            &mut s,
            "Account",
            "account",
            if a.account.is_empty() {
                "?"
            } else {
                &a.account
            },
        );
        dd(
            &mut s,
            "Changed by",
            "user",
            &format!("{} (uid {})", a.user, a.uid),
        );
        dd(&mut s, "Change", "change", &a.r#type);
        dd(&mut s, "Files", "files", &a.files.join(", "));
        let _ = writeln!(
            s,
            "<dt>Interactive</dt><dd data-field=\"interactive\">{}</dd>",
            if a.interactive { "yes" } else { "no" }
        );
        // Shell words are escaped already; HTML still needs escaping.
        let command = shell_words(&a.command);
        if !command.is_empty() {
            let _ = writeln!(
                s,
                "<dt>Command</dt><dd data-field=\"command\"><code>{}</code></dd>",
                h_escaped(&command)
            );
        }
        dd(
            &mut s,
            "First change",
            "first-change",
            &time_text(a.first_change.as_ref()),
        );
        s += "</dl>\n";
    }
    let more = inc.account_count.saturating_sub(list.len() as u64);
    if more > 0 {
        let _ = writeln!(
            s,
            "<p class=\"more\">{more} more account records not kept.</p>"
        );
    }
    s += "</section>\n";
    s
}

fn audits(inc: &pb::Incident) -> String {
    let mut s = String::from("<section class=\"audits\"><h2>Audits</h2>\n");
    let shown = inc.audits.len() as u64;
    if inc.audit_count > shown {
        let _ = writeln!(
            s,
            "<p class=\"more\">The first {shown} of {} audits.</p>",
            inc.audit_count
        );
    }
    s += "<div class=\"scroll\"><table class=\"audits\"><thead><tr><th scope=\"col\">Time (UTC)</th>\
          <th scope=\"col\">Severity</th><th scope=\"col\">Rule</th><th scope=\"col\">Message</th>\
          </tr></thead><tbody>\n";
    for a in &inc.audits {
        let rule = if a.section.is_empty() {
            a.rule.clone()
        } else {
            format!("{}/{}", a.section, a.rule)
        };
        let _ = write!(
            s,
            "<tr class=\"audit\" data-seq=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.event_seq,
            h(&time_text(a.time.as_ref())),
            severity_badge(a.severity),
            h(&rule),
            h(&a.message)
        );
        // The process, then its ancestors, on a row of their own (command
        // lines are long).
        s += "<tr class=\"audit-ancestry\"><td colspan=\"4\"><ol class=\"ancestry\" aria-label=\"Process and ancestry\">";
        let mut line = |pid: u32, uid: u32, exe: &str, argv: &[String]| {
            let _ = write!(
                s,
                "<li><span class=\"pid\">pid {pid} uid {uid}</span> <span class=\"exe\">{}</span> <code>{}</code></li>",
                h(exe),
                h_escaped(&shell_words(argv))
            );
        };
        if let Some(p) = &a.process {
            line(p.pid, p.uid, &p.exe, &p.argv);
        }
        for x in &a.ancestry {
            line(x.pid, x.uid, &x.exe, &x.argv);
        }
        s += "</ol></td></tr>\n";
    }
    s += "</tbody></table></div></section>\n";
    s
}

/// A snapshot's description (a snapshot page's head).
pub fn snapshot(info: &pb::SnapshotInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<h1>Snapshot {}</h1>", info.id);
    s += "<section class=\"snapshot\"><dl class=\"summary\">\n";
    dd(
        &mut s,
        "Node",
        "node",
        if info.node.is_empty() {
            &info.host
        } else {
            &info.node
        },
    );
    dd(&mut s, "Scope", "scope", &info.scope);
    if let Some(c) = &info.container {
        dd(&mut s, "Pod", "pod", &c.pod_name);
        dd(&mut s, "Namespace", "namespace", &c.pod_namespace);
        dd(&mut s, "Image", "image", &c.image);
    }
    dd(&mut s, "Reason", "reason", &info.reason);
    dd(&mut s, "Taken", "at", &time_text(info.at.as_ref()));
    dd(&mut s, "Events", "events", &info.event_count.to_string());
    window_and_completeness(&mut s, info);
    let incidents: Vec<String> = info.incidents.iter().map(u64::to_string).collect();
    dd(&mut s, "Incidents", "incidents", &incidents.join(", "));
    dd(&mut s, "SHA-256", "sha256", &info.sha256);
    seal_rows(&mut s, info);
    dd(
        &mut s,
        "Agent instance",
        "agent-instance",
        &info.agent_instance,
    );
    s += "</dl></section>\n";
    s
}

/// The agent's seal of a snapshot, and what a console's check of it
/// found.
fn seal_rows(s: &mut String, info: &pb::SnapshotInfo) {
    match &info.seal {
        Some(seal) => {
            let mut text = format!(
                "{} by key {}",
                time_text(seal.sealed_at.as_ref()),
                crate::integrity::key_name(&seal.public_key)
            );
            if seal.prev_id != 0 {
                text += &format!(", after the agent's snapshot {}", seal.prev_id);
            }
            dd(s, "Sealed", "sealed", &text);
        }
        None => dd(s, "Sealed", "sealed", "no"),
    }
    if !info.verification.is_empty() {
        let _ = writeln!(
            s,
            "<dt>Integrity</dt><dd data-field=\"verification\" class=\"{}\">{}</dd>",
            if info.verification == "verified" {
                "verified"
            } else {
                "unverified"
            },
            h(&info.verification)
        );
    }
}

/// Where a timeline's rows come from.
pub enum TimelineSource<'a> {
    /// A console URL answering `…/query` and `…/event/{i}`.
    Served(&'a str),
    /// Inline data, gzip then base64 (a report).
    InlineGzipBase64(&'a str),
}

/// The timeline's section (the script fills it); `marks`: rows can be
/// the incident's own events.
pub fn timeline(source: TimelineSource<'_>, marks: bool) -> String {
    let mut s = String::from("<section class=\"timeline\" aria-label=\"Timeline\"");
    if marks {
        s += " data-marks=\"1\"";
    }
    match source {
        TimelineSource::Served(url) => {
            let _ = writeln!(s, " data-source=\"{}\"></section>", h(url));
        }
        TimelineSource::InlineGzipBase64(data) => {
            s += " data-inline=\"timeline-data\"></section>\n";
            // Base64 has no `<`: nothing in it can end the element.
            let _ = writeln!(
                s,
                "<script type=\"application/octet-stream\" id=\"timeline-data\" \
                 data-encoding=\"gzip-base64\">{data}</script>"
            );
        }
    }
    s
}

/// The kinds' names, for a filter's choices.
pub fn kind_names() -> Vec<String> {
    pb::EventKind::ALL
        .iter()
        .map(|k| kind_name(*k as i32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_covers_markup_and_control_characters() {
        assert_eq!(
            h("<script>\"x\" & 'y'\x1b"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;\\x1b"
        );
        assert_eq!(url_part("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn an_incident_names_its_account_and_escapes_hostile_text() {
        let inc = pb::Incident {
            serial: 9,
            r#type: "backdoor-account".into(),
            severity: pb::Severity::Critical as i32,
            node: "node-b".into(),
            account: Some(pb::AccountDetail {
                account: "<img src=x>".into(),
                user: "root".into(),
                files: vec!["/etc/passwd".into()],
                interactive: true,
                ..Default::default()
            }),
            audits: vec![pb::Audit {
                message: "a </td> b".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let html = incident(
            &inc,
            None,
            &Links {
                snapshot: Some("/snapshots/1".into()),
            },
        );
        assert!(html.contains("data-field=\"node\">node-b<"));
        assert!(html.contains("data-field=\"account\">&lt;img src=x&gt;<"));
        assert!(html.contains("data-field=\"interactive\">yes<"));
        assert!(html.contains("a &lt;/td&gt; b"));
        assert!(!html.contains("<img"));
    }

    #[test]
    fn inline_pages_hold_everything() {
        let p = page(
            "t",
            Assets::Inline,
            "",
            &timeline(TimelineSource::InlineGzipBase64("QUJD"), true),
        );
        assert!(p.contains("Content-Security-Policy"));
        assert!(!p.contains("src=\"/static"));
        assert!(p.contains("data-encoding=\"gzip-base64\">QUJD</script>"));
    }
}
