//! Key layouts of the sled trees.
//!
//! Parts are joined with a 0 byte (names and ids may not contain one: the
//! event and deploy paths reject them); numbers are big-endian so that byte
//! order is numeric order, which makes timers come out soonest first and
//! journal entries in call order.

use crate::model::{LogChunk, RunKey, Timer};

const SEP: u8 = 0;

/// `a \0 b \0 ...`
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut key = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part);
    }
    key
}

/// `tenant \0` : the prefix of every per-tenant key.
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut key = tenant.as_bytes().to_vec();
    key.push(SEP);
    key
}

/// `tenant \0 run`
pub fn run(key: &RunKey) -> Vec<u8> {
    join(&[key.tenant.as_bytes(), key.run.as_bytes()])
}

/// `tenant \0 run \0` : the prefix of a run's steps and logs.
pub fn run_prefix(key: &RunKey) -> Vec<u8> {
    let mut prefix = run(key);
    prefix.push(SEP);
    prefix
}

/// `tenant \0 run \0 seq`
pub fn step(key: &RunKey, seq: u32) -> Vec<u8> {
    let mut k = run_prefix(key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `at tenant \0 run \0 seq kind` : soonest first.
pub fn timer(timer: &Timer) -> Vec<u8> {
    let mut k = timer.at.to_be_bytes().to_vec();
    k.extend_from_slice(&run_prefix(&timer.key));
    k.extend_from_slice(&timer.seq.to_be_bytes());
    k.push(timer.kind as u8);
    k
}

/// `tenant \0 event-name \0` : the prefix of a name's waiters.
pub fn waiter_prefix(tenant: &str, event: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), event.as_bytes()]);
    k.push(SEP);
    k
}

/// `tenant \0 event-name \0 run \0 seq`
pub fn waiter(tenant: &str, event: &str, run: &RunKey, seq: u32) -> Vec<u8> {
    let mut k = waiter_prefix(tenant, event);
    k.extend_from_slice(run.run.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `tenant \0 received-at \0 id` : events in arrival order.
pub fn event(tenant: &str, received_at: u64, id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), &received_at.to_be_bytes(), id.as_bytes()])
}

/// `tenant \0 run \0 segment run-attempt attempt offset` : output in
/// program order.
pub fn log(key: &RunKey, chunk: &LogChunk) -> Vec<u8> {
    let mut k = run_prefix(key);
    k.extend_from_slice(&chunk.segment.to_be_bytes());
    k.extend_from_slice(&chunk.run_attempt.to_be_bytes());
    k.extend_from_slice(&chunk.attempt.to_be_bytes());
    k.extend_from_slice(&chunk.offset.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimerKind;

    #[test]
    fn timers_sort_by_time_then_run() {
        let t = |at, run: &str| Timer {
            at,
            key: RunKey::new("default", run),
            seq: 1,
            kind: TimerKind::Sleep,
        };
        let mut keys = vec![timer(&t(300, "a")), timer(&t(20, "b")), timer(&t(20, "a"))];
        keys.sort();
        assert_eq!(
            keys,
            vec![timer(&t(20, "a")), timer(&t(20, "b")), timer(&t(300, "a"))]
        );
    }

    #[test]
    fn steps_sort_by_sequence_and_stay_inside_their_run() {
        let run = RunKey::new("default", "r1");
        assert!(step(&run, 2) < step(&run, 10));
        assert!(step(&run, 300).starts_with(&run_prefix(&run)));
        let other = RunKey::new("default", "r10");
        assert!(!step(&other, 0).starts_with(&run_prefix(&run)));
    }
}
