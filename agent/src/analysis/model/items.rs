//! What an event tells a runtime model: at most one (section, item) pair,
//! with varying parts generalised.

use std::borrow::Cow;

use crate::{
    event::wire::protocol_name,
    event::{BinaryReason, Detail, Event, EventKind, Severity},
};

use super::generalise;

/// A part of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// Programs run, with the program that ran them: `parent -> exe`.
    Exec,
    /// Files written, created, renamed to, removed, re-moded or re-owned.
    File,
    /// Sensitive files read.
    SensitiveRead,
    /// Listening ports: `tcp/8080`, `udp/53`.
    Listen,
    /// Outbound destinations: `tcp 10.0.0.7:5432`.
    Connect,
    /// Account modifications: `useradd: /etc/group,/etc/passwd`.
    Account,
    /// Privilege changes: `/usr/bin/sudo: setresuid`.
    Priv,
    /// Written files that were executed or made executable.
    Binary,
}

impl Section {
    pub const ALL: [Section; 8] = [
        Section::Exec,
        Section::File,
        Section::SensitiveRead,
        Section::Listen,
        Section::Connect,
        Section::Account,
        Section::Priv,
        Section::Binary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Exec => "exec",
            Section::File => "file",
            Section::SensitiveRead => "sensitive-read",
            Section::Listen => "listen",
            Section::Connect => "connect",
            Section::Account => "account",
            Section::Priv => "priv",
            Section::Binary => "binary",
        }
    }

    pub fn from_name(s: &str) -> Option<Section> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Severity of something new in this section.
    pub fn severity(self) -> Severity {
        match self {
            Section::File => Severity::Low,
            Section::Exec | Section::SensitiveRead | Section::Connect | Section::Priv => {
                Severity::Medium
            }
            Section::Listen | Section::Account | Section::Binary => Severity::High,
        }
    }
}

/// One thing an event did, as a model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation<'a> {
    pub section: Section,
    /// Borrowed from the event when it needs no change (most paths).
    pub item: Cow<'a, str>,
}

/// Whether the event happened in an interactive session (for an account
/// record: whether any of its changes did).
pub fn interactive(ev: &Event) -> bool {
    match &ev.record.detail {
        Detail::Account(a) => a.interactive,
        _ => ev.interactive(),
    }
}

/// The model observation of `ev`, if it has one.
pub fn observe(ev: &Event) -> Option<Observation<'_>> {
    let (section, item) = match &ev.record.detail {
        Detail::Exec { .. } => {
            let parent = ev
                .image
                .parent
                .as_deref()
                .map_or(Cow::Borrowed("?"), |p| exe_or_unknown(&p.exe));
            (
                Section::Exec,
                Cow::Owned(format!("{parent} -> {}", exe_or_unknown(ev.exe()))),
            )
        }
        Detail::File { kind, file } => match kind {
            // By reader: a service that reads /etc/passwd to resolve its
            // user does not make `cp /etc/passwd` from its shell normal.
            EventKind::SensitiveRead => (
                Section::SensitiveRead,
                Cow::Owned(format!(
                    "{}: {}",
                    exe_or_unknown(ev.exe()),
                    generalise::path(&file.path)
                )),
            ),
            EventKind::FileRename | EventKind::FileLink => (
                Section::File,
                generalise::path(file.path2.as_deref().unwrap_or(&file.path)),
            ),
            _ => (Section::File, generalise::path(&file.path)),
        },
        Detail::Net { kind, net } => {
            let proto = protocol_name(net.protocol);
            match kind {
                EventKind::NetListen | EventKind::NetBind => (
                    Section::Listen,
                    Cow::Owned(format!("{proto}/{}", net.local.port())),
                ),
                EventKind::NetConnect => {
                    let to = net.remote?;
                    (Section::Connect, Cow::Owned(format!("{proto} {to}")))
                }
                _ => return None,
            }
        }
        Detail::Priv(p) => (
            Section::Priv,
            Cow::Owned(format!("{}: {}", exe_or_unknown(ev.exe()), p.syscall)),
        ),
        Detail::Account(a) => {
            let mut files = a.files.clone();
            files.sort();
            let tool = a
                .command
                .first()
                .map_or("?", |c| c.rsplit('/').next().unwrap_or(c));
            (
                Section::Account,
                Cow::Owned(format!("{tool}: {}", files.join(","))),
            )
        }
        Detail::Binary(b) => match b.reason {
            BinaryReason::Executed | BinaryReason::MadeExecutable => {
                (Section::Binary, generalise::path(&b.path))
            }
            BinaryReason::WrittenExecutable => return None,
        },
        Detail::Fork { .. }
        | Detail::Exit { .. }
        | Detail::Container(_)
        | Detail::Learned(_)
        | Detail::Audit(_) => return None,
    };
    Some(Observation { section, item })
}

fn exe_or_unknown(exe: &str) -> Cow<'_, str> {
    if exe.is_empty() {
        Cow::Borrowed("?")
    } else {
        generalise::path(exe)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{FileDetail, PrivDetail};

    /// The observation of `detail` done by `exe`, owned.
    fn seen(exe: &str, detail: Detail) -> (Section, String) {
        let mut e = crate::event::test_support::event(1, 42, detail);
        e.image = crate::event::lineage::Image::root(42, 0, exe.into(), Arc::from(Vec::new()));
        let o = observe(&e).expect("an observation");
        (o.section, o.item.into_owned())
    }

    fn file(kind: EventKind, path: &str) -> Detail {
        Detail::File {
            kind,
            file: Box::new(FileDetail {
                path: path.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn sensitive_reads_are_items_of_their_reader() {
        let read = || file(EventKind::SensitiveRead, "/etc/passwd");
        let py = seen("/usr/bin/python3.11", read());
        assert_eq!(
            py,
            (
                Section::SensitiveRead,
                "/usr/bin/python3.11: /etc/passwd".into()
            )
        );
        assert_ne!(
            seen("/usr/bin/cp", read()),
            py,
            "another reader, another item"
        );
        let key = file(EventKind::SensitiveRead, "/root/.ssh/id_rsa");
        assert_eq!(seen("", key).1, "?: /root/.ssh/id_rsa");
    }

    #[test]
    fn file_items_are_generalised_and_priv_items_name_the_program() {
        let w = file(EventKind::FileWrite, "/var/cache/app/cache-1234");
        assert_eq!(
            seen("/usr/bin/app", w),
            (Section::File, "/var/cache/app/cache-#".into())
        );
        let p = Detail::Priv(Box::new(PrivDetail {
            syscall: "setresuid",
            old: Default::default(),
            new: Default::default(),
        }));
        assert_eq!(seen("/usr/bin/sudo", p).1, "/usr/bin/sudo: setresuid");
    }
}
