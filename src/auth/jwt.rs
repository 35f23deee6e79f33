//! Chat tokens: HS256 JWTs whose header is byte for byte the documented one.
//!
//! The header is a constant rather than a serialised struct because the contract fixes its
//! bytes (`{"alg":"HS256","typ":"JWT"}`, the prefix `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9`),
//! and jsonwebtoken writes `typ` before `alg`. The MAC is RustCrypto's HMAC-SHA256 (the
//! implementation jsonwebtoken itself uses), called directly because each key's HMAC state
//! is keyed once and cloned per token: jsonwebtoken keys a new HMAC at every call, hashing
//! the key's inner and outer pads again, two of the eight SHA-256 blocks a token costs. The
//! tests check tokens both ways against jsonwebtoken.
//!
//! Verification accepts only that exact header, which refuses `none` in every spelling,
//! other algorithms and any added header field in one comparison; claims are then checked
//! here against our own clock, with an explicit leeway (jsonwebtoken's own validation would
//! add 60 s unless told otherwise, and never looks at `iat`).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The internal user id (`user.id` in the token response).
    pub sub: String,
    #[serde(rename = "companyId")]
    pub company_id: String,
    #[serde(rename = "agentId")]
    pub agent_id: String,
    /// The API key that minted the token: revoking the key kills the token.
    #[serde(rename = "keyId")]
    pub key_id: String,
    /// The user's token version at minting; invalidation raises the user's version.
    pub ver: i64,
    /// Which signing key signed it. A claim, not a `kid` header, so the header stays as
    /// documented.
    pub skid: String,
    pub iss: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused before any revocation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid(&'static str),
    Expired,
    /// Signed by a signing key that has been retired (see [`check_retirement`]).
    Retired,
}

pub struct SigningKey {
    pub id: String,
    /// HMAC-SHA256 keyed with the secret; each signature or check starts from a clone.
    mac: Hmac<Sha256>,
}

impl SigningKey {
    pub fn new(id: String, secret: &[u8]) -> Self {
        SigningKey {
            id,
            mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }
}

/// A signing key as the ring holds it: until `retire_at` (unix ms) it verifies; from then on
/// every token naming it is refused as revoked, whether or not its secret has been erased yet
/// (`key` is None once it has: nothing is left to check a signature with).
struct RingEntry {
    key: Option<Arc<SigningKey>>,
    retire_at: Option<i64>,
}

/// The signing keys this server knows: the newest signs, every one not yet retired verifies.
#[derive(Clone)]
pub struct Keyring {
    current: Arc<SigningKey>,
    by_id: HashMap<String, Arc<RingEntry>>,
}

impl Keyring {
    /// Keys oldest first, with their retirement time; the last one with a secret signs. An
    /// erased key has an empty secret. None if no key has a secret.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a [u8], Option<i64>)>,
    ) -> Option<Self> {
        let mut by_id = HashMap::new();
        let mut current = None;
        for (id, secret, retire_at) in keys {
            // An empty secret is an erased one: never an HMAC key (anyone could sign with it).
            let key =
                (!secret.is_empty()).then(|| Arc::new(SigningKey::new(id.to_owned(), secret)));
            if let Some(k) = &key {
                current = Some(k.clone());
            }
            by_id.insert(id.to_owned(), Arc::new(RingEntry { key, retire_at }));
        }
        Some(Keyring {
            current: current?,
            by_id,
        })
    }

    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// When the key is (or was) retired, if it is retiring at all.
    pub fn retire_at(&self, id: &str) -> Option<i64> {
        self.by_id.get(id).and_then(|e| e.retire_at)
    }
}

/// Encodes and signs. The claims' `skid` must name `key`.
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    debug_assert_eq!(claims.skid, key.id);
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    let mut token = String::with_capacity(HEADER_B64.len() + payload.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let mut mac = key.mac.clone();
    mac.update(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut token);
    token
}

/// Checks the form and signature and returns the claims. Says nothing yet about time or
/// revocation: see [`check_claims`].
pub fn decode(token: &str, keyring: &Keyring) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid("the token is too long"));
    }
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("the token is not a JWT"));
    };
    if header != HEADER_B64 {
        return Err(TokenError::Invalid(
            "the token header is not {\"alg\":\"HS256\",\"typ\":\"JWT\"}",
        ));
    }
    let bad_claims = TokenError::Invalid("the token's claims are malformed");
    let payload_json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad_claims)?;
    let claims: Claims = serde_json::from_slice(&payload_json).map_err(|_| bad_claims)?;
    let entry = keyring.by_id.get(&claims.skid).ok_or(TokenError::Invalid(
        "the token was not signed by this server",
    ))?;
    let key = entry.key.as_ref().ok_or(TokenError::Retired)?;
    let message_len = header.len() + 1 + payload.len();
    // A signature is 32 bytes: a longer text does not fit the buffer and is refused.
    let mut mac_bytes = [0u8; 32];
    let valid = URL_SAFE_NO_PAD
        .decode_slice(signature, &mut mac_bytes)
        .is_ok_and(|len| {
            let mut mac = key.mac.clone();
            mac.update(&token.as_bytes()[..message_len]);
            // `verify_slice` compares in constant time, and refuses a shorter signature.
            mac.verify_slice(&mac_bytes[..len]).is_ok()
        });
    if !valid {
        return Err(TokenError::Invalid("the token's signature does not match"));
    }
    Ok(claims)
}

/// Time and issuer rules, with `leeway_s` allowed for clock differences between instances.
pub fn check_claims(
    claims: &Claims,
    now_s: i64,
    leeway_s: i64,
    issuer: &str,
) -> Result<(), TokenError> {
    if claims.iss != issuer {
        return Err(TokenError::Invalid(
            "the token was issued by another issuer",
        ));
    }
    if claims.exp <= claims.iat {
        return Err(TokenError::Invalid(
            "the token expires before it was issued",
        ));
    }
    if claims.iat > now_s + leeway_s {
        return Err(TokenError::Invalid("the token is issued in the future"));
    }
    if now_s >= claims.exp + leeway_s {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// A token signed by a key past its retirement is refused from that instant, on every
/// instance alike (the time comes from the database, not from when a purge ran): operators
/// rotate because a secret leaked, and a token forged with it may carry any `exp`.
pub fn check_retirement(claims: &Claims, keyring: &Keyring, now_ms: i64) -> Result<(), TokenError> {
    match keyring.retire_at(&claims.skid) {
        Some(at) if now_ms >= at => Err(TokenError::Retired),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn keyring() -> Keyring {
        Keyring::new([("sk1", &[7u8; 32][..], None)]).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            company_id: "c1".into(),
            agent_id: "a1".into(),
            key_id: "pk_1".into(),
            ver: 0,
            skid: "sk1".into(),
            iss: "performchat".into(),
            jti: "j1".into(),
            iat: NOW,
            exp: NOW + 3600,
        }
    }

    /// A token with arbitrary header and payload JSON, signed with `secret`.
    fn forge(header: impl ToString, payload: serde_json::Value, secret: &[u8]) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn the_header_is_exactly_the_documented_bytes() {
        let token = sign(&claims(), keyring().current());
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn a_signed_token_decodes_to_its_claims() {
        let ring = keyring();
        let token = sign(&claims(), ring.current());
        assert_eq!(decode(&token, &ring), Ok(claims()));
    }

    #[test]
    fn tokens_from_jsonwebtoken_itself_verify_with_the_same_key() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
        // Cross-check our encoding against the library's own HS256 path.
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        let theirs =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&[7u8; 32]))
                .unwrap();
        let ours = sign(&claims(), keyring().current());
        // Same payload and key; only the header's field order differs.
        assert_eq!(theirs.split('.').nth(1), ours.split('.').nth(1));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let decoded = jsonwebtoken::decode::<Claims>(
            &ours,
            &DecodingKey::from_secret(&[7u8; 32]),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, claims());
    }

    #[test]
    fn a_token_jsonwebtoken_signs_with_the_documented_header_verifies() {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let payload = serde_json::to_value(claims()).unwrap();
        let theirs = forge(r#"{"alg":"HS256","typ":"JWT"}"#, payload, &[7u8; 32]);
        assert!(theirs.starts_with(HEADER_B64));
        assert_eq!(decode(&theirs, &keyring()), Ok(claims()));
        // And over our own token's header and payload, its signature is ours.
        let ours = sign(&claims(), keyring().current());
        let (message, signature) = ours.rsplit_once('.').unwrap();
        let expected = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(&[7u8; 32]),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(signature, expected);
    }

    #[test]
    fn forged_and_damaged_tokens_are_refused() {
        let ring = keyring();
        let good = sign(&claims(), ring.current());
        let payload = serde_json::to_value(claims()).unwrap();
        let (h, p, s) = {
            let mut it = good.split('.');
            (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
        };
        let mut cases = vec![
            (
                "wrong key",
                forge(
                    json!({"alg":"HS256","typ":"JWT"}),
                    payload.clone(),
                    &[8u8; 32],
                ),
            ),
            ("trailing bytes", format!("{good}x")),
            ("extra segment", format!("{good}.x")),
            ("two segments", format!("{h}.{p}")),
            // 40 characters: a well-formed 30 bytes, the start of the right signature.
            ("truncated signature", format!("{h}.{p}.{}", &s[..40])),
            ("tampered payload", {
                let mut c = claims();
                c.sub = "u2".into();
                format!(
                    "{h}.{}.{s}",
                    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
                )
            }),
            ("too long", format!("{h}.{p}.{}", "A".repeat(MAX_TOKEN_LEN))),
            ("string exp", {
                let mut p = payload.clone();
                p["exp"] = json!("1900000000");
                forge(json!({"alg":"HS256","typ":"JWT"}), p, &[7u8; 32])
            }),
            ("garbage", "not-a-token".into()),
            ("empty", String::new()),
        ];
        for alg in ["none", "None", "NONE", "nOnE", "HS384", "HS512", "RS256"] {
            cases.push((
                alg,
                forge(
                    json!({"alg": alg, "typ": "JWT"}),
                    payload.clone(),
                    &[7u8; 32],
                ),
            ));
        }
        cases.push((
            "kid header",
            forge(
                json!({"alg":"HS256","typ":"JWT","kid":"x"}),
                payload.clone(),
                &[7u8; 32],
            ),
        ));
        cases.push((
            "reordered header",
            forge(
                r#"{"typ":"JWT","alg":"HS256"}"#,
                payload.clone(),
                &[7u8; 32],
            ),
        ));
        cases.push((
            "spaced header",
            forge(r#"{"alg": "HS256", "typ": "JWT"}"#, payload, &[7u8; 32]),
        ));
        for (name, token) in cases {
            assert!(
                matches!(decode(&token, &ring), Err(TokenError::Invalid(_))),
                "{name} was accepted"
            );
        }
    }

    #[test]
    fn expiry_has_no_hidden_leeway() {
        let c = claims();
        assert_eq!(check_claims(&c, c.exp - 1, 0, "performchat"), Ok(()));
        assert_eq!(
            check_claims(&c, c.exp, 0, "performchat"),
            Err(TokenError::Expired)
        );
        assert_eq!(check_claims(&c, c.exp + 4, 5, "performchat"), Ok(()));
        assert_eq!(
            check_claims(&c, c.exp + 5, 5, "performchat"),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn issuer_and_issue_time_are_checked() {
        let c = claims();
        assert!(matches!(
            check_claims(&c, NOW, 0, "other"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            check_claims(&c, NOW - 1, 0, "performchat"),
            Err(TokenError::Invalid(_))
        ));
        let mut backwards = claims();
        backwards.exp = backwards.iat;
        assert!(matches!(
            check_claims(&backwards, NOW, 0, "performchat"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn the_newest_key_signs_and_an_older_one_verifies_until_its_retirement() {
        let old = sign(&claims(), keyring().current());
        let retiring = Keyring::new([
            ("sk1", &[7u8; 32][..], Some(NOW * 1000)),
            ("sk2", &[9u8; 32][..], None),
        ])
        .unwrap();
        assert_eq!(retiring.current().id, "sk2");
        let claims = decode(&old, &retiring).unwrap();
        assert_eq!(check_retirement(&claims, &retiring, NOW * 1000 - 1), Ok(()));
        assert_eq!(
            check_retirement(&claims, &retiring, NOW * 1000),
            Err(TokenError::Retired)
        );
        let erased = Keyring::new([
            ("sk1", &[][..], Some(NOW * 1000)),
            ("sk2", &[9u8; 32][..], None),
        ])
        .unwrap();
        assert_eq!(decode(&old, &erased), Err(TokenError::Retired));
        // An erased secret is never an (empty) HMAC key.
        assert_eq!(erased.current().id, "sk2");
        let forged_with_empty_key = {
            let mut c = claims.clone();
            c.skid = "sk1".into();
            sign(&c, &SigningKey::new("sk1".into(), &[]))
        };
        assert_eq!(
            decode(&forged_with_empty_key, &erased),
            Err(TokenError::Retired)
        );
    }
}
