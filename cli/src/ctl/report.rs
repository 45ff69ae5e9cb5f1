//! `fdrctl report SERIAL -o FILE`: an incident as one self-contained HTML
//! file (style, script and data inline; nothing fetched) to attach to a
//! ticket: the summary, account records and audits, then the snapshot's
//! timeline (histogram, kind toggles, search, grid, each event's detail),
//! as the console's web UI shows them.

use std::{io::Write as _, path::PathBuf};

use fdr_proto::{
    render::{
        export::uid_only,
        html::{self, Assets, Links, TimelineSource},
        timeline::{Marks, Timeline},
    },
    v1 as pb,
};
use prost::Message as _;

use super::{CtlError, Result};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The incident's serial (the console's fleet serial at a console).
    pub serial: u64,
    /// The HTML file to write (`-`: standard output).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Audits per `GetIncident` call.
const AUDIT_PAGE: u32 = 1000;

async fn whole_incident(client: &mut Client, serial: u64) -> Result<pb::Incident> {
    let mut inc = client
        .get_incident(pb::GetIncidentRequest {
            serial,
            audit_limit: AUDIT_PAGE,
            audit_offset: 0,
        })
        .await?
        .into_inner();
    let mut next = inc.next_audit_offset;
    while next != 0 {
        let page = client
            .get_incident(pb::GetIncidentRequest {
                serial,
                audit_limit: AUDIT_PAGE,
                audit_offset: next,
            })
            .await?
            .into_inner();
        if page.audits.is_empty() || page.next_audit_offset == next {
            break;
        }
        next = page.next_audit_offset;
        inc.audits.extend(page.audits);
    }
    inc.next_audit_offset = 0;
    Ok(inc)
}

/// The stored snapshot (users and gaps included), with the answering
/// side's description of it (at a console: its id and SHA-256).
async fn whole_snapshot(client: &mut Client, id: u64) -> Result<pb::Snapshot> {
    let mut stream = client
        .export_snapshot(pb::ExportSnapshotRequest {
            id,
            format: "protobuf".into(),
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await? {
        data.extend_from_slice(&chunk.data);
    }
    let mut snap = pb::Snapshot::decode(data.as_slice()).map_err(|e| CtlError::Rpc {
        code: tonic::Code::DataLoss,
        message: format!("snapshot {id} does not decode: {e}"),
    })?;
    // The first message of GetSnapshot is the description as the server
    // gives it.
    let mut info_stream = client
        .get_snapshot(pb::GetSnapshotRequest {
            id,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    if let Some(pb::GetSnapshotResponse {
        item: Some(pb::get_snapshot_response::Item::Info(i)),
    }) = info_stream.message().await?
    {
        snap.info = Some(i);
    }
    if let Some(i) = &mut snap.info {
        if i.sha256.is_empty() {
            use sha2::Digest;
            i.sha256 = sha2::Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
        }
    }
    Ok(snap)
}

/// The report's HTML.
pub fn render_report(inc: &pb::Incident, snap: Option<pb::Snapshot>) -> Result<String> {
    let info = snap.as_ref().and_then(|s| s.info.clone());
    let mut main = html::incident(inc, info.as_ref(), &Links { snapshot: None });
    match snap {
        Some(s) => {
            let t = Timeline::from_snapshot(s, &Marks::of(inc), &uid_only());
            let json = t.inline().into_bytes();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            gz.write_all(&json).map_err(CtlError::Output)?;
            let packed = gz.finish().map_err(CtlError::Output)?;
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
            if let Some(i) = &info {
                main += &format!(
                    "<section class=\"evidence\"><h2>Timeline of snapshot {}</h2>\
                     <p class=\"hint\">Evidence SHA-256 <code>{}</code>. Report written {} by fdrctl {}.</p></section>\n",
                    i.id,
                    html::h(&i.sha256),
                    html::h(&super::time_text(Some(&now()))),
                    env!("CARGO_PKG_VERSION"),
                );
            }
            main += &html::timeline(TimelineSource::InlineGzipBase64(&b64), true);
        }
        None => {
            main += "<p class=\"empty\">No snapshot of this incident could be read.</p>";
        }
    }
    Ok(html::page(
        &format!("Incident {} · {}", inc.serial, inc.r#type),
        Assets::Inline,
        "<header class=\"top\"><span class=\"brand\">fdr</span><nav aria-label=\"Report\"><span>Incident report</span></nav></header>",
        &main,
    ))
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub async fn report(
    client: &mut Client,
    args: &ReportArgs,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let inc = whole_incident(client, args.serial).await?;
    let snap = if inc.snapshot_id == 0 {
        None
    } else {
        match whole_snapshot(client, inc.snapshot_id).await {
            Ok(s) => Some(s),
            Err(CtlError::Rpc {
                code: tonic::Code::FailedPrecondition,
                message,
            }) => {
                return Err(CtlError::Usage(format!(
                    "incident {}: its snapshot {} is still filling its after-window ({message}); \
                     run the report again when it is committed",
                    args.serial, inc.snapshot_id
                )))
            }
            Err(e) => return Err(e),
        }
    };
    let text = render_report(&inc, snap)?;
    if args.output.as_os_str() == "-" {
        super::quiet_pipe(out.write_all(text.as_bytes()))?;
        return Ok(());
    }
    // Written whole, then renamed: never a half report under the name.
    let tmp = args.output.with_extension("html.partial");
    let file_err = |source| CtlError::File {
        path: args.output.clone(),
        source,
    };
    // Forensic data: readable by its owner only.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_err)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(file_err)?;
    }
    std::fs::rename(&tmp, &args.output).map_err(file_err)?;
    eprintln!(
        "fdrctl: wrote {} ({} bytes)",
        args.output.display(),
        text.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_one_file_with_its_data_inline() {
        let inc = pb::Incident {
            serial: 3,
            r#type: "backdoor-account".into(),
            snapshot_id: 1,
            ..Default::default()
        };
        let snap = pb::Snapshot {
            info: Some(pb::SnapshotInfo {
                id: 1,
                sha256: "ab".repeat(32),
                ..Default::default()
            }),
            events: vec![pb::Event {
                kind: pb::EventKind::Exec as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render_report(&inc, Some(snap)).unwrap();
        assert!(page.contains("data-encoding=\"gzip-base64\""));
        assert!(page.contains(&"ab".repeat(32)));
        assert!(!page.contains("src=\"/static"), "nothing fetched");
        assert!(!page.contains("href=\"/static"), "nothing fetched");
    }
}
