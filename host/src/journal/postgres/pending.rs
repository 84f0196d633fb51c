//! Writes applied but not yet flushed to PostgreSQL, and what readers see
//! of them.
//!
//! Applying a batch is a change in memory; the group commit's flush writes
//! every pending batch in one transaction, committed synchronously. So a
//! step costs no round trip of its own under the state machine's lock, and
//! many steps share one transaction and one WAL flush. Readers of this host
//! see pending writes over the database's rows (as sled's readers see
//! applied, unflushed writes); other processes see only flushed ones. A
//! flush that fails leaves its writes pending, to be written by the next.

use super::super::records::{Row, TREES, TreeId, Write};
use std::collections::BTreeMap;
use std::ops::Bound;

/// A pending value: `None` for a removed key.
type Value = Option<Vec<u8>>;

/// The writes applied since the last flush that succeeded.
#[derive(Default)]
pub struct Pending {
    /// The latest pending value of each key, by table, with the number of
    /// the batch that wrote it.
    latest: Vec<BTreeMap<Vec<u8>, (u64, Value)>>,
    /// Batches applied, numbered in order.
    applied: u64,
}

/// A table's part of a flush: the table, rows to create or replace, keys
/// to remove.
pub type TableFlush = (TreeId, Vec<Row>, Vec<Vec<u8>>);

/// What a flush writes: the final value of every key written by batches up
/// to `through`.
pub struct Flush {
    /// The last batch this flush covers.
    pub through: u64,
    /// Per table: keys to create or replace, and keys to remove.
    pub tables: Vec<TableFlush>,
}

impl Pending {
    /// Nothing pending.
    pub fn new() -> Self {
        Pending {
            latest: TREES.iter().map(|_| BTreeMap::new()).collect(),
            applied: 0,
        }
    }

    /// Adds a batch's writes (already encoded, in order).
    pub fn apply(&mut self, writes: Vec<Write>) {
        self.applied += 1;
        let batch = self.applied;
        for write in writes {
            match write {
                Write::Put(tree, key, value) => {
                    self.latest[tree as usize].insert(key, (batch, Some(value)));
                }
                Write::Delete(tree, key) => {
                    self.latest[tree as usize].insert(key, (batch, None));
                }
            }
        }
    }

    /// What a flush now must write.
    pub fn to_flush(&self) -> Flush {
        let tables = TREES
            .iter()
            .filter_map(|tree| {
                let latest = &self.latest[*tree as usize];
                if latest.is_empty() {
                    return None;
                }
                let mut puts = Vec::new();
                let mut deletes = Vec::new();
                for (key, (_, value)) in latest {
                    match value {
                        Some(value) => puts.push((key.clone(), value.clone())),
                        None => deletes.push(key.clone()),
                    }
                }
                Some((*tree, puts, deletes))
            })
            .collect();
        Flush {
            through: self.applied,
            tables,
        }
    }

    /// Forgets what a committed flush wrote, keeping keys written again
    /// since.
    pub fn flushed(&mut self, through: u64) {
        for latest in &mut self.latest {
            latest.retain(|_, (batch, _)| *batch > through);
        }
    }

    /// The pending value of `key`, if it has one (`Some(None)`: removed).
    pub fn get(&self, tree: TreeId, key: &[u8]) -> Option<Value> {
        self.latest[tree as usize]
            .get(key)
            .map(|(_, value)| value.clone())
    }

    /// The pending values of keys in `[from, to)` (to the end without
    /// `to`), in key order.
    pub fn range(&self, tree: TreeId, from: &[u8], to: Option<&[u8]>) -> Vec<(Vec<u8>, Value)> {
        let end = match to {
            Some(to) => Bound::Excluded(to),
            None => Bound::Unbounded,
        };
        self.latest[tree as usize]
            .range::<[u8], _>((Bound::Included(from), end))
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect()
    }
}

/// `rows` (in key order) with `pending` (in key order) over them: a
/// pending value replaces a row's, a pending removal drops it.
pub fn overlay(rows: Vec<Row>, pending: Vec<(Vec<u8>, Value)>) -> Vec<Row> {
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
    for (key, value) in pending {
        match value {
            Some(value) => {
                merged.insert(key, value);
            }
            None => {
                merged.remove(&key);
            }
        }
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Write {
        Write::Put(TreeId::Steps, key.into(), value.into())
    }

    #[test]
    fn a_flush_writes_each_keys_last_value_and_forgets_only_what_it_covered() {
        let mut pending = Pending::new();
        pending.apply(vec![put("a", "1"), put("b", "1")]);
        pending.apply(vec![
            put("a", "2"),
            Write::Delete(TreeId::Steps, "b".into()),
        ]);
        let flush = pending.to_flush();
        assert_eq!(flush.through, 2);
        let (tree, puts, deletes) = &flush.tables[0];
        assert_eq!(*tree, TreeId::Steps);
        assert_eq!(puts, &vec![(b"a".to_vec(), b"2".to_vec())]);
        assert_eq!(deletes, &vec![b"b".to_vec()]);

        // Written again while the flush was in flight: still pending after.
        pending.apply(vec![put("a", "3")]);
        pending.flushed(flush.through);
        assert_eq!(pending.get(TreeId::Steps, b"a"), Some(Some(b"3".to_vec())));
        assert_eq!(pending.get(TreeId::Steps, b"b"), None);
        pending.flushed(3);
        assert!(pending.to_flush().tables.is_empty());
    }

    #[test]
    fn readers_see_pending_values_and_removals_over_the_rows() {
        let mut pending = Pending::new();
        pending.apply(vec![
            put("b", "new"),
            Write::Delete(TreeId::Steps, "c".into()),
        ]);
        pending.apply(vec![put("e", "x")]);
        let rows = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"old".to_vec()),
            (b"c".to_vec(), b"1".to_vec()),
        ];
        let seen = overlay(rows, pending.range(TreeId::Steps, b"a", Some(b"d")));
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"new".to_vec()),
            ]
        );
    }
}
