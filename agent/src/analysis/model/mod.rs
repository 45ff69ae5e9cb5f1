//! Runtime models: what each container image and each host service
//! normally does. A model learns for a while, then anything new is an
//! anomaly. Rules from the config override it either way.

pub mod generalise;
pub mod items;
pub mod rules;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use crate::{
    attribution::containers::ContainerMeta,
    attribution::scope::Scope,
    config::AnalysisConfig,
    event::{Event, Severity},
};

pub use items::{Observation, Section};

/// What kind of attack an incident looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentType {
    BackdoorAccount,
    BackdoorListener,
    SuspiciousBinary,
    ReverseShell,
    DataExfiltration,
    CryptoMiner,
    PortScan,
    /// Other behaviour outside the model (a new program, file, destination).
    Unexpected,
}

impl IncidentType {
    pub const ALL: [IncidentType; 8] = [
        IncidentType::BackdoorAccount,
        IncidentType::BackdoorListener,
        IncidentType::SuspiciousBinary,
        IncidentType::ReverseShell,
        IncidentType::DataExfiltration,
        IncidentType::CryptoMiner,
        IncidentType::PortScan,
        IncidentType::Unexpected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IncidentType::BackdoorAccount => "backdoor-account",
            IncidentType::BackdoorListener => "backdoor-listener",
            IncidentType::SuspiciousBinary => "suspicious-binary",
            IncidentType::ReverseShell => "reverse-shell",
            IncidentType::DataExfiltration => "data-exfiltration",
            IncidentType::CryptoMiner => "crypto-miner",
            IncidentType::PortScan => "port-scan",
            IncidentType::Unexpected => "unexpected-behaviour",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The type an anomaly in a model section raises.
    pub fn for_section(s: Section) -> Self {
        match s {
            Section::Account => IncidentType::BackdoorAccount,
            Section::Listen => IncidentType::BackdoorListener,
            Section::Binary => IncidentType::SuspiciousBinary,
            _ => IncidentType::Unexpected,
        }
    }
}

/// One model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub key: Arc<str>,
    /// Wall-clock ns learning started and ends.
    pub learning_since: u64,
    pub learning_until: u64,
    /// Items by section, each with the wall-clock ns it was learned.
    pub sections: BTreeMap<Section, HashMap<String, u64>>,
    pub anomalies: u64,
    /// Anomalous items already audited, with when: not audited again
    /// within the incident window.
    flagged: HashMap<(Section, String), u64>,
    /// Last wall-clock ns it saw an event (for eviction).
    last_used: u64,
}

impl Model {
    fn new(key: Arc<str>, now: u64, learning_ns: u64) -> Model {
        Model {
            key,
            learning_since: now,
            learning_until: now.saturating_add(learning_ns),
            sections: BTreeMap::new(),
            anomalies: 0,
            flagged: HashMap::new(),
            last_used: now,
        }
    }

    pub fn learning(&self, now: u64) -> bool {
        now < self.learning_until
    }

    pub fn item_count(&self) -> usize {
        self.sections.values().map(HashMap::len).sum()
    }

    pub fn contains(&self, section: Section, item: &str) -> bool {
        self.sections
            .get(&section)
            .is_some_and(|s| s.contains_key(item))
    }

    /// Restored from the store.
    pub fn restored(
        key: Arc<str>,
        learning_since: u64,
        learning_until: u64,
        sections: BTreeMap<Section, HashMap<String, u64>>,
        anomalies: u64,
    ) -> Model {
        Model {
            key,
            learning_since,
            learning_until,
            sections,
            anomalies,
            flagged: HashMap::new(),
            last_used: learning_since,
        }
    }
}

/// What a model (or a rule) makes of an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Normal: learned before, or allowed by a rule.
    Normal,
    /// Learned just now (the model is learning).
    Learned,
    /// Outside the model, or a deny rule.
    Audit(AuditDraft),
}

/// An audit before it is placed in an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub section: &'static str,
    /// Rule name, or `model`.
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    pub item: String,
    pub incident: IncidentType,
}

/// Every model, by key.
pub struct ModelSet {
    models: HashMap<Arc<str>, Model>,
    rules: rules::Rules,
    learning_ns: u64,
    window_ns: u64,
    max_items: usize,
    max_models: usize,
    max_total: usize,
    /// Items over all models.
    total: usize,
    /// Keys changed since the last `take_dirty`.
    dirty: HashSet<Arc<str>>,
    /// Keys removed (evicted) since the last `take_dirty`.
    removed: HashSet<Arc<str>>,
    /// Per model key, which rules' model patterns match it
    /// (`Rules::model_mask`): the patterns are matched once per key, not
    /// on every event. Emptied when it reaches `4 × max_models` keys.
    rule_masks: HashMap<Arc<str>, u64>,
}

impl ModelSet {
    pub fn new(cfg: &AnalysisConfig) -> Result<ModelSet, crate::config::ConfigError> {
        Ok(ModelSet {
            models: HashMap::new(),
            rules: rules::Rules::from_config(&cfg.rules)?,
            learning_ns: cfg.learning_period.as_nanos() as u64,
            window_ns: cfg.incident_window.as_nanos() as u64,
            max_items: cfg.max_items_per_section,
            max_models: cfg.max_models,
            max_total: cfg.max_total_items,
            total: 0,
            dirty: HashSet::new(),
            removed: HashSet::new(),
            rule_masks: HashMap::new(),
        })
    }

    /// Replaces the rules (a configuration reload); each model's rule
    /// mask is worked out again on its next check.
    pub fn set_rules(&mut self, rules: rules::Rules) {
        self.rules = rules;
        self.rule_masks.clear();
    }

    pub fn insert(&mut self, m: Model) {
        self.total += m.item_count();
        if let Some(old) = self.models.insert(m.key.clone(), m) {
            self.total -= old.item_count();
        }
    }

    /// Items over all models.
    pub fn total_items(&self) -> usize {
        self.total
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Model> {
        self.models.get(key)
    }

    pub fn all(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// Keys changed and keys removed since the last call.
    pub fn take_dirty(&mut self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        (self.dirty.drain().collect(), self.removed.drain().collect())
    }

    /// Moves what model `from` learned into model `to` (created, with
    /// `from`'s learning period, when new; items added only while `to`
    /// learns) and removes `from`. For a container first modelled by its id
    /// until the runtime named its image.
    pub fn merge_into(&mut self, from: &str, to: &Arc<str>) {
        let Some(old) = self.models.remove(from) else {
            return;
        };
        self.dirty.remove(from);
        self.removed.insert(old.key.clone());
        self.total -= old.item_count();
        let max_items = self.max_items;
        match self.models.get_mut(to) {
            None => {
                let mut m = old;
                m.key = to.clone();
                self.total += m.item_count();
                self.models.insert(to.clone(), m);
            }
            Some(m) => {
                if m.learning(old.last_used) {
                    for (section, items) in old.sections {
                        let s = m.sections.entry(section).or_default();
                        for (item, at) in items {
                            if s.len() >= max_items || self.total >= self.max_total {
                                break;
                            }
                            if s.insert(item, at).is_none() {
                                self.total += 1;
                            }
                        }
                    }
                }
                m.anomalies += old.anomalies;
            }
        }
        self.removed.remove(to);
        self.dirty.insert(to.clone());
    }

    /// Drops model `key` (a pod sandbox's, learned before it was named).
    pub fn remove(&mut self, key: &str) {
        if let Some(m) = self.models.remove(key) {
            self.total -= m.item_count();
            self.dirty.remove(key);
            self.removed.insert(m.key);
        }
    }

    /// Marks a model to be stored again (a failed write).
    pub fn mark_dirty(&mut self, key: Arc<str>) {
        if self.models.contains_key(&key) {
            self.dirty.insert(key);
        }
    }

    /// Forgets what `key` learned and starts learning again. Returns
    /// whether the model existed.
    pub fn relearn(&mut self, key: &str, now: u64) -> bool {
        let Some(m) = self.models.get_mut(key) else {
            return false;
        };
        self.total -= m.item_count();
        *m = Model::new(m.key.clone(), now, self.learning_ns);
        self.dirty.insert(m.key.clone());
        true
    }

    /// Judges one observation of `ev` against the rules and the model
    /// `key` (created, learning, when new).
    pub fn check(&mut self, key: &Arc<str>, obs: &Observation, ev: &Event, now: u64) -> Verdict {
        let mask = match self.rule_masks.get(key) {
            Some(m) => *m,
            None => {
                if self.rule_masks.len() >= self.max_models.saturating_mul(4) {
                    self.rule_masks.clear();
                }
                let m = self.rules.model_mask(key);
                self.rule_masks.insert(key.clone(), m);
                m
            }
        };
        if let Some(rule) = self.rules.check_masked(mask, key, obs, ev) {
            if rule.allow {
                return Verdict::Normal;
            }
            return Verdict::Audit(AuditDraft {
                section: obs.section.name(),
                rule: rule.name.clone(),
                severity: rule.severity,
                message: rule.message.clone().unwrap_or_else(|| {
                    format!("rule {}: {} {}", rule.name, obs.section.name(), obs.item)
                }),
                item: obs.item.to_string(),
                incident: rule
                    .incident
                    .unwrap_or_else(|| IncidentType::for_section(obs.section)),
            });
        }
        // Known already (one lookup, the common case), or a new model.
        if let Some(m) = self.models.get_mut(key) {
            m.last_used = now;
            if m.contains(obs.section, &obs.item) {
                return Verdict::Normal;
            }
        } else {
            self.evict_for_one();
            self.models
                .insert(key.clone(), Model::new(key.clone(), now, self.learning_ns));
            self.dirty.insert(key.clone());
        }
        let max_items = self.max_items;
        let window = self.window_ns;
        let Some(m) = self.models.get_mut(key) else {
            return Verdict::Normal;
        };
        m.last_used = now;
        if m.contains(obs.section, &obs.item) {
            return Verdict::Normal;
        }
        if m.learning(now) {
            let section = m.sections.entry(obs.section).or_default();
            if section.len() >= max_items || self.total >= self.max_total {
                return Verdict::Normal;
            }
            section.insert(obs.item.to_string(), now);
            self.total += 1;
            self.dirty.insert(key.clone());
            return Verdict::Learned;
        }
        if obs
            .legacy
            .as_deref()
            .is_some_and(|l| m.contains(obs.section, l))
        {
            // Learned by an agent before invoked names (see
            // `Observation::legacy`).
            return Verdict::Normal;
        }
        let flag = (obs.section, obs.item.to_string());
        if m.flagged
            .get(&flag)
            .is_some_and(|&at| now.saturating_sub(at) < window)
        {
            return Verdict::Normal;
        }
        if m.flagged.len() >= max_items {
            m.flagged.retain(|_, at| now.saturating_sub(*at) < window);
        }
        m.flagged.insert(flag, now);
        m.anomalies += 1;
        self.dirty.insert(key.clone());
        Verdict::Audit(AuditDraft {
            section: obs.section.name(),
            rule: "model".into(),
            severity: obs.section.severity(),
            message: format!(
                "new {} for {}: {}",
                obs.section.name(),
                short_key(key),
                obs.item
            ),
            item: obs.item.to_string(),
            incident: IncidentType::for_section(obs.section),
        })
    }

    fn evict_for_one(&mut self) {
        if self.models.len() < self.max_models {
            return;
        }
        if let Some(key) = self
            .models
            .values()
            .min_by_key(|m| m.last_used)
            .map(|m| m.key.clone())
        {
            tracing::debug!(model = %key, "least recently used model evicted");
            if let Some(m) = self.models.remove(&key) {
                self.total -= m.item_count();
            }
            self.dirty.remove(&key);
            self.removed.insert(key);
        }
    }
}

/// The model an event belongs to: the container's image (digest, else
/// name, else the container itself until the runtime names it), or the
/// host service (systemd unit, else the executable).
pub fn key_for(ev: &Event, meta: Option<&ContainerMeta>) -> Arc<str> {
    match &ev.scope {
        Scope::Container(id) => container_key(id, meta),
        Scope::Host => match ev.unit.as_deref() {
            Some(u) if u.ends_with(".service") => format!("service:{u}").into(),
            _ => {
                // An exec is judged by the program that ran it.
                let exe = match &ev.record.detail {
                    crate::event::Detail::Exec { .. } => {
                        ev.image.parent.as_deref().map_or("", |p| &*p.exe)
                    }
                    _ => ev.exe(),
                };
                format!("exe:{}", if exe.is_empty() { "?" } else { exe }).into()
            }
        },
    }
}

/// A container's model: its image's (digest, else name), or its own until
/// the runtime names the image.
pub fn container_key(id: &str, meta: Option<&ContainerMeta>) -> Arc<str> {
    match meta {
        Some(m) if !m.image_digest.is_empty() => format!("image:{}", m.image_digest).into(),
        Some(m) if !m.image.is_empty() => format!("image:{}", m.image).into(),
        _ => format!("container:{id}").into(),
    }
}

/// `image:sha256:0123456789ab…` shortened for messages.
fn short_key(key: &str) -> String {
    if let Some(id) = key.strip_prefix("container:") {
        return format!("container:{}", &id[..id.len().min(12)]);
    }
    match key.find("sha256:") {
        Some(i) if key.len() > i + 19 => format!("{}…", &key[..i + 19]),
        _ => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(learning_s: u64) -> ModelSet {
        let cfg = AnalysisConfig {
            learning_period: std::time::Duration::from_secs(learning_s),
            ..AnalysisConfig::default()
        };
        ModelSet::new(&cfg).expect("config")
    }

    fn obs(section: Section, item: &str) -> Observation<'_> {
        Observation::new(section, item)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn learns_then_flags_new_items_once_per_window() {
        let mut m = set(10);
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let key: Arc<str> = Arc::from("image:app");
        let curl = obs(Section::Exec, "/bin/sh -> /usr/bin/curl");
        assert_eq!(m.check(&key, &curl, &ev, S), Verdict::Learned);
        assert_eq!(m.check(&key, &curl, &ev, 2 * S), Verdict::Normal);
        assert!(m.get("image:app").unwrap().learning(5 * S));
        // Active after 10 s.
        assert_eq!(m.check(&key, &curl, &ev, 12 * S), Verdict::Normal);
        let nc = obs(Section::Listen, "tcp/4444");
        match m.check(&key, &nc, &ev, 13 * S) {
            Verdict::Audit(a) => {
                assert_eq!(a.incident, IncidentType::BackdoorListener);
                assert_eq!(a.rule, "model");
                assert_eq!(a.section, "listen");
                assert!(a.message.contains("tcp/4444"), "{}", a.message);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(m.check(&key, &nc, &ev, 14 * S), Verdict::Normal, "once");
        assert_eq!(m.get("image:app").unwrap().anomalies, 1);
        let (dirty, _) = m.take_dirty();
        assert_eq!(dirty, vec![key.clone()]);
        assert!(m.relearn("image:app", 20 * S));
        assert_eq!(m.get("image:app").unwrap().item_count(), 0);
        assert_eq!(m.check(&key, &nc, &ev, 21 * S), Verdict::Learned);
    }

    #[test]
    fn deny_rules_audit_even_while_learning_and_allow_rules_silence() {
        let mut m = set(3600);
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let key: Arc<str> = Arc::from("image:app");
        match m.check(&key, &obs(Section::Exec, "/bin/sh -> /opt/xmrig"), &ev, S) {
            Verdict::Audit(a) => {
                assert_eq!(a.rule, "crypto-miner-program");
                assert_eq!(a.severity, Severity::Critical);
            }
            v => panic!("{v:?}"),
        }
        let svc: Arc<str> = Arc::from("service:google-guest-agent.service");
        assert_eq!(
            m.check(&svc, &obs(Section::Account, "useradd: /etc/passwd"), &ev, S),
            Verdict::Normal
        );
    }

    #[test]
    fn a_model_learned_without_invoked_names_accepts_them() {
        let mut m = set(10);
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let key: Arc<str> = Arc::from("service:app.service");
        // An older agent learned the executables only.
        let old = obs(Section::Exec, "/usr/bin/app -> /usr/bin/dash");
        assert_eq!(m.check(&key, &old, &ev, S), Verdict::Learned);
        let mut now = obs(Section::Exec, "/usr/bin/app -> /usr/bin/dash[sh]");
        now.legacy = Some("/usr/bin/app -> /usr/bin/dash".into());
        assert_eq!(m.check(&key, &now, &ev, 12 * S), Verdict::Normal);
        // Without that form learned, the invoked name is news.
        let mut nc = obs(Section::Exec, "/usr/bin/app -> /bin/busybox[nc]");
        nc.legacy = Some("/usr/bin/app -> /bin/busybox".into());
        assert!(matches!(m.check(&key, &nc, &ev, 13 * S), Verdict::Audit(_)));
    }

    #[test]
    fn models_are_bounded() {
        let cfg = AnalysisConfig {
            max_models: 2,
            max_items_per_section: 1,
            ..AnalysisConfig::default()
        };
        let mut m = ModelSet::new(&cfg).unwrap();
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            let key: Arc<str> = Arc::from(k);
            m.check(&key, &obs(Section::File, "/x"), &ev, i as u64);
            m.check(&key, &obs(Section::File, "/y"), &ev, i as u64);
        }
        assert_eq!(m.all().count(), 2);
        assert!(m.get("a").is_none(), "least recently used evicted");
        assert_eq!(m.get("c").unwrap().item_count(), 1);
        assert_eq!(m.total_items(), 2);
        assert_eq!(m.take_dirty().1, vec![Arc::from("a")]);
    }

    #[test]
    fn learning_stops_at_the_total_item_budget() {
        let cfg = AnalysisConfig {
            max_total_items: 2,
            ..AnalysisConfig::default()
        };
        let mut m = ModelSet::new(&cfg).unwrap();
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert_eq!(
            m.check(&a, &obs(Section::File, "/x"), &ev, 1),
            Verdict::Learned
        );
        assert_eq!(
            m.check(&b, &obs(Section::File, "/x"), &ev, 1),
            Verdict::Learned
        );
        assert_eq!(
            m.check(&b, &obs(Section::File, "/y"), &ev, 1),
            Verdict::Normal
        );
        assert_eq!(m.total_items(), 2);
        assert!(m.relearn("a", 2));
        assert_eq!(m.total_items(), 1);
        assert_eq!(
            m.check(&b, &obs(Section::File, "/y"), &ev, 3),
            Verdict::Learned
        );
    }

    #[test]
    fn a_containers_model_moves_to_its_image_when_named() {
        let mut m = set(10);
        let ev = crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        let tmp: Arc<str> = Arc::from("container:c1");
        let img: Arc<str> = Arc::from("image:sha256:ab");
        m.check(&tmp, &obs(Section::Exec, "/a -> /b"), &ev, S);
        m.merge_into("container:c1", &img);
        assert!(m.get("container:c1").is_none());
        let moved = m.get("image:sha256:ab").expect("renamed");
        assert!(moved.contains(Section::Exec, "/a -> /b"));
        assert_eq!(moved.learning_since, S);
        // Into an existing, learning model: items added.
        let tmp2: Arc<str> = Arc::from("container:c2");
        m.check(&tmp2, &obs(Section::File, "/x"), &ev, 2 * S);
        m.merge_into("container:c2", &img);
        assert!(m
            .get("image:sha256:ab")
            .unwrap()
            .contains(Section::File, "/x"));
        assert_eq!(m.total_items(), 2);
        let (dirty, removed) = m.take_dirty();
        assert_eq!(dirty, vec![img.clone()]);
        assert_eq!(removed.len(), 2);
    }

    #[test]
    fn keys_by_image_service_or_executable() {
        let mut ev =
            crate::event::test_support::event(1, 1, crate::event::Detail::Exit { status: 0 });
        assert_eq!(&*key_for(&ev, None), "exe:/bin/t");
        ev.unit = Some(Arc::from("sshd.service"));
        assert_eq!(&*key_for(&ev, None), "service:sshd.service");
        ev.scope = Scope::Container(Arc::from("c1"));
        assert_eq!(&*key_for(&ev, None), "container:c1");
        let meta = ContainerMeta {
            image: "nginx:1".into(),
            ..Default::default()
        };
        assert_eq!(&*key_for(&ev, Some(&meta)), "image:nginx:1");
        let meta = ContainerMeta {
            image_digest: "sha256:ab".into(),
            ..meta
        };
        assert_eq!(&*key_for(&ev, Some(&meta)), "image:sha256:ab");
    }
}
