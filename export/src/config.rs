//! `[export.otlp]`: the same section in the agent's and the console's
//! configuration. Every key has a documented default; [`OtlpConfig::validate`]
//! names the key of a bad value.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// A value [`OtlpConfig::validate`] refused; the message names its key.
#[derive(Debug, thiserror::Error)]
#[error("export.otlp.{0}")]
pub struct ConfigError(pub String);

/// The OTLP/gRPC logs export: incidents (opened, updated), their audits and,
/// opt-in, raw events, sent to an OpenTelemetry collector through a durable
/// outbox in the database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// Export at all. Default false.
    pub enabled: bool,
    /// The collector's OTLP/gRPC endpoint: `https://collector:4317`, or
    /// `http://` to a loopback address only (`http://127.0.0.1:4317`).
    /// Required when `enabled`.
    pub endpoint: String,
    /// PEM CA the collector's certificate must chain to. Default: the
    /// system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key presented to the collector (mutual
    /// TLS). Both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name checked in the collector's certificate instead of the
    /// endpoint's host. Default: the endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// File holding a bearer token, sent as `authorization: Bearer <token>`.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Extra gRPC metadata sent with every export (lower-case names), e.g.
    /// a tenant header. Default: none.
    pub headers: BTreeMap<String, String>,
    /// One export call that takes longer fails (and is retried). Default
    /// 10s; between 1s and 10m.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Records sent per export call at most. Default 512; between 1 and
    /// 100000.
    pub batch_records: usize,
    /// Bytes (encoded outbox records) per export call at most (one record
    /// is always sent). Default 1 MiB; between 1 KiB and 3 MiB (a collector's
    /// gRPC receive limit is typically 4 MiB).
    pub batch_bytes: u64,
    /// Bytes the outbox holds at most. Beyond it, raw events are dropped
    /// first (oldest first); incidents and audits only when no raw event is
    /// left, and then never silently: a gap record (counts by kind, serial
    /// and time range) is queued in their place, counted, logged and
    /// exported. Default 64 MiB; at least 64 KiB.
    pub max_bytes: u64,
    /// Retry delays after a failed export: exponential (doubling from
    /// `backoff_initial` up to `backoff_max`), each drawn between half the
    /// current step and the step (jitter). A collector's `RetryInfo` (on
    /// RESOURCE_EXHAUSTED) is honoured: the delay it asks for, at least
    /// `backoff_initial`, at most 15 minutes, plus up to 5% (at most 1s)
    /// so that a fleet does not return at once. Defaults 1s and 5m.
    #[serde(with = "duration_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "duration_serde")]
    pub backoff_max: Duration,
    /// Raw events, opt-in.
    pub raw_events: RawEventsConfig,
    /// Extra resource attributes (e.g. `deployment.environment`). Default:
    /// none.
    pub resource_attributes: BTreeMap<String, String>,
}

/// Raw events as log records: opt-in, filtered by kind, rate limited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawEventsConfig {
    /// Default false.
    pub enabled: bool,
    /// Event kinds exported, by name as fdrctl and QueryEvents name them
    /// (`exec`, `net-connect`, …). Default: none listed, i.e. all.
    pub kinds: Vec<String>,
    /// Events per second at most (a token bucket, bursts of as many);
    /// beyond it events are counted, not queued. Default 200; between 1 and
    /// 100000.
    pub per_second: u32,
}

impl Default for RawEventsConfig {
    fn default() -> Self {
        RawEventsConfig {
            enabled: false,
            kinds: Vec::new(),
            per_second: 200,
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            token_file: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            batch_records: 512,
            batch_bytes: 1 << 20,
            max_bytes: 64 << 20,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            raw_events: RawEventsConfig::default(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// Whether `url` is `http://` to a loopback address (`127.0.0.1`,
/// `[::1]`, `localhost`), parsed as the connection will be: no user
/// information (`http://127.0.0.1@elsewhere` goes elsewhere).
pub fn is_loopback_http(url: &str) -> bool {
    url.starts_with("http://")
        && url.parse::<tonic::transport::Uri>().is_ok_and(|u| {
            u.authority().is_some_and(|a| !a.as_str().contains('@')) && is_loopback(&u)
        })
}

/// Whether `uri`'s host is a loopback address (`127.0.0.1`, `[::1]`,
/// `localhost`).
fn is_loopback(uri: &tonic::transport::Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resource attributes fdr sets itself.
const RESERVED_RESOURCE: &[&str] = &[
    "service.name",
    "service.version",
    "service.instance.id",
    "host.name",
    "k8s.node.name",
];

impl OtlpConfig {
    /// Checks every value (also when not enabled, so that a bad section is
    /// found before it is switched on). `known_kind` says whether an event
    /// kind name exists.
    pub fn validate(&self, known_kind: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let e = self.endpoint.trim();
        if self.enabled && e.is_empty() {
            return bad("endpoint: required when export.otlp.enabled = true (e.g. \"https://collector:4317\")".into());
        }
        if !e.is_empty() {
            let uri = e
                .parse::<tonic::transport::Uri>()
                .map_err(|err| ConfigError(format!("endpoint = {e:?}: not a URL ({err})")))?;
            match uri.authority() {
                None => {
                    return bad(format!(
                        "endpoint = {e:?}: needs a host (\"https://collector:4317\")"
                    ))
                }
                // user@host: the connection would go to the host after the
                // '@' (credentials belong in token_file).
                Some(a) if a.as_str().contains('@') => {
                    return bad(format!(
                        "endpoint = {e:?}: no user information in the URL; put a bearer \
                         token in export.otlp.token_file"
                    ))
                }
                Some(_) => {}
            }
            if e.starts_with("http://") {
                if !is_loopback(&uri) {
                    return bad(format!(
                        "endpoint = {e:?}: http:// is allowed to a loopback address only; \
                         use https:// (incidents never travel in clear text)"
                    ));
                }
                if self.ca_file.is_some() || self.cert_file.is_some() {
                    return bad(format!(
                        "endpoint = {e:?}: TLS files need an https:// endpoint"
                    ));
                }
            } else if !e.starts_with("https://") {
                return bad(format!(
                    "endpoint = {e:?}: https://host:port (or http:// to loopback)"
                ));
            }
            if e.parse::<tonic::transport::Uri>().is_err() {
                return bad(format!("endpoint = {e:?}: not a URL"));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad("cert_file and export.otlp.key_file go together".into());
        }
        for (k, v) in &self.headers {
            if k.is_empty()
                || k.bytes()
                    .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)))
            {
                return bad(format!(
                    "headers: {k:?} is not a gRPC metadata name (lower case, digits, - _ .)"
                ));
            }
            if k.ends_with("-bin") || k == "authorization" || k.starts_with("grpc-") {
                return bad(format!(
                    "headers: {k:?} is reserved (the token goes in export.otlp.token_file)"
                ));
            }
            if v.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                return bad(format!("headers.{k}: printable ASCII only"));
            }
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(600) {
            return bad("timeout: between 1s and 10m".into());
        }
        if self.batch_records == 0 || self.batch_records > 100_000 {
            return bad("batch_records: between 1 and 100000".into());
        }
        // A collector's gRPC receive limit is typically 4 MiB (an OTLP
        // request is somewhat larger than the records' bytes).
        if self.batch_bytes < 1024 || self.batch_bytes > 3 << 20 {
            return bad("batch_bytes: between 1 KiB and 3 MiB".into());
        }
        if self.max_bytes < 64 << 10 {
            return bad("max_bytes: at least 64 KiB".into());
        }
        if self.backoff_initial < Duration::from_millis(10)
            || self.backoff_initial > self.backoff_max
        {
            return bad(
                "backoff_initial: at least 10ms and at most export.otlp.backoff_max".into(),
            );
        }
        if self.backoff_max > Duration::from_secs(3600) {
            return bad("backoff_max: at most 1h".into());
        }
        let r = &self.raw_events;
        if r.per_second == 0 || r.per_second > 100_000 {
            return bad("raw_events.per_second: between 1 and 100000".into());
        }
        for k in &r.kinds {
            if !known_kind(k) {
                return bad(format!("raw_events.kinds: unknown kind {k:?}"));
            }
        }
        for k in self.resource_attributes.keys() {
            if k.is_empty() || k.len() > 255 {
                return bad(format!("resource_attributes: bad name {k:?}"));
            }
            // Set by fdr: the consumer's idempotency key and the source
            // depend on them.
            if RESERVED_RESOURCE.contains(&k.as_str()) || k.starts_with("fdr.") {
                return bad(format!(
                    "resource_attributes: {k:?} is set by fdr and cannot be overridden"
                ));
            }
        }
        Ok(())
    }
}

/// Durations written as `"5m"`, `"30s"`, `"1h 30m"` (humantime), in every
/// fdr configuration. Not the `humantime-serde` crate: its error ("invalid
/// value: string …, expected a duration") drops humantime's reason (an
/// unknown unit, a number too large) and the example of the syntax that
/// this one gives.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "{e}: a duration is written like \"30s\", \"5m\" or \"1h 30m\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn loopback_http_is_the_host_connected_to() {
        assert!(is_loopback_http("http://127.0.0.1:4317"));
        assert!(is_loopback_http("http://[::1]:4317/x"));
        assert!(is_loopback_http("http://localhost:4317"));
        assert!(!is_loopback_http("http://[::1]@collector.example:4317"));
        assert!(!is_loopback_http("http://127.0.0.1:4317@evil"));
        assert!(!is_loopback_http("http://10.0.0.1:4317"));
        assert!(!is_loopback_http("https://127.0.0.1:4317"));
    }

    #[test]
    fn defaults_round_trip_and_validate() {
        let c = OtlpConfig::default();
        c.validate(any).unwrap();
        let text = toml::to_string(&c).unwrap();
        let back: OtlpConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = OtlpConfig {
            enabled: true,
            ..OtlpConfig::default()
        };
        assert!(c
            .validate(any)
            .unwrap_err()
            .to_string()
            .contains("endpoint"));
        c.endpoint = "http://10.0.0.1:4317".into();
        assert!(c
            .validate(any)
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        for ok in [
            "http://127.0.0.1:4317",
            "http://[::1]:4317",
            "http://localhost:4317",
            "https://otel.example:4317",
        ] {
            c.endpoint = ok.into();
            c.validate(any).unwrap();
        }
        c.cert_file = Some("/x".into());
        assert!(c
            .validate(any)
            .unwrap_err()
            .to_string()
            .contains("key_file"));
        c.cert_file = None;
        c.raw_events.kinds = vec!["nope".into()];
        let err = c.validate(|k| k == "exec").unwrap_err().to_string();
        assert!(err.contains("raw_events.kinds"), "{err}");
        c.raw_events.kinds = vec!["exec".into()];
        c.validate(|k| k == "exec").unwrap();
        c.headers.insert("Authorization".into(), "x".into());
        assert!(c.validate(any).unwrap_err().to_string().contains("headers"));
        let err = toml::from_str::<OtlpConfig>("endpont = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("endpont"), "{err}");
        let c: OtlpConfig = toml::from_str("timeout = \"3s\"\n").unwrap();
        assert_eq!(c.timeout, Duration::from_secs(3));
    }
}
