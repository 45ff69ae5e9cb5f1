//! Incidents: audits of one scope correlated by type. The first audit of a
//! type on a scope opens an incident (a new serial, and a snapshot frozen
//! around it); more of the same type within the incident window update it.

pub mod detect;

use std::{collections::HashMap, sync::Arc};

use crate::{
    analysis::model::AuditDraft,
    attribution::containers::ContainerMeta,
    attribution::scope::Scope,
    event::{AccountDetail, Detail, Event, Severity},
};

pub use crate::analysis::model::IncidentType;

/// The process behind an audit, as the incident record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcSummary {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
}

/// One image of its ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AncestorSummary {
    pub pid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
}

/// An audit as an incident keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// seq of the audit event.
    pub event_seq: u64,
    pub time_ns: u64,
    pub draft: AuditDraft,
    pub process: ProcSummary,
    pub ancestry: Vec<AncestorSummary>,
}

impl AuditEntry {
    /// The entry for an audit raised by `trigger`, with up to `depth`
    /// ancestors.
    pub fn new(event_seq: u64, draft: AuditDraft, trigger: &Event, depth: usize) -> AuditEntry {
        let t = &trigger.record.task;
        AuditEntry {
            event_seq,
            time_ns: trigger.time_ns,
            draft,
            process: ProcSummary {
                pid: t.pid,
                ppid: t.ppid,
                uid: t.uid,
                comm: t.comm.to_string(),
                exe: trigger.exe().to_owned(),
                argv: trigger.argv().to_vec(),
            },
            ancestry: trigger
                .image
                .ancestors(depth)
                .map(|a| AncestorSummary {
                    pid: a.pid,
                    uid: a.uid,
                    exe: a.exe.to_string(),
                    argv: a.argv.to_vec(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub serial: u64,
    pub kind: IncidentType,
    pub severity: Severity,
    pub scope: Scope,
    pub container: Option<Arc<ContainerMeta>>,
    pub service: Option<Arc<str>>,
    pub hostname: String,
    pub model: Arc<str>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub audits: Vec<AuditEntry>,
    pub audit_count: u64,
    pub snapshot_id: u64,
    pub summary: String,
    /// The latest account record.
    pub account: Option<AccountDetail>,
    /// Every account record, oldest first, up to [`MAX_ACCOUNTS`].
    pub accounts: Vec<AccountDetail>,
    /// Account records, kept or not.
    pub account_count: u64,
}

/// Account records an incident keeps (all are counted).
pub const MAX_ACCOUNTS: usize = 50;

impl Incident {
    /// The incident without its audits: what the live stream announces (the
    /// stream reads the audits it has not sent from the record).
    pub fn header(&self) -> Incident {
        Incident {
            serial: self.serial,
            kind: self.kind,
            severity: self.severity,
            scope: self.scope.clone(),
            container: self.container.clone(),
            service: self.service.clone(),
            hostname: self.hostname.clone(),
            model: self.model.clone(),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            audits: Vec::new(),
            audit_count: self.audit_count,
            snapshot_id: self.snapshot_id,
            summary: self.summary.clone(),
            account: self.account.clone(),
            accounts: self.accounts.clone(),
            account_count: self.account_count,
        }
    }
}

/// Account tools whose first operand is the account (`adduser USER
/// GROUP` adds a user to a group); for the others it is the last one.
const FIRST_OPERAND_TOOLS: &[&str] = &["adduser", "deluser", "addgroup", "delgroup"];
/// Account tools whose last operand is the account (user or group).
const LAST_OPERAND_TOOLS: &[&str] = &[
    "useradd",
    "usermod",
    "userdel",
    "groupadd",
    "groupmod",
    "groupdel",
    "gpasswd",
    "passwd",
    "chage",
    "chsh",
    "chfn",
    "lusermod",
    "luseradd",
    "luserdel",
    "lgroupadd",
    "lgroupdel",
    "lgroupmod",
    "lpasswd",
];
/// Long options of those tools that take a separate value
/// (`--shell /bin/sh`): the value is not an operand.
const VALUE_LONG_OPTIONS: &[&str] = &[
    "--base-dir",
    "--comment",
    "--home-dir",
    "--home",
    "--expiredate",
    "--inactive",
    "--gid",
    "--groups",
    "--key",
    "--password",
    "--shell",
    "--uid",
    "--root",
    "--prefix",
    "--selinux-user",
    "--login",
    "--ingroup",
    "--gecos",
    "--firstuid",
    "--lastuid",
    "--mindays",
    "--maxdays",
    "--warndays",
    "--lastday",
    "--conf",
    "--add-subuids",
    "--del-subuids",
    "--add-subgids",
    "--del-subgids",
];

/// The account a tool's command line creates, changes or removes: the
/// last operand (`useradd -m -s /bin/sh bob` → bob), the first for
/// Debian's adduser/deluser, through busybox/toybox too. `None` for other
/// programs (a shell appending to /etc/passwd), or without an operand
/// (`passwd` changing its caller's password).
pub fn account_name(command: &[String]) -> Option<String> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let mut args = command.iter();
    let mut tool = base(args.next()?);
    if matches!(tool.as_str(), "busybox" | "toybox") {
        tool = base(args.next()?);
    }
    let first = FIRST_OPERAND_TOOLS.contains(&tool.as_str());
    if !first && !LAST_OPERAND_TOOLS.contains(&tool.as_str()) {
        return None;
    }
    let mut operands = Vec::new();
    let mut only_operands = false;
    while let Some(a) = args.next() {
        if only_operands || !a.starts_with('-') || a == "-" {
            operands.push(a);
        } else if a == "--" {
            only_operands = true;
        } else if a.starts_with("--") {
            if !a.contains('=') && VALUE_LONG_OPTIONS.contains(&a.as_str()) {
                args.next();
            }
        } else if a.len() == 2 && takes_value(&tool, a) {
            args.next();
        }
    }
    let name = if first {
        operands.first()
    } else {
        operands.last()
    }?;
    (!name.is_empty()).then(|| crate::util::clip(name).into_owned())
}

/// Whether short option `opt` of `tool` takes a separate value (the flags
/// of one tool are values of another: `useradd -m` vs `passwd -m`).
fn takes_value(tool: &str, opt: &str) -> bool {
    match tool {
        // -m: create home; -M: no home; -r: system account.
        "useradd" | "luseradd" => !matches!(
            opt,
            "-m" | "-M" | "-r" | "-N" | "-U" | "-l" | "-D" | "-o" | "-h"
        ),
        // -a: append (with -G); -m: move home; -U/-L: unlock/lock.
        "usermod" | "lusermod" => !matches!(opt, "-a" | "-m" | "-L" | "-U" | "-o" | "-r"),
        "userdel" | "luserdel" | "groupdel" | "lgroupdel" => matches!(opt, "-R" | "-P" | "-Z"),
        "groupadd" | "lgroupadd" => matches!(opt, "-g" | "-K" | "-p" | "-R" | "-P"),
        "groupmod" | "lgroupmod" => matches!(opt, "-g" | "-n" | "-p" | "-R" | "-P"),
        // -a USER / -d USER / -M USERS: the operand is the group.
        "gpasswd" => matches!(opt, "-a" | "-d" | "-M" | "-A" | "-R" | "-Q"),
        "passwd" | "lpasswd" => matches!(opt, "-n" | "-x" | "-w" | "-i" | "-r" | "-R" | "-P"),
        "chage" => !matches!(opt, "-l" | "-h"),
        "chsh" => matches!(opt, "-s" | "-R" | "-P"),
        "chfn" => matches!(opt, "-f" | "-r" | "-w" | "-h" | "-o" | "-R" | "-P"),
        // Debian adduser/deluser and busybox's take -s/-h/-g/-G/-u values.
        _ => matches!(opt, "-s" | "-h" | "-g" | "-G" | "-u" | "-k"),
    }
}

/// Open incidents (those that can still be updated) and serials.
pub struct Incidents {
    /// (scope, type) → the incident open for it.
    open: HashMap<(Scope, IncidentType), Incident>,
    next_serial: u64,
    window_ns: u64,
    max_audits: usize,
    /// The node name new incidents carry (see [`Incidents::with_node`]).
    node: String,
    /// Incidents opened since the agent started, by type and severity at
    /// opening (the metrics).
    opened: HashMap<(IncidentType, Severity), u64>,
}

/// What raising an audit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub serial: u64,
    /// A new incident: its snapshot is to be frozen.
    pub opened: bool,
}

impl Incidents {
    pub fn new(next_serial: u64, window_ns: u64, max_audits: usize) -> Self {
        Incidents {
            open: HashMap::new(),
            next_serial: next_serial.max(1),
            window_ns,
            max_audits,
            node: String::new(),
            opened: HashMap::new(),
        }
    }

    /// New incidents carry `node` (the agent's node name) as their host.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = node.to_owned();
        self
    }

    /// The serial the audit belongs to: the open incident of its type on
    /// the scope, or a new one.
    pub fn raise(&mut self, scope: &Scope, kind: IncidentType, now_ns: u64) -> Raised {
        let window = self.window_ns;
        let key = (scope.clone(), kind);
        if let Some(inc) = self.open.get(&key) {
            if now_ns.saturating_sub(inc.last_ns) < window {
                return Raised {
                    serial: inc.serial,
                    opened: false,
                };
            }
            self.open.remove(&key);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        Raised {
            serial,
            opened: true,
        }
    }

    /// Adds an audit raised by `trigger` to incident `serial` (created by
    /// the `raise` that returned it). Returns the incident as it now stands.
    pub fn add(
        &mut self,
        serial: u64,
        entry: AuditEntry,
        trigger: &Event,
        model: &Arc<str>,
        container: Option<Arc<ContainerMeta>>,
    ) -> &Incident {
        let kind = entry.draft.incident;
        let key = (trigger.scope.clone(), kind);
        if !self.open.contains_key(&key) {
            *self.opened.entry((kind, entry.draft.severity)).or_default() += 1;
        }
        let inc = self.open.entry(key).or_insert_with(|| Incident {
            serial,
            kind,
            severity: entry.draft.severity,
            scope: trigger.scope.clone(),
            container: None,
            service: trigger.unit.clone(),
            hostname: self.node.clone(),
            model: model.clone(),
            first_ns: entry.time_ns,
            last_ns: entry.time_ns,
            audits: Vec::new(),
            audit_count: 0,
            snapshot_id: 0,
            summary: String::new(),
            account: None,
            accounts: Vec::new(),
            account_count: 0,
        });
        if container.is_some() {
            inc.container = container;
        }
        inc.severity = inc.severity.max(entry.draft.severity);
        inc.last_ns = inc.last_ns.max(entry.time_ns);
        inc.audit_count += 1;
        if let Detail::Account(a) = &trigger.record.detail {
            let a = (**a).clone();
            if a.interactive {
                inc.severity = inc.severity.max(Severity::Critical);
            }
            inc.account_count += 1;
            if inc.accounts.len() < MAX_ACCOUNTS {
                inc.accounts.push(a.clone());
            }
            inc.account = Some(a);
        }
        if inc.audits.len() < self.max_audits {
            inc.audits.push(entry);
        }
        inc.summary = summary(inc);
        inc
    }

    /// The runtime named container `id`: its open incidents opened before
    /// show its pod and image, and its model's key. Returns those changed
    /// (their headers: what the live stream announces).
    pub fn name_container(
        &mut self,
        id: &str,
        meta: &Arc<ContainerMeta>,
        model: &Arc<str>,
    ) -> Vec<Incident> {
        let mut out = Vec::new();
        for inc in self.open.values_mut() {
            if inc.scope.container_id() != Some(id) || inc.container.as_ref() == Some(meta) {
                continue;
            }
            inc.container = Some(meta.clone());
            if !meta.sandbox {
                inc.model = model.clone();
            }
            inc.summary = summary(inc);
            out.push(inc.header());
        }
        out
    }

    /// Records the snapshot frozen for an incident.
    pub fn set_snapshot(&mut self, serial: u64, snapshot_id: u64) -> Option<&Incident> {
        let inc = self.open.values_mut().find(|i| i.serial == serial)?;
        inc.snapshot_id = snapshot_id;
        Some(inc)
    }

    /// The open incidents, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    pub fn get(&self, serial: u64) -> Option<&Incident> {
        self.open.values().find(|i| i.serial == serial)
    }

    /// Restores an incident still within its window after a restart.
    pub fn restore(&mut self, inc: Incident) {
        self.next_serial = self.next_serial.max(inc.serial + 1);
        self.open.insert((inc.scope.clone(), inc.kind), inc);
    }

    /// Incidents that can still be updated.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn next_serial(&self) -> u64 {
        self.next_serial
    }

    /// Incidents opened since the agent started, by type and severity at
    /// opening.
    pub fn opened(&self) -> impl Iterator<Item = (IncidentType, Severity, u64)> + '_ {
        self.opened.iter().map(|(&(t, s), &n)| (t, s, n))
    }

    /// Forgets incidents whose window has passed (they are in the store).
    pub fn expire(&mut self, now_ns: u64) {
        let window = self.window_ns;
        self.open
            .retain(|_, i| now_ns.saturating_sub(i.last_ns) < window);
    }
}

fn summary(inc: &Incident) -> String {
    let first = inc.audits.first().map_or("", |a| a.draft.message.as_str());
    let more = inc.audit_count.saturating_sub(1);
    let where_ = match (&inc.scope, &inc.container) {
        (Scope::Container(_), Some(m)) if !m.pod_name.is_empty() => {
            format!("pod {}/{} ({})", m.pod_namespace, m.pod_name, m.image)
        }
        (Scope::Container(id), _) => format!("container {}", &id[..id.len().min(12)]),
        (Scope::Host, _) => match &inc.service {
            Some(s) => format!("host {} ({s})", inc.hostname),
            None => format!("host {}", inc.hostname),
        },
    };
    if more > 0 {
        format!("{} on {where_}: {first} (+{more} more)", inc.kind.name())
    } else {
        format!("{} on {where_}: {first}", inc.kind.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, t: u64, sev: Severity) -> (AuditEntry, Event) {
        let ev = crate::event::test_support::event(t, 7, Detail::Exit { status: 0 });
        let draft = AuditDraft {
            section: "listen",
            rule: "model".into(),
            severity: sev,
            message: format!("new listen: tcp/{seq}"),
            item: format!("tcp/{seq}"),
            incident: IncidentType::BackdoorListener,
        };
        (AuditEntry::new(seq, draft, &ev, 4), ev)
    }

    #[test]
    fn same_type_same_scope_within_window_updates_the_open_incident() {
        let mut inc = Incidents::new(5, 100, 2);
        let model: Arc<str> = Arc::from("image:x");
        let kind = IncidentType::BackdoorListener;
        let r = inc.raise(&Scope::Host, kind, 10);
        assert_eq!(
            r,
            Raised {
                serial: 5,
                opened: true
            }
        );
        let (e, ev) = entry(1, 10, Severity::Medium);
        inc.add(5, e, &ev, &model, None);
        let r = inc.raise(&Scope::Host, kind, 50);
        assert_eq!(
            r,
            Raised {
                serial: 5,
                opened: false
            }
        );
        let (e, ev) = entry(2, 50, Severity::High);
        inc.add(5, e, &ev, &model, None);
        let (e, ev) = entry(3, 60, Severity::Low);
        let i = inc.add(5, e, &ev, &model, None);
        assert_eq!(i.audits[0].process.pid, 7);
        assert_eq!(i.audit_count, 3);
        assert_eq!(i.audits.len(), 2, "capped");
        assert_eq!(i.severity, Severity::High);
        assert_eq!((i.first_ns, i.last_ns), (10_000, 60_000));
        // Counted once, with its severity at opening.
        assert_eq!(
            inc.opened().collect::<Vec<_>>(),
            [(kind, Severity::Medium, 1)]
        );
        let i = inc.get(5).expect("open");
        assert!(
            i.summary.starts_with("backdoor-listener on host ")
                && i.summary.ends_with(": new listen: tcp/1 (+2 more)"),
            "{}",
            i.summary
        );
        // Another type: another incident.
        let r = inc.raise(&Scope::Host, IncidentType::PortScan, 61);
        assert_eq!(r.serial, 6);
        // After the window: a new one.
        let r = inc.raise(&Scope::Host, kind, 60_200);
        assert_eq!(
            r,
            Raised {
                serial: 7,
                opened: true
            }
        );
        inc.expire(100_000);
        assert!(inc.get(5).is_none());
    }

    #[test]
    fn account_named_from_the_command() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (
                &["useradd", "-M", "-s", "/bin/false", "fdrdemo"],
                Some("fdrdemo"),
            ),
            (
                &[
                    "/usr/sbin/useradd",
                    "-m",
                    "-G",
                    "sudo",
                    "--shell",
                    "/bin/sh",
                    "bob",
                ],
                Some("bob"),
            ),
            (&["useradd", "--home-dir=/x", "-r", "svc"], Some("svc")),
            (&["usermod", "-aG", "sudo", "evil"], Some("evil")),
            (&["usermod", "-a", "-G", "sudo", "evil"], Some("evil")),
            (&["userdel", "-r", "old"], Some("old")),
            (&["groupadd", "-g", "1500", "ops"], Some("ops")),
            (&["passwd", "-l", "bob"], Some("bob")),
            (&["passwd"], None),
            (&["chpasswd"], None),
            (&["gpasswd", "-a", "bob", "wheel"], Some("wheel")),
            (&["adduser", "--gecos", "", "alice", "sudo"], Some("alice")),
            (&["adduser", "alice"], Some("alice")),
            (
                &["busybox", "adduser", "-D", "-s", "/bin/sh", "mallory"],
                Some("mallory"),
            ),
            (&["/bin/busybox", "deluser", "mallory"], Some("mallory")),
            (&["chage", "-M", "90", "--", "-odd"], Some("-odd")),
            (&["sh", "-c", "echo x >> /etc/passwd"], None),
            (&[], None),
        ];
        for (cmd, want) in cases {
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            assert_eq!(account_name(&cmd).as_deref(), *want, "{cmd:?}");
        }
    }

    #[test]
    fn every_account_record_is_kept_up_to_the_cap_and_counted() {
        let mut inc = Incidents::new(1, u64::MAX, 10);
        let model: Arc<str> = Arc::from("service:x");
        let r = inc.raise(&Scope::Host, IncidentType::BackdoorAccount, 1);
        for n in 0..(MAX_ACCOUNTS as u64 + 5) {
            let name = format!("user{n}");
            let detail = Detail::Account(Box::new(AccountDetail {
                hostname: "h".into(),
                uid: 0,
                user: "root".into(),
                files: vec!["/etc/passwd".into()],
                command: vec!["useradd".into(), name],
                interactive: false,
                first_boot_ns: 0,
            }));
            let ev = crate::event::test_support::event(n + 1, 7, detail);
            let draft = AuditDraft {
                section: "account",
                rule: "model".into(),
                severity: Severity::High,
                message: "account".into(),
                item: "x".into(),
                incident: IncidentType::BackdoorAccount,
            };
            inc.add(
                r.serial,
                AuditEntry::new(n, draft, &ev, 4),
                &ev,
                &model,
                None,
            );
        }
        let i = inc.get(r.serial).expect("open");
        assert_eq!(i.account_count, MAX_ACCOUNTS as u64 + 5);
        assert_eq!(i.accounts.len(), MAX_ACCOUNTS);
        assert_eq!(i.accounts[0].command[1], "user0");
        assert_eq!(
            i.account.as_ref().map(|a| a.command[1].as_str()),
            Some("user54"),
            "the latest"
        );
        let h = i.header();
        assert!(h.audits.is_empty());
        assert_eq!(
            (h.audit_count, h.accounts.len()),
            (i.audit_count, MAX_ACCOUNTS)
        );
    }
}
