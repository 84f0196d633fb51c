//! The executor: wasmtime, compiled components, and the `step` host calls.
//! Host calls read the journal and write nothing themselves: what they
//! change goes through the run state machine, mostly as a
//! [`crate::runs::Transition`] of their own run.
//!
//! One `Engine` with the pooling allocator and epoch interruption; each app
//! version is compiled once (and cached on disk by content hash and engine),
//! linked once into an `AppPre`, and every run instantiates from that in
//! microseconds. A run keeps its instance from step to step; it is dropped
//! only when the run suspends or ends.
//!
//! Uploads are compiled in [`CompileSlots`] (bounded, fair between
//! tenants) and leave nothing behind when refused (see [`Upload`]).
//!
//! What is shared between tenants, and why it does not leak: compiled code
//! on disk and linked code in memory are shared by content hash, for runs
//! and replays, which only ever use versions their own tenant deployed.
//! Uploads never take a shortcut through them: a tenant's first upload of
//! some bytes is always compiled, linked and inspected from those bytes,
//! and its compiled code written, whether or not another tenant has them;
//! only the tenant's own earlier deploys of the same bytes make a re-upload
//! fast. So how long an upload takes says nothing of other tenants'.

mod budget;
pub mod drain;
mod egress;
mod messages;
mod outcome;
mod parallel;
mod replay;
mod run;
mod sandbox;
mod slots;
mod state;
mod step_calls;

pub use budget::{MemoryBudget, Reserved};
pub use egress::{Egress, OwnAddress, is_internal};

pub use replay::{DeterminismError, Replay};
pub use run::{ReplayReport, ReplayVerdict, RunDriver};
pub use sandbox::HTTP_OUTSIDE_STEP;
pub use slots::{CompileSlot, CompileSlots};
pub use step_calls::MAX_SUSPEND_MS;

use crate::config::Limits;
use crate::journal::RunJournal;
use crate::retry::Backoff;
use crate::runs::RunAccess;
use crate::wit::types::FunctionConfig;
use crate::wit::{App, AppPre};
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use state::RunState;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

/// The imports a component may have (prefixes of their names): the step
/// interface and WASI 0.2. Python's and JavaScript's runtimes import the
/// filesystem and sockets whatever the app does, so those are linked too,
/// but they grant nothing: no directory is preopened (no path resolves)
/// and TCP, UDP and name lookups are denied. Outgoing HTTP goes through
/// `wasi:http`, inside step bodies, to the tenant's allowed hosts.
const PROVIDED_IMPORTS: &[&str] = &[
    "stepwise:durable/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:io/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/outgoing-handler@",
    "wasi:http/types@",
];

/// How often the epoch advances: the time slice of a guest between yields.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long `functions()` may run at upload, in epoch ticks (5 s).
const REGISTRATION_DEADLINE_TICKS: u64 = 500;

/// What a run's host calls need from the rest of the host.
pub struct RunServices {
    /// Where executions read runs' journals (the read side only: they
    /// write through `runs`).
    pub journal: Arc<dyn RunJournal + Send + Sync>,
    /// The run state machine, which applies every transition a host call
    /// asks for: this host's, or the leading host's (see [`RunAccess`]).
    pub runs: Arc<dyn RunAccess>,
    /// When failed attempts are retried (Inngest's table, or scaled).
    pub backoff: Backoff,
    /// Tenants' limits, for the memory a job reserves as it leaves this
    /// host's queue (executions ask `runs` for their tenant's terms).
    pub tenants: Arc<crate::tenants::Tenants>,
    /// The host's own API address, which step bodies may never call.
    pub own_address: Arc<OwnAddress>,
    /// Whether the default tenant's step bodies may call loopback without
    /// listing it (`dev`).
    pub dev_loopback: bool,
    /// What the default tenant may call besides its allowlist.
    pub default_http_allow: Vec<String>,
    /// Step bodies in progress, held back while the host stops.
    pub drain: Arc<drain::Drain>,
    /// Whether the host exports traces: a step body's outgoing HTTP then
    /// carries its attempt's `traceparent` (see [`crate::traces`]).
    pub traced: bool,
}

/// A component version, linked and ready to instantiate.
pub struct Version {
    pre: AppPre<RunState>,
    /// What `pre` was linked from, for writing it to the cache.
    component: Component,
}

/// Why an upload was refused.
#[derive(Debug)]
pub enum InspectError {
    /// The bytes are not a valid Stepwise app; the message says why and
    /// what to do.
    Invalid(String),
    /// The host failed (storage, I/O).
    Internal(anyhow::Error),
}

/// An upload being checked or deployed, from [`Executor::inspect`]: what
/// it registers and whether it was compiled. Dropped without
/// [`Upload::keep`] (refused, or only replayed), it leaves nothing behind:
/// its linked and compiled code go unless a deployed version or another
/// upload in flight has the same bytes.
pub struct Upload<'a> {
    executor: &'a Executor,
    tenant: String,
    /// The component's content hash: the version's id.
    pub hash: String,
    /// The functions its `functions()` registered.
    pub configs: Vec<FunctionConfig>,
    /// Whether it was compiled for this upload (false: a re-upload of
    /// bytes this tenant deployed before reused their compiled code).
    pub compiled: bool,
    version: Option<Arc<Version>>,
    kept: bool,
}

impl Upload<'_> {
    /// Marks the upload deployed; call once its deploy has committed. If
    /// this upload compiled it, its compiled code is written to the cache,
    /// every time, so that the cost does not depend on whether another
    /// tenant's copy is there; the tenant's re-uploads then reuse it.
    pub async fn keep(mut self) {
        if self.compiled
            && let Some(version) = &self.version
        {
            self.executor
                .write_compiled(&self.hash, &version.component)
                .await;
        }
        if let Some(copy) = self
            .executor
            .lock_uploads()
            .get_mut(&(self.tenant.clone(), self.hash.clone()))
        {
            copy.deployed = true;
        }
        self.kept = true;
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.executor
            .end_upload(&self.tenant, &self.hash, self.kept);
    }
}

/// The hex SHA-256 of a component: its version id.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles, caches and instantiates components.
pub struct Executor {
    engine: Engine,
    linker: Linker<RunState>,
    versions: Mutex<HashMap<String, Arc<OnceCell<Arc<Version>>>>>,
    compiled_dir: PathBuf,
    engine_hash: String,
    journal: Arc<dyn RunJournal + Send + Sync>,
    permits: Arc<Semaphore>,
    limits: Limits,
    /// Guest memory host-wide, which new jobs wait on.
    budget: Arc<MemoryBudget>,
    /// Whether the compiled-code cache is this host's own (so forgotten
    /// versions may be removed from it).
    prune_compiled: bool,
    /// Uploads are compiled in these, fairly between tenants.
    slots: CompileSlots,
    /// Uploads in flight and the bytes each tenant has deployed, by
    /// (tenant, content hash): see [`Upload`].
    uploads: Mutex<HashMap<(String, String), TenantCopy>>,
    /// Where it counts where executions found their code.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// One tenant's uploads of one component.
#[derive(Debug, Default)]
struct TenantCopy {
    /// Uploads of it being inspected or deployed now.
    in_flight: usize,
    /// Whether a deploy of it by this tenant committed (and no collection
    /// dropped it since): the tenant's re-uploads reuse its compiled code.
    deployed: bool,
}

impl Executor {
    /// The executor of a host started with `config`: its compiled-code
    /// cache in `--compiled-dir`, or its own in the data directory (which
    /// it then prunes).
    pub fn for_host(
        config: &crate::config::HostConfig,
        journal: Arc<dyn RunJournal + Send + Sync>,
    ) -> Result<Self> {
        let compiled_dir = config
            .compiled_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("compiled"));
        Executor::new(
            &compiled_dir,
            config.compiled_dir.is_none(),
            journal,
            config.limits.clone(),
        )
    }

    /// An executor keeping compiled code in `compiled_dir`.
    pub fn new(
        compiled_dir: &Path,
        prune_compiled: bool,
        journal: Arc<dyn RunJournal + Send + Sync>,
        limits: Limits,
    ) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_memory_size(limits.max_memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Reserve what a memory may grow to, not wasmtime's 4 GiB per
            // slot: a thousand slots then fit comfortably in address space.
            .memory_reservation(limits.max_memory_bytes as u64)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("stepwise-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        state::link_guest_timers(&mut linker).context("linking guest timers")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        App::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the step interface")?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compiled_dir = compiled_dir.to_path_buf();
        std::fs::create_dir_all(&compiled_dir)
            .with_context(|| format!("creating {}", compiled_dir.display()))?;
        Ok(Executor {
            engine,
            linker,
            versions: Mutex::new(HashMap::new()),
            compiled_dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            journal,
            permits: Arc::new(Semaphore::new(instances as usize)),
            budget: MemoryBudget::new(limits.guest_memory_budget),
            limits,
            prune_compiled,
            slots: CompileSlots::for_cores(),
            uploads: Mutex::new(HashMap::new()),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Counts where executions find their code into `metrics` from now on.
    pub fn report_to(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn code_from(&self, source: crate::metrics::CodeSource) {
        if let Some(metrics) = self.metrics.get() {
            metrics.code_from(source);
        }
    }

    fn compiled_path(&self, hash: &str) -> PathBuf {
        self.compiled_dir
            .join(format!("{hash}-{}.cwasm", self.engine_hash))
    }

    /// Loads the cached compilation of deployed version `hash`, or compiles
    /// the journal's copy of its bytes (and caches that).
    async fn compile(&self, hash: &str) -> Result<Component, InspectError> {
        let path = self.compiled_path(hash);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration (the name carries its compatibility hash)
            // into the host's own data directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => {
                    self.code_from(crate::metrics::CodeSource::disk);
                    return Ok(component);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cached code unusable; recompiling")
                }
            }
        }
        let bytes = self
            .journal
            .component(hash)
            .map_err(InspectError::Internal)?
            .map(Bytes::from)
            .ok_or_else(|| {
                InspectError::Internal(anyhow!("component {hash} is not in the journal"))
            })?;
        let component = self.compile_bytes(bytes).await?;
        self.code_from(crate::metrics::CodeSource::compiled);
        self.write_compiled(hash, &component).await;
        Ok(component)
    }

    /// Compiles `bytes`, on a blocking thread.
    async fn compile_bytes(&self, bytes: Bytes) -> Result<Component, InspectError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| InspectError::Internal(e.into()))?
            .map_err(|e| InspectError::Invalid(not_a_component(&e)))
    }

    /// Writes `component`'s compiled code to the cache as version `hash`,
    /// atomically (hosts sharing the cache may write at once). A failure
    /// costs only a recompile later, so it is logged, not returned.
    async fn write_compiled(&self, hash: &str, component: &Component) {
        let path = self.compiled_path(hash);
        let component = component.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<()> {
            let compiled = component.serialize().map_err(anyhow::Error::from)?;
            let partial = path.with_extension(format!(
                "{}.{}.partial",
                std::process::id(),
                rand::random::<u32>()
            ));
            let written =
                std::fs::write(&partial, compiled).and_then(|()| std::fs::rename(&partial, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written.with_context(|| format!("writing {}", path.display()))
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|written| written);
        if let Err(error) = written {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not cache compiled code"
            );
        }
    }

    /// Refuses a component that imports an interface Stepwise does not
    /// give guests (files, sockets), naming it, before anything runs.
    fn check_imports(&self, component: &Component) -> Result<(), InspectError> {
        for (name, _) in component.component_type().imports(&self.engine) {
            if !PROVIDED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                return Err(InspectError::Invalid(format!(
                    "the component imports {name}, which Stepwise does not provide: a Stepwise app may import the stepwise:durable interfaces and WASI 0.2 (cli, clocks, random, io, filesystem and sockets with nothing granted, and http's outgoing handler); build it against the app world in wit/"
                )));
            }
        }
        Ok(())
    }

    fn link(&self, component: &Component) -> Result<Version, InspectError> {
        self.check_imports(component)?;
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            InspectError::Invalid(format!(
                "the component needs an import Stepwise does not provide: {e:#}. A Stepwise app may import only the stepwise:durable step interface and WASI 0.2 (cli, clocks, random, io, http)"
            ))
        })?;
        let pre = AppPre::new(pre).map_err(|e| {
            InspectError::Invalid(format!(
                "the component is not a Stepwise app: {e:#}. Build it against the stepwise:durable/app world in wit/ (it must export `functions` and `handle`); the Rust SDK's export_app! macro does this"
            ))
        })?;
        Ok(Version {
            pre,
            component: component.clone(),
        })
    }

    /// Forgets version `hash` (no app of any tenant keeps it, no run needs
    /// it): its linked code leaves memory, its compiled code the cache
    /// unless hosts share it, and any tenant's re-upload of it is compiled
    /// again.
    pub fn forget(&self, hash: &str) {
        let mut uploads = self.lock_uploads();
        uploads.retain(|(_, h), copy| {
            if h == hash {
                copy.deployed = false;
            }
            h != hash || copy.in_flight > 0
        });
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
        if self.prune_compiled {
            let _ = std::fs::remove_file(self.compiled_path(hash));
        }
    }

    /// Forgets each tenant's deploys of the versions none of its apps keeps
    /// any more (`kept`: tenant → versions its apps keep), so that its
    /// re-upload of them is compiled again, as anyone's first upload is:
    /// whether it is fast must not depend on whether another tenant still
    /// keeps the same bytes.
    pub fn forget_uploads(&self, kept: &HashMap<String, HashSet<String>>) {
        self.lock_uploads().retain(|(tenant, hash), copy| {
            let keeps = kept.get(tenant).is_some_and(|k| k.contains(hash));
            if !keeps {
                copy.deployed = false;
            }
            keeps || copy.in_flight > 0
        });
    }

    /// The linked version `hash` (deployed: its bytes are in the journal),
    /// compiled or loaded from the cache once, for runs and replays.
    pub async fn version(&self, hash: &str) -> Result<Arc<Version>> {
        let cell = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash.to_string())
            .or_default()
            .clone();
        if let Some(version) = cell.get() {
            self.code_from(crate::metrics::CodeSource::memory);
            return Ok(version.clone());
        }
        cell.get_or_try_init(|| async {
            let component = self.compile(hash).await?;
            Ok(Arc::new(self.link(&component)?))
        })
        .await
        .cloned()
        .map_err(|e| match e {
            InspectError::Invalid(message) => anyhow!(message),
            InspectError::Internal(error) => error,
        })
    }

    /// Checks an upload of `tenant` and reads its registration, in one of
    /// the tenant's compile slots: compiles it, links it, and calls
    /// `functions()` in a sandbox with a deadline. Only a re-upload of
    /// bytes the tenant itself deployed reuses compiled code; anything else
    /// is compiled from `bytes`, whoever else has them (see the module's
    /// note). Drop the [`Upload`] to refuse it, leaving nothing behind, or
    /// [`Upload::keep`] it once deployed.
    pub async fn inspect(
        &self,
        tenant: &str,
        bytes: Bytes,
        max_component_bytes: usize,
    ) -> Result<Upload<'_>, InspectError> {
        if bytes.len() > max_component_bytes {
            return Err(InspectError::Invalid(format!(
                "the component is {} bytes; at most {max_component_bytes} are accepted (ask the operator to raise this tenant's component limit, or make the component smaller)",
                bytes.len(),
            )));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(InspectError::Invalid(
                "the upload is not WebAssembly (it does not start with \\0asm); upload the .wasm component built with `cargo build --target wasm32-wasip2`".into(),
            ));
        }
        let mut upload = self.begin_upload(tenant, content_hash(&bytes));
        let _slot = self.slots.acquire(tenant).await;
        let reused = if self.deployed_by(tenant, &upload.hash) {
            match self.version(&upload.hash).await {
                Ok(version) => Some(version),
                Err(error) => {
                    tracing::warn!(version = %upload.hash, error = format!("{error:#}"), "a deployed version could not be loaded; compiling the upload");
                    None
                }
            }
        } else {
            None
        };
        let version = match reused {
            Some(version) => version,
            None => {
                let component = self.compile_bytes(bytes).await?;
                let version = Arc::new(self.link(&component)?);
                // Runs and replays find versions by hash: share this one
                // unless a copy is there already (the same code).
                let cell = self
                    .versions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(upload.hash.clone())
                    .or_default()
                    .clone();
                let _ = cell.set(version.clone());
                upload.compiled = true;
                version
            }
        };
        upload.configs = self.read_functions(&version).await?;
        upload.version = Some(version);
        Ok(upload)
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), TenantCopy>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin_upload(&self, tenant: &str, hash: String) -> Upload<'_> {
        self.lock_uploads()
            .entry((tenant.to_string(), hash.clone()))
            .or_default()
            .in_flight += 1;
        Upload {
            executor: self,
            tenant: tenant.to_string(),
            hash,
            configs: Vec::new(),
            compiled: false,
            version: None,
            kept: false,
        }
    }

    fn deployed_by(&self, tenant: &str, hash: &str) -> bool {
        self.lock_uploads()
            .get(&(tenant.to_string(), hash.to_string()))
            .is_some_and(|copy| copy.deployed)
    }

    /// An upload of `hash` by `tenant` is over. If it was refused and no
    /// other upload of the same bytes is in flight or deployed (in the
    /// journal), whatever it made goes: linked code, compiled code.
    fn end_upload(&self, tenant: &str, hash: &str, kept: bool) {
        let mut uploads = self.lock_uploads();
        let key = (tenant.to_string(), hash.to_string());
        if let Some(copy) = uploads.get_mut(&key) {
            copy.in_flight = copy.in_flight.saturating_sub(1);
            if copy.in_flight == 0 && !copy.deployed {
                uploads.remove(&key);
            }
        }
        if kept
            || uploads
                .iter()
                .any(|((_, h), copy)| h == hash && copy.in_flight > 0)
        {
            return;
        }
        // Still holding `uploads`: no upload of these bytes can start or
        // commit until this is done.
        match self.journal.has_component(hash) {
            Ok(false) => {}
            Ok(true) => return,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), version = %hash, "could not tell whether a refused upload is deployed; keeping its code");
                return;
            }
        }
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
        if self.prune_compiled {
            let path = self.compiled_path(hash);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed a refused upload's compiled code")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "could not remove a refused upload's compiled code")
                }
            }
        }
    }

    /// The registration of version `hash` (compiled and linked already or
    /// now), read from a fresh instance: what a run start costs, plus one
    /// call.
    pub async fn registration(&self, hash: &str) -> Result<Vec<FunctionConfig>> {
        let version = self.version(hash).await?;
        self.read_functions(&version).await.map_err(|e| match e {
            InspectError::Invalid(message) => anyhow!(message),
            InspectError::Internal(error) => error,
        })
    }

    async fn read_functions(&self, version: &Version) -> Result<Vec<FunctionConfig>, InspectError> {
        let mut store = self.store(RunState::new(
            "registration",
            0,
            &self.limits,
            Egress {
                allow: Arc::new(Vec::new()),
                loopback: false,
                own: Arc::new(OwnAddress::default()),
            },
            None,
        ));
        store.set_epoch_deadline(REGISTRATION_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| InspectError::Internal(e.into()))?;
        let app = version
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| InspectError::Invalid(format!("the component failed to start: {e:#}")))?;
        app.call_functions(&mut store).await.map_err(|e| {
            // What the guest printed (a Rust panic message, a Python
            // traceback) usually says why.
            let printed: String = store
                .data()
                .output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .into_iter()
                .map(|chunk| chunk.text)
                .collect();
            let printed = printed.trim();
            let printed = if printed.is_empty() {
                String::new()
            } else {
                let shown: String = printed.chars().take(2_000).collect();
                format!("; it printed: {shown}")
            };
            InspectError::Invalid(format!(
                "the component's functions() failed: {e:#}{printed}"
            ))
        })
    }

    /// The host-wide budget of guest memory.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// A store for one execution, bounded and time-sliced.
    /// Every epoch tick the guest yields (so other runs get the cores), and
    /// counts the tick against its CPU limit: past it, it traps with
    /// [`outcome::Interrupt::CpuLimit`].
    fn store(&self, mut state: RunState) -> Store<RunState> {
        state.flags.set_in_step(false);
        if let Some(session) = &state.session {
            let branch = match session.role {
                state::Role::Branch(seq) => Some(seq),
                _ => None,
            };
            let job = (session.run.key.clone(), branch);
            let version = session.run.version.clone();
            let guessed = state
                .store_limits
                .charge_to(self.budget.clone(), &job, &version);
            if let Some(guessed) = guessed {
                tokio::spawn(async move {
                    tokio::time::sleep(budget::SETTLE).await;
                    guessed.correct();
                });
            }
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.store_limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| {
            let state = context.data();
            if state.flags.tick_cpu(state.cpu_ticks) {
                let ms = state.cpu_ticks * EPOCH_TICK.as_millis() as u64;
                return Err(outcome::Interrupt::CpuLimit(ms).trap());
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        store
    }
}

fn not_a_component(error: &wasmtime::Error) -> String {
    format!(
        "the upload is not a valid WebAssembly component ({error:#}); build a component with `cargo build --target wasm32-wasip2` (a core module is not enough)"
    )
}
