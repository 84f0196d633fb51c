//! Cron triggers, in the one order of changes: writing a deployed
//! function's schedules, arming them at start, and firing them (the run and
//! the next fire time in one write, so a missed time runs once, never
//! twice).

use super::{Effects, Runs, admit};
use crate::cron::{self, Armed, Schedule};
use crate::journal::Op;
use crate::model::{EventRecord, FunctionRecord, IndexKind};
use anyhow::{Context, Result};
use std::sync::Arc;

impl Runs {
    /// Writes the cron schedules of `functions` (the functions `app` now
    /// registers in `tenant`): new schedules get their next fire time,
    /// removed ones go; then arms them.
    pub fn schedule_crons(
        &self,
        tenant: &str,
        removed: &[String],
        functions: &[FunctionRecord],
    ) -> Result<()> {
        let ((), _) = self.change(|tx| {
            for id in removed.iter().chain(functions.iter().map(|f| &f.id)) {
                let keep: Vec<String> = functions
                    .iter()
                    .filter(|f| &f.id == id)
                    .flat_map(|f| f.crons().map(|c| cron::index_key(tenant, id, c)))
                    .collect();
                for (key, _) in tx
                    .journal
                    .index_scan(IndexKind::Cron, &cron::function_prefix(tenant, id))?
                {
                    if !keep.contains(&key) {
                        tx.delete_index(crate::model::IndexRef {
                            kind: IndexKind::Cron,
                            key,
                        });
                    }
                }
                for key in keep {
                    if tx.journal.index(IndexKind::Cron, &key)?.is_some() {
                        continue;
                    }
                    let (_, _, text) = cron::split_key(&key).context("a cron key")?;
                    let schedule = Schedule::parse(text).map_err(anyhow::Error::msg)?;
                    if let Some(at) = schedule.next_after(tx.now) {
                        tx.put_index(IndexKind::Cron, &key, at.to_string());
                        self.crons.arm(Armed { at, key });
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Arms every cron schedule in the journal (at start).
    pub fn arm_crons(&self) -> Result<usize> {
        let entries = self.journal.index_scan(IndexKind::Cron, "")?;
        let count = entries.len();
        for (key, at) in entries {
            if let Ok(at) = at.parse() {
                self.crons.arm(Armed { at, key });
            }
        }
        Ok(count)
    }

    /// Fires due cron schedules for ever: each creates a run and moves its
    /// schedule on, in one write.
    pub async fn run_crons(self: Arc<Self>) {
        loop {
            let due = self.crons.next_due(self.clock.as_ref()).await;
            match self.fire_cron(&due) {
                Ok(Some((next, effects))) => {
                    if let Err(error) = self.apply_once_durable(effects).await {
                        tracing::error!(error = format!("{error:#}"), "could not flush a cron run");
                    }
                    self.crons.arm(Armed {
                        at: next,
                        key: due.key,
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "a cron schedule failed to fire; retrying in 1 s"
                    );
                    self.crons.arm(Armed {
                        at: self.clock.now_ms() + 1_000,
                        key: due.key,
                    });
                }
            }
        }
    }

    fn fire_cron(&self, due: &Armed) -> Result<Option<(u64, Effects)>> {
        let (next, effects) = self.change(|tx| {
            let Some(stored) = tx.journal.index(IndexKind::Cron, &due.key)? else {
                return Ok(None);
            };
            if stored.parse::<u64>().ok() != Some(due.at) {
                return Ok(None);
            }
            let (tenant, id, text) = cron::split_key(&due.key).context("a cron key")?;
            let Some(function) = self.catalog.get(tenant, id) else {
                return Ok(None);
            };
            let schedule = Schedule::parse(text).map_err(anyhow::Error::msg)?;
            let event = EventRecord {
                id: crate::model::new_id(),
                name: cron::CRON_EVENT.into(),
                data: serde_json::json!({ "cron": text }),
                user: None,
                ts: due.at,
                v: None,
                received_at: tx.now,
                trace: None,
            };
            tracing::info!(tenant, function = id, schedule = text, "cron fired");
            admit::admit(tx, &function, &event)?;
            tx.ops.push(Op::PutEvent {
                tenant: tenant.to_string(),
                event,
                dedupe: false,
            });
            let next = schedule
                .next_after(tx.now.max(due.at))
                .context("the schedule has no next time")?;
            tx.put_index(IndexKind::Cron, &due.key, next.to_string());
            Ok(Some(next))
        })?;
        Ok(next.map(|next| (next, effects)))
    }
}
