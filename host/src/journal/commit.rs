//! Group commit: one fsync for every writer waiting at the same moment.
//!
//! An fsync costs ~150–170 µs on the reference machine; one per step would
//! cap the whole host near 6,000 steps/s. Instead a writer applies its batch
//! (cheap, in memory), takes a ticket, and waits here. If no flush is in
//! progress it becomes the leader and flushes on its own thread (no hand-off
//! to another thread, which costs tens of µs on the lone-run path); writers
//! that arrive meanwhile wait, and the next leader's flush covers all of
//! them at once. A flush covers exactly the tickets issued before it began,
//! since only their writes are sure to be in it.

use super::Journal;
use crate::metrics::Metrics;
use anyhow::{Result, anyhow};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is flushing now.
    flushing: bool,
}

struct Shared {
    journal: Arc<dyn Journal>,
    /// The last ticket issued.
    issued: Mutex<u64>,
    progress: watch::Sender<Progress>,
    /// Where each flush's time and size are counted.
    metrics: OnceLock<Arc<Metrics>>,
    /// Whether the last flush failed (until one succeeds).
    failing: AtomicBool,
}

/// Shared flushes; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
}

impl GroupCommit {
    /// Group commit over `journal`.
    pub fn start(journal: Arc<dyn Journal>) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                journal,
                issued: Mutex::new(0),
                progress: watch::channel(Progress::default()).0,
                metrics: OnceLock::new(),
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the last flush succeeded (or none was needed yet): what a
    /// readiness probe asks.
    pub fn writable(&self) -> bool {
        !self.shared.failing.load(Ordering::Acquire)
    }

    /// Counts every flush from now on into `metrics`.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.shared.metrics.set(metrics);
    }

    /// Returns once every write applied before this call is on disk; at
    /// once, with no flush, if nothing applied since the last flush (what
    /// readers wait on: an idle journal costs them nothing).
    pub async fn settled(&self) -> Result<()> {
        if !self.shared.journal.unflushed() {
            return Ok(());
        }
        self.durable().await
    }

    /// Returns once every write applied before this call is on disk.
    pub async fn durable(&self) -> Result<()> {
        let shared = &self.shared;
        let ticket = {
            let mut issued = shared.issued.lock().unwrap_or_else(|p| p.into_inner());
            *issued += 1;
            *issued
        };
        let mut progress = shared.progress.subscribe();
        loop {
            let mut lead = false;
            shared.progress.send_if_modified(|p| {
                if p.durable < ticket && !p.flushing {
                    p.flushing = true;
                    lead = true;
                    true
                } else {
                    false
                }
            });
            if !lead {
                let now = *progress
                    .wait_for(|p| p.durable >= ticket || !p.flushing)
                    .await
                    .map_err(|_| anyhow!("the journal's group commit has stopped"))?;
                if now.durable >= ticket {
                    return Ok(());
                }
                continue;
            }
            // Every ticket issued so far had its writes applied already.
            let covers = *shared.issued.lock().unwrap_or_else(|p| p.into_inner());
            let mut leadership = Leadership {
                shared,
                covers: None,
            };
            let began = std::time::Instant::now();
            let outcome = flush(shared.journal.clone()).await;
            shared.failing.store(outcome.is_err(), Ordering::Release);
            if outcome.is_ok() {
                leadership.covers = Some(covers);
                if let Some(metrics) = shared.metrics.get() {
                    let before = shared.progress.borrow().durable;
                    metrics.flushed(began.elapsed(), covers.saturating_sub(before));
                }
            }
            drop(leadership);
            return outcome;
        }
    }
}

/// Ends a leader's turn, even if its task is dropped mid-flush: the next
/// waiter then leads instead of waiting for ever.
struct Leadership<'a> {
    shared: &'a Shared,
    covers: Option<u64>,
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        let covers = self.covers;
        self.shared.progress.send_modify(|p| {
            p.flushing = false;
            if let Some(covers) = covers {
                p.durable = p.durable.max(covers);
            }
        });
    }
}

/// Flushes on the current worker thread where the runtime allows blocking
/// there (the leader has nothing else to do meanwhile), else on a blocking
/// thread.
async fn flush(journal: Arc<dyn Journal>) -> Result<()> {
    let outcome = match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| journal.flush()),
        _ => tokio::task::spawn_blocking(move || journal.flush())
            .await
            .map_err(|e| anyhow!("the flush task failed: {e}"))?,
    };
    if let Err(error) = &outcome {
        tracing::error!(error = format!("{error:#}"), "journal flush failed");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Op, SledJournal};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_become_durable_without_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(dir.path()).unwrap());
        let commit = GroupCommit::start(journal.clone());
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let (journal, commit) = (journal.clone(), commit.clone());
                tokio::spawn(async move {
                    journal
                        .apply(vec![Op::PutSetting {
                            name: format!("w{i}"),
                            value: "x".into(),
                        }])
                        .unwrap();
                    commit.durable().await
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let progress = *commit.shared.progress.borrow();
        assert_eq!(progress.durable, 64, "every ticket is covered");
        assert!(!progress.flushing);
        assert_eq!(journal.setting("w63").unwrap().as_deref(), Some("x"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_wait_for_a_flush_only_while_something_is_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(dir.path()).unwrap());
        let commit = GroupCommit::start(journal.clone());
        let write = |name: &str| {
            journal
                .apply(vec![Op::PutSetting {
                    name: name.into(),
                    value: "x".into(),
                }])
                .unwrap()
        };
        write("a");
        assert!(journal.unflushed(), "a write no flush has covered");
        commit.settled().await.unwrap();
        assert!(!journal.unflushed(), "settled flushed it");
        assert_eq!(commit.shared.progress.borrow().durable, 1);
        commit.settled().await.unwrap();
        assert_eq!(
            commit.shared.progress.borrow().durable,
            1,
            "nothing new: no flush, no ticket"
        );
        write("b");
        assert!(journal.unflushed());
        commit.durable().await.unwrap();
        assert!(!journal.unflushed());
    }
}
