//! The one verification path for everything that accepts a token (`/me`, the chat's REST
//! calls and sockets). A socket checks its token again whenever something changes, through
//! [`check_alive`].

use crate::app::AppState;
use crate::auth::jwt::{self, Claims, TokenError};
use crate::db::UserRef;
use crate::error::{Error, Result};

/// Why a token is not (or no longer) accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// Forged, malformed, another issuer's, issued in the future.
    Invalid(&'static str),
    Expired,
    /// The token itself: its user was invalidated, it was revoked, its signing key retired.
    /// A new token may be asked for.
    Revoked(&'static str),
    /// What stands behind it: its key was revoked, its agent or company deactivated.
    AccessRevoked(&'static str),
    /// The verification state is too stale to trust (the database is unreachable).
    Unavailable,
}

impl From<Death> for Error {
    fn from(d: Death) -> Error {
        match d {
            Death::Invalid(why) => Error::TokenInvalid(why),
            Death::Expired => Error::TokenExpired,
            Death::Revoked(why) | Death::AccessRevoked(why) => Error::TokenRevoked(why),
            Death::Unavailable => Error::Unavailable,
        }
    }
}

/// Signature, issuer, times, the signing key's retirement, then the in-memory revocation
/// state. Never reads the database. If the change feed has not reached the database for too
/// long, answers 503 rather than trust a possibly stale revocation list.
pub fn verify(state: &AppState, token: &str) -> Result<Claims> {
    let claims = decode(state, token)?;
    check_alive(state, &claims)?;
    Ok(claims)
}

/// The claims of a token this server signed, or why not; says nothing yet about time or
/// revocation.
pub fn decode(state: &AppState, token: &str) -> Result<Claims, Death> {
    jwt::decode(token, &state.tokens.keyring()).map_err(death)
}

/// Whether the claims of an authentic token are accepted now.
pub fn check_alive(state: &AppState, claims: &Claims) -> Result<(), Death> {
    if state.verification_stale() {
        return Err(Death::Unavailable);
    }
    jwt::check_claims(
        claims,
        state.clock.now_s(),
        i64::from(state.settings.token_leeway),
        &state.settings.issuer,
    )
    .map_err(death)?;
    jwt::check_retirement(claims, &state.tokens.keyring(), state.clock.now_ms()).map_err(death)?;
    state.tokens.revocations().check(claims).map_err(|r| {
        if r.access {
            Death::AccessRevoked(r.why)
        } else {
            Death::Revoked(r.why)
        }
    })
}

fn death(e: TokenError) -> Death {
    match e {
        TokenError::Invalid(why) => Death::Invalid(why),
        TokenError::Expired => Death::Expired,
        TokenError::Retired => {
            Death::Revoked("the token's signing key has been retired: request a new token")
        }
    }
}

/// The external id of a user, for `/me`.
pub async fn external_id(
    state: &AppState,
    company_id: &str,
    user_id: &str,
) -> Result<Option<String>> {
    let caches = &state.tokens.caches;
    if let Some(ext) = caches.external_id(user_id) {
        return Ok(Some(ext));
    }
    let user = state.db.find_user(company_id, UserRef::Id(user_id)).await?;
    if let Some(u) = &user {
        caches.fill_user(company_id, &u.external_id, &u.id);
    }
    Ok(user.map(|u| u.external_id))
}
