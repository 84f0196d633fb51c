//! Host settings, with the defaults a user of Inngest would expect.

use crate::retry::Backoff;
use std::path::PathBuf;

/// Bounds on what guests may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Step calls per run (Inngest's default is 1,000).
    pub max_steps_per_run: u32,
    /// Linear memory per instance.
    pub max_memory_bytes: usize,
    /// Instances alive at once (the pooling allocator's size).
    pub max_instances: u32,
    /// Jobs (runs or parallel branches) executing at once, host-wide; the
    /// rest wait in the queue. More than a few hundred buys no throughput
    /// on a small machine and leaves the heap fragmented after a burst.
    pub max_executing: u32,
    /// Size of an uploaded component.
    pub max_component_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps_per_run: 1_000,
            max_memory_bytes: 256 * 1024 * 1024,
            max_instances: 1_000,
            max_executing: 256,
            max_component_bytes: 64 * 1024 * 1024,
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
    /// When failed attempts are retried.
    pub backoff: Backoff,
    /// Guest bounds.
    pub limits: Limits,
}

impl HostConfig {
    /// Defaults: Inngest's backoff and limits; data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        HostConfig {
            data_dir,
            compiled_dir: None,
            event_key: None,
            backoff: Backoff::default(),
            limits: Limits::default(),
        }
    }
}
