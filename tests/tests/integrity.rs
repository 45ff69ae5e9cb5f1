//! Evidence integrity with a real agent and a real console: every
//! committed snapshot is sealed (SHA-256 of its canonical encoding, signed
//! with the agent's Ed25519 key together with the previous seal's hash).
//! An untouched store verifies; then, with the agent stopped, its
//! database is tampered with as an attacker on the node would — one byte
//! of a stored snapshot edited, a snapshot deleted from the middle of the
//! chain, a snapshot altered and re-sealed with another key — and
//! `fdrctl snapshot verify` and the console each report all three.

use std::{path::Path, process::Command};

use ed25519_dalek::{Signer, SigningKey};
use fdr_proto::{integrity, v1 as pb};
use fdr_tests::{
    fdrctl_binary,
    fleet::{interactive_useradd, poll, serial, Console, Node, Pki, SLOW, TOKEN},
    TempDir,
};
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot_index");
const SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot_seals");
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");

/// `fdrctl` against the agent: (exit code, stdout, stderr).
fn ctl(node: &Node, pki: &Pki, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(fdrctl_binary())
        .args(["--url", &node.url(), "--token", TOKEN])
        .arg("--ca-file")
        .arg(&pki.ca.cert)
        .arg("--cert-file")
        .arg(&pki.client.cert)
        .arg("--key-file")
        .arg(&pki.client.key)
        .args(args)
        .output()
        .expect("run fdrctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The agent's committed snapshots, by id.
fn committed(node: &Node, pki: &Pki) -> Vec<serde_json::Value> {
    let (_, out, _) = ctl(node, pki, &["snapshot", "list", "--json"]);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["open"] == false && v["sha256"].as_str().is_some_and(|s| s.len() == 64))
        .collect()
}

#[test]
fn tampering_is_reported_by_fdrctl_and_the_console() {
    let _one = serial();
    let dir = TempDir::new("integrity");
    let pki = fdr_tests::fleet::pki(dir.path());
    let mut node = Node::start(dir.path(), "node-i", &pki);

    // Five incidents, one at a time: five sealed snapshots.
    let mut ids = Vec::new();
    for n in 1..=5 {
        interactive_useradd(dir.path());
        let list = poll(&format!("snapshot {n} committed"), SLOW, || {
            let c = committed(&node, &pki);
            (c.len() >= n).then_some(c)
        });
        ids = list.iter().filter_map(|v| v["id"].as_u64()).collect();
    }
    assert!(ids.len() >= 5, "{ids:?}");
    let (code, out, err) = ctl(&node, &pki, &["snapshot", "verify", "--all"]);
    assert_eq!(code, 0, "an untouched store verifies:\n{out}\n{err}");
    assert!(out.contains(": verified"), "{out}");
    let (_, ident, _) = ctl(&node, &pki, &["identity", "--json"]);
    let ident: serde_json::Value = serde_json::from_str(ident.trim()).expect("identity");
    let key = ident["signing_key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 64);
    let key_file = node.data.join("signing.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the private key is the agent's alone");

    // The attacker, with the agent stopped.
    let (edited, deleted, resigned) = (ids[1], ids[2], ids[3]);
    node.process.take();
    tamper(&node.data.join("snapshots.redb"), edited, deleted, resigned);

    let node = Node::start(dir.path(), "node-i", &pki);
    let (code, out, err) = ctl(&node, &pki, &["snapshot", "verify", "--all"]);
    assert_eq!(code, 3, "verify fails with exit code 3:\n{out}\n{err}");
    let block = |id: u64| -> String {
        let head = format!("snapshot {id}: ");
        let mut lines = out.lines().skip_while(|l| !l.starts_with(&head));
        let mut b: Vec<&str> = lines.next().into_iter().collect();
        b.extend(lines.take_while(|l| l.starts_with("  - ")));
        b.join("\n")
    };
    let b = block(edited);
    assert!(
        b.contains("NOT VERIFIED") && (b.contains("altered") || b.contains("cannot be read")),
        "edited byte:\n{out}"
    );
    assert!(
        out.contains(&format!("snapshot {deleted}: deleted")),
        "deleted snapshot:\n{out}"
    );
    let b = block(resigned);
    assert!(
        b.contains("NOT VERIFIED") && b.contains("another key"),
        "re-signed:\n{out}"
    );
    let b = block(ids[0]);
    assert!(
        b.contains("verified (sha256"),
        "the first snapshot is untouched:\n{out}"
    );
    // With the key pinned by hand: the same.
    let (code, _, _) = ctl(
        &node,
        &pki,
        &["snapshot", "verify", &ids[0].to_string(), "--key", &key],
    );
    assert_eq!(
        code, 3,
        "the chain's problems fail a single snapshot's check too"
    );

    // The console, meeting the tampered agent: what it copies is checked
    // against the seals with the key it pins, and the chain audited.
    let mut console = Console::new(dir.path(), &[node.url()], &pki, 100, |cfg| {
        cfg.web.enabled = false;
    });
    console.start();
    let problems = poll("the console to report the tampering", SLOW, || {
        let out = console.ctl(&["agents", "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out).lines().next()?).ok()?;
        let p: Vec<String> = v["integrity_problems"]
            .as_array()?
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        let all = p.join("\n");
        (all.contains(&format!("snapshot {edited}:"))
            && all.contains(&format!("snapshot {deleted}: deleted"))
            && all.contains(&format!("snapshot {resigned}:")))
        .then_some(all)
    });
    assert!(problems.contains("another key"), "{problems}");
    // Its copies: the untouched ones verified, the re-signed one not.
    let out = String::from_utf8_lossy(&console.ctl(&["snapshot", "list", "--json"])).into_owned();
    let copies: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let by_agent_id = |id: u64| {
        copies
            .iter()
            .find(|c| c["agent_snapshot_id"].as_u64() == Some(id))
            .cloned()
    };
    assert_eq!(
        by_agent_id(ids[0]).expect("first copied")["verification"],
        "verified"
    );
    let r = by_agent_id(resigned).expect("re-signed copied (evidence either way)");
    assert!(
        r["verification"]
            .as_str()
            .unwrap_or("")
            .contains("another key"),
        "{r}"
    );
    let out = Command::new(fdrctl_binary())
        .args(["--url", &console.url(), "--token", TOKEN])
        .args(["snapshot", "verify", "--all"])
        .output()
        .expect("fdrctl");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("another key"), "{text}");
    console.stop();
}

/// Edits one byte of snapshot `edited`, deletes snapshot `deleted` (data,
/// summary and seal), and alters snapshot `resigned`, re-sealing it with a
/// key of the attacker's (correct hash, wrong key).
fn tamper(db: &Path, edited: u64, deleted: u64, resigned: u64) {
    let db = redb::Database::open(db).expect("open the agent's database");
    let instance = {
        let tx = db.begin_read().expect("read");
        let t = tx.open_table(IDENTITY).expect("identity");
        let v = t.get("instance_id").expect("get").expect("instance id");
        v.value().to_owned()
    };
    let tx = db.begin_write().expect("write");
    {
        let mut snaps = tx.open_table(SNAPSHOTS).expect("snapshots");
        let mut index = tx.open_table(INDEX).expect("index");
        let mut seals = tx.open_table(SEALS).expect("seals");
        // One byte, in the middle.
        let mut bytes = snaps
            .get(edited)
            .expect("get")
            .expect("edited")
            .value()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        snaps.insert(edited, bytes.as_slice()).expect("edit");
        // From the middle of the chain, everything of it.
        snaps.remove(deleted).expect("delete");
        index.remove(deleted).expect("delete");
        seals.remove(deleted).expect("delete");
        // Altered and re-sealed with another key.
        let stored = snaps
            .get(resigned)
            .expect("get")
            .expect("resigned")
            .value()
            .to_vec();
        let mut snap = fdr_agent::store::compact::decode(&stored).expect("decode");
        if let Some(e) = snap.events.first_mut() {
            e.seq ^= 1;
        }
        snap.users.push(pb::UserName {
            uid: 4242,
            name: "attacker".into(),
        });
        let altered = fdr_agent::store::Encoded::from(&snap).bytes;
        snaps.insert(resigned, altered.as_slice()).expect("alter");
        let mut seal =
            pb::SnapshotSeal::decode(seals.get(resigned).expect("get").expect("seal").value())
                .expect("seal");
        let attacker = SigningKey::from_bytes(&[7u8; 32]);
        seal.sha256 = fdr_agent::store::canonical_sha256(&altered).expect("hash");
        seal.public_key = attacker.verifying_key().to_bytes().to_vec();
        seal.signature = attacker
            .sign(&integrity::seal_text(&instance, &seal))
            .to_bytes()
            .to_vec();
        seals
            .insert(resigned, seal.encode_to_vec().as_slice())
            .expect("re-seal");
    }
    tx.commit().expect("commit");
}
