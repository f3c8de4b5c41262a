//! Fuzz target: arbitrary bytes into the THL record decoder and the segment
//! header decoder. They must return an error or a value, never panic; a
//! record that decodes must re-encode and decode again.
#![no_main]

use carbide_replicator::thl::format::{decode_record, decode_segment_header, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_segment_header(data);
    if let Ok((ev, _)) = decode_record(data) {
        let mut again = Vec::new();
        let n = encode_record(&ev, &mut again).expect("a decoded event re-encodes");
        let (_, used) = decode_record(&again).expect("a re-encoded event decodes");
        assert_eq!(n, used);
    }
});
