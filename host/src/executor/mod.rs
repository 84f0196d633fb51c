//! The executor: wasmtime, compiled components, and the `step` host calls.
//!
//! One `Engine` with the pooling allocator and epoch interruption; each app
//! version is compiled once (and cached on disk by content hash and engine),
//! linked once into an `AppPre`, and every run instantiates from that in
//! microseconds. A run keeps its instance from step to step; it is dropped
//! only when the run suspends or ends.

mod bindings;
mod host;
mod messages;
mod outcome;
mod parallel;
mod replay;
mod run;
mod sandbox;
mod state;

pub use bindings::stepwise::durable::types as wit;
pub use host::MAX_SUSPEND_MS;
pub use replay::{DeterminismError, Replay};
pub use run::{ReplayReport, ReplayVerdict, RunDriver};
pub use sandbox::HTTP_OUTSIDE_STEP;

use crate::catalog::Catalog;
use crate::config::Limits;
use crate::events::Events;
use crate::journal::{GroupCommit, Journal};
use crate::retry::Backoff;
use crate::scheduler::Scheduler;
use anyhow::{Context, Result, anyhow};
use bindings::{App, AppPre};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use state::RunState;
use std::collections::HashMap;
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
    /// Storage.
    pub journal: Arc<dyn Journal>,
    /// Shared flushes.
    pub commit: GroupCommit,
    /// The ingestion order, for waiters and run transitions.
    pub events: Arc<Events>,
    /// The deployed functions (for `invoke`).
    pub catalog: Arc<Catalog>,
    /// Timers and wake-ups.
    pub scheduler: Scheduler,
    /// Retry delays.
    pub backoff: Backoff,
    /// Tenants' limits and allowlists.
    pub tenants: Arc<crate::tenants::Tenants>,
    /// Told of every run that ends (for waiters such as the benchmark).
    pub ended: tokio::sync::broadcast::Sender<crate::model::RunKey>,
}

/// A component version, linked and ready to instantiate.
pub struct Version {
    pre: AppPre<RunState>,
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
    journal: Arc<dyn Journal>,
    permits: Arc<Semaphore>,
    limits: Limits,
    /// Whether the compiled-code cache is this host's own (so forgotten
    /// versions may be removed from it).
    prune_compiled: bool,
}

impl Executor {
    /// An executor keeping compiled code in `compiled_dir`.
    pub fn new(
        compiled_dir: &Path,
        prune_compiled: bool,
        journal: Arc<dyn Journal>,
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
            limits,
            prune_compiled,
        })
    }

    fn compiled_path(&self, hash: &str) -> PathBuf {
        self.compiled_dir
            .join(format!("{hash}-{}.cwasm", self.engine_hash))
    }

    /// Compiles `bytes` (or loads the cached compilation of `hash`).
    async fn compile(&self, hash: &str, bytes: Option<Bytes>) -> Result<Component, InspectError> {
        let path = self.compiled_path(hash);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration (the name carries its compatibility hash)
            // into the host's own data directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cached code unusable; recompiling")
                }
            }
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => self
                .journal
                .component(hash)
                .map_err(InspectError::Internal)?
                .map(Bytes::from)
                .ok_or_else(|| {
                    InspectError::Internal(anyhow!("component {hash} is not in the journal"))
                })?,
        };
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| InspectError::Internal(e.into()))?
            .map_err(|e| InspectError::Invalid(not_a_component(&e)))?;
        match component.serialize() {
            Ok(compiled) => {
                // A unique name: hosts sharing the cache may compile at once.
                let partial = path.with_extension(format!(
                    "{}.{}.partial",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                let written = std::fs::write(&partial, compiled)
                    .and_then(|()| std::fs::rename(&partial, &path));
                if let Err(error) = written {
                    tracing::warn!(path = %path.display(), %error, "could not cache compiled code");
                }
            }
            Err(error) => tracing::warn!(%error, "could not serialise compiled code"),
        }
        Ok(component)
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
        Ok(Version { pre })
    }

    /// Forgets version `hash` (no run needs it any more): its linked code
    /// leaves memory, and its compiled code the cache unless hosts share it.
    pub fn forget(&self, hash: &str) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
        if self.prune_compiled {
            let _ = std::fs::remove_file(self.compiled_path(hash));
        }
    }

    /// The linked version `hash`, compiled (or loaded from the cache) once.
    pub async fn version(&self, hash: &str) -> Result<Arc<Version>> {
        self.version_from(hash, None).await.map_err(|e| match e {
            InspectError::Invalid(message) => anyhow!(message),
            InspectError::Internal(error) => error,
        })
    }

    async fn version_from(
        &self,
        hash: &str,
        bytes: Option<Bytes>,
    ) -> Result<Arc<Version>, InspectError> {
        let cell = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let component = self.compile(hash, bytes).await?;
            Ok(Arc::new(self.link(&component)?))
        })
        .await
        .cloned()
    }

    /// Checks an upload and reads its registration: compiles it, links it,
    /// and calls `functions()` in a sandbox with a deadline.
    pub async fn inspect(
        &self,
        bytes: Bytes,
        max_component_bytes: usize,
    ) -> Result<(String, Vec<wit::FunctionConfig>), InspectError> {
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
        let hash = content_hash(&bytes);
        let version = self.version_from(&hash, Some(bytes)).await?;
        let configs = self.read_functions(&version).await?;
        Ok((hash, configs))
    }

    /// The registration of version `hash` (compiled and linked already or
    /// now), read from a fresh instance: what a run start costs, plus one
    /// call.
    pub async fn registration(&self, hash: &str) -> Result<Vec<wit::FunctionConfig>> {
        let version = self.version(hash).await?;
        self.read_functions(&version).await.map_err(|e| match e {
            InspectError::Invalid(message) => anyhow!(message),
            InspectError::Internal(error) => error,
        })
    }

    async fn read_functions(
        &self,
        version: &Version,
    ) -> Result<Vec<wit::FunctionConfig>, InspectError> {
        let mut store = self.store(RunState::new(
            "registration",
            0,
            &self.limits,
            Arc::new(Vec::new()),
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

    /// A store for one execution, bounded and time-sliced.
    /// Every epoch tick the guest yields (so other runs get the cores), and
    /// counts the tick against its CPU limit: past it, it traps with
    /// [`outcome::CpuLimit`].
    fn store(&self, state: RunState) -> Store<RunState> {
        state.flags.set_in_step(false);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.store_limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| {
            let state = context.data();
            if state.flags.tick_cpu(state.cpu_ticks) {
                let ms = state.cpu_ticks * EPOCH_TICK.as_millis() as u64;
                return Err(wasmtime::Error::new(outcome::CpuLimit(ms)));
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
