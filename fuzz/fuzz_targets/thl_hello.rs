//! Fuzz target: arbitrary bytes as a THL HELLO payload, through what the
//! server does before it trusts a replica: split off the proof, check it
//! against a secret and a nonce, parse the JSON. Never a panic; a random
//! proof is never accepted.
#![no_main]

use carbide_replicator::auth::Secret;
use carbide_replicator::transfer::protocol::{parse, split_hello, Hello};
use carbide_replicator::transfer::server::check_proof;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new("fuzzing-secret-0123456789");
    if let Ok((proof, json)) = split_hello(data) {
        let r = check_proof(Some(&secret), "alpha", &[7u8; 32], json, proof);
        assert!(r.is_err(), "a random proof was accepted");
        let _ = parse::<Hello>("hello", json);
    }
});
