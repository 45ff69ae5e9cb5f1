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
        tp_exec_filename: exec.offset("filename")?,
        tp_exec_pid: exec.offset("pid")?,
        tp_exec_old_pid: exec.offset("old_pid")?,
    })
}
