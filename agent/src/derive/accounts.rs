//! Account modifications: changes to passwd, shadow, group, sudoers or
//! authorized_keys files, grouped into one record per change — all files a
//! `useradd` (and the account tools it runs) touched, recorded when that
//! tool exits, or when a process that is not a tool goes quiet.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::{
    config::CaptureConfig,
    event::{AccountDetail, Detail, Event, EventKind, Record},
    process::table::ProcessTable,
    util::{glob::path_match, host::HostRoot},
};

use super::derived;

/// Programs whose presence in the ancestry marks a login session.
#[derive(Debug)]
struct Pending {
    record: Record,
    files: Vec<String>,
    command: Vec<String>,
    interactive: bool,
    first_boot_ns: u64,
    last_boot_ns: u64,
    /// The grouping process is an account tool: record when it exits.
    tool: bool,
}

pub struct AccountTracker {
    files: Vec<String>,
    /// Each pattern of `files` up to its first `*`: a path of any role
    /// but `Other` starts with it. Checked first, since nearly every path
    /// written starts with none of them (this runs on every file event).
    prefixes: Vec<String>,
    tools: Vec<String>,
    hostname: String,
    /// The host's `/etc/passwd` (under the host root): user names.
    passwd: PathBuf,
    pending: HashMap<u32, Pending>,
}

/// What a path is to account tracking.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    /// An account file, or its backup (`/etc/passwd-`): listed.
    Listed,
    /// A temporary or lock file next to an account file: not listed.
    Scratch,
    Other,
}

impl AccountTracker {
    /// Records name `node` as their host and take user names from the
    /// host's `/etc/passwd` (seen under `host`).
    pub fn new(cfg: &CaptureConfig, node: &str, host: &HostRoot) -> Self {
        AccountTracker {
            files: cfg.account_files.clone(),
            prefixes: cfg
                .account_files
                .iter()
                .map(|p| literal_prefix(p).to_owned())
                .collect(),
            tools: cfg.account_tools.clone(),
            hostname: node.to_owned(),
            passwd: host.resolve("/etc/passwd"),
            pending: HashMap::new(),
        }
    }

    fn role(&self, path: &str) -> Role {
        for (pattern, prefix) in self.files.iter().zip(&self.prefixes) {
            if !path.starts_with(prefix.as_str()) {
                continue;
            }
            if let Some(dir) = pattern.strip_suffix('/') {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    if path_match(dir, parent) {
                        return Role::Listed;
                    }
                }
                continue;
            }
            if path_match(pattern, path) {
                return Role::Listed;
            }
            if let Some(rest) = path.strip_prefix(pattern.as_str()) {
                // /etc/passwd- is the backup useradd & co leave: a change.
                if rest == "-" && !pattern.contains('*') {
                    return Role::Listed;
                }
                let scratch = matches!(rest, "+" | "~" | ".lock" | ".tmp" | ".new" | ".edit")
                    || rest
                        .strip_prefix('.')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if scratch && !pattern.contains('*') {
                    return Role::Scratch;
                }
            }
        }
        Role::Other
    }

    fn is_tool(&self, exe: &str) -> bool {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        self.tools.iter().any(|t| t == name)
    }

    /// The process changes are grouped under: the outermost account tool
    /// among the process and its ancestors, else the process itself.
    fn group_of(&self, ev: &Event, procs: &ProcessTable) -> (u32, bool) {
        let mut group = (ev.pid(), self.is_tool(ev.exe()));
        let mut pid = ev.record.task.ppid;
        for _ in 0..32 {
            let Some(p) = procs.get(pid) else { break };
            if self.is_tool(p.exe()) {
                group = (pid, true);
            }
            if p.ppid == pid || p.ppid == 0 {
                break;
            }
            pid = p.ppid;
        }
        group
    }

    pub fn observe(&mut self, ev: &Event, procs: &ProcessTable, out: &mut Vec<Record>) {
        match &ev.record.detail {
            Detail::File { kind, file } if *kind != EventKind::SensitiveRead => {
                let (first, second) = match kind {
                    // A rename lands on its new name; a link creates it.
                    EventKind::FileRename | EventKind::FileLink => (file.path2.as_deref(), None),
                    _ => (Some(file.path.as_str()), None::<&str>),
                };
                let changed: Vec<&str> = first
                    .into_iter()
                    .chain(second)
                    .filter(|p| self.role(p) == Role::Listed)
                    .collect();
                if changed.is_empty() {
                    return;
                }
                let (group, tool) = self.group_of(ev, procs);
                let interactive = ev.interactive();
                let command = procs
                    .get(group)
                    .map(|p| p.argv().to_vec())
                    .unwrap_or_else(|| ev.argv().to_vec());
                let entry = self.pending.entry(group).or_insert_with(|| Pending {
                    record: ev.record.clone(),
                    files: Vec::new(),
                    command,
                    interactive,
                    first_boot_ns: ev.record.boot_ns,
                    last_boot_ns: ev.record.boot_ns,
                    tool,
                });
                entry.interactive |= interactive;
                entry.last_boot_ns = ev.record.boot_ns;
                for path in changed {
                    if !entry.files.iter().any(|f| f == path) {
                        entry.files.push(path.to_owned());
                    }
                }
            }
            Detail::Exit { .. } => {
                if let Some(p) = self.pending.remove(&ev.pid()) {
                    out.push(self.finish(p, ev));
                }
            }
            _ => {}
        }
    }

    /// Records changes of non-tool processes quiet for `idle_ns`, and of
    /// tools quiet for ten times that (a tool that never exits) — or for
    /// `idle_ns` once `alive` says they are gone (their exit record was
    /// lost, a flood filled the ring).
    pub fn flush_idle(
        &mut self,
        now_boot_ns: u64,
        idle_ns: u64,
        alive: impl Fn(u32) -> bool,
        out: &mut Vec<Record>,
    ) {
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(&pid, p)| {
                let idle = now_boot_ns.saturating_sub(p.last_boot_ns);
                if !p.tool {
                    return idle >= idle_ns;
                }
                idle >= idle_ns.saturating_mul(10) || (idle >= idle_ns && !alive(pid))
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            if let Some(p) = self.pending.remove(&pid) {
                let rec = p.record.clone();
                out.push(self.finish_with(p, &rec));
            }
        }
    }

    fn finish(&self, p: Pending, ev: &Event) -> Record {
        self.finish_with(p, &ev.record)
    }

    fn finish_with(&self, p: Pending, at: &Record) -> Record {
        let uid = p.record.task.uid;
        let detail = AccountDetail {
            hostname: self.hostname.clone(),
            uid,
            user: user_name_in(&self.passwd, uid),
            files: p.files,
            command: p.command,
            interactive: p.interactive,
            first_boot_ns: p.first_boot_ns,
        };
        let mut rec = derived(at, Detail::Account(Box::new(detail)));
        rec.task = p.record.task;
        rec
    }
}

/// `pattern` up to its first `*` (and, for a directory pattern, without
/// its trailing `/`): every path `role` does not find `Other` under this
/// pattern starts with it — a wildcard matches within components, so the
/// literal bytes before the first `*` match themselves.
fn literal_prefix(pattern: &str) -> &str {
    let p = pattern.trim_end_matches('/');
    match p.find('*') {
        Some(i) => &p[..i],
        None => p,
    }
}

/// The names `passwd` (a passwd file, read once) gives the uids of
/// `uids`, by uid; a uid it does not list is left out (the first entry of
/// a uid listed twice wins, as for `getpwuid`). Empty when the file cannot
/// be read.
pub fn user_names_in(
    passwd: &Path,
    uids: &std::collections::BTreeSet<u32>,
) -> std::collections::BTreeMap<u32, String> {
    let mut out = std::collections::BTreeMap::new();
    if uids.is_empty() {
        return out;
    }
    let Ok(text) = std::fs::read_to_string(passwd) else {
        return out;
    };
    for l in text.lines() {
        let mut f = l.split(':');
        let (Some(name), Some(id)) = (f.next(), f.nth(1)) else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else { continue };
        if !name.is_empty() && uids.contains(&id) {
            out.entry(id).or_insert_with(|| name.to_owned());
        }
        if out.len() == uids.len() {
            break;
        }
    }
    out
}

/// The name of `uid` in passwd file `passwd`, or the number.
pub fn user_name_in(passwd: &Path, uid: u32) -> String {
    std::fs::read_to_string(passwd)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_account_paths() {
        let t = AccountTracker::new(&CaptureConfig::default(), "n", &HostRoot::default());
        assert_eq!(t.role("/etc/passwd"), Role::Listed);
        assert_eq!(t.role("/etc/passwd-"), Role::Listed);
        assert_eq!(t.role("/etc/passwd+"), Role::Scratch);
        assert_eq!(t.role("/etc/passwd.lock"), Role::Scratch);
        assert_eq!(t.role("/etc/passwd.4711"), Role::Scratch);
        assert_eq!(t.role("/etc/sudoers.d/90-backdoor"), Role::Listed);
        assert_eq!(t.role("/home/eve/.ssh/authorized_keys"), Role::Listed);
        assert_eq!(t.role("/etc/hosts"), Role::Other);
        assert_eq!(t.role("/etc/passwords.txt"), Role::Other);
        assert!(t.is_tool("/usr/sbin/useradd"));
        assert!(!t.is_tool("/usr/bin/bash"));
        assert_eq!(user_name_in(Path::new("/etc/passwd"), 0), "root");
        assert_eq!(t.hostname, "n");
    }

    #[test]
    fn the_names_of_several_uids_in_one_read() {
        let dir = std::env::temp_dir().join(format!("fdr-passwd-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\n# comment\nbad:x:nope:1::/:\nalice:x:1000:1000::/:/bin/sh\n\
             again:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        let uids = [0, 1000, 4242].into_iter().collect();
        let got = user_names_in(&passwd, &uids);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![(0, "root".to_owned()), (1000, "alice".to_owned())]
        );
        assert!(user_names_in(&dir.join("missing"), &uids).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn user_names_come_from_the_hosts_passwd() {
        let dir = std::env::temp_dir().join(format!("fdr-passwd-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        let t = AccountTracker::new(&CaptureConfig::default(), "n", &HostRoot::new(&dir));
        assert_eq!(user_name_in(&t.passwd, 4242), "hostonly");
        assert_eq!(user_name_in(&t.passwd, 0), "0");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
