//! Process ancestry: every program image a process ran, linked to the image
//! it came from. A fork starts a copy of the parent's image; an exec starts
//! a new image whose parent is the one it replaced (same pid), so
//! `sh -c 'sh -c "exec true"'` keeps both shells in the ancestry of `true`
//! even though all three ran as one process.
//!
//! Images are shared (`Arc`): events keep the image they happened in, so an
//! event's ancestry stays readable after its processes exit and are pruned
//! from the process table. Chains are capped so a process that re-executes
//! itself forever cannot grow one without bound.

use std::sync::Arc;

/// Longest chain kept; when an exec would go past it, the newest
/// [`KEEP_ON_CAP`] images are copied into a fresh chain.
const CHAIN_CAP: u32 = 64;
const KEEP_ON_CAP: u32 = 32;

/// Login programs: a process below one of these is in an interactive session.
pub const SESSION_LEADERS: &[&str] = &[
    "sshd",
    "sshd-session",
    "login",
    "in.telnetd",
    "dropbear",
    "agetty",
    "getty",
];

/// One program image of one process.
#[derive(Debug, PartialEq, Eq)]
pub struct Image {
    pub pid: u32,
    pub uid: u32,
    pub exe: Arc<str>,
    pub argv: Arc<[String]>,
    /// The image this one came from: the replaced image (exec) or the
    /// parent process's image (fork, or a process first seen in `/proc`).
    pub parent: Option<Arc<Image>>,
    /// A fork's copy of its parent's image, not exec'd yet.
    pub inherited: bool,
    depth: u32,
}

impl Image {
    /// An image with no known ancestry.
    pub fn root(pid: u32, uid: u32, exe: Arc<str>, argv: Arc<[String]>) -> Arc<Image> {
        Arc::new(Image {
            pid,
            uid,
            exe,
            argv,
            parent: None,
            inherited: false,
            depth: 0,
        })
    }

    /// A forked child: the parent's program, under the child's pid.
    pub fn forked(parent: &Arc<Image>, pid: u32, uid: u32) -> Arc<Image> {
        Self::link(
            Image {
                pid,
                uid,
                exe: parent.exe.clone(),
                argv: parent.argv.clone(),
                parent: None,
                inherited: true,
                depth: 0,
            },
            Some(parent.clone()),
        )
    }

    /// `prev` (the process's image before, if known; else `parent`, the
    /// parent process's image) replaced by a new program. A fork's copy that
    /// never ran anything of its own is not kept in the chain.
    pub fn execed(
        prev: Option<&Arc<Image>>,
        parent: Option<&Arc<Image>>,
        pid: u32,
        uid: u32,
        exe: Arc<str>,
        argv: Arc<[String]>,
    ) -> Arc<Image> {
        let from = match prev {
            Some(p) if p.inherited => p.parent.clone(),
            Some(p) => Some(p.clone()),
            None => parent.cloned(),
        };
        Self::link(
            Image {
                pid,
                uid,
                exe,
                argv,
                parent: None,
                inherited: false,
                depth: 0,
            },
            from,
        )
    }

    /// A process with a known parent process, first seen without a fork.
    pub fn child_of(
        parent: Option<&Arc<Image>>,
        pid: u32,
        uid: u32,
        exe: Arc<str>,
        argv: Arc<[String]>,
    ) -> Arc<Image> {
        Self::execed(None, parent, pid, uid, exe, argv)
    }

    fn link(mut img: Image, parent: Option<Arc<Image>>) -> Arc<Image> {
        let parent = match parent {
            Some(p) if p.depth + 1 >= CHAIN_CAP => Some(truncated(&p, KEEP_ON_CAP)),
            p => p,
        };
        img.depth = parent.as_ref().map_or(0, |p| p.depth + 1);
        img.parent = parent;
        Arc::new(img)
    }

    /// The images this one came from, nearest first, at most `max`.
    pub fn ancestors(&self, max: usize) -> impl Iterator<Item = &Image> {
        let mut next = self.parent.as_deref();
        std::iter::from_fn(move || {
            let cur = next?;
            next = cur.parent.as_deref();
            Some(cur)
        })
        .take(max)
    }

    /// Base name of the executable.
    pub fn name(&self) -> &str {
        self.exe.rsplit('/').next().unwrap_or(&self.exe)
    }
}

/// A copy of the newest `keep` images of a chain.
fn truncated(top: &Arc<Image>, keep: u32) -> Arc<Image> {
    let mut nodes: Vec<&Image> = Vec::with_capacity(keep as usize);
    let mut cur = Some(&**top);
    while let Some(n) = cur {
        if nodes.len() as u32 >= keep {
            break;
        }
        nodes.push(n);
        cur = n.parent.as_deref();
    }
    let mut parent: Option<Arc<Image>> = None;
    for (depth, n) in nodes.iter().rev().enumerate() {
        parent = Some(Arc::new(Image {
            pid: n.pid,
            uid: n.uid,
            exe: n.exe.clone(),
            argv: n.argv.clone(),
            parent: parent.take(),
            inherited: n.inherited,
            depth: depth as u32,
        }));
    }
    parent.unwrap_or_else(|| top.clone())
}

/// Whether a process is part of an interactive session: it has a
/// controlling terminal, an audit login uid, or a login program (sshd,
/// login, telnetd, getty…) among the images it came from.
pub fn interactive(has_tty: bool, loginuid: Option<u32>, image: &Image) -> bool {
    has_tty
        || loginuid.is_some()
        || image
            .ancestors(usize::MAX)
            .any(|a| SESSION_LEADERS.contains(&a.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Arc<[String]> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn names(img: &Image) -> Vec<(u32, String)> {
        img.ancestors(usize::MAX)
            .map(|a| (a.pid, a.argv.join(" ")))
            .collect()
    }

    #[test]
    fn exec_chain_keeps_replaced_images_and_skips_fork_copies() {
        let test = Image::root(100, 0, "/t".into(), argv(&["t"]));
        let child = Image::forked(&test, 200, 0);
        assert!(child.inherited);
        let outer = Image::execed(
            Some(&child),
            Some(&test),
            200,
            0,
            "/bin/dash".into(),
            argv(&["sh", "-c", "sh -c \"exec true\""]),
        );
        let inner = Image::execed(
            Some(&outer),
            None,
            200,
            0,
            "/bin/dash".into(),
            argv(&["sh", "-c", "exec true"]),
        );
        let t = Image::execed(
            Some(&inner),
            None,
            200,
            0,
            "/bin/true".into(),
            argv(&["true"]),
        );
        assert_eq!(
            names(&t),
            [
                (200, "sh -c exec true".to_string()),
                (200, "sh -c sh -c \"exec true\"".to_string()),
                (100, "t".to_string()),
            ]
        );
        assert_eq!(t.ancestors(1).count(), 1);
    }

    #[test]
    fn chains_are_capped() {
        let mut img = Image::root(1, 0, "/init".into(), argv(&["init"]));
        for i in 0..1000 {
            img = Image::execed(Some(&img), None, 1, 0, "/x".into(), argv(&[&i.to_string()]));
        }
        let n = img.ancestors(usize::MAX).count();
        assert!(n < CHAIN_CAP as usize, "{n}");
        assert_eq!(img.ancestors(1).next().map(|a| &a.argv[0][..]), Some("998"));
    }

    #[test]
    fn interactive_below_sshd() {
        let sshd = Image::root(1, 0, "/usr/sbin/sshd".into(), argv(&["sshd"]));
        let bash = Image::child_of(Some(&sshd), 2, 0, "/bin/bash".into(), argv(&["bash"]));
        let cron = Image::root(3, 0, "/usr/sbin/cron".into(), argv(&["cron"]));
        assert!(interactive(false, None, &bash));
        assert!(!interactive(false, None, &cron));
        assert!(interactive(true, None, &cron));
        assert!(interactive(false, Some(1000), &cron));
    }
}
