//! The `[analysis]` section: runtime models, rules, detectors, incidents.

use serde::{Deserialize, Serialize};

use super::{duration_serde, strings};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Runtime models, audits and incidents. Default on.
    pub enabled: bool,
    /// How long a new model learns before anything new is an anomaly.
    /// Default 1h; between 1s and 365 days.
    #[serde(with = "duration_serde")]
    pub learning_period: std::time::Duration,
    /// An audit of the same incident type on the same scope within this
    /// long updates the open incident instead of opening one. Default 24h;
    /// between 1s and 365 days.
    #[serde(with = "duration_serde")]
    pub incident_window: std::time::Duration,
    /// Items kept per model section; past it nothing more is learned (and
    /// such items are anomalies once active). Default 2048; between 1 and
    /// 1 000 000.
    pub max_items_per_section: usize,
    /// Models kept; the least recently used beyond it are dropped. Default
    /// 4096; between 1 and 1 000 000.
    pub max_models: usize,
    /// Items kept over all models (about 100 bytes each); past it nothing
    /// more is learned. Default 262144 (about 25 MiB); between 1 and
    /// 10 000 000.
    pub max_total_items: usize,
    /// Distinct destinations one process connects to within `scan_window`
    /// that make a port scan. Default 20 in 60s; the threshold between 2
    /// and 65536, the window between 1s and 1 day.
    pub scan_threshold: usize,
    #[serde(with = "duration_serde")]
    pub scan_window: std::time::Duration,
    /// A sensitive file read, then an outbound connection from the same
    /// process tree within this long, is data exfiltration. Default 5m;
    /// between 1s and 1 day.
    #[serde(with = "duration_serde")]
    pub exfil_window: std::time::Duration,
    /// Audits kept in an incident's record (all are in its snapshot and
    /// counted). Default 200; between 1 and 100 000.
    pub max_audits_per_incident: usize,
    /// Rules that override learning, checked in order, deny rules before
    /// allow rules.
    pub rules: Vec<RuleConfig>,
}

/// `allow`: matching behaviour never raises an audit (learning does not
/// matter). `deny`: it always does, learning or not.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub action: RuleAction,
    /// Glob on the model key (`image:…`, `service:…`, `exe:…`,
    /// `container:…`), `{a,b}` for alternatives. Default `*`.
    #[serde(default = "star")]
    pub model: String,
    /// Model section: exec, file, sensitive-read, listen, connect,
    /// account, priv, binary. Default: any.
    #[serde(default)]
    pub section: Option<String>,
    /// Globs on the item (`*` matches anything, `/` included; `{a,b}`
    /// alternatives); any may match. Exec items are `parent -> program`,
    /// a program being its executable, or `exe[name]` when it ran under
    /// another name (`/bin/busybox[nc]`, `/usr/bin/dash[sh]`); a side
    /// written `*/NAME` matches the program NAME either way. Default
    /// `["*"]`.
    #[serde(default = "stars")]
    pub items: Vec<String>,
    /// Only in (true) or outside (false) interactive sessions.
    #[serde(default)]
    pub interactive: Option<bool>,
    /// Deny rules: low, medium, high, critical. Default high.
    #[serde(default)]
    pub severity: Option<String>,
    /// Deny rules: the incident type raised. Default: the section's.
    #[serde(default)]
    pub incident: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The default web-server rule's item: a web server's process runs a shell.
const WEB_SERVERS_RUN_SHELL: &str = "*/{nginx,httpd,apache2,lighttpd,caddy,php-fpm*,tomcat*,thttpd,mini_httpd,uhttpd} -> */{sh,bash,dash,ash,zsh,ksh,mksh,fish,tcsh,csh}";

/// The default runtime-infrastructure rule's models: container runtimes,
/// as systemd services and as executables (run outside systemd).
const RUNTIME_INFRASTRUCTURE: &str = "{service:containerd.service,service:docker.service,service:kubelet.service,service:crio.service,exe:*/containerd,exe:*/containerd-shim*,exe:*/runc,exe:*/crun,exe:*/conmon,exe:*/kubelet,exe:*/dockerd,exe:*/docker-proxy,exe:*/crio}";

fn star() -> String {
    "*".into()
}

fn stars() -> Vec<String> {
    vec![star()]
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        use std::time::Duration;
        let deny = |name: &str, section: &str, items: &[&str], incident: &str, severity: &str| {
            RuleConfig {
                name: name.into(),
                action: RuleAction::Deny,
                model: star(),
                section: Some(section.into()),
                items: strings(items),
                interactive: None,
                severity: Some(severity.into()),
                incident: Some(incident.into()),
                message: None,
            }
        };
        let mut interactive_accounts = deny(
            "interactive-account-change",
            "account",
            &["*"],
            "backdoor-account",
            "critical",
        );
        interactive_accounts.interactive = Some(true);
        let allow_accounts = |name: &str, unit: &str| RuleConfig {
            name: name.into(),
            action: RuleAction::Allow,
            model: format!("service:{unit}"),
            section: Some("account".into()),
            items: stars(),
            interactive: None,
            severity: None,
            incident: None,
            message: None,
        };
        AnalysisConfig {
            enabled: true,
            learning_period: Duration::from_secs(3600),
            incident_window: Duration::from_secs(24 * 3600),
            max_items_per_section: 2048,
            max_models: 4096,
            max_total_items: 262_144,
            scan_threshold: 20,
            scan_window: Duration::from_secs(60),
            exfil_window: Duration::from_secs(300),
            max_audits_per_incident: 200,
            rules: vec![
                interactive_accounts,
                deny(
                    "crypto-miner-program",
                    "exec",
                    &[
                        "* -> */xmrig*",
                        "* -> */minerd",
                        "* -> */cpuminer*",
                        "* -> */ccminer",
                        "* -> */ethminer",
                        "* -> */xmr-stak*",
                        "* -> */t-rex",
                        "* -> */nbminer",
                        "* -> */lolminer",
                        "* -> */phoenixminer",
                    ],
                    "crypto-miner",
                    "critical",
                ),
                deny(
                    "mining-pool-port",
                    "connect",
                    &[
                        "* *:3333",
                        "* *:5555",
                        "* *:7777",
                        "* *:14444",
                        "* *:14433",
                        "* *:45700",
                    ],
                    "crypto-miner",
                    "high",
                ),
                // Web servers and shells by program name: `*/httpd` also
                // matches busybox's `httpd` applet (`/bin/busybox[httpd]`)
                // and `*/sh` a shell run as `sh` (`/usr/bin/dash[sh]`,
                // `/bin/busybox[sh]`); see the rules' doc. Python or Node
                // servers are not named by their program: a shell they
                // start is the detectors' `shell-by-network-service`.
                deny(
                    "shell-run-by-web-server",
                    "exec",
                    &[WEB_SERVERS_RUN_SHELL],
                    "reverse-shell",
                    "high",
                ),
                // Container runtimes and their helpers pull images, unpack
                // layers, make FIFOs and state under random names, exec
                // shims and runc, and listen on a random port (the CRI
                // streaming server of containerd) at each start: nothing
                // of it is news. Deny rules still apply to them; what runs
                // inside containers is judged in the containers' models.
                RuleConfig {
                    name: "runtime-infrastructure".into(),
                    action: RuleAction::Allow,
                    model: RUNTIME_INFRASTRUCTURE.into(),
                    section: None,
                    items: stars(),
                    interactive: None,
                    severity: None,
                    incident: None,
                    message: None,
                },
                allow_accounts("guest-agent-manages-accounts", "google-guest-agent.service"),
                allow_accounts(
                    "accounts-daemon-manages-accounts",
                    "google-accounts-daemon.service",
                ),
            ],
        }
    }
}
