//! Throttling of failed authentications, per source address.
//!
//! Guessing a key takes many tries: after `limit` wrong keys from one
//! source (an IPv4 address or an IPv6 /64) within a minute, every request
//! from it that carries a key is answered `429` with `Retry-After` until
//! that minute is over, without the key being checked. Behind a reverse
//! proxy every client shares the proxy's address: raise the limit there, or
//! turn it off with 0.

use super::conn::source_of;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long failures are counted from the first one.
const WINDOW: Duration = Duration::from_secs(60);

/// Sources remembered at most; past this, expired entries are dropped, and
/// if none are, new sources go uncounted rather than grow memory.
const MAX_SOURCES: usize = 100_000;

/// Failed authentications per source.
#[derive(Debug)]
pub struct AuthThrottle {
    limit: u32,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl AuthThrottle {
    /// Refuses a source for the rest of the minute after `limit` failures
    /// in it (0: never).
    pub fn new(limit: u32) -> Self {
        AuthThrottle {
            limit,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds to wait)` if `ip` may not try a key now.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        match self.lock().get(&source_of(ip)) {
            Some(failures) if failures.count >= self.limit => {
                let left = (failures.since + WINDOW).saturating_duration_since(now);
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs_f64().ceil() as u64)
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong key from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let source = source_of(ip);
        let mut sources = self.lock();
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if sources.len() >= MAX_SOURCES {
                return;
            }
        }
        let failures = sources.entry(source).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(failures.since) >= WINDOW {
            *failures = Failures {
                since: now,
                count: 0,
            };
        }
        failures.count = failures.count.saturating_add(1);
        if failures.count == self.limit {
            tracing::warn!(
                %source,
                failures = self.limit,
                "throttling a source after repeated wrong keys"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_refused_after_the_limit_and_others_are_not() {
        let throttle = AuthThrottle::new(3);
        let attacker: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.check(attacker).is_ok());
            throttle.failed(attacker);
        }
        let wait = throttle.check(attacker).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(throttle.check("203.0.113.8".parse().unwrap()).is_ok());
        // One IPv6 /64 counts as one source.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..3 {
            throttle.failed(v6);
        }
        assert!(throttle.check("2001:db8::ffff".parse().unwrap()).is_err());
        assert!(AuthThrottle::new(0).check(attacker).is_ok());
    }
}
