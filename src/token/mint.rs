//! Minting: a token for one of the caller's users and one of its agents.

use super::Caller;
use crate::app::AppState;
use crate::auth::api_key::random_base62;
use crate::auth::jwt::{self, Claims};
use crate::auth::{ExpiresIn, ExternalUserId};
use crate::db::{Agent, User, UserRef};
use crate::error::{Error, Result};
use crate::limits::Allowance;

pub struct Minted {
    pub token: String,
    pub jti: String,
    /// The key's remaining mint rate, for the `X-RateLimit-*` headers.
    pub allowance: Option<Allowance>,
    pub user: User,
    pub agent: Agent,
}

/// Mints a token for the company's user `external_id` and one of its agents (its default
/// agent when none is named). A new user's row is committed before this returns. The caller
/// was authenticated for the mint scope.
pub async fn mint(
    state: &AppState,
    caller: &Caller,
    external_id: &ExternalUserId,
    agent_id: Option<&str>,
    expires_in: Option<ExpiresIn>,
) -> Result<Minted> {
    let max = caller.rules.max_expires_in(state.settings.max_expires_in);
    let expires_in = match expires_in {
        None => ExpiresIn::default_within(max),
        Some(e) if e > max => {
            return Err(Error::invalid(format!(
                "expiresIn is above this API key's maximum of {} seconds",
                max.secs()
            )));
        }
        Some(e) => e,
    };
    let allowance = state.limits.mint(&caller.key_id)?;
    let agent = match agent_id {
        Some(id) => find_agent(state, &caller.company_id, id)
            .await?
            .ok_or_else(|| Error::AgentNotFound(id.to_owned()))?,
        None => default_agent(state, &caller.company_id)
            .await?
            .ok_or_else(|| {
                Error::invalid("agentId is required: this company has no default agent")
            })?,
    };
    if !caller.rules.allows_agent(&agent.id) {
        return Err(Error::AgentNotAllowed(agent.id));
    }
    if !agent.active || state.tokens.revocations().is_agent_inactive(&agent.id) {
        return Err(Error::AgentInactive(agent.id));
    }
    let now_ms = state.clock.now_ms();
    let user = user_for(state, caller, external_id, now_ms).await?;
    let iat = now_ms.div_euclid(1000);
    let keyring = state.tokens.keyring();
    let key = keyring.current();
    let claims = Claims {
        sub: user.id.clone(),
        company_id: caller.company_id.clone(),
        agent_id: agent.id.clone(),
        key_id: caller.key_id.clone(),
        ver: user.token_version,
        skid: key.id.clone(),
        iss: state.settings.issuer.clone(),
        // 22 base62 characters: 131 random bits.
        jti: random_base62(22),
        iat,
        exp: iat + expires_in.secs() as i64,
    };
    let token = jwt::sign(&claims, key);
    drop(keyring);
    state.metrics.tokens_minted.inc();
    Ok(Minted {
        token,
        jti: claims.jti,
        user,
        agent,
        allowance,
    })
}

/// The company's agent with this id, from the cache or the database.
pub async fn find_agent(
    state: &AppState,
    company_id: &str,
    agent_id: &str,
) -> Result<Option<Agent>> {
    let caches = &state.tokens.caches;
    let cached = caches.agent(agent_id);
    state.metrics.cache("agents", cached.is_some());
    if let Some(agent) = cached {
        return Ok(Some(agent).filter(|a| a.company_id == company_id));
    }
    let generation = caches.generation();
    let agent = state.db.find_agent_by_id(agent_id).await?;
    if let Some(agent) = &agent {
        caches.fill_agent(agent, generation);
    }
    Ok(agent.filter(|a| a.company_id == company_id))
}

async fn default_agent(state: &AppState, company_id: &str) -> Result<Option<Agent>> {
    let caches = &state.tokens.caches;
    let generation = caches.generation();
    let agent_id = match caches.default_agent_id(company_id) {
        Some(id) => id,
        None => {
            let agent = state.db.find_default_agent(company_id).await?;
            let id = agent.as_ref().map(|a| a.id.clone());
            caches.fill_default_agent(company_id, id.clone(), generation);
            if let Some(agent) = &agent {
                caches.fill_agent(agent, generation);
            }
            id
        }
    };
    match agent_id {
        Some(id) => find_agent(state, company_id, &id).await,
        None => Ok(None),
    }
}

/// The user for (company, external id), made on first sight. A known user costs no database
/// read: ids never change, and the token version comes from the revocation state. (Across
/// instances that state trails the database by the change feed's delay, milliseconds with
/// PostgreSQL's NOTIFY; a token minted on another instance within that window of an
/// invalidation is invalidated too, erring toward killing.)
async fn user_for(
    state: &AppState,
    caller: &Caller,
    external_id: &ExternalUserId,
    now_ms: i64,
) -> Result<User> {
    let company_id = caller.company_id.as_str();
    let caches = &state.tokens.caches;
    // An erased user's id is never minted for again: the company's id makes a new user.
    let cached = caches
        .user_id(company_id, external_id.as_str())
        .filter(|id| !state.tokens.revocations().is_user_erased(id));
    state.metrics.cache("users", cached.is_some());
    if let Some(id) = cached {
        let token_version = state.tokens.revocations().user_version(&id);
        return Ok(User {
            id,
            company_id: company_id.to_owned(),
            external_id: external_id.as_str().to_owned(),
            token_version,
            invalidated_at: None,
        });
    }
    let mut user = match state.limits.new_user_allowed(&caller.key_id, now_ms) {
        Ok(()) => {
            let new_id = new_user_id(now_ms);
            let user = state
                .db
                .upsert_user(company_id, external_id.as_str(), &new_id, now_ms)
                .await?;
            if user.id == new_id {
                state.metrics.users_created.inc();
                state.limits.new_user_created(&caller.key_id, now_ms);
            }
            user
        }
        // Over the key's daily quota of new users: known users still get tokens.
        Err(quota) => state
            .db
            .find_user(company_id, UserRef::External(external_id.as_str()))
            .await?
            .ok_or(quota)?,
    };
    caches.fill_user(company_id, &user.external_id, &user.id);
    // The database is never behind memory; memory may be behind the database.
    user.token_version = user
        .token_version
        .max(state.tokens.revocations().user_version(&user.id));
    Ok(user)
}

/// A new user's id, in CUID2's alphabet and length (a letter, then 23 lowercase letters and
/// digits): `c`, the time in milliseconds in base 36 (9 characters, enough until the year
/// 5188), then 14 random characters (72 bits). Ids made after one another sort after one
/// another, so a new user lands on the last page of the id index: random ids each dirtied a
/// page of their own in every group commit, which was the most of what SQLite's writer
/// wrote for a new user. What the time gives away is when the company first minted for the
/// user, which the company knows and the user's own token already says (`iat`).
/// (The random part comes from the thread's CSPRNG, `crate::ids`: CUID2's own maker hashes
/// with SHA3-512, a few percent of a new user's request.)
fn new_user_id(now_ms: i64) -> String {
    let mut id = [b'c'; 24];
    crate::ids::fill_base36(&mut id[1..10], now_ms.max(0) as u64);
    crate::ids::fill_random(&mut id[10..]);
    String::from_utf8(id.to_vec()).expect("base 36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::new_user_id;

    #[test]
    fn user_ids_are_cuid2_shaped_and_sort_by_time() {
        let first = new_user_id(1_764_000_000_000);
        let later = new_user_id(1_764_000_000_001);
        assert_eq!(first.len(), 24);
        assert!(cuid2::is_cuid2(&first), "{first}");
        assert!(first < later, "{first} {later}");
        assert_eq!(&first[..10], "c0midc1z40");
        assert_ne!(new_user_id(0)[10..], new_user_id(0)[10..]);
        assert!(new_user_id(36_i64.pow(9) - 1).starts_with("czzzzzzzzz"));
    }
}
