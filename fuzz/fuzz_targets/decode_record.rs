//! One kernel ring buffer record, as the pipeline hands it to the decoder:
//! any bytes are an error or a record, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = fdr_agent::decode::decode(data) {
        // Every field is read (the derived Debug walks them all).
        std::hint::black_box(format!("{rec:?}"));
    }
});
