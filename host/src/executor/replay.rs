//! The replay cursor: matches a run's calls against its journal.
//!
//! Each durable call (run, sleep, wait) takes the next position. Where the
//! journal already has an entry there, it must be the same call (same
//! effective id, same kind), or the code is not deterministic and the run
//! fails with both sequences shown. Past the journal's end, calls are new.
//! Repeated ids get Inngest's suffixes: `id`, `id:1`, `id:2`.

use crate::model::{StepKind, StepRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A run's calls diverged from its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeterminismError {
    /// Position of the first difference.
    pub position: usize,
    /// What the journal holds, in order (`kind id`).
    pub journal: Vec<String>,
    /// What the code called, in order, up to and including the difference.
    pub calls: Vec<String>,
}

impl fmt::Display for DeterminismError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (expected, actual) = (self.expected(), self.actual());
        write!(
            f,
            "the run's code made different step calls on replay than the journal records: at call #{pos} the journal has {expected} but the code called {actual}.\n  journal: [{journal}]\n  calls:   [{calls}]\nCode between steps must make the same step calls in the same order every time it runs: move anything non-deterministic into a step and keep step ids stable.",
            pos = self.position,
            journal = self.journal.join(", "),
            calls = self.calls.join(", "),
        )
    }
}

impl std::error::Error for DeterminismError {}

impl DeterminismError {
    /// What the journal holds at the first difference (`kind "id"`).
    pub fn expected(&self) -> &str {
        self.journal
            .get(self.position)
            .map(String::as_str)
            .unwrap_or("nothing")
    }

    /// What the code called there.
    pub fn actual(&self) -> &str {
        self.calls
            .get(self.position)
            .map(String::as_str)
            .unwrap_or("nothing")
    }
}

/// Where a call lands.
#[derive(Debug, PartialEq)]
pub enum Slot {
    /// The journal has this call already.
    Journaled(Box<StepRecord>),
    /// A new call: it gets this position and effective id.
    New {
        /// Position in the call sequence.
        seq: u32,
        /// Its effective id (with a `:N` suffix if the id was used before).
        id: String,
    },
}

/// The cursor over one execution of a run.
///
/// The journal may have gaps: the branches of a parallel group are
/// journaled in the order they finish, not in call order.
#[derive(Debug, Default)]
pub struct Replay {
    journal: BTreeMap<u32, StepRecord>,
    /// One past the last position the journal held when loaded.
    loaded: usize,
    calls: Vec<String>,
    counts: HashMap<String, u32>,
    used: HashSet<String>,
}

fn describe(kind: StepKind, id: &str) -> String {
    format!("{} {id:?}", kind.as_str())
}

impl Replay {
    /// A cursor over `journal` (entries in sequence order, from 0).
    pub fn new(journal: Vec<StepRecord>) -> Self {
        let journal: BTreeMap<u32, StepRecord> = journal.into_iter().map(|s| (s.seq, s)).collect();
        Replay {
            loaded: journal
                .keys()
                .next_back()
                .map(|s| *s as usize + 1)
                .unwrap_or(0),
            journal,
            ..Replay::default()
        }
    }

    /// Places the next call, `kind` with the id the code gave.
    pub fn next(&mut self, raw_id: &str, kind: StepKind) -> Result<Slot, DeterminismError> {
        let id = self.effective_id(raw_id);
        let seq = self.calls.len();
        self.calls.push(describe(kind, &id));
        match self.journal.get(&(seq as u32)) {
            Some(entry) if entry.id == id && entry.kind == kind => {
                Ok(Slot::Journaled(Box::new(entry.clone())))
            }
            Some(_) => Err(DeterminismError {
                position: seq,
                journal: self
                    .journal
                    .values()
                    .map(|s| describe(s.kind, &s.id))
                    .collect(),
                calls: self.calls.clone(),
            }),
            None => Ok(Slot::New {
                seq: seq as u32,
                id,
            }),
        }
    }

    fn effective_id(&mut self, raw_id: &str) -> String {
        let count = self.counts.entry(raw_id.to_string()).or_insert(0);
        let mut id = if *count == 0 {
            raw_id.to_string()
        } else {
            format!("{raw_id}:{count}")
        };
        *count += 1;
        // An explicit id may collide with a generated suffix: keep counting.
        while !self.used.insert(id.clone()) {
            id = format!("{raw_id}:{count}");
            *count += 1;
        }
        id
    }

    /// Records a journal entry written during this execution.
    pub fn record(&mut self, step: StepRecord) {
        self.journal.insert(step.seq, step);
    }

    /// Calls made so far: the current output segment.
    pub fn calls_made(&self) -> u32 {
        self.calls.len() as u32
    }

    /// Whether the code is still behind the journal as it was at load time
    /// (its output was logged by an earlier execution).
    pub fn replaying(&self) -> bool {
        self.calls.len() < self.loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepStatus;

    fn done(seq: u32, id: &str, kind: StepKind) -> StepRecord {
        StepRecord {
            seq,
            id: id.into(),
            kind,
            status: StepStatus::Completed,
            attempts: 0,
            output: Some("1".into()),
            error: None,
            started_at: 0,
            ended_at: Some(0),
            wake_at: None,
            wait: None,
            child: None,
        }
    }

    #[test]
    fn repeated_ids_get_inngest_suffixes() {
        let mut replay = Replay::new(vec![]);
        let ids: Vec<_> = ["a", "a", "b", "a", "a:1"]
            .iter()
            .map(|raw| match replay.next(raw, StepKind::Run).unwrap() {
                Slot::New { id, .. } => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["a", "a:1", "b", "a:2", "a:1:1"]);
    }

    #[test]
    fn journaled_calls_are_answered_then_new_ones_follow() {
        let mut replay = Replay::new(vec![
            done(1, "b", StepKind::Sleep),
            done(0, "a", StepKind::Run),
        ]);
        assert!(replay.replaying());
        assert!(
            matches!(replay.next("a", StepKind::Run).unwrap(), Slot::Journaled(s) if s.id == "a")
        );
        assert!(
            matches!(replay.next("b", StepKind::Sleep).unwrap(), Slot::Journaled(s) if s.seq == 1)
        );
        assert!(!replay.replaying());
        assert_eq!(
            replay.next("c", StepKind::Run).unwrap(),
            Slot::New {
                seq: 2,
                id: "c".into()
            }
        );
    }

    #[test]
    fn a_different_call_is_a_determinism_error_naming_both_sequences() {
        let mut replay = Replay::new(vec![
            done(0, "a", StepKind::Run),
            done(1, "b", StepKind::Run),
        ]);
        replay.next("a", StepKind::Run).unwrap();
        let err = replay.next("x", StepKind::Run).unwrap_err();
        assert_eq!(err.position, 1);
        let text = err.to_string();
        assert!(
            text.contains("journal has run \"b\" but the code called run \"x\""),
            "{text}"
        );
        assert!(text.contains("journal: [run \"a\", run \"b\"]"), "{text}");
        assert!(text.contains("calls:   [run \"a\", run \"x\"]"), "{text}");

        let mut replay = Replay::new(vec![done(0, "a", StepKind::Run)]);
        let err = replay.next("a", StepKind::Sleep).unwrap_err();
        assert!(err.to_string().contains("code called sleep \"a\""));
    }

    #[test]
    fn a_gap_left_by_an_unfinished_branch_is_a_new_call() {
        // Branches 0 and 2 of a group finished, branch 1 did not.
        let mut replay = Replay::new(vec![
            done(0, "a", StepKind::Run),
            done(2, "c", StepKind::Run),
        ]);
        assert!(matches!(
            replay.next("a", StepKind::Run).unwrap(),
            Slot::Journaled(_)
        ));
        assert_eq!(
            replay.next("b", StepKind::Run).unwrap(),
            Slot::New {
                seq: 1,
                id: "b".into()
            }
        );
        assert!(replay.replaying(), "the journal goes on past the gap");
        assert!(matches!(
            replay.next("c", StepKind::Run).unwrap(),
            Slot::Journaled(_)
        ));
        assert!(!replay.replaying());
    }
}
