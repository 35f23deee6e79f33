//! API key pairs: `keyId` (`pk_…`, public, names the key) and `keySecret` (`sk_…`, shown
//! once at creation, stored only as a hash).
//!
//! Both end in a 6-character checksum (CRC32 of the rest, in base62), the shape GitHub gives
//! its tokens: secret scanners can tell a real leak from look-alike text, and a mistyped
//! secret is refused without a database read.

use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 43 base62 characters carry 43 × log2(62) ≈ 256 bits.
const SECRET_RANDOM_CHARS: usize = 43;
const KEY_ID_RANDOM_CHARS: usize = 24;
const CHECKSUM_CHARS: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC32 of `body` in base62, zero-padded to 6 characters (62^6 > 2^32).
fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// `prefix` + `random_chars` base62 characters + their checksum.
fn with_checksum(prefix: &str, random_chars: usize) -> String {
    let body = format!("{prefix}{}", random_base62(random_chars));
    let sum = checksum(&body);
    body + &sum
}

/// Whether `s` has the shape and a correct checksum.
fn well_formed(s: &str, prefix: &str, random_chars: usize) -> bool {
    s.len() == prefix.len() + random_chars + CHECKSUM_CHARS
        && s.starts_with(prefix)
        && s.bytes()
            .skip(prefix.len())
            .all(|b| b.is_ascii_alphanumeric())
        && {
            let (body, sum) = s.split_at(s.len() - CHECKSUM_CHARS);
            checksum(body) == sum
        }
}

/// Whether a keyId has our shape and checksum (a typo or a foreign id does not).
pub fn is_well_formed_key_id(id: &str) -> bool {
    well_formed(id, "pk_", KEY_ID_RANDOM_CHARS)
}

/// Random base62 text from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn new_key_id() -> String {
    with_checksum("pk_", KEY_ID_RANDOM_CHARS)
}

/// A key secret in the clear. Exists only between creation and printing it once, and while
/// a request is checked. Its `Debug` never shows it.
#[derive(Clone)]
pub struct KeySecret(String);

impl KeySecret {
    /// A new secret. Not `sk_live_`/`sk_test_`: secret scanners read those as Stripe keys.
    pub fn generate() -> Self {
        KeySecret(with_checksum("sk_", SECRET_RANDOM_CHARS))
    }

    /// Whether it has our shape and checksum; one that does not cannot be any key's.
    pub fn is_well_formed(&self) -> bool {
        well_formed(&self.0, "sk_", SECRET_RANDOM_CHARS)
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
        assert_eq!(s.expose().len(), 3 + SECRET_RANDOM_CHARS + CHECKSUM_CHARS);
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
        assert!(id.starts_with("pk_") && id.len() == 3 + 24 + 6);
        assert!(is_well_formed_key_id(&id));
    }

    #[test]
    fn checksums_catch_typos_and_foreign_text() {
        let s = KeySecret::generate();
        assert!(s.is_well_formed());
        let mut typo = s.expose().as_bytes().to_vec();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!KeySecret::from_request(String::from_utf8(typo).unwrap()).is_well_formed());
        for bad in [
            "",
            "sk_",
            "sk_live_abc",
            "pk_x",
            &s.expose()[..s.expose().len() - 1],
        ] {
            assert!(
                !KeySecret::from_request(bad.to_owned()).is_well_formed(),
                "{bad}"
            );
        }
        let id = new_key_id();
        assert!(!is_well_formed_key_id(&id.replace("pk_", "sk_")));
        assert!(!is_well_formed_key_id("pk_nobody"));
    }

    #[test]
    fn checksums_are_six_base62_characters() {
        assert_eq!(checksum("").len(), 6);
        assert_eq!(checksum("sk_abc"), checksum("sk_abc"));
        assert_ne!(checksum("sk_abc"), checksum("sk_abd"));
        // The largest CRC32 still fits.
        let mut n = u32::MAX;
        let mut digits = 0;
        while n > 0 {
            n /= 62;
            digits += 1;
        }
        assert!(digits <= CHECKSUM_CHARS);
    }
}
