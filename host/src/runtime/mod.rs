//! A running host: the parts wired together, and the operations the API and
//! CLI offer (deploy, send, cancel) that span several of them.
//!
//! App versions (listing, rollback, replay checks, collection) are in
//! [`versions`].

pub mod versions;

use crate::catalog::Catalog;
use crate::config::HostConfig;
use crate::executor::{Executor, InspectError, OwnAddress, ReplayReport, RunDriver, RunServices};
use crate::journal::{Batch, GroupCommit, Journal, Op, PgJournal, SledJournal};
use crate::model::Clock;
use crate::model::ErrorName;
use crate::model::IncomingEvent;
use crate::model::{AppRecord, ErrorRecord, FunctionRecord, RunKey, RunRecord, RunStatus};
pub use crate::runs::CancelError;
use crate::runs::{Accepted, Runs};
use crate::scheduler::{Scheduler, SlotPolicy};
use crate::tenants::Tenants;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The upload or its registration is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such app or version.
    #[error("{0}")]
    NotFound(String),
    /// A function id already belongs to another app.
    #[error("{0}")]
    Conflict(String),
    /// A replay of recorded runs on the new version diverged.
    #[error("{} of the {} runs replayed diverge on this version; it was not deployed", .0.diverged, .0.runs.len())]
    Diverged(versions::ReplayCheck),
    /// The host failed (storage, I/O), not the request: the API answers 500
    /// and logs it in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<InspectError> for DeployError {
    fn from(error: InspectError) -> Self {
        match error {
            InspectError::Invalid(message) => DeployError::Invalid(message),
            InspectError::Internal(error) => DeployError::Internal(error),
        }
    }
}

/// What a deploy registered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    /// The app's name.
    pub app: String,
    /// The version's content hash.
    pub version: String,
    /// Whether the version is new to this app.
    pub changed: bool,
    /// Whether this deploy compiled the component: false only when this
    /// tenant deployed the same bytes before (since the host started), never
    /// because another tenant did.
    pub compiled: bool,
    /// The functions the version registers.
    pub functions: Vec<FunctionRecord>,
}

/// A running host: what the API, the CLI's `serve` and the tests hold to
/// reach every part of it.
pub struct Stepwise {
    /// The only code that touches storage; readers query it directly.
    pub journal: Arc<dyn Journal>,
    /// Group commit: one flush for many writers; await it before telling
    /// anyone a change happened.
    pub commit: GroupCommit,
    /// Deployed functions by tenant and trigger, for routing events.
    pub catalog: Arc<Catalog>,
    /// The run state machine, the only writer of run state: events,
    /// transitions, timers and their effects.
    pub runs: Arc<Runs>,
    /// Which jobs execute now and which timers wake them later.
    pub scheduler: Scheduler,
    /// Compiles components and runs guests (wasmtime).
    pub executor: Arc<Executor>,
    /// Tenants, their keys, limits and allowlists.
    pub tenants: Arc<Tenants>,
    /// The settings it started with.
    pub config: HostConfig,
    /// Where its API listens (set once bound): step bodies may not call it.
    pub own_address: Arc<OwnAddress>,
    pub(crate) driver: Arc<RunDriver>,
    /// Worker hosts' sessions, when this host shares its jobs with them.
    pub workers: Option<Arc<crate::work::Workers>>,
    /// What deploys wait for: no host-wide lock (see [`crate::deploys`]).
    pub(crate) deploys: crate::deploys::DeployLocks,
    /// What `GET /metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Step bodies in progress; once stopping, no new one begins.
    pub drain: Arc<crate::executor::drain::Drain>,
}

/// A host's levels, read at scrape time (weakly: the metrics belong to
/// the host).
struct HostLevels(std::sync::Weak<Stepwise>);

impl crate::metrics::LevelSource for HostLevels {
    fn levels(&self) -> crate::metrics::Levels {
        use crate::model::TimerKind;
        let Some(host) = self.0.upgrade() else {
            return crate::metrics::Levels::default();
        };
        let (mut sleeping, mut waiting) = (HashSet::new(), HashSet::new());
        host.scheduler.for_each_timer(|timer| match timer.kind {
            TimerKind::Sleep
            | TimerKind::StepRetry
            | TimerKind::RunRetry
            | TimerKind::DelayedStart => {
                sleeping.insert(timer.key.clone());
            }
            TimerKind::WaitTimeout | TimerKind::InvokeTimeout => {
                waiting.insert(timer.key.clone());
            }
            TimerKind::StartTimeout | TimerKind::FinishTimeout => {}
        });
        let tenants: Vec<String> = host.tenants.list().into_iter().map(|t| t.name).collect();
        let usage = host.journal.usage();
        crate::metrics::Levels {
            executing: host.scheduler.active_runs() as u64,
            queued: tenants
                .iter()
                .map(|t| (t.clone(), host.scheduler.queued_of(t) as u64))
                .collect(),
            sleeping: sleeping.len() as u64,
            waiting: waiting.len() as u64,
            timers: host.scheduler.armed_timers() as u64,
            instance_memory: host.executor.memory_budget().used(),
            instance_memory_budget: host.config.limits.guest_memory_budget,
            workers: host.workers.as_ref().map(|w| w.view().len() as u64),
            stored: tenants.iter().map(|t| (t.clone(), usage.used(t))).collect(),
            disk_syncs: host.journal.disk_syncs(),
        }
    }
}

/// Why events were refused (nothing of the request was accepted).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The tenant sent more events per second than it may.
    #[error("this tenant may send {per_second} events per second; retry in {retry_after_ms} ms")]
    TooFast {
        /// Events per second the tenant may send.
        per_second: u32,
        /// How long until the events would fit, ms.
        retry_after_ms: u64,
    },
    /// The tenant has as many runs waiting as it may.
    #[error(
        "this tenant has {queued} runs waiting to execute, the most it may now (its own queued-runs limit, or its share of the host's, which all tenants share); retry when they have started (or ask the operator to raise the limit)"
    )]
    QueueFull {
        /// The tenant's runs waiting to execute now.
        queued: usize,
    },
    /// One request holds more events than the tenant may send in a second:
    /// it could never fit.
    #[error(
        "this request has {count} events, more than this tenant may send in a second ({per_second}); send batches of at most {per_second}"
    )]
    BatchOverRate {
        /// Events in the request.
        count: usize,
        /// Events per second the tenant may send.
        per_second: u32,
    },
    /// The tenant stores as much as its quota allows.
    #[error(
        "StorageQuotaExceeded: this tenant stores {used} bytes of events and run journals, and its quota is {quota}; no more events are accepted until old data is deleted or the operator raises the quota (stepwise tenant limits NAME --storage SIZE)"
    )]
    StorageQuotaExceeded {
        /// Logical bytes the tenant stores now (events and run journals).
        used: u64,
        /// The most it may store.
        quota: u64,
    },
    /// The host failed (storage, I/O), not the request: the API answers 500
    /// and logs it in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The journal `config` names: PostgreSQL at `store`, else sled in the
/// data directory (keys an older release kept in clear moved out first).
fn open_journal(config: &HostConfig) -> Result<Arc<dyn Journal>> {
    if let Some(url) = &config.store {
        return Ok(Arc::new(PgJournal::open_fenced(url, config.fence.clone())?));
    }
    let journal_dir = config.data_dir.join("journal");
    let mut opened = SledJournal::open(&journal_dir)?;
    if crate::tenants::has_clear_keys(&opened)? {
        // The migration rewrites the journal's files: it needs them
        // closed.
        drop(opened);
        crate::tenants::migrate_clear_keys(&journal_dir, &config.data_dir)?;
        opened = SledJournal::open(&journal_dir)?;
    }
    if !config.journal_fsync {
        opened = opened.without_fsync();
    }
    Ok(Arc::new(opened))
}

impl Stepwise {
    /// Opens the journal (see `open_journal`), starts the scheduler, and
    /// resumes every run that was queued, running, sleeping or waiting.
    /// Call from inside a tokio runtime.
    pub async fn start(config: HostConfig) -> Result<Arc<Self>> {
        Self::start_with_clock(config, Arc::new(crate::model::SystemClock)).await
    }

    /// [`Stepwise::start`], with every read of the time (transitions,
    /// timers, crons, tenants' keys and rates) from `clock`: a clock moved
    /// by hand runs a host in virtual time.
    pub async fn start_with_clock(config: HostConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        // Every tenant's data and key hashes live here: 0700, files 0600,
        // and so is every file made from now on (sled makes its own).
        crate::journal::restrict_new_files();
        crate::journal::make_private(&config.data_dir).with_context(|| {
            format!("preparing the data directory {}", config.data_dir.display())
        })?;
        let journal = open_journal(&config)?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let commit = GroupCommit::start(journal.clone());
        commit.report_to(metrics.clone());
        let catalog = Arc::new(Catalog::load(journal.as_ref())?);
        let slots = SlotPolicy {
            slots: config.limits.max_executing.max(1),
            share: config.limits.executing_share,
            reserve: config.limits.executing_reserve,
        };
        let (scheduler, loops) = Scheduler::new(slots, clock.clone());
        let tenants = Arc::new(Tenants::load(journal.clone(), &config, clock.clone())?);
        let runs = Arc::new(Runs::new(
            journal.clone(),
            commit.clone(),
            catalog.clone(),
            scheduler.clone(),
            tenants.clone(),
            clock,
            metrics.clone(),
        ));
        if let Some(endpoint) = &config.otlp_endpoint {
            runs.trace_to(crate::traces::Traces::start(endpoint, journal.clone())?);
        }
        let executor = Arc::new(Executor::for_host(&config, journal.clone())?);
        executor.report_to(metrics.clone());
        commit.durable().await?;
        let own_address = Arc::new(OwnAddress::default());
        let drain = Arc::new(crate::executor::drain::Drain::default());
        let services = Arc::new(RunServices {
            journal: journal.clone(),
            runs: Arc::new(runs.clone()),
            backoff: config.backoff,
            tenants: tenants.clone(),
            own_address: own_address.clone(),
            dev_loopback: config.dev_loopback,
            default_http_allow: config.default_http_allow.clone(),
            drain: drain.clone(),
            traced: config.otlp_endpoint.is_some(),
        });

        let poke = scheduler.clone();
        executor.memory_budget().on_room(move || poke.poke());
        let driver = Arc::new(RunDriver::new(executor.clone(), services));
        // Among several hosts, jobs execute here or on worker hosts.
        let workers = config.share_work.map(|ttl| {
            crate::work::Workers::start(
                runs.clone(),
                scheduler.clone(),
                ttl,
                config.limits.max_executing as usize,
            )
        });
        let dispatch: Arc<dyn crate::scheduler::Dispatch> = match &workers {
            Some(workers) => Arc::new(crate::work::SharedDispatch {
                local: driver.clone(),
                workers: workers.clone(),
            }),
            None => driver.clone(),
        };
        loops.start(&scheduler, dispatch, runs.clone());
        let host = Arc::new(Stepwise {
            journal,
            commit,
            catalog,
            runs,
            scheduler,
            executor,
            tenants,
            config,
            own_address,
            driver,
            workers,
            deploys: crate::deploys::DeployLocks::default(),
            metrics,
            drain,
        });
        host.metrics
            .read_levels_from(Arc::new(HostLevels(Arc::downgrade(&host))));
        host.recover()?;
        tokio::spawn(host.runs.clone().run_crons());
        tokio::spawn(housekeeping(Arc::downgrade(&host)));
        Ok(host)
    }

    /// Begins stopping (SIGTERM): the API answers 503 from now on, step
    /// bodies in progress finish, and no new one begins. Then wait for
    /// [`Stepwise::drained`] and flush.
    pub fn begin_stopping(&self) {
        self.drain.start();
    }

    /// Whether [`Stepwise::begin_stopping`] was called.
    pub fn stopping(&self) -> bool {
        self.drain.draining()
    }

    /// Returns once no step body is in progress, or after `patience`
    /// (then the bodies left run again after the restart); says which.
    pub async fn drained(&self, patience: std::time::Duration) -> bool {
        tokio::time::timeout(patience, self.drain.idle())
            .await
            .is_ok()
    }

    /// Re-arms every timer and wakes every run that was executing or queued.
    fn recover(&self) -> Result<()> {
        let timers = self.journal.timers()?;
        let armed = timers.len();
        for timer in timers {
            self.scheduler.add_timer(timer);
        }
        let mut resumed = 0;
        for run in self.journal.active_runs()? {
            if matches!(run.status(), RunStatus::Queued | RunStatus::Running)
                && run.wake_at().is_none()
            {
                self.scheduler.wake(run.key);
                resumed += 1;
            }
        }
        let crons = self.runs.arm_crons()?;
        tracing::info!(
            resumed,
            armed,
            crons,
            "recovered runs, timers and cron schedules from the journal"
        );
        Ok(())
    }

    /// Deploys `bytes` as `deploy` does, first refusing them (with the
    /// report) if a replay of the app's recorded runs diverges on them.
    pub async fn deploy_checked(
        &self,
        tenant: &str,
        app: &str,
        bytes: bytes::Bytes,
    ) -> Result<Deployed, DeployError> {
        self.deploy_upload(tenant, app, bytes, true).await
    }

    /// A receiver told of every run that ends from now on.
    pub fn subscribe_ended(&self) -> tokio::sync::broadcast::Receiver<RunKey> {
        self.runs.subscribe_ended()
    }

    /// Replays a run against its journal (on `version`, default its own)
    /// without executing or writing anything: does the code make the calls
    /// the journal records?
    pub async fn replay(&self, key: &RunKey, version: Option<&str>) -> Result<ReplayReport> {
        self.driver.replay(key, version).await
    }

    /// Accepts events: stores them, starts and resumes runs. Within the
    /// tenant's limits (events per second, runs queued), or none of them.
    pub async fn send(
        &self,
        tenant: &str,
        events: Vec<IncomingEvent>,
    ) -> Result<Accepted, SendError> {
        let limits = self.tenants.limits(tenant);
        let used = self.journal.usage().used(tenant);
        if used >= limits.storage_bytes {
            return Err(SendError::StorageQuotaExceeded {
                used,
                quota: limits.storage_bytes,
            });
        }
        let per_second = limits.events_per_second;
        if per_second > 0 && events.len() > per_second as usize {
            return Err(SendError::BatchOverRate {
                count: events.len(),
                per_second,
            });
        }
        let queued = self.scheduler.queued_of(tenant);
        if !limits.queue_has_room(queued, self.scheduler.queued_total()) {
            return Err(SendError::QueueFull { queued });
        }
        self.tenants
            .take_events(tenant, events.len())
            .map_err(|retry_after_ms| SendError::TooFast {
                per_second: limits.events_per_second,
                retry_after_ms,
            })?;
        Ok(self.runs.ingest(tenant, events).await?)
    }

    /// Deploys `bytes` as a new version of `app`: new runs of its functions
    /// use it; runs in flight stay on the version they started with.
    pub async fn deploy(
        &self,
        tenant: &str,
        app: &str,
        bytes: bytes::Bytes,
    ) -> Result<Deployed, DeployError> {
        self.deploy_upload(tenant, app, bytes, false).await
    }

    /// Deploys `bytes` (first refusing them if `check_replay` and a replay
    /// of the app's recorded runs diverges). The versions of one app are
    /// deployed in turn; other apps and tenants do not wait (see
    /// [`crate::deploys`]). A refused upload leaves nothing behind.
    async fn deploy_upload(
        &self,
        tenant: &str,
        app: &str,
        bytes: bytes::Bytes,
        check_replay: bool,
    ) -> Result<Deployed, DeployError> {
        check_app_name(app).map_err(DeployError::Invalid)?;
        let _in_turn = self.deploys.app(tenant, app).await;
        // Dropped on any refusal below, which removes what it made.
        let mut upload = self
            .executor
            .inspect(
                tenant,
                bytes.clone(),
                self.tenants.limits(tenant).max_component_bytes,
            )
            .await?;
        if check_replay {
            let check = self.replay_upload(tenant, app, &upload).await?;
            if check.diverged > 0 {
                return Err(DeployError::Diverged(check));
            }
        }
        let hash = upload.hash.clone();
        let compiled = upload.compiled;
        let configs = std::mem::take(&mut upload.configs);
        let functions = crate::registration::functions(tenant, app, &hash, configs)
            .map_err(|error| DeployError::Invalid(error.to_string()))?;
        let committing = self.deploys.commit(tenant).await;
        for function in &functions {
            if let Some(other) = self.catalog.get(tenant, &function.id)
                && other.app != app
            {
                return Err(DeployError::Conflict(format!(
                    "function {:?} already belongs to app {:?}; rename it, or remove it from that app first",
                    function.id, other.app
                )));
            }
        }
        let previous = self.journal.app(tenant, app)?;
        let changed = previous.as_ref().is_none_or(|p| p.version != hash);
        // Written whether or not the bytes are stored already (by another
        // tenant perhaps): the same cost either way.
        let mut batch: Batch = vec![Op::PutComponent {
            hash: hash.clone(),
            bytes,
        }];
        let ids: HashSet<&str> = functions.iter().map(|f| f.id.as_str()).collect();
        let removed: Vec<String> = previous
            .iter()
            .flat_map(|p| p.functions.iter())
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect();
        for old in &removed {
            batch.push(Op::DeleteFunction {
                tenant: tenant.into(),
                id: old.clone(),
            });
        }
        let (mut versions, mut deployed) = previous
            .map(|p| (p.versions, p.deployed))
            .unwrap_or_default();
        versions.retain(|v| *v != hash);
        versions.push(hash.clone());
        let now = self.runs.now_ms();
        deployed.insert(hash.clone(), now);
        batch.push(Op::PutApp(AppRecord {
            tenant: tenant.into(),
            name: app.into(),
            version: hash.clone(),
            functions: functions.iter().map(|f| f.id.clone()).collect(),
            deployed_at: now,
            versions,
            deployed,
        }));
        batch.extend(functions.iter().cloned().map(Op::PutFunction));
        self.journal.apply(batch)?;
        self.catalog.replace_app(tenant, app, functions.clone());
        self.runs.schedule_crons(tenant, &removed, &functions)?;
        self.commit.durable().await?;
        upload.keep().await;
        drop(committing);
        tracing::info!(tenant, app, version = %hash, compiled, functions = functions.len(), "deployed");
        let collecting = self.deploys.collect().await;
        if let Err(error) = self.collect_versions().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not collect old versions"
            );
        }
        drop(collecting);
        Ok(Deployed {
            app: app.into(),
            version: hash,
            changed,
            compiled,
            functions,
        })
    }

    /// Cancels a run that has not ended: it stops where it is, its timers
    /// and waiters are removed, and it never resumes.
    pub async fn cancel(&self, key: &RunKey) -> Result<RunRecord, CancelError> {
        self.runs
            .cancel(
                key,
                ErrorRecord::fatal(ErrorName::Cancelled, "the run was cancelled"),
            )
            .await
    }

    /// Cancels every run of `function` (or of every function) in `tenant`
    /// created between `from` and `until` (ms) that has not ended.
    pub async fn cancel_many(
        &self,
        tenant: &str,
        function: Option<&str>,
        from: u64,
        until: u64,
    ) -> Result<Vec<String>> {
        self.runs.cancel_many(tenant, function, from, until).await
    }
}

/// Once the host is quiet after a burst of executions, gives freed heap
/// back to the operating system; now and then, drops app versions no run
/// needs any more. Stops with the host.
async fn housekeeping(host: std::sync::Weak<Stepwise>) {
    const COLLECT_EVERY: u32 = 300;
    let mut trimmed_at = 0;
    let mut sweeper = crate::runs::Sweeper::default();
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Some(host) = host.upgrade() else { return };
        let executions = host.scheduler.executions();
        if executions != trimmed_at && host.scheduler.active_runs() == 0 {
            crate::memory::release_free_memory();
            trimmed_at = executions;
        }
        if let Some(usage) = host.journal.usage().changed_snapshot() {
            let save = Op::PutSetting {
                name: crate::journal::usage::USAGE_SETTING.into(),
                value: usage,
            };
            if let Err(error) = host.journal.apply(vec![save]) {
                tracing::warn!(error = format!("{error:#}"), "could not save storage usage");
            }
        }
        match host.runs.sweep(&mut sweeper).await {
            Ok(deleted) if deleted.iter().any(|(_, n)| *n > 0) => {
                let deleted: Vec<String> = deleted
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(kind, n)| format!("{n} {}", kind.name()))
                    .collect();
                tracing::debug!(deleted = deleted.join(", "), "retention");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "retention could not delete old records; it tries again"
                )
            }
        }
        ticks += 1;
        if ticks.is_multiple_of(COLLECT_EVERY) {
            let _no_commits = host.deploys.collect().await;
            if let Err(error) = host.collect_versions().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not collect old versions"
                );
            }
        }
    }
}

/// App names appear in URLs and keys.
pub fn check_app_name(name: &str) -> Result<(), String> {
    crate::model::check_name_part("app", name)
}
