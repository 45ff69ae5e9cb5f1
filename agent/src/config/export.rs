//! The `[export]` section: `[export.otlp]`, the OTLP logs export of
//! incidents, audits and (opt-in) raw events, documented in
//! `fdr_export::OtlpConfig` (the same section as the console's).

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    pub otlp: fdr_export::OtlpConfig,
}

impl ExportConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.otlp
            .validate(|k| fdr_proto::v1::EventKind::from_name(k).is_some())
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}
