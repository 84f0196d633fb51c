//! Why an execution stopped other than by returning: host calls and the
//! driver stop a guest by trapping with an [`Interrupt`], and the run driver
//! reads it back with [`Interrupt::of`] to tell a planned stop from a fault
//! or from the guest's own trap.

use crate::model::{ErrorName, ErrorRecord};

/// A stop the host made, carried through wasmtime as a trap.
#[derive(Debug, thiserror::Error)]
pub enum Interrupt {
    /// The run suspended itself (sleep, wait, retry backoff): its state is
    /// in the journal, the instance can be dropped.
    #[error("run suspended")]
    Suspended,
    /// The run ended (cancelled) while it was executing.
    #[error("run ended while executing")]
    Ended,
    /// The run must fail now, without retries (a broken protocol, a limit).
    #[error("{}: {}", .0.name, .0.message)]
    Fault(ErrorRecord),
    /// The run's code made different step calls than its journal records.
    #[error("DeterminismError: {0}")]
    Diverged(super::DeterminismError),
    /// A dry replay reached a call the journal does not hold (or has not
    /// finished): everything before it matched.
    #[error("replay reached the end of the journal")]
    ReplayEnd,
    /// The guest ran longer than its tenant's CPU limit (ms) without making
    /// a host call (a step body, or the code between two steps).
    #[error(
        "CPU limit exceeded: the code ran for more than {0} ms without returning to the host (an endless loop?); a step body, and the code between two steps, may use at most that"
    )]
    CpuLimit(u64),
    /// A step body ran longer than its tenant's step timeout (ms), wall
    /// clock: it may have been waiting, not computing (a guest-side sleep, a
    /// slow call).
    #[error(
        "the attempt ran for more than {0} ms of wall-clock time, the step timeout; it was stopped and is retried by the function's retries (an operator can raise the limit: `stepwise tenant limits NAME --step-timeout 10m`)"
    )]
    StepTimeout(u64),
    /// The host could not do its part (storage failed): the run is left as
    /// the journal has it and resumed later.
    #[error("host fault: {0}")]
    HostFault(String),
}

impl Interrupt {
    /// This stop as the trap that carries it out of the guest.
    pub fn trap(self) -> wasmtime::Error {
        wasmtime::Error::new(self)
    }

    /// The stop a trap carries, if the host made it.
    pub fn of(trap: &wasmtime::Error) -> Option<&Interrupt> {
        trap.downcast_ref()
    }

    /// Whether the execution stopped on purpose and the journal already
    /// says what comes next (nothing to record).
    pub fn is_planned(&self) -> bool {
        matches!(self, Interrupt::Suspended | Interrupt::Ended)
    }

    /// The error name users see when the guest overstayed a limit inside a
    /// step (the attempt fails and is retried), if that is what happened.
    pub fn limit_error_name(&self) -> Option<ErrorName> {
        match self {
            Interrupt::CpuLimit(_) => Some(ErrorName::CpuLimitError),
            Interrupt::StepTimeout(_) => Some(ErrorName::StepTimeoutError),
            _ => None,
        }
    }
}

/// A trap that fails the run with `name: message`.
pub fn fault(name: ErrorName, message: impl Into<String>) -> wasmtime::Error {
    Interrupt::Fault(ErrorRecord::fatal(name, message)).trap()
}

/// A trap for a storage failure.
pub fn host_fault(error: anyhow::Error) -> wasmtime::Error {
    Interrupt::HostFault(format!("{error:#}")).trap()
}

/// The trap that ends a dry replay.
pub fn replay_end() -> wasmtime::Error {
    Interrupt::ReplayEnd.trap()
}

/// A trap for a determinism error (the run fails; a dry replay reports it).
pub fn diverged(error: super::DeterminismError) -> wasmtime::Error {
    Interrupt::Diverged(error).trap()
}
