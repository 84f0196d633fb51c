//! What retention deletes, found a page at a time: ended runs (with their
//! steps, output and events) and events older than their tenant's
//! retention, and de-duplication entries past their 24 h window.
//!
//! Each kind is walked in key order from a cursor, `limit` rows per page,
//! and the walk starts over when it reaches the end: every pass does
//! bounded work, and every row is looked at again within a few passes.
//! Nothing a live run needs is here: a run that has not ended is never
//! deleted, nor one whose parent waits on it; the events a run was
//! triggered by are stored with the run itself (and go with it), so an
//! event's own record may go while its run lives on.

use super::keys;
use super::records::{TreeId, decode};
use super::{Journal, Op};
use crate::model::{EventRecord, IndexKind, RunKey, RunRecord};
use anyhow::Result;

/// What retention walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swept {
    /// Ended runs and everything they journaled.
    Runs,
    /// Accepted events.
    Events,
    /// Senders' event ids (de-duplication, 24 h).
    EventIds,
    /// Functions' idempotency keys (24 h).
    Idempotency,
}

impl Swept {
    /// Every kind, in the order a pass walks them.
    pub const ALL: [Swept; 4] = [
        Swept::Runs,
        Swept::Events,
        Swept::EventIds,
        Swept::Idempotency,
    ];

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Swept::Runs => "runs",
            Swept::Events => "events",
            Swept::EventIds => "event_ids",
            Swept::Idempotency => "idempotency_keys",
        }
    }

    /// The key a walk starts after: the tree's first, or for idempotency
    /// keys their own index's (the other indexes of the tree are not
    /// walked).
    fn start(self) -> Vec<u8> {
        match self {
            Swept::Idempotency => vec![IndexKind::Idempotency.tag()],
            _ => Vec::new(),
        }
    }

    /// Whether a key of the tree is of this kind.
    fn holds(self, key: &[u8]) -> bool {
        match self {
            Swept::Idempotency => key.first() == Some(&IndexKind::Idempotency.tag()),
            _ => true,
        }
    }

    fn tree(self) -> TreeId {
        match self {
            Swept::Runs => TreeId::Runs,
            Swept::Events => TreeId::Events,
            Swept::EventIds => TreeId::EventIds,
            Swept::Idempotency => TreeId::Indexes,
        }
    }
}

/// What a page found.
#[derive(Debug, Default)]
pub struct Page {
    /// Deletes to apply (each whole: one run, or one row).
    pub deletes: Vec<Op>,
    /// Where the next page starts; empty when this page reached the end
    /// (the next walk starts over).
    pub cursor: Vec<u8>,
}

/// When a record of a tenant expires.
pub struct Cutoffs<'a> {
    /// The time, ms.
    pub now: u64,
    /// A tenant's retention, ms.
    pub retention_ms: &'a dyn Fn(&str) -> u64,
    /// Whether a run has not ended (a child's parent that still waits).
    pub is_active: &'a dyn Fn(&RunKey) -> Result<bool>,
}

impl Cutoffs<'_> {
    fn expired(&self, tenant: &str, at: u64) -> bool {
        self.now.saturating_sub(at) > (self.retention_ms)(tenant)
    }
}

/// The next page of `kind` after `cursor`: up to `limit` rows looked at.
pub fn page(
    journal: &dyn Journal,
    kind: Swept,
    cursor: &[u8],
    limit: usize,
    cutoffs: &Cutoffs<'_>,
) -> Result<Page> {
    let start = match cursor.is_empty() {
        true => kind.start(),
        false => cursor.to_vec(),
    };
    let rows = journal.rows_after(kind.tree(), &start, limit)?;
    let mut page = Page {
        cursor: match rows.len() < limit {
            true => Vec::new(),
            false => rows.last().map(|(key, _)| key.clone()).unwrap_or_default(),
        },
        ..Page::default()
    };
    for (key, value) in rows {
        if !kind.holds(&key) {
            // Past this kind's rows: the walk is over.
            page.cursor.clear();
            break;
        }
        let delete = match kind {
            Swept::Runs => expired_run(journal, &key, &value, cutoffs)?,
            Swept::Events => {
                let event: EventRecord = decode(&value)?;
                let tenant = tenant_of(&key);
                cutoffs
                    .expired(&tenant, event.received_at)
                    .then(|| one_row(tenant, kind, key, value.len()))
            }
            Swept::EventIds => {
                let seen_at = value
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                let window = crate::runs::DEDUPE_WINDOW_MS;
                (cutoffs.now.saturating_sub(seen_at) > window)
                    .then(|| one_row(tenant_of(&key), kind, key, value.len()))
            }
            Swept::Idempotency => {
                let seen_at: u64 = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let window = crate::runs::IDEMPOTENCY_WINDOW_MS;
                (cutoffs.now.saturating_sub(seen_at) > window)
                    .then(|| one_row(tenant_of(&key[1..]), kind, key, 0))
            }
        };
        page.deletes.extend(delete);
    }
    Ok(page)
}

/// The tenant a key starts with (up to its first separator).
fn tenant_of(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

fn one_row(tenant: String, kind: Swept, key: Vec<u8>, value_len: usize) -> Op {
    let freed = match kind {
        // The quota counts events and runs' journals; an event's id is
        // counted with it.
        Swept::Events | Swept::EventIds => (key.len() + value_len) as u64,
        Swept::Runs | Swept::Idempotency => 0,
    };
    Op::DeleteRows {
        tenant,
        rows: vec![(kind.tree(), key)],
        freed,
    }
}

/// The deletes of run record `value` if it ended before its retention
/// (and no parent waits on it): its steps, output and events, then the
/// record itself, in one batch.
fn expired_run(
    journal: &dyn Journal,
    key: &[u8],
    value: &[u8],
    cutoffs: &Cutoffs<'_>,
) -> Result<Option<Op>> {
    let run: RunRecord = decode(value)?;
    let Some(ended_at) = run.ended_at() else {
        return Ok(None);
    };
    if !cutoffs.expired(&run.key.tenant, ended_at) {
        return Ok(None);
    }
    if let Some(parent) = &run.parent
        && (cutoffs.is_active)(&RunKey::new(&run.key.tenant, &parent.run))?
    {
        return Ok(None);
    }
    let mut rows = Vec::new();
    let mut freed = 0;
    let prefix = keys::run_prefix(&run.key);
    for tree in [TreeId::Steps, TreeId::Logs] {
        for (key, value) in journal.rows_with_prefix(tree, &prefix)? {
            freed += (key.len() + value.len()) as u64;
            rows.push((tree, key));
        }
    }
    for (events_key, events) in journal.rows_with_prefix(TreeId::RunEvents, key)? {
        // Only this run's own row (another run's id may extend this one).
        if events_key == key {
            freed += (events_key.len() + events.len()) as u64;
            rows.push((TreeId::RunEvents, events_key));
        }
    }
    freed += (key.len() + value.len()) as u64;
    rows.push((TreeId::Runs, key.to_vec()));
    Ok(Some(Op::DeleteRows {
        tenant: run.key.tenant.clone(),
        rows,
        freed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SledJournal;
    use crate::model::IndexRef;

    fn put(journal: &SledJournal, kind: IndexKind, key: &str, value: &str) {
        journal
            .apply(vec![Op::PutIndex {
                at: IndexRef {
                    kind,
                    key: key.into(),
                },
                value: value.into(),
            }])
            .unwrap();
    }

    #[test]
    fn the_idempotency_walk_reads_only_its_own_index() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let window = crate::runs::IDEMPOTENCY_WINDOW_MS;
        // Tags below and above the idempotency index's, which the walk
        // must neither delete nor read.
        put(&journal, IndexKind::Singleton, "t\0f\0k", "run");
        put(&journal, IndexKind::Cron, "t\0f\0* * * * *", "0");
        for n in 0..5 {
            put(
                &journal,
                IndexKind::Idempotency,
                &format!("t\0f\0old-{n}"),
                "1000",
            );
        }
        put(
            &journal,
            IndexKind::Idempotency,
            "t\0f\0new",
            &window.to_string(),
        );
        let cutoffs = Cutoffs {
            now: window + 2_000,
            retention_ms: &|_| u64::MAX,
            is_active: &|_| Ok(false),
        };
        let mut deleted = Vec::new();
        let mut cursor = Vec::new();
        let mut pages = 0;
        loop {
            let page = page(&journal, Swept::Idempotency, &cursor, 2, &cutoffs).unwrap();
            deleted.extend(page.deletes);
            pages += 1;
            cursor = page.cursor;
            if cursor.is_empty() {
                break;
            }
        }
        assert_eq!(deleted.len(), 5, "{deleted:?}");
        assert!(pages <= 4, "the walk went past its index: {pages} pages");
        for op in &deleted {
            let Op::DeleteRows { rows, tenant, .. } = op else {
                panic!("{op:?}")
            };
            assert_eq!(tenant, "t");
            assert_eq!(rows[0].1[0], IndexKind::Idempotency.tag(), "{op:?}");
        }
    }
}
