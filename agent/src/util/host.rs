//! Facts about the host the agent runs on.

use std::sync::OnceLock;

/// The host name, read once (`/proc/sys/kernel/hostname`).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}
