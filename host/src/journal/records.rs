//! The key-value layout both journal backends store: one table (a sled
//! tree, a PostgreSQL table) per kind of record, binary keys whose byte
//! order is the order readers want (see `keys`), JSON values. Turning an
//! [`Op`] into writes lives here once, so the backends differ only in how
//! they store and flush.

use super::keys;
use super::usage::{StorageUsage, counted_tenant};
use super::{Batch, Op};
use crate::model::{IndexRef, RunStatus, Waiter};
use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};

/// The trees, indexed by [`TreeId`].
pub const TREE_NAMES: [&str; 15] = [
    "runs",
    "run_events",
    "active",
    "steps",
    "timers",
    "waiters",
    "events",
    "event_ids",
    "logs",
    "components",
    "apps",
    "functions",
    "settings",
    "indexes",
    "tenants",
];

/// A kind of record: a sled tree, a PostgreSQL table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeId {
    Runs,
    RunEvents,
    Active,
    Steps,
    Timers,
    Waiters,
    Events,
    EventIds,
    Logs,
    Components,
    Apps,
    Functions,
    Settings,
    Indexes,
    Tenants,
}

/// Every table, in [`TREE_NAMES`]' order.
pub const TREES: [TreeId; 15] = [
    TreeId::Runs,
    TreeId::RunEvents,
    TreeId::Active,
    TreeId::Steps,
    TreeId::Timers,
    TreeId::Waiters,
    TreeId::Events,
    TreeId::EventIds,
    TreeId::Logs,
    TreeId::Components,
    TreeId::Apps,
    TreeId::Functions,
    TreeId::Settings,
    TreeId::Indexes,
    TreeId::Tenants,
];

impl TreeId {
    /// The table's name.
    pub fn name(self) -> &'static str {
        TREE_NAMES[self as usize]
    }
}

/// A stored key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// One key-value write of a batch.
pub enum Write {
    /// Create or replace `key` in a table.
    Put(TreeId, Vec<u8>, Vec<u8>),
    /// Remove `key` from a table.
    Delete(TreeId, Vec<u8>),
}

/// A batch as key-value writes, in order, with the bytes each tenant's
/// records in it take (for its storage quota).
pub struct Prepared {
    /// The writes, in the batch's order.
    pub writes: Vec<Write>,
    /// Bytes stored per tenant by these writes.
    pub stored: Vec<(String, u64)>,
    /// Whether the batch is one run record: its two writes are safe in
    /// order without a transaction (see `prepare`).
    pub one_run: bool,
    /// Bytes deleted per tenant by these writes (retention).
    pub freed: Vec<(String, u64)>,
}

/// Counts into `usage` what an applied batch stored and freed (its
/// [`Prepared`] `stored` and `freed`).
pub fn count_usage(usage: &StorageUsage, stored: &[(String, u64)], freed: &[(String, u64)]) {
    for (tenant, bytes) in stored {
        usage.add(tenant, *bytes);
    }
    for (tenant, bytes) in freed {
        usage.remove(tenant, *bytes);
    }
}

/// Encodes `batch` (outside any transaction: a backend may retry one).
pub fn prepare_batch(batch: Batch) -> Result<Prepared> {
    let mut writes = Vec::with_capacity(batch.len() + 1);
    let mut stored: Vec<(String, u64)> = Vec::new();
    let mut freed: Vec<(String, u64)> = Vec::new();
    let one_run = matches!(batch.as_slice(), [Op::PutRun(_)]);
    for op in batch {
        if let Op::DeleteRows {
            tenant,
            freed: bytes,
            ..
        } = &op
        {
            freed.push((tenant.clone(), *bytes));
        }
        let tenant = counted_tenant(&op).map(str::to_string);
        let before = writes.len();
        writes.extend(prepare(op)?);
        if let Some(tenant) = tenant {
            let bytes = writes[before..]
                .iter()
                .map(|w| match w {
                    Write::Put(_, key, value) => (key.len() + value.len()) as u64,
                    Write::Delete(..) => 0,
                })
                .sum();
            stored.push((tenant, bytes));
        }
    }
    Ok(Prepared {
        writes,
        stored,
        one_run,
        freed,
    })
}

/// The key-value writes of `op`.
fn prepare(op: Op) -> Result<Vec<Write>> {
    use TreeId::*;
    Ok(match op {
        // Ordered so that the writes need no transaction when the run
        // is the whole batch: a run that has not ended is in the active
        // set before its record changes, and an ended one leaves it only
        // after. A crash between the two leaves an active entry whose
        // run is missing or has ended, which `active_runs` skips.
        Op::PutRun(run) => {
            let key = keys::run(&run.key);
            let record = Write::Put(Runs, key.clone(), encode(&run)?);
            if run.status().is_terminal() {
                vec![record, Write::Delete(Active, key)]
            } else {
                vec![Write::Put(Active, key, Vec::new()), record]
            }
        }
        Op::PutRunEvents(key, events) => {
            vec![Write::Put(RunEvents, keys::run(&key), encode(&events)?)]
        }
        Op::PutStep(key, step) => {
            vec![Write::Put(
                Steps,
                keys::step(&key, step.seq),
                encode(&step)?,
            )]
        }
        Op::PutTimer(timer) => vec![Write::Put(Timers, keys::timer(&timer), encode(&timer)?)],
        Op::DeleteTimer(timer) => vec![Write::Delete(Timers, keys::timer(&timer))],
        Op::PutWaiter(waiter) => {
            vec![Write::Put(Waiters, waiter_key(&waiter), encode(&waiter)?)]
        }
        Op::DeleteWaiter(waiter) => vec![Write::Delete(Waiters, waiter_key(&waiter))],
        Op::PutEvent {
            tenant,
            event,
            dedupe,
        } => {
            let mut writes = vec![Write::Put(
                Events,
                keys::event(&tenant, event.received_at, &event.id),
                encode(&event)?,
            )];
            if dedupe {
                writes.push(Write::Put(
                    EventIds,
                    keys::join(&[tenant.as_bytes(), event.id.as_bytes()]),
                    event.received_at.to_be_bytes().to_vec(),
                ));
            }
            writes
        }
        Op::PutLog(key, chunk) => {
            vec![Write::Put(Logs, keys::log(&key, &chunk), encode(&chunk)?)]
        }
        Op::PutComponent { hash, bytes } => {
            vec![Write::Put(Components, hash.into_bytes(), bytes.to_vec())]
        }
        Op::PutApp(app) => vec![Write::Put(
            Apps,
            keys::join(&[app.tenant.as_bytes(), app.name.as_bytes()]),
            encode(&app)?,
        )],
        Op::PutFunction(function) => vec![Write::Put(
            Functions,
            keys::join(&[function.tenant.as_bytes(), function.id.as_bytes()]),
            encode(&function)?,
        )],
        Op::DeleteFunction { tenant, id } => vec![Write::Delete(
            Functions,
            keys::join(&[tenant.as_bytes(), id.as_bytes()]),
        )],
        Op::PutIndex { at, value } => {
            vec![Write::Put(Indexes, index_key(&at), value.into_bytes())]
        }
        Op::DeleteIndex(at) => vec![Write::Delete(Indexes, index_key(&at))],
        Op::PutTenant(tenant) => {
            vec![Write::Put(
                Tenants,
                tenant.name.clone().into_bytes(),
                encode(&tenant)?,
            )]
        }
        Op::DeleteComponent { hash } => vec![Write::Delete(Components, hash.into_bytes())],
        Op::PutSetting { name, value } => {
            vec![Write::Put(Settings, name.into_bytes(), value.into_bytes())]
        }
        Op::DeleteSetting { name } => vec![Write::Delete(Settings, name.into_bytes())],
        Op::DeleteRows { rows, .. } => rows
            .into_iter()
            .map(|(tree, key)| Write::Delete(tree, key))
            .collect(),
    })
}

/// Where `waiter` is stored: under its tenant and event name, so that an
/// event finds its waiters by prefix.
fn waiter_key(waiter: &Waiter) -> Vec<u8> {
    keys::waiter(
        &waiter.key.tenant,
        &waiter.spec.event,
        &waiter.key,
        waiter.seq,
    )
}

/// `tag key`: the kinds of index apart, each in key order.
pub fn index_key(at: &IndexRef) -> Vec<u8> {
    let mut key = vec![at.kind.tag()];
    key.extend_from_slice(at.key.as_bytes());
    key
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context("encoding a journal record")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .context("decoding a journal record (is the data directory from another version?)")
}

/// The status in a stored run record, without decoding the rest.
pub fn status_of(bytes: &[u8]) -> Result<RunStatus> {
    /// The one field of a stored run record this reads.
    #[derive(serde::Deserialize)]
    struct StatusOnly {
        status: RunStatus,
    }
    Ok(decode::<StatusOnly>(bytes)?.status)
}

/// The smallest key greater than every key that starts with `prefix`, if
/// there is one (there is none for an empty prefix or one of all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Counts that tell whether anything applied may not be on disk yet, so a
/// reader that waits for durability waits only when it must.
#[derive(Default)]
pub struct WriteCounts {
    /// Batches whose apply has begun.
    begun: AtomicU64,
    /// Batches whose apply has ended.
    done: AtomicU64,
    /// How many had ended when the last completed flush began: a flush
    /// covers every write that ended before it began.
    flushed: AtomicU64,
}

impl WriteCounts {
    /// Around applying a batch: counts it begun, then ended.
    pub fn applying<T>(&self, apply: impl FnOnce() -> T) -> T {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let result = apply();
        self.done.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// Around a flush: what it covers is every batch ended before it began.
    pub fn flushing(&self, flush: impl FnOnce() -> Result<()>) -> Result<()> {
        let ended = self.done.load(Ordering::SeqCst);
        flush()?;
        self.flushed.fetch_max(ended, Ordering::SeqCst);
        Ok(())
    }

    /// See [`super::Journal::unflushed`].
    pub fn unflushed(&self) -> bool {
        // Reads `flushed` first: `done` never exceeds `begun`, so if the
        // last flush counted as many ended writes as have begun by now,
        // every write begun so far had ended before that flush, which
        // covered it.
        let flushed = self.flushed.load(Ordering::SeqCst);
        flushed < self.begun.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
