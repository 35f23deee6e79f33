//! Rate-limit state under a flood of distinct clients (`cargo bench --bench limits`): resident
//! memory before, after 100 000 to 1 000 000 addresses, half IPv4, half IPv6 /64s, each
//! failing once with a fresh well-formed keyId that then mints; then 100 000 more addresses
//! failing past the limit, so that the block tables fill too. Default settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use performchat::auth::api_key::new_key_id;
use performchat::limits::{LimitSettings, Limits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib / 1024.0
}

/// Even numbers are IPv4 addresses, odd ones IPv6 /64s.
fn address(n: u32) -> IpAddr {
    if n.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + n))
    } else {
        let prefix = (0x2001_0db8_u128 << 96) | (u128::from(n) << 64);
        IpAddr::V6(Ipv6Addr::from_bits(prefix | 1))
    }
}

fn report(what: &str, limits: &Limits, since: Instant) {
    println!(
        "{what:<34} RSS {:5.1} MiB  entries {:>6}  {:4.1} s",
        rss_mib(),
        limits.tracked(),
        since.elapsed().as_secs_f64()
    );
}

fn main() {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    let limits = Limits::new(LimitSettings {
        mint_rate: 1000,
        mint_burst: 2000,
        auth_failures_per_minute: 30,
        new_users_per_key_per_day: 0,
        chat_send_rate: 0,
        chat_send_burst: 0,
    });
    let start = Instant::now();
    report("before", &limits, start);
    for n in 0..1_000_000u32 {
        let ip = Some(address(n));
        let key_id = new_key_id();
        let _ = limits.check_ip(ip, now_ms);
        let _ = limits.failed(ip, &key_id, now_ms);
        let _ = limits.mint(&key_id);
        if [100_000, 250_000, 500_000].contains(&(n + 1)) {
            report(
                &format!("after {} 000 addresses", (n + 1) / 1000),
                &limits,
                start,
            );
        }
    }
    report("after 1 000 000 addresses", &limits, start);
    for n in 1_000_000..1_100_000u32 {
        let ip = Some(address(n));
        let key_id = new_key_id();
        for _ in 0..31 {
            let _ = limits.check_ip(ip, now_ms);
            let _ = limits.failed(ip, &key_id, now_ms);
        }
    }
    report("after 100 000 more, each blocked", &limits, start);
}
