//! Standard Webhooks 1.0 signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`, keyed by the bytes of a `whsec_<base64>`
//! secret, one space-separated entry per secret that signs (during a rollover, the new one
//! and the old one). Written here rather than taken from the `standardwebhooks` crate: it is
//! a few lines over `hmac`, and the tests verify it with that crate, an implementation we did
//! not write.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// What a webhook secret starts with.
pub const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and the base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a `whsec_` secret: its base64 part decoded. None for anything else.
fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()
}

/// The `webhook-signature` header for one body: a `v1,` entry per secret, space-separated.
/// Secrets that are not `whsec_` base64 are skipped (none is stored: they are made here).
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| key_of(secret))
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification (and of its libraries' tests).
        let signed = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_secret_signs_in_turn_and_foreign_ones_are_skipped() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with(PREFIX) && a != b);
        let both = sign(&[&a, "not-a-secret", &b], "evt_1", 7, b"{}");
        let entries: Vec<_> = both.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], sign(&[&a], "evt_1", 7, b"{}"));
        assert_eq!(entries[1], sign(&[&b], "evt_1", 7, b"{}"));
        assert_ne!(sign(&[&a], "evt_1", 8, b"{}"), entries[0]);
    }
}
