//! Names of the wire enums as users type and read them (`fdrctl events
//! --kind sensitive-read`, `"severity": "high"` in JSON), next to the
//! generated types. The kind names are the agent's (config, API, CLI).

use std::{fmt, str::FromStr};

use crate::v1::{EventKind, Severity};

impl EventKind {
    /// Every kind an event can have (not `Unspecified`), in number order.
    pub const ALL: [EventKind; 22] = [
        EventKind::Fork,
        EventKind::Exec,
        EventKind::Exit,
        EventKind::FileWrite,
        EventKind::FileRename,
        EventKind::FileUnlink,
        EventKind::FileChmod,
        EventKind::FileChown,
        EventKind::FileLink,
        EventKind::FileTruncate,
        EventKind::SensitiveRead,
        EventKind::NetListen,
        EventKind::NetBind,
        EventKind::NetConnect,
        EventKind::NetAccept,
        EventKind::PrivChange,
        EventKind::AccountChange,
        EventKind::BinaryWritten,
        EventKind::ContainerStart,
        EventKind::ContainerStop,
        EventKind::ModelLearned,
        EventKind::Audit,
    ];

    /// Lower-case name, as used in the config, the API and `fdrctl`.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Unspecified => "unspecified",
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
            EventKind::FileWrite => "write",
            EventKind::FileRename => "rename",
            EventKind::FileUnlink => "unlink",
            EventKind::FileChmod => "chmod",
            EventKind::FileChown => "chown",
            EventKind::FileLink => "link",
            EventKind::FileTruncate => "truncate",
            EventKind::SensitiveRead => "sensitive-read",
            EventKind::NetListen => "listen",
            EventKind::NetBind => "bind",
            EventKind::NetConnect => "connect",
            EventKind::NetAccept => "accept",
            EventKind::PrivChange => "priv-change",
            EventKind::AccountChange => "account",
            EventKind::BinaryWritten => "binary",
            EventKind::ContainerStart => "container-start",
            EventKind::ContainerStop => "container-stop",
            EventKind::ModelLearned => "model-learned",
            EventKind::Audit => "audit",
        }
    }

    /// The kind for a lower-case name (one of [`EventKind::ALL`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The name of a kind sent as a number: `raw` itself for
    /// `UNSPECIFIED` and numbers this build does not know.
    pub fn name_of(raw: i32) -> String {
        match EventKind::try_from(raw) {
            Ok(k) if k != EventKind::Unspecified => k.name().to_owned(),
            _ => raw.to_string(),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is none of [`EventKind::ALL`]; its text lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        write!(f, "unknown kind {:?}; one of {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::from_name(s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl Severity {
    /// Lower-case name: `low`, `medium`, `high`, `critical`.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Unspecified => "unspecified",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The name of a severity sent as a number: `?` for `UNSPECIFIED`
    /// and numbers this build does not know.
    pub fn name_of(raw: i32) -> &'static str {
        match Severity::try_from(raw) {
            Ok(s) if s != Severity::Unspecified => s.name(),
            _ => "?",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for (i, k) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i + 1, "ALL is in number order");
            assert_eq!(k.name().parse::<EventKind>(), Ok(k));
            assert_eq!(EventKind::name_of(k as i32), k.name());
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(
            EventKind::from_name("sensitive-read"),
            Some(EventKind::SensitiveRead)
        );
        assert_eq!(
            EventKind::name_of(EventKind::AccountChange as i32),
            "account"
        );
        assert_eq!(EventKind::from_name("unspecified"), None);
        assert_eq!(EventKind::name_of(0), "0");
        assert_eq!(EventKind::name_of(999), "999");
        let err = "nope".parse::<EventKind>().unwrap_err().to_string();
        assert!(
            err.starts_with(r#"unknown kind "nope"; one of fork, exec, exit, write"#),
            "{err}"
        );
        assert!(err.ends_with("model-learned, audit"), "{err}");
    }

    #[test]
    fn severity_names() {
        assert_eq!(Severity::name_of(Severity::High as i32), "high");
        assert_eq!(Severity::name_of(4), "critical");
        assert_eq!(Severity::name_of(0), "?");
        assert_eq!(Severity::name_of(9), "?");
    }
}
