//! Rate limits of the key endpoints (governor's GCRA, in memory, per instance):
//! - minting, per keyId (`--mint-rate` per second, `--mint-burst`);
//! - failed authentications, per client and per keyId (`--auth-failures-per-minute`).
//!   Past the limit a block starts, doubling with each repeat (1 s, 2 s, 4 s … 15 min): a
//!   blocked client gets 429 on every key endpoint; a blocked keyId gets 429 instead of 401 for
//!   wrong secrets only, so nobody can lock a company out by guessing at its keyId;
//! - optionally, distinct new users per key per UTC day (`--new-users-per-key-per-day`), so a
//!   leaked key cannot flood the user table.
//!
//! A client is an IPv4 address or an IPv6 /64: one host is commonly handed a whole /64, and
//! counting its addresses one by one would give it 2^64 budgets. `::ffff:a.b.c.d` counts as
//! `a.b.c.d`.
//!
//! Every table (the three limiters' GCRA state, both block tables, the new-user counts) is an
//! LRU cache of fixed capacity, about 3 MiB of entries when all are full: a flood of new
//! clients or keyIds evicts the least recently seen entries one at a time and memory stays
//! flat. Eviction hands a flood nothing it does not already have: pushing out one entry takes
//! as many fresh clients (or keyIds) as the table holds, each with a full budget of its own.
//! A blocked client that keeps knocking stays recent and keeps its block. `housekeeping`
//! drops idle entries sooner.

use std::hash::{Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use lru::LruCache;

use crate::auth::api_key::is_well_formed_key_id;
use crate::error::Error;

type Keyed<K> = RateLimiter<K, Lru<K, Nanos>, DefaultClock, StateInformationMiddleware>;

const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
/// Offences are forgotten after this long without one.
const STRIKES_FORGOTTEN_AFTER_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 86_400_000;

// Capacities are 7/16 of a power of two: a full cache swaps an entry on every insert, and
// hashbrown grows its table until the entries fill at most half of it (load factor 7/8), so 7/16
// is the most one table size holds for good. Per entry: a list node (48–64 B), a table slot
// (~39 B at that load) and, for a keyId, its 33 bytes on the heap: 90–145 B; all six tables
// full hold ~3 MiB (resident figures: benches/limits.rs).
/// Clients (IPv4 addresses, IPv6 /64s) in the failure limiter, and in the block table.
const CLIENTS: usize = 7_168;
/// KeyIds in each of the mint limiter, the failure limiter, the block table and the new-user
/// counts.
const KEY_IDS: usize = 3_584;
/// Chat users in the send limiter.
const CHAT_USERS: usize = 14_336;

#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Tokens per second per keyId; 0 turns the limit off.
    pub mint_rate: u32,
    pub mint_burst: u32,
    /// Failed authentications per minute per client and per keyId; 0 turns it off.
    pub auth_failures_per_minute: u32,
    /// Distinct new users per key per UTC day; 0 (the default) turns it off.
    pub new_users_per_key_per_day: u64,
    /// Chat messages per second per end user, and the burst above it; 0 turns it off.
    pub chat_send_rate: u32,
    pub chat_send_burst: u32,
}

/// The answer to an allowed mint: what to put in the `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    until_ms: i64,
    strikes: u32,
    last_ms: i64,
}

/// A bounded table: at capacity, an insert evicts the least recently seen entry. SipHash
/// (std's `RandomState`), as the keys are chosen by clients.
struct Lru<K, V>(Mutex<LruCache<K, V, RandomState>>);

impl<K: Hash + Eq, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).expect("a table holds at least one entry");
        // Made empty and then bounded, so that a table takes memory as it fills rather than
        // all of it up front (`LruCache::with_hasher` reserves room for every entry).
        let mut table = LruCache::unbounded_with_hasher(RandomState::new());
        table.resize(capacity);
        Lru(Mutex::new(table))
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<K, V, RandomState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// governor's GCRA state (a theoretical arrival time per key) in a bounded table; governor's
/// own keyed stores grow with every key ever seen.
impl<K: Hash + Eq + Clone> StateStore for Lru<K, Nanos> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut table = self.lock();
        // A refused attempt counts as seen too: `get_mut` moves the key to the front.
        match table.get_mut(key) {
            Some(tat) => {
                let (outcome, next) = f(Some(*tat))?;
                *tat = next;
                Ok(outcome)
            }
            None => {
                let (outcome, next) = f(None)?;
                table.put(key.clone(), next);
                Ok(outcome)
            }
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Lru<K, Nanos> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.lock().retain(|_, tat| *tat > drop_below);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

pub struct Limits {
    settings: LimitSettings,
    mint: Option<Keyed<String>>,
    chat_send: Option<Keyed<String>>,
    failures_by_ip: Option<Keyed<IpAddr>>,
    failures_by_key: Option<Keyed<String>>,
    blocked_ips: Lru<IpAddr, Block>,
    blocked_keys: Lru<String, Block>,
    /// keyId → (UTC day number, new users created that day).
    new_users: Lru<String, (i64, u64)>,
}

fn quota(per: Duration, count: u32, burst: u32) -> Option<Quota> {
    let count = NonZeroU32::new(count)?;
    let burst = NonZeroU32::new(burst.max(1))?;
    Quota::with_period(per / count.get()).map(|q| q.allow_burst(burst))
}

fn keyed<K: Hash + Eq + Clone>(q: Option<Quota>, capacity: usize) -> Option<Keyed<K>> {
    q.map(|q| Keyed::new(q, Lru::new(capacity), DefaultClock::default()))
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// What a client is counted as: its IPv4 address, or its IPv6 /64.
fn client(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

fn day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self::with_capacities(settings, CLIENTS, KEY_IDS)
    }

    fn with_capacities(settings: LimitSettings, clients: usize, key_ids: usize) -> Self {
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        let failures = settings.auth_failures_per_minute;
        Limits {
            settings,
            mint: keyed(
                quota(second, settings.mint_rate, settings.mint_burst),
                key_ids,
            ),
            chat_send: keyed(
                quota(second, settings.chat_send_rate, settings.chat_send_burst),
                CHAT_USERS,
            ),
            failures_by_ip: keyed(quota(minute, failures, failures), clients),
            failures_by_key: keyed(quota(minute, failures, failures), key_ids),
            blocked_ips: Lru::new(clients),
            blocked_keys: Lru::new(key_ids),
            new_users: Lru::new(key_ids),
        }
    }

    /// Refuses a request from a client that is blocked for failed authentications.
    pub fn check_ip(&self, ip: Option<IpAddr>, now_ms: i64) -> Result<(), Error> {
        let Some(ip) = ip else { return Ok(()) };
        blocked(&self.blocked_ips, &client(ip), now_ms)
    }

    /// Records a failed authentication. Returns the error to answer: 401 normally, 429 once
    /// the client or the keyId is over its limit.
    pub fn failed(&self, ip: Option<IpAddr>, key_id: &str, now_ms: i64) -> Error {
        let mut limited = None;
        if let (Some(ip), Some(lim)) = (ip.map(client), &self.failures_by_ip)
            && lim.check_key(&ip).is_err()
        {
            limited = Some(strike(&self.blocked_ips, ip, now_ms));
        }
        // Only ids of our shape are tracked, so only they can be blocked: random guesses must
        // not crowd out real ones.
        if let Some(lim) = &self.failures_by_key
            && is_well_formed_key_id(key_id)
        {
            let key_id = key_id.to_owned();
            if lim.check_key(&key_id).is_err() {
                let e = strike(&self.blocked_keys, key_id, now_ms);
                limited.get_or_insert(e);
            } else if limited.is_none() {
                // A keyId still inside its block answers 429 to wrong secrets.
                limited = blocked(&self.blocked_keys, &key_id, now_ms).err();
            }
        }
        limited.unwrap_or(Error::InvalidCredentials)
    }

    /// Counts one mint against the key's rate.
    pub fn mint(&self, key_id: &str) -> Result<Option<Allowance>, Error> {
        let Some(lim) = &self.mint else {
            return Ok(None);
        };
        match lim.check_key(&key_id.to_owned()) {
            Ok(snapshot) => Ok(Some(Allowance {
                limit: self.settings.mint_rate,
                remaining: snapshot.remaining_burst_capacity(),
            })),
            Err(not_until) => Err(Error::RateLimited {
                message: "this API key mints too many tokens per second: slow down",
                retry_after_s: retry_after(not_until.wait_time_from(DefaultClock::default().now())),
            }),
        }
    }

    /// Counts one chat message of an end user against their rate; the wait when over it.
    pub fn chat_send(&self, user_id: &str) -> Result<(), Duration> {
        let Some(lim) = &self.chat_send else {
            return Ok(());
        };
        lim.check_key(&user_id.to_owned())
            .map(|_| ())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Whether the key may create one more new user today.
    pub fn new_user_allowed(&self, key_id: &str, now_ms: i64) -> Result<(), Error> {
        let quota = self.settings.new_users_per_key_per_day;
        if quota == 0 {
            return Ok(());
        }
        let today = day(now_ms);
        let created = match self.new_users.lock().get(key_id) {
            Some(&(d, n)) if d == today => n,
            _ => 0,
        };
        if created >= quota {
            let until_midnight_ms = (today + 1) * DAY_MS - now_ms;
            return Err(Error::RateLimited {
                message: "this API key has created its daily quota of new users",
                retry_after_s: retry_after(Duration::from_millis(until_midnight_ms.max(0) as u64)),
            });
        }
        Ok(())
    }

    pub fn new_user_created(&self, key_id: &str, now_ms: i64) {
        if self.settings.new_users_per_key_per_day == 0 {
            return;
        }
        let today = day(now_ms);
        let mut counts = self.new_users.lock();
        let count = counts.get_or_insert_mut_ref(key_id, || (today, 0));
        if count.0 != today {
            *count = (today, 0);
        }
        count.1 += 1;
    }

    /// Forgets idle state: GCRA state indistinguishable from a fresh start (by governor's
    /// clock), strikes an hour old, new-user counts of other days. Called periodically.
    pub fn housekeeping(&self, now_ms: i64) {
        for lim in [&self.mint, &self.failures_by_key, &self.chat_send]
            .into_iter()
            .flatten()
        {
            lim.retain_recent();
        }
        if let Some(lim) = &self.failures_by_ip {
            lim.retain_recent();
        }
        let remembered = |b: &mut Block| now_ms - b.last_ms < STRIKES_FORGOTTEN_AFTER_MS;
        self.blocked_ips.lock().retain(|_, b| remembered(b));
        self.blocked_keys.lock().retain(|_, b| remembered(b));
        let today = day(now_ms);
        self.new_users.lock().retain(|_, (d, _)| *d == today);
    }

    /// Entries held across all tables.
    pub fn tracked(&self) -> usize {
        let limiters: usize = [&self.mint, &self.failures_by_key, &self.chat_send]
            .into_iter()
            .flatten()
            .map(|lim| lim.len())
            .chain(self.failures_by_ip.as_ref().map(|lim| lim.len()))
            .sum();
        limiters
            + self.blocked_ips.lock().len()
            + self.blocked_keys.lock().len()
            + self.new_users.lock().len()
    }
}

fn blocked<K: Hash + Eq>(table: &Lru<K, Block>, key: &K, now_ms: i64) -> Result<(), Error> {
    match table.lock().get(key) {
        Some(b) if b.until_ms > now_ms => Err(too_many_failures(b.until_ms - now_ms)),
        _ => Ok(()),
    }
}

/// Starts (or lengthens) a block: each strike doubles it.
fn strike<K: Hash + Eq>(table: &Lru<K, Block>, key: K, now_ms: i64) -> Error {
    let mut table = table.lock();
    let b = table.get_or_insert_mut(key, || Block {
        until_ms: 0,
        strikes: 0,
        last_ms: now_ms,
    });
    if now_ms - b.last_ms > STRIKES_FORGOTTEN_AFTER_MS {
        b.strikes = 0;
    }
    b.strikes = (b.strikes + 1).min(20);
    b.last_ms = now_ms;
    let block = Duration::from_secs(1u64 << (b.strikes - 1).min(10)).min(MAX_BLOCK);
    b.until_ms = b.until_ms.max(now_ms + block.as_millis() as i64);
    too_many_failures(b.until_ms - now_ms)
}

fn too_many_failures(wait_ms: i64) -> Error {
    Error::RateLimited {
        message: "too many failed authentications: wait before trying again",
        retry_after_s: retry_after(Duration::from_millis(wait_ms.max(0) as u64)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::auth::api_key::new_key_id;

    fn settings() -> LimitSettings {
        LimitSettings {
            mint_rate: 2,
            mint_burst: 2,
            auth_failures_per_minute: 3,
            new_users_per_key_per_day: 2,
            chat_send_rate: 0,
            chat_send_burst: 0,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn v4(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from_bits(n)))
    }

    fn limited(e: Error) -> bool {
        matches!(e, Error::RateLimited { .. })
    }

    #[test]
    fn minting_is_limited_per_key() {
        let l = Limits::new(settings());
        assert_eq!(l.mint("pk_a").unwrap().unwrap().remaining, 1);
        assert!(l.mint("pk_a").is_ok());
        let Err(Error::RateLimited { retry_after_s, .. }) = l.mint("pk_a") else {
            panic!()
        };
        assert!(retry_after_s >= 1);
        assert!(l.mint("pk_b").is_ok(), "other keys are not affected");
    }

    #[test]
    fn repeated_failures_block_the_ip_with_growing_windows() {
        let l = Limits::new(settings());
        let ip = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(matches!(l.failed(ip, "pk_x", 0), Error::InvalidCredentials));
        }
        let Error::RateLimited {
            retry_after_s: first,
            ..
        } = l.failed(ip, "pk_x", 0)
        else {
            panic!()
        };
        assert!(l.check_ip(ip, 500).is_err());
        assert!(l.check_ip(Some("10.0.0.2".parse().unwrap()), 500).is_ok());
        let Error::RateLimited {
            retry_after_s: second,
            ..
        } = l.failed(ip, "pk_x", 0)
        else {
            panic!()
        };
        assert!(second > first, "{second} > {first}");
        assert!(l.check_ip(ip, 60 * 60 * 1000).is_ok(), "blocks end");
    }

    #[test]
    fn a_blocked_key_id_answers_429_to_wrong_secrets_from_any_client() {
        let l = Limits::new(settings());
        let key = new_key_id();
        for n in 0..3 {
            assert!(matches!(
                l.failed(v4(n), &key, 0),
                Error::InvalidCredentials
            ));
        }
        assert!(limited(l.failed(v4(3), &key, 0)));
        assert!(limited(l.failed(v4(4), &key, 500)), "still blocked");
        assert!(
            l.check_ip(v4(4), 500).is_ok(),
            "the keyId's block is not the client's"
        );
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_a_mapped_ipv4_address_is_its_ipv4_address() {
        let l = Limits::new(settings());
        let (a, b) = (ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff:1:2:3"));
        let next_64 = ip("2001:db8:1:3::1");
        for client in [a, b, a] {
            assert!(matches!(
                l.failed(client, "pk_x", 0),
                Error::InvalidCredentials
            ));
        }
        assert!(
            limited(l.failed(b, "pk_x", 0)),
            "a fourth failure from the same /64"
        );
        assert!(l.check_ip(a, 500).is_err());
        assert!(l.check_ip(b, 500).is_err());
        assert!(l.check_ip(ip("2001:db8:1:2:1::9"), 500).is_err());
        assert!(l.check_ip(next_64, 500).is_ok());
        assert!(matches!(
            l.failed(next_64, "pk_x", 0),
            Error::InvalidCredentials
        ));

        for _ in 0..3 {
            assert!(matches!(
                l.failed(ip("::ffff:10.0.0.1"), "pk_x", 0),
                Error::InvalidCredentials
            ));
        }
        assert!(limited(l.failed(ip("10.0.0.1"), "pk_x", 0)));
        assert!(l.check_ip(ip("::ffff:10.0.0.1"), 500).is_err());
        assert!(l.check_ip(ip("10.0.0.1"), 500).is_err());
        assert!(l.check_ip(ip("10.0.0.2"), 500).is_ok());
    }

    #[test]
    fn a_million_clients_never_hold_more_than_the_fixed_capacity() {
        let l = Limits::new(settings());
        let bound = 2 * CLIENTS + 4 * KEY_IDS;
        for n in 0..1_000_000u32 {
            l.failed(v4(n), "pk_x", 0);
            if n % 1024 == 0 {
                assert!(
                    l.tracked() <= bound,
                    "{} entries after {n} clients",
                    l.tracked()
                );
            }
        }
        assert_eq!(
            l.tracked(),
            CLIENTS,
            "the clients' table full, and no further"
        );
    }

    #[test]
    fn key_ids_past_capacity_evict_rather_than_grow() {
        let l = Limits::new(LimitSettings {
            mint_rate: 1,
            mint_burst: 1,
            auth_failures_per_minute: 1,
            new_users_per_key_per_day: 1,
            chat_send_rate: 0,
            chat_send_burst: 0,
        });
        let bound = 2 * CLIENTS + 4 * KEY_IDS;
        for n in 0..3 * KEY_IDS as u32 {
            let key = new_key_id();
            // A second failure from the same client and keyId blocks both.
            l.failed(v4(n), &key, 0);
            assert!(limited(l.failed(v4(n), &key, 0)));
            let _ = l.mint(&key);
            l.new_user_created(&key, 0);
            assert!(
                l.tracked() <= bound,
                "{} entries after {n} keyIds",
                l.tracked()
            );
        }
        assert_eq!(l.tracked(), 4 * KEY_IDS + 2 * (3 * KEY_IDS).min(CLIENTS));
    }

    /// Least-recently-seen eviction cannot keep a quiet client's block through a flood: its
    /// entry is the oldest. That is the right bound: evicting it takes as many blocks on other
    /// clients as the table holds, each earned with failures over the limit from a client
    /// with a full budget of its own, so the flood already had more tries than the evicted
    /// block withheld; and memory stays fixed.
    #[test]
    fn blocks_are_evicted_one_at_a_time_least_recently_seen_first() {
        let l = Limits::with_capacities(
            LimitSettings {
                auth_failures_per_minute: 1,
                ..settings()
            },
            3,
            3,
        );
        let block = |n| {
            l.failed(v4(n), "pk_x", 0);
            assert!(limited(l.failed(v4(n), "pk_x", 0)));
        };
        let blocked = |n| l.check_ip(v4(n), 500).is_err();
        for n in 1..=3 {
            block(n);
        }
        assert!(blocked(1) && blocked(2) && blocked(3));
        block(4);
        assert!(!blocked(1), "the least recently seen goes first");
        assert!(blocked(2) && blocked(3) && blocked(4));
        block(5);
        assert!(!blocked(2));
        assert!(blocked(3) && blocked(4) && blocked(5));
        assert_eq!(l.blocked_ips.lock().len(), 3);
    }

    #[test]
    fn a_blocked_client_that_keeps_knocking_stays_blocked_through_a_flood_of_blocks() {
        let l = Limits::new(LimitSettings {
            auth_failures_per_minute: 1,
            ..settings()
        });
        let attacker = ip("192.0.2.1");
        l.failed(attacker, "pk_x", 0);
        assert!(limited(l.failed(attacker, "pk_x", 0)));
        let others = 120_000;
        for n in 0..others {
            let other = v4(0x0a00_0000 + n);
            l.failed(other, "pk_x", 0);
            assert!(limited(l.failed(other, "pk_x", 0)));
            if n % 1000 == 0 {
                assert!(
                    l.check_ip(attacker, 500).is_err(),
                    "unblocked after {n} others"
                );
            }
        }
        assert!(l.check_ip(attacker, 500).is_err());
        assert!(l.check_ip(v4(0x0a00_0000 + others - 1), 500).is_err());
        assert_eq!(l.blocked_ips.lock().len(), CLIENTS);
    }

    #[test]
    fn housekeeping_forgets_idle_state() {
        let l = Limits::new(settings());
        let key = new_key_id();
        for _ in 0..4 {
            l.failed(ip("10.0.0.1"), &key, 0);
        }
        l.new_user_created(&key, 0);
        // GCRA state, block and count for the client and for the keyId.
        assert_eq!(l.tracked(), 5);
        l.housekeeping(30 * 60 * 1000);
        assert_eq!(
            l.tracked(),
            5,
            "strikes are remembered for an hour, counts for the day"
        );
        l.housekeeping(DAY_MS + 1);
        // The GCRA state (3 a minute) is young by governor's real-time clock.
        assert_eq!(l.tracked(), 2, "strikes and yesterday's count forgotten");
        assert!(l.new_user_allowed(&key, DAY_MS + 1).is_ok());

        // 60 000 a minute: a single failure (or mint) is forgotten 2 ms later.
        let fast = Limits::new(LimitSettings {
            mint_rate: 1000,
            mint_burst: 1,
            auth_failures_per_minute: 60_000,
            new_users_per_key_per_day: 0,
            chat_send_rate: 0,
            chat_send_burst: 0,
        });
        fast.failed(ip("2001:db8::1"), &key, 0);
        fast.mint(&key).unwrap();
        assert_eq!(fast.tracked(), 3);
        fast.housekeeping(0);
        std::thread::sleep(Duration::from_millis(50));
        fast.housekeeping(0);
        assert_eq!(fast.tracked(), 0);
    }

    #[test]
    fn new_users_have_a_daily_quota_when_set() {
        let l = Limits::new(settings());
        l.new_user_created("pk_a", 1000);
        l.new_user_created("pk_a", 2000);
        assert!(l.new_user_allowed("pk_a", 3000).is_err());
        assert!(l.new_user_allowed("pk_b", 3000).is_ok());
        assert!(
            l.new_user_allowed("pk_a", 86_400_000 + 1).is_ok(),
            "a new day"
        );
        l.new_user_created("pk_a", 86_400_000 + 1);
        assert!(
            l.new_user_allowed("pk_a", 86_400_000 + 2).is_ok(),
            "one today"
        );
        let off = Limits::new(LimitSettings {
            new_users_per_key_per_day: 0,
            chat_send_rate: 0,
            chat_send_burst: 0,
            ..settings()
        });
        assert!(off.new_user_allowed("pk_a", 0).is_ok());
    }

    #[test]
    fn zero_turns_limits_off() {
        let l = Limits::new(LimitSettings {
            mint_rate: 0,
            mint_burst: 0,
            auth_failures_per_minute: 0,
            new_users_per_key_per_day: 0,
            chat_send_rate: 0,
            chat_send_burst: 0,
        });
        for _ in 0..100 {
            assert!(l.mint("pk_a").unwrap().is_none());
            assert!(matches!(
                l.failed(None, "pk_a", 0),
                Error::InvalidCredentials
            ));
        }
    }
}
