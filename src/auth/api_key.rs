//! API key pairs: `keyId` (`pk_…`, public, names the key) and `keySecret` (`sk_…`, shown
//! once at creation, stored only as a hash).

use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 43 base62 characters carry 43 × log2(62) ≈ 256 bits.
const SECRET_RANDOM_CHARS: usize = 43;
const KEY_ID_RANDOM_CHARS: usize = 24;

/// Random base62 text from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn new_key_id() -> String {
    format!("pk_{}", random_base62(KEY_ID_RANDOM_CHARS))
}

/// A key secret in the clear. Exists only between creation and printing it once, and while
/// a request is checked. Its `Debug` never shows it.
#[derive(Clone)]
pub struct KeySecret(String);

impl KeySecret {
    /// A new secret. Not `sk_live_`/`sk_test_`: secret scanners read those as Stripe keys.
    pub fn generate() -> Self {
        KeySecret(format!("sk_{}", random_base62(SECRET_RANDOM_CHARS)))
    }

    pub fn from_request(s: String) -> Self {
        KeySecret(s)
    }

    /// The clear text, for the one place that shows it: the response to its creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the secret. A fast hash is right here: the secret is 256 random bits, so
    /// there is nothing to brute-force, and a slow password hash (Argon2, bcrypt) would only
    /// turn the token endpoint into a CPU target.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Compares against a stored hash in constant time, so timing tells nothing about how
    /// much of a guess was right.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        bool::from(self.hash().as_slice().ct_eq(stored_hash))
    }
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

/// A stand-in hash (all zeros, which no real secret hashes to), used to
/// spend the same work on an unknown keyId as on a known one.
pub const NO_KEY_HASH: [u8; 32] = [0; 32];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_256_bits_and_the_agreed_prefix() {
        let s = KeySecret::generate();
        assert!(s.expose().starts_with("sk_"));
        assert!(!s.expose().starts_with("sk_live_") && !s.expose().starts_with("sk_test_"));
        assert_eq!(s.expose().len(), 3 + SECRET_RANDOM_CHARS);
        assert!((SECRET_RANDOM_CHARS as f64) * 62f64.log2() >= 256.0);
        assert_ne!(s.expose(), KeySecret::generate().expose());
    }

    #[test]
    fn a_secret_matches_only_its_own_hash() {
        let s = KeySecret::generate();
        let h = s.hash();
        assert!(s.matches(&h));
        assert!(!KeySecret::generate().matches(&h));
        assert!(!s.matches(&h[..31]));
        assert!(!s.matches(&NO_KEY_HASH));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let s = KeySecret::generate();
        assert!(!format!("{s:?}").contains(s.expose()));
    }

    #[test]
    fn key_ids_are_recognisable() {
        let id = new_key_id();
        assert!(id.starts_with("pk_") && id.len() == 27);
    }
}
