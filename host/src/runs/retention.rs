//! Retention, as changes of the run state machine: a pass deletes what
//! [`crate::journal::retention`] finds expired, a bounded number of pages
//! at a time, in the one order of changes (so nothing is deleted from
//! under a change in progress).

use super::Runs;
use crate::journal::retention::{self, Cutoffs, Swept};
use anyhow::Result;

/// Rows looked at per page.
const PAGE_ROWS: usize = 256;
/// Pages per kind per pass: at most this many rows of each kind are read
/// each pass, however much has expired.
const PAGES_PER_PASS: usize = 16;

/// Where each of retention's walks stands between passes.
#[derive(Debug, Default)]
pub struct Sweeper {
    cursors: [Vec<u8>; Swept::ALL.len()],
}

impl Runs {
    /// The next page of `kind` after `cursor`, with what in it expired.
    fn expired_page(&self, kind: Swept, cursor: &[u8]) -> Result<retention::Page> {
        let retention_ms = |tenant: &str| self.tenants.limits(tenant).retention_ms;
        let is_active = |run: &crate::model::RunKey| {
            Ok(self
                .journal
                .run_status(run)?
                .is_some_and(|status| !status.is_terminal()))
        };
        let cutoffs = Cutoffs {
            now: self.clock.now_ms(),
            retention_ms: &retention_ms,
            is_active: &is_active,
        };
        retention::page(self.journal.as_ref(), kind, cursor, PAGE_ROWS, &cutoffs)
    }

    /// One pass of retention: for each kind, up to [`PAGES_PER_PASS`]
    /// pages from where the last pass stopped; returns what it deleted,
    /// by kind.
    pub async fn sweep(&self, sweeper: &mut Sweeper) -> Result<Vec<(Swept, u64)>> {
        let mut deleted = Vec::new();
        for (kind, cursor) in Swept::ALL.into_iter().zip(sweeper.cursors.iter_mut()) {
            let mut count = 0;
            for _ in 0..PAGES_PER_PASS {
                let page = self.expired_page(kind, cursor)?;
                count += page.deletes.len() as u64;
                if !page.deletes.is_empty() {
                    let ((), effects) = self.change(|tx| {
                        tx.ops.extend(page.deletes);
                        Ok(())
                    })?;
                    self.apply_once_durable(effects).await?;
                }
                *cursor = page.cursor;
                if cursor.is_empty() {
                    break;
                }
            }
            if count > 0 {
                self.metrics.retention_deleted(kind.name(), count);
            }
            deleted.push((kind, count));
        }
        Ok(deleted)
    }
}
