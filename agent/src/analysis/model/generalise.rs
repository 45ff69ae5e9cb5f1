//! Paths generalised where they obviously vary between runs, so a model
//! learns `/var/log/app-#.log` once instead of one path a day:
//!
//! - a component of digits only (a pid, a counter) → `*`;
//! - a component that looks random (a mktemp name, a hash, a uuid) → `*`
//!   (for mktemp's `tmp.XXXXXX` and `tmpXXXXXX`: `tmp*`);
//! - a run of three or more digits inside a component, or of two after a
//!   separator, → `#` (not after a `.`: a version part; `x86` stays).
//!
//! Short names and version-like components (`python3.11`, `libc.so.6`)
//! are kept.

use std::borrow::Cow;

/// The generalised form of an absolute path (borrowed when nothing in it
/// varies, the common case: no allocation).
pub fn path(p: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut offset = 0;
    for (i, comp) in p.split('/').enumerate() {
        let g = component(comp);
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
    for prefix in ["tmp.", "tmp"] {
        if let Some(rest) = c.strip_prefix(prefix) {
            if rest.len() >= 6 && looks_random(rest) {
                return Some(Cow::Borrowed("tmp*"));
            }
        }
    }
    if looks_random(c) || is_uuid(c) {
        return Some(Cow::Borrowed("*"));
    }
    if !c.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let b = c.as_bytes();
    let mut out = String::with_capacity(c.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            // `python3.11`, `libssl.so.3.0.11`: a version part is kept.
            let version = start > 0 && b[start - 1] == b'.';
            let len = i - start;
            let after_letter = start > 0 && b[start - 1].is_ascii_alphabetic();
            if !version && (len >= 3 || (len == 2 && !after_letter)) {
                out.push('#');
                changed = true;
            } else {
                out.push_str(&c[start..i]);
            }
        } else {
            let start = i;
            while i < b.len() && !b[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str(&c[start..i]);
        }
    }
    changed.then_some(Cow::Owned(out))
}

/// A hex string of 12+ characters, or 6+ alphanumerics mixing digits,
/// lower- and upper-case letters (mktemp's alphabet).
fn looks_random(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() >= 12 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    if b.len() < 6 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let digits = b.iter().any(u8::is_ascii_digit);
    let lower = b.iter().any(u8::is_ascii_lowercase);
    let upper = b.iter().any(u8::is_ascii_uppercase);
    // Mixed case with a digit, or mixed case in a longer run.
    (lower && upper && digits) || (lower && upper && b.len() >= 10 && transitions(b) >= b.len() / 2)
}

/// How often the case changes: high for random text, low for CamelCase words.
fn transitions(b: &[u8]) -> usize {
    b.windows(2)
        .filter(|w| w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase())
        .count()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::path;

    #[test]
    fn varying_parts_are_generalised() {
        let cases = [
            ("/proc/4711/status", "/proc/*/status"),
            ("/tmp/tmp.Xk3j9QaZ2b", "/tmp/tmp*"),
            ("/tmp/tmpa8Kd02", "/tmp/tmp*"),
            ("/var/log/app-2024-01-31.log", "/var/log/app-#-#-#.log"),
            (
                "/var/cache/x/9f86d081884c7d659a2feaa0c55ad015/data",
                "/var/cache/x/*/data",
            ),
            (
                "/run/pods/123e4567-e89b-12d3-a456-426614174000/token",
                "/run/pods/*/token",
            ),
            ("/tmp/cache-17", "/tmp/cache-#"),
            ("/tmp/build7/out", "/tmp/build7/out"),
            ("/usr/lib/python3.11/os.py", "/usr/lib/python3.11/os.py"),
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_#-linux-gnu/libc.so.6",
            ),
            ("/etc/passwd", "/etc/passwd"),
            (
                "/home/alice/MyDocuments/report.txt",
                "/home/alice/MyDocuments/report.txt",
            ),
            ("/", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(path(input), want, "{input}");
        }
        assert!(
            matches!(path("/etc/passwd"), std::borrow::Cow::Borrowed(_)),
            "no allocation"
        );
    }

    #[test]
    fn generalising_is_idempotent() {
        for p in ["/proc/1/fd/3", "/tmp/tmp.AbCd12EfGh", "/var/log/a-2024.log"] {
            let once = path(p).into_owned();
            assert_eq!(path(&once), once);
        }
    }
}
