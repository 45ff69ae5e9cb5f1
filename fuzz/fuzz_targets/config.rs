//! A config file as `fdr-agent --config` reads it: TOML text → `Config`
//! (serde, as `Config::load` does) → `validate()`, then what the agent
//! builds from a valid config before it touches the system (kinds, path
//! prefixes for the kernel, analysis rules). Any text is a clear error or a
//! usable config, never a panic.
#![no_main]

use fdr_agent::{analysis::Analyzer, config::Config, model::ModelSet, watch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file with `read_to_string`: not UTF-8 is an
    // error before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<Config>(text) else {
        return;
    };
    if cfg.validate().is_err() {
        return;
    }
    let kinds = cfg.capture.kinds().expect("validate() checked the kinds");
    std::hint::black_box(kinds);
    std::hint::black_box(watch::prefixes(&cfg.capture, &cfg.recorder.data_dir));
    // The rules compile (a bad rule is a ConfigError, not a panic).
    let _ = std::hint::black_box(ModelSet::new(&cfg.analysis));
    std::hint::black_box(Analyzer::new(&cfg.analysis, cfg.attribution.ancestry_depth));
});
