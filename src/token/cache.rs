//! Read caches for the mint path, so that minting for a known user reads no database: every
//! API key (the whole table: keys are few, and an unknown keyId must cost what a known one
//! does, with no database read to time), and bounded caches of agents, each company's default
//! agent, and users ((company, external id) ↔ user id).
//!
//! What may change is either kept out of these caches or evicted by the change feed:
//! - a key's revocation and a company's or agent's activity are read from the revocation
//!   state (`revocation`), never from here;
//! - an agent's name or default status changes through the change log, which evicts it;
//! - a user's ids never change once made; a user's token version lives in the revocation
//!   state.
//!
//! A fill that raced with an eviction (read the database before the change, stored after)
//! would bring back stale data; every fill therefore carries the eviction generation it
//! started under and is dropped if an eviction happened since.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;

use crate::db::Agent;

/// At most this many users are remembered in each direction (about 250 bytes an entry with
/// the cache's own bookkeeping), which keeps the whole server within its 64 MiB budget.
const USERS: usize = 12_000;
/// Agents are few; a table this size is only reached by abuse, and is then cleared.
const SMALL_TABLE: usize = 10_000;

#[derive(Clone, Debug)]
pub struct CachedKey {
    pub company_id: String,
    pub secret_hash: Vec<u8>,
    /// After a roll: the previous secret's hash and when it stops working (unix ms).
    pub previous: Option<(Vec<u8>, i64)>,
    pub policy: std::sync::Arc<crate::auth::KeyRules>,
}

pub struct Caches {
    generation: AtomicU64,
    keys: RwLock<HashMap<String, CachedKey>>,
    agents: RwLock<HashMap<String, Agent>>,
    /// company id → its default agent's id (None: the company has none).
    default_agents: RwLock<HashMap<String, Option<String>>>,
    /// "company\0external id" → user id.
    user_ids: Cache<String, String>,
    /// user id → external id (for `/me`).
    external_ids: Cache<String, String>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            generation: AtomicU64::new(0),
            keys: RwLock::default(),
            agents: RwLock::default(),
            default_agents: RwLock::default(),
            user_ids: Cache::new(USERS),
            external_ids: Cache::new(USERS),
        }
    }
}

fn user_key(company_id: &str, external_id: &str) -> String {
    let mut k = String::with_capacity(company_id.len() + 1 + external_id.len());
    k.push_str(company_id);
    k.push('\0');
    k.push_str(external_id);
    k
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn bounded_insert<V>(map: &mut HashMap<String, V>, key: String, value: V) {
    if map.len() >= SMALL_TABLE {
        map.clear();
    }
    map.insert(key, value);
}

impl CachedKey {
    pub fn from_row(row: &crate::db::ApiKey) -> Self {
        CachedKey {
            company_id: row.company_id.clone(),
            secret_hash: row.secret_hash.clone(),
            previous: row
                .previous_secret_hash
                .clone()
                .zip(row.previous_expires_at),
            policy: std::sync::Arc::new(crate::auth::KeyRules::from_stored(
                &row.scopes,
                row.allowed_agents.as_deref(),
                row.max_expires_in,
            )),
        }
    }
}

impl Caches {
    /// The generation a database read starts under; pass it to the `fill_…` call after.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    pub fn key(&self, key_id: &str) -> Option<CachedKey> {
        read(&self.keys).get(key_id).cloned()
    }

    /// Puts a key's current state in place (None: the key no longer exists).
    pub fn set_key(&self, key_id: &str, key: Option<CachedKey>) {
        let mut keys = write(&self.keys);
        match key {
            Some(key) => keys.insert(key_id.to_owned(), key),
            None => keys.remove(key_id),
        };
    }

    pub fn agent(&self, agent_id: &str) -> Option<Agent> {
        read(&self.agents).get(agent_id).cloned()
    }

    pub fn default_agent_id(&self, company_id: &str) -> Option<Option<String>> {
        read(&self.default_agents).get(company_id).cloned()
    }

    pub fn fill_agent(&self, agent: &Agent, generation: u64) {
        let mut agents = write(&self.agents);
        if self.current(generation) {
            bounded_insert(&mut agents, agent.id.clone(), agent.clone());
        }
    }

    pub fn fill_default_agent(&self, company_id: &str, agent_id: Option<String>, generation: u64) {
        let mut defaults = write(&self.default_agents);
        if self.current(generation) {
            bounded_insert(&mut defaults, company_id.to_owned(), agent_id);
        }
    }

    pub fn user_id(&self, company_id: &str, external_id: &str) -> Option<String> {
        self.user_ids.get(&user_key(company_id, external_id))
    }

    pub fn external_id(&self, user_id: &str) -> Option<String> {
        self.external_ids.get(user_id)
    }

    /// Users' ids never change, so no generation is needed.
    pub fn fill_user(&self, company_id: &str, external_id: &str, user_id: &str) {
        self.user_ids
            .insert(user_key(company_id, external_id), user_id.to_owned());
        self.external_ids
            .insert(user_id.to_owned(), external_id.to_owned());
    }

    /// An agent changed (name, activity, or which agent is its company's default).
    pub fn evict_agent(&self, agent_id: &str) {
        let mut agents = write(&self.agents);
        let mut defaults = write(&self.default_agents);
        self.generation.fetch_add(1, Ordering::AcqRel);
        agents.remove(agent_id);
        defaults.clear();
    }

    /// Entries held, for metrics and the memory budget.
    pub fn user_entries(&self) -> u64 {
        self.user_ids.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> Agent {
        Agent {
            id: "a1".into(),
            company_id: "c1".into(),
            name: name.into(),
            active: true,
            is_default: true,
            kind: "human".into(),
            webhook_url: None,
            webhook_disabled_at: None,
            llm_base_url: None,
            llm_model: None,
            llm_api_key_env: None,
            llm_system_prompt: None,
            llm_history: 20,
            llm_timeout_ms: 30_000,
            handoff_on_failure: true,
            created_at: 0,
        }
    }

    #[test]
    fn a_fill_that_raced_an_eviction_is_dropped() {
        let caches = Caches::default();
        let before = caches.generation();
        caches.evict_agent("a1");
        caches.fill_agent(&agent("stale"), before);
        assert!(caches.agent("a1").is_none());
        caches.fill_agent(&agent("fresh"), caches.generation());
        assert_eq!(caches.agent("a1").unwrap().name, "fresh");
    }

    #[test]
    fn evicting_an_agent_forgets_default_agents() {
        let caches = Caches::default();
        caches.fill_default_agent("c1", Some("a1".into()), caches.generation());
        assert_eq!(caches.default_agent_id("c1"), Some(Some("a1".into())));
        caches.evict_agent("a2");
        assert_eq!(caches.default_agent_id("c1"), None);
    }

    #[test]
    fn users_are_found_both_ways() {
        let caches = Caches::default();
        caches.fill_user("c1", "ext", "u1");
        assert_eq!(caches.user_id("c1", "ext").as_deref(), Some("u1"));
        assert_eq!(caches.user_id("c2", "ext"), None);
        assert_eq!(caches.external_id("u1").as_deref(), Some("ext"));
    }

    #[test]
    fn small_tables_stay_bounded() {
        let caches = Caches::default();
        let g = caches.generation();
        for i in 0..SMALL_TABLE + 5 {
            caches.fill_default_agent(&format!("c{i}"), None, g);
        }
        assert!(read(&caches.default_agents).len() <= SMALL_TABLE);
    }

    #[test]
    fn keys_are_set_and_removed() {
        let caches = Caches::default();
        let key = CachedKey {
            company_id: "c".into(),
            secret_hash: vec![1],
            previous: None,
            policy: Default::default(),
        };
        caches.set_key("k", Some(key));
        assert_eq!(caches.key("k").unwrap().secret_hash, vec![1]);
        caches.set_key("k", None);
        assert!(caches.key("k").is_none());
    }
}
