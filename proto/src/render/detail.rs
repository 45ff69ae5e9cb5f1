//! One-line text of an event's detail: the DETAIL column of event tables,
//! also used by the API's text search and the CSV export.

use super::{
    escape::{escape as e, name, shell_words_raw},
    severity_name, shell_words,
};
use crate::v1::{self as pb, event::Detail};

/// A readable one-line description of the event's detail, every text from
/// the event escaped ([`super::escape`]): safe to print, never more than
/// one line, and names that are not UTF-8 shown from their exact bytes.
pub fn detail_text(ev: &pb::Event) -> String {
    match &ev.detail {
        Some(Detail::Fork(f)) => format!("parent {}", f.parent_pid),
        Some(Detail::Exec(x)) => {
            let mut s = format!(
                "{} {}",
                name(&x.filename, &x.filename_raw),
                shell_words_raw(&x.argv, &x.argv_raw)
            );
            if x.argv_truncated {
                s.push_str(" [truncated]");
            }
            s
        }
        Some(Detail::Exit(x)) => match (x.code, x.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!(
                "killed by signal {sig}{}",
                if x.core_dumped { " (core dumped)" } else { "" }
            ),
            _ => format!("status {}", x.raw_status),
        },
        Some(Detail::File(f)) => file_text(ev.kind, f),
        Some(Detail::Net(n)) => {
            let local = format!(
                "{} {}",
                n.protocol,
                addr_text(&n.local_address, n.local_port)
            );
            let text = if n.remote_address.is_empty() {
                local
            } else {
                format!("{local} -> {}", addr_text(&n.remote_address, n.remote_port))
            };
            let text = if n.error.is_empty() {
                text
            } else {
                format!("{text} ({})", n.error)
            };
            e(&text).into_owned()
        }
        Some(Detail::Priv(p)) => {
            let (o, n) = (p.old.unwrap_or_default(), p.new.unwrap_or_default());
            format!(
                "{}: uid {}/{}/{} -> {}/{}/{}, gid {}/{}/{} -> {}/{}/{}, caps {:#x} -> {:#x}",
                e(&p.syscall),
                o.uid,
                o.euid,
                o.suid,
                n.uid,
                n.euid,
                n.suid,
                o.gid,
                o.egid,
                o.sgid,
                n.gid,
                n.egid,
                n.sgid,
                o.cap_effective,
                n.cap_effective
            )
        }
        Some(Detail::Account(a)) => format!(
            "{} by {} ({}){}: {} [{}]",
            e(&a.r#type),
            e(&a.user),
            a.uid,
            if a.interactive { ", interactive" } else { "" },
            e(&a.files.join(", ")),
            shell_words(&a.command)
        ),
        Some(Detail::ContainerLifecycle(c)) => {
            let what = ev.container.as_ref().map_or(String::new(), |m| {
                format!(" {} ({})", e(&m.name), e(&m.image))
            });
            if c.started {
                format!("container started{what} [{}]", e(&c.source))
            } else {
                format!(
                    "container stopped{what}: {}{} [{}]",
                    e(&c.reason),
                    c.exit_code
                        .map_or(String::new(), |x| format!(", exit code {x}")),
                    e(&c.source)
                )
            }
        }
        Some(Detail::ModelLearned(l)) => {
            format!(
                "added to model {}: {} {}",
                e(&l.model),
                e(&l.section),
                e(&l.item)
            )
        }
        Some(Detail::Audit(a)) => format!(
            "[{}] {}{}",
            severity_name(a.severity),
            e(&a.message),
            if a.incident > 0 {
                format!(" (incident #{})", a.incident)
            } else {
                String::new()
            }
        ),
        Some(Detail::Binary(b)) => format!(
            "{} {} (written by pid {})",
            e(&b.reason),
            e(&b.path),
            b.writer_pid.map_or("?".into(), |p| p.to_string())
        ),
        None => String::new(),
    }
}

/// `ip:port`, or `[ip]:port` for IPv6.
pub fn addr_text(ip: &str, port: u32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn file_text(kind: i32, f: &pb::FileDetail) -> String {
    let path = name(&f.path, &f.path_raw);
    let path2 = f
        .path2
        .as_deref()
        .map_or("?".into(), |p| name(p, &f.path2_raw));
    let mut s = match pb::EventKind::try_from(kind) {
        Ok(pb::EventKind::FileRename) => format!("{path} -> {path2}"),
        Ok(pb::EventKind::FileLink) if f.flags & 1 != 0 => {
            format!("{path2} -> {path} (symlink)")
        }
        Ok(pb::EventKind::FileLink) => format!("{path2} = {path}"),
        Ok(pb::EventKind::FileChmod) => match f.old_mode {
            Some(old) => format!(
                "{} mode {:o} -> {:o}",
                path,
                old & 0o7777,
                f.new_mode.unwrap_or(0)
            ),
            None => format!("{} mode {:o}", path, f.new_mode.unwrap_or(0)),
        },
        Ok(pb::EventKind::FileChown) => format!(
            "{} owner {}:{}",
            path,
            f.uid.map_or("-".into(), |u| u.to_string()),
            f.gid.map_or("-".into(), |g| g.to_string())
        ),
        Ok(pb::EventKind::FileTruncate) => format!("{} to {} bytes", path, f.size.unwrap_or(0)),
        _ => path.into_owned(),
    };
    if f.incomplete {
        s.push_str(" [path incomplete]");
    }
    s
}
