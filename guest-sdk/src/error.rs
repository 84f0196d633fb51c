//! Errors a step or handler raises, and how they map to retries.
//!
//! As in Inngest: any error is retried with backoff, `NonRetriableError`
//! stops at once, `RetryAfterError` names when to try again.

use crate::bindings::stepwise::durable::types::StepError;
use std::fmt;
use std::time::Duration;

/// The error of a step or handler. Any `std::error::Error` converts into it
/// with `?`, as a retriable error; [`NonRetriableError`] and
/// [`RetryAfterError`] keep their meaning through the conversion.
///
/// It deliberately does not implement `std::error::Error` itself (as with
/// `anyhow::Error`), so that the blanket `From` conversion is possible.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    name: String,
    message: String,
    retriable: bool,
    retry_after: Option<Duration>,
}

impl Error {
    /// A retriable error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Error {
            name: "Error".into(),
            message: message.to_string(),
            retriable: true,
            retry_after: None,
        }
    }

    /// An error that stops retries at once (Inngest's `NonRetriableError`).
    pub fn non_retriable(message: impl fmt::Display) -> Self {
        Error {
            name: "NonRetriableError".into(),
            message: message.to_string(),
            retriable: false,
            retry_after: None,
        }
    }

    /// A retriable error that asks for the next attempt after `delay`
    /// (Inngest's `RetryAfterError`); it still uses an attempt.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        Error {
            name: "RetryAfterError".into(),
            message: message.to_string(),
            retriable: true,
            retry_after: Some(delay),
        }
    }

    /// The error's class name, e.g. `Error` or `NonRetriableError`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The delay a `RetryAfterError` asked for.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error a step ended with for good. Raised again by the handler it
    /// fails the run without further retries: the step already used them.
    pub(crate) fn from_final_step_error(error: StepError) -> Self {
        Error {
            name: error.name,
            message: error.message,
            retriable: false,
            retry_after: None,
        }
    }

    pub(crate) fn to_wit(&self) -> StepError {
        StepError {
            name: self.name.clone(),
            message: self.message.clone(),
            retriable: self.retriable,
            retry_after_ms: self.retry_after.map(crate::duration::as_millis),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("name", &self.name)
            .field("message", &self.message)
            .field("retriable", &self.retriable)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<E: std::error::Error + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        if let Some(e) = any.downcast_ref::<NonRetriableError>() {
            return Error::non_retriable(&e.0);
        }
        if let Some(e) = any.downcast_ref::<RetryAfterError>() {
            return Error::retry_after(e.delay, &e.message);
        }
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::new(message)
    }
}

/// Stops retries at once: the step or run fails with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonRetriableError(pub String);

impl NonRetriableError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        NonRetriableError(message.to_string())
    }
}

impl fmt::Display for NonRetriableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonRetriableError {}

/// Retries after `delay` rather than after the backoff table's delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfterError {
    /// What went wrong.
    pub message: String,
    /// When to try again.
    pub delay: Duration,
}

impl RetryAfterError {
    /// An error asking for a retry after `delay`.
    pub fn new(message: impl fmt::Display, delay: Duration) -> Self {
        RetryAfterError {
            message: message.to_string(),
            delay,
        }
    }
}

impl fmt::Display for RetryAfterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (retry after {:?})", self.message, self.delay)
    }
}

impl std::error::Error for RetryAfterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_retry_meaning() {
        let plain: Error = std::fmt::Error.into();
        assert!(plain.is_retriable());
        assert_eq!(plain.name(), "Error");

        let fatal: Error = NonRetriableError::new("bad payload").into();
        assert!(!fatal.is_retriable());
        assert_eq!(fatal.name(), "NonRetriableError");
        assert_eq!(fatal.message(), "bad payload");

        let later: Error = RetryAfterError::new("busy", Duration::from_secs(5)).into();
        assert!(later.is_retriable());
        assert_eq!(later.retry_delay(), Some(Duration::from_secs(5)));
        assert_eq!(later.to_wit().retry_after_ms, Some(5000));
    }
}
