//! The test image: a one-layer OCI image built on the spot from the host's
//! static busybox (no registry needed).

use std::{
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{which, Containerd};

/// Writes `<dir>/image.tar`: an OCI image layout (one uncompressed layer
/// with `/bin/busybox` and a symlink per applet), named [`Containerd::IMAGE`]
/// by the `io.containerd.image.name` annotation that `ctr images import`
/// reads.
pub(super) fn build_image(dir: &Path) -> Result<PathBuf> {
    let work = dir.join("image");
    let layer = rootfs_layer(&work)?;
    let blobs = work.join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let (layer_digest, layer_size) = add_blob(&blobs, &std::fs::read(&layer)?)?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sleep", "inf"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = add_blob(&blobs, config.to_string().as_bytes())?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_blob(&blobs, manifest.to_string().as_bytes())?;

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "io.containerd.image.name": Containerd::IMAGE },
        }],
    });
    let layout = work.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let image = dir.join("image.tar");
    run(Command::new("tar")
        .args(["--create", "--file"])
        .arg(&image)
        .arg("--directory")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"]))?;
    std::fs::remove_dir_all(&work)?;
    Ok(image)
}

/// Writes `<work>/layer.tar`: a root filesystem with the host's static
/// `/bin/busybox` and a symlink per applet (also what `docker import`
/// takes).
pub(crate) fn rootfs_layer(work: &Path) -> Result<PathBuf> {
    let busybox = which("busybox").context("busybox not found")?;
    let rootfs = work.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).context("copying busybox")?;
    let applets = run(Command::new(&busybox).arg("--list"))?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    // As in real images: a shadow file in the image's own layer.
    std::fs::write(rootfs.join("etc/shadow"), "root:*:19000:0:99999:7:::\n")?;
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--create", "--file"])
        .arg(&layer)
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .args(["--mtime=@0", "--directory"])
        .arg(&rootfs)
        .arg("."))?;
    std::fs::remove_dir_all(&rootfs)?;
    Ok(layer)
}

/// Stores `data` as a blob; returns its digest (`sha256:…`) and size.
pub(super) fn add_blob(blobs: &Path, data: &[u8]) -> Result<(String, u64)> {
    let hex = sha256_hex(data)?;
    std::fs::write(blobs.join(&hex), data)?;
    Ok((format!("sha256:{hex}"), data.len() as u64))
}

/// The SHA-256 of `data`, in hex, from `sha256sum`.
pub(super) fn sha256_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(data)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hex.len() != 64 {
        bail!("sha256sum failed: {}", out.status);
    }
    Ok(hex.to_owned())
}

/// Runs a command, failing with its stderr; returns its stdout.
pub(super) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `path` is a 64-bit little-endian ELF without a program
/// interpreter (statically linked).
pub(super) fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let bytes = |o: usize, n: usize| elf.get(o..o + n);
    let int = |o: usize, n: usize| {
        bytes(o, n).map(|b| b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    if bytes(0, 6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (int(0x20, 8), int(0x36, 2), int(0x38, 2))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        usize::try_from(phoff + i * phentsize)
            .ok()
            .and_then(|o| int(o, 4))
            .is_some_and(|t| t != u64::from(PT_INTERP))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        let exe = std::env::current_exe().expect("test binary");
        assert!(!is_static_elf(&exe), "test binaries are dynamically linked");
        assert!(!is_static_elf(Path::new("/nonexistent")));
        assert!(!is_static_elf(Path::new("/proc/self/status")));
    }
}
