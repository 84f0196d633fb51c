//! Where the time comes from: an injected [`Clock`], so that transitions can
//! be tested at a fixed time (and a scenario runner can move a virtual one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The time, in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        super::now_ms()
    }
}

/// A clock that reads what it was set to, moved only by hand.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock reading `ms`.
    pub fn at(ms: u64) -> Arc<Self> {
        Arc::new(FixedClock(AtomicU64::new(ms)))
    }

    /// Moves the clock `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
