//! The leader's side: which host executes each job, worker sessions, and
//! fencing a session off.

use super::wire::{Answer, Ask, Joined};
use crate::executor::RunDriver;
use crate::model::{LogChunk, RunKey};
use crate::runs::{ExecutionGuard, RunAccess, Runs};
use crate::scheduler::{BoxFuture, Dispatch, Job, Scheduler};
use anyhow::Result;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, RwLock, oneshot};

/// A call in a session the leader fenced off (or never opened): the
/// worker must stop every execution of it and join again.
#[derive(Debug, thiserror::Error)]
#[error(
    "worker session {0} is fenced off: the leader stopped hearing from it, or it is not the leader that opened it; its jobs execute elsewhere"
)]
pub struct SessionFenced(pub u64);

/// How a job's execution on a worker ended, for the scheduler: a delay
/// after which to wake its run again, or `None`.
type Ended = Option<Duration>;

/// The worker sessions, and the jobs executing in each.
pub struct Workers {
    runs: Arc<Runs>,
    /// Told how many jobs the hosts execute at once together.
    scheduler: Scheduler,
    /// A session not heard from for this long is fenced off.
    ttl: Duration,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    /// Jobs executing on this host, and how many it executes at once.
    local: AtomicUsize,
    local_capacity: usize,
}

struct Session {
    id: u64,
    host_id: String,
    capacity: usize,
    /// Whether the session is fenced off. Every call holds it shared while
    /// it is applied; fencing takes it exclusively, so it waits for the
    /// calls in progress, and no call is applied after it.
    fenced: RwLock<bool>,
    state: Mutex<SessionState>,
    /// Jobs were handed to it (a claim waiting should look).
    offered: Notify,
    /// Jobs it finished, for `/health`.
    executed: AtomicU64,
}

struct SessionState {
    last_seen: Instant,
    /// Handed to the session and not yet claimed.
    unclaimed: VecDeque<Job>,
    /// Every job handed to it and not done, with whom to tell.
    assigned: HashMap<Job, oneshot::Sender<Ended>>,
    /// Executions it started, registered with the run state machine.
    executions: HashMap<Job, ExecutionGuard>,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        self.state().last_seen = Instant::now();
    }
}

/// One worker's session, for `/health`.
#[derive(Debug, serde::Serialize)]
pub struct WorkerView {
    /// The worker's host id.
    pub host_id: String,
    /// Jobs handed to it and not done.
    pub executing: usize,
    /// Jobs it finished.
    pub executed: u64,
}

impl Workers {
    /// Sessions of `runs`' workers; a worker not heard from for `ttl` is
    /// fenced off. This host executes up to `local_capacity` jobs itself.
    /// Starts the task that fences silent sessions off.
    pub fn start(
        runs: Arc<Runs>,
        scheduler: Scheduler,
        ttl: Duration,
        local_capacity: usize,
    ) -> Arc<Self> {
        let workers = Arc::new(Workers {
            runs,
            scheduler,
            ttl,
            sessions: Mutex::new(HashMap::new()),
            local: AtomicUsize::new(0),
            local_capacity: local_capacity.max(1),
        });
        tokio::spawn(reap(Arc::downgrade(&workers)));
        workers
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self, id: u64) -> Result<Arc<Session>, SessionFenced> {
        self.sessions().get(&id).cloned().ok_or(SessionFenced(id))
    }

    /// Opens a session for worker `host_id`, which executes up to
    /// `capacity` jobs at once.
    pub fn join(&self, host_id: String, capacity: usize) -> Joined {
        let id = rand::random::<u64>();
        let session = Arc::new(Session {
            id,
            host_id: host_id.clone(),
            capacity: capacity.max(1),
            fenced: RwLock::new(false),
            state: Mutex::new(SessionState {
                last_seen: Instant::now(),
                unclaimed: VecDeque::new(),
                assigned: HashMap::new(),
                executions: HashMap::new(),
            }),
            offered: Notify::new(),
            executed: AtomicU64::new(0),
        });
        self.sessions().insert(id, session);
        self.resize();
        tracing::info!(
            worker = host_id,
            session = id,
            capacity,
            "a worker host joined"
        );
        Joined {
            session: id,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// Lets the scheduler execute as many jobs at once as this host and
    /// its workers together can: each host is a machine's worth of slots.
    fn resize(&self) {
        let workers: usize = self.sessions().values().map(|s| s.capacity).sum();
        let slots = self.local_capacity.saturating_add(workers);
        self.scheduler
            .set_slots(u32::try_from(slots).unwrap_or(u32::MAX));
    }

    /// Whether a worker could take another job now.
    fn has_spare(&self) -> bool {
        self.sessions()
            .values()
            .any(|s| s.state().assigned.len() < s.capacity)
    }

    /// Where `job` executes: on the worker least loaded for its capacity
    /// (a receiver told when it is done there), or here (`None`), when this
    /// host is less loaded than every worker. Workers win ties: the leader
    /// also serves every request. With `here_full` (this host's guest
    /// memory is spoken for) any worker with room wins.
    ///
    /// The job counts against the worker's capacity at once, and is
    /// offered to it with [`Workers::offer`].
    fn assign(
        &self,
        job: &Job,
        here_full: bool,
    ) -> Option<(Arc<Session>, oneshot::Receiver<Ended>)> {
        let sessions = self.sessions();
        let local = if here_full {
            f64::INFINITY
        } else {
            self.local.load(Ordering::Relaxed) as f64 / self.local_capacity as f64
        };
        let mut best: Option<(f64, &Arc<Session>)> = None;
        for session in sessions.values() {
            let assigned = session.state().assigned.len();
            if assigned >= session.capacity {
                continue;
            }
            let load = assigned as f64 / session.capacity as f64;
            if load <= local && best.is_none_or(|(least, _)| load < least) {
                best = Some((load, session));
            }
        }
        let (_, session) = best?;
        let (done, ended) = oneshot::channel();
        session.state().assigned.insert(job.clone(), done);
        Some((session.clone(), ended))
    }

    /// Offers `job`, assigned to `session`, to its next claim, once every
    /// change applied so far is durable: the worker reads the run's steps
    /// and events from the database, and a change that rides with the
    /// next flush (a child's end that completed the run's invoke, say)
    /// must be there. If the journal cannot flush, the job goes back.
    async fn offer(&self, session: &Session, job: Job) -> Result<(), Ended> {
        if let Err(error) = self.runs.settled().await {
            tracing::error!(run = %job.run, error = format!("{error:#}"), "could not flush before handing a job to a worker; resuming it in 1 s");
            session.state().assigned.remove(&job);
            return Err(Some(Duration::from_secs(1)));
        }
        session.state().unclaimed.push_back(job);
        session.offered.notify_one();
        Ok(())
    }

    /// The tenants' generation (see [`super::wire::Claimed`]).
    pub fn generation(&self) -> u64 {
        self.runs.terms_generation()
    }

    /// The jobs handed to session `id` since its last claim, waiting up to
    /// a third of the ttl for one. A claim is also the worker's heartbeat.
    pub async fn claim(&self, id: u64) -> Result<Vec<Job>, SessionFenced> {
        let session = self.session(id)?;
        let deadline = tokio::time::Instant::now() + self.ttl / 3;
        loop {
            {
                let mut state = session.state();
                state.last_seen = Instant::now();
                if !state.unclaimed.is_empty() {
                    return Ok(state.unclaimed.drain(..).collect());
                }
            }
            if *session.fenced.read().await {
                return Err(SessionFenced(id));
            }
            tokio::select! {
                _ = session.offered.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    session.touch();
                    return Ok(Vec::new());
                }
            }
        }
    }

    /// Applies what an execution in session `id` asks of its run, unless
    /// the session is fenced off.
    pub async fn call(&self, id: u64, ask: Ask) -> Result<Answer> {
        let session = self.session(id)?;
        let fenced = session.fenced.read().await;
        if *fenced {
            return Err(SessionFenced(id).into());
        }
        session.touch();
        let runs = &self.runs;
        Ok(match ask {
            Ask::Run(key) => Answer::Run(RunAccess::run(runs, &key).await?.map(Box::new)),
            Ask::Start(key) => {
                let started = RunAccess::start(runs, &key).await?;
                Answer::Run(started.map(|(run, execution)| {
                    session.state().executions.insert(Job::run(key), execution);
                    Box::new(run)
                }))
            }
            Ask::Enter(key, seq) => {
                let entered = RunAccess::enter(runs, &key, seq).await?;
                Answer::Entered(entered.is_some_and(|execution| {
                    let job = Job {
                        run: key,
                        branch: Some(seq),
                    };
                    session.state().executions.insert(job, execution);
                    true
                }))
            }
            Ask::Record {
                key,
                output,
                transition,
            } => {
                self.output(&key, output)?;
                Answer::Recorded(Runs::record(runs, &key, *transition).await?)
            }
            Ask::Ingest { tenant, events } => {
                Answer::Ingested(RunAccess::ingest(runs, &tenant, events).await?)
            }
            Ask::StorageUsed(tenant) => Answer::Bytes(Runs::storage_used(runs, &tenant)),
            Ask::EventBudgetWait(tenant, count) => {
                Answer::Wait(Runs::event_budget_wait(runs, &tenant, count))
            }
            Ask::BranchPending(key, seq) => Answer::Pending(Runs::branch_pending(runs, &key, seq)),
            Ask::Terms(tenant) => Answer::Terms(runs.tenant_terms(&tenant)),
            Ask::Function(tenant, id) => {
                Answer::Function(RunAccess::function(runs, &tenant, &id).await?.map(Box::new))
            }
        })
    }

    fn output(&self, key: &RunKey, output: Vec<LogChunk>) -> Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        Runs::record_output(&self.runs, key, output)
    }

    /// Job `job` of session `id` ended; its run wakes again after
    /// `again_after` if set.
    pub async fn done(
        &self,
        id: u64,
        job: Job,
        output: Vec<LogChunk>,
        again_after: Option<Duration>,
    ) -> Result<()> {
        let session = self.session(id)?;
        let fenced = session.fenced.read().await;
        if *fenced {
            return Err(SessionFenced(id).into());
        }
        self.output(&job.run, output)?;
        let (execution, done) = {
            let mut state = session.state();
            state.last_seen = Instant::now();
            (state.executions.remove(&job), state.assigned.remove(&job))
        };
        // The run state machine stops counting the execution before the
        // scheduler may start the job again.
        drop(execution);
        if let Some(done) = done {
            let _ = done.send(again_after);
        }
        session.executed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Fences session `id` off: the worker left, or went silent.
    pub async fn fence(&self, id: u64, why: &str) {
        let Some(session) = self.sessions().remove(&id) else {
            return;
        };
        *session.fenced.write().await = true;
        let (assigned, executions) = {
            let mut state = session.state();
            state.unclaimed.clear();
            (
                std::mem::take(&mut state.assigned),
                std::mem::take(&mut state.executions),
            )
        };
        drop(executions);
        self.resize();
        tracing::warn!(
            worker = session.host_id,
            session = session.id,
            jobs = assigned.len(),
            "{why}: the worker's session is fenced off and its jobs execute again elsewhere"
        );
        for (_, done) in assigned {
            let _ = done.send(Some(Duration::ZERO));
        }
        session.offered.notify_waiters();
    }

    /// The sessions open, for `/health`.
    pub fn view(&self) -> Vec<WorkerView> {
        let mut view: Vec<WorkerView> = self
            .sessions()
            .values()
            .map(|session| WorkerView {
                host_id: session.host_id.clone(),
                executing: session.state().assigned.len(),
                executed: session.executed.load(Ordering::Relaxed),
            })
            .collect();
        view.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        view
    }

    /// Jobs executing on this host.
    pub fn executing_here(&self) -> usize {
        self.local.load(Ordering::Relaxed)
    }
}

/// Fences off every session not heard from for the ttl, until the
/// sessions are gone.
async fn reap(workers: std::sync::Weak<Workers>) {
    loop {
        let Some(every) = workers.upgrade().map(|w| w.ttl / 4) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(workers) = workers.upgrade() else {
            return;
        };
        let silent: Vec<u64> = workers
            .sessions()
            .values()
            .filter(|s| s.state().last_seen.elapsed() > workers.ttl)
            .map(|s| s.id)
            .collect();
        for id in silent {
            workers
                .fence(id, "a worker host stopped claiming for the lease's ttl")
                .await;
        }
    }
}

/// The leader's [`Dispatch`]: each job executes here or on a worker host,
/// whichever is less loaded.
pub struct SharedDispatch {
    /// This host's executor.
    pub local: Arc<RunDriver>,
    /// The worker sessions.
    pub workers: Arc<Workers>,
}

/// Counts a job executing on this host while it lives.
struct ExecutingHere(Arc<Workers>);

impl Drop for ExecutingHere {
    fn drop(&mut self) {
        self.0.local.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch for SharedDispatch {
    fn drive(self: Arc<Self>, job: Job) -> BoxFuture {
        let here_full = !self.local.has_room(&job.run.tenant);
        if let Some((session, ended)) = self.workers.assign(&job, here_full) {
            let workers = self.workers.clone();
            return Box::pin(async move {
                if let Err(again) = workers.offer(&session, job).await {
                    return again;
                }
                // Fenced off: the sender is dropped, and the job executes
                // again.
                ended.await.unwrap_or(Some(Duration::ZERO))
            });
        }
        self.workers.local.fetch_add(1, Ordering::Relaxed);
        let here = ExecutingHere(self.workers.clone());
        let local = self.local.clone();
        Box::pin(async move {
            let ended = local.drive(job).await;
            drop(here);
            ended
        })
    }

    fn has_room(&self, tenant: &str) -> bool {
        self.local.has_room(tenant) || self.workers.has_spare()
    }

    fn reserve(&self, job: &Job) -> Box<dyn Send> {
        self.local.reserve(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::journal::{GroupCommit, Journal, SledJournal};
    use crate::model::FixedClock;
    use crate::scheduler::{SchedulerLoops, SlotPolicy};

    /// A run state machine on a temp dir (nothing executes: the
    /// scheduler's loops are never started), and its worker sessions.
    struct Leader {
        _dir: tempfile::TempDir,
        _loops: SchedulerLoops,
        workers: Arc<Workers>,
    }

    fn leader(ttl: Duration, local_capacity: usize) -> Leader {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(&dir.path().join("j")).unwrap());
        let clock = FixedClock::at(1_767_225_600_000);
        let (scheduler, loops) = Scheduler::new(SlotPolicy::default(), clock.clone());
        let config = crate::config::HostConfig::new(dir.path().to_path_buf());
        let tenants = Arc::new(
            crate::tenants::Tenants::load(journal.clone(), &config, clock.clone()).unwrap(),
        );
        let runs = Arc::new(Runs::new(
            journal.clone(),
            GroupCommit::start(journal),
            Arc::new(Catalog::default()),
            scheduler.clone(),
            tenants,
            clock,
            Default::default(),
        ));
        Leader {
            _dir: dir,
            _loops: loops,
            workers: Workers::start(runs, scheduler, ttl, local_capacity),
        }
    }

    fn job(run: &str) -> Job {
        Job::run(RunKey::new("t", run))
    }

    #[tokio::test]
    async fn a_job_goes_to_the_least_loaded_host_and_workers_win_ties() {
        let leader = leader(Duration::from_secs(60), 2);
        let workers = &leader.workers;
        assert!(
            workers.assign(&job("r0"), false).is_none(),
            "no workers: here"
        );
        workers.join("w".into(), 2);
        let (_, _first) = workers
            .assign(&job("r1"), false)
            .expect("a tie: the worker");
        // The worker is half busy, this host idle: here.
        assert!(workers.assign(&job("r2"), false).is_none());
        workers.local.fetch_add(1, Ordering::Relaxed);
        let (_, _second) = workers.assign(&job("r3"), false).expect("a tie again");
        // The worker is full: here, however busy this host is.
        workers.local.fetch_add(5, Ordering::Relaxed);
        assert!(workers.assign(&job("r4"), false).is_none());
        assert!(!workers.has_spare());
        assert_eq!(workers.view()[0].executing, 2);
    }

    #[tokio::test]
    async fn with_its_memory_spoken_for_this_host_sends_a_job_to_any_worker_with_room() {
        let leader = leader(Duration::from_secs(60), 100);
        let workers = &leader.workers;
        workers.join("w".into(), 4);
        let (_, _a) = workers.assign(&job("a"), false).unwrap();
        assert!(
            workers.assign(&job("b"), false).is_none(),
            "1/4 busy against 0/100"
        );
        assert!(
            workers.assign(&job("b"), true).is_some(),
            "this host is full"
        );
    }

    #[tokio::test]
    async fn a_claim_takes_what_was_offered_and_a_fenced_session_gives_its_jobs_back() {
        let leader = leader(Duration::from_secs(60), 1);
        let workers = &leader.workers;
        let session = workers.join("w".into(), 2).session;
        let (assigned, ended) = workers.assign(&job("r1"), false).unwrap();
        workers.offer(&assigned, job("r1")).await.unwrap();
        assert_eq!(workers.claim(session).await.unwrap(), vec![job("r1")]);

        workers.fence(session, "a test").await;
        assert_eq!(
            ended.await.unwrap(),
            Some(Duration::ZERO),
            "the job executes again at once"
        );
        assert!(workers.claim(session).await.is_err());
        let refused = workers
            .call(session, Ask::StorageUsed("t".into()))
            .await
            .unwrap_err();
        assert!(
            refused.downcast_ref::<SessionFenced>().is_some(),
            "{refused:#}"
        );
        let refused = workers
            .done(session, job("r1"), Vec::new(), None)
            .await
            .unwrap_err();
        assert!(
            refused.downcast_ref::<SessionFenced>().is_some(),
            "{refused:#}"
        );
        assert!(workers.view().is_empty());
    }

    #[tokio::test]
    async fn done_tells_the_scheduler_when_to_wake_the_run_again() {
        let leader = leader(Duration::from_secs(60), 1);
        let workers = &leader.workers;
        let session = workers.join("w".into(), 1).session;
        let (assigned, ended) = workers.assign(&job("r1"), false).unwrap();
        workers.offer(&assigned, job("r1")).await.unwrap();
        let answer = workers
            .call(session, Ask::StorageUsed("t".into()))
            .await
            .unwrap();
        assert!(matches!(answer, Answer::Bytes(_)), "{answer:?}");
        workers
            .done(session, job("r1"), Vec::new(), Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(ended.await.unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(workers.view()[0].executed, 1);
        assert!(workers.has_spare(), "its slot is free again");
    }

    #[tokio::test]
    async fn fencing_waits_for_a_call_in_progress() {
        let leader = leader(Duration::from_secs(60), 1);
        let workers = leader.workers.clone();
        let session = workers.join("w".into(), 1).session;
        let held = workers.session(session).unwrap();
        let in_progress = held.fenced.read().await;
        let fencing = tokio::spawn({
            let workers = workers.clone();
            async move { workers.fence(session, "a test").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!fencing.is_finished(), "the fence waits for the call");
        drop(in_progress);
        tokio::time::timeout(Duration::from_secs(5), fencing)
            .await
            .expect("the fence goes on once the call is over")
            .unwrap();
        assert!(*held.fenced.read().await);
    }

    #[tokio::test]
    async fn a_session_that_stops_claiming_for_the_ttl_is_fenced_off() {
        let leader = leader(Duration::from_millis(200), 1);
        let workers = &leader.workers;
        let session = workers.join("w".into(), 1).session;
        let (assigned, ended) = workers.assign(&job("r1"), false).unwrap();
        workers.offer(&assigned, job("r1")).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("fenced off within a few ttls");
        assert_eq!(back.unwrap(), Some(Duration::ZERO));
        assert!(workers.claim(session).await.is_err());
    }
}
