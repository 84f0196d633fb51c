//! Host settings, with the defaults a user of Inngest would expect.

use crate::model::TenantLimits;
use crate::retry::Backoff;
use std::path::PathBuf;

/// Largest event by default, as in Inngest (a tenant's limit may differ).
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
/// Versions kept per app by default besides the current one and those runs
/// are on, so that a rollback has somewhere to go.
pub const KEEP_VERSIONS: usize = 5;

/// Bounds on what guests may use. The host's are the defaults of every
/// tenant; a tenant's own ([`TenantLimits`]) replace them for it
/// ([`Limits::for_tenant`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Jobs executing at once per tenant: a hard cap (by default the
    /// host's, so that a tenant alone may use every slot).
    pub max_tenant_executing: u32,
    /// Jobs each tenant may start even when others hold all
    /// `max_executing` slots: its guaranteed share (host-wide setting).
    pub executing_share: u32,
    /// Slots beyond `max_executing` that only tenants below their share may
    /// use: started steps cannot be preempted, so without them a tenant
    /// holding every slot with slow steps would starve the rest until its
    /// steps end (host-wide setting).
    pub executing_reserve: u32,
    /// Wall-clock time one attempt of a step body may take, ms; then the
    /// attempt fails with `StepTimeoutError` and is retried by the usual
    /// rules. The CPU limit does not bound a body that waits (a guest-side
    /// sleep, a slow HTTP call); this does.
    pub step_timeout_ms: u64,
    /// Guest memory host-wide, bytes: what executing instances have grown
    /// to, in all. While it is spent new jobs wait in the queue (host-wide
    /// setting; default half the machine's memory).
    pub guest_memory_budget: u64,
    /// Logical bytes a tenant may store (its events and run journals);
    /// past it its events are refused with `StorageQuotaExceeded`.
    pub storage_bytes: u64,
    /// How long ended runs (with their journals and output) and accepted
    /// events are kept before retention deletes them, ms.
    pub retention_ms: u64,
    /// Runs waiting in the queue per tenant.
    pub max_queued_runs: u32,
    /// Runs waiting in the queue host-wide (host-wide setting; default
    /// from the machine's memory): each costs about 1–2 KiB of memory, so
    /// the caps follow memory rather than trusting every tenant's own.
    /// Past it, only tenants with few runs queued may queue more (up to a
    /// quarter beyond it).
    pub host_queued_runs: u64,
    /// Events accepted per second per tenant (0: no limit).
    pub events_per_second: u32,
    /// Events accepted per second by a tenant made with `tenant create`
    /// when its own limit is not set: its event key ships inside apps, so
    /// it is bounded from the start (a full Inngest batch of 5,000 fits).
    pub created_tenant_events_per_second: u32,
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
            executing_share: 32,
            executing_reserve: 64,
            step_timeout_ms: 5 * 60 * 1_000,
            guest_memory_budget: default_budget(),
            storage_bytes: 10 << 30,
            retention_ms: 7 * 24 * 60 * 60 * 1_000,
            max_queued_runs: 100_000,
            host_queued_runs: default_host_queued_runs(),
            events_per_second: 0,
            created_tenant_events_per_second: 5_000,
            max_event_bytes: MAX_EVENT_BYTES,
            max_step_output_bytes: 4 * 1024 * 1024,
            max_journal_bytes_per_run: 32 * 1024 * 1024,
            max_component_bytes: 64 * 1024 * 1024,
            cpu_ms: 30_000,
        }
    }
}

/// Half the machine's physical memory: the default budget (leaving the
/// rest to the host itself, its store's cache and the system).
pub fn default_budget() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 when unknown.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 4 << 30;
    }
    (pages as u64).saturating_mul(page as u64) / 2
}

/// A sixteenth of the machine's memory at 2 KiB a queued run (about
/// 800,000 on a 24 GiB machine).
fn default_host_queued_runs() -> u64 {
    (default_budget() / 8 / 2048).max(10_000)
}

impl Limits {
    /// Whether a tenant with `queued` runs waiting may queue one more while
    /// `total` wait host-wide: under its own cap, and under the host's
    /// (or, past it, if it has few queued: a sixty-fourth of the host's
    /// cap, up to a quarter beyond it).
    pub fn queue_has_room(&self, queued: usize, total: usize) -> bool {
        let (queued, total) = (queued as u64, total as u64);
        let host = self.host_queued_runs;
        queued < u64::from(self.max_queued_runs)
            && (total < host || (queued < host / 64 && total < host.saturating_add(host / 4)))
    }

    /// [`Limits::for_tenant`] for a tenant made with `tenant create`: the
    /// same, except that its events per second default to
    /// `created_tenant_events_per_second`.
    pub fn for_created_tenant(&self, overrides: &TenantLimits) -> Limits {
        let mut limits = self.for_tenant(overrides);
        if overrides.events_per_second.is_none() {
            limits.events_per_second = self.created_tenant_events_per_second;
        }
        limits
    }

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
            max_tenant_executing: overrides
                .executing
                .unwrap_or(self.max_tenant_executing)
                .max(1),
            storage_bytes: overrides.storage_bytes.unwrap_or(self.storage_bytes),
            retention_ms: overrides.retention_ms.unwrap_or(self.retention_ms),
            step_timeout_ms: overrides
                .step_timeout_ms
                .unwrap_or(self.step_timeout_ms)
                .max(10),
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
            // Host-wide settings (slots, budgets, caps) no tenant overrides.
            ..self.clone()
        }
    }
}

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the journal (unless `store`) and the compiled-code cache
    /// live.
    pub data_dir: PathBuf,
    /// Whether sled's flushes are synced to the disk itself (fdatasync),
    /// so that an acknowledged step survives a power cut; off, only a
    /// process kill (see [`crate::journal::disk_sync`]).
    pub journal_fsync: bool,
    /// The OTLP/HTTP collector to export run traces to (its base URL), if
    /// any (see [`crate::traces`]).
    pub otlp_endpoint: Option<String>,
    /// A PostgreSQL URL to keep the journal in, instead of sled in
    /// `data_dir`.
    pub store: Option<String>,
    /// The lease every write to `store` must hold, when other hosts may
    /// share it (`serve` sets it once it leads).
    pub fence: Option<crate::cluster::Fence>,
    /// The secret hosts on one database prove a forwarded request with
    /// (see [`crate::api::forward`]).
    pub forwarding_secret: Option<String>,
    /// Hand jobs to worker hosts (the standbys on the same database, see
    /// [`crate::work`]), fencing a worker off once it has not claimed for
    /// this long: `serve` sets it, to its lease ttl, once it leads.
    pub share_work: Option<std::time::Duration>,
    /// Where compiled components are cached (default `data_dir/compiled`);
    /// hosts of the same build may share one.
    pub compiled_dir: Option<PathBuf>,
    /// The dev-mode default tenant's event key; generated once and kept
    /// (in clear only in a 0600 file of the data directory) when not given.
    /// A new one retires the previous one unless `keep_old_event_key`.
    pub event_key: Option<String>,
    /// With a new `event_key`, leave the previous one valid too.
    pub keep_old_event_key: bool,
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
    /// Let the default tenant's step bodies call loopback addresses without
    /// listing them (`dev`: users call their local services); never the
    /// host's own port.
    pub dev_loopback: bool,
    /// Hosts or exact addresses the default tenant may call besides its
    /// allowlist (`--allow-http`).
    pub default_http_allow: Vec<String>,
}

impl HostConfig {
    /// Defaults: Inngest's backoff and limits; data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        HostConfig {
            data_dir,
            store: None,
            fence: None,
            forwarding_secret: None,
            share_work: None,
            journal_fsync: true,
            otlp_endpoint: None,
            compiled_dir: None,
            event_key: None,
            keep_old_event_key: false,
            admin_key: None,
            require_keys: false,
            backoff: Backoff::default(),
            limits: Limits::default(),
            keep_versions: KEEP_VERSIONS,
            dev_loopback: false,
            default_http_allow: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_runs_are_bounded_per_tenant_and_host_wide_with_room_for_small_tenants() {
        let limits = Limits {
            max_queued_runs: 1_000,
            host_queued_runs: 6_400,
            ..Limits::default()
        };
        assert!(limits.queue_has_room(999, 10));
        assert!(!limits.queue_has_room(1_000, 10), "the tenant's own cap");
        assert!(limits.queue_has_room(500, 6_399));
        assert!(!limits.queue_has_room(500, 6_400), "the host's cap");
        assert!(
            limits.queue_has_room(99, 7_000),
            "a tenant with few queued still gets in"
        );
        assert!(!limits.queue_has_room(99, 8_000), "up to a quarter beyond");
    }
}
