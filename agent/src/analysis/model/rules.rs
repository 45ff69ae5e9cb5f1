//! Rules from the config that override learning: allow rules silence what
//! a scope is meant to do, deny rules always raise an audit.

use crate::{
    config::{ConfigError, RuleAction, RuleConfig},
    event::{Event, Severity},
    util::glob::wildcard_match,
};

use super::{
    items::{self, Observation, Section},
    IncidentType,
};

/// Checks `analysis.rules` (patterns, sections, incident types) the way the
/// agent will compile them: the config's own checks do not know the rules'
/// vocabulary.
pub fn check(cfg: &crate::config::AnalysisConfig) -> Result<(), ConfigError> {
    Rules::from_config(&cfg.rules)
        .map(drop)
        .map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("analysis.rules: {m}")),
            other => other,
        })
}

/// A glob with its longest literal run, checked first: most items lack it,
/// and a substring search is much cheaper than wildcard matching.
#[derive(Debug, Clone)]
struct Glob {
    pattern: String,
    needle: String,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        let needle = pattern
            .split('*')
            .max_by_key(|p| p.len())
            .unwrap_or("")
            .to_owned();
        Glob {
            pattern: pattern.to_owned(),
            needle,
        }
    }

    fn matches(&self, text: &str) -> bool {
        if self.pattern == "*" {
            return true;
        }
        text.contains(self.needle.as_str()) && wildcard_match(&self.pattern, text)
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub allow: bool,
    model: Glob,
    section: Option<Section>,
    items: Vec<Glob>,
    /// Every item glob's literal run in one automaton: an item with none
    /// of them (nearly all) is rejected in a single pass. `None` when a
    /// glob has no literal (`*`).
    prefilter: Option<aho_corasick::AhoCorasick>,
    interactive: Option<bool>,
    pub severity: Severity,
    pub incident: Option<IncidentType>,
    pub message: Option<String>,
}

impl Rule {
    fn from_config(c: &RuleConfig) -> Result<Rule, ConfigError> {
        let bad =
            |what: String| ConfigError::Invalid(format!("analysis rule {:?}: {what}", c.name));
        let section = c
            .section
            .as_deref()
            .map(|s| Section::from_name(s).ok_or_else(|| bad(format!("unknown section {s:?}"))))
            .transpose()?;
        let severity = match c.severity.as_deref() {
            None => Severity::High,
            Some(s) => {
                Severity::from_name(s).ok_or_else(|| bad(format!("unknown severity {s:?}")))?
            }
        };
        let incident = c
            .incident
            .as_deref()
            .map(|s| {
                IncidentType::from_name(s)
                    .ok_or_else(|| bad(format!("unknown incident type {s:?}")))
            })
            .transpose()?;
        if c.name.is_empty() {
            return Err(bad("a rule needs a name".into()));
        }
        let items: Vec<Glob> = c.items.iter().map(|p| Glob::new(p)).collect();
        let prefilter = if items.iter().any(|g| g.needle.is_empty()) {
            None
        } else {
            let needles = items.iter().map(|g| g.needle.as_str());
            Some(
                aho_corasick::AhoCorasick::new(needles)
                    .map_err(|e| bad(format!("item globs: {e}")))?,
            )
        };
        Ok(Rule {
            name: c.name.clone(),
            allow: c.action == RuleAction::Allow,
            model: Glob::new(&c.model),
            section,
            items,
            prefilter,
            interactive: c.interactive,
            severity,
            incident,
            message: c.message.clone(),
        })
    }

    fn matches(&self, model: &str, obs: &Observation, ev: &Event) -> bool {
        self.section.is_none_or(|s| s == obs.section)
            && self.model.matches(model)
            && self
                .prefilter
                .as_ref()
                .is_none_or(|ac| ac.is_match(obs.item.as_ref()))
            && self.items.iter().any(|p| p.matches(&obs.item))
            && self
                .interactive
                .is_none_or(|want| items::interactive(ev) == want)
    }
}

/// The configured rules, deny rules first.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

impl Rules {
    pub fn from_config(rules: &[RuleConfig]) -> Result<Rules, ConfigError> {
        let mut out = Rules::default();
        for c in rules {
            let r = Rule::from_config(c)?;
            if r.allow {
                out.allow.push(r);
            } else {
                out.deny.push(r);
            }
        }
        Ok(out)
    }

    /// The first deny rule that matches, else the first allow rule.
    pub fn check(&self, model: &str, obs: &Observation, ev: &Event) -> Option<&Rule> {
        self.deny
            .iter()
            .chain(&self.allow)
            .find(|r| r.matches(model, obs, ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnalysisConfig;

    fn obs(section: Section, item: &str) -> Observation<'_> {
        Observation {
            section,
            item: item.into(),
        }
    }

    #[test]
    fn default_rules_load_and_match() {
        let rules = Rules::from_config(&AnalysisConfig::default().rules).expect("valid");
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let hit = rules
            .check(
                "image:x",
                &obs(Section::Exec, "/bin/bash -> /tmp/xmrig-6.21"),
                &ev,
            )
            .expect("miner");
        assert_eq!(hit.name, "crypto-miner-program");
        assert_eq!(hit.incident, Some(IncidentType::CryptoMiner));
        let hit = rules
            .check(
                "image:x",
                &obs(Section::Exec, "/usr/sbin/nginx -> /usr/bin/dash"),
                &ev,
            )
            .expect("shell by web server");
        assert_eq!(hit.incident, Some(IncidentType::ReverseShell));
        let hit = rules
            .check(
                "service:google-guest-agent.service",
                &obs(Section::Account, "useradd: /etc/passwd"),
                &ev,
            )
            .expect("allowed");
        assert!(hit.allow);
        assert!(rules
            .check(
                "service:cron.service",
                &obs(Section::Account, "useradd: /etc/passwd"),
                &ev
            )
            .is_none());
        assert!(rules
            .check("image:x", &obs(Section::Connect, "tcp 10.0.0.1:443"), &ev)
            .is_none());
        assert_eq!(
            rules
                .check("image:x", &obs(Section::Connect, "tcp 10.0.0.1:3333"), &ev)
                .map(|r| r.name.as_str()),
            Some("mining-pool-port")
        );
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let mut r = AnalysisConfig::default().rules[0].clone();
        r.section = Some("nope".into());
        assert!(Rules::from_config(&[r]).is_err());
        let mut r = AnalysisConfig::default().rules[0].clone();
        r.incident = Some("nope".into());
        assert!(Rules::from_config(&[r]).is_err());
    }
}
