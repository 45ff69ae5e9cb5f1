//! `cargo xtask install`: the agent, fdrctl and the console on a plain VM
//! (systemd).
//!
//! Builds the release binaries (unless `--bin-dir` names built ones) and
//! installs, under `--root` (a staging directory, `DESTDIR`; default `/`):
//! - `PREFIX/bin/fdr-agent`, `PREFIX/bin/fdrctl`, `PREFIX/bin/fdr-console`
//!   (0755);
//! - the systemd units `deploy/fdr-agent.service` and
//!   `deploy/fdr-console.service` in `/etc/systemd/system`
//!   (`PREFIX/lib/systemd/system` when the prefix is `/usr`, as a
//!   distribution package would), their `ExecStart` pointed at the
//!   installed binary (the console's unit is installed, not enabled);
//! - `/etc/fdr/fdr.toml` from `deploy/fdr.toml` and
//!   `/etc/fdr/fdr-console.toml` from `deploy/fdr-console.toml`, each only
//!   when there is none: an existing configuration is never overwritten;
//! - fdrctl's completions for bash, zsh and fish and its manual pages
//!   (`fdrctl completions SHELL`, `fdrctl man --out-dir`), under
//!   `PREFIX/share`.
//!
//! Every file written is printed, then what to run next.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// What `cargo xtask install` was asked.
pub struct Options {
    /// Where the binaries, completions and manual pages go (`/usr/local`).
    pub prefix: PathBuf,
    /// Staging root every path is taken under (`/`).
    pub root: PathBuf,
    /// Already built `fdr-agent`, `fdrctl` and `fdr-console` to install instead of
    /// building the release ones.
    pub bin_dir: Option<PathBuf>,
}

/// The units' `ExecStart` name their binary under this directory;
/// rewritten for another prefix.
const UNIT_BIN_DIR: &str = "/usr/local/bin/";

/// The services installed: unit file (in deploy/), binary, config (in
/// deploy/ and in /etc/fdr).
const SERVICES: [(&str, &str, &str); 2] = [
    ("fdr-agent.service", "fdr-agent", "fdr.toml"),
    ("fdr-console.service", "fdr-console", "fdr-console.toml"),
];

pub fn run(workspace: &Path, opts: &Options) -> Result<()> {
    ensure!(
        opts.prefix.is_absolute(),
        "--prefix must be an absolute path, not {}",
        opts.prefix.display()
    );
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            super::build(workspace)?;
            target_dir(workspace).join("release")
        }
    };
    let fdrctl = bin_dir.join("fdrctl");
    for name in ["fdr-agent", "fdrctl", "fdr-console"] {
        let from = bin_dir.join(name);
        ensure!(from.is_file(), "{} is missing", from.display());
    }
    let at = |path: &Path| staged(&opts.root, path);
    let prefix = &opts.prefix;
    let mut done = Installed::default();

    let bin = prefix.join("bin");
    for name in ["fdr-agent", "fdrctl", "fdr-console"] {
        done.copy(&bin_dir.join(name), &at(&bin.join(name)), 0o755)?;
    }

    let unit_dir = if prefix == Path::new("/usr") {
        prefix.join("lib/systemd/system")
    } else {
        PathBuf::from("/etc/systemd/system")
    };
    for (unit_name, program, config_name) in SERVICES {
        let unit_src = workspace.join("deploy").join(unit_name);
        let unit = std::fs::read_to_string(&unit_src)
            .with_context(|| format!("reading {}", unit_src.display()))?;
        let named = format!("{UNIT_BIN_DIR}{program} ");
        ensure!(
            unit.contains(&named),
            "{} no longer names {}",
            unit_src.display(),
            named.trim_end()
        );
        let program_path = bin.join(program);
        let program_path = program_path
            .to_str()
            .context("the prefix is not UTF-8: systemd cannot name it")?;
        let unit = unit.replace(&named, &format!("{program_path} "));
        done.write(&at(&unit_dir.join(unit_name)), unit.as_bytes(), 0o644)?;

        let config = at(&Path::new("/etc/fdr").join(config_name));
        if config.exists() {
            println!(
                "kept     {} (existing; the defaults: {program} --print-default-config)",
                config.display()
            );
        } else {
            let src = workspace.join("deploy").join(config_name);
            let text = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            done.write(&config, &text, 0o644)?;
        }
    }

    let share = prefix.join("share");
    for (shell, path) in [
        ("bash", "bash-completion/completions/fdrctl"),
        ("zsh", "zsh/site-functions/_fdrctl"),
        ("fish", "fish/vendor_completions.d/fdrctl.fish"),
    ] {
        let script = output(&fdrctl, &["completions", shell])?;
        ensure!(
            !script.is_empty(),
            "fdrctl completions {shell} printed nothing"
        );
        done.write(&at(&share.join(path)), &script, 0o644)?;
    }
    // Every page (fdrctl.1, fdrctl-events.1, ...), written by fdrctl into
    // a scratch directory, then installed like the other files.
    let man1 = at(&share.join("man/man1"));
    let scratch = target_dir(workspace).join("xtask-install-man");
    let _ = std::fs::remove_dir_all(&scratch);
    let scratch_arg = scratch.to_str().context("target directory is not UTF-8")?;
    output(&fdrctl, &["man", "--out-dir", scratch_arg])?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&scratch)
        .with_context(|| format!("reading {}", scratch.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    ensure!(
        pages.iter().any(|p| p.ends_with("fdrctl.1")),
        "fdrctl man wrote no fdrctl.1"
    );
    for page in pages {
        let name = page.file_name().context("a page's name")?;
        done.copy(&page, &man1.join(name), 0o644)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!("installed {} files", done.files);
    if opts.root == Path::new("/") {
        println!(
            "next: systemctl daemon-reload && systemctl enable --now fdr-agent\n      \
             {} stats\n      \
             the console (edit /etc/fdr/fdr-console.toml first): \
             systemctl enable --now fdr-console",
            bin.join("fdrctl").display()
        );
    }
    Ok(())
}

/// `path` (absolute) under `root`.
fn staged(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                workspace.join(d)
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
}

/// The standard output of a successful `program args`.
fn output(program: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[derive(Default)]
struct Installed {
    files: usize,
}

impl Installed {
    fn copy(&mut self, from: &Path, to: &Path, mode: u32) -> Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.write(to, &bytes, mode)
    }

    /// Writes `to` through a temporary file renamed into place, so a
    /// running binary is replaced, not overwritten under its process.
    fn write(&mut self, to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        let dir = to.parent().context("a file's directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = to.file_name().context("a file's name")?.to_string_lossy();
        let tmp = dir.join(format!(".{name}.xtask-install"));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
        println!(
            "install  {} ({mode:o}, {} bytes)",
            to.display(),
            bytes.len()
        );
        self.files += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_staged_under_the_root() {
        assert_eq!(
            staged(Path::new("/tmp/d"), Path::new("/usr/local/bin/fdrctl")),
            Path::new("/tmp/d/usr/local/bin/fdrctl")
        );
        assert_eq!(
            staged(Path::new("/"), Path::new("/etc/fdr/fdr.toml")),
            Path::new("/etc/fdr/fdr.toml")
        );
    }
}
