//! The JSON shapes the API answers with (and the CLI reads).

use crate::model::{ErrorRecord, LogChunk, RunKind, RunRecord, RunState, StepRecord, StepStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// Function id.
    pub function: String,
    /// App name.
    pub app: String,
    /// Pinned version (content hash).
    pub version: String,
    /// `queued`, `running`, `sleeping`, `waiting`, `completed`, `failed`,
    /// `cancelled` or `skipped`.
    pub status: String,
    /// Ids of the triggering events.
    pub event_ids: Vec<String>,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// First execution, ms.
    pub started_at: Option<u64>,
    /// End, ms.
    pub ended_at: Option<u64>,
    /// Handler-level attempts used.
    pub attempt: u32,
    /// When a held-back start, or the run's next timed execution (a handler
    /// retry, a send over budget), is due, ms.
    pub wake_at: Option<u64>,
    /// Output when completed.
    pub output: Option<Value>,
    /// Why it failed, was cancelled or was skipped; otherwise the last error
    /// its handler raised outside a step, if any.
    pub error: Option<ErrorRecord>,
    /// `handler`, or `on_failure` for a failure handler's run.
    pub kind: String,
    /// The run whose `step.invoke` started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> Self {
        let (status, ended_at, wake_at) = (run.status(), run.ended_at(), run.wake_at());
        let error = run.error().cloned();
        let output = match run.state {
            RunState::Completed { output, .. } => Some(output),
            _ => None,
        };
        RunView {
            id: run.key.run,
            function: run.function,
            app: run.app,
            version: run.version,
            status: status.as_str().into(),
            event_ids: run.event_ids,
            created_at: run.created_at,
            started_at: run.started_at,
            ended_at,
            attempt: run.attempt,
            wake_at,
            output,
            error,
            kind: match run.kind {
                RunKind::Handler => "handler".into(),
                RunKind::OnFailure => "on_failure".into(),
            },
            parent: run.parent.map(|p| p.run),
        }
    }
}

/// One step of a run's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    /// Effective step id.
    pub id: String,
    /// `run`, `sleep`, `wait`, `send` or `invoke`.
    pub kind: String,
    /// `completed`, `failed`, `retrying`, `sleeping` or `waiting`.
    pub status: String,
    /// Attempts made (a step that succeeded first time shows 1).
    pub attempts: u32,
    /// Output (JSON) when completed.
    pub output: Option<Value>,
    /// The error of the last failed attempt (`retrying`), or the final one
    /// (`failed`).
    pub error: Option<ErrorRecord>,
    /// When the step (its last attempt) started, ms.
    pub started_at: u64,
    /// When it reached its status, ms.
    pub ended_at: Option<u64>,
    /// Duration of the last attempt, ms.
    pub duration_ms: Option<u64>,
    /// Wake time, next attempt or timeout, ms.
    pub wake_at: Option<u64>,
    /// The run an invoke started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
}

impl From<StepRecord> for StepView {
    fn from(step: StepRecord) -> Self {
        // `attempts` in the journal counts failed attempts; a send or invoke
        // that failed was one attempt without being retried.
        let attempts = match step.status {
            StepStatus::Completed => step.attempts + 1,
            StepStatus::Failed => step.attempts.max(1),
            _ => step.attempts,
        };
        StepView {
            id: step.id,
            kind: step.kind.as_str().into(),
            status: serde_json::to_value(step.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            attempts,
            output: step
                .output
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text))),
            error: step.error,
            duration_ms: step.ended_at.map(|end| end.saturating_sub(step.started_at)),
            started_at: step.started_at,
            ended_at: step.ended_at,
            wake_at: step.wake_at,
            child: step.child,
        }
    }
}

/// A run with its timeline and output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run's fields, flattened into this object.
    #[serde(flatten)]
    pub run: RunView,
    /// Its triggering events.
    pub events: Vec<Value>,
    /// Its journal, in call order.
    pub steps: Vec<StepView>,
    /// Its output lines, in program order, each printed once.
    pub logs: Vec<LogView>,
}

/// A chunk of a run's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogView {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// What was written, decoded as UTF-8 (invalid bytes replaced).
    pub text: String,
}

impl From<LogChunk> for LogView {
    fn from(chunk: LogChunk) -> Self {
        LogView {
            stream: chunk.stream,
            text: chunk.text,
        }
    }
}
