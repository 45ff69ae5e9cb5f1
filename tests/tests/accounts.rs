//! Account modifications with the real `useradd`, in a private mount
//! namespace over a copy of /etc: the machine's accounts are never touched.

use std::{process::Command, time::Duration};

use fdr_agent::event::{AccountDetail, Detail, Event};
use fdr_proto::v1 as pb;
use fdr_tests::{Capture, TempDir};

fn account_of(ev: &Event) -> Option<&AccountDetail> {
    match &ev.record.detail {
        Detail::Account(a) => Some(a),
        _ => None,
    }
}

/// Runs `useradd` for `user` in a private mount namespace whose /etc is a
/// copy; with `pty`, under a pseudo-terminal (`script`).
fn useradd_in_private_etc(etc_copy: &std::path::Path, user: &str, pty: bool) {
    let inner = format!(
        "mount --bind {} /etc && useradd -M -s /bin/false {user}",
        etc_copy.display()
    );
    let status = if pty {
        let wrapped = format!("unshare -m --propagation private sh -c '{inner}'");
        Command::new("script")
            .args(["-qec", &wrapped, "/dev/null"])
            .status()
    } else {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &inner])
            .status()
    }
    .expect("run useradd");
    assert!(status.success(), "useradd in a private /etc: {status}");
}

fn copy_etc(dir: &TempDir) -> std::path::PathBuf {
    let copy = dir.path().join("etc");
    let st = Command::new("cp")
        .args(["-a", "/etc/."])
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success(), "copy /etc");
    copy
}

/// A user name nobody has: a prefix, this process and the clock.
fn user_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}x{nanos:x}", std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn useradd_is_one_account_record_with_its_files() {
    let mut cap = Capture::start("useradd").await;
    let dir = TempDir::new("etc");
    let etc = copy_etc(&dir);
    let user = user_name("fdr");
    useradd_in_private_etc(&etc, &user, false);

    let ev = cap
        .wait_for("account record", |e| {
            account_of(e).is_some_and(|a| a.command.iter().any(|c| c == &user))
        })
        .await;
    let a = account_of(&ev).unwrap();
    for f in ["/etc/passwd", "/etc/passwd-", "/etc/shadow", "/etc/group"] {
        assert!(a.files.iter().any(|x| x == f), "{f} in {:?}", a.files);
    }
    assert!(
        !a.files
            .iter()
            .any(|x| x.ends_with('+') || x.ends_with(".lock")),
        "no scratch files: {:?}",
        a.files
    );
    assert_eq!(
        a.command.first().map(|c| c.rsplit('/').next().unwrap()),
        Some("useradd")
    );
    assert!(!a.interactive, "no terminal, no login session");
    assert_eq!(a.user, "root");
    assert_eq!(a.uid, 0);
    assert_eq!(a.hostname, hostname());
    assert!(a.first_boot_ns <= ev.record.boot_ns);
    // Exactly one record for the change.
    let n = cap
        .recorded(|e| account_of(e).is_some_and(|a| a.command.iter().any(|c| c == &user)))
        .len();
    assert_eq!(n, 1);
    // The copy changed; the machine's accounts did not.
    assert!(std::fs::read_to_string(etc.join("passwd"))
        .unwrap()
        .contains(&user));
    assert!(!std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains(&user));
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn useradd_under_a_terminal_is_interactive_and_a_backdoor_account_incident() {
    let mut cap = Capture::start("useradd-pty").await;
    let dir = TempDir::new("etc-pty");
    let etc = copy_etc(&dir);
    let user = user_name("fdp");
    useradd_in_private_etc(&etc, &user, true);
    let ev = cap
        .wait_for("interactive account record", |e| {
            account_of(e).is_some_and(|a| a.command.iter().any(|c| c == &user))
        })
        .await;
    let a = account_of(&ev).unwrap();
    assert!(a.interactive, "useradd ran with a controlling terminal");
    assert!(ev.record.task.has_tty);
    assert!(a.files.iter().any(|x| x == "/etc/passwd"));
    assert!(!std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains(&user));

    // An interactive account change on a host is a backdoor-account
    // incident, whatever the models learned.
    let audit = cap
        .wait_for(
            "the audit of the account change",
            |e| matches!(&e.record.detail, Detail::Audit(x) if x.trigger_seq == ev.seq),
        )
        .await;
    let Detail::Audit(x) = &audit.record.detail else {
        unreachable!()
    };
    assert_eq!(x.rule, "interactive-account-change");
    assert!(x.incident > 0);
    let mut client = fdr_cli::client::connect_unix(&cap.socket())
        .await
        .expect("connect");
    // The incident is live as soon as its audit is; its snapshot is linked
    // by the same pipeline pass right after: poll for it.
    let deadline = std::time::Instant::now() + fdr_tests::DEADLINE;
    let inc = loop {
        let inc = client
            .get_incident(pb::GetIncidentRequest {
                serial: x.incident,
                ..Default::default()
            })
            .await
            .expect("GetIncident")
            .into_inner();
        if inc.snapshot_id > 0 {
            break inc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "incident {} never got its snapshot",
            x.incident
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(inc.r#type, "backdoor-account");
    assert_eq!(inc.severity, pb::Severity::Critical as i32);
    assert_eq!(inc.scope, "host");
    assert_eq!(inc.hostname, hostname());
    let rec = inc.account.expect("the account record");
    assert_eq!(rec.user, "root");
    assert!(rec.interactive);
    assert!(
        rec.files.iter().any(|f| f == "/etc/passwd"),
        "{:?}",
        rec.files
    );
    assert!(rec.command.iter().any(|c| c == &user));
    // Every record is listed, naming the account it created.
    assert!(
        inc.accounts.iter().any(|a| a.account == user),
        "{:?}",
        inc.accounts
    );
    assert!(inc.snapshot_id > 0);
    assert!(
        inc.summary.starts_with("backdoor-account on host"),
        "{}",
        inc.summary
    );
    cap.stop().await;
}
