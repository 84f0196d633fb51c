//! A worker host's side: claims jobs from the leader, executes them in its
//! own sandbox, and asks the leader for every change to their runs.
//!
//! It reads what never changes once written (steps, events, components)
//! from the database itself, and asks the leader for the rest: the run,
//! its tenant's terms (kept until the leader says tenants changed) and
//! functions to invoke. It writes nothing to the database.

use super::leader::SessionFenced;
use super::wire::{self, Answer, Ask, Call, Claimed, Done, InSession, Join, Joined};
use crate::api::forward::{FORWARDING_KEY, Role};
use crate::config::HostConfig;
use crate::executor::{Executor, OwnAddress, RunDriver, RunServices};
use crate::journal::{Journal, PgJournal};
use crate::model::{FunctionRecord, IncomingEvent, LogChunk, RunKey, RunRecord};
use crate::runs::{ExecutionGuard, Recorded, RunAccess, TenantTerms, Transition};
use crate::scheduler::{Dispatch, Job};
use crate::tenants::Tenants;
use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// What this worker executes, for `/health`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs executing now.
    pub executing: AtomicUsize,
    /// Jobs finished since the host started.
    pub executed: AtomicU64,
    /// The leader and session this host works in, if any.
    session: Mutex<Option<(String, u64)>>,
    /// Set once this host leaves: it joins no session again.
    leaving: AtomicBool,
}

impl WorkerStats {
    /// Tells the leader this host leaves (it stops): the jobs it was
    /// executing go to other hosts at once, not after the ttl.
    pub async fn leave(&self, secret: &str) {
        self.leaving.store(true, Ordering::SeqCst);
        let current = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some((leader, session)) = current else {
            return;
        };
        let left = async {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?;
            let response =
                send(&http, &leader, secret, wire::LEAVE, &InSession { session }).await?;
            answer::<serde_json::Value>(response, wire::LEAVE).await
        };
        match left.await {
            Ok(_) => tracing::info!(
                leader,
                session,
                "left the leader's session: its jobs go to other hosts now"
            ),
            Err(error) => {
                tracing::warn!(leader, session, %error, "could not leave the leader's session: its jobs go to other hosts once it expires")
            }
        }
    }
}

/// A client of the leader's run state machine, within one session.
pub struct Remote {
    http: reqwest::Client,
    leader: String,
    secret: String,
    session: u64,
    /// Output written since the run's last call, sent with its next one.
    output: Mutex<HashMap<RunKey, Vec<LogChunk>>>,
    /// Terms of the tenants whose runs executed here, while fresh.
    terms: Mutex<HashMap<String, TenantTerms>>,
    /// The tenants' generation as of the last claim: older terms are
    /// asked for again.
    generation: AtomicU64,
    /// Set once the leader refused the session.
    fenced: AtomicBool,
    fenced_now: Notify,
}

impl Remote {
    async fn post<T: Serialize, R: DeserializeOwned>(&self, path: &str, body: &T) -> Result<R> {
        let response = send(&self.http, &self.leader, &self.secret, path, body).await?;
        if response.status() == reqwest::StatusCode::CONFLICT {
            self.fenced.store(true, Ordering::SeqCst);
            self.fenced_now.notify_waiters();
            return Err(SessionFenced(self.session).into());
        }
        answer(response, path).await
    }

    async fn ask(&self, ask: Ask) -> Result<Answer> {
        let call = Call {
            session: self.session,
            ask,
        };
        self.post(wire::CALL, &call).await
    }

    fn lock_terms(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantTerms>> {
        self.terms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_output(&self, key: &RunKey) -> Vec<LogChunk> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .unwrap_or_default()
    }

    async fn claim(&self) -> Result<Vec<Job>> {
        let claimed: Claimed = self
            .post(
                wire::CLAIM,
                &InSession {
                    session: self.session,
                },
            )
            .await?;
        self.generation
            .fetch_max(claimed.generation, Ordering::SeqCst);
        Ok(claimed.jobs)
    }

    async fn done(&self, job: Job, again_after: Option<Duration>) -> Result<()> {
        let done = Done {
            session: self.session,
            output: self.take_output(&job.run),
            job,
            again_after_ms: again_after.map(|d| d.as_millis() as u64),
        };
        self.post::<_, serde_json::Value>(wire::DONE, &done).await?;
        Ok(())
    }
}

fn unexpected(answer: Answer) -> anyhow::Error {
    anyhow!("the leading host answered with {answer:?}, not what was asked")
}

#[async_trait]
impl RunAccess for Remote {
    async fn run(&self, key: &RunKey) -> Result<Option<RunRecord>> {
        match self.ask(Ask::Run(key.clone())).await? {
            Answer::Run(run) => Ok(run.map(|run| *run)),
            other => Err(unexpected(other)),
        }
    }

    async fn start(&self, key: &RunKey) -> Result<Option<(RunRecord, ExecutionGuard)>> {
        // The leader keeps the execution registered until the job is done.
        match self.ask(Ask::Start(key.clone())).await? {
            Answer::Run(run) => Ok(run.map(|run| (*run, Box::new(()) as _))),
            other => Err(unexpected(other)),
        }
    }

    async fn enter(&self, key: &RunKey, seq: u32) -> Result<Option<ExecutionGuard>> {
        match self.ask(Ask::Enter(key.clone(), seq)).await? {
            Answer::Entered(true) => Ok(Some(Box::new(()))),
            Answer::Entered(false) => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    async fn record(&self, key: &RunKey, transition: Transition) -> Result<Recorded> {
        let ask = Ask::Record {
            key: key.clone(),
            output: self.take_output(key),
            transition: Box::new(transition),
        };
        match self.ask(ask).await? {
            Answer::Recorded(recorded) => Ok(recorded),
            other => Err(unexpected(other)),
        }
    }

    fn record_output(&self, key: &RunKey, chunks: Vec<LogChunk>) -> Result<()> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .extend(chunks);
        Ok(())
    }

    async fn ingest(&self, tenant: &str, events: Vec<IncomingEvent>) -> Result<Vec<String>> {
        let ask = Ask::Ingest {
            tenant: tenant.to_string(),
            events,
        };
        match self.ask(ask).await? {
            Answer::Ingested(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    fn now_ms(&self) -> u64 {
        crate::model::now_ms()
    }

    async fn storage_used(&self, tenant: &str) -> Result<u64> {
        match self.ask(Ask::StorageUsed(tenant.to_string())).await? {
            Answer::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(other)),
        }
    }

    async fn event_budget_wait(&self, tenant: &str, count: usize) -> Result<Option<u64>> {
        match self
            .ask(Ask::EventBudgetWait(tenant.to_string(), count))
            .await?
        {
            Answer::Wait(wait) => Ok(wait),
            other => Err(unexpected(other)),
        }
    }

    async fn branch_pending(&self, run: &RunKey, seq: u32) -> Result<bool> {
        match self.ask(Ask::BranchPending(run.clone(), seq)).await? {
            Answer::Pending(pending) => Ok(pending),
            other => Err(unexpected(other)),
        }
    }

    async fn terms(&self, tenant: &str) -> Result<TenantTerms> {
        let fresh = self.generation.load(Ordering::SeqCst);
        if let Some(terms) = self.lock_terms().get(tenant)
            && terms.generation >= fresh
        {
            return Ok(terms.clone());
        }
        match self.ask(Ask::Terms(tenant.to_string())).await? {
            Answer::Terms(terms) => {
                self.lock_terms().insert(tenant.to_string(), terms.clone());
                Ok(terms)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn function(&self, tenant: &str, id: &str) -> Result<Option<FunctionRecord>> {
        match self
            .ask(Ask::Function(tenant.to_string(), id.to_string()))
            .await?
        {
            Answer::Function(function) => Ok(function.map(|f| *f)),
            other => Err(unexpected(other)),
        }
    }
}

/// What a worker executes with, read from the database.
struct Equipment {
    journal: Arc<dyn Journal>,
    executor: Arc<Executor>,
    tenants: Arc<Tenants>,
    /// This host's API, which step bodies may not call.
    own_address: Arc<OwnAddress>,
}

/// Executes jobs for whichever host leads, as `role` says, until this
/// host leads itself. `config` is this host's (its `store`, limits and
/// data directory); `secret` proves to the leader that it is a host;
/// step bodies may not call `own`, this host's API.
pub async fn work(
    mut role: watch::Receiver<Role>,
    host_id: String,
    secret: String,
    config: HostConfig,
    own: Option<std::net::SocketAddr>,
    stats: Arc<WorkerStats>,
) -> Result<()> {
    let url = config
        .store
        .clone()
        .context("a worker host needs the database's URL (--store)")?;
    let journal: Arc<dyn Journal> = Arc::new(PgJournal::open(&url)?);
    let executor = Arc::new(Executor::for_host(&config, journal.clone())?);
    // Executions here ask the leader for their tenant's terms: these are
    // only for `RunServices`' memory reservations, which a job makes as it
    // leaves the leader's queue, not here. Only the leader makes the
    // dev-mode default tenant and its keys.
    let mut reading = config.clone();
    reading.require_keys = true;
    reading.event_key = None;
    let tenants = Arc::new(Tenants::load(
        journal.clone(),
        &reading,
        Arc::new(crate::model::SystemClock),
    )?);
    let own_address = Arc::new(OwnAddress::default());
    if let Some(own) = own {
        own_address.set(own);
    }
    let equipment = Arc::new(Equipment {
        journal,
        executor,
        tenants,
        own_address,
    });
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .build()
        .context("making the worker's HTTP client")?;
    loop {
        if stats.leaving.load(Ordering::SeqCst) {
            return Ok(());
        }
        let leader = match &*role.borrow_and_update() {
            Role::Forward(leader) => leader.clone(),
            Role::Starting | Role::Lead(_) => return Ok(()),
        };
        let joined = join(&http, &leader, &secret, &host_id, &config).await;
        let outcome = match joined {
            Ok(joined) => {
                let remote = Arc::new(Remote {
                    http: http.clone(),
                    leader: leader.clone(),
                    secret: secret.clone(),
                    session: joined.session,
                    output: Mutex::new(HashMap::new()),
                    terms: Mutex::new(HashMap::new()),
                    generation: AtomicU64::new(0),
                    fenced: AtomicBool::new(false),
                    fenced_now: Notify::new(),
                });
                tracing::info!(
                    leader,
                    session = joined.session,
                    "executing jobs for the leading host"
                );
                *stats.session.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((leader.clone(), joined.session));
                tokio::select! {
                    ended = session(remote, &equipment, &config, &stats) => ended,
                    _ = role.changed() => Ok(()),
                }
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::warn!(
                leader,
                error = format!("{error:#}"),
                "worker session ended; joining again in 1 s"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = role.changed() => {}
            }
        }
    }
}

async fn join(
    http: &reqwest::Client,
    leader: &str,
    secret: &str,
    host_id: &str,
    config: &HostConfig,
) -> Result<Joined> {
    let join = Join {
        host_id: host_id.to_string(),
        capacity: config.limits.max_executing.max(1) as usize,
    };
    let response = send(http, leader, secret, wire::JOIN, &join).await?;
    answer(response, wire::JOIN).await
}

/// Posts `body` to the leader's `path`, with the hosts' secret.
async fn send<T: Serialize>(
    http: &reqwest::Client,
    leader: &str,
    secret: &str,
    path: &str,
    body: &T,
) -> Result<reqwest::Response> {
    http.post(format!("{leader}{path}"))
        .header(FORWARDING_KEY, secret)
        .json(body)
        .send()
        .await
        .with_context(|| format!("reaching the leading host at {leader}"))
}

/// The leader's answer to `path`, or why it refused.
async fn answer<R: DeserializeOwned>(response: reqwest::Response, path: &str) -> Result<R> {
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("the leading host answered {path} with {status}: {text}");
    }
    response
        .json()
        .await
        .with_context(|| format!("reading the leading host's answer to {path}"))
}

/// Claims and executes jobs in one session until the leader fences it off
/// or cannot be reached. Executions still going when it ends are stopped:
/// the leader has handed their jobs to another host.
async fn session(
    remote: Arc<Remote>,
    equipment: &Equipment,
    config: &HostConfig,
    stats: &Arc<WorkerStats>,
) -> Result<()> {
    let services = Arc::new(RunServices {
        journal: equipment.journal.clone(),
        runs: remote.clone(),
        backoff: config.backoff,
        tenants: equipment.tenants.clone(),
        own_address: equipment.own_address.clone(),
        dev_loopback: config.dev_loopback,
        default_http_allow: config.default_http_allow.clone(),
        drain: Default::default(),
        traced: config.otlp_endpoint.is_some(),
    });
    let driver = Arc::new(RunDriver::new(equipment.executor.clone(), services));
    let mut executing = JoinSet::new();
    let ended = loop {
        if remote.fenced.load(Ordering::SeqCst) {
            break Err(SessionFenced(remote.session).into());
        }
        // A claim in flight is never dropped (the jobs in its answer would
        // be lost until the session is fenced off): only its answer, or
        // the session's end, stops this loop.
        let claim = tokio::spawn({
            let remote = remote.clone();
            async move { remote.claim().await }
        });
        tokio::pin!(claim);
        let jobs = loop {
            tokio::select! {
                claimed = &mut claim => break claimed,
                Some(_) = executing.join_next() => {}
                _ = remote.fenced_now.notified() => {}
            }
            if remote.fenced.load(Ordering::SeqCst) {
                claim.abort();
                break Ok(Err(SessionFenced(remote.session).into()));
            }
        };
        let jobs = match jobs {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(error)) => break Err(error),
            Err(join) => break Err(anyhow!("claiming jobs failed: {join}")),
        };
        for job in jobs {
            let (driver, remote, stats) = (driver.clone(), remote.clone(), stats.clone());
            stats.executing.fetch_add(1, Ordering::Relaxed);
            executing.spawn(async move {
                let again = driver.drive(job.clone()).await;
                if let Err(error) = remote.done(job.clone(), again).await {
                    tracing::warn!(run = %job.run, error = format!("{error:#}"), "could not tell the leader a job ended");
                }
                stats.executing.fetch_sub(1, Ordering::Relaxed);
                stats.executed.fetch_add(1, Ordering::Relaxed);
            });
        }
    };
    let stopped = executing.len();
    executing.abort_all();
    while executing.join_next().await.is_some() {}
    stats.executing.store(0, Ordering::Relaxed);
    if stopped > 0 {
        tracing::warn!(stopped, "stopped this session's executions");
    }
    ended
}
