//! Turning the configured path lists into what the kernel programs match:
//! watched inodes (`FDR_WATCH`) and absolute-path prefixes.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use fdr_common::{watch, InodeKey, Prefixes, MAX_PREFIXES, PREFIX_LEN};

use crate::{config::CaptureConfig, util::glob::wildcard_match};

/// The kernel's device number for a `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | minor
}

/// Existing paths matching `pattern` (absolute, `*` within components).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &current {
            if comp.contains('*') {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    if wildcard_match(comp, &e.file_name().to_string_lossy()) {
                        next.push(e.path());
                    }
                }
            } else {
                let p = dir.join(comp);
                if p.symlink_metadata().is_ok() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current.retain(|p| p.exists());
    current
}

fn key_of(path: &Path) -> Option<InodeKey> {
    let md = std::fs::metadata(path).ok()?;
    Some(InodeKey {
        dev: kernel_dev(md.dev()),
        _pad: 0,
        ino: md.ino(),
    })
}

/// Watched inodes for the configured lists, resolved now.
pub fn watched_inodes(cfg: &CaptureConfig, data_dir: &Path) -> HashMap<InodeKey, u32> {
    let mut out: HashMap<InodeKey, u32> = HashMap::new();
    let mut add = |patterns: &[String], bit: u32| {
        for pattern in patterns {
            for path in expand(pattern) {
                if let Some(k) = key_of(&path) {
                    *out.entry(k).or_default() |= bit;
                }
            }
        }
    };
    add(&cfg.sensitive_files, watch::SENSITIVE);
    add(&cfg.critical_paths, watch::CRITICAL);
    add(&cfg.excluded_paths, watch::EXCLUDED);
    add(&[data_dir.display().to_string()], watch::EXCLUDED);
    out
}

/// The prefix table for absolute path strings: the entries of
/// `critical_paths` and `excluded_paths` (and the data directory) without
/// wildcards, directories ending in `/`.
pub fn prefixes(cfg: &CaptureConfig, data_dir: &Path) -> Prefixes {
    let mut p = Prefixes::EMPTY;
    let data = format!("{}/", data_dir.display().to_string().trim_end_matches('/'));
    let entries = cfg
        .excluded_paths
        .iter()
        .map(|s| (s.as_str(), watch::EXCLUDED))
        .chain(std::iter::once((data.as_str(), watch::EXCLUDED)))
        .chain(
            cfg.critical_paths
                .iter()
                .map(|s| (s.as_str(), watch::CRITICAL)),
        );
    let mut seen = std::collections::HashSet::new();
    for (text, class) in entries {
        if text.contains('*') || text.is_empty() || text.len() > PREFIX_LEN || !seen.insert(text) {
            continue;
        }
        let i = p.count as usize;
        if i >= MAX_PREFIXES {
            tracing::warn!(prefix = text, "too many path prefixes; ignored");
            continue;
        }
        let bytes = text.as_bytes();
        for (w, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            p.words[i][w] = u64::from_le_bytes(word);
        }
        p.len[i] = bytes.len() as u32;
        p.class[i] = class;
        p.count += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_existing_paths() {
        let found = expand("/proc/self/stat*");
        assert!(found.iter().any(|p| p.ends_with("stat")));
        assert!(found.iter().any(|p| p.ends_with("status")));
        assert!(expand("/nonexistent-fdr/*").is_empty());
        assert_eq!(expand("/etc/passwd"), vec![PathBuf::from("/etc/passwd")]);
    }

    #[test]
    fn prefixes_pack_words_and_classes() {
        let cfg = CaptureConfig::default();
        let p = prefixes(&cfg, Path::new("/var/lib/fdr"));
        // "/proc/", "/sys/", "/var/lib/fdr/" (once), "/etc/", "/root/.ssh/"
        assert_eq!(p.count, 5);
        assert_eq!(p.len[0], 6);
        assert_eq!(p.words[0][0], u64::from_le_bytes(*b"/proc/\0\0"));
        assert_eq!(p.class[0], watch::EXCLUDED);
        assert_eq!(p.class[3], watch::CRITICAL);
        assert_eq!(p.len[2], "/var/lib/fdr/".len() as u32);
    }

    #[test]
    fn watched_inodes_mark_etc_critical_and_shadow_sensitive() {
        let cfg = CaptureConfig::default();
        let w = watched_inodes(&cfg, Path::new("/var/lib/fdr"));
        let etc = key_of(Path::new("/etc")).unwrap();
        assert_eq!(
            w.get(&etc).copied().unwrap_or(0) & watch::CRITICAL,
            watch::CRITICAL
        );
        let passwd = key_of(Path::new("/etc/passwd")).unwrap();
        assert_eq!(w[&passwd] & watch::SENSITIVE, watch::SENSITIVE);
    }
}
