//! What a company's backend does with tokens it minted: invalidate a user's, revoke one,
//! introspect one. The caller was authenticated for the manage scope.

use super::{Caller, verify};
use crate::app::AppState;
use crate::auth::jwt::{self, Claims};
use crate::db::{User, UserRef};
use crate::error::{Error, Result};

/// Invalidates every token the caller's user holds now.
pub async fn invalidate(state: &AppState, caller: &Caller, user: UserRef<'_>) -> Result<User> {
    let user = state
        .db
        .invalidate_user(&caller.company_id, user, state.clock.now_ms())
        .await?
        // The same answer for another company's user as for an id nobody has.
        .ok_or_else(|| Error::NotFound("no such user in this company".to_owned()))?;
    state.metrics.invalidations.inc();
    // This instance applies it before answering; the others through the change feed.
    state.tokens.set_user_version(&user.id, user.token_version);
    Ok(user)
}

/// Revokes one token of the caller's company. Its signature must be ours; it may have
/// expired already.
pub async fn revoke(state: &AppState, caller: &Caller, token: &str) -> Result<Claims> {
    let claims = jwt::decode(token, &state.tokens.keyring())
        .ok()
        .filter(|c| c.company_id == caller.company_id)
        // Garbage and another company's token answer alike.
        .ok_or_else(|| Error::invalid("token is not a token of this company"))?;
    state
        .db
        .revoke_token(
            &claims.jti,
            &claims.company_id,
            claims.exp,
            state.clock.now_ms(),
        )
        .await?;
    state.metrics.revocations.inc();
    if claims.exp >= state.clock.now_s() {
        state
            .tokens
            .set_token_revoked(&claims.jti, Some(claims.exp));
    }
    Ok(claims)
}

/// RFC 7662 introspection: the claims of an active token of the caller's company, or None
/// for anything else (expired, revoked, forged, another company's).
pub fn introspect(state: &AppState, caller: &Caller, token: &str) -> Result<Option<Claims>> {
    match verify(state, token) {
        Ok(claims) if claims.company_id == caller.company_id => Ok(Some(claims)),
        Ok(_) | Err(Error::TokenInvalid(_) | Error::TokenExpired | Error::TokenRevoked(_)) => {
            Ok(None)
        }
        Err(other) => Err(other),
    }
}
