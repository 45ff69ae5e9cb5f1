//! The syscalls the syscall programs watch: this architecture's numbers
//! (from libc) and the shape of their arguments.

use fdr_common::op;

#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    /// Name as in `syscalls:sys_enter_<name>`.
    pub name: &'static str,
    pub nr: i64,
    pub op: u8,
}

macro_rules! table {
    ($($name:ident => $op:ident;)*) => {
        &[$(Syscall {
            name: stringify!($name),
            nr: paste_sys!($name),
            op: op::$op,
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
    open => OPEN;
    openat => OPEN;
    openat2 => OPEN;
    creat => OPEN;
    unlink => UNLINK;
    unlinkat => UNLINKAT;
    rmdir => RMDIR;
    rename => RENAME;
    renameat => RENAMEAT;
    renameat2 => RENAMEAT;
    chmod => CHMOD;
    fchmod => FCHMOD;
    fchmodat => FCHMODAT;
    fchmodat2 => FCHMODAT;
    chown => CHOWN;
    lchown => CHOWN;
    fchown => FCHOWN;
    fchownat => FCHOWNAT;
    link => LINK;
    linkat => LINKAT;
    symlink => SYMLINK;
    symlinkat => SYMLINKAT;
    truncate => TRUNCATE;
    ftruncate => FTRUNCATE;
    bind => BIND;
    connect => CONNECT;
    listen => LISTEN;
    accept => ACCEPT;
    accept4 => ACCEPT;
    setuid => CRED;
    setgid => CRED;
    setreuid => CRED;
    setregid => CRED;
    setresuid => CRED;
    setresgid => CRED;
    setfsuid => CRED;
    setfsgid => CRED;
    capset => CRED;
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
