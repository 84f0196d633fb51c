//! Host settings, with the defaults a user of Inngest would expect.

use crate::model::TenantLimits;
use crate::retry::Backoff;
use std::path::PathBuf;

/// Bounds on what guests may use. The host's are the defaults of every
/// tenant; a tenant's own ([`TenantLimits`]) replace them for it
/// ([`Limits::for_tenant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Step calls per run (Inngest's default is 1,000).
    pub max_steps_per_run: u32,
    /// Linear memory per instance (also the pool's slot size: a tenant may
    /// get less, not more).
    pub max_memory_bytes: usize,
    /// Table elements per instance.
    pub max_table_elements: u32,
    /// Instances alive at once, host-wide (the pooling allocator's size).
    pub max_instances: u32,
    /// Jobs (runs or parallel branches) executing at once, host-wide; the
    /// rest wait in the queue. More than a few hundred buys no throughput
    /// on a small machine and leaves the heap fragmented after a burst.
    pub max_executing: u32,
    /// Jobs executing at once per tenant.
    pub max_tenant_executing: u32,
    /// Runs waiting in the queue per tenant.
    pub max_queued_runs: u32,
    /// Events accepted per second per tenant (0: no limit).
    pub events_per_second: u32,
    /// One event, bytes (Inngest: 512 KiB).
    pub max_event_bytes: usize,
    /// One step output, bytes (Inngest: 4 MiB).
    pub max_step_output_bytes: usize,
    /// Step outputs of one run, bytes in all (Inngest: 32 MiB of run state).
    pub max_journal_bytes_per_run: u64,
    /// An uploaded component, bytes.
    pub max_component_bytes: usize,
    /// CPU time of a step body, or of the code between two steps, ms.
    pub cpu_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps_per_run: 1_000,
            max_memory_bytes: 256 * 1024 * 1024,
            max_table_elements: 1_000_000,
            max_instances: 1_000,
            max_executing: 256,
            max_tenant_executing: 256,
            max_queued_runs: 1_000_000,
            events_per_second: 0,
            max_event_bytes: crate::events::MAX_EVENT_BYTES,
            max_step_output_bytes: 4 * 1024 * 1024,
            max_journal_bytes_per_run: 32 * 1024 * 1024,
            max_component_bytes: 64 * 1024 * 1024,
            cpu_ms: 30_000,
        }
    }
}

impl Limits {
    /// The bounds of a tenant with `overrides`: each set one replaces the
    /// host's, except that memory cannot exceed the pool's slot.
    pub fn for_tenant(&self, overrides: &TenantLimits) -> Limits {
        let size = |value: Option<u64>, default: usize| {
            value
                .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
                .unwrap_or(default)
        };
        Limits {
            max_steps_per_run: overrides.steps_per_run.unwrap_or(self.max_steps_per_run),
            max_memory_bytes: size(overrides.memory_bytes, self.max_memory_bytes)
                .min(self.max_memory_bytes),
            max_table_elements: overrides.table_elements.unwrap_or(self.max_table_elements),
            max_instances: self.max_instances,
            max_executing: self.max_executing,
            max_tenant_executing: overrides
                .executing
                .unwrap_or(self.max_tenant_executing)
                .max(1),
            max_queued_runs: overrides.queued_runs.unwrap_or(self.max_queued_runs),
            events_per_second: overrides
                .events_per_second
                .unwrap_or(self.events_per_second),
            max_event_bytes: size(overrides.event_bytes, self.max_event_bytes),
            max_step_output_bytes: size(overrides.step_output_bytes, self.max_step_output_bytes),
            max_journal_bytes_per_run: overrides
                .journal_bytes_per_run
                .unwrap_or(self.max_journal_bytes_per_run),
            max_component_bytes: size(overrides.component_bytes, self.max_component_bytes),
            cpu_ms: overrides.cpu_ms.unwrap_or(self.cpu_ms).max(10),
        }
    }
}

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the journal and the compiled-code cache live.
    pub data_dir: PathBuf,
    /// Where compiled components are cached (default `data_dir/compiled`);
    /// hosts of the same build may share one.
    pub compiled_dir: Option<PathBuf>,
    /// The default tenant's event key; generated and kept in the journal
    /// when not given.
    pub event_key: Option<String>,
    /// The operator's key for managing tenants (`/v1/tenants`); tenant
    /// management is off without one.
    pub admin_key: Option<String>,
    /// Refuse `/v1` calls without a management key (otherwise they act for
    /// the default tenant, as in dev mode).
    pub require_keys: bool,
    /// When failed attempts are retried.
    pub backoff: Backoff,
    /// Guest bounds (every tenant's defaults).
    pub limits: Limits,
    /// Versions kept per app for rollbacks, besides the current one and
    /// those runs are on.
    pub keep_versions: usize,
}

impl HostConfig {
    /// Defaults: Inngest's backoff and limits; data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        HostConfig {
            data_dir,
            compiled_dir: None,
            event_key: None,
            admin_key: None,
            require_keys: false,
            backoff: Backoff::default(),
            limits: Limits::default(),
            keep_versions: crate::versions::KEEP_VERSIONS,
        }
    }
}
