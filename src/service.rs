//! The operations of the service, free of HTTP: authenticate a key pair, mint a token,
//! verify one, invalidate a user, revoke a token, introspect. HTTP handlers (and, later,
//! the chat socket) call these; they call the pure rules in `auth` and the storage in `db`.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::api_key::NO_KEY_HASH;
use crate::auth::jwt::{self, Claims, TokenError};
use crate::auth::{ExpiresIn, ExternalUserId, KeySecret};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{Agent, Db, User, UserRef};
use crate::error::{Error, Result};
use crate::sync::Live;

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub live: Arc<Live>,
    pub clock: Clock,
}

/// Who is calling: a valid, unrevoked key of an active company.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub company_id: String,
}

pub struct Minted {
    pub token: String,
    pub user: User,
    pub agent: Agent,
}

impl AppState {
    /// Loads the verification state and starts the change feed, which runs until `stop`.
    pub async fn start(
        db: Db,
        settings: Settings,
        clock: Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Self> {
        let live = crate::sync::load(&db, &clock).await?;
        crate::sync::spawn(
            db.clone(),
            live.clone(),
            clock.clone(),
            Duration::from_millis(settings.change_poll_ms.max(10)),
            stop,
        );
        Ok(AppState {
            db,
            settings: Arc::new(settings),
            live,
            clock,
        })
    }

    /// Checks a key pair. An unknown keyId and a wrong secret fail alike (same error, same
    /// hashing work); only a correct pair learns that its key is revoked or its company
    /// inactive.
    pub async fn authenticate(&self, key_id: &str, secret: &KeySecret) -> Result<Caller> {
        let key = self.db.find_api_key(key_id).await?;
        let stored_hash = key
            .as_ref()
            .map_or(&NO_KEY_HASH[..], |k| &k.secret_hash[..]);
        let matches = secret.matches(stored_hash);
        let Some(key) = key.filter(|_| matches) else {
            return Err(Error::InvalidCredentials);
        };
        if key.revoked_at.is_some() {
            return Err(Error::KeyRevoked);
        }
        if !key.company_active {
            return Err(Error::CompanyInactive);
        }
        Ok(Caller {
            key_id: key.id,
            company_id: key.company_id,
        })
    }

    /// Mints a token for the company's user `external_id` and one of its agents (its
    /// default agent when none is named). The user row is committed before this returns.
    pub async fn mint(
        &self,
        caller: &Caller,
        external_id: &ExternalUserId,
        agent_id: Option<&str>,
        expires_in: ExpiresIn,
    ) -> Result<Minted> {
        let agent = match agent_id {
            Some(id) => self
                .db
                .find_agent(&caller.company_id, id)
                .await?
                .ok_or_else(|| Error::AgentNotFound(id.to_owned()))?,
            None => self
                .db
                .find_default_agent(&caller.company_id)
                .await?
                .ok_or_else(|| {
                    Error::invalid("agentId is required: this company has no default agent")
                })?,
        };
        if !agent.active {
            return Err(Error::AgentInactive(agent.id));
        }
        let now_ms = self.clock.now_ms();
        let user = self
            .db
            .upsert_user(
                &caller.company_id,
                external_id.as_str(),
                &cuid2::create_id(),
                now_ms,
            )
            .await?;
        let iat = now_ms.div_euclid(1000);
        let keyring = self.live.keyring();
        let key = keyring.current();
        let claims = Claims {
            sub: user.id.clone(),
            company_id: caller.company_id.clone(),
            agent_id: agent.id.clone(),
            key_id: caller.key_id.clone(),
            ver: user.token_version,
            skid: key.id.clone(),
            iss: self.settings.issuer.clone(),
            jti: cuid2::create_id(),
            iat,
            exp: iat + expires_in.secs() as i64,
        };
        let token = jwt::sign(&claims, key);
        drop(keyring);
        Ok(Minted { token, user, agent })
    }

    /// The one verification path for every endpoint that accepts a token: signature, issuer,
    /// times, then the in-memory revocation state. Never reads the database. If the change
    /// feed has not reached the database for too long, answers 503 rather than trust a
    /// possibly stale revocation list.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let max_stale_ms = i64::from(self.settings.max_staleness) * 1000;
        if self.live.staleness_ms(&self.clock) > max_stale_ms {
            return Err(Error::Unavailable);
        }
        let claims = jwt::decode(token, &self.live.keyring()).map_err(token_error)?;
        jwt::check_claims(
            &claims,
            self.clock.now_s(),
            i64::from(self.settings.token_leeway),
            &self.settings.issuer,
        )
        .map_err(token_error)?;
        self.live
            .revocations()
            .check(&claims)
            .map_err(Error::TokenRevoked)?;
        Ok(claims)
    }

    /// Invalidates every token the caller's user holds now.
    pub async fn invalidate(&self, caller: &Caller, user: UserRef<'_>) -> Result<User> {
        let user = self
            .db
            .invalidate_user(&caller.company_id, user, self.clock.now_ms())
            .await?
            // The same answer for another company's user as for an id nobody has.
            .ok_or_else(|| Error::NotFound("no such user in this company".to_owned()))?;
        // This instance applies it before answering; the others through the change feed.
        self.live
            .revocations_mut()
            .set_user_version(&user.id, user.token_version);
        Ok(user)
    }

    /// Revokes one token of the caller's company. Its signature must be ours; it may have
    /// expired already.
    pub async fn revoke(&self, caller: &Caller, token: &str) -> Result<Claims> {
        let claims = jwt::decode(token, &self.live.keyring())
            .ok()
            .filter(|c| c.company_id == caller.company_id)
            // Garbage and another company's token answer alike.
            .ok_or_else(|| Error::invalid("token is not a token of this company"))?;
        self.db
            .revoke_token(
                &claims.jti,
                &claims.company_id,
                claims.exp,
                self.clock.now_ms(),
            )
            .await?;
        if claims.exp >= self.clock.now_s() {
            self.live
                .revocations_mut()
                .set_token_revoked(&claims.jti, Some(claims.exp));
        }
        Ok(claims)
    }

    /// RFC 7662 introspection: the claims of an active token of the caller's company, or
    /// None for anything else (expired, revoked, forged, another company's).
    pub fn introspect(&self, caller: &Caller, token: &str) -> Result<Option<Claims>> {
        match self.verify(token) {
            Ok(claims) if claims.company_id == caller.company_id => Ok(Some(claims)),
            Ok(_) | Err(Error::TokenInvalid(_) | Error::TokenExpired | Error::TokenRevoked(_)) => {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }
}

fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::Invalid(why) => Error::TokenInvalid(why),
        TokenError::Expired => Error::TokenExpired,
    }
}
