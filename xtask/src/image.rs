//! `cargo xtask image`: the agent's container image, assembled here without
//! a registry or `docker build`.
//!
//! The release `fdr-agent` (its eBPF programs are built by its build script
//! and embedded in the binary), `fdrctl` and `fdr-console` (the console's
//! Deployment runs this image with it as the command) go to
//! `/usr/local/bin`, with exactly the shared libraries `ldd` lists for
//! them, each at the path listed (the dynamic loader at the path the
//! binaries name, its content resolved through symlinks), the example
//! config at `/etc/fdr/fdr.toml`, the directories `/var/lib/fdr`,
//! `/var/lib/fdr-console`, `/run/fdr` and `/tmp`, and a minimal
//! `/etc/passwd` and `/etc/group`: one gzip'ed layer.
//!
//! The archive is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that also carries Docker's `manifest.json` pointing at
//! the same blobs: `docker load` (every version; before Docker 25 it reads
//! only `manifest.json`), `ctr import` and `podman load` accept it.
//!
//! It is reproducible: every file time is `SOURCE_DATE_EPOCH`, or else the
//! commit time; entries are sorted, owned by 0:0; gzip headers carry no
//! time or name. The tag is `fdr-agent:<version>-g<short rev>` (`-dirty`
//! when the work tree has changes), never `latest`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The variable `cargo xtask test` passes the archive's path to the tests in.
pub const ARCHIVE_ENV: &str = "FDR_IMAGE_ARCHIVE";

/// The image's repository name.
pub const NAME: &str = "fdr-agent";

/// Where the files go in the image (the DaemonSet's layout).
const AGENT_PATH: &str = "usr/local/bin/fdr-agent";
const FDRCTL_PATH: &str = "usr/local/bin/fdrctl";
const CONSOLE_PATH: &str = "usr/local/bin/fdr-console";
const CONFIG_PATH: &str = "etc/fdr/fdr.toml";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// What was written.
#[derive(Debug)]
pub struct Built {
    pub archive: PathBuf,
    pub tag: String,
    /// The archive's size in bytes.
    pub size: u64,
    /// The manifest's digest (`sha256:…`), what a registry would name.
    pub digest: String,
    /// The config's digest: Docker's image id.
    pub image_id: String,
}

/// `cargo xtask image`: builds the release binaries, then the archive at
/// `out` (default `<target>/image/fdr-agent.oci.tar`), tagged `tag`
/// (default: from the version and the git revision); prints what it wrote.
///
/// With `debug`, the image holds the debug binaries (`cargo xtask test`
/// already built them), their debug info stripped, and the default tag
/// ends in `-debug`: the same image but for the optimisation, without a
/// release build in every test run.
pub fn run(root: &Path, out: Option<PathBuf>, tag: Option<String>, debug: bool) -> Result<Built> {
    let meta = Metadata::read(root)?;
    let (agent, fdrctl, console) = if debug {
        super::cmd(
            root,
            "cargo",
            &[
                "build",
                "--package",
                "fdr-agent",
                "--package",
                "fdr-cli",
                "--package",
                "fdr-console",
                "--bins",
            ],
        )?;
        let dir = meta.target_dir.join("image/debug-bins");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let strip = |name: &str| -> Result<PathBuf> {
            let (from, to) = (meta.target_dir.join("debug").join(name), dir.join(name));
            super::cmd(
                root,
                "objcopy",
                &[
                    "--strip-debug",
                    &from.to_string_lossy(),
                    &to.to_string_lossy(),
                ],
            )?;
            Ok(to)
        };
        (strip("fdr-agent")?, strip("fdrctl")?, strip("fdr-console")?)
    } else {
        super::build(root)?;
        let release = meta.target_dir.join("release");
        (
            release.join("fdr-agent"),
            release.join("fdrctl"),
            release.join("fdr-console"),
        )
    };
    let out = out.unwrap_or_else(|| meta.target_dir.join("image/fdr-agent.oci.tar"));
    let tag = match tag {
        Some(t) => t,
        None if debug => format!("{}-debug", default_tag(root, &meta.version)?),
        None => default_tag(root, &meta.version)?,
    };
    check_tag(&tag)?;
    let git = GitInfo::read(root);
    let epoch = source_date_epoch(root)?;
    let source = git
        .remote
        .clone()
        .unwrap_or_else(|| "fdr (no git remote)".to_owned());
    let labels = BTreeMap::from([
        ("org.opencontainers.image.version", meta.version.clone()),
        (
            "org.opencontainers.image.revision",
            git.revision.clone().unwrap_or_default(),
        ),
        ("org.opencontainers.image.source", source),
        ("org.opencontainers.image.title", NAME.to_owned()),
    ]);
    let input = Input {
        agent,
        fdrctl,
        console,
        config: root.join("deploy/fdr.toml"),
        tag: tag.clone(),
        epoch,
        labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    };
    let archive = assemble(&input)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &archive.bytes).with_context(|| format!("writing {}", out.display()))?;
    let built = Built {
        archive: out,
        tag,
        size: archive.bytes.len() as u64,
        digest: archive.manifest_digest,
        image_id: archive.config_digest,
    };
    println!("archive  {}", built.archive.display());
    println!("tag      {}", built.tag);
    println!(
        "size     {} bytes ({:.1} MiB)",
        built.size,
        built.size as f64 / 1048576.0
    );
    println!("digest   {}", built.digest);
    println!("image id {}", built.image_id);
    println!(
        "load it with: docker load -i {0} | ctr -n k8s.io images import {0} | podman load -i {0}",
        built.archive.display()
    );
    Ok(built)
}

/// What the image is made of.
struct Input {
    agent: PathBuf,
    fdrctl: PathBuf,
    console: PathBuf,
    config: PathBuf,
    tag: String,
    epoch: u64,
    labels: BTreeMap<String, String>,
}

struct Archive {
    bytes: Vec<u8>,
    manifest_digest: String,
    config_digest: String,
}

/// One entry of the image's file system.
enum Node {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
}

/// The image's files, by path without the leading '/'; parents are added
/// as directories (0755).
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        self.0
            .insert(path.trim_matches('/').to_owned(), Node::Dir { mode });
    }

    fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.0
            .insert(path.trim_matches('/').to_owned(), Node::File { data, mode });
    }

    fn parents(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.0
                .entry(parent.to_owned())
                .or_insert(Node::Dir { mode: 0o755 });
            at += i + 1;
        }
    }

    /// The uncompressed layer: sorted, 0:0, every time `epoch`.
    fn tar(&self, epoch: u64) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, node) in &self.0 {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(epoch);
            match node {
                Node::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Node::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

fn assemble(input: &Input) -> Result<Archive> {
    let mut tree = Tree::default();
    for (bin, at) in [
        (&input.agent, AGENT_PATH),
        (&input.fdrctl, FDRCTL_PATH),
        (&input.console, CONSOLE_PATH),
    ] {
        let data = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
        tree.file(at, data, 0o755);
        for lib in shared_libraries(bin)? {
            // The content of the file the path resolves to, at the path the
            // binary (or the loader's search) expects.
            let real = std::fs::canonicalize(&lib)
                .with_context(|| format!("resolving {}", lib.display()))?;
            let data =
                std::fs::read(&real).with_context(|| format!("reading {}", real.display()))?;
            let path = lib.to_str().context("library path is not UTF-8")?;
            tree.file(path, data, 0o755);
        }
    }
    let config = std::fs::read(&input.config)
        .with_context(|| format!("reading {}", input.config.display()))?;
    tree.file(CONFIG_PATH, config, 0o644);
    tree.file("etc/passwd", PASSWD.into(), 0o644);
    tree.file("etc/group", GROUP.into(), 0o644);
    tree.dir("var/lib/fdr", 0o700);
    tree.dir("var/lib/fdr-console", 0o700);
    tree.dir("run/fdr", 0o755);
    tree.dir("tmp", 0o1777);

    let layer_tar = tree.tar(input.epoch)?;
    let diff_id = sha256(&layer_tar);
    let layer = gzip(&layer_tar)?;
    let created = rfc3339(input.epoch);
    let config = json!({
        "created": created,
        "architecture": oci_arch()?,
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            "Entrypoint": [format!("/{AGENT_PATH}")],
            "Cmd": ["--config", format!("/{CONFIG_PATH}")],
            "WorkingDir": "/",
            "Labels": input.labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config);
    let layer_digest = sha256(&layer);
    let mut annotations = BTreeMap::from([(
        "org.opencontainers.image.ref.name".to_owned(),
        input.tag.clone(),
    )]);
    annotations.insert(
        "org.opencontainers.image.created".to_owned(),
        created.clone(),
    );
    for (k, v) in &input.labels {
        annotations.insert(k.clone(), v.clone());
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len(),
        }],
        "annotations": annotations,
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                // containerd (`ctr import`) names the image by this one.
                "io.containerd.image.name": full_name(&input.tag),
                "org.opencontainers.image.ref.name": input.tag,
            },
        }],
    });
    // Docker's own format, for `docker load` before Docker 25 (which reads
    // nothing else): the same blobs, by path.
    let docker = json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [input.tag],
        "Layers": [blob_path(&layer_digest)],
    }]);

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "oci-layout".into(),
        serde_json::to_vec(&json!({ "imageLayoutVersion": "1.0.0" }))?,
    );
    files.insert("index.json".into(), serde_json::to_vec(&index)?);
    files.insert("manifest.json".into(), serde_json::to_vec(&docker)?);
    files.insert(blob_path(&config_digest), config);
    files.insert(blob_path(&layer_digest), layer);
    files.insert(blob_path(&manifest_digest), manifest);
    let mut outer = Tree::default();
    for (path, data) in files {
        outer.file(&path, data, 0o644);
    }
    Ok(Archive {
        bytes: outer.tar(input.epoch)?,
        manifest_digest,
        config_digest,
    })
}

/// The shared objects `ldd` lists for `bin`, by the path the loader finds
/// them at (the loader itself by the path the binary names); none for a
/// static binary.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", bin.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        if line.contains("not found") {
            bail!("a library is missing: {line}");
        }
        // `name => /path (0x…)`, `/path (0x…)` (the loader), or
        // `linux-vdso.so.1 (0x…)` (in the kernel, no file).
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    // No name, time 0, "unknown" OS: the same bytes on every machine.
    let mut gz = flate2::GzBuilder::new()
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// `fdr-agent:1.0` → `docker.io/library/fdr-agent:1.0` (Docker's
/// normalisation of a name without a registry).
fn full_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or_default();
    let has_registry =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        tag.to_owned()
    } else if tag.contains('/') {
        format!("docker.io/{tag}")
    } else {
        format!("docker.io/library/{tag}")
    }
}

fn check_tag(tag: &str) -> Result<()> {
    let Some((name, version)) = tag.rsplit_once(':').filter(|(n, _)| !n.is_empty()) else {
        bail!("image tag {tag:?} must be NAME:TAG");
    };
    ensure!(
        !version.contains('/') && !version.is_empty(),
        "image tag {tag:?} must be NAME:TAG"
    );
    ensure!(
        version != "latest",
        "image tag {tag:?}: never `latest`, name the version"
    );
    let ok_tag = version.len() <= 128
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !version.starts_with(['.', '-']);
    ensure!(ok_tag, "image tag {tag:?}: invalid tag {version:?}");
    let ok_name = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c));
    ensure!(
        ok_name,
        "image tag {tag:?}: invalid repository name {name:?}"
    );
    Ok(())
}

fn oci_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

/// `cargo metadata`: the target directory and fdr-agent's version.
struct Metadata {
    target_dir: PathBuf,
    version: String,
}

impl Metadata {
    fn read(root: &Path) -> Result<Metadata> {
        let out = Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(root)
            .output()
            .context("running cargo metadata")?;
        ensure!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
        let target_dir = v["target_directory"]
            .as_str()
            .context("cargo metadata: no target_directory")?
            .into();
        let version = v["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "fdr-agent"))
            .and_then(|p| p["version"].as_str())
            .context("cargo metadata: no fdr-agent package")?
            .to_owned();
        Ok(Metadata {
            target_dir,
            version,
        })
    }
}

struct GitInfo {
    revision: Option<String>,
    remote: Option<String>,
}

impl GitInfo {
    fn read(root: &Path) -> GitInfo {
        GitInfo {
            revision: git(root, &["rev-parse", "HEAD"]).ok(),
            remote: git(root, &["remote", "get-url", "origin"])
                .ok()
                .filter(|r| !r.is_empty()),
        }
    }
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .context("running git")?;
    ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `fdr-agent:<version>-g<short rev>`, `-dirty` when the work tree differs
/// from the commit.
fn default_tag(root: &Path, version: &str) -> Result<String> {
    let rev = git(root, &["rev-parse", "--short=9", "HEAD"])
        .context("the default tag names the git revision: pass --tag outside a git checkout")?;
    let dirty = !git(root, &["status", "--porcelain"])?.is_empty();
    Ok(format!(
        "{NAME}:{version}-g{rev}{}",
        if dirty { "-dirty" } else { "" }
    ))
}

/// `SOURCE_DATE_EPOCH`, else the time of the checked-out commit.
fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"));
    }
    let t = git(root, &["log", "-1", "--format=%ct"])
        .context("the file times are the commit's: set SOURCE_DATE_EPOCH outside a git checkout")?;
    t.parse()
        .with_context(|| format!("git commit time {t:?} is not a number"))
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn dates_and_tags() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_764_305), "2025-12-03T12:18:25Z");
        assert!(check_tag("fdr-agent:0.1.0-gabc").is_ok());
        assert!(check_tag("fdr-agent:latest").is_err());
        assert!(check_tag("fdr-agent").is_err());
        assert!(check_tag("Fdr:1").is_err());
        assert_eq!(full_name("fdr-agent:1"), "docker.io/library/fdr-agent:1");
        assert_eq!(full_name("reg.io/x/fdr:1"), "reg.io/x/fdr:1");
    }

    /// The archive's files by path.
    fn untar(bytes: &[u8]) -> BTreeMap<String, (Vec<u8>, u32)> {
        use std::io::Read;
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(bytes).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, (data, mode));
        }
        files
    }

    #[test]
    fn the_archive_is_an_oci_layout_and_a_docker_archive_of_the_same_blobs() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        // Any dynamic binary stands in for the agent, fdrctl and the console.
        let bin = PathBuf::from("/bin/true");
        let input = Input {
            agent: bin.clone(),
            fdrctl: bin.clone(),
            console: bin.clone(),
            config: root.join("deploy/fdr.toml"),
            tag: "fdr-agent:1.2.3-gabc".into(),
            epoch: 1_700_000_000,
            labels: BTreeMap::from([(
                "org.opencontainers.image.version".to_owned(),
                "1.2.3".to_owned(),
            )]),
        };
        let a = assemble(&input).unwrap();
        assert_eq!(a.bytes, assemble(&input).unwrap().bytes, "reproducible");
        let outer = untar(&a.bytes);
        let json = |path: &str| -> Value { serde_json::from_slice(&outer[path].0).unwrap() };
        // Every blob is named by its digest.
        for (path, (data, _)) in &outer {
            if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256(data), format!("sha256:{hex}"), "{path}");
            }
        }
        assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
        let index = json("index.json");
        let desc = &index["manifests"][0];
        assert_eq!(desc["digest"], a.manifest_digest.as_str());
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "fdr-agent:1.2.3-gabc"
        );
        assert_eq!(
            desc["annotations"]["io.containerd.image.name"],
            "docker.io/library/fdr-agent:1.2.3-gabc"
        );
        let manifest = json(&blob_path(&a.manifest_digest));
        assert_eq!(manifest["config"]["digest"], a.config_digest.as_str());
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer_gz = &outer[&blob_path(layer_digest)].0;
        assert_eq!(manifest["layers"][0]["size"], layer_gz.len());
        // Docker's manifest.json names the same blobs.
        let docker = json("manifest.json");
        assert_eq!(docker[0]["Config"], blob_path(&a.config_digest));
        assert_eq!(docker[0]["Layers"][0], blob_path(layer_digest));
        assert_eq!(docker[0]["RepoTags"][0], "fdr-agent:1.2.3-gabc");
        // The config: entry point, command, the uncompressed layer's digest.
        let config = json(&blob_path(&a.config_digest));
        assert_eq!(
            config["config"]["Entrypoint"][0],
            "/usr/local/bin/fdr-agent"
        );
        assert_eq!(config["config"]["Cmd"][1], "/etc/fdr/fdr.toml");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let mut layer = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(layer_gz.as_slice()),
            &mut layer,
        )
        .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&layer).as_str());
        // The layer: binaries, the loader and libraries ldd names, config, dirs.
        let files = untar(&layer);
        assert_eq!(files["usr/local/bin/fdr-agent"].1, 0o755);
        assert_eq!(files["usr/local/bin/fdr-console"].1, 0o755);
        assert_eq!(
            files["usr/local/bin/fdrctl"].0,
            std::fs::read(&bin).unwrap()
        );
        for lib in shared_libraries(&bin).unwrap() {
            let path = lib.to_str().unwrap().trim_start_matches('/');
            assert_eq!(
                files[path].0,
                std::fs::read(std::fs::canonicalize(&lib).unwrap()).unwrap(),
                "{path}"
            );
        }
        assert!(files.keys().any(|k| k.contains("ld-linux")), "the loader");
        assert_eq!(
            files["etc/fdr/fdr.toml"].0,
            std::fs::read(root.join("deploy/fdr.toml")).unwrap()
        );
        assert!(files.contains_key("etc/passwd") && files.contains_key("etc/group"));
        assert_eq!(files["tmp/"].1, 0o1777);
        assert_eq!(files["var/lib/fdr/"].1, 0o700);
        assert!(files.contains_key("run/fdr/"));
    }

    #[test]
    fn the_layer_is_sorted_with_parents_and_the_same_every_time() {
        let mut t = Tree::default();
        t.file("usr/local/bin/x", b"x".to_vec(), 0o755);
        t.dir("tmp", 0o1777);
        t.file("etc/passwd", b"p".to_vec(), 0o644);
        let a = t.tar(1000).unwrap();
        assert_eq!(a, t.tar(1000).unwrap());
        let mut ar = tar::Archive::new(a.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), 1000);
                assert_eq!(e.header().uid().unwrap(), 0);
                e.path().unwrap().display().to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/passwd",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/x"
            ]
        );
        assert_eq!(gzip(b"abc").unwrap(), gzip(b"abc").unwrap());
    }
}
