#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trygg_tests::fuzz::device_heartbeat(data));
