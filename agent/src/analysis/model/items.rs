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
    /// The same thing as an agent before invoked names saw it (an exec
    /// item with the executables only, when a side ran under another
    /// name): a model that learned this form accepts the new one, so an
    /// upgrade does not flag every `sh -c` of a Debian host (`dash[sh]`).
    /// `None` when the forms are equal (ordinary binaries, every other
    /// section).
    pub legacy: Option<String>,
}

impl<'a> Observation<'a> {
    pub fn new(section: Section, item: impl Into<Cow<'a, str>>) -> Observation<'a> {
        Observation {
            section,
            item: item.into(),
            legacy: None,
        }
    }
}

/// Multi-call binaries that, run under their own name, take the applet as
/// their first argument: `busybox httpd -f`, `toybox nc`, uutils'
/// `coreutils ls`, GNU's `coreutils --coreutils-prog=cat`. Run through a
/// link (`/bin/nc -> busybox`) they are told apart by argv[0] like any
/// program invoked under another name.
pub const MULTI_CALL: &[&str] = &["busybox", "toybox", "coreutils"];

/// Longest invoked name kept in an item.
const MAX_NAME: usize = 64;

/// A program as exec items name it: the resolved executable (generalised)
/// when it ran under its own name, else `exe[name]` with the name it was
/// invoked as — `/bin/busybox[nc]`, `/bin/busybox[httpd]`,
/// `/usr/bin/dash[sh]`, `/usr/bin/python3.11[python3]`. Ordinary binaries
/// run by their own name keep the plain path, so their items are the same
/// as before invoked names.
///
/// The name is argv[0]'s base name (what a multi-call binary dispatches
/// on), without a login shell's leading `-` and cut at the first space or
/// `:` (process titles such as `nginx: worker process`); for a multi-call
/// binary run as itself, the applet in argv[1]. `filename` (an exec's path
/// executed) names it only when argv is empty: the parent side of an item
/// comes from the process table, which keeps argv but not the path
/// executed, and both sides must name one process alike.
pub fn program<'a>(exe: &'a str, argv: &[String], filename: Option<&str>) -> Cow<'a, str> {
    program_of(exe_or_unknown(exe), exe, argv, filename)
}

/// [`program`] with the executable already generalised (`path`, as
/// `exe_or_unknown` gives it): an exec item needs both forms.
fn program_of<'a>(
    path: Cow<'a, str>,
    exe: &str,
    argv: &[String],
    filename: Option<&str>,
) -> Cow<'a, str> {
    match invoked_name(exe, argv, filename) {
        Some(name) => Cow::Owned(format!("{path}[{name}]")),
        None => path,
    }
}

/// The invoked name when it differs from the executable's.
fn invoked_name(exe: &str, argv: &[String], filename: Option<&str>) -> Option<String> {
    let exe_base = base(exe);
    let first = argv
        .first()
        .map(String::as_str)
        .filter(|a| !a.is_empty())
        .or(filename)?;
    let mut name = clean(first);
    if name == exe_base && MULTI_CALL.contains(&exe_base) {
        if let Some(applet) = argv.get(1).and_then(|a| applet(a)) {
            name = applet;
        }
    }
    if name.is_empty() || name == exe_base {
        return None;
    }
    let name: String = name
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_control() || c == '[' || c == ']' {
                '?'
            } else {
                c
            }
        })
        .collect();
    // A random name (`/tmp/tmp.AbC123/x` run as itself) varies like a path.
    Some(generalise::path(&name).into_owned())
}

/// The applet a multi-call binary's first argument names, if it is one.
fn applet(arg: &str) -> Option<&str> {
    if let Some(p) = arg.strip_prefix("--coreutils-prog=") {
        return Some(p).filter(|p| !p.is_empty());
    }
    let name = base(arg);
    let ok = !arg.starts_with('-')
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'['));
    ok.then_some(name)
}

/// argv[0] as a name: base name, no login `-`, no process-title tail.
fn clean(arg0: &str) -> &str {
    let b = base(arg0.trim_start_matches('-'));
    let end = b.find([' ', ':', '\t']).unwrap_or(b.len());
    &b[..end]
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
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
        Detail::Exec { filename, .. } => {
            let parent = ev.image.parent.as_deref();
            // Each executable generalised once, for both forms.
            let parent_exe = parent.map_or(Cow::Borrowed("?"), |p| exe_or_unknown(&p.exe));
            let parent_prog = parent.map_or(Cow::Borrowed("?"), |p| {
                program_of(parent_exe.clone(), &p.exe, &p.argv, None)
            });
            let exe = exe_or_unknown(ev.exe());
            let prog = program_of(exe.clone(), ev.exe(), ev.argv(), Some(filename));
            let legacy = (parent_prog != parent_exe || prog != exe)
                .then(|| format!("{parent_exe} -> {exe}"));
            return Some(Observation {
                section: Section::Exec,
                item: Cow::Owned(format!("{parent_prog} -> {prog}")),
                legacy,
            });
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
        // A written file that then ran is what a model judges. Written
        // with exec bits or made executable without running is not, by
        // default: `chmod +x` of a fresh script in a work tree (a build, a
        // checkout, an installer) is everyday work, its path is new almost
        // every time, and a dropped binary that matters runs — its exec is
        // judged here (`Executed`), and a cron or unit that runs it later
        // is judged in that service's model. The exception, a file made
        // executable by a network-facing process or its children (a web
        // shell staging a payload), is the detectors' (`detect.rs`), which
        // know which processes face the network.
        Detail::Binary(b) => match b.reason {
            BinaryReason::Executed => (Section::Binary, generalise::path(&b.path)),
            BinaryReason::MadeExecutable | BinaryReason::WrittenExecutable => return None,
        },
        Detail::Fork { .. }
        | Detail::Exit { .. }
        | Detail::Container(_)
        | Detail::Learned(_)
        | Detail::Audit(_) => return None,
    };
    Some(Observation {
        section,
        item,
        legacy: None,
    })
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
    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// The exec item of `child` (exe, argv, filename executed) run by
    /// `parent` (exe, argv).
    fn exec_item(parent: (&str, &[&str]), child: (&str, &[&str], &str)) -> Observation<'static> {
        use crate::event::lineage::Image;
        let p = Image::root(1, 0, parent.0.into(), Arc::from(argv(parent.1)));
        let mut e = crate::event::test_support::event(
            1,
            42,
            crate::event::test_support::exec_detail(child.2, child.0, child.1),
        );
        e.image = Image::child_of(Some(&p), 42, 0, child.0.into(), Arc::from(argv(child.1)));
        let o = observe(&e).expect("an observation");
        Observation {
            section: o.section,
            item: Cow::Owned(o.item.into_owned()),
            legacy: o.legacy,
        }
    }

    #[test]
    fn programs_are_named_as_invoked() {
        let cases: &[(&str, &[&str], Option<&str>, &str)] = &[
            // Ordinary binaries: the path, as before.
            (
                "/usr/bin/curl",
                &["curl", "-s"],
                Some("/usr/bin/curl"),
                "/usr/bin/curl",
            ),
            ("/usr/bin/curl", &["/usr/bin/curl"], None, "/usr/bin/curl"),
            (
                "/usr/sbin/nginx",
                &["nginx: worker process"],
                None,
                "/usr/sbin/nginx",
            ),
            ("/usr/bin/bash", &["-bash"], None, "/usr/bin/bash"),
            (
                "/usr/sbin/sshd",
                &["sshd: alice [priv]"],
                None,
                "/usr/sbin/sshd",
            ),
            // Links to a multi-call binary, and aliases.
            (
                "/bin/busybox",
                &["nc", "10.0.0.1", "4444"],
                Some("/bin/nc"),
                "/bin/busybox[nc]",
            ),
            (
                "/bin/busybox",
                &["/bin/sh", "-c", "id"],
                Some("/bin/sh"),
                "/bin/busybox[sh]",
            ),
            ("/bin/busybox", &["-sh"], None, "/bin/busybox[sh]"),
            (
                "/usr/bin/toybox",
                &["cat", "/etc/passwd"],
                None,
                "/usr/bin/toybox[cat]",
            ),
            (
                "/usr/bin/dash",
                &["sh", "-c", "true"],
                Some("/bin/sh"),
                "/usr/bin/dash[sh]",
            ),
            (
                "/usr/bin/python3.11",
                &["python3", "-m", "http.server"],
                None,
                "/usr/bin/python3.11[python3]",
            ),
            // A multi-call binary run as itself: the applet is argv[1].
            (
                "/bin/busybox",
                &["busybox", "httpd", "-f"],
                Some("/bin/busybox"),
                "/bin/busybox[httpd]",
            ),
            (
                "/bin/busybox",
                &["/bin/busybox", "sh"],
                None,
                "/bin/busybox[sh]",
            ),
            (
                "/usr/bin/coreutils",
                &["coreutils", "--coreutils-prog=cat", "x"],
                None,
                "/usr/bin/coreutils[cat]",
            ),
            ("/bin/busybox", &["busybox", "--list"], None, "/bin/busybox"),
            ("/bin/busybox", &["busybox"], None, "/bin/busybox"),
            // Not a multi-call binary: argv[1] is an argument.
            ("/usr/bin/git", &["git", "status"], None, "/usr/bin/git"),
            // No argv: the path executed.
            ("/bin/busybox", &[], Some("/bin/ls"), "/bin/busybox[ls]"),
            ("", &["x"], None, "?[x]"),
            // Names that vary or would break the notation.
            (
                "/bin/busybox",
                &["/tmp/tmp.AbC123xyzQ"],
                None,
                "/bin/busybox[tmp*]",
            ),
            ("/srv/a", &["x]y[z"], None, "/srv/a[x?y?z]"),
        ];
        for (exe, args, filename, want) in cases {
            assert_eq!(
                program(exe, &argv(args), *filename),
                *want,
                "{exe} {args:?}"
            );
        }
        assert!(matches!(
            program("/usr/bin/curl", &argv(&["curl"]), None),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn exec_items_tell_busybox_applets_apart() {
        let httpd = ("/bin/busybox", &["httpd", "-f"][..]);
        let nc = exec_item(httpd, ("/bin/busybox", &["nc", "1.2.3.4", "80"], "/bin/nc"));
        let sh = exec_item(httpd, ("/bin/busybox", &["sh", "-c", "id"], "/bin/sh"));
        assert_eq!(nc.section, Section::Exec);
        assert_eq!(nc.item, "/bin/busybox[httpd] -> /bin/busybox[nc]");
        assert_eq!(sh.item, "/bin/busybox[httpd] -> /bin/busybox[sh]");
        assert_eq!(
            nc.legacy.as_deref(),
            Some("/bin/busybox -> /bin/busybox"),
            "the form an older agent learned"
        );
        // Ordinary binaries: the same item as before, no legacy form.
        let curl = exec_item(
            ("/usr/bin/bash", &["bash"]),
            ("/usr/bin/curl", &["curl"], "/usr/bin/curl"),
        );
        assert_eq!(curl.item, "/usr/bin/bash -> /usr/bin/curl");
        assert_eq!(curl.legacy, None);
    }

    #[test]
    fn made_executable_alone_is_not_a_model_item() {
        use crate::event::BinaryDetail;
        let bin = |reason| {
            let mut e = crate::event::test_support::event(
                1,
                42,
                Detail::Binary(Box::new(BinaryDetail {
                    path: "/home/alice/src/app/run.sh".into(),
                    reason,
                    writer_pid: Some(42),
                    writer_exe: Some("/usr/bin/vim".into()),
                })),
            );
            e.image = crate::event::lineage::Image::root(
                42,
                0,
                "/usr/bin/chmod".into(),
                Arc::from(argv(&["chmod"])),
            );
            observe(&e).map(|o| (o.section, o.item.into_owned()))
        };
        assert_eq!(bin(BinaryReason::MadeExecutable), None);
        assert_eq!(bin(BinaryReason::WrittenExecutable), None);
        assert_eq!(
            bin(BinaryReason::Executed),
            Some((Section::Binary, "/home/alice/src/app/run.sh".into()))
        );
    }
}
