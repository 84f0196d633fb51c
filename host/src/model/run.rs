//! A run, with its status and what only that status has.
//!
//! A run's wake-up time means something only while it is queued (a
//! held-back start) or running (a handler retry), its end time, output and
//! error only once it has ended; [`RunState`] says so in the type. On disk a
//! run stays one flat JSON object (`status`, `wake_at`, `ended_at`,
//! `output`, `error` beside the other fields), as every release so far
//! wrote it, so a data directory written by an older release opens as it
//! is ([`StoredRun`]).

use super::{
    ErrorName, ErrorRecord, EventRecord, FunctionRecord, IndexRef, ParentStep, QueueSpec, RunKey,
    RunKind, RunStatus,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Where a run is in its life, with what belongs to that status alone.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Waiting for an executor; held back until `start_at` (debounce, a
    /// batch's timeout, a throttle) if set.
    Queued {
        /// When it may start, ms.
        start_at: Option<u64>,
    },
    /// Executing, or waiting until `retry_at` to execute again (a handler
    /// retry, or a send over its tenant's budget).
    Running {
        /// When it executes again, ms.
        retry_at: Option<u64>,
    },
    /// Suspended in `step.sleep` (its timer wakes it).
    Sleeping,
    /// Suspended in `step.wait_for_event` or `step.invoke`.
    Waiting,
    /// Finished with an output.
    Completed {
        /// When it ended, ms since the epoch.
        ended_at: u64,
        /// The handler's output.
        output: Value,
    },
    /// Finished with an error.
    Failed {
        /// When it ended, ms since the epoch.
        ended_at: u64,
        /// Why: the handler's error, or the host's (a trap, a limit).
        error: ErrorRecord,
    },
    /// Stopped by a user, a `cancelOn` event, a singleton or a timeout.
    Cancelled {
        /// When it ended, ms since the epoch.
        ended_at: u64,
        /// Who or what cancelled it: the API, a `cancelOn` event, a newer
        /// singleton run, a timeout.
        error: ErrorRecord,
    },
    /// Never started: flow control turned its event away.
    Skipped {
        /// When it ended, ms since the epoch.
        ended_at: u64,
        /// The rule that turned it away (`RateLimited`, `Singleton`), and
        /// why.
        error: ErrorRecord,
    },
}

impl RunState {
    /// The status this state is, without its data.
    pub fn status(&self) -> RunStatus {
        match self {
            RunState::Queued { .. } => RunStatus::Queued,
            RunState::Running { .. } => RunStatus::Running,
            RunState::Sleeping => RunStatus::Sleeping,
            RunState::Waiting => RunStatus::Waiting,
            RunState::Completed { .. } => RunStatus::Completed,
            RunState::Failed { .. } => RunStatus::Failed,
            RunState::Cancelled { .. } => RunStatus::Cancelled,
            RunState::Skipped { .. } => RunStatus::Skipped,
        }
    }

    /// An end: `output` for `completed`, `error` for the others (a
    /// missing one is named, not invented silently).
    pub fn ended(
        status: RunStatus,
        ended_at: u64,
        output: Option<Value>,
        error: Option<ErrorRecord>,
    ) -> RunState {
        let error = || {
            error.unwrap_or_else(|| {
                ErrorRecord::fatal(ErrorName::Error, "the run ended with no error recorded")
            })
        };
        match status {
            RunStatus::Completed => RunState::Completed {
                ended_at,
                output: output.unwrap_or(Value::Null),
            },
            RunStatus::Cancelled => RunState::Cancelled {
                ended_at,
                error: error(),
            },
            RunStatus::Skipped => RunState::Skipped {
                ended_at,
                error: error(),
            },
            _ => RunState::Failed {
                ended_at,
                error: error(),
            },
        }
    }

    /// When a timer wakes the run while it is queued or running, ms.
    pub fn wake_at(&self) -> Option<u64> {
        match self {
            RunState::Queued { start_at } => *start_at,
            RunState::Running { retry_at } => *retry_at,
            _ => None,
        }
    }

    /// When it ended, ms.
    pub fn ended_at(&self) -> Option<u64> {
        match self {
            RunState::Completed { ended_at, .. }
            | RunState::Failed { ended_at, .. }
            | RunState::Cancelled { ended_at, .. }
            | RunState::Skipped { ended_at, .. } => Some(*ended_at),
            _ => None,
        }
    }

    /// The error it ended with.
    pub fn error(&self) -> Option<&ErrorRecord> {
        match self {
            RunState::Failed { error, .. }
            | RunState::Cancelled { error, .. }
            | RunState::Skipped { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The output it completed with.
    pub fn output(&self) -> Option<&Value> {
        match self {
            RunState::Completed { output, .. } => Some(output),
            _ => None,
        }
    }
}

/// A run of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Tenant and id.
    pub key: RunKey,
    /// The app the function belongs to.
    pub app: String,
    /// Content hash of the component version the run is pinned to.
    pub version: String,
    /// The id of the function it runs (of `app`, at `version`).
    pub function: String,
    /// Where it is in its life.
    pub state: RunState,
    /// Ids of the triggering events (the payloads are stored beside the run).
    pub event_ids: Vec<String>,
    /// Retries allowed per step and for handler errors, fixed at creation.
    pub retries: u32,
    /// Attempts used by errors raised outside steps.
    pub attempt: u32,
    /// The last error its handler raised outside any step, kept while it
    /// is retried (shown until the run ends with an error of its own).
    pub handler_error: Option<ErrorRecord>,
    /// When the run was created, in ms.
    pub created_at: u64,
    /// When it first started executing: the run's logical time zero.
    pub started_at: Option<u64>,
    /// The handler or the failure handler.
    pub kind: RunKind,
    /// The run whose `step.invoke` started this one, waiting for its end.
    pub parent: Option<ParentStep>,
    /// Where the run waits in the queue (from its function's flow control).
    pub queue: QueueSpec,
    /// Index entries that live as long as the run (cancel-on listeners, a
    /// singleton claim, a pending debounce or batch): removed when it ends.
    pub cleanup: Vec<IndexRef>,
    /// `timeouts.finish`: longest time from start to end, ms.
    pub finish_timeout_ms: Option<u64>,
}

impl RunRecord {
    /// A queued run of `function` for `events`, created at `now`, with no
    /// flow control yet.
    pub fn new(key: RunKey, function: &FunctionRecord, events: &[EventRecord], now: u64) -> Self {
        RunRecord {
            key,
            app: function.app.clone(),
            version: function.version.clone(),
            function: function.id.clone(),
            state: RunState::Queued { start_at: None },
            event_ids: events.iter().map(|e| e.id.clone()).collect(),
            retries: function.retries,
            attempt: 0,
            handler_error: None,
            created_at: now,
            started_at: None,
            kind: RunKind::Handler,
            parent: None,
            queue: QueueSpec::default(),
            cleanup: Vec::new(),
            finish_timeout_ms: function.flow.timeouts.as_ref().and_then(|t| t.finish_ms),
        }
    }

    /// Its status, without the data of its state.
    pub fn status(&self) -> RunStatus {
        self.state.status()
    }

    /// When a timer wakes it while queued or running, ms.
    pub fn wake_at(&self) -> Option<u64> {
        self.state.wake_at()
    }

    /// When it ended, ms.
    pub fn ended_at(&self) -> Option<u64> {
        self.state.ended_at()
    }

    /// The output it completed with.
    pub fn output(&self) -> Option<&Value> {
        self.state.output()
    }

    /// The error to show: the one it ended with, else its handler's last.
    pub fn error(&self) -> Option<&ErrorRecord> {
        self.state.error().or(self.handler_error.as_ref())
    }
}

/// A run as the journal stores it: one flat object, the format of every
/// release so far.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, S: Serialize, V: Serialize, O: Serialize, E: Serialize, Q: Serialize + std::borrow::Borrow<QueueSpec>, C: Serialize + std::borrow::Borrow<Vec<IndexRef>>",
    deserialize = "K: Deserialize<'de>, S: Deserialize<'de>, V: Deserialize<'de>, O: Deserialize<'de>, E: Deserialize<'de>, Q: Deserialize<'de> + Default, C: Deserialize<'de> + Default"
))]
struct StoredRun<K, S, V, O, E, Q, C> {
    key: K,
    app: S,
    version: S,
    function: S,
    status: RunStatus,
    event_ids: V,
    retries: u32,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake_at: Option<u64>,
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<O>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<E>,
    #[serde(default, skip_serializing_if = "RunKind::is_handler")]
    kind: RunKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<ParentStep>,
    #[serde(default, skip_serializing_if = "is_unlimited")]
    queue: Q,
    #[serde(default, skip_serializing_if = "is_empty")]
    cleanup: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_timeout_ms: Option<u64>,
}

fn is_unlimited<Q: std::borrow::Borrow<QueueSpec>>(queue: &Q) -> bool {
    queue.borrow().is_unlimited()
}

fn is_empty<C: std::borrow::Borrow<Vec<IndexRef>>>(cleanup: &C) -> bool {
    cleanup.borrow().is_empty()
}

impl Serialize for RunRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredRun {
            key: &self.key,
            app: &self.app,
            version: &self.version,
            function: &self.function,
            status: self.status(),
            event_ids: &self.event_ids,
            retries: self.retries,
            attempt: self.attempt,
            wake_at: self.wake_at(),
            created_at: self.created_at,
            started_at: self.started_at,
            ended_at: self.ended_at(),
            output: self.output(),
            error: self.error(),
            kind: self.kind,
            parent: self.parent.clone(),
            queue: &self.queue,
            cleanup: &self.cleanup,
            finish_timeout_ms: self.finish_timeout_ms,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RunRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored: StoredRun<
            RunKey,
            String,
            Vec<String>,
            Value,
            ErrorRecord,
            QueueSpec,
            Vec<IndexRef>,
        > = StoredRun::deserialize(deserializer)?;
        let ended_at = stored.ended_at.unwrap_or(stored.created_at);
        let (state, handler_error) = match stored.status {
            RunStatus::Queued => (
                RunState::Queued {
                    start_at: stored.wake_at,
                },
                stored.error,
            ),
            RunStatus::Running => (
                RunState::Running {
                    retry_at: stored.wake_at,
                },
                stored.error,
            ),
            RunStatus::Sleeping => (RunState::Sleeping, stored.error),
            RunStatus::Waiting => (RunState::Waiting, stored.error),
            // Completed after a handler retry: the error kept is that
            // retry's.
            RunStatus::Completed => (
                RunState::ended(RunStatus::Completed, ended_at, stored.output, None),
                stored.error,
            ),
            ended => (
                RunState::ended(ended, ended_at, stored.output, stored.error),
                None,
            ),
        };
        Ok(RunRecord {
            key: stored.key,
            app: stored.app,
            version: stored.version,
            function: stored.function,
            state,
            event_ids: stored.event_ids,
            retries: stored.retries,
            attempt: stored.attempt,
            handler_error,
            created_at: stored.created_at,
            started_at: stored.started_at,
            kind: stored.kind,
            parent: stored.parent,
            queue: stored.queue,
            cleanup: stored.cleanup,
            finish_timeout_ms: stored.finish_timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A run record as the release at e13e8b6 wrote one.
    fn stored(status: &str, extra: Value) -> Value {
        let mut run = json!({
            "key": {"tenant": "t", "run": "r"},
            "app": "a", "version": "v", "function": "f",
            "status": status, "event_ids": ["e"], "retries": 3, "attempt": 1,
            "created_at": 10
        });
        run.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        run
    }

    #[test]
    fn every_status_of_the_stored_format_reads_into_its_state_and_writes_back_the_same() {
        let error = json!({"name": "Error", "message": "m", "retriable": true});
        let cases = [
            stored("queued", json!({"wake_at": 50})),
            stored("running", json!({"wake_at": 60, "error": error})),
            stored("sleeping", json!({"started_at": 20})),
            stored("waiting", json!({"started_at": 20})),
            stored("completed", json!({"ended_at": 70, "output": {"ok": 1}})),
            stored(
                "completed",
                json!({"ended_at": 70, "output": 1, "error": error}),
            ),
            stored("failed", json!({"ended_at": 70, "error": error})),
            stored("cancelled", json!({"ended_at": 70, "error": error})),
            stored("skipped", json!({"ended_at": 70, "error": error})),
        ];
        for case in cases {
            let run: RunRecord = serde_json::from_value(case.clone()).unwrap();
            assert_eq!(run.status().as_str(), case["status"]);
            assert_eq!(serde_json::to_value(&run).unwrap(), case, "{run:?}");
        }
        let running: RunRecord =
            serde_json::from_value(stored("running", json!({"wake_at": 60, "error": error})))
                .unwrap();
        assert_eq!(running.state, RunState::Running { retry_at: Some(60) });
        assert_eq!(running.error().unwrap().message, "m");
        let done: RunRecord =
            serde_json::from_value(stored("completed", json!({"ended_at": 70, "output": 5})))
                .unwrap();
        assert_eq!(
            done.state,
            RunState::Completed {
                ended_at: 70,
                output: json!(5)
            }
        );
        assert_eq!(done.wake_at(), None);
    }
}
