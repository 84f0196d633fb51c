//! The scheduler: which jobs execute now, and which wake later.
//!
//! It knows nothing of wasm or storage. A job is a run's handler or one
//! branch of a parallel group; woken jobs wait in the [`Queue`] until their
//! concurrency keys and throttle let them start (in priority order), then
//! get a task of their own; a job woken while its task is still unwinding
//! runs again right after. Armed timers are kept in memory, soonest first.
//! What a job *does* is the [`Dispatch`] implementation's business (the
//! executor), and what a timer does and how a job queues are the run state
//! machine's ([`RunStates`]).

mod queue;

pub use queue::{Admission, Job, Lease, Queue, Score, SlotPolicy, gcra};

use crate::model::{Clock, RunKey, Timer};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// A job's execution, as [`Dispatch::drive`] returns it: it resolves to a
/// delay after which the job's run should be woken again (the host failed
/// during it), or `None`.
pub type BoxFuture = Pin<Box<dyn Future<Output = Option<Duration>> + Send>>;

/// What the scheduler drives.
pub trait Dispatch: Send + Sync + 'static {
    /// Executes (or replays) a job until it ends or suspends.
    fn drive(self: Arc<Self>, job: Job) -> BoxFuture;

    /// Whether the host has the resources (guest memory) to start another
    /// job of `tenant`; while it has not, the tenant's jobs wait in the
    /// queue. Asked again whenever a job ends.
    fn has_room(&self, _tenant: &str) -> bool {
        true
    }

    /// Sets aside what `job` will need as it leaves the queue (so that the
    /// next [`Dispatch::has_room`] counts it); the returned guard lives as
    /// long as the job's task.
    fn reserve(&self, _job: &Job) -> Box<dyn Send> {
        Box::new(())
    }
}

/// What the scheduler asks of the run state machine: no wasm, only run
/// state.
pub trait RunStates: Send + Sync + 'static {
    /// Applies a due timer; returns whether its run should be woken.
    fn fire(&self, timer: &Timer) -> anyhow::Result<bool>;

    /// How `job` queues, or `None` if there is nothing to do (its run ended).
    fn admission(&self, job: &Job) -> anyhow::Result<Option<Admission>>;
}

struct ActiveJob {
    abort: Option<AbortHandle>,
    lease: Option<Lease>,
    again: bool,
}

#[derive(Default)]
struct State {
    queue: Queue,
    active: HashMap<Job, ActiveJob>,
    /// Branches asked for and not yet finished, per run.
    branches: HashMap<RunKey, HashSet<u32>>,
    /// Jobs woken and not yet admitted into the queue, per tenant (so that
    /// a tenant's queued count includes them at once).
    incoming: HashMap<String, usize>,
    /// The sum of `incoming`.
    incoming_total: usize,
}

impl State {
    fn arrive(&mut self, tenant: &str) {
        *self.incoming.entry(tenant.to_string()).or_default() += 1;
        self.incoming_total += 1;
    }

    fn admitted(&mut self, tenant: &str) {
        if let Some(count) = self.incoming.get_mut(tenant) {
            *count -= 1;
            self.incoming_total -= 1;
            if *count == 0 {
                self.incoming.remove(tenant);
            }
        }
    }
}

struct Shared {
    ready: mpsc::UnboundedSender<Job>,
    executions: AtomicU64,
    state: Mutex<State>,
    /// A job ended (slots freed): the queue loop should look again.
    freed: Notify,
    timers: Mutex<BTreeSet<Timer>>,
    timers_changed: Notify,
    /// When timers are due and throttles open.
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn timers(&self) -> MutexGuard<'_, BTreeSet<Timer>> {
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
    ready: mpsc::UnboundedReceiver<Job>,
}

impl Scheduler {
    /// A scheduler sharing executing slots between tenants by `slots`, with
    /// timers due by `clock`, and its loops (start them with
    /// [`SchedulerLoops::start`]).
    pub fn new(slots: SlotPolicy, clock: Arc<dyn Clock>) -> (Scheduler, SchedulerLoops) {
        let (ready, ready_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ready,
            executions: AtomicU64::new(0),
            state: Mutex::new(State {
                queue: Queue::with_policy(slots),
                ..State::default()
            }),
            freed: Notify::new(),
            timers: Mutex::new(BTreeSet::new()),
            timers_changed: Notify::new(),
            clock,
        });
        (Scheduler { shared }, SchedulerLoops { ready: ready_rx })
    }

    /// Asks for `run` to be executed (again, if it is executing now).
    pub fn wake(&self, run: RunKey) {
        self.send(Job::run(run));
    }

    fn send(&self, job: Job) {
        self.shared.state().arrive(&job.run.tenant);
        if self.shared.ready.send(job.clone()).is_err() {
            self.shared.state().admitted(&job.run.tenant);
        }
    }

    /// Asks for branch `seq` of `run` to be executed in an instance of its
    /// own, unless it is asked for already and not finished. The run is
    /// woken when its last requested branch has finished.
    pub fn spawn_branch(&self, run: RunKey, seq: u32) {
        let new = self
            .shared
            .state()
            .branches
            .entry(run.clone())
            .or_default()
            .insert(seq);
        if !new {
            return;
        }
        self.send(Job {
            run,
            branch: Some(seq),
        });
    }

    /// Whether branch `seq` of `run` is asked for and not finished.
    pub fn branch_pending(&self, run: &RunKey, seq: u32) -> bool {
        self.shared
            .state()
            .branches
            .get(run)
            .is_some_and(|b| b.contains(&seq))
    }

    /// Arms a timer (the journal already holds it).
    pub fn add_timer(&self, timer: Timer) {
        self.shared.timers().insert(timer);
        self.shared.timers_changed.notify_one();
    }

    /// Disarms a timer (the journal no longer holds it).
    pub fn remove_timer(&self, timer: &Timer) {
        if self.shared.timers().remove(timer) {
            self.shared.timers_changed.notify_one();
        }
    }

    /// Stops every job of `run`, queued or executing (on cancellation).
    pub fn abort(&self, run: &RunKey) {
        let mut state = self.shared.state();
        let state = &mut *state;
        // A run's jobs are its own and the branches it asked for.
        let mut jobs = vec![Job::run(run.clone())];
        if let Some(branches) = state.branches.remove(run) {
            jobs.extend(branches.into_iter().map(|seq| Job {
                run: run.clone(),
                branch: Some(seq),
            }));
        }
        for job in jobs {
            state.queue.remove(&job);
            if let Some(active) = state.active.remove(&job) {
                if let Some(abort) = active.abort {
                    abort.abort();
                }
                if let Some(lease) = active.lease {
                    state.queue.release(lease);
                }
            }
        }
        self.shared.freed.notify_one();
    }

    /// Sets how many jobs execute at once: the leader's slots and its
    /// worker hosts' together (see [`crate::work`]).
    pub fn set_slots(&self, slots: u32) {
        self.shared.state().queue.set_slots(slots);
        self.poke();
    }

    /// Asks the queue to look again (resources it waits on were freed).
    pub fn poke(&self) {
        self.shared.freed.notify_one();
    }

    /// How many jobs have a task now.
    pub fn active_runs(&self) -> usize {
        self.shared.state().active.len()
    }

    /// How many jobs of `tenant` wait to execute (in the queue, or woken
    /// and on their way to it).
    pub fn queued_of(&self, tenant: &str) -> usize {
        let state = self.shared.state();
        state.queue.len_of(tenant) + state.incoming.get(tenant).copied().unwrap_or(0)
    }

    /// How many jobs wait to execute host-wide (in the queue, or woken and
    /// on their way to it).
    pub fn queued_total(&self) -> usize {
        let state = self.shared.state();
        state.queue.len() + state.incoming_total
    }

    /// How many executions have finished since the host started.
    pub fn executions(&self) -> u64 {
        self.shared.executions.load(Ordering::Relaxed)
    }

    /// How many timers are armed.
    pub fn armed_timers(&self) -> usize {
        self.shared.timers().len()
    }

    /// Calls `f` with every armed timer, holding the timers' lock: for a
    /// census (metrics), not for anything on a hot path.
    pub fn for_each_timer(&self, mut f: impl FnMut(&Timer)) {
        for timer in self.shared.timers().iter() {
            f(timer);
        }
    }
}

impl SchedulerLoops {
    /// Starts the queue and timer loops on the current tokio runtime.
    pub fn start(
        self,
        scheduler: &Scheduler,
        dispatch: Arc<dyn Dispatch>,
        states: Arc<dyn RunStates>,
    ) {
        tokio::spawn(queue_loop(
            scheduler.clone(),
            dispatch,
            states.clone(),
            self.ready,
        ));
        tokio::spawn(timer_loop(scheduler.clone(), states));
    }
}

/// Admits woken jobs into the queue and starts what the queue lets go.
async fn queue_loop(
    scheduler: Scheduler,
    dispatch: Arc<dyn Dispatch>,
    states: Arc<dyn RunStates>,
    mut ready: mpsc::UnboundedReceiver<Job>,
) {
    let shared = scheduler.shared.clone();
    loop {
        let wake_at = shared.state().queue.next_wake();
        let throttled = async {
            match wake_at {
                Some(at) => shared.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut woken = Vec::new();
        tokio::select! {
            job = ready.recv() => match job {
                Some(job) => woken.push(job),
                None => return,
            },
            _ = shared.freed.notified() => {}
            _ = throttled => {}
        }
        while let Ok(job) = ready.try_recv() {
            woken.push(job);
        }
        for job in woken {
            admit(&scheduler, states.as_ref(), job);
        }
        start_ready(&scheduler, &dispatch);
    }
}

/// Puts a woken job in the queue (or marks it to run again, if it is
/// executing). A job counts as arriving from [`Scheduler::send`] until
/// here, where it stops counting in the same lock that queues it: counted
/// in both for a moment, it would make its tenant's queue look longer than
/// it is, and refuse an event that fits.
fn admit(scheduler: &Scheduler, states: &dyn RunStates, job: Job) {
    let tenant = job.run.tenant.clone();
    {
        let mut state = scheduler.shared.state();
        if let Some(active) = state.active.get_mut(&job) {
            active.again = true;
            state.admitted(&tenant);
            return;
        }
        if state.queue.contains(&job) {
            state.admitted(&tenant);
            return;
        }
    }
    let admission = states.admission(&job);
    let mut state = scheduler.shared.state();
    state.admitted(&tenant);
    match admission {
        Ok(Some(admission)) => state
            .queue
            .push(job, &admission, scheduler.shared.clock.now_ms()),
        Ok(None) => {
            drop(state);
            branch_done(scheduler, &job)
        }
        Err(error) => {
            drop(state);
            tracing::error!(run = %job.run, error = format!("{error:#}"), "could not queue a run; retrying in 1 s");
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                scheduler.send(job);
            });
        }
    }
}

fn start_ready(scheduler: &Scheduler, dispatch: &Arc<dyn Dispatch>) {
    let now = scheduler.shared.clock.now_ms();
    loop {
        let job = {
            let mut state = scheduler.shared.state();
            // With nothing executing, nothing would free room: start anyway.
            let idle = state.active.is_empty();
            let Some((job, lease)) = state
                .queue
                .pop_where(now, |tenant| idle || dispatch.has_room(tenant))
            else {
                return;
            };
            state.active.insert(
                job.clone(),
                ActiveJob {
                    abort: None,
                    lease: Some(lease),
                    again: false,
                },
            );
            job
        };
        // Outside the lock: a reservation may read the journal. It is made
        // before the next pop, which counts it.
        let reserved = dispatch.reserve(&job);
        let task = tokio::spawn(job_task(
            scheduler.clone(),
            dispatch.clone(),
            job.clone(),
            reserved,
        ));
        match scheduler.shared.state().active.get_mut(&job) {
            Some(active) => active.abort = Some(task.abort_handle()),
            // Aborted (its run cancelled) before the handle was set, or
            // already done: stop it if it is not.
            None => task.abort(),
        }
    }
}

async fn job_task(
    scheduler: Scheduler,
    dispatch: Arc<dyn Dispatch>,
    job: Job,
    reserved: Box<dyn Send>,
) {
    let again_after = dispatch.drive(job.clone()).await;
    drop(reserved);
    if let Some(delay) = again_after {
        let (scheduler, run) = (scheduler.clone(), job.run.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            scheduler.wake(run);
        });
    }
    let shared = &scheduler.shared;
    shared.executions.fetch_add(1, Ordering::Relaxed);
    let again = {
        let mut state = shared.state();
        let state = &mut *state;
        match state.active.remove(&job) {
            Some(active) => {
                if let Some(lease) = active.lease {
                    state.queue.release(lease);
                }
                active.again
            }
            None => false,
        }
    };
    shared.freed.notify_one();
    if again {
        scheduler.send(job);
    } else {
        branch_done(&scheduler, &job);
    }
}

/// A branch finished (or has nothing to do): once the run's last one has,
/// the run itself carries on.
fn branch_done(scheduler: &Scheduler, job: &Job) {
    let Some(seq) = job.branch else { return };
    let last = {
        let mut state = scheduler.shared.state();
        match state.branches.get_mut(&job.run) {
            Some(branches) => {
                branches.remove(&seq);
                if branches.is_empty() {
                    state.branches.remove(&job.run);
                    true
                } else {
                    false
                }
            }
            None => false,
        }
    };
    if last {
        scheduler.wake(job.run.clone());
    }
}

async fn timer_loop(scheduler: Scheduler, states: Arc<dyn RunStates>) {
    let shared = scheduler.shared.clone();
    loop {
        let next = shared.timers().first().cloned();
        let Some(timer) = next else {
            shared.timers_changed.notified().await;
            continue;
        };
        if timer.at > shared.clock.now_ms() {
            tokio::select! {
                _ = shared.clock.sleep_until(timer.at) => {}
                _ = shared.timers_changed.notified() => {}
            }
            continue;
        }
        shared.timers().remove(&timer);
        match states.fire(&timer) {
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
