//! `fdrctl identity` (who answers: an agent or a console, its instance id
//! and node) and `fdrctl agents` (the agents a console knows).

use std::io::Write;

use fdr_proto::v1 as pb;
use serde_json::{json, Value};

use super::{escape::escape as e, quiet_pipe, time_text, Result};
use crate::client::{Client, Console};

#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn identity(
    client: &mut Client,
    args: &IdentityArgs,
    out: &mut impl Write,
) -> Result<()> {
    let id = client
        .get_identity(pb::GetIdentityRequest {})
        .await?
        .into_inner();
    let text = if args.json {
        super::escape::json(&identity_json(&id)) + "\n"
    } else {
        identity_text(&id)
    };
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

pub async fn agents(client: &mut Console, args: &AgentsArgs, out: &mut impl Write) -> Result<()> {
    let list = client
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    let mut text = String::new();
    if !args.json {
        text += &agents_header();
        text.push('\n');
    }
    for a in &list {
        if args.json {
            text += &super::escape::json(&agent_json(a));
        } else {
            text += &agent_row(a);
        }
        text.push('\n');
    }
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

fn identity_json(i: &pb::Identity) -> Value {
    json!({
        "instance_id": i.instance_id, "node": i.node, "version": i.version,
        "started": time_text(i.started.as_ref()), "boot_id": i.boot_id, "role": i.role,
        "signing_key": fdr_proto::integrity::hex(&i.signing_key),
    })
}

/// `label  value` lines, escaped; empty values left out.
fn identity_text(i: &pb::Identity) -> String {
    let started = i
        .started
        .as_ref()
        .map_or_else(String::new, |t| time_text(Some(t)));
    let mut s = String::new();
    let key = fdr_proto::integrity::hex(&i.signing_key);
    for (label, value) in [
        ("role", i.role.as_str()),
        ("instance", i.instance_id.as_str()),
        ("node", i.node.as_str()),
        ("version", i.version.as_str()),
        ("started", started.as_str()),
        ("boot_id", i.boot_id.as_str()),
        ("key", key.as_str()),
    ] {
        if !value.is_empty() {
            s += &format!("{label:<10}{}\n", e(value));
        }
    }
    s
}

fn agents_header() -> String {
    format!(
        "{:<24} {:<12} {:<10} {:<5} {:>6} {:>6} {:<24} {:<24} URL / ERROR",
        "NODE", "INSTANCE", "VERSION", "UP", "SYNCED", "LAG", "LAST_SYNC", "LAST_CONTACT"
    )
}

/// One agent: node, instance id (its first 12 digits), version, whether
/// it answered last, how far its incidents are copied, then its URL and,
/// when it did not answer, why. Escaped.
fn agent_row(a: &pb::Agent) -> String {
    let instance: String = a.instance_id.chars().take(12).collect();
    let mut tail = e(&a.url).into_owned();
    if !a.error.is_empty() {
        tail += &format!(" ({})", e(&a.error));
    }
    format!(
        "{:<24} {:<12} {:<10} {:<5} {:>6} {:>6} {:<24} {:<24} {tail}",
        e(&a.node),
        e(&instance),
        e(&a.version),
        if a.reachable { "yes" } else { "no" },
        a.synced_serial,
        a.lag,
        time_text(a.last_sync.as_ref()),
        time_text(a.last_contact.as_ref()),
    )
}

fn agent_json(a: &pb::Agent) -> Value {
    json!({
        "url": a.url, "instance_id": a.instance_id, "node": a.node, "version": a.version,
        "reachable": a.reachable, "error": a.error,
        "last_sync": time_text(a.last_sync.as_ref()),
        "last_contact": time_text(a.last_contact.as_ref()),
        "agent_last_serial": a.agent_last_serial, "synced_serial": a.synced_serial,
        "lag": a.lag, "kernel_drops": a.kernel_drops, "incidents": a.incidents,
        "snapshots": a.snapshots, "snapshots_pending": a.snapshots_pending,
        "source": a.source,
        "signing_key": fdr_proto::integrity::hex(&a.signing_key),
        "integrity_problems": a.integrity_problems,
        "snapshots_verified": a.snapshots_verified,
        "snapshots_unverified": a.snapshots_unverified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> pb::Agent {
        pb::Agent {
            url: "https://node-1:7077".into(),
            instance_id: "0123456789abcdef0123456789abcdef".into(),
            node: "node-1".into(),
            version: "0.1.0".into(),
            reachable: true,
            agent_last_serial: 9,
            synced_serial: 7,
            lag: 2,
            ..Default::default()
        }
    }

    #[test]
    fn identity_as_text_and_json() {
        let id = pb::Identity {
            instance_id: "0123456789abcdef0123456789abcdef".into(),
            node: "node\n1".into(),
            version: "0.1.0".into(),
            role: "agent".into(),
            ..Default::default()
        };
        assert_eq!(
            identity_text(&id),
            "role      agent\ninstance  0123456789abcdef0123456789abcdef\n\
             node      node\\n1\nversion   0.1.0\n"
        );
        let v = identity_json(&id);
        assert_eq!(v["node"], "node\n1");
        assert_eq!(v["role"], "agent");
    }

    #[test]
    fn an_agent_row_is_one_escaped_line() {
        let row = agent_row(&agent());
        assert!(
            row.starts_with(
                "node-1                   0123456789ab 0.1.0      yes        7      2 "
            ),
            "{row}"
        );
        assert!(row.ends_with(" https://node-1:7077"), "{row}");
        let down = pb::Agent {
            reachable: false,
            error: "connection refused\n\x1b[2Jfake".into(),
            node: "n\r".into(),
            ..agent()
        };
        let row = agent_row(&down);
        assert_eq!(row.lines().count(), 1, "{row}");
        assert!(!row.contains(['\r', '\x1b']), "{row:?}");
        assert!(row.contains(" no "), "{row}");
        let v = agent_json(&down);
        assert_eq!(v["reachable"], false);
        assert_eq!(v["lag"], 2);
    }
}
