//! One change to run state, made in the one order of changes: the journal
//! writes it consists of, and what the scheduler must do once they are
//! durable.

use super::live::Executing;
use crate::catalog::Catalog;
use crate::journal::{Batch, Journal, Op};
use crate::metrics::Observation;
use crate::model::{IndexKind, IndexRef, RunKey, RunRecord, Timer};
use crate::scheduler::Scheduler;
use anyhow::Result;

/// What to tell the scheduler after a change is on disk.
#[derive(Debug, Default)]
pub struct Effects {
    /// Runs to execute (new, resumed or released).
    pub wake: Vec<RunKey>,
    /// Runs whose tasks must stop (cancelled).
    pub abort: Vec<RunKey>,
    /// Timers to arm in memory (the change wrote them to the journal).
    pub timers: Vec<Timer>,
    /// Timers to disarm (their runs moved on).
    pub disarm: Vec<Timer>,
    /// Parallel branches to execute, each in an instance of its own.
    pub branches: Vec<(RunKey, u32)>,
    /// Runs that ended, for whatever waits on them.
    pub ended: Vec<RunKey>,
    /// Whether the change wrote anything (else there is nothing to flush).
    pub wrote: bool,
    /// What to count once it is durable (see [`crate::metrics`]).
    pub observed: Vec<Observation>,
}

impl Effects {
    /// Hands everything to the scheduler.
    pub fn apply(self, scheduler: &Scheduler) {
        for (run, seq) in self.branches {
            scheduler.spawn_branch(run, seq);
        }
        for run in &self.abort {
            scheduler.abort(run);
        }
        for timer in &self.disarm {
            scheduler.remove_timer(timer);
        }
        for timer in self.timers {
            scheduler.add_timer(timer);
        }
        for run in self.wake {
            if !self.abort.contains(&run) {
                scheduler.wake(run);
            }
        }
    }

    /// Adds `other`'s effects to these.
    pub fn extend(&mut self, other: Effects) {
        self.wake.extend(other.wake);
        self.abort.extend(other.abort);
        self.timers.extend(other.timers);
        self.disarm.extend(other.disarm);
        self.branches.extend(other.branches);
        self.ended.extend(other.ended);
        self.wrote |= other.wrote;
        self.observed.extend(other.observed);
    }
}

/// One change in progress: reads see the journal, writes collect in `ops`
/// and are applied together by [`Tx::apply`].
pub struct Tx<'a> {
    /// Storage (reads, and the final write).
    pub journal: &'a dyn Journal,
    /// The deployed functions: what an event triggers, what a failure
    /// starts.
    pub catalog: &'a Catalog,
    /// The runs being executed, and whether each has ended since.
    pub executing: &'a Executing,
    /// The time of the change, ms.
    pub now: u64,
    /// The writes collected so far, applied together by [`Tx::apply`].
    pub ops: Batch,
    /// What follows once they are durable.
    pub effects: Effects,
    /// Where spans go, on a host exporting traces (spans ride in
    /// `effects.observed` until the change is durable).
    pub traces: Option<&'a crate::traces::Traces>,
}

impl<'a> Tx<'a> {
    /// An empty change at `now`.
    pub fn new(
        journal: &'a dyn Journal,
        catalog: &'a Catalog,
        executing: &'a Executing,
        now: u64,
    ) -> Self {
        Tx {
            journal,
            catalog,
            executing,
            now,
            ops: Vec::new(),
            effects: Effects::default(),
            traces: None,
        }
    }

    /// Writes the collected ops atomically (not yet durable) and returns
    /// the effects.
    pub fn apply(mut self) -> Result<Effects> {
        if !self.ops.is_empty() {
            self.journal.apply(self.ops)?;
            self.effects.wrote = true;
        }
        Ok(self.effects)
    }

    /// Writes `run`'s whole record with the change, replacing the stored one.
    pub fn put_run(&mut self, run: RunRecord) {
        self.ops.push(Op::PutRun(run));
    }

    /// Arms a timer (written now, armed in memory after the commit).
    pub fn put_timer(&mut self, timer: Timer) {
        self.ops.push(Op::PutTimer(timer.clone()));
        self.effects.timers.push(timer);
    }

    /// Disarms a timer (deleted now, dropped from memory after the commit).
    pub fn delete_timer(&mut self, timer: Timer) {
        self.ops.push(Op::DeleteTimer(timer.clone()));
        self.effects.disarm.push(timer);
    }

    /// Sets entry `key` of index `kind` to `value` with the change, replacing
    /// any.
    pub fn put_index(&mut self, kind: IndexKind, key: &str, value: impl Into<String>) {
        self.ops.push(Op::PutIndex {
            at: IndexRef {
                kind,
                key: key.to_string(),
            },
            value: value.into(),
        });
    }

    /// Counts `observation` once the change is durable.
    pub fn observe(&mut self, observation: Observation) {
        self.effects.observed.push(observation);
    }

    /// Removes an index entry.
    pub fn delete_index(&mut self, at: IndexRef) {
        self.ops.push(Op::DeleteIndex(at));
    }

    /// An index entry, as the journal has it (writes of this change are not
    /// seen: apply per event).
    pub fn index(&self, kind: IndexKind, key: &str) -> Result<Option<String>> {
        self.journal.index(kind, key)
    }
}
