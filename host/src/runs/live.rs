//! Which runs have executions in progress, and whether each has ended since
//! it began.
//!
//! A step's outcome must not be written to a run that has ended (cancelled,
//! timed out, failed by a branch) while the step ran. Reading the run from
//! the journal on every step to know that cost a tenth of the host's
//! throughput (b2), so [`Runs`] keeps it in memory for the runs being
//! executed: it is the only writer of run state, so a run it has not seen
//! end has not ended. An execution registers with [`Runs::enter`] (which
//! reads the run once) and leaves when its [`Execution`] is dropped.

use super::transition::apply;
use super::{Recorded, Runs, Transition};
use crate::metrics::FunctionLabels;
use crate::model::{RunKey, RunRecord};
use anyhow::Result;
use std::collections::HashMap;
use std::sync::Arc;

/// The runs being executed, kept under the ordering lock.
#[derive(Default)]
pub struct Executing(HashMap<RunKey, Live>);

struct Live {
    /// Executions of the run in progress (the run, its branches).
    executions: usize,
    /// Its function, which its steps are counted by.
    labels: Arc<FunctionLabels>,
    /// Whether the run has ended since the first of them began.
    ended: bool,
}

impl Executing {
    /// Whether `key` has ended since its executions began; `None` if no
    /// execution of it is registered (then the journal must say).
    pub fn ended(&self, key: &RunKey) -> Option<bool> {
        self.0.get(key).map(|live| live.ended)
    }

    /// The function of run `key`, if an execution of it is registered.
    pub fn labels(&self, key: &RunKey) -> Option<Arc<FunctionLabels>> {
        self.0.get(key).map(|live| live.labels.clone())
    }

    /// Notes that `key` ended, if it is being executed.
    pub fn mark_ended(&mut self, key: &RunKey) {
        if let Some(live) = self.0.get_mut(key) {
            live.ended = true;
        }
    }

    fn enter(&mut self, key: &RunKey, labels: impl FnOnce() -> Arc<FunctionLabels>) {
        self.0
            .entry(key.clone())
            .or_insert_with(|| Live {
                executions: 0,
                labels: labels(),
                ended: false,
            })
            .executions += 1;
    }

    fn leave(&mut self, key: &RunKey) {
        if let Some(live) = self.0.get_mut(key) {
            live.executions -= 1;
            if live.executions == 0 {
                self.0.remove(key);
            }
        }
    }
}

/// An execution of a run in progress, as [`Runs`] knows it: it ends when
/// this is dropped.
pub struct Execution {
    runs: Arc<Runs>,
    key: RunKey,
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.runs.executing().leave(&self.key);
    }
}

impl Runs {
    /// Starts an execution of run `key` ([`Transition::Start`]) and
    /// registers it, in one change; `None` if the run has ended (or does
    /// not exist). Nothing waits for the start's flush (see
    /// [`Transition`]).
    pub fn start(self: &Arc<Self>, key: &RunKey) -> Result<Option<(RunRecord, Execution)>> {
        let (recorded, effects) = self.change_and(
            |tx| apply(tx, key, Transition::Start),
            |recorded, executing| {
                if let Recorded::Run(run) = recorded {
                    executing.enter(key, || FunctionLabels::of(run));
                }
            },
        )?;
        self.hand_over(effects);
        match recorded {
            Recorded::Run(run) => Ok(Some((
                *run,
                Execution {
                    runs: self.clone(),
                    key: key.clone(),
                },
            ))),
            _ => Ok(None),
        }
    }

    /// Registers an execution of run `key` (a parallel branch: the run has
    /// started already), unless the run has ended (or does not exist):
    /// then `None`, and there is nothing to execute.
    pub fn enter(self: &Arc<Self>, key: &RunKey) -> Result<Option<Execution>> {
        let mut executing = self.executing();
        if executing.ended(key) == Some(false) {
            executing.enter(key, || unreachable!("registered already"));
            return Ok(Some(Execution {
                runs: self.clone(),
                key: key.clone(),
            }));
        }
        match self.journal.run(key)? {
            Some(run) if !run.status().is_terminal() => {
                executing.enter(key, || FunctionLabels::of(&run));
                Ok(Some(Execution {
                    runs: self.clone(),
                    key: key.clone(),
                }))
            }
            _ => Ok(None),
        }
    }
}
