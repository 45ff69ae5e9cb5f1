//! Builds the kernel programs (`ebpf/probes`, crate `fdr-ebpf`) for
//! `bpfel-unknown-none` with the nightly toolchain and `bpf-linker`, and
//! tells the agent where the object is (`FDR_EBPF_OBJECT`).
//!
//! `cargo xtask setup` installs what this needs; `FDR_EBPF_OBJECT` set in
//! the environment skips the build and uses a prebuilt object.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=FDR_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=FDR_TOOLS_DIR");
    if let Ok(prebuilt) = env::var("FDR_EBPF_OBJECT") {
        println!("cargo:rustc-env=FDR_EBPF_OBJECT={prebuilt}");
        println!("cargo:rerun-if-changed={prebuilt}");
        return Ok(());
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?.to_path_buf();
    for dir in [
        "ebpf/probes/src",
        "ebpf/probes/Cargo.toml",
        "ebpf/common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // One target directory for every profile and tool (build, clippy, test):
    // the object is the same, and a separate directory avoids cargo's lock.
    let object = build_probes(&root, &root.join("target/ebpf"))?;
    println!("cargo:rustc-env=FDR_EBPF_OBJECT={}", object.display());
    Ok(())
}

fn tools_bin() -> PathBuf {
    if let Ok(dir) = env::var("FDR_TOOLS_DIR") {
        return PathBuf::from(dir).join("bin");
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/fdr/tools/bin")
}

fn build_probes(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let tools = tools_bin();
    if !tools.join("bpf-linker").exists() && which("bpf-linker").is_none() {
        bail!(
            "bpf-linker not found in {} or on PATH: run `cargo xtask setup` first",
            tools.display()
        );
    }
    let path = format!(
        "{}:{}",
        tools.display(),
        env::var("PATH").unwrap_or_default()
    );
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "build", "--package", "fdr-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir)
        .env("PATH", path);
    // Variables cargo sets for this build script would leak into the nested
    // build and point it at the host toolchain.
    for (key, _) in env::vars() {
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key.as_str(),
                "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTUP_TOOLCHAIN"
                    | "RUSTFLAGS"
            );
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    let status = cmd
        .status()
        .context("running cargo +nightly to build the eBPF programs")?;
    if !status.success() {
        bail!("building the eBPF programs failed ({status}); `cargo xtask setup` installs the nightly rust-src and bpf-linker they need");
    }
    let object = target_dir.join("bpfel-unknown-none/release/fdr");
    if !object.exists() {
        bail!("eBPF build succeeded but {} is missing", object.display());
    }
    Ok(object)
}

fn which(bin: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.exists())
    })
}
