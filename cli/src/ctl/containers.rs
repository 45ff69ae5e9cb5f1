//! `fdrctl containers`: the containers the agent knows, running and gone.

use std::io::Write;

use fdr_proto::v1 as pb;
use serde_json::json;

use super::{container_json, escape::escape as e, quiet_pipe, time_text, Result};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct ContainersArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Containers asked for per call (0: as many as the agent sends).
    #[arg(long, default_value_t = 0, hide = true)]
    pub page_size: u32,
}

pub async fn containers(
    client: &mut Client,
    args: &ContainersArgs,
    out: &mut impl Write,
) -> Result<()> {
    // Page by page, each written as it comes.
    let mut req = pb::ListContainersRequest {
        limit: args.page_size,
        ..Default::default()
    };
    let mut header = !args.json;
    loop {
        let page = client.list_containers(req.clone()).await?.into_inner();
        let text = if args.json {
            page.containers
                .iter()
                .map(|k| super::escape::json(&known_json(k)) + "\n")
                .collect::<String>()
        } else {
            containers_rows(&page.containers, std::mem::take(&mut header))
        };
        if !quiet_pipe(out.write_all(text.as_bytes()))? || page.next_cursor.is_empty() {
            return Ok(());
        }
        req.cursor = page.next_cursor;
    }
}

fn known_json(k: &pb::KnownContainer) -> serde_json::Value {
    json!({
        "container": k.info.as_ref().map(container_json),
        "running": k.running,
        "stopped": k.stopped.as_ref().map(|t| time_text(Some(t))),
        "cgroup_id": k.cgroup_id,
    })
}

/// Escaped, `-` when empty.
fn or_dash(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_empty() {
        "-".into()
    } else {
        e(s)
    }
}

#[cfg(test)]
fn containers_table(list: &[pb::KnownContainer]) -> String {
    containers_rows(list, true)
}

/// The table's rows, after its header when `header`.
fn containers_rows(list: &[pb::KnownContainer], header: bool) -> String {
    let mut t = String::new();
    if header {
        t = format!(
            "{:<12}  {:<8}  {:<24}  {:<20}  {:<32}  {:<16}  {}\n",
            "CONTAINER", "STATE", "POD", "NAME", "IMAGE", "NAMESPACE", "STOPPED"
        );
    }
    for k in list {
        let c = k.info.clone().unwrap_or_default();
        let id: String = c.id.chars().take(12).collect();
        t += &format!(
            "{:<12}  {:<8}  {:<24}  {:<20}  {:<32}  {:<16}  {}\n",
            e(&id),
            if k.running { "running" } else { "stopped" },
            or_dash(&c.pod_name),
            or_dash(&c.name),
            or_dash(&c.image),
            or_dash(&c.pod_namespace),
            k.stopped
                .as_ref()
                .map_or("-".to_owned(), |s| time_text(Some(s))),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_pod_image_and_state() {
        let list = vec![
            pb::KnownContainer {
                info: Some(pb::ContainerInfo {
                    id: "0123456789abcdef0123".into(),
                    name: "app".into(),
                    image: "nginx:1.27".into(),
                    pod_name: "web-0".into(),
                    pod_namespace: "shop".into(),
                    ..Default::default()
                }),
                running: true,
                stopped: None,
                cgroup_id: 7,
            },
            pb::KnownContainer {
                info: Some(pb::ContainerInfo {
                    id: "fedcba".into(),
                    ..Default::default()
                }),
                running: false,
                stopped: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                cgroup_id: 0,
            },
        ];
        let t = containers_table(&list);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("0123456789ab  running   web-0"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains(" app ")
                && lines[1].contains("nginx:1.27")
                && lines[1].contains("shop")
        );
        assert!(
            lines[2].starts_with("fedcba        stopped   -"),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].ends_with("2023-11-14T22:13:20.000Z"),
            "{}",
            lines[2]
        );
    }
}
