//! Property tests (proptest; cargo-fuzz needs a nightly toolchain, which this project does
//! not use): the request-body parser, the `expiresIn` parser and token verification never
//! panic on any input, and hold their invariants.
//! A longer run: `PROPTEST_CASES=100000 cargo test --release --test properties`.

use performchat::auth::expires_in::parse_ms;
use performchat::auth::jwt::{self, Claims, Keyring};
use performchat::auth::{ExpiresIn, ExternalUserId};
use performchat::http::parse_object;
use proptest::prelude::*;
use serde_json::Value;

fn keyring() -> Keyring {
    Keyring::new([("sk1", &[7u8; 32][..], None)]).unwrap()
}

fn claims(sub: String, exp: i64) -> Claims {
    Claims {
        sub,
        company_id: "c".into(),
        agent_id: "a".into(),
        key_id: "k".into(),
        ver: 0,
        skid: "sk1".into(),
        iss: "performchat".into(),
        jti: "j".into(),
        iat: 0,
        exp,
    }
}

proptest! {
    #[test]
    fn the_body_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_object(&bytes);
    }

    #[test]
    fn any_json_object_text_parses_back(map in proptest::collection::btree_map("[a-zA-Z]{1,8}", any::<i64>(), 0..8)) {
        let text = serde_json::to_vec(&map).unwrap();
        let parsed = parse_object(&text).unwrap();
        prop_assert_eq!(parsed.len(), map.len());
    }

    #[test]
    fn expires_in_never_panics_and_stays_in_range(s in "\\PC{0,120}", n in any::<f64>()) {
        let max = ExpiresIn::DEFAULT_MAX;
        for v in [Value::String(s.clone()), serde_json::json!(n)] {
            if let Ok(Some(e)) = ExpiresIn::from_json(Some(&v), max) {
                prop_assert!(e >= ExpiresIn::MIN && e <= max);
            }
        }
        let _ = parse_ms(&s);
    }

    #[test]
    fn whole_units_parse_to_their_value(n in 0u32..100_000, unit in prop::sample::select(vec![("s", 1_000.0), ("m", 60_000.0), ("h", 3_600_000.0), ("d", 86_400_000.0), ("w", 604_800_000.0)])) {
        let d = parse_ms(&format!("{n}{}", unit.0)).unwrap();
        prop_assert_eq!(d.millis, f64::from(n) * unit.1);
        prop_assert!(d.unit);
    }

    #[test]
    fn user_ids_never_panic(s in "\\PC{0,300}", n in any::<i64>()) {
        let _ = ExternalUserId::from_json("userId", Some(&Value::String(s)));
        let ok = ExternalUserId::from_json("userId", Some(&serde_json::json!(n))).unwrap();
        prop_assert_eq!(ok.as_str(), n.to_string());
    }

    #[test]
    fn verification_never_panics_on_any_string(s in "\\PC{0,600}") {
        prop_assert!(jwt::decode(&s, &keyring()).is_err());
    }

    #[test]
    fn any_changed_byte_breaks_a_token(sub in "[a-z0-9]{1,20}", exp in 1i64..4_000_000_000, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let ring = keyring();
        let token = jwt::sign(&claims(sub, exp), ring.current());
        prop_assert!(jwt::decode(&token, &ring).is_ok());
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(jwt::decode(&changed, &ring).is_err(), "accepted {}", changed);
        }
    }
}
