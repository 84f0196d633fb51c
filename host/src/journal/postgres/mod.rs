//! The PostgreSQL backend of the journal, for hosts that outlive their
//! machine's disk: `stepwise serve --store postgres://...`.
//!
//! It stores the same key-value layout as sled ([`super::records`]): one
//! table per kind of record, keys in `bytea` (ordered as sled orders
//! them), JSON values. A batch is one transaction, acknowledged before its
//! WAL is flushed (`synchronous_commit` off); [`Journal::flush`] is one
//! synchronous commit, which flushes every earlier one with it, so the
//! group commit shares a flush among runs as it does on sled.
//!
//! This is one host's journal: several hosts on one database need leases
//! and fencing that are not built yet.

mod pool;
pub mod schema;

use super::records::{self, Prepared, TreeId, Write, WriteCounts, decode};
use super::usage::StorageUsage;
use super::{Batch, Journal, QueryJournal, RunFilter, RunJournal, keys};
use crate::model::{
    AppRecord, EventRecord, FunctionRecord, IndexKind, IndexRef, LogChunk, RunKey, RunRecord,
    RunStatus, StepRecord, TenantRecord, Timer, Waiter,
};
use anyhow::{Context, Result, bail};
use pool::{BoxFuture, Connection, Pool, TreeSql};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Rows read per round trip when listing newest first.
const PAGE: i64 = 500;

/// The journal in a PostgreSQL database.
pub struct PgJournal {
    pool: Pool,
    sql: Arc<Vec<TreeSql>>,
    usage: StorageUsage,
    writes: WriteCounts,
}

impl PgJournal {
    /// Connects to the database at `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        let config = parse_url(url)?;
        let pool = Pool::open(config, schema::migrate)?;
        let sql = Arc::new(records::TREES.iter().map(|t| TreeSql::of(*t)).collect());
        let mut journal = PgJournal {
            pool,
            sql,
            usage: StorageUsage::restore(None),
            writes: WriteCounts::default(),
        };
        let saved = journal.setting(super::usage::USAGE_SETTING)?;
        journal.usage = StorageUsage::restore(saved.as_deref());
        Ok(journal)
    }

    /// The value at `key` of `tree`.
    fn get_raw(&self, tree: TreeId, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let sql = self.sql.clone();
        self.pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let (statement, client) = c.statement(&sql[tree as usize].get).await?;
                    let row = client
                        .query_opt(&statement, &[&key])
                        .await
                        .with_context(|| format!("reading from {}", tree.name()))?;
                    Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
                })
            })
    }

    fn get<T: DeserializeOwned>(&self, tree: TreeId, key: Vec<u8>) -> Result<Option<T>> {
        self.get_raw(tree, key)?.map(|v| decode(&v)).transpose()
    }

    /// Every row of `tree` whose key starts with `prefix`, in key order.
    fn scan_raw(&self, tree: TreeId, prefix: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let sql = self.sql.clone();
        self.pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let statements = &sql[tree as usize];
                    let end = records::prefix_end(&prefix);
                    let rows = match (prefix.is_empty(), end) {
                        (true, _) => {
                            let (s, client) = c.statement(&statements.all).await?;
                            client.query(&s, &[]).await
                        }
                        (false, Some(end)) => {
                            let (s, client) = c.statement(&statements.range).await?;
                            client.query(&s, &[&prefix, &end]).await
                        }
                        (false, None) => {
                            let (s, client) = c.statement(&statements.from).await?;
                            client.query(&s, &[&prefix]).await
                        }
                    }
                    .with_context(|| format!("reading {}", tree.name()))?;
                    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
                })
            })
    }

    fn scan<T: DeserializeOwned>(&self, tree: TreeId, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.scan_raw(tree, prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Up to [`PAGE`] rows of `tree` with keys in `[prefix, before)` (or
    /// from `prefix` on, or all), last key first.
    fn page_rev(
        &self,
        tree: TreeId,
        prefix: Vec<u8>,
        before: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let sql = self.sql.clone();
        let before = before.or_else(|| records::prefix_end(&prefix));
        self.pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let statements = &sql[tree as usize];
                    let rows = match before {
                        Some(before) => {
                            let (s, client) = c.statement(&statements.range_rev).await?;
                            client.query(&s, &[&prefix, &before, &limit]).await
                        }
                        None => {
                            let (s, client) = c.statement(&statements.from_rev).await?;
                            client.query(&s, &[&prefix, &limit]).await
                        }
                    }
                    .with_context(|| format!("reading {}", tree.name()))?;
                    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
                })
            })
    }

    /// The records of `tree` under `prefix`, last key first, that `keep`
    /// accepts, up to `limit` of them.
    fn newest_first<T: DeserializeOwned>(
        &self,
        tree: TreeId,
        prefix: Vec<u8>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>> {
        let mut found = Vec::new();
        let mut before = None;
        while found.len() < limit {
            let page = self.page_rev(tree, prefix.clone(), before.take(), PAGE)?;
            let last_page = (page.len() as i64) < PAGE;
            for (key, value) in page {
                let record: T = decode(&value)?;
                if keep(&record) {
                    found.push(record);
                    if found.len() >= limit {
                        break;
                    }
                }
                before = Some(key);
            }
            if last_page {
                break;
            }
        }
        Ok(found)
    }

    fn apply_prepared(&self, prepared: Prepared) -> Result<()> {
        let Prepared { writes, stored, .. } = prepared;
        if writes.is_empty() {
            return Ok(());
        }
        let sql = self.sql.clone();
        self.pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let single = writes.len() == 1;
                    let client = c.client().await?;
                    if !single {
                        client.batch_execute("BEGIN").await.context("BEGIN")?;
                    }
                    let written = write_all(c, &sql, &writes).await;
                    let client = c.client().await?;
                    match (written, single) {
                        (Ok(()), true) => Ok(()),
                        (Ok(()), false) => client
                            .batch_execute("COMMIT")
                            .await
                            .context("committing a journal batch"),
                        (Err(error), single) => {
                            if !single {
                                let _ = client.batch_execute("ROLLBACK").await;
                            }
                            Err(error)
                        }
                    }
                })
            })?;
        for (tenant, bytes) in &stored {
            self.usage.add(tenant, *bytes);
        }
        Ok(())
    }
}

/// The writes of one batch on connection `c`, in order.
async fn write_all(c: &mut Connection, sql: &[TreeSql], writes: &[Write]) -> Result<()> {
    for write in writes {
        let tree = write.tree();
        match write {
            Write::Put(_, key, value) => {
                let (s, client) = c.statement(&sql[tree as usize].put).await?;
                client.execute(&s, &[key, value]).await
            }
            Write::Delete(_, key) => {
                let (s, client) = c.statement(&sql[tree as usize].delete).await?;
                client.execute(&s, &[key]).await
            }
        }
        .with_context(|| format!("writing to {}", tree.name()))?;
    }
    Ok(())
}

/// `url` as a connection configuration, or what is wrong with it.
fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let config: tokio_postgres::Config = url.parse().with_context(|| {
        "the --store URL is not a PostgreSQL connection string; write it as \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (a unix socket: \
         postgres://USER@/DATABASE?host=/run/postgresql)"
            .to_string()
    })?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        bail!(
            "sslmode=require: TLS to PostgreSQL is not built into this version yet; connect \
             without it (a unix socket or a private network), or leave sslmode out"
        );
    }
    Ok(config)
}

impl Journal for PgJournal {
    fn apply(&self, batch: Batch) -> Result<()> {
        let prepared = records::prepare_batch(batch)?;
        self.writes.applying(|| self.apply_prepared(prepared))
    }

    fn flush(&self) -> Result<()> {
        self.writes.flushing(|| {
            self.pool
                .run(|c: &mut Connection| -> BoxFuture<'_, _> { Box::pin(c.flush()) })
        })
    }

    fn unflushed(&self) -> bool {
        self.writes.unflushed()
    }

    fn usage(&self) -> &StorageUsage {
        &self.usage
    }
}

impl RunJournal for PgJournal {
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>> {
        self.get(TreeId::Runs, keys::run(key))
    }

    fn run_status(&self, key: &RunKey) -> Result<Option<RunStatus>> {
        self.get_raw(TreeId::Runs, keys::run(key))?
            .map(|bytes| records::status_of(&bytes))
            .transpose()
    }

    fn run_events(&self, key: &RunKey) -> Result<Vec<EventRecord>> {
        Ok(self
            .get(TreeId::RunEvents, keys::run(key))?
            .unwrap_or_default())
    }

    fn steps(&self, key: &RunKey) -> Result<Vec<StepRecord>> {
        self.scan(TreeId::Steps, keys::run_prefix(key))
    }

    fn step(&self, key: &RunKey, seq: u32) -> Result<Option<StepRecord>> {
        self.get(TreeId::Steps, keys::step(key, seq))
    }

    fn active_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        for (key, _) in self.scan_raw(TreeId::Active, Vec::new())? {
            // As on sled: an entry may outlive its run's end by a crash
            // between the two writes of one run record.
            if let Some(run) = self.get::<RunRecord>(TreeId::Runs, key)?
                && !run.status().is_terminal()
            {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    fn timers(&self) -> Result<Vec<Timer>> {
        self.scan(TreeId::Timers, Vec::new())
    }

    fn waiters(&self, tenant: &str, name: &str) -> Result<Vec<Waiter>> {
        self.scan(TreeId::Waiters, keys::waiter_prefix(tenant, name))
    }

    fn event_seen(&self, tenant: &str, id: &str) -> Result<Option<u64>> {
        let key = keys::join(&[tenant.as_bytes(), id.as_bytes()]);
        Ok(self.get_raw(TreeId::EventIds, key)?.map(|bytes| {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[..8]);
            u64::from_be_bytes(be)
        }))
    }

    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        self.get_raw(TreeId::Components, hash.as_bytes().to_vec())
    }

    fn has_component(&self, hash: &str) -> Result<bool> {
        let sql = self.sql.clone();
        let key = hash.as_bytes().to_vec();
        self.pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let (s, client) = c.statement(&sql[TreeId::Components as usize].has).await?;
                    Ok(client
                        .query_opt(&s, &[&key])
                        .await
                        .context("looking for a component")?
                        .is_some())
                })
            })
    }

    fn all_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.scan(TreeId::Functions, Vec::new())
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .get_raw(TreeId::Settings, name.as_bytes().to_vec())?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.scan(TreeId::Tenants, Vec::new())
    }

    fn index(&self, kind: IndexKind, key: &str) -> Result<Option<String>> {
        let at = IndexRef {
            kind,
            key: key.to_string(),
        };
        Ok(self
            .get_raw(TreeId::Indexes, records::index_key(&at))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn index_scan(&self, kind: IndexKind, prefix: &str) -> Result<Vec<(String, String)>> {
        let at = IndexRef {
            kind,
            key: prefix.to_string(),
        };
        Ok(self
            .scan_raw(TreeId::Indexes, records::index_key(&at))?
            .into_iter()
            .map(|(key, value)| {
                (
                    String::from_utf8_lossy(&key[1..]).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                )
            })
            .collect())
    }
}

impl QueryJournal for PgJournal {
    fn list_runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        self.newest_first(
            TreeId::Runs,
            keys::tenant_prefix(tenant),
            filter.limit,
            |run: &RunRecord| {
                filter.function.as_ref().is_none_or(|f| *f == run.function)
                    && filter.status.is_none_or(|s| s == run.status())
            },
        )
    }

    fn list_events(&self, tenant: &str, limit: usize) -> Result<Vec<EventRecord>> {
        self.newest_first(TreeId::Events, keys::tenant_prefix(tenant), limit, |_| true)
    }

    fn logs(&self, key: &RunKey) -> Result<Vec<LogChunk>> {
        self.scan(TreeId::Logs, keys::run_prefix(key))
    }

    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        self.scan(TreeId::Apps, keys::tenant_prefix(tenant))
    }

    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>> {
        self.get(
            TreeId::Apps,
            keys::join(&[tenant.as_bytes(), name.as_bytes()]),
        )
    }

    fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>> {
        self.scan(TreeId::Functions, keys::tenant_prefix(tenant))
    }
}
