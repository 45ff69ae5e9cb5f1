//! The syscalls the generic syscall programs watch: this architecture's
//! numbers (from libc), the shape of their arguments and the exit program
//! that handles each.

use fdr_common::op;

/// Which exit program handles a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Open,
    File,
    Net,
    Cred,
}

impl Exit {
    pub fn program(self) -> &'static str {
        match self {
            Exit::Open => "fdr_sys_exit_open",
            Exit::File => "fdr_sys_exit_file",
            Exit::Net => "fdr_sys_exit_net",
            Exit::Cred => "fdr_sys_exit_cred",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    /// Name as in `syscalls:sys_enter_<name>`.
    pub name: &'static str,
    pub nr: i64,
    pub op: u8,
    pub exit: Exit,
}

impl Syscall {
    /// Whether the entry program must keep its arguments for the exit.
    pub fn needs_entry(&self) -> bool {
        self.op != op::OPEN && self.op != op::ACCEPT
    }
}

macro_rules! table {
    ($($name:ident => $op:ident, $exit:ident;)*) => {
        &[$(Syscall {
            name: stringify!($name),
            nr: paste_sys!($name),
            op: op::$op,
            exit: Exit::$exit,
        }),*]
    };
}

macro_rules! paste_sys {
    (open) => {
        libc::SYS_open
    };
    (openat) => {
        libc::SYS_openat
    };
    (openat2) => {
        libc::SYS_openat2
    };
    (creat) => {
        libc::SYS_creat
    };
    (unlink) => {
        libc::SYS_unlink
    };
    (unlinkat) => {
        libc::SYS_unlinkat
    };
    (rmdir) => {
        libc::SYS_rmdir
    };
    (rename) => {
        libc::SYS_rename
    };
    (renameat) => {
        libc::SYS_renameat
    };
    (renameat2) => {
        libc::SYS_renameat2
    };
    (chmod) => {
        libc::SYS_chmod
    };
    (fchmod) => {
        libc::SYS_fchmod
    };
    (fchmodat) => {
        libc::SYS_fchmodat
    };
    (fchmodat2) => {
        libc::SYS_fchmodat2
    };
    (chown) => {
        libc::SYS_chown
    };
    (lchown) => {
        libc::SYS_lchown
    };
    (fchown) => {
        libc::SYS_fchown
    };
    (fchownat) => {
        libc::SYS_fchownat
    };
    (link) => {
        libc::SYS_link
    };
    (linkat) => {
        libc::SYS_linkat
    };
    (symlink) => {
        libc::SYS_symlink
    };
    (symlinkat) => {
        libc::SYS_symlinkat
    };
    (truncate) => {
        libc::SYS_truncate
    };
    (ftruncate) => {
        libc::SYS_ftruncate
    };
    (bind) => {
        libc::SYS_bind
    };
    (connect) => {
        libc::SYS_connect
    };
    (listen) => {
        libc::SYS_listen
    };
    (accept) => {
        libc::SYS_accept
    };
    (accept4) => {
        libc::SYS_accept4
    };
    (setuid) => {
        libc::SYS_setuid
    };
    (setgid) => {
        libc::SYS_setgid
    };
    (setreuid) => {
        libc::SYS_setreuid
    };
    (setregid) => {
        libc::SYS_setregid
    };
    (setresuid) => {
        libc::SYS_setresuid
    };
    (setresgid) => {
        libc::SYS_setresgid
    };
    (setfsuid) => {
        libc::SYS_setfsuid
    };
    (setfsgid) => {
        libc::SYS_setfsgid
    };
    (capset) => {
        libc::SYS_capset
    };
}

/// Every watched syscall (x86_64 has the legacy path calls too).
pub const SYSCALLS: &[Syscall] = table! {
    open => OPEN, Open;
    openat => OPEN, Open;
    openat2 => OPEN, Open;
    creat => OPEN, Open;
    unlink => UNLINK, File;
    unlinkat => UNLINKAT, File;
    rmdir => RMDIR, File;
    rename => RENAME, File;
    renameat => RENAMEAT, File;
    renameat2 => RENAMEAT, File;
    chmod => CHMOD, File;
    fchmod => FCHMOD, File;
    fchmodat => FCHMODAT, File;
    fchmodat2 => FCHMODAT, File;
    chown => CHOWN, File;
    lchown => CHOWN, File;
    fchown => FCHOWN, File;
    fchownat => FCHOWNAT, File;
    link => LINK, File;
    linkat => LINKAT, File;
    symlink => SYMLINK, File;
    symlinkat => SYMLINKAT, File;
    truncate => TRUNCATE, File;
    ftruncate => FTRUNCATE, File;
    bind => BIND, Net;
    connect => CONNECT, Net;
    listen => LISTEN, Net;
    accept => ACCEPT, Net;
    accept4 => ACCEPT, Net;
    setuid => CRED, Cred;
    setgid => CRED, Cred;
    setreuid => CRED, Cred;
    setregid => CRED, Cred;
    setresuid => CRED, Cred;
    setresgid => CRED, Cred;
    setfsuid => CRED, Cred;
    setfsgid => CRED, Cred;
    capset => CRED, Cred;
};

/// The syscall's name for a number, for display.
pub fn name_of(nr: u32) -> Option<&'static str> {
    SYSCALLS
        .iter()
        .find(|s| s.nr == i64::from(nr))
        .map(|s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_the_table_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in SYSCALLS {
            assert!(
                s.nr >= 0 && (s.nr as u32) < fdr_common::MAX_SYSCALL,
                "{}",
                s.name
            );
            assert!(seen.insert(s.nr), "{} twice", s.name);
        }
        assert_eq!(name_of(libc::SYS_renameat2 as u32), Some("renameat2"));
    }
}
