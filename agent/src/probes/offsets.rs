//! The [`KernelOffsets`] table the programs need, from BTF and tracefs.

use std::path::Path;

use fdr_common::KernelOffsets;

use super::{btf::Btf, tracefs::Format, ProbeError};

/// `struct pt_regs` members holding the syscall arguments.
#[cfg(target_arch = "x86_64")]
const SYSCALL_ARG_REGS: [&str; 6] = ["di", "si", "dx", "r10", "r8", "r9"];

fn syscall_arg_regs(btf: &Btf) -> Result<[u32; 6], ProbeError> {
    let mut out = [0; 6];
    for (slot, name) in out.iter_mut().zip(SYSCALL_ARG_REGS) {
        *slot = btf.member_offset("pt_regs", name)?;
    }
    Ok(out)
}

/// The record layout of the syscall tracepoints (`__syscall_nr`, first
/// argument, `ret`), from `sys_enter_openat` / `sys_exit_openat`; each
/// syscall's own format is checked against it when it is attached
/// ([`super::syscall_hooks`]). Unknown (`u32::MAX`) when this kernel has no
/// syscall tracepoints: none is attached then.
fn syscall_record(tracefs: &Path) -> (u32, u32, u32) {
    let unknown = (u32::MAX, u32::MAX, u32::MAX);
    let (Ok(enter), Ok(exit)) = (
        Format::read(tracefs, "syscalls", "sys_enter_openat"),
        Format::read(tracefs, "syscalls", "sys_exit_openat"),
    ) else {
        return unknown;
    };
    match (
        enter.offset(SYSCALL_NR),
        enter.offset_after(SYSCALL_NR),
        exit.offset(SYSCALL_NR),
        exit.offset("ret"),
    ) {
        (Ok(nr), Some(args), Ok(exit_nr), Ok(ret)) if nr == exit_nr => (nr, args, ret),
        _ => unknown,
    }
}

/// The syscall number's field in syscall tracepoint records.
pub const SYSCALL_NR: &str = "__syscall_nr";

/// Resolves every offset; fails when a required one is missing.
pub fn resolve(btf: &Btf, tracefs: &Path) -> Result<KernelOffsets, ProbeError> {
    let task = |m: &str| btf.member_offset("task_struct", m);
    let cred = |m: &str| btf.member_offset("cred", m);
    let exec = Format::read(tracefs, "sched", "sched_process_exec")?;
    let (tp_sys_nr, tp_sys_args, tp_sys_ret) = syscall_record(tracefs);
    Ok(KernelOffsets {
        task_pid: task("pid")?,
        task_tgid: task("tgid")?,
        task_real_parent: task("real_parent")?,
        task_group_leader: task("group_leader")?,
        task_mm: task("mm")?,
        task_signal: task("signal")?,
        task_exit_code: task("exit_code")?,
        task_start_time: task("start_time")?,
        // Only with CONFIG_AUDIT; events then carry loginuid = unset.
        task_loginuid: btf
            .optional_member_offset("task_struct", "loginuid")
            .unwrap_or(u32::MAX),
        task_comm: task("comm")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        signal_tty: btf.member_offset("signal_struct", "tty")?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        file_f_path: btf.member_offset("file", "f_path")?,
        path_mnt: btf.member_offset("path", "mnt")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_name: btf.member_offset("dentry", "d_name")? + btf.member_offset("qstr", "name")?,
        vfsmount_mnt_root: btf.member_offset("vfsmount", "mnt_root")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_mnt_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        dentry_d_inode: btf.member_offset("dentry", "d_inode")?,
        task_fs: task("fs")?,
        fs_pwd: btf.member_offset("fs_struct", "pwd")?,
        task_files: task("files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        file_f_flags: btf.member_offset("file", "f_flags")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        inode_i_mode: btf.member_offset("inode", "i_mode")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        sb_s_dev: btf.member_offset("super_block", "s_dev")?,
        sb_s_magic: btf.member_offset("super_block", "s_magic")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        // struct sock starts with its struct sock_common.
        sk_family: btf.member_offset("sock_common", "skc_family")?,
        sk_num: btf.member_offset("sock_common", "skc_num")?,
        sk_dport: btf.member_offset("sock_common", "skc_dport")?,
        sk_rcv_saddr: btf.member_offset("sock_common", "skc_rcv_saddr")?,
        sk_daddr: btf.member_offset("sock_common", "skc_daddr")?,
        sk_v6_rcv_saddr: btf.member_offset("sock_common", "skc_v6_rcv_saddr")?,
        sk_v6_daddr: btf.member_offset("sock_common", "skc_v6_daddr")?,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        task_cred: task("cred")?,
        cred_uid: cred("uid")?,
        cred_euid: cred("euid")?,
        cred_suid: cred("suid")?,
        cred_fsuid: cred("fsuid")?,
        cred_gid: cred("gid")?,
        cred_egid: cred("egid")?,
        cred_sgid: cred("sgid")?,
        cred_fsgid: cred("fsgid")?,
        cred_cap_effective: cred("cap_effective")?,
        cred_cap_permitted: cred("cap_permitted")?,
        tp_sys_nr,
        tp_sys_args,
        tp_sys_ret,
        regs_args: syscall_arg_regs(btf)?,
        tp_exec_filename: exec.offset("filename")?,
        tp_exec_pid: exec.offset("pid")?,
        tp_exec_old_pid: exec.offset("old_pid")?,
    })
}
