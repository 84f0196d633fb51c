//! Where the time comes from: one injected [`Clock`] for the whole host, so
//! that transitions can be tested at a fixed time and a scenario runner can
//! move a virtual one (`Stepwise::start_with_clock`). The exceptions are
//! the network's own mechanics (timeouts of slow clients and idle
//! connections, throttles of wrong keys, log rate limits): they measure the
//! machine's time, whatever the runs' clock reads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// A future that resolves once a clock reads a given time.
pub type Alarm<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The time, in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The time now, ms since the epoch.
    fn now_ms(&self) -> u64;

    /// Resolves once the clock reads `at_ms` or later: what timer loops
    /// sleep on, so that a clock moved by hand wakes them.
    fn sleep_until(&self, at_ms: u64) -> Alarm<'_>;
}

/// The machine's clock: what a host runs on unless started with another.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        super::now_ms()
    }

    fn sleep_until(&self, at_ms: u64) -> Alarm<'_> {
        Box::pin(async move {
            loop {
                let now = self.now_ms();
                if now >= at_ms {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(at_ms - now)).await;
            }
        })
    }
}

/// A clock that reads what it was set to, moved only by hand.
#[derive(Debug)]
pub struct FixedClock(watch::Sender<u64>);

impl FixedClock {
    /// A clock reading `ms`.
    pub fn at(ms: u64) -> Arc<Self> {
        Arc::new(FixedClock(watch::Sender::new(ms)))
    }

    /// Moves the clock `ms` forward, waking what sleeps until then.
    pub fn advance(&self, ms: u64) {
        self.0.send_modify(|now| *now += ms);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        *self.0.borrow()
    }

    fn sleep_until(&self, at_ms: u64) -> Alarm<'_> {
        let mut time = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which outlives this.
            let _ = time.wait_for(|now| *now >= at_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fixed_clock_wakes_its_sleepers_when_moved_past_their_time() {
        let clock = FixedClock::at(1_000);
        let mut alarm = clock.sleep_until(1_500);
        assert!(crate::testing::poll_once(Pin::new(&mut alarm)).is_none());
        clock.advance(400);
        assert!(crate::testing::poll_once(Pin::new(&mut alarm)).is_none());
        clock.advance(100);
        assert!(crate::testing::poll_once(Pin::new(&mut alarm)).is_some());
        assert_eq!(clock.now_ms(), 1_500);
    }
}
