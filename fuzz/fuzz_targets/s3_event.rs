#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clip_search_fuzz::targets::s3_event(data));
