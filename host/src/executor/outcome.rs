//! Markers a host call traps with, to end an execution for a reason the
//! run driver must tell apart from a guest's own trap.

use crate::model::ErrorRecord;
use std::fmt;

/// The run suspended itself (sleep, wait, retry backoff): its state is in the
/// journal, the instance can be dropped.
#[derive(Debug)]
pub struct Suspended;

/// The run must fail now, without retries (determinism error, a broken
/// protocol, a limit).
#[derive(Debug)]
pub struct RunFault(pub ErrorRecord);

/// The run's code made different step calls than its journal records.
#[derive(Debug)]
pub struct Diverged(pub super::DeterminismError);

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeterminismError: {}", self.0)
    }
}

impl std::error::Error for Diverged {}

/// A trap for a determinism error (the run fails; a dry replay reports it).
pub fn diverged(error: super::DeterminismError) -> wasmtime::Error {
    wasmtime::Error::new(Diverged(error))
}

/// A dry replay reached a call the journal does not hold (or has not
/// finished): everything before it matched.
#[derive(Debug)]
pub struct ReplayEnd;

/// The run ended (cancelled) while it was executing.
#[derive(Debug)]
pub struct Ended;

/// The guest ran longer than its tenant's CPU limit without making a host
/// call (a step body, or the code between two steps).
#[derive(Debug)]
pub struct CpuLimit(pub u64);

impl fmt::Display for CpuLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU limit exceeded: the code ran for more than {} ms without returning to the host (an endless loop?); a step body, and the code between two steps, may use at most that",
            self.0
        )
    }
}

impl std::error::Error for CpuLimit {}

/// A step body ran longer than its tenant's step timeout, wall clock (it
/// may have been waiting, not computing: a guest-side sleep, a slow call).
#[derive(Debug)]
pub struct StepTimeout(pub u64);

impl fmt::Display for StepTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the attempt ran for more than {} ms of wall-clock time, the step timeout; it was stopped and is retried by the function's retries (an operator can raise the limit: `stepwise tenant limits NAME --step-timeout 10m`)",
            self.0
        )
    }
}

impl std::error::Error for StepTimeout {}

/// The host could not do its part (storage failed): the run is left as the
/// journal has it and resumed later.
#[derive(Debug)]
pub struct HostFault(pub String);

impl fmt::Display for Suspended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("run suspended")
    }
}

impl fmt::Display for RunFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.name, self.0.message)
    }
}

impl fmt::Display for ReplayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("replay reached the end of the journal")
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("run ended while executing")
    }
}

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host fault: {}", self.0)
    }
}

impl std::error::Error for Suspended {}
impl std::error::Error for RunFault {}
impl std::error::Error for Ended {}
impl std::error::Error for ReplayEnd {}
impl std::error::Error for HostFault {}

/// A trap that fails the run with `name: message`.
pub fn fault(name: &str, message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(RunFault(ErrorRecord::fatal(name, message)))
}

/// A trap for a storage failure.
pub fn host_fault(error: anyhow::Error) -> wasmtime::Error {
    wasmtime::Error::new(HostFault(format!("{error:#}")))
}

/// The trap that ends a dry replay.
pub fn replay_end() -> wasmtime::Error {
    wasmtime::Error::new(ReplayEnd)
}
