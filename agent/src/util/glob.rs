//! The one glob matcher: `*` matches any run of characters within a path
//! component. Used by the rules (model and item patterns), by account
//! tracking (sensitive-file patterns) and to expand the watched paths, so
//! it sits below all three.

/// `*` within one component matches any run of characters.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `path` matches `pattern` component by component.
/// Runs on every file event (account tracking): no allocation.
pub fn path_match(pattern: &str, path: &str) -> bool {
    let mut pc = pattern.trim_end_matches('/').split('/');
    let mut fc = path.trim_end_matches('/').split('/');
    loop {
        match (pc.next(), fc.next()) {
            (None, None) => return true,
            (Some(p), Some(f)) if wildcard_match(p, f) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_components() {
        assert!(wildcard_match("id_*", "id_rsa"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(!wildcard_match("id_*", "known_hosts"));
        assert!(path_match(
            "/home/*/.ssh/authorized_keys",
            "/home/bob/.ssh/authorized_keys"
        ));
        assert!(!path_match(
            "/home/*/.ssh/authorized_keys",
            "/home/bob/x/.ssh/authorized_keys"
        ));
        assert!(path_match("/etc/sudoers.d/", "/etc/sudoers.d"));
    }
}
