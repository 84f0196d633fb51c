//! The scheduler: which runs execute now, and which wake later.
//!
//! It knows nothing of wasm or storage. It keeps one task per active run
//! (a run woken while its task is still unwinding runs again right after),
//! and the armed timers in memory, soonest first; what a run or a timer
//! *does* is the [`Dispatch`] implementation's business.

use crate::model::{RunKey, Timer, now_ms};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// A boxed future, as the dispatch trait returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the scheduler drives.
pub trait Dispatch: Send + Sync + 'static {
    /// Executes (or replays) a run until it ends or suspends.
    fn drive(self: Arc<Self>, run: RunKey) -> BoxFuture;

    /// Applies a due timer to the journal; returns whether its run should
    /// be woken.
    fn fire(&self, timer: &Timer) -> anyhow::Result<bool>;
}

struct ActiveRun {
    abort: Option<AbortHandle>,
    again: bool,
}

struct Shared {
    ready: mpsc::UnboundedSender<RunKey>,
    executions: std::sync::atomic::AtomicU64,
    active: Mutex<HashMap<RunKey, ActiveRun>>,
    timers: Mutex<BTreeSet<Timer>>,
    timers_changed: Notify,
}

impl Shared {
    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, ActiveRun>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn timers(&self) -> std::sync::MutexGuard<'_, BTreeSet<Timer>> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

/// The scheduler's loops, not yet started.
pub struct SchedulerLoops {
    ready: mpsc::UnboundedReceiver<RunKey>,
}

impl Scheduler {
    /// A scheduler and its loops (start them with [`SchedulerLoops::start`]).
    pub fn new() -> (Scheduler, SchedulerLoops) {
        let (ready, ready_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ready,
            executions: std::sync::atomic::AtomicU64::new(0),
            active: Mutex::new(HashMap::new()),
            timers: Mutex::new(BTreeSet::new()),
            timers_changed: Notify::new(),
        });
        (Scheduler { shared }, SchedulerLoops { ready: ready_rx })
    }

    /// Asks for `run` to be executed (again, if it is executing now).
    pub fn wake(&self, run: RunKey) {
        let _ = self.shared.ready.send(run);
    }

    /// Arms a timer (the journal already holds it).
    pub fn add_timer(&self, timer: Timer) {
        self.shared.timers().insert(timer);
        self.shared.timers_changed.notify_one();
    }

    /// Stops the task of `run`, if it has one (on cancellation).
    pub fn abort(&self, run: &RunKey) {
        if let Some(active) = self.shared.active().remove(run)
            && let Some(abort) = active.abort
        {
            abort.abort();
        }
    }

    /// How many runs have a task now.
    pub fn active_runs(&self) -> usize {
        self.shared.active().len()
    }

    /// How many executions have finished since the host started.
    pub fn executions(&self) -> u64 {
        self.shared
            .executions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many timers are armed.
    pub fn armed_timers(&self) -> usize {
        self.shared.timers().len()
    }
}

impl SchedulerLoops {
    /// Starts the dispatching and timer loops on the current tokio runtime.
    pub fn start(self, scheduler: &Scheduler, dispatch: Arc<dyn Dispatch>) {
        let shared = scheduler.shared.clone();
        tokio::spawn(dispatch_loop(shared.clone(), dispatch.clone(), self.ready));
        tokio::spawn(timer_loop(scheduler.clone(), dispatch));
    }
}

async fn dispatch_loop(
    shared: Arc<Shared>,
    dispatch: Arc<dyn Dispatch>,
    mut ready: mpsc::UnboundedReceiver<RunKey>,
) {
    while let Some(run) = ready.recv().await {
        {
            let mut active = shared.active();
            if let Some(existing) = active.get_mut(&run) {
                existing.again = true;
                continue;
            }
            active.insert(
                run.clone(),
                ActiveRun {
                    abort: None,
                    again: false,
                },
            );
        }
        let task = tokio::spawn(run_task(shared.clone(), dispatch.clone(), run.clone()));
        if let Some(active) = shared.active().get_mut(&run) {
            active.abort = Some(task.abort_handle());
        }
    }
}

async fn run_task(shared: Arc<Shared>, dispatch: Arc<dyn Dispatch>, run: RunKey) {
    loop {
        dispatch.clone().drive(run.clone()).await;
        shared
            .executions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut active = shared.active();
        match active.get_mut(&run) {
            Some(entry) if entry.again => entry.again = false,
            _ => {
                active.remove(&run);
                return;
            }
        }
    }
}

async fn timer_loop(scheduler: Scheduler, dispatch: Arc<dyn Dispatch>) {
    let shared = scheduler.shared.clone();
    loop {
        let next = shared.timers().first().cloned();
        let Some(timer) = next else {
            shared.timers_changed.notified().await;
            continue;
        };
        let now = now_ms();
        if timer.at > now {
            let wait = Duration::from_millis(timer.at - now);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.timers_changed.notified() => {}
            }
            continue;
        }
        shared.timers().remove(&timer);
        match dispatch.fire(&timer) {
            Ok(true) => scheduler.wake(timer.key.clone()),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(run = %timer.key, error = format!("{error:#}"), "a timer failed to fire; retrying in 1 s");
                let scheduler = scheduler.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    scheduler.add_timer(timer);
                });
            }
        }
    }
}
