//! Rate limits of the key endpoints (governor's GCRA, in memory, per instance):
//! - minting, per keyId (`--mint-rate` per second, `--mint-burst`);
//! - failed authentications, per client IP and per keyId (`--auth-failures-per-minute`).
//!   Past the limit a block starts, doubling with each repeat (1 s, 2 s, 4 s … 15 min): a
//!   blocked IP gets 429 on every key endpoint; a blocked keyId gets 429 instead of 401 for
//!   wrong secrets only, so nobody can lock a company out by guessing at its keyId;
//! - optionally, distinct new users per key per UTC day (`--new-users-per-key-per-day`), so a
//!   leaked key cannot flood the user table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::Error;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
/// Offences are forgotten after this long without one.
const STRIKES_FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);
/// Bounded bookkeeping: past this many entries the oldest state is dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Tokens per second per keyId; 0 turns the limit off.
    pub mint_rate: u32,
    pub mint_burst: u32,
    /// Failed authentications per minute per IP and per keyId; 0 turns it off.
    pub auth_failures_per_minute: u32,
    /// Distinct new users per key per UTC day; 0 (the default) turns it off.
    pub new_users_per_key_per_day: u64,
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

pub struct Limits {
    settings: LimitSettings,
    mint: Option<Keyed<String>>,
    failures_by_ip: Option<Keyed<IpAddr>>,
    failures_by_key: Option<Keyed<String>>,
    blocked_ips: Mutex<HashMap<IpAddr, Block>>,
    blocked_keys: Mutex<HashMap<String, Block>>,
    /// (key id, UTC day number) → new users created.
    new_users: Mutex<HashMap<(String, i64), u64>>,
}

fn quota(per: Duration, count: u32, burst: u32) -> Option<Quota> {
    let count = NonZeroU32::new(count)?;
    let burst = NonZeroU32::new(burst.max(1))?;
    Quota::with_period(per / count.get()).map(|q| q.allow_burst(burst))
}

fn keyed<K: std::hash::Hash + Eq + Clone>(q: Option<Quota>) -> Option<Keyed<K>> {
    q.map(|q| RateLimiter::keyed(q).with_middleware::<StateInformationMiddleware>())
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        let failures = settings.auth_failures_per_minute;
        Limits {
            settings,
            mint: keyed(quota(second, settings.mint_rate, settings.mint_burst)),
            failures_by_ip: keyed(quota(minute, failures, failures)),
            failures_by_key: keyed(quota(minute, failures, failures)),
            blocked_ips: Mutex::default(),
            blocked_keys: Mutex::default(),
            new_users: Mutex::default(),
        }
    }

    /// Refuses a request from an IP that is blocked for failed authentications.
    pub fn check_ip(&self, ip: Option<IpAddr>, now_ms: i64) -> Result<(), Error> {
        let Some(ip) = ip else { return Ok(()) };
        blocked(&self.blocked_ips, &ip, now_ms)
    }

    /// Records a failed authentication. Returns the error to answer: 401 normally, 429 once
    /// the IP or the keyId is over its limit.
    pub fn failed(&self, ip: Option<IpAddr>, key_id: &str, now_ms: i64) -> Error {
        let mut limited = None;
        if let (Some(ip), Some(lim)) = (ip, &self.failures_by_ip)
            && lim.check_key(&ip).is_err()
        {
            limited = Some(strike(&self.blocked_ips, ip, now_ms));
        }
        if let Some(lim) = &self.failures_by_key {
            // Only ids of our shape are tracked: random guesses must not fill the table.
            if crate::auth::api_key::is_well_formed_key_id(key_id)
                && lim.check_key(&key_id.to_owned()).is_err()
            {
                let e = strike(&self.blocked_keys, key_id.to_owned(), now_ms);
                limited.get_or_insert(e);
            }
        }
        if let Some(e) = limited {
            return e;
        }
        // A keyId still inside its block answers 429 to wrong secrets.
        blocked(&self.blocked_keys, &key_id.to_owned(), now_ms)
            .err()
            .unwrap_or(Error::InvalidCredentials)
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

    /// Whether the key may create one more new user today.
    pub fn new_user_allowed(&self, key_id: &str, now_ms: i64) -> Result<(), Error> {
        let quota = self.settings.new_users_per_key_per_day;
        if quota == 0 {
            return Ok(());
        }
        let day = now_ms.div_euclid(86_400_000);
        let counts = self.new_users.lock().unwrap_or_else(|e| e.into_inner());
        if counts.get(&(key_id.to_owned(), day)).copied().unwrap_or(0) >= quota {
            let until_midnight_ms = (day + 1) * 86_400_000 - now_ms;
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
        let day = now_ms.div_euclid(86_400_000);
        let mut counts = self.new_users.lock().unwrap_or_else(|e| e.into_inner());
        counts.retain(|(_, d), _| *d == day);
        *counts.entry((key_id.to_owned(), day)).or_default() += 1;
    }

    /// Forgets idle state; called periodically.
    pub fn housekeeping(&self, now_ms: i64) {
        for lim in [&self.mint, &self.failures_by_key].into_iter().flatten() {
            lim.retain_recent();
        }
        if let Some(lim) = &self.failures_by_ip {
            lim.retain_recent();
        }
        let forget = |b: &Block| now_ms - b.last_ms < STRIKES_FORGOTTEN_AFTER.as_millis() as i64;
        self.blocked_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| forget(b));
        self.blocked_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| forget(b));
    }
}

fn blocked<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Block>>,
    key: &K,
    now_ms: i64,
) -> Result<(), Error> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(key) {
        Some(b) if b.until_ms > now_ms => Err(too_many_failures(b.until_ms - now_ms)),
        _ => Ok(()),
    }
}

/// Starts (or lengthens) a block: each strike doubles it.
fn strike<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Block>>, key: K, now_ms: i64) -> Error {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_TRACKED {
        map.clear();
    }
    let b = map.entry(key).or_insert(Block {
        until_ms: 0,
        strikes: 0,
        last_ms: now_ms,
    });
    if now_ms - b.last_ms > STRIKES_FORGOTTEN_AFTER.as_millis() as i64 {
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
    use super::*;

    fn settings() -> LimitSettings {
        LimitSettings {
            mint_rate: 2,
            mint_burst: 2,
            auth_failures_per_minute: 3,
            new_users_per_key_per_day: 2,
        }
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
        let ip = Some("10.0.0.1".parse().unwrap());
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
        let off = Limits::new(LimitSettings {
            new_users_per_key_per_day: 0,
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
