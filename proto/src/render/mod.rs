//! Text and JSON of wire (`fdr.v1`) values, the same on both sides: the
//! agent's export and text search, and `fdrctl`'s tables and JSON lines.
//! Every text from an event goes through [`escape`] before it is printed.

pub mod escape;
pub mod export;
pub mod html;
pub mod timeline;

mod detail;
mod json;

pub use detail::{addr_text, detail_text};
pub use escape::{escape, escape_bytes};
pub use json::{container_json, event_json};

use crate::v1::{EventKind, Severity};

/// RFC 3339 with milliseconds, UTC; `-` when there is no time.
pub fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    // RFC 3339 ends with year 9999 (a later time, from a corrupt record,
    // failed to format: a panic); such a time is shown as epoch seconds.
    const YEAR_10000: i64 = 253_402_300_800;
    if ts.seconds >= YEAR_10000 {
        return format!("@{}", ts.seconds);
    }
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            ts.seconds.max(0) as u64,
            ts.nanos.clamp(0, 999_999_999) as u32,
        );
    humantime::format_rfc3339_millis(t).to_string()
}

/// Arguments quoted where a shell would need it, so the line reads back
/// (and escaped: see [`escape::shell_word`]).
pub fn shell_words(argv: &[String]) -> String {
    escape::shell_words_raw(argv, &[])
}

/// The kind's name as `--kind` takes it (`exec`, `sensitive-read`, …);
/// the number for one this build does not know.
pub fn kind_name(raw: i32) -> String {
    EventKind::name_of(raw)
}

/// `low` … `critical`; `?` for a number this build does not know.
pub fn severity_name(raw: i32) -> &'static str {
    Severity::name_of(raw)
}

/// Whether `hay` holds `needle` (already lowercased), ignoring case the way
/// `str::to_lowercase` does; lowercases `hay` in place when it is ASCII.
pub fn lowercase_contains(hay: &mut str, needle: &str) -> bool {
    if hay.is_ascii() {
        hay.make_ascii_lowercase();
        hay.contains(needle)
    } else {
        hay.to_lowercase().contains(needle)
    }
}

/// The text a search looks in: process, command line, the event's detail
/// as `fdrctl` prints it, and the scope (the same at an agent and a
/// console).
pub fn haystack(ev: &crate::v1::Event) -> String {
    let p = ev.process.clone().unwrap_or_default();
    format!(
        "{} {} {} {} {}",
        p.comm,
        p.exe,
        p.argv.join(" "),
        detail_text(ev),
        ev.scope
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_are_text_not_a_panic() {
        // Found by fuzzing a stored snapshot (fuzz/corpus/snapshot/year-10000).
        let t = |seconds, nanos| time_text(Some(&prost_types::Timestamp { seconds, nanos }));
        assert_eq!(t(253_402_300_799, 999_999_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(t(253_402_300_800, 0), "@253402300800");
        assert_eq!(t(i64::MAX, i32::MAX), format!("@{}", i64::MAX));
        assert_eq!(t(i64::MIN, -1), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_text(None), "-");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        let argv = ["sh", "-c", "echo it's", ""].map(String::from);
        assert_eq!(shell_words(&argv), r"sh -c 'echo it'\''s' ''");
    }

    #[test]
    fn kind_and_severity_names_of_numbers() {
        assert_eq!(kind_name(EventKind::AccountChange as i32), "account");
        assert_eq!(kind_name(999), "999");
        assert_eq!(severity_name(Severity::Critical as i32), "critical");
        assert_eq!(severity_name(-1), "?");
    }
}
