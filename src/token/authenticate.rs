//! Who is calling a key endpoint: a valid, unrevoked key of an active company that holds the
//! endpoint's scope. Every key endpoint comes through here, so scopes are checked in one place.

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::AppState;
use crate::auth::api_key::{NO_KEY_HASH, is_well_formed_key_id};
use crate::auth::{KeyRules, KeySecret, Scope};
use crate::db::AuditEvent;
use crate::error::{Error, Result};

/// The audit kind of a wrong secret presented for one of our keys.
const AUTH_FAILED: &str = "auth.failed";

/// Who is calling: a key of an active company, allowed the scope it was checked for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub company_id: String,
    pub rules: Arc<KeyRules>,
}

/// A key pair as a request presented it, and where from.
pub struct Credentials<'a> {
    pub key_id: &'a str,
    pub secret: &'a KeySecret,
    pub client: Option<IpAddr>,
}

/// Checks a key pair, in memory, and that the key holds `scope`. An unknown keyId and a wrong
/// secret fail alike (same error, same hashing work, no database read for either); only a
/// correct pair learns that its key is revoked, its company inactive, or its scope short.
pub fn authenticate(state: &AppState, creds: Credentials<'_>, scope: Scope) -> Result<Caller> {
    let Credentials {
        key_id,
        secret,
        client,
    } = creds;
    let now_ms = state.clock.now_ms();
    state.limits.check_ip(client, now_ms)?;
    // A keyId or secret without our checksum is nobody's: refuse it after the same hashing
    // work as a real check.
    let well_formed = is_well_formed_key_id(key_id) && secret.is_well_formed();
    // Every key is in memory (kept current by the change feed): known and unknown ids cost
    // the same, and guessing costs no database read.
    let key = if well_formed {
        state.tokens.caches.key(key_id)
    } else {
        None
    };
    let (current, previous) = match &key {
        Some(k) => (&k.secret_hash[..], k.previous.as_ref()),
        None => (&NO_KEY_HASH[..], None),
    };
    // Both comparisons always run, so timing does not tell whether a key was rolled.
    let matches_current = secret.matches(current);
    let matches_previous =
        previous.is_some_and(|(hash, until)| secret.matches(hash) & (now_ms < *until));
    let key = match key {
        Some(key) if matches_current | matches_previous => key,
        unmatched => {
            state.metrics.auth_failures.inc();
            let refusal = state.limits.failed(client, key_id, now_ms);
            // A wrong secret for one of our keys is its company's security event (a leaked
            // keyId, a guess). An unknown keyId has no company to file it under (logs and
            // metrics only), and once the keyId or address is blocked (429) the attempts are
            // no longer recorded: the per-key failure limit bounds how many rows anyone can
            // add this way.
            if let (Some(k), Error::InvalidCredentials) = (&unmatched, &refusal) {
                let event = AuditEvent {
                    at: now_ms,
                    kind: AUTH_FAILED.to_owned(),
                    outcome: refusal.code().to_owned(),
                    company_id: k.company_id.clone(),
                    key_id: Some(key_id.to_owned()),
                    client_ip: client.map(|ip| ip.to_string()),
                    detail: Some(format!("scope {}", scope.as_str())),
                    ..AuditEvent::default()
                };
                if !state.audit.try_record(event) {
                    state.metrics.audit_dropped.inc();
                }
            }
            return Err(refusal);
        }
    };
    {
        let revocations = state.tokens.revocations();
        if revocations.is_key_revoked(key_id) {
            return Err(Error::KeyRevoked);
        }
        if revocations.is_company_inactive(&key.company_id) {
            return Err(Error::CompanyInactive);
        }
    }
    if !key.policy.allows(scope) {
        return Err(Error::InsufficientScope(scope.as_str()));
    }
    Ok(Caller {
        key_id: key_id.to_owned(),
        company_id: key.company_id,
        rules: key.policy,
    })
}
