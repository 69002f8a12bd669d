#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_fuzz_targets::segment_header(data));
