//! The dataservice secret on the replicator's side.
//!
//! The secret enters as text (from `[security]` through
//! `carbide_config::Config::secret`) and becomes a [`Secret`]; it leaves
//! only as a comparison result or as an HMAC, never in a log line
//! (`Debug` prints `Secret(..)`). Two uses:
//!
//! - the admin API compares an `Authorization: Bearer …` header with it
//!   ([`Secret::matches`], constant time);
//! - the THL hello carries `HMAC-SHA256(secret, PROOF_LABEL ‖ nonce ‖ hello
//!   JSON)` over the server's random nonce ([`hello_proof`],
//!   [`verify_hello_proof`]), so a replica proves it knows the secret
//!   without sending it, and a recorded hello cannot be replayed.
//!
//! The refusal texts are shared with the manager's (`control/src/http.rs`)
//! so an operator sees the same words from every carbide process.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Arc;

/// Reason given when a mutating request carries no secret.
pub const MISSING: &str =
    "this route needs the dataservice secret: Authorization: Bearer <secret> (security.token-file)";
/// Reason given when the secret does not match.
pub const WRONG: &str = "wrong dataservice secret (security.token-file of this dataservice)";

/// Length of a THL hello nonce and of a hello proof, in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of a hello proof (HMAC-SHA256), in bytes.
pub const PROOF_LEN: usize = 32;

/// Domain separation: the proof is only good as a THL hello of protocol 2.
const PROOF_LABEL: &[u8] = b"carbide-thl-hello-2\0";

/// The dataservice secret.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps the secret text (already trimmed by the config).
    pub fn new(text: &str) -> Self {
        Secret(Arc::from(text))
    }

    /// The text, for a client that must send it (`trepctl`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the secret; the time taken does not depend on
    /// how much of `given` is right.
    pub fn matches(&self, given: &str) -> bool {
        same(given.as_bytes(), self.0.as_bytes())
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes())
    }
}

/// Constant-time comparison (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random nonce for one THL connection.
pub fn nonce() -> Result<[u8; NONCE_LEN], String> {
    let mut n = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(n)
}

/// The proof a THL client sends with its hello: HMAC-SHA256 over the
/// label, the server's nonce and the hello's JSON bytes. Without a secret
/// (a daemon started with `--insecure-no-secret`) it is all zeros.
pub fn hello_proof(secret: Option<&Secret>, nonce: &[u8], hello: &[u8]) -> [u8; PROOF_LEN] {
    let mut out = [0u8; PROOF_LEN];
    if let Some(s) = secret {
        let mut ctx = hmac::Context::with_key(&s.key());
        ctx.update(PROOF_LABEL);
        ctx.update(nonce);
        ctx.update(hello);
        out.copy_from_slice(ctx.sign().as_ref());
    }
    out
}

/// Checks a hello proof in constant time.
pub fn verify_hello_proof(secret: &Secret, nonce: &[u8], hello: &[u8], proof: &[u8]) -> bool {
    let mut msg = Vec::with_capacity(PROOF_LABEL.len() + nonce.len() + hello.len());
    msg.extend_from_slice(PROOF_LABEL);
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(hello);
    hmac::verify(&secret.key(), &msg, proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_comparison() {
        let s = Secret::new("0123456789abcdef");
        assert!(s.matches("0123456789abcdef"));
        assert!(!s.matches("0123456789abcdeg"));
        assert!(!s.matches("0123456789abcde"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn hello_proofs_bind_secret_nonce_and_hello() {
        let s = Secret::new("0123456789abcdef");
        let other = Secret::new("fedcba9876543210");
        let n1 = nonce().expect("nonce");
        let n2 = nonce().expect("nonce");
        assert_ne!(n1, n2);
        let p = hello_proof(Some(&s), &n1, b"{\"service\":\"alpha\"}");
        assert!(verify_hello_proof(&s, &n1, b"{\"service\":\"alpha\"}", &p));
        assert!(!verify_hello_proof(
            &other,
            &n1,
            b"{\"service\":\"alpha\"}",
            &p
        ));
        assert!(!verify_hello_proof(&s, &n2, b"{\"service\":\"alpha\"}", &p));
        assert!(!verify_hello_proof(&s, &n1, b"{\"service\":\"beta\"}", &p));
        assert!(!verify_hello_proof(
            &s,
            &n1,
            b"{\"service\":\"alpha\"}",
            &p[..31]
        ));
        let none = hello_proof(None, &n1, b"{}");
        assert_eq!(none, [0u8; PROOF_LEN]);
        assert!(!verify_hello_proof(&s, &n1, b"{}", &none));
    }
}
