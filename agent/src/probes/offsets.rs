//! The [`KernelOffsets`] table the programs need, from BTF and tracefs.

use std::path::Path;

use fdr_common::KernelOffsets;

use super::{btf::Btf, tracefs::Format, ProbeError};

/// Resolves every offset; fails when a required one is missing.
pub fn resolve(btf: &Btf, tracefs: &Path) -> Result<KernelOffsets, ProbeError> {
    let task = |m: &str| btf.member_offset("task_struct", m);
    let exec = Format::read(tracefs, "sched", "sched_process_exec")?;
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
        tp_exec_filename: exec.offset("filename")?,
        tp_exec_pid: exec.offset("pid")?,
        tp_exec_old_pid: exec.offset("old_pid")?,
    })
}
