//! The one verification path for everything that accepts a token (`/me`, and the chat).

use crate::app::AppState;
use crate::auth::jwt::{self, Claims, TokenError};
use crate::db::UserRef;
use crate::error::{Error, Result};

/// Signature, issuer, times, the signing key's retirement, then the in-memory revocation
/// state. Never reads the database. If the change feed has not reached the database for too
/// long, answers 503 rather than trust a possibly stale revocation list.
pub fn verify(state: &AppState, token: &str) -> Result<Claims> {
    let max_stale_ms = i64::from(state.settings.max_staleness) * 1000;
    if state.tokens.staleness_ms(&state.clock) > max_stale_ms {
        return Err(Error::Unavailable);
    }
    let claims = {
        let keyring = state.tokens.keyring();
        let claims = jwt::decode(token, &keyring).map_err(token_error)?;
        jwt::check_claims(
            &claims,
            state.clock.now_s(),
            i64::from(state.settings.token_leeway),
            &state.settings.issuer,
        )
        .map_err(token_error)?;
        jwt::check_retirement(&claims, &keyring, state.clock.now_ms()).map_err(token_error)?;
        claims
    };
    state
        .tokens
        .revocations()
        .check(&claims)
        .map_err(Error::TokenRevoked)?;
    Ok(claims)
}

pub(super) fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::Invalid(why) => Error::TokenInvalid(why),
        TokenError::Expired => Error::TokenExpired,
        TokenError::Retired => {
            Error::TokenRevoked("the token's signing key has been retired: request a new token")
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
