//! Stopping without running a step twice: once a host drains, step bodies
//! already running finish and are journaled, and no new one begins.
//!
//! A step body is guest code between `begin` answering `execute` and
//! `complete`. A body cut off by the process's exit runs again after the
//! restart (at least once, as Inngest's); one that finished before the exit
//! must not. So on SIGTERM the host [`Drain::start`]s: every execution that
//! reaches a new body waits there for good (its run stays `running` and is
//! replayed after the restart, from the journal), and the host exits when
//! [`Drain::idle`] says no body is left, or its patience runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Step bodies in progress, and whether new ones may begin.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    bodies: AtomicUsize,
    changed: Notify,
}

/// One step body in progress; it ends when this is dropped (after its
/// outcome is recorded, or with its execution).
#[derive(Debug)]
pub struct Body(Arc<Drain>);

impl Drop for Body {
    fn drop(&mut self) {
        if self.0.bodies.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl Drain {
    /// A new body may begin: counted until the [`Body`] is dropped. While
    /// draining, this never returns (the execution waits here until the
    /// process exits).
    pub async fn begin(self: &Arc<Self>) -> Body {
        if self.draining.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        self.bodies.fetch_add(1, Ordering::AcqRel);
        Body(self.clone())
    }

    /// No new body begins from now on.
    pub fn start(&self) {
        self.draining.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Whether [`Drain::start`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Step bodies in progress now.
    pub fn bodies(&self) -> usize {
        self.bodies.load(Ordering::Acquire)
    }

    /// Returns once no step body is in progress.
    pub async fn idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.bodies() == 0 {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_drain_waits_for_bodies_in_progress_and_holds_new_ones() {
        let drain = Arc::new(Drain::default());
        let running = drain.begin().await;
        assert_eq!(drain.bodies(), 1);
        drain.start();
        let late = tokio::time::timeout(Duration::from_millis(50), drain.begin()).await;
        assert!(late.is_err(), "no body begins while draining");
        let idle = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!idle.is_finished(), "a body is still in progress");
        drop(running);
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle once the last body ended")
            .unwrap();
        assert_eq!(drain.bodies(), 0);
    }
}
