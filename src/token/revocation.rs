//! The revocation rules over plain data: invalidated users' token versions, revoked jtis,
//! revoked keys, inactive agents and companies. Loaded from a [`Snapshot`] at start; changed
//! only through [`TokenState`](super::TokenState), which announces each change.

use std::collections::{HashMap, HashSet};

use crate::auth::jwt::Claims;
use crate::db::Snapshot;

/// Why a token is dead: `access` when what stands behind it is gone (its key, agent or
/// company), so that a new token would not help; otherwise the token itself (its user was
/// invalidated, or it was revoked), and a new one may be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub why: &'static str,
    pub access: bool,
}

#[derive(Debug, Default)]
pub struct Revocations {
    /// Only users that were ever invalidated; everyone else is at version 0.
    user_versions: HashMap<String, i64>,
    /// jti → exp, dropped once past exp.
    revoked_tokens: HashMap<String, i64>,
    revoked_keys: HashSet<String>,
    inactive_agents: HashSet<String>,
    inactive_companies: HashSet<String>,
}

impl Revocations {
    pub fn from_snapshot(s: &Snapshot) -> Self {
        Revocations {
            user_versions: s.user_versions.iter().cloned().collect(),
            revoked_tokens: s.revoked_tokens.iter().cloned().collect(),
            revoked_keys: s.revoked_keys.iter().cloned().collect(),
            inactive_agents: s.inactive_agents.iter().cloned().collect(),
            inactive_companies: s.inactive_companies.iter().cloned().collect(),
        }
    }

    /// Why this (authentic, unexpired) token must no longer be accepted, if it must not.
    pub fn check(&self, c: &Claims) -> Result<(), Revoked> {
        let access = |why| Err(Revoked { why, access: true });
        let token = |why| Err(Revoked { why, access: false });
        if self.inactive_companies.contains(&c.company_id) {
            return access("the token's company is inactive");
        }
        if self.revoked_keys.contains(&c.key_id) {
            return access("the API key that minted this token has been revoked");
        }
        if self.inactive_agents.contains(&c.agent_id) {
            return access("the token's agent is inactive");
        }
        match self.user_versions.get(&c.sub) {
            Some(&crate::db::ERASED) => return token("the user has been erased"),
            Some(&v) if c.ver < v => return token("the user's tokens have been invalidated"),
            _ => {}
        }
        if self.revoked_tokens.contains_key(&c.jti) {
            return token("this token has been revoked");
        }
        Ok(())
    }

    /// Whether the user was erased (their id must not be minted for again).
    pub fn is_user_erased(&self, user_id: &str) -> bool {
        self.user_versions.get(user_id) == Some(&crate::db::ERASED)
    }

    /// The user's current token version (0 if never invalidated).
    pub fn user_version(&self, user_id: &str) -> i64 {
        self.user_versions.get(user_id).copied().unwrap_or(0)
    }

    pub fn is_token_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains_key(jti)
    }

    pub fn is_key_revoked(&self, key_id: &str) -> bool {
        self.revoked_keys.contains(key_id)
    }

    pub fn is_agent_inactive(&self, agent_id: &str) -> bool {
        self.inactive_agents.contains(agent_id)
    }

    pub fn is_company_inactive(&self, company_id: &str) -> bool {
        self.inactive_companies.contains(company_id)
    }

    pub fn set_user_version(&mut self, user_id: &str, version: i64) {
        if version > 0 {
            self.user_versions.insert(user_id.to_owned(), version);
        } else {
            self.user_versions.remove(user_id);
        }
    }

    pub fn set_token_revoked(&mut self, jti: &str, exp: Option<i64>) {
        match exp {
            Some(exp) => self.revoked_tokens.insert(jti.to_owned(), exp),
            None => self.revoked_tokens.remove(jti),
        };
    }

    pub fn set_key_revoked(&mut self, key_id: &str, revoked: bool) {
        toggle(&mut self.revoked_keys, key_id, revoked);
    }

    pub fn set_agent_inactive(&mut self, agent_id: &str, inactive: bool) {
        toggle(&mut self.inactive_agents, agent_id, inactive);
    }

    pub fn set_company_inactive(&mut self, company_id: &str, inactive: bool) {
        toggle(&mut self.inactive_companies, company_id, inactive);
    }

    /// Drops revoked tokens that have expired anyway: they fail on `exp` now.
    pub fn purge_expired(&mut self, now_s: i64) {
        self.revoked_tokens.retain(|_, exp| *exp >= now_s);
    }

    pub fn revoked_token_count(&self) -> usize {
        self.revoked_tokens.len()
    }
}

fn toggle(set: &mut HashSet<String>, id: &str, on: bool) {
    if on {
        set.insert(id.to_owned());
    } else {
        set.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            company_id: "c1".into(),
            agent_id: "a1".into(),
            key_id: "pk_1".into(),
            ver: 1,
            skid: "sk1".into(),
            iss: "performchat".into(),
            jti: "j1".into(),
            iat: 100,
            exp: 200,
        }
    }

    #[test]
    fn each_precondition_kills_the_token_and_lifting_it_revives_it() {
        let mut r = Revocations::default();
        let c = claims();
        assert_eq!(r.check(&c), Ok(()));

        r.set_company_inactive("c1", true);
        let e = r.check(&c).unwrap_err();
        assert!(e.why.contains("company") && e.access);
        r.set_company_inactive("c1", false);

        r.set_agent_inactive("a1", true);
        let e = r.check(&c).unwrap_err();
        assert!(e.why.contains("agent") && e.access);
        r.set_agent_inactive("a1", false);

        r.set_key_revoked("pk_1", true);
        let e = r.check(&c).unwrap_err();
        assert!(e.why.contains("API key") && e.access);
        r.set_key_revoked("pk_1", false);

        r.set_token_revoked("j1", Some(200));
        let e = r.check(&c).unwrap_err();
        assert!(e.why.contains("revoked") && !e.access);
        r.set_token_revoked("j1", None);

        assert_eq!(r.check(&c), Ok(()));
    }

    #[test]
    fn invalidation_kills_older_versions_only() {
        let mut r = Revocations::default();
        r.set_user_version("u1", 2);
        let mut c = claims();
        c.ver = 1;
        assert!(r.check(&c).is_err());
        c.ver = 2;
        assert_eq!(r.check(&c), Ok(()));
    }

    #[test]
    fn expired_revocations_are_dropped() {
        let mut r = Revocations::default();
        r.set_token_revoked("old", Some(100));
        r.set_token_revoked("new", Some(300));
        r.purge_expired(200);
        assert_eq!(r.revoked_token_count(), 1);
    }
}
