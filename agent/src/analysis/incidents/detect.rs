//! Detectors that correlate several events of one scope, beyond what a
//! model sees in one event: reverse shells, data exfiltration, port scans.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
};

use crate::{
    analysis::model::AuditDraft,
    attribution::scope::Scope,
    event::{Detail, Event, EventKind, Severity},
};

use super::IncidentType;

/// Entries kept per scope and kind of mark; the oldest go first.
const MAX_MARKS: usize = 1024;
/// Ancestors of a connecting process searched for marks.
const LINEAGE: usize = 16;

/// Shell programs.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "fish", "tcsh", "csh",
];

/// Whether the process runs a shell: its executable, or for a multi-call
/// binary (busybox) the applet its argv[0] names.
pub fn is_shell(exe: &str, argv: &[String]) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let name = base(exe);
    if name == "busybox" {
        return argv.first().is_some_and(|a| {
            let a = base(a);
            a != "busybox" && SHELLS.contains(&a.as_str())
        });
    }
    SHELLS.contains(&name.as_str())
}

#[derive(Debug, Clone, Copy)]
pub struct DetectConfig {
    pub window_ns: u64,
    pub scan_threshold: usize,
    pub scan_window_ns: u64,
}

#[derive(Debug)]
struct Mark {
    /// The process tree it stands for: processes below this pid.
    tree: u32,
    time: u64,
    what: String,
}

#[derive(Debug, Default)]
struct ScopeMarks {
    /// Processes that listened or accepted: network-facing.
    network_facing: HashMap<u32, u64>,
    /// Shells started by a network-facing process or with a socket as stdin.
    shells: Marks,
    /// Sensitive files read outside the model.
    sensitive: Marks,
    /// Shells already reported for connecting out themselves.
    shell_connects: HashSet<u32>,
    /// Destinations per process within the scan window.
    dests: HashMap<u32, VecDeque<(u64, SocketAddr)>>,
    scanned: HashSet<u32>,
}

#[derive(Default)]
pub struct Detectors {
    scopes: HashMap<Scope, ScopeMarks>,
}

/// Marks by the pid of the process tree they stand for; a connection
/// looks up the pids of its lineage, not every mark.
#[derive(Debug, Default)]
struct Marks(HashMap<u32, Mark>);

impl Marks {
    fn add(&mut self, m: Mark, now: u64, window_ns: u64) {
        if self.0.len() >= MAX_MARKS {
            self.0
                .retain(|_, x| now.saturating_sub(x.time) <= window_ns);
            if self.0.len() >= MAX_MARKS {
                // Still full of fresh marks: the oldest goes.
                if let Some(oldest) = self.0.values().min_by_key(|x| x.time).map(|x| x.tree) {
                    self.0.remove(&oldest);
                }
            }
        }
        self.0.insert(m.tree, m);
    }

    /// Removes and returns the fresh mark of one of `lineage`'s pids.
    fn take(&mut self, lineage: &[u32], now: u64, window_ns: u64) -> Option<Mark> {
        let tree = *lineage.iter().find(|p| {
            self.0
                .get(p)
                .is_some_and(|m| now.saturating_sub(m.time) <= window_ns)
        })?;
        self.0.remove(&tree)
    }
}

fn draft(
    kind: IncidentType,
    rule: &str,
    severity: Severity,
    message: String,
    item: String,
) -> AuditDraft {
    AuditDraft {
        section: "rule",
        rule: rule.into(),
        severity,
        message,
        item,
        incident: kind,
    }
}

impl Detectors {
    /// Audits that `ev` completes. `audited` tells whether the model or a
    /// rule already flagged `ev` itself (a sensitive read that is normal
    /// for the scope is not the start of an exfiltration).
    pub fn observe(&mut self, ev: &Event, audited: bool, cfg: &DetectConfig) -> Vec<AuditDraft> {
        let mut out = Vec::new();
        let now = ev.time_ns;
        let pid = ev.pid();
        match &ev.record.detail {
            Detail::Net { kind, net } => {
                let marks = self.scopes.entry(ev.scope.clone()).or_default();
                match kind {
                    EventKind::NetListen | EventKind::NetAccept => {
                        if marks.network_facing.len() >= MAX_MARKS {
                            marks.network_facing.clear();
                        }
                        marks.network_facing.insert(pid, now);
                    }
                    EventKind::NetConnect => {
                        if let Some(to) = net.remote {
                            let failed = net.error();
                            connect(marks, ev, to, failed.as_deref(), cfg, &mut out);
                        }
                    }
                    _ => {}
                }
            }
            Detail::Exec { stdin_socket, .. } if is_shell(ev.exe(), ev.argv()) => {
                let marks = self.scopes.entry(ev.scope.clone()).or_default();
                let parent = ev.image.parent.as_deref();
                // connect, dup2 onto 0/1/2, exec a shell (nc -e, the Python
                // and Perl one-liners, socat exec:): the shell's input is the
                // socket its own process, or the one that started it, just
                // opened.
                if *stdin_socket {
                    if let Some((by, to)) = recent_connect(marks, ev, cfg.window_ns) {
                        out.push(draft(
                            IncidentType::ReverseShell,
                            "reverse-shell",
                            Severity::Critical,
                            format!(
                                "shell {} (pid {pid}) reads its input from a socket, after pid {by} connected to {to}: {}",
                                ev.exe(),
                                ev.argv().join(" ")
                            ),
                            to,
                        ));
                        return out;
                    }
                }
                let facing = ev
                    .image
                    .ancestors(4)
                    .find(|a| a.pid != pid && marks.network_facing.contains_key(&a.pid));
                let reason = if let Some(f) = facing {
                    let exe = if f.exe.is_empty() { "?" } else { &f.exe };
                    Some(format!(
                        "shell started by network-facing {exe} (pid {})",
                        f.pid
                    ))
                } else if *stdin_socket {
                    Some("shell with a socket as its input".to_owned())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    out.push(draft(
                        IncidentType::Unexpected,
                        "shell-by-network-service",
                        Severity::High,
                        format!("{reason}: {}", ev.argv().join(" ")),
                        parent.map_or("?".into(), |p| p.exe.to_string()),
                    ));
                    marks.shells.add(
                        Mark {
                            tree: pid,
                            time: now,
                            what: reason,
                        },
                        now,
                        cfg.window_ns,
                    );
                }
            }
            Detail::File { kind, file } if *kind == EventKind::SensitiveRead && audited => {
                let marks = self.scopes.entry(ev.scope.clone()).or_default();
                marks.sensitive.add(
                    Mark {
                        tree: ev.record.task.ppid,
                        time: now,
                        what: format!("{} read by {} (pid {pid})", file.path, ev.exe()),
                    },
                    now,
                    cfg.window_ns,
                );
            }
            // Made executable below a network-facing process (a web shell's
            // `chmod +x` of its payload). Not by that process itself: a
            // runtime that listens (containerd) unpacks executables all day.
            // Other chmods are not judged (`model::items`).
            Detail::Binary(b) if b.reason == crate::event::BinaryReason::MadeExecutable => {
                let Some(marks) = self.scopes.get(&ev.scope) else {
                    return out;
                };
                let facing = ev
                    .image
                    .ancestors(4)
                    .map(|a| a.pid)
                    .find(|p| *p != pid && marks.network_facing.contains_key(p));
                if let Some(f) = facing {
                    out.push(draft(
                        IncidentType::SuspiciousBinary,
                        "made-executable-by-network-service",
                        Severity::High,
                        format!(
                            "{} made executable by {} (pid {pid}), below network-facing pid {f}",
                            b.path,
                            ev.exe()
                        ),
                        b.path.clone(),
                    ));
                }
            }
            Detail::Exit { .. } => {
                if let Some(m) = self.scopes.get_mut(&ev.scope) {
                    m.dests.remove(&pid);
                    m.scanned.remove(&pid);
                    m.shell_connects.remove(&pid);
                }
            }
            _ => {}
        }
        out
    }

    /// Forgets scopes that are gone.
    pub fn forget(&mut self, scope: &Scope) {
        self.scopes.remove(scope);
    }
}

/// The latest outbound destination of `ev`'s process or one of its four
/// nearest ancestors, within `window_ns`: (pid, destination).
fn recent_connect(marks: &ScopeMarks, ev: &Event, window_ns: u64) -> Option<(u32, String)> {
    std::iter::once(ev.pid())
        .chain(ev.image.ancestors(4).map(|a| a.pid))
        .find_map(|p| {
            let (t, to) = marks.dests.get(&p)?.back()?;
            (ev.time_ns.saturating_sub(*t) <= window_ns).then(|| (p, to.to_string()))
        })
}

/// A connection: the end of a reverse shell or an exfiltration, or one
/// more destination of a scan.
fn connect(
    marks: &mut ScopeMarks,
    ev: &Event,
    to: SocketAddr,
    failed: Option<&str>,
    cfg: &DetectConfig,
    out: &mut Vec<AuditDraft>,
) {
    let now = ev.time_ns;
    let pid = ev.pid();
    // An attempt that failed is still the attempt: say how it ended
    // (formatted only for an audit).
    let attempt = || match failed {
        Some(e) => format!("connection attempt to {to} ({e})"),
        None => format!("connection to {to}"),
    };
    // The process and its ancestors, without an allocation.
    let mut pids = [0u32; LINEAGE + 1];
    let mut n = 0;
    for p in std::iter::once(pid).chain(ev.image.ancestors(LINEAGE).map(|a| a.pid)) {
        pids[n] = p;
        n += 1;
    }
    let lineage = &pids[..n];
    // Each mark ends in at most one audit: a shell's hundredth connection
    // is not news.
    if let Some(shell) = marks.shells.take(lineage, now, cfg.window_ns) {
        out.push(draft(
            IncidentType::ReverseShell,
            "reverse-shell",
            Severity::Critical,
            format!(
                "outbound {} by {} (pid {pid}) from a {}",
                attempt(),
                ev.exe(),
                shell.what
            ),
            to.to_string(),
        ));
    } else if is_shell(ev.exe(), ev.argv()) && marks.shell_connects.insert(pid) {
        if marks.shell_connects.len() > MAX_MARKS {
            marks.shell_connects.clear();
        }
        out.push(draft(
            IncidentType::ReverseShell,
            "reverse-shell",
            Severity::Critical,
            format!(
                "shell {} (pid {pid}) made an outbound {}",
                ev.exe(),
                attempt()
            ),
            to.to_string(),
        ));
    }
    if let Some(m) = marks.sensitive.take(lineage, now, cfg.window_ns) {
        out.push(draft(
            IncidentType::DataExfiltration,
            "exfiltration",
            Severity::Critical,
            format!(
                "{}, then a {} by {} (pid {pid}) from the same process tree",
                m.what,
                attempt(),
                ev.exe()
            ),
            to.to_string(),
        ));
    }
    let q = marks.dests.entry(pid).or_default();
    while q
        .front()
        .is_some_and(|(t, _)| now.saturating_sub(*t) > cfg.scan_window_ns)
    {
        q.pop_front();
    }
    if !q.iter().any(|(_, d)| *d == to) {
        q.push_back((now, to));
        if q.len() > cfg.scan_threshold * 4 {
            q.pop_front();
        }
    }
    if q.len() >= cfg.scan_threshold && marks.scanned.insert(pid) {
        out.push(draft(
            IncidentType::PortScan,
            "port-scan",
            Severity::High,
            format!(
                "{} (pid {pid}) connected or tried to connect to {} distinct destinations within {}s",
                ev.exe(),
                q.len(),
                cfg.scan_window_ns / 1_000_000_000
            ),
            to.to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::lineage::Image,
        event::{FileDetail, NetDetail},
    };
    use std::sync::Arc;

    const CFG: DetectConfig = DetectConfig {
        window_ns: 1_000_000,
        scan_threshold: 3,
        scan_window_ns: 1_000_000,
    };

    fn argv(s: &[&str]) -> Arc<[String]> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn ev(pid: u32, ppid: u32, image: Arc<Image>, t: u64, detail: Detail) -> Event {
        let mut e = crate::event::test_support::event(0, pid, detail);
        e.record.task.ppid = ppid;
        e.time_ns = t;
        e.image = image;
        e
    }

    fn net(kind: EventKind, port: u16, remote: Option<&str>) -> Detail {
        Detail::Net {
            kind,
            net: NetDetail {
                protocol: 6,
                local: format!("127.0.0.1:{port}").parse().unwrap(),
                remote: remote.map(|r| r.parse().unwrap()),
                backlog: 0,
                ret: 0,
            },
        }
    }

    fn exec() -> Detail {
        exec_on(false)
    }

    /// An exec; `stdin_socket`: its standard input is a socket.
    fn exec_on(stdin_socket: bool) -> Detail {
        let mut d = crate::event::test_support::exec_detail("", "", &[]);
        if let Detail::Exec {
            stdin_socket: s, ..
        } = &mut d
        {
            *s = stdin_socket;
        }
        d
    }

    #[test]
    fn shells_by_busybox_applet_name() {
        assert!(is_shell("/bin/bash", &[]));
        assert!(is_shell("/bin/busybox", &["sh".into()]));
        assert!(!is_shell("/bin/busybox", &["cat".into()]));
        assert!(!is_shell("/usr/bin/ssh", &[]));
    }

    #[test]
    fn shell_of_a_listener_then_connect_is_a_reverse_shell() {
        let mut d = Detectors::default();
        let svc = Image::root(10, 0, "/srv/app".into(), argv(&["app"]));
        assert!(d
            .observe(
                &ev(10, 1, svc.clone(), 1, net(EventKind::NetListen, 80, None)),
                false,
                &CFG
            )
            .is_empty());
        let sh = Image::child_of(Some(&svc), 11, 0, "/bin/sh".into(), argv(&["sh", "-i"]));
        let a = d.observe(&ev(11, 10, sh.clone(), 2, exec()), false, &CFG);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, "shell-by-network-service");
        let nc = Image::child_of(Some(&sh), 12, 0, "/bin/nc".into(), argv(&["nc"]));
        let a = d.observe(
            &ev(
                12,
                11,
                nc,
                3,
                net(EventKind::NetConnect, 5000, Some("10.0.0.9:4444")),
            ),
            false,
            &CFG,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].incident, IncidentType::ReverseShell);
        assert!(a[0].message.contains("10.0.0.9:4444"), "{}", a[0].message);
    }

    #[test]
    fn audited_sensitive_read_then_connect_from_the_tree_is_exfiltration() {
        let mut d = Detectors::default();
        let sh = Image::root(20, 0, "/bin/sh".into(), argv(&["sh"]));
        let cp = Image::child_of(Some(&sh), 21, 0, "/bin/cp".into(), argv(&["cp"]));
        let read = Detail::File {
            kind: EventKind::SensitiveRead,
            file: Box::new(FileDetail {
                path: "/etc/passwd".into(),
                ..Default::default()
            }),
        };
        // A normal read (not audited) starts nothing.
        d.observe(&ev(21, 20, cp.clone(), 1, read.clone()), false, &CFG);
        let curl = Image::child_of(Some(&sh), 22, 0, "/bin/curl".into(), argv(&["curl"]));
        let connect = net(EventKind::NetConnect, 5000, Some("10.0.0.9:443"));
        assert!(d
            .observe(&ev(22, 20, curl.clone(), 2, connect.clone()), false, &CFG)
            .is_empty());
        d.observe(&ev(21, 20, cp, 3, read), true, &CFG);
        let a = d.observe(&ev(22, 20, curl.clone(), 4, connect.clone()), false, &CFG);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].incident, IncidentType::DataExfiltration);
        assert!(
            a[0].message.starts_with("/etc/passwd read by /bin/cp"),
            "{}",
            a[0].message
        );
        // Once per read.
        assert!(d
            .observe(&ev(22, 20, curl, 5, connect), false, &CFG)
            .is_empty());
    }

    #[test]
    fn many_destinations_are_a_port_scan_once() {
        let mut d = Detectors::default();
        let p = Image::root(30, 0, "/bin/scan".into(), argv(&["scan"]));
        let mut found = Vec::new();
        for port in 1..=5 {
            let to = format!("10.0.0.1:{port}");
            found.extend(d.observe(
                &ev(
                    30,
                    1,
                    p.clone(),
                    port as u64,
                    net(EventKind::NetConnect, 5000, Some(&to)),
                ),
                false,
                &CFG,
            ));
        }
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].incident, IncidentType::PortScan);
    }

    #[test]
    fn refused_attempts_count_and_say_how_they_ended() {
        let mut d = Detectors::default();
        let p = Image::root(31, 0, "/bin/bash".into(), argv(&["bash"]));
        let mut found = Vec::new();
        for port in 1..=3u16 {
            let mut n = net(EventKind::NetConnect, 0, Some(&format!("10.0.0.2:{port}")));
            if let Detail::Net { net, .. } = &mut n {
                net.ret = -111;
            }
            found.extend(d.observe(&ev(31, 1, p.clone(), u64::from(port), n), false, &CFG));
        }
        // bash connecting out itself is a reverse shell attempt; the third
        // refused port completes the scan.
        let kinds: Vec<_> = found.iter().map(|a| a.incident).collect();
        assert_eq!(kinds, [IncidentType::ReverseShell, IncidentType::PortScan]);
        assert!(
            found[0]
                .message
                .contains("connection attempt to 10.0.0.2:1 (ECONNREFUSED)"),
            "{}",
            found[0].message
        );
        assert!(found[1].message.contains("tried to connect to 3 distinct"));
    }

    #[test]
    fn made_executable_below_a_listener_is_a_suspicious_binary() {
        let mut d = Detectors::default();
        let made_exec = |path: &str| {
            Detail::Binary(Box::new(crate::event::BinaryDetail {
                path: path.into(),
                reason: crate::event::BinaryReason::MadeExecutable,
                writer_pid: Some(61),
                writer_exe: Some("/bin/sh".into()),
            }))
        };
        let web = Image::root(60, 0, "/usr/sbin/nginx".into(), argv(&["nginx"]));
        let chmod = Image::child_of(Some(&web), 61, 0, "/bin/chmod".into(), argv(&["chmod"]));
        // Before the server listens: nothing.
        assert!(d
            .observe(
                &ev(61, 60, chmod.clone(), 1, made_exec("/tmp/x")),
                false,
                &CFG
            )
            .is_empty());
        d.observe(
            &ev(60, 1, web, 2, net(EventKind::NetListen, 80, None)),
            false,
            &CFG,
        );
        let a = d.observe(&ev(61, 60, chmod, 3, made_exec("/tmp/x")), false, &CFG);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].incident, IncidentType::SuspiciousBinary);
        assert_eq!(a[0].item, "/tmp/x");
        // By the network-facing process itself (a runtime unpacking a
        // layer), or elsewhere (a build in a work tree): nothing.
        let web2 = Image::root(60, 0, "/usr/sbin/nginx".into(), argv(&["nginx"]));
        assert!(d
            .observe(&ev(60, 1, web2, 4, made_exec("/srv/bin/x")), false, &CFG)
            .is_empty());
        let dev = Image::root(70, 0, "/bin/chmod".into(), argv(&["chmod"]));
        assert!(d
            .observe(
                &ev(70, 1, dev, 4, made_exec("/home/a/src/run.sh")),
                false,
                &CFG
            )
            .is_empty());
    }

    #[test]
    fn connect_then_shell_on_the_socket_is_a_reverse_shell() {
        let mut d = Detectors::default();
        let py = Image::root(40, 0, "/usr/bin/python3".into(), argv(&["python3"]));
        let connect = net(EventKind::NetConnect, 5000, Some("10.0.0.9:4444"));
        assert!(d
            .observe(&ev(40, 1, py.clone(), 1, connect), false, &CFG)
            .is_empty());
        // The same pid execs a shell with the socket as its input.
        let sh = Image::execed(
            Some(&py),
            None,
            40,
            0,
            "/bin/sh".into(),
            argv(&["sh", "-i"]),
        );
        let a = d.observe(&ev(40, 1, sh, 2, exec_on(true)), false, &CFG);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].incident, IncidentType::ReverseShell);
        assert_eq!(a[0].severity, Severity::Critical);
        assert_eq!(a[0].item, "10.0.0.9:4444");
        assert!(
            a[0].message
                .contains("after pid 40 connected to 10.0.0.9:4444"),
            "{}",
            a[0].message
        );

        // A shell on a socket with no connection before it is only odd.
        let other = Image::root(50, 0, "/bin/sh".into(), argv(&["sh"]));
        let a = d.observe(&ev(50, 1, other, 3, exec_on(true)), false, &CFG);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].incident, IncidentType::Unexpected);
        assert!(a[0].message.starts_with("shell with a socket as its input"));
    }
}
