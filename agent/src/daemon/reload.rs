//! Configuration reload (SIGHUP): what changed between the running
//! settings and a file read again, what of it applies at run time (the
//! analysis rules, the log level) and what needs a restart.

use std::collections::BTreeSet;

use crate::config::{Config, ConfigError};

/// Keys that apply without a restart (`section.key`).
pub const LIVE_KEYS: &[&str] = &["analysis.rules", "log.level"];

/// Why a reload was refused (the running settings stay).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("comparing the settings: {0}")]
    Compare(String),
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Changed keys now in force (of [`LIVE_KEYS`]).
    pub applied: Vec<String>,
    /// Changed keys that take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl Outcome {
    pub fn changed(&self, key: &str) -> bool {
        self.applied.iter().any(|k| k == key)
    }
}

/// The keys (`section.key`, or `section` for a whole section present on
/// one side only) whose values differ between `old` and `new`, sorted.
pub fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>, ReloadError> {
    let table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(ReloadError::Compare("not a table".into())),
        Err(e) => Err(ReloadError::Compare(e.to_string())),
    };
    let (old, new) = (table(old)?, table(new)?);
    let mut out = BTreeSet::new();
    let sections: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for s in sections {
        match (old.get(s), new.get(s)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    if a.get(k) != b.get(k) {
                        out.insert(format!("{s}.{k}"));
                    }
                }
            }
            (a, b) if a != b => {
                out.insert(s.clone());
            }
            _ => {}
        }
    }
    Ok(out.into_iter().collect())
}

/// Sorts the changes between the running `current` and the re-read `new`
/// (already checked: [`Config::validate`] and the rules compiled) into
/// what applies now and what needs a restart, and updates `current` with
/// what applies.
pub fn plan(current: &mut Config, new: &Config) -> Result<Outcome, ReloadError> {
    let mut outcome = Outcome::default();
    for key in changed_keys(current, new)? {
        if LIVE_KEYS.contains(&key.as_str()) {
            outcome.applied.push(key);
        } else {
            outcome.needs_restart.push(key);
        }
    }
    if outcome.changed("analysis.rules") {
        current.analysis.rules = new.analysis.rules.clone();
    }
    if outcome.changed("log.level") {
        current.log.level = new.log.level.clone();
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RuleAction, RuleConfig};

    #[test]
    fn rules_and_level_apply_the_rest_needs_a_restart() {
        let mut current = Config::default();
        let mut new = Config::default();
        assert_eq!(plan(&mut current, &new).unwrap(), Outcome::default());
        new.analysis.rules.push(RuleConfig {
            name: "no-nc".into(),
            action: RuleAction::Deny,
            model: "*".into(),
            section: Some("exec".into()),
            items: vec!["* -> */nc".into()],
            interactive: None,
            severity: None,
            incident: None,
            message: None,
        });
        new.log.level = "debug".into();
        new.recorder.budget_bytes *= 2;
        new.analysis.learning_period *= 2;
        new.api.tcp_listen = Some("127.0.0.1:7077".parse().unwrap());
        new.host.node_name = "n1".into();
        let out = plan(&mut current, &new).unwrap();
        assert_eq!(out.applied, ["analysis.rules", "log.level"]);
        assert_eq!(
            out.needs_restart,
            [
                "analysis.learning_period",
                "api.tcp_listen",
                "host.node_name",
                "recorder.budget_bytes"
            ]
        );
        assert_eq!(current.analysis.rules, new.analysis.rules);
        assert_eq!(current.log.level, "debug");
        assert_eq!(
            current.recorder.budget_bytes,
            Config::default().recorder.budget_bytes
        );
        // Applied once: the next reload of the same file applies nothing
        // more, and still says what waits for a restart.
        let again = plan(&mut current, &new).unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(again.needs_restart, out.needs_restart);
    }
}
