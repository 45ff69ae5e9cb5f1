//! Paths generalised where they obviously vary between runs, so a model
//! learns `/var/log/app-#.log` once instead of one path a day:
//!
//! - a component of digits only (a pid, a counter) → `*`;
//! - mktemp's `tmp.XXXXXXXXXX` and Python's `tmpXXXXXXXX` → `tmp*`;
//! - directly in `/tmp` or `/var/tmp`, Python's bare 8 of `[a-z0-9_]`
//!   (its probe of the directory, `/tmp/1tfmz0fm`) → `*`;
//! - a UUID anywhere in a component (`bash_tool_<uuid>`, `pod<uuid>`) → `*`;
//! - a run of letters and digits that looks random → `*`: the whole
//!   component or one part of it between separators (`runc.L0Sn0b` →
//!   `runc.*`, containerd's `<64 hex>-stderr` → `*-stderr`). Random is
//!   judged by character classes, not only digits: hex of 12+ with a digit;
//!   lower, upper and digits mixed (mktemp's alphabet); lower and upper
//!   only, in 8+ characters with 40% or more upper case and 3+ case changes
//!   (`timlGZoYGE`, not `XMLHttpRequest`); hex of 6+ with 2+ letter/digit
//!   changes (`3a9f2b1`, `234fbb10`); lower case and digits in 8+
//!   characters with 3+ letter/digit changes (Python's `1tfmz0fm`, not
//!   `sha256sum`), or 6+ letters without a vowel;
//! - a run of three or more digits inside a component, or of two after a
//!   `-` or at the start, → `#` (not after a `.`: a version part; `x86`,
//!   `x86_64`, `x86-64` stay).
//!
//! Short names, words and version-like components (`python3.11`,
//! `libc.so.6`, `node_modules`, `x86_64-linux-gnu`, `systemd-journald`)
//! are kept.

use std::borrow::Cow;

/// The generalised form of an absolute path (borrowed when nothing in it
/// varies, the common case: no allocation).
pub fn path(p: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut offset = 0;
    // A direct child of a temporary directory: `/tmp/x`, `/var/tmp/x`.
    let tmp_child =
        |i: usize| (i == 2 && p.starts_with("/tmp/")) || (i == 3 && p.starts_with("/var/tmp/"));
    for (i, comp) in p.split('/').enumerate() {
        let g = if tmp_child(i) && is_python_candidate(comp) {
            Some(Cow::Borrowed("*"))
        } else {
            component(comp)
        };
        match (&mut out, g) {
            (None, None) => {}
            (None, Some(g)) => {
                let mut s = String::with_capacity(p.len());
                s.push_str(&p[..offset]);
                s.push_str(&g);
                out = Some(s);
            }
            (Some(s), g) => {
                if i > 0 {
                    s.push('/');
                }
                s.push_str(g.as_deref().unwrap_or(comp));
            }
        }
        offset += comp.len() + 1;
    }
    match out {
        Some(s) => Cow::Owned(s),
        None => Cow::Borrowed(p),
    }
}

/// A component's generalised form; `None` when it stays as it is.
fn component(c: &str) -> Option<Cow<'static, str>> {
    if c.is_empty() {
        return None;
    }
    if c.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Cow::Borrowed("*"));
    }
    if is_tmp_name(c) {
        return Some(Cow::Borrowed("tmp*"));
    }
    // (A random component of letters and digits only is one random part
    // below.)
    if is_uuid(c.as_bytes()) {
        return Some(Cow::Borrowed("*"));
    }
    // Part by part: runs of letters and digits between separators. The
    // output is made at the first change only (most components have none).
    let b = c.as_bytes();
    let mut out: Option<String> = None;
    // Bytes of `c` already in `out`.
    let mut copied = 0;
    let mut replace = |out: &mut Option<String>, from: usize, to: usize, with: &str| {
        let o = out.get_or_insert_with(|| String::with_capacity(c.len()));
        o.push_str(&c[copied..from]);
        o.push_str(with);
        copied = to;
    };
    let mut i = 0;
    // The previous part, for `x86-64`.
    let mut prev_part: &str = "";
    while i < b.len() {
        if i + UUID_LEN <= b.len() && is_uuid(&b[i..i + UUID_LEN]) {
            replace(&mut out, i, i + UUID_LEN, "*");
            i += UUID_LEN;
            prev_part = "";
            continue;
        }
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        // A UUID right after a prefix (`pod<uuid>`) ends the part: its
        // first group is the part's last 8 characters.
        if i >= start + 9 && i - 8 + UUID_LEN <= b.len() && is_uuid(&b[i - 8..i - 8 + UUID_LEN]) {
            i -= 8;
        }
        let part = &c[start..i];
        let sep = if start > 0 { b[start - 1] } else { b'/' };
        if part.len() >= 6 && looks_random(part) {
            replace(&mut out, start, i, "*");
        } else if part.bytes().any(|x| x.is_ascii_digit()) {
            if let Some(d) = digits(part, sep, prev_part) {
                replace(&mut out, start, i, &d);
            }
        }
        prev_part = part;
    }
    let mut out = out?;
    out.push_str(&c[copied..]);
    Some(Cow::Owned(out))
}

/// `part` with its digit runs generalised, if any is. `sep` is the byte
/// before the part, `prev` the part before it.
fn digits(part: &str, sep: u8, prev: &str) -> Option<String> {
    let b = part.as_bytes();
    // Whether the digit run `start..end` becomes `#`.
    let varies = |start: usize, end: usize| {
        let len = end - start;
        let at_start = start == 0;
        // `python3.11`, `libssl.so.3.0.11`: a version part is kept.
        let version = at_start && sep == b'.';
        // `x86_64`, `x86-64`: an architecture, not a counter.
        let arch = at_start && prev.ends_with("86") && matches!(&part[..end], "64" | "32");
        let short_ok = at_start && sep != b'_';
        !version && !arch && (len >= 3 || (len == 2 && short_ok))
    };
    // Runs of digits: (start, end).
    let runs = || {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < b.len() && !b[i].is_ascii_digit() {
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            (i > start).then_some((start, i))
        })
    };
    if !runs().any(|(s, e)| varies(s, e)) {
        return None;
    }
    let mut out = String::with_capacity(part.len());
    let mut copied = 0;
    for (s, e) in runs() {
        if varies(s, e) {
            out.push_str(&part[copied..s]);
            out.push('#');
            copied = e;
        }
    }
    out.push_str(&part[copied..]);
    Some(out)
}

/// Python tempfile's bare candidate name, 8 of `[a-z0-9_]` (its probe of
/// the temporary directory, `/tmp/1tfmz0fm`; names with a prefix are
/// judged like any other): random whatever its letters, so only directly
/// in a temporary directory.
fn is_python_candidate(c: &str) -> bool {
    c.len() == 8
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// mktemp's default `tmp.` + 6 or more letters and digits, or Python
/// tempfile's `tmp` + 8 of `[a-z0-9_]`.
fn is_tmp_name(c: &str) -> bool {
    if let Some(rest) = c.strip_prefix("tmp.") {
        return rest.len() >= 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    }
    match c.strip_prefix("tmp") {
        Some(rest) => {
            (rest.len() == 8
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
                || (rest.len() >= 6
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                    && looks_random(rest))
        }
        None => false,
    }
}

/// Whether a run of ASCII letters and digits looks random (see the module
/// doc for the classes).
fn looks_random(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 6 {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let lower = b.iter().filter(|c| c.is_ascii_lowercase()).count();
    if b.len() >= 12 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    if upper > 0 && lower > 0 && digits > 0 {
        return true;
    }
    let class_changes = b
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    if digits > 0 && lower > 0 && class_changes >= 2 && b.iter().all(u8::is_ascii_hexdigit) {
        // Hex of 6+ mixing letters and digits: a short hash, a nonce.
        return true;
    }
    if b.len() < 8 {
        return false;
    }
    if upper > 0 && lower > 0 {
        let changes = b
            .windows(2)
            .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
            .count();
        return changes >= 3 && upper * 10 >= b.len() * 4;
    }
    if upper == 0 && lower > 0 {
        let changes = class_changes;
        let vowels = b
            .iter()
            .filter(|c| matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y'))
            .count();
        return changes >= 3 || (lower >= 6 && vowels == 0);
    }
    false
}

const UUID_LEN: usize = 36;

/// `8-4-4-4-12` hex digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == UUID_LEN
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::path;

    /// Every path quoted in issue 16, and the usual shapes.
    const VARYING: &[(&str, &str)] = &[
        // Issue 16: mktemp without digits, runc, Python, UUIDs, FIFOs.
        ("/tmp/tmp.timlGZoYGE/build.sh", "/tmp/tmp*/build.sh"),
        ("/tmp/tmp.timlGZoYGE", "/tmp/tmp*"),
        ("/run/runc.L0Sn0b", "/run/runc.*"),
        ("/tmp/runc.L0Sn0b/state", "/tmp/runc.*/state"),
        ("/tmp/1tfmz0fm", "/tmp/*"),
        ("/tmp/1tfmz0fm/x.py", "/tmp/*/x.py"),
        ("/tmp/2813wzp9", "/tmp/*"),
        ("/tmp/abcdefgh", "/tmp/*"),
        ("/var/tmp/k_3abcde", "/var/tmp/*"),
        ("/tmp/fdr-test-benign-b-32049-234fbb10/image.tar", "/tmp/fdr-test-benign-b-#-*/image.tar"),
        (
            "/tmp/bash_tool_123e4567-e89b-12d3-a456-426614174000/out.txt",
            "/tmp/bash_tool_*/out.txt",
        ),
        (
            "/run/containerd/fifo/1732591211/3f7a0b6f2ac14a5b9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3-stderr",
            "/run/containerd/fifo/*/*-stderr",
        ),
        (
            "/run/containerd/fifo/4118201/3f7a0b6f2ac14a5b9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3-stdout",
            "/run/containerd/fifo/*/*-stdout",
        ),
        ("/tmp/runc-process123456", "/tmp/runc-process#"),
        (
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3f7a0b6f2ac14a5b9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3/rootfs",
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/*/rootfs",
        ),
        // mktemp and tempfile shapes, with and without digits.
        ("/tmp/tmp.Xk3j9QaZ2b", "/tmp/tmp*"),
        ("/tmp/tmp.abcdefghij", "/tmp/tmp*"),
        ("/tmp/tmpa8Kd02", "/tmp/tmp*"),
        ("/tmp/tmpk3_9abcd", "/tmp/tmp*"),
        ("/tmp/tmpabcdefgh", "/tmp/tmp*"),
        ("/tmp/tfmzqwfm", "/tmp/*"),
        ("/tmp/build.QpRtZkWmLs/x", "/tmp/build.*/x"),
        // Pids, counters, dates, hashes, UUIDs.
        ("/proc/4711/status", "/proc/*/status"),
        ("/run/user/1000/bus", "/run/user/*/bus"),
        ("/var/log/app-2024-01-31.log", "/var/log/app-#-#-#.log"),
        (
            "/var/cache/x/9f86d081884c7d659a2feaa0c55ad015/data",
            "/var/cache/x/*/data",
        ),
        (
            "/run/pods/123e4567-e89b-12d3-a456-426614174000/token",
            "/run/pods/*/token",
        ),
        (
            "/sys/fs/cgroup/kubepods/besteffort/pod123e4567-e89b-12d3-a456-426614174000/x",
            "/sys/fs/cgroup/kubepods/besteffort/pod*/x",
        ),
        (
            "/var/lib/docker/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-json.log",
            "/var/lib/docker/containers/*/*-json.log",
        ),
        (
            "/tmp/systemd-private-0f1e2d3c4b5a69788796a5b4c3d2e1f0-chronyd.service-AbCd12/tmp",
            "/tmp/systemd-private-*-chronyd.service-*/tmp",
        ),
        ("/tmp/go-build1234567890/b001", "/tmp/go-build#/b#"),
        ("/tmp/cache-17", "/tmp/cache-#"),
        ("/tmp/fdr-test-benign-4242-3a9f2b1/x", "/tmp/fdr-test-benign-#-*/x"),
        (
            "/usr/lib/python3/__pycache__/os.cpython-311.pyc",
            "/usr/lib/python3/__pycache__/os.cpython-#.pyc",
        ),
    ];

    /// Words, versions and architectures: kept as they are.
    const KEPT: &[&str] = &[
        "/",
        "/etc/passwd",
        "/tmp/build7/out",
        "/usr/lib/python3.11/os.py",
        "/usr/bin/python3.11",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
        "/usr/lib/aarch64-linux-gnu/libssl.so.3",
        "/srv/app/node_modules/express/index.js",
        "/usr/lib/systemd/systemd-journald",
        "/run/systemd/journal/dev-log",
        "/home/alice/MyDocuments/report.txt",
        "/usr/share/NetworkManager/conf.d",
        "/srv/web/XMLHttpRequest.js",
        "/srv/web/JSONDecoder.py",
        "/var/lib/dpkg/info/libssl3:amd64.list",
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/share/zoneinfo/America/New_York",
        "/tmp/.X11-unix/X0",
        "/etc/systemd/system/multi-user.target.wants",
        "/usr/lib/jvm/default-java",
        "/usr/local/lib/python3.12/site-packages/requests/api.py",
        "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/home/bob/projects/webapp/src/main.rs",
        "/home/bob/.cargo/registry/index",
        "/usr/bin/containerd-shim-runc-v2",
        "/tmp/tmpfiles.d",
        "/srv/abcdefgh/x",
        "/tmp/x/python39",
        "/opt/utf8mb4/lib",
        "/etc/nginx/sites-enabled/default",
        "/bin/busybox",
        "/usr/sbin/php-fpm8.2",
    ];

    #[test]
    fn varying_parts_are_generalised() {
        for (input, want) in VARYING {
            assert_eq!(path(input), *want, "{input}");
        }
    }

    #[test]
    fn words_and_versions_are_kept_without_allocation() {
        let changed: Vec<_> = KEPT
            .iter()
            .filter(|p| !matches!(path(p), std::borrow::Cow::Borrowed(_)))
            .map(|p| (*p, path(p).into_owned()))
            .collect();
        assert!(changed.is_empty(), "{changed:#?}");
    }

    #[test]
    fn generalising_is_idempotent() {
        for (_, want) in VARYING {
            assert_eq!(path(want), *want, "{want}");
        }
    }
}
