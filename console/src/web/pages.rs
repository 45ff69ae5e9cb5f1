//! The pages: incidents, an incident, a snapshot, agents, models, a live
//! scope; and the admin actions (snapshot create, model relearn) that the
//! console forwards to the agent of a node. HTML is rendered here and by
//! `fdr_proto::render::html` (shared with `fdrctl report`); every text
//! from an agent is escaped.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    Extension, Form,
};
use fdr_proto::{
    render::{
        export::uid_only,
        html::{self, h, url_part, Assets, TimelineSource},
        time_text,
        timeline::Timeline,
    },
    v1 as pb,
};

use super::{
    auth::{admin_refusal, csrf_refusal, Principal, Role, Via},
    data::{self, status_response},
    Web,
};
use crate::{api, sync};

/// Incidents on one page of the list, and the most looked at for one.
const INCIDENTS_PER_PAGE: usize = 100;
const INCIDENTS_SCAN: usize = 20_000;
/// A call to an agent for a page (models, live queries, actions).
const AGENT_CALL: Duration = Duration::from_secs(20);
/// A live query stops paging after this long.
const LIVE_DEADLINE: Duration = Duration::from_secs(30);

pub async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html::APP_JS,
    )
        .into_response()
}

pub async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html::APP_CSS,
    )
        .into_response()
}

pub async fn root() -> Redirect {
    Redirect::to("/incidents")
}

/// The header: navigation, who is logged in, log out.
fn top(p: &Principal, active: &str) -> String {
    let mut s = String::from(
        "<header class=\"top\"><a class=\"brand\" href=\"/incidents\">fdr</a><nav aria-label=\"Main\">",
    );
    for (href, label) in [
        ("/incidents", "Incidents"),
        ("/agents", "Agents"),
        ("/models", "Models"),
        ("/live", "Live"),
    ] {
        let cur = if label == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(s, "<a href=\"{href}\"{cur}>{label}</a>");
    }
    let _ = write!(s, "</nav><span class=\"who\">{}</span>", p.role.name());
    if p.via == Via::Session {
        let _ = write!(
            s,
            "<form class=\"logout\" method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            h(p.csrf.as_deref().unwrap_or(""))
        );
    }
    s += "</header>";
    s
}

fn render(p: &Principal, active: &str, title: &str, main: &str) -> Response {
    Html(html::page(
        &format!("{title} · fdr console"),
        Assets::Served {
            csrf: p.csrf.as_deref(),
        },
        &top(p, active),
        main,
    ))
    .into_response()
}

fn error_page(p: &Principal, code: StatusCode, title: &str, msg: &str) -> Response {
    let main = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
        h(title),
        h(msg)
    );
    (code, render(p, "", title, &main)).into_response()
}

fn status_page(p: &Principal, s: &tonic::Status) -> Response {
    let code = status_response(s).status();
    error_page(p, code, "Not available", s.message())
}

/// A time given in a filter: RFC 3339 (`2026-12-03T18:00:00Z`), or a
/// date (`2026-12-03`, midnight UTC).
fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let full = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else if !t.ends_with('Z') && !t.contains('+') {
        format!("{t}Z")
    } else {
        t.to_owned()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map(|st| {
            st.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
        .map_err(|_| format!("{}: not a time (2026-12-03T18:00:00Z)", t))
}

/// The list's filters.
#[derive(Default)]
struct Filters {
    kind: String,
    severity: i32,
    node: String,
    namespace: String,
    image: String,
    from: Option<i64>,
    to: Option<i64>,
}

impl Filters {
    fn parse(q: &HashMap<String, String>) -> Result<Filters, String> {
        let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        let severity = match get("severity").as_str() {
            "" => 0,
            name => SEVERITIES
                .iter()
                .find(|s| s.name() == name)
                .map(|s| *s as i32)
                .ok_or_else(|| format!("severity: {name}? (low, medium, high, critical)"))?,
        };
        let time = |k: &str| -> Result<Option<i64>, String> {
            match get(k) {
                t if t.is_empty() => Ok(None),
                // A date as `to`: the whole day.
                t if k == "to" && t.len() == 10 => parse_time(&t)
                    .map(|s| Some(s + 86_399))
                    .map_err(|e| format!("{k}: {e}")),
                t => parse_time(&t).map(Some).map_err(|e| format!("{k}: {e}")),
            }
        };
        Ok(Filters {
            kind: get("type"),
            severity,
            node: get("node").to_lowercase(),
            namespace: get("namespace").to_lowercase(),
            image: get("image").to_lowercase(),
            from: time("from")?,
            to: time("to")?,
        })
    }

    fn keeps(&self, i: &pb::Incident) -> bool {
        let has =
            |hay: &str, needle: &str| needle.is_empty() || hay.to_lowercase().contains(needle);
        let c = i.container.clone().unwrap_or_default();
        let last = i
            .last
            .as_ref()
            .or(i.first.as_ref())
            .map_or(0, |t| t.seconds);
        let first = i.first.as_ref().map_or(0, |t| t.seconds);
        (self.kind.is_empty() || i.r#type == self.kind)
            && i.severity >= self.severity
            && has(
                if i.node.is_empty() {
                    &i.hostname
                } else {
                    &i.node
                },
                &self.node,
            )
            && has(&c.pod_namespace, &self.namespace)
            && (has(&c.image, &self.image)
                || (!self.image.is_empty() && has(&c.image_digest, &self.image)))
            && self.from.is_none_or(|f| last >= f)
            && self.to.is_none_or(|t| first <= t)
    }
}

const SEVERITIES: [pb::Severity; 4] = [
    pb::Severity::Low,
    pb::Severity::Medium,
    pb::Severity::High,
    pb::Severity::Critical,
];

const TYPES: [&str; 8] = [
    "backdoor-account",
    "backdoor-listener",
    "suspicious-binary",
    "reverse-shell",
    "data-exfiltration",
    "crypto-miner",
    "port-scan",
    "unexpected-behaviour",
];

fn where_text(i: &pb::Incident) -> String {
    match &i.container {
        Some(c) if !c.pod_name.is_empty() => format!("{}/{}", c.pod_namespace, c.pod_name),
        Some(c) if !c.name.is_empty() => format!("container {}", c.name),
        _ if !i.service.is_empty() => format!("host {}", i.service),
        _ => i.scope.clone(),
    }
}

pub async fn incidents(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let f = match Filters::parse(&q) {
        Ok(f) => f,
        Err(e) => return error_page(&p, StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let before: u64 = q.get("before").and_then(|b| b.parse().ok()).unwrap_or(0);
    let listed = web
        .con
        .with_index(move |ix| {
            ix.incidents_newest_first(before, INCIDENTS_PER_PAGE, INCIDENTS_SCAN, |i| f.keeps(i))
        })
        .await;
    let (list, next) = match listed {
        Ok(l) => l,
        Err(e) => return status_page(&p, &api::index_status(e)),
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let mut s = String::from(
        "<h1>Incidents</h1>\n<form class=\"filters\" method=\"get\" action=\"/incidents\">",
    );
    s += "<label>Type <select name=\"type\"><option value=\"\">any</option>";
    for t in TYPES {
        let sel = if get("type") == t { " selected" } else { "" };
        let _ = write!(s, "<option{sel}>{t}</option>");
    }
    s += "</select></label><label>Severity at least <select name=\"severity\"><option value=\"\">any</option>";
    for sev in SEVERITIES.iter() {
        let sel = if get("severity") == sev.name() {
            " selected"
        } else {
            ""
        };
        let _ = write!(s, "<option{sel}>{}</option>", sev.name());
    }
    s += "</select></label>";
    for (k, label, hint) in [
        ("node", "Node", ""),
        ("namespace", "Namespace", ""),
        ("image", "Image", ""),
        ("from", "From (UTC)", "2026-12-03T18:00:00Z"),
        ("to", "To (UTC)", "2026-12-03"),
    ] {
        let _ = write!(
            s,
            "<label>{label} <input name=\"{k}\" value=\"{}\" placeholder=\"{hint}\"></label>",
            h(get(k))
        );
    }
    s += "<button type=\"submit\">Filter</button> <a href=\"/incidents\">Clear</a></form>\n";
    if list.is_empty() && next.is_some() {
        let _ = write!(
            s,
            "<p class=\"empty\">No incident matches among the {INCIDENTS_SCAN} looked at; older ones follow.</p>"
        );
    } else if list.is_empty() {
        s += "<p class=\"empty\">No incident matches.</p>";
    } else {
        s += "<div class=\"scroll\"><table class=\"incidents\"><thead><tr><th scope=\"col\">Serial</th>\
              <th scope=\"col\">Last seen (UTC)</th><th scope=\"col\">Severity</th><th scope=\"col\">Type</th>\
              <th scope=\"col\">Node</th><th scope=\"col\">Where</th><th scope=\"col\">Image</th>\
              <th scope=\"col\">Summary</th><th scope=\"col\">Audits</th></tr></thead><tbody>\n";
        for i in &list {
            let node = if i.node.is_empty() {
                &i.hostname
            } else {
                &i.node
            };
            let image = i.container.as_ref().map_or("", |c| c.image.as_str());
            let _ = writeln!(
                s,
                "<tr class=\"incident\" data-serial=\"{serial}\" data-type=\"{ty}\" data-node=\"{nd}\">\
                 <td><a class=\"incident-link\" href=\"/incidents/{serial}\">{serial}</a></td><td>{last}</td>\
                 <td>{sev}</td><td>{ty}</td><td>{nd}</td><td>{wh}</td><td>{img}</td><td>{sum}</td><td>{n}</td></tr>",
                serial = i.serial,
                ty = h(&i.r#type),
                nd = h(node),
                last = h(&time_text(i.last.as_ref().or(i.first.as_ref()))),
                sev = html::severity_badge(i.severity),
                wh = h(&where_text(i)),
                img = h(image),
                sum = h(&i.summary),
                n = i.audit_count,
            );
        }
        s += "</tbody></table></div>\n";
    }
    if let Some(n) = next {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, v)| k.as_str() != "before" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_part(k), url_part(v)))
            .collect();
        params.sort();
        params.push(format!("before={n}"));
        let _ = write!(
            s,
            "<p class=\"pager\"><a class=\"older\" href=\"/incidents?{}\">Older incidents</a></p>",
            h(&params.join("&"))
        );
    }
    render(&p, "Incidents", "Incidents", &s)
}

pub async fn incident(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    Path(serial): Path<u64>,
) -> Response {
    let inc = match data::incident(&web, serial).await {
        Ok(i) => i,
        Err(e) => return status_page(&p, &e),
    };
    let snap_id = inc.snapshot_id;
    let info = if snap_id != 0 {
        web.con
            .with_index(move |ix| ix.snapshot(snap_id))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let links = html::Links {
        snapshot: info.as_ref().map(|i| format!("/snapshots/{}", i.id)),
    };
    let mut s = html::incident(&inc, info.as_ref(), &links);
    match &info {
        Some(i) => {
            let _ = write!(
                s,
                "<section class=\"evidence\"><h2>Timeline of snapshot {id}</h2>\
                 <p><a class=\"package\" href=\"/snapshots/{id}/package\" download>Download the forensic package</a> \
                 (CSV, JSON Lines and a manifest with the SHA-256, as one zip)</p></section>",
                id = i.id
            );
            s += &html::timeline(
                TimelineSource::Served(&format!("/api/timeline/incident/{serial}")),
                true,
            );
        }
        None => {
            s += "<p class=\"empty\">The console holds no snapshot of this incident (not copied yet, \
                  evicted by retention, or none was frozen).</p>";
        }
    }
    render(&p, "Incidents", &format!("Incident {serial}"), &s)
}

pub async fn snapshot(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Response {
    let info = match web.con.with_index(move |ix| ix.snapshot(id)).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return error_page(
                &p,
                StatusCode::NOT_FOUND,
                "Not available",
                &format!("no snapshot {id} in the console (never copied, or evicted by retention)"),
            )
        }
        Err(e) => return status_page(&p, &api::index_status(e)),
    };
    let mut s = html::snapshot(&info);
    let links: Vec<String> = info
        .incidents
        .iter()
        .map(|n| format!("<a href=\"/incidents/{n}\">{n}</a>"))
        .collect();
    let _ = write!(
        s,
        "<p><a class=\"package\" href=\"/snapshots/{id}/package\" download>Download the forensic package</a>{}</p>",
        if links.is_empty() {
            String::new()
        } else {
            format!(" · incidents {}", links.join(", "))
        }
    );
    s += &html::timeline(
        TimelineSource::Served(&format!("/api/timeline/snapshot/{id}")),
        false,
    );
    render(&p, "Incidents", &format!("Snapshot {id}"), &s)
}

pub async fn agents(State(web): State<Arc<Web>>, Extension(p): Extension<Principal>) -> Response {
    let list = match api::agents_list(&web.con).await {
        Ok(l) => l,
        Err(e) => return status_page(&p, &e),
    };
    let mut s = String::from("<h1>Agents</h1>\n");
    if list.is_empty() {
        s += "<p class=\"empty\">No agent is configured or discovered.</p>";
    } else {
        s += "<div class=\"scroll\"><table class=\"agents\"><thead><tr><th scope=\"col\">Node</th>\
              <th scope=\"col\">Version</th><th scope=\"col\">Reachable</th><th scope=\"col\">Last sync (UTC)</th>\
              <th scope=\"col\">Last contact (UTC)</th><th scope=\"col\">Lag</th><th scope=\"col\">Kernel drops</th>\
              <th scope=\"col\">Runtime in use</th><th scope=\"col\">Incidents</th><th scope=\"col\">Snapshots</th>\
              <th scope=\"col\">Evidence integrity</th><th scope=\"col\">Address</th></tr></thead><tbody>\n";
        for a in &list {
            let reach = if a.reachable {
                "<span class=\"ok\">yes</span>".to_owned()
            } else {
                format!(
                    "<span class=\"bad\">no</span> <span class=\"why\">{}</span>",
                    h(&a.error)
                )
            };
            let _ = writeln!(
                s,
                "<tr class=\"agent\" data-node=\"{node}\" data-reachable=\"{r}\"><td>{node}</td><td>{ver}</td>\
                 <td>{reach}</td><td>{sync}</td><td>{contact}</td><td>{lag}</td><td>{drops}</td><td>{rt}</td>\
                 <td>{inc}</td><td>{snaps}{pending}</td><td>{integrity}</td><td>{url}</td></tr>",
                node = h(&a.node),
                r = a.reachable,
                ver = h(&a.version),
                sync = h(&time_text(a.last_sync.as_ref())),
                contact = h(&time_text(a.last_contact.as_ref())),
                lag = a.lag,
                drops = a.kernel_drops,
                rt = h(&if a.runtimes.is_empty() {
                    "none seen".to_owned()
                } else {
                    a.runtimes.join(", ")
                }),
                inc = a.incidents,
                snaps = a.snapshots,
                pending = if a.snapshots_pending > 0 {
                    format!(" ({} pending)", a.snapshots_pending)
                } else {
                    String::new()
                },
                url = h(&a.url),
                integrity = integrity_cell(a),
            );
        }
        s += "</tbody></table></div>\n";
        // Each agent's problems in full, below the table.
        for a in list.iter().filter(|a| !a.integrity_problems.is_empty()) {
            let _ = writeln!(
                s,
                "<section class=\"error integrity\" data-node=\"{}\"><h2>Evidence of {} does not verify</h2><ul>",
                h(&a.node),
                h(&a.node)
            );
            for p in &a.integrity_problems {
                let _ = writeln!(s, "<li>{}</li>", h(p));
            }
            s += "</ul></section>\n";
        }
    }
    render(&p, "Agents", "Agents", &s)
}

/// An agent's evidence integrity in a cell: the snapshots verified, and
/// whether anything did not verify (listed below the table).
fn integrity_cell(a: &pb::Agent) -> String {
    let key = if a.signing_key.is_empty() {
        "no key pinned".to_owned()
    } else {
        format!("key {}", fdr_proto::integrity::key_name(&a.signing_key))
    };
    if a.integrity_problems.is_empty() && a.snapshots_unverified == 0 {
        format!(
            "<span class=\"ok\">{} verified</span> <span class=\"why\">{}</span>",
            a.snapshots_verified,
            h(&key)
        )
    } else {
        format!(
            "<span class=\"bad\">{} problems</span> <span class=\"why\">{} verified, {} not; {}</span>",
            a.integrity_problems.len(),
            a.snapshots_verified,
            a.snapshots_unverified,
            h(&key)
        )
    }
}

/// A client to the reachable agent of `node`.
async fn agent_client(web: &Web, node: &str) -> Result<fdr_cli::client::Client, String> {
    let live = web
        .con
        .live_agents()
        .into_iter()
        .find(|l| l.node == node && l.reachable)
        .ok_or_else(|| format!("no reachable agent on node {node}"))?;
    let tgt = sync::target(&live.url, &web.con.cfg.agents).map_err(|e| e.to_string())?;
    tokio::time::timeout(AGENT_CALL, fdr_cli::client::connect(&tgt))
        .await
        .map_err(|_| format!("node {node}: connecting timed out"))?
        .map_err(|e| format!("node {node}: {e}"))
}

/// A call to an agent, within [`AGENT_CALL`]; the error as text.
async fn agent_call<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    tokio::time::timeout(AGENT_CALL, call)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{what}: {}", s.message()))
}

fn model_state(m: &pb::Model) -> String {
    match pb::ModelState::try_from(m.state) {
        Ok(pb::ModelState::Learning) => {
            format!("learning until {}", time_text(m.learning_until.as_ref()))
        }
        Ok(pb::ModelState::Active) => {
            format!("active since {}", time_text(m.learning_until.as_ref()))
        }
        _ => "?".into(),
    }
}

/// The nodes of the agents that answer now, sorted.
fn reachable_nodes(web: &Web) -> Vec<String> {
    let mut n: Vec<String> = web
        .con
        .live_agents()
        .into_iter()
        .filter(|l| l.reachable && !l.node.is_empty())
        .map(|l| l.node)
        .collect();
    n.sort();
    n.dedup();
    n
}

pub async fn models(State(web): State<Arc<Web>>, Extension(p): Extension<Principal>) -> Response {
    let nodes = reachable_nodes(&web);
    let calls = nodes.iter().map(|node| {
        let web = web.clone();
        let node = node.clone();
        async move {
            let r = async {
                let mut c = agent_client(&web, &node).await?;
                let mut all = Vec::new();
                let mut cursor = String::new();
                for _ in 0..100 {
                    let page = agent_call(
                        "ListModels",
                        c.list_models(pb::ListModelsRequest {
                            cursor: cursor.clone(),
                            limit: 0,
                        }),
                    )
                    .await?;
                    all.extend(page.models);
                    if page.next_cursor.is_empty() {
                        break;
                    }
                    cursor = page.next_cursor;
                }
                Ok::<_, String>(all)
            }
            .await;
            (node, r)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut s = String::from("<h1>Runtime models</h1>\n<p class=\"hint\">Per image or host service, from each reachable agent.</p>\n");
    let mut rows = String::new();
    let mut errors = String::new();
    for (node, r) in results {
        match r {
            Ok(models) => {
                for m in models {
                    let sections: Vec<String> = m
                        .sections
                        .iter()
                        .map(|x| format!("{} {}", x.name, x.items.len()))
                        .collect();
                    let _ = writeln!(
                        rows,
                        "<tr class=\"model\" data-node=\"{nd}\" data-key=\"{key}\"><td>{nd}</td>\
                         <td><a href=\"/models/{nu}/{ku}\">{key}</a></td><td>{state}</td><td>{items}</td>\
                         <td>{anom}</td><td>{sections}</td></tr>",
                        nd = h(&node),
                        key = h(&m.key),
                        nu = url_part(&node),
                        ku = url_part(&m.key),
                        state = h(&model_state(&m)),
                        items = m.item_count,
                        anom = m.anomalies,
                        sections = h(&sections.join(", ")),
                    );
                }
            }
            Err(e) => {
                let _ = write!(errors, "<li>{}: {}</li>", h(&node), h(&e));
            }
        }
    }
    if !errors.is_empty() {
        let _ = write!(s, "<ul class=\"error\" role=\"alert\">{errors}</ul>");
    }
    if rows.is_empty() {
        s += "<p class=\"empty\">No model (or no reachable agent).</p>";
    } else {
        s += "<div class=\"scroll\"><table class=\"models\"><thead><tr><th scope=\"col\">Node</th>\
              <th scope=\"col\">Model</th><th scope=\"col\">State</th><th scope=\"col\">Items</th>\
              <th scope=\"col\">Anomalies</th><th scope=\"col\">Sections</th></tr></thead><tbody>\n";
        s += &rows;
        s += "</tbody></table></div>";
    }
    render(&p, "Models", "Models", &s)
}

/// Items learned over time, per section, as an SVG histogram (server
/// drawn: no script needed).
fn learned_histogram(m: &pb::Model) -> String {
    let times: Vec<(String, i64)> = m
        .sections
        .iter()
        .flat_map(|s| {
            s.items
                .iter()
                .filter_map(|i| i.learned_at.as_ref().map(|t| (s.name.clone(), t.seconds)))
        })
        .collect();
    if times.is_empty() {
        return String::new();
    }
    let lo = times.iter().map(|t| t.1).min().unwrap_or(0);
    let hi = times
        .iter()
        .map(|t| t.1)
        .max()
        .unwrap_or(0)
        .max(lo.saturating_add(1));
    const BINS: usize = 60;
    let mut bins: Vec<HashMap<String, u64>> = vec![HashMap::new(); BINS];
    for (sec, t) in &times {
        let b = ((i128::from(*t) - i128::from(lo)) * BINS as i128
            / (i128::from(hi) - i128::from(lo) + 1)) as usize;
        *bins[b.min(BINS - 1)].entry(sec.clone()).or_default() += 1;
    }
    let max = bins
        .iter()
        .map(|b| b.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, hgt) = (600.0, 100.0);
    let bw = w / BINS as f64;
    let mut s = format!(
        "<figure class=\"learned\"><svg class=\"learned-histogram\" viewBox=\"0 0 {w} {}\" role=\"img\" \
         aria-label=\"{} items learned between {} and {}\" preserveAspectRatio=\"none\">",
        hgt + 14.0,
        times.len(),
        h(&time_text(Some(&prost_types::Timestamp { seconds: lo, nanos: 0 }))),
        h(&time_text(Some(&prost_types::Timestamp { seconds: hi, nanos: 0 }))),
    );
    for (i, b) in bins.iter().enumerate() {
        let mut y = hgt;
        let mut secs: Vec<_> = b.iter().collect();
        secs.sort();
        for (sec, n) in secs {
            let bh = *n as f64 / max as f64 * hgt;
            y -= bh;
            let _ = write!(
                s,
                "<rect class=\"tl-bar k-{cls}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw2:.1}\" height=\"{bh:.1}\">\
                 <title>{sec}: {n}</title></rect>",
                cls = h(sec),
                x = i as f64 * bw,
                bw2 = (bw - 1.0).max(0.5),
                sec = h(sec),
            );
        }
    }
    let _ = write!(
        s,
        "</svg><figcaption>Items learned over time: {} – {} (UTC)</figcaption></figure>",
        h(&time_text(Some(&prost_types::Timestamp {
            seconds: lo,
            nanos: 0
        }))),
        h(&time_text(Some(&prost_types::Timestamp {
            seconds: hi,
            nanos: 0
        }))),
    );
    s
}

pub async fn model(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    Path((node, key)): Path<(String, String)>,
) -> Response {
    let r = async {
        let mut c = agent_client(&web, &node).await?;
        let mut model: Option<pb::Model> = None;
        let mut cursor = String::new();
        for _ in 0..100 {
            let page = agent_call(
                "GetModel",
                c.get_model(pb::GetModelRequest {
                    key: key.clone(),
                    cursor: cursor.clone(),
                    limit: 0,
                }),
            )
            .await?;
            let next = page.next_cursor.clone();
            match &mut model {
                None => model = Some(page),
                Some(m) => {
                    for sec in page.sections {
                        match m.sections.iter_mut().find(|x| x.name == sec.name) {
                            Some(x) => x.items.extend(sec.items),
                            None => m.sections.push(sec),
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        model.ok_or_else(|| "no such model".to_owned())
    }
    .await;
    let m = match r {
        Ok(m) => m,
        Err(e) => {
            return error_page(
                &p,
                StatusCode::SERVICE_UNAVAILABLE,
                "Model not available",
                &e,
            )
        }
    };
    let mut s = format!(
        "<h1>Model <code>{}</code></h1>\n<dl class=\"summary\"><dt>Node</dt><dd data-field=\"node\">{}</dd>\
         <dt>State</dt><dd data-field=\"state\">{}</dd><dt>Learning since</dt><dd>{}</dd>\
         <dt>Items</dt><dd data-field=\"items\">{}</dd><dt>Anomalies</dt><dd>{}</dd></dl>\n",
        h(&m.key),
        h(&node),
        h(&model_state(&m)),
        h(&time_text(m.learning_since.as_ref())),
        m.item_count,
        m.anomalies
    );
    if p.role == Role::Admin {
        let _ = write!(
            s,
            "<form class=\"relearn\" method=\"post\" action=\"/models/relearn\" \
             data-confirm=\"Forget what this model learned and learn again?\">\
             <input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"key\" value=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Relearn</button></form>",
            h(&node),
            h(&m.key),
            h(p.csrf.as_deref().unwrap_or(""))
        );
    }
    s += &learned_histogram(&m);
    for sec in &m.sections {
        let _ = write!(
            s,
            "<section class=\"model-section\"><h2>{} ({})</h2><div class=\"scroll\"><table class=\"items\">\
             <thead><tr><th scope=\"col\">Item</th><th scope=\"col\">Learned (UTC)</th></tr></thead><tbody>",
            h(&sec.name),
            sec.items.len()
        );
        for it in &sec.items {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                h(&it.value),
                h(&time_text(it.learned_at.as_ref()))
            );
        }
        s += "</tbody></table></div></section>\n";
    }
    render(&p, "Models", &format!("Model {}", m.key), &s)
}

fn done_page(p: &Principal, title: &str, msg: &str, back: &str) -> Response {
    let main = format!(
        "<h1>{}</h1><p class=\"ok\" role=\"status\">{}</p><p><a href=\"{}\">Back</a></p>",
        h(title),
        h(msg),
        h(back)
    );
    render(p, "", title, &main)
}

/// An admin's change from a form: its CSRF token checked, the admin
/// role, then the fields it needs (each not empty).
fn admin_form<const N: usize>(
    p: &Principal,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    fields: [&str; N],
) -> Result<[String; N], Box<Response>> {
    if let Some(r) = csrf_refusal(p, headers, form.get("csrf").map(String::as_str)) {
        return Err(Box::new(r));
    }
    if let Some(r) = admin_refusal(p) {
        return Err(Box::new(r));
    }
    let values = fields.map(|f| form.get(f).map(|v| v.trim().to_owned()).unwrap_or_default());
    if values.iter().any(String::is_empty) {
        return Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("{} are needed\n", fields.join(" and ")),
            )
                .into_response(),
        ));
    }
    Ok(values)
}

pub async fn relearn(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let [node, key] = match admin_form(&p, &headers, &form, ["node", "key"]) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let r = async {
        let mut c = agent_client(&web, &node).await?;
        agent_call(
            "RelearnModel",
            c.relearn_model(pb::RelearnModelRequest {
                key: key.clone(),
                all: false,
            }),
        )
        .await
    }
    .await;
    match r {
        Ok(resp) => {
            tracing::info!(%node, %key, models = resp.count, "web: model relearn by an admin");
            done_page(
                &p,
                "Relearning",
                &format!(
                    "{} model(s) on {node} restarted learning: {}",
                    resp.count,
                    resp.keys.join(", ")
                ),
                &format!("/models/{}/{}", url_part(&node), url_part(&key)),
            )
        }
        Err(e) => error_page(&p, StatusCode::BAD_GATEWAY, "Relearn failed", &e),
    }
}

pub async fn create_snapshot(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let [node, scope] = match admin_form(&p, &headers, &form, ["node", "scope"]) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let reason = form
        .get("reason")
        .filter(|r| !r.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "taken from the console's web UI".into());
    let r = async {
        let mut c = agent_client(&web, &node).await?;
        agent_call(
            "CreateSnapshot",
            c.create_snapshot(pb::CreateSnapshotRequest {
                scope: scope.clone(),
                reason,
            }),
        )
        .await
    }
    .await;
    match r {
        Ok(info) => {
            tracing::info!(%node, %scope, snapshot = info.id, "web: snapshot created by an admin");
            done_page(
                &p,
                "Snapshot created",
                &format!(
                    "Snapshot {} of {scope} is being taken on {node} (kept on the node: `fdrctl snapshot show {}` there).",
                    info.id, info.id
                ),
                &format!("/live?node={}&scope={}", url_part(&node), url_part(&scope)),
            )
        }
        Err(e) => error_page(&p, StatusCode::BAD_GATEWAY, "Snapshot failed", &e),
    }
}

/// A token naming a live query's rows in the cache.
fn live_token() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A live scope's timeline: the agents' buffers through the fleet query
/// (the rows asked for now, at most `web.live_max_events`), then paged
/// and filtered here like a snapshot's.
pub async fn live(
    State(web): State<Arc<Web>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let node = q
        .get("node")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let scope = q
        .get("scope")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let nodes = reachable_nodes(&web);
    let mut s = String::from(
        "<h1>Live timeline</h1>\n<form class=\"filters\" method=\"get\" action=\"/live\">",
    );
    s += "<label>Node <select name=\"node\"><option value=\"\">every node</option>";
    for n in &nodes {
        let sel = if *n == node { " selected" } else { "" };
        let _ = write!(s, "<option{sel}>{}</option>", h(n));
    }
    let _ = write!(
        s,
        "</select></label><label>Scope <input name=\"scope\" value=\"{}\" placeholder=\"host or container:ID\"></label>\
         <button type=\"submit\">Show</button></form>\n<p class=\"hint\">Events now in the agents' buffers \
         (what is recorded but not frozen in a snapshot yet).</p>\n",
        h(&scope)
    );
    if scope.is_empty() {
        return render(&p, "Live", "Live", &s);
    }
    let max = web.con.cfg.web.live_max_events;
    let mut events = Vec::new();
    let mut cursor = String::new();
    let mut truncated = false;
    let Ok(_heavy) = web.heavy.acquire().await else {
        return error_page(&p, StatusCode::SERVICE_UNAVAILABLE, "Live", "shutting down");
    };
    // Pages until the end, the cap, or this deadline (agents that keep
    // sending pages as events arrive).
    let deadline = tokio::time::Instant::now() + LIVE_DEADLINE;
    loop {
        if tokio::time::Instant::now() > deadline {
            truncated = true;
            break;
        }
        let req = pb::QueryEventsRequest {
            scope: scope.clone(),
            node: node.clone(),
            cursor: cursor.clone(),
            limit: 0,
            ..Default::default()
        };
        match api::query_fleet(&web.con, req).await {
            Ok(r) => {
                events.extend(r.events);
                if events.len() >= max {
                    truncated = events.len() > max || !r.next_cursor.is_empty();
                    events.truncate(max);
                    break;
                }
                if r.next_cursor.is_empty() {
                    break;
                }
                cursor = r.next_cursor;
            }
            Err(e) => {
                let _ = write!(
                    s,
                    "<p class=\"error\" role=\"alert\">{}</p>",
                    h(e.message())
                );
                return render(&p, "Live", "Live", &s);
            }
        }
    }
    let n = events.len();
    let t = match tokio::task::spawn_blocking(move || Timeline::from_events(events, &uid_only()))
        .await
    {
        Ok(t) => Arc::new(t),
        Err(e) => {
            return error_page(
                &p,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Live",
                &e.to_string(),
            )
        }
    };
    let token = live_token();
    web.cache.put(&format!("live/{token}"), t);
    let _ = write!(
        s,
        "<p class=\"status\">{n} events of {} on {}{}.</p>",
        h(&scope),
        h(if node.is_empty() { "every node" } else { &node }),
        if truncated {
            format!(
                " (the first ones only: at most {max} events, web.live_max_events, within 30 s)"
            )
        } else {
            String::new()
        }
    );
    if p.role == Role::Admin && !node.is_empty() {
        let _ = write!(
            s,
            "<form class=\"create-snapshot\" method=\"post\" action=\"/snapshots/create\">\
             <input type=\"hidden\" name=\"node\" value=\"{}\"><input type=\"hidden\" name=\"scope\" value=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Reason <input name=\"reason\"></label>\
             <button type=\"submit\">Create a snapshot on the node</button></form>",
            h(&node),
            h(&scope),
            h(p.csrf.as_deref().unwrap_or(""))
        );
    }
    s += &html::timeline(
        TimelineSource::Served(&format!("/api/timeline/live/{token}")),
        false,
    );
    render(&p, "Live", "Live", &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_times_and_severities() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-01T00:01:00Z").unwrap(), 60);
        assert_eq!(parse_time("1970-01-01T00:01:00").unwrap(), 60);
        assert!(parse_time("yesterday").is_err());
        let q: HashMap<String, String> = [("severity".to_owned(), "high".to_owned())].into();
        let f = Filters::parse(&q).unwrap();
        let mut i = pb::Incident {
            severity: pb::Severity::Medium as i32,
            ..Default::default()
        };
        assert!(!f.keeps(&i));
        i.severity = pb::Severity::Critical as i32;
        assert!(f.keeps(&i));
        let q: HashMap<String, String> = [("severity".to_owned(), "bad".to_owned())].into();
        assert!(Filters::parse(&q).is_err());
    }
}
