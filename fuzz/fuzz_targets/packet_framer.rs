//! Fuzz target: arbitrary bytes, split at an arbitrary point, as both sides
//! of a connector session. The framer and the session tracker must never
//! panic, and framing must not depend on where reads split the stream.
#![no_main]

use carbide_proxy::packet::Framer;
use carbide_proxy::tracker::Tracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mid = rest.len() / 2;
    let (client, server) = rest.split_at(mid);
    for deprecate_eof in [false, true] {
        let mut t = Tracker::new(deprecate_eof);
        let (mut cf, mut sf) = (Framer::new(), Framer::new());
        let mut whole = Vec::new();
        Framer::new().feed(server, |m| whole.push((m.seq, m.first_len, m.prefix().to_vec())));
        let mut parts = Vec::new();
        let cut = (split as usize).min(server.len());
        cf.feed(client, |m| {
            t.client_message(m);
        });
        for chunk in [&server[..cut], &server[cut..]] {
            sf.feed(chunk, |m| {
                parts.push((m.seq, m.first_len, m.prefix().to_vec()));
                let _ = t.server_message(m);
            });
        }
        assert_eq!(whole, parts);
        let _ = (t.idle(), t.in_transaction());
    }
});
