//! The operations of the service, free of HTTP: authenticate a key pair, mint a token,
//! verify one, invalidate a user, revoke a token, introspect. HTTP handlers (and, later,
//! the chat socket) call these; they call the pure rules in `auth` and the storage in `db`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditLog, AuditWriter};
use crate::auth::api_key::is_well_formed_key_id;
use crate::auth::api_key::{NO_KEY_HASH, random_base62};
use crate::auth::jwt::{self, Claims, TokenError};
use crate::auth::{ExpiresIn, ExternalUserId, KeyRules, KeySecret, Scope};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{Agent, Db, User, UserRef};
use crate::error::{Error, Result};
use crate::limits::{Allowance, Limits};
use crate::metrics::{Metrics, NameLabels};
use crate::sync::Live;

/// Everything a request needs. Cloned several times per request (extractors, middleware),
/// so it is one `Arc`: a clone is one atomic increment, where a struct of ten `Arc`s cost ten
/// contended ones (8 % of the CPU of a `/me` request in a profile).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub live: Arc<Live>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub limits: Arc<Limits>,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Who is calling: a valid, unrevoked key of an active company.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub company_id: String,
    pub rules: Arc<KeyRules>,
}

impl Caller {
    /// Refuses (403 `insufficient_scope`) a key without `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.rules.allows(scope) {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope.as_str()))
        }
    }
}

pub struct Minted {
    pub token: String,
    pub jti: String,
    /// The key's remaining mint rate, for the `X-RateLimit-*` headers.
    pub allowance: Option<Allowance>,
    pub user: User,
    pub agent: Agent,
}

impl AppState {
    /// Loads the verification state and starts the change feed, which runs until `stop`.
    /// Loads the verification state and starts the change feed (until `stop`) and the
    /// audit writer (until every `AppState` is dropped; then `AuditWriter::close` flushes it).
    pub async fn start(
        db: Db,
        settings: Settings,
        clock: Clock,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(Self, AuditWriter)> {
        let live = crate::sync::load(&db, &clock).await?;
        crate::sync::spawn(
            db.clone(),
            live.clone(),
            clock.clone(),
            crate::sync::FeedSettings {
                poll: Duration::from_millis(settings.change_poll_ms.max(10)),
                audit_retention_ms: settings.audit_retention.as_millis() as i64,
            },
            stop,
        );
        let metrics = Arc::new(Metrics::default());
        let (audit, writer) = AuditLog::start(db.clone(), metrics.clone());
        let limits = Arc::new(Limits::new(settings.limits()));
        let state = AppState(Arc::new(AppInner {
            db,
            settings: Arc::new(settings),
            live,
            clock,
            metrics,
            audit,
            limits,
        }));
        Ok((state, writer))
    }

    /// Readiness: the database answers and the change feed is current.
    pub async fn ready(&self) -> Result<()> {
        let max_stale_ms = i64::from(self.settings.max_staleness) * 1000;
        if self.live.staleness_ms(&self.clock) > max_stale_ms {
            return Err(Error::Unavailable);
        }
        match tokio::time::timeout(Duration::from_secs(2), self.db.ping()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable),
        }
    }

    /// Refreshes the gauges that are read rather than counted, then renders every metric.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.cache_entries
            .get_or_create(&NameLabels { name: "users" })
            .set(self.live.caches.user_entries() as i64);
        m.cache_entries
            .get_or_create(&NameLabels {
                name: "revoked_tokens",
            })
            .set(self.live.revocations().revoked_token_count() as i64);
        for (name, size, idle) in self.db.pool_stats() {
            m.db_pool_connections
                .get_or_create(&NameLabels { name })
                .set(size as i64);
            m.db_pool_idle
                .get_or_create(&NameLabels { name })
                .set(idle as i64);
        }
        m.change_feed_lag_ms
            .set(self.live.staleness_ms(&self.clock));
        m.change_feed_seq.set(self.live.seq());
        m.render()
    }

    /// Checks a key pair, in memory. An unknown keyId and a wrong secret fail alike (same
    /// error, same hashing work, no database read for either); only a correct pair learns that
    /// its key is revoked or its company inactive.
    pub fn authenticate(
        &self,
        key_id: &str,
        secret: &KeySecret,
        client: Option<IpAddr>,
    ) -> Result<Caller> {
        let now_ms = self.clock.now_ms();
        self.limits.check_ip(client, now_ms)?;
        // A keyId or secret without our checksum is nobody's: refuse it after the same
        // hashing work as a real check.
        let well_formed = is_well_formed_key_id(key_id) && secret.is_well_formed();
        // Every key is in memory (kept current by the change feed): known and unknown ids
        // cost the same, and guessing costs no database read.
        let key = if well_formed {
            self.live.caches.key(key_id)
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
        let Some(key) = key.filter(|_| matches_current | matches_previous) else {
            self.metrics.auth_failures.inc();
            return Err(self.limits.failed(client, key_id, now_ms));
        };
        {
            let revocations = self.live.revocations();
            if revocations.is_key_revoked(key_id) {
                return Err(Error::KeyRevoked);
            }
            if revocations.is_company_inactive(&key.company_id) {
                return Err(Error::CompanyInactive);
            }
        }
        Ok(Caller {
            key_id: key_id.to_owned(),
            company_id: key.company_id,
            rules: key.policy,
        })
    }

    /// The company's agent with this id, from the cache or the database.
    pub async fn find_agent(&self, company_id: &str, agent_id: &str) -> Result<Option<Agent>> {
        let caches = &self.live.caches;
        let cached = caches.agent(agent_id);
        self.metrics.cache("agents", cached.is_some());
        if let Some(agent) = cached {
            return Ok(Some(agent).filter(|a| a.company_id == company_id));
        }
        let generation = caches.generation();
        let agent = self.db.find_agent_by_id(agent_id).await?;
        if let Some(agent) = &agent {
            caches.fill_agent(agent, generation);
        }
        Ok(agent.filter(|a| a.company_id == company_id))
    }

    async fn default_agent(&self, company_id: &str) -> Result<Option<Agent>> {
        let caches = &self.live.caches;
        let generation = caches.generation();
        let agent_id = match caches.default_agent_id(company_id) {
            Some(id) => id,
            None => {
                let agent = self.db.find_default_agent(company_id).await?;
                let id = agent.as_ref().map(|a| a.id.clone());
                caches.fill_default_agent(company_id, id.clone(), generation);
                if let Some(agent) = &agent {
                    caches.fill_agent(agent, generation);
                }
                id
            }
        };
        match agent_id {
            Some(id) => self.find_agent(company_id, &id).await,
            None => Ok(None),
        }
    }

    /// Mints a token for the company's user `external_id` and one of its agents (its
    /// default agent when none is named). A new user's row is committed before this returns.
    pub async fn mint(
        &self,
        caller: &Caller,
        external_id: &ExternalUserId,
        agent_id: Option<&str>,
        expires_in: Option<ExpiresIn>,
    ) -> Result<Minted> {
        caller.require(Scope::Mint)?;
        let max = caller.rules.max_expires_in(self.settings.max_expires_in);
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
        let allowance = self.limits.mint(&caller.key_id)?;
        let agent = match agent_id {
            Some(id) => self
                .find_agent(&caller.company_id, id)
                .await?
                .ok_or_else(|| Error::AgentNotFound(id.to_owned()))?,
            None => self
                .default_agent(&caller.company_id)
                .await?
                .ok_or_else(|| {
                    Error::invalid("agentId is required: this company has no default agent")
                })?,
        };
        if !caller.rules.allows_agent(&agent.id) {
            return Err(Error::AgentNotAllowed(agent.id));
        }
        if !agent.active || self.live.revocations().is_agent_inactive(&agent.id) {
            return Err(Error::AgentInactive(agent.id));
        }
        let now_ms = self.clock.now_ms();
        let user = self.user_for(caller, external_id, now_ms).await?;
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
            // 22 base62 characters: 131 random bits.
            jti: random_base62(22),
            iat,
            exp: iat + expires_in.secs() as i64,
        };
        let token = jwt::sign(&claims, key);
        drop(keyring);
        self.metrics.tokens_minted.inc();
        Ok(Minted {
            token,
            jti: claims.jti,
            user,
            agent,
            allowance,
        })
    }

    /// The user for (company, external id), made on first sight. A known user costs no
    /// database read: ids never change, and the token version comes from the revocation
    /// state. (Across instances that state trails the database by the change feed's delay,
    /// milliseconds with PostgreSQL's NOTIFY; a token minted on another instance within
    /// that window of an invalidation is invalidated too, erring toward killing.)
    async fn user_for(
        &self,
        caller: &Caller,
        external_id: &ExternalUserId,
        now_ms: i64,
    ) -> Result<User> {
        let company_id = caller.company_id.as_str();
        let caches = &self.live.caches;
        let cached = caches.user_id(company_id, external_id.as_str());
        self.metrics.cache("users", cached.is_some());
        if let Some(id) = cached {
            let token_version = self.live.revocations().user_version(&id);
            return Ok(User {
                id,
                company_id: company_id.to_owned(),
                external_id: external_id.as_str().to_owned(),
                token_version,
                invalidated_at: None,
            });
        }
        let mut user = match self.limits.new_user_allowed(&caller.key_id, now_ms) {
            Ok(()) => {
                let new_id = cuid2::create_id();
                let user = self
                    .db
                    .upsert_user(company_id, external_id.as_str(), &new_id, now_ms)
                    .await?;
                if user.id == new_id {
                    self.metrics.users_created.inc();
                    self.limits.new_user_created(&caller.key_id, now_ms);
                }
                user
            }
            // Over the key's daily quota of new users: known users still get tokens.
            Err(quota) => self
                .db
                .find_user(company_id, UserRef::External(external_id.as_str()))
                .await?
                .ok_or(quota)?,
        };
        caches.fill_user(company_id, &user.external_id, &user.id);
        // The database is never behind memory; memory may be behind the database.
        user.token_version = user
            .token_version
            .max(self.live.revocations().user_version(&user.id));
        Ok(user)
    }

    /// The external id of a user, for `/me`.
    pub async fn external_id(&self, company_id: &str, user_id: &str) -> Result<Option<String>> {
        if let Some(ext) = self.live.caches.external_id(user_id) {
            return Ok(Some(ext));
        }
        let user = self.db.find_user(company_id, UserRef::Id(user_id)).await?;
        if let Some(u) = &user {
            self.live
                .caches
                .fill_user(company_id, &u.external_id, &u.id);
        }
        Ok(user.map(|u| u.external_id))
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
        self.metrics.invalidations.inc();
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
        self.metrics.revocations.inc();
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
