//! The names of the errors the host itself gives runs and steps: one enum
//! with one string form, so that a name users match on (in an on-failure
//! handler, in the API) cannot be misspelt in one place. Errors a guest
//! raises keep the names the guest gave them.

use std::fmt;

/// An error the host gives a run or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    /// The run was cancelled (API, cancelOn, a singleton replaced it).
    Cancelled,
    /// A run or step failed without a more precise name.
    Error,
    /// The guest ran past its CPU limit.
    CpuLimitError,
    /// A step body ran past its wall-clock step timeout.
    StepTimeoutError,
    /// The guest trapped (panic, stack overflow, memory).
    GuestTrap,
    /// The run's calls differ from its journal.
    DeterminismError,
    /// The function's `timeouts.start` or `timeouts.finish` passed.
    FunctionTimeoutError,
    /// An invoked run did not end in time.
    InvokeTimeoutError,
    /// `invoke` was called wrongly.
    InvokeError,
    /// `send_event` was called wrongly, or the tenant's storage is full.
    SendEventError,
    /// `sleep` was called wrongly.
    SleepError,
    /// `wait_for_event` was called wrongly.
    WaitError,
    /// The step protocol was broken (complete before begin, ...).
    StepError,
    /// The run made more step calls than it may.
    StepLimitError,
    /// The run's step outputs exceed what it may store.
    JournalLimitError,
    /// A step output is larger than allowed.
    OutputTooLargeError,
    /// A step output is not JSON.
    OutputError,
    /// The guest used what the sandbox refuses (a timer outside steps).
    SandboxError,
    /// The app's registration is not what the host expects.
    RegistrationError,
    /// The run's app version cannot be loaded.
    VersionError,
    /// The run's record is unusable (no triggering event).
    RunError,
    /// A rate limit turned the run away.
    RateLimited,
    /// A run with the same singleton key was active.
    Singleton,
}

impl ErrorName {
    /// The name as runs and steps carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::Cancelled => "Cancelled",
            ErrorName::Error => "Error",
            ErrorName::CpuLimitError => "CpuLimitError",
            ErrorName::StepTimeoutError => "StepTimeoutError",
            ErrorName::GuestTrap => "GuestTrap",
            ErrorName::DeterminismError => "DeterminismError",
            ErrorName::FunctionTimeoutError => "FunctionTimeoutError",
            ErrorName::InvokeTimeoutError => "InvokeTimeoutError",
            ErrorName::InvokeError => "InvokeError",
            ErrorName::SendEventError => "SendEventError",
            ErrorName::SleepError => "SleepError",
            ErrorName::WaitError => "WaitError",
            ErrorName::StepError => "StepError",
            ErrorName::StepLimitError => "StepLimitError",
            ErrorName::JournalLimitError => "JournalLimitError",
            ErrorName::OutputTooLargeError => "OutputTooLargeError",
            ErrorName::OutputError => "OutputError",
            ErrorName::SandboxError => "SandboxError",
            ErrorName::RegistrationError => "RegistrationError",
            ErrorName::VersionError => "VersionError",
            ErrorName::RunError => "RunError",
            ErrorName::RateLimited => "RateLimited",
            ErrorName::Singleton => "Singleton",
        }
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
