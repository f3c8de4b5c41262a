//! Fuzz target: arbitrary bytes as one direction of a compressed-protocol
//! session, split at an arbitrary point. The inflater must never panic,
//! and what it reports (message starts, or the error) must not depend on
//! where reads split the stream.
#![no_main]

use carbide_proxy::compress::Framing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let run = |chunks: &[&[u8]]| {
        let mut f = Framing::new(true);
        let mut seen = Vec::new();
        for c in chunks {
            if let Err(e) = f.feed(c, |m| seen.push((m.seq, m.first_len, m.prefix().to_vec()))) {
                return (seen, Some(e.to_string()), false);
            }
        }
        let boundary = f.at_boundary();
        (seen, None, boundary)
    };
    let cut = (split as usize).min(rest.len());
    let whole = run(&[rest]);
    let parts = run(&[&rest[..cut], &rest[cut..]]);
    // an error may come with fewer messages reported before it in one
    // chunking than the other only if the error itself is the same
    assert_eq!(whole.1.is_some(), parts.1.is_some());
    if whole.1.is_none() {
        assert_eq!(whole, parts);
    }
});
