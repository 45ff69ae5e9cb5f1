//! Toolchain bootstrap for the eBPF build, idempotent.
//!
//! - the `nightly` toolchain with `rust-src` (for `-Z build-std=core`);
//! - `bpf-linker` 0.13.0, built against the nightly toolchain's own libLLVM
//!   (the distribution's LLVM is too old), installed under
//!   `~/.cache/fdr/tools` (or `$FDR_TOOLS_DIR`), where the agent's build
//!   script looks for it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_FEATURE: &str = "llvm-22";

pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FDR_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/fdr/tools")
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Makes sure everything is there; returns the tools directory.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let sysroot = PathBuf::from(output("rustc", &["+nightly", "--print", "sysroot"]).context(
        "the nightly toolchain is required for the eBPF programs (rustup toolchain install nightly)",
    )?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        super::cmd(
            root,
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let tools = tools_dir();
    let linker = tools.join("bin/bpf-linker");
    let have = output(linker.to_str().unwrap_or_default(), &["--version"]).unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        install_bpf_linker(root, &sysroot, &tools)?;
    }
    Ok(tools)
}

fn install_bpf_linker(root: &Path, sysroot: &Path, tools: &Path) -> Result<()> {
    let llvm = std::fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}/lib", sysroot.display()))?;
    // bpf-linker links with -lLLVM and finds the library at run time through
    // the rpath its build script sets to $LLVM_PREFIX/lib.
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against {llvm} (about a minute)");
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            LLVM_FEATURE,
            "--force",
            "--root",
        ])
        .arg(tools)
        .env("LLVM_PREFIX", &prefix)
        .current_dir(root)
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("installing bpf-linker failed: {status}");
    }
    Ok(())
}
