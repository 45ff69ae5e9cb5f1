//! Rules from the config that override learning: allow rules silence what
//! a scope is meant to do, deny rules always raise an audit.
//!
//! Patterns are globs (`*` matches anything, `/` included) with `{a,b}`
//! alternatives (not nested). In an exec item (`parent -> program`), a side
//! written `*/NAME` names the program however it was invoked
//! (`model::items::program`): the executable `*/NAME`, a program run under
//! the name NAME (`*[NAME]`: a busybox or toybox applet, a link), and the
//! executable NAME run under another name (`*/NAME[*]`). So
//! `*/httpd -> */sh` matches `/usr/sbin/httpd -> /bin/sh` as well as
//! `/bin/busybox[httpd] -> /bin/busybox[sh]`.

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
    /// Any may match.
    model: Vec<Glob>,
    /// Their literal runs in one automaton, when there are several globs
    /// and each has one: most keys are rejected in a single pass.
    model_prefilter: Option<aho_corasick::AhoCorasick>,
    section: Option<Section>,
    /// Globs on the whole item.
    items: Vec<Glob>,
    /// Exec patterns `parent -> program`, matched side by side: each side
    /// with its alternatives (braces, invoked names), so that 10 servers ×
    /// 10 shells × 3 forms a side are 60 globs, not 900.
    exec: Vec<ExecPattern>,
    /// Every pattern's literal run (an exec pattern's: a side's, for each
    /// of its alternatives) in one automaton: an item with none of them
    /// (nearly all) is rejected in a single pass. `None` when a pattern
    /// has no literal (`*`).
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
        let mut items: Vec<Glob> = Vec::new();
        let mut exec: Vec<ExecPattern> = Vec::new();
        let exec_items = section.is_none_or(|s| s == Section::Exec);
        for p in &c.items {
            match p.split_once(" -> ").filter(|_| exec_items) {
                Some((parent, program)) => exec.push(ExecPattern {
                    parent: side_globs(parent).map_err(bad)?,
                    program: side_globs(program).map_err(bad)?,
                }),
                None => {
                    for p in expand_braces(p).map_err(bad)? {
                        if !items.iter().any(|g| g.pattern == p) {
                            items.push(Glob::new(&p));
                        }
                    }
                }
            }
        }
        let model: Vec<Glob> = expand_braces(&c.model)
            .map_err(bad)?
            .iter()
            .map(|p| Glob::new(p))
            .collect();
        let model_prefilter = if model.len() > 1 && model.iter().all(|g| !g.needle.is_empty()) {
            Some(
                aho_corasick::AhoCorasick::new(model.iter().map(|g| g.needle.as_str()))
                    .map_err(|e| bad(format!("model globs: {e}")))?,
            )
        } else {
            None
        };
        // An item matching an exec pattern holds the literal of one of the
        // alternatives of either side: the side whose alternatives all
        // have one.
        let has_literals = |side: &[Glob]| side.iter().all(|g| !g.needle.is_empty());
        let mut needles: Option<Vec<&str>> = Some(Vec::new());
        for g in &items {
            if g.needle.is_empty() {
                needles = None;
            }
            if let Some(n) = needles.as_mut() {
                n.push(&g.needle);
            }
        }
        for e in &exec {
            let side = if has_literals(&e.parent) {
                Some(&e.parent)
            } else if has_literals(&e.program) {
                Some(&e.program)
            } else {
                None
            };
            match (side, needles.as_mut()) {
                (Some(side), Some(n)) => n.extend(side.iter().map(|g| g.needle.as_str())),
                _ => needles = None,
            }
        }
        let prefilter = match needles {
            Some(n) => Some(
                aho_corasick::AhoCorasick::new(n).map_err(|e| bad(format!("item globs: {e}")))?,
            ),
            None => None,
        };
        Ok(Rule {
            name: c.name.clone(),
            allow: c.action == RuleAction::Allow,
            model,
            model_prefilter,
            section,
            items,
            exec,
            prefilter,
            interactive: c.interactive,
            severity,
            incident,
            message: c.message.clone(),
        })
    }

    /// Whether the rule's model patterns match model key `model`.
    fn model_matches(&self, model: &str) -> bool {
        self.model_prefilter
            .as_ref()
            .is_none_or(|ac| ac.is_match(model))
            && self.model.iter().any(|g| g.matches(model))
    }

    /// Whether the rule matches an observation of a model its model
    /// patterns match (`model_matches`, known beforehand).
    fn matches_in_model(&self, obs: &Observation, ev: &Event) -> bool {
        self.section.is_none_or(|s| s == obs.section)
            && self
                .prefilter
                .as_ref()
                .is_none_or(|ac| ac.is_match(obs.item.as_ref()))
            && self.item_matches(&obs.item)
            && self
                .interactive
                .is_none_or(|want| items::interactive(ev) == want)
    }
}

impl Rule {
    fn item_matches(&self, item: &str) -> bool {
        if self.items.iter().any(|g| g.matches(item)) {
            return true;
        }
        if self.exec.is_empty() {
            return false;
        }
        let Some((parent, program)) = item.split_once(" -> ") else {
            return false;
        };
        self.exec.iter().any(|e| {
            e.parent.iter().any(|g| g.matches(parent))
                && e.program.iter().any(|g| g.matches(program))
        })
    }
}

/// One exec item pattern, by side.
#[derive(Debug, Clone)]
struct ExecPattern {
    parent: Vec<Glob>,
    program: Vec<Glob>,
}

/// A side of an exec pattern as globs: braces expanded, and each `*/NAME`
/// also written for a program invoked under another name (see the module
/// doc).
fn side_globs(side: &str) -> Result<Vec<Glob>, String> {
    let mut out: Vec<Glob> = Vec::new();
    for s in expand_braces(side)? {
        let alts = match s.strip_prefix("*/") {
            Some(name) if !name.is_empty() && !name.contains(['/', '[', ']']) => {
                vec![s.clone(), format!("*[{name}]"), format!("*/{name}[*]")]
            }
            _ => vec![s],
        };
        for a in alts {
            if !out.iter().any(|g| g.pattern == a) {
                out.push(Glob::new(&a));
            }
        }
    }
    Ok(out)
}

/// Longest list of patterns one pattern expands to.
const MAX_EXPANSION: usize = 4096;

/// `{a,b}` alternatives expanded: `*/{sh,bash}` → `*/sh`, `*/bash`.
fn expand_braces(p: &str) -> Result<Vec<String>, String> {
    let Some(open) = p.find('{') else {
        return Ok(vec![p.to_owned()]);
    };
    let close = p[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("unclosed `{{` in {p:?}"))?;
    let inner = &p[open + 1..close];
    if inner.contains('{') {
        return Err(format!("nested `{{` in {p:?}"));
    }
    let mut out = Vec::new();
    for alt in inner.split(',') {
        let one = format!("{}{alt}{}", &p[..open], &p[close + 1..]);
        for x in expand_braces(&one)? {
            if out.len() >= MAX_EXPANSION {
                return Err(format!(
                    "{p:?} expands to more than {MAX_EXPANSION} patterns"
                ));
            }
            out.push(x);
        }
    }
    Ok(out)
}

/// Rules whose model match a [`Rules::model_mask`] holds.
const MASKED: usize = 64;

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
        self.check_masked(self.model_mask(model), model, obs, ev)
    }

    /// Which rules' model patterns match model key `model`: bit `i` for
    /// the `i`-th rule, deny rules first (the first [`MASKED`]; the rest
    /// are matched on each check). A model's mask never changes, so the
    /// caller keeps it per model instead of matching every key's globs on
    /// every event.
    pub fn model_mask(&self, model: &str) -> u64 {
        self.deny
            .iter()
            .chain(&self.allow)
            .take(MASKED)
            .enumerate()
            .filter(|(_, r)| r.model_matches(model))
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// [`Rules::check`] with the model's [`Rules::model_mask`].
    pub fn check_masked(
        &self,
        mask: u64,
        model: &str,
        obs: &Observation,
        ev: &Event,
    ) -> Option<&Rule> {
        self.deny
            .iter()
            .chain(&self.allow)
            .enumerate()
            .find(|(i, r)| {
                r.section.is_none_or(|s| s == obs.section)
                    && if *i < MASKED {
                        mask & 1 << i != 0
                    } else {
                        r.model_matches(model)
                    }
                    && r.matches_in_model(obs, ev)
            })
            .map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnalysisConfig;

    fn obs(section: Section, item: &str) -> Observation<'_> {
        Observation::new(section, item)
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
    fn web_server_rule_matches_applets_and_interpreters() {
        let rules = Rules::from_config(&AnalysisConfig::default().rules).expect("valid");
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let hit = |item: &str| {
            rules
                .check("image:x", &obs(Section::Exec, item), &ev)
                .map(|r| r.name.clone())
        };
        let web = Some("shell-run-by-web-server".to_string());
        for item in [
            "/bin/busybox[httpd] -> /bin/busybox[sh]",
            "/bin/busybox[httpd] -> /bin/busybox[ash]",
            "/usr/sbin/httpd -> /bin/bash",
            "/usr/sbin/nginx -> /usr/bin/dash[sh]",
            "/usr/sbin/apache2 -> /bin/busybox[sh]",
            "/usr/sbin/lighttpd -> /usr/bin/zsh",
            "/usr/bin/toybox[httpd] -> /usr/bin/toybox[sh]",
            "/usr/sbin/php-fpm8.2 -> /usr/bin/dash[sh]",
            "/usr/sbin/php-fpm8.2[php-fpm] -> /bin/sh",
            "/usr/local/apache2/bin/httpd -> /bin/dash",
            "/usr/sbin/thttpd -> /usr/bin/ksh93[ksh]",
        ] {
            assert_eq!(hit(item), web, "{item}");
        }
        for item in [
            "/bin/busybox[httpd] -> /bin/busybox[nc]",
            "/bin/busybox[sh] -> /bin/busybox[httpd]",
            "/usr/sbin/nginx -> /usr/bin/ssh",
            "/usr/sbin/nginx -> /usr/sbin/nginx",
            "/bin/busybox -> /bin/busybox",
            "/usr/bin/bash -> /usr/bin/dash[sh]",
        ] {
            assert_eq!(hit(item), None, "{item}");
        }
        // The miner rule sees a renamed miner too.
        assert_eq!(
            hit("/bin/busybox[sh] -> /tmp/x[xmrig]").as_deref(),
            Some("crypto-miner-program")
        );
    }

    #[test]
    fn runtime_infrastructure_is_allowed_by_a_default_rule() {
        let rules = Rules::from_config(&AnalysisConfig::default().rules).expect("valid");
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        for model in [
            "service:containerd.service",
            "exe:/usr/bin/containerd",
            "exe:/usr/bin/containerd-shim-runc-v2",
            "exe:/usr/sbin/runc",
            "exe:/usr/bin/crun",
            "exe:/usr/bin/kubelet",
            "exe:/usr/bin/dockerd",
            "exe:/usr/bin/conmon",
        ] {
            let hit = rules
                .check(model, &obs(Section::Listen, "tcp/40551"), &ev)
                .map(|r| (r.name.as_str(), r.allow));
            assert_eq!(hit, Some(("runtime-infrastructure", true)), "{model}");
        }
        assert!(rules
            .check(
                "exe:/usr/bin/python3",
                &obs(Section::Listen, "tcp/40551"),
                &ev
            )
            .is_none());
        // Deny rules still apply to them.
        let miner = rules
            .check(
                "exe:/usr/bin/containerd",
                &obs(Section::Exec, "/usr/bin/containerd -> /tmp/xmrig"),
                &ev,
            )
            .expect("deny");
        assert!(!miner.allow);
    }

    #[test]
    fn braces_expand_and_bad_braces_are_errors() {
        assert_eq!(
            expand_braces("a{b,c}d{e,f}").unwrap(),
            ["abde", "abdf", "acde", "acdf"]
        );
        assert_eq!(expand_braces("x}y").unwrap(), ["x}y"]);
        assert!(expand_braces("a{b").is_err());
        assert!(expand_braces("a{b{c}}").is_err());
        let many = "{a,b,c,d,e,f,g,h}".repeat(5);
        assert!(expand_braces(&many).is_err(), "bounded");
        let mut r = AnalysisConfig::default().rules[0].clone();
        r.items = vec!["* -> {sh".into()];
        assert!(Rules::from_config(&[r]).is_err());
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
