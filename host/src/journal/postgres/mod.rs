//! The PostgreSQL backend of the journal, for hosts that outlive their
//! machine's disk: `stepwise serve --store postgres://...`.
//!
//! It stores the same key-value layout as sled ([`super::records`]): one
//! table per kind of record, keys in `bytea` (ordered as sled orders
//! them), JSON values. Applying a batch changes memory only (`pending`);
//! [`Journal::flush`] writes every pending batch in one transaction,
//! committed synchronously, so the group commit shares one transaction and
//! one WAL flush among every run waiting on it, and a crash keeps all of a
//! flush or none of it.
//!
//! Several hosts may share one database: the one holding the runs lease
//! ([`lease`]) writes, and each of its flushes checks in its own
//! transaction that it still holds it.

pub mod lease;
mod own_writes;
mod pending;
mod pool;
pub use pool::is_unreachable;
pub mod schema;
pub mod tls;

use super::records::{self, Prepared, Row, TreeId, WriteCounts, decode};
use super::usage::StorageUsage;
use super::{Batch, Journal, QueryJournal, RunFilter, RunJournal, keys};
use crate::model::{
    AppRecord, EventRecord, FunctionRecord, IndexKind, IndexRef, LogChunk, RunKey, RunRecord,
    RunStatus, StepRecord, TenantRecord, Timer, Waiter,
};
use anyhow::{Context, Result};
use lease::{Fence, Fenced};
use pending::{Flush, Pending};
use pool::{BoxFuture, Connection, Pool, Target, TreeSql};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::Statement;

/// Rows read per round trip when listing newest first.
const PAGE: i64 = 500;

/// The journal in a PostgreSQL database.
pub struct PgJournal {
    shared: Arc<Shared>,
    usage: StorageUsage,
}

/// What the journal and its background flusher share.
struct Shared {
    pool: Pool,
    sql: Arc<Vec<TreeSql>>,
    writes: WriteCounts,
    /// Applied, not yet flushed.
    pending: Mutex<Pending>,
    /// Held through a flush.
    flushing: Mutex<()>,
    /// The lease every flush must hold, when several hosts may share the
    /// database.
    fence: Option<Fence>,
    /// Set once a flush found the lease lost: no flush is tried again.
    fenced: AtomicBool,
    /// The run records this host wrote, while it holds a lease (`fence`).
    own: Option<own_writes::OwnWrites>,
}

/// How often writes nobody waits for (a run's end, output, saved counts)
/// are flushed at the latest, as sled flushes its own every half second.
const BACKGROUND_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

impl PgJournal {
    /// Connects to the database at `url` and brings its schema up to date:
    /// the journal of a host alone on its database (tests and tools).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_fenced(url, None)
    }

    /// [`PgJournal::open`] for a host that holds `fence` (a lease it won):
    /// every flush checks that it still holds it, and a flush that finds
    /// it lost is refused, tells `fence.lost`, and no later one is tried.
    pub fn open_fenced(url: &str, fence: Option<Fence>) -> Result<Self> {
        let target = parse_url(url)?;
        let pool = Pool::open(target, schema::migrate)?;
        let sql = Arc::new(records::TREES.iter().map(|t| TreeSql::of(*t)).collect());
        let shared = Arc::new(Shared {
            pool,
            sql,
            writes: WriteCounts::default(),
            pending: Mutex::new(Pending::new()),
            flushing: Mutex::new(()),
            own: fence.as_ref().map(|_| own_writes::OwnWrites::default()),
            fence,
            fenced: AtomicBool::new(false),
        });
        flush_in_background(Arc::downgrade(&shared));
        let mut journal = PgJournal {
            shared,
            usage: StorageUsage::restore(None),
        };
        let saved = journal.setting(super::usage::USAGE_SETTING)?;
        journal.usage = StorageUsage::restore(saved.as_deref());
        Ok(journal)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared.pending()
    }

    /// The value at `key` of `tree`.
    fn get_raw(&self, tree: TreeId, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.pending().get(tree, &key) {
            return Ok(value);
        }
        if tree == TreeId::Runs
            && let Some(own) = &self.shared.own
            && let Some(value) = own.run(&key)
        {
            return Ok(Some(value));
        }
        let sql = self.shared.sql.clone();
        self.shared
            .pool
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

    /// Every row of `tree` whose key starts with `prefix`, in key order,
    /// pending writes included.
    fn scan_raw(&self, tree: TreeId, prefix: Vec<u8>) -> Result<Vec<Row>> {
        // Pending writes first: a flush that commits meanwhile and forgets
        // them has put them in the rows read after.
        let end = records::prefix_end(&prefix);
        let pending = self.pending().range(tree, &prefix, end.as_deref());
        let rows = self.scan_rows(tree, prefix)?;
        Ok(pending::overlay(rows, pending))
    }

    /// The database's rows of [`PgJournal::scan_raw`].
    fn scan_rows(&self, tree: TreeId, prefix: Vec<u8>) -> Result<Vec<Row>> {
        let sql = self.shared.sql.clone();
        self.shared
            .pool
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

    /// Rows of `tree` with keys in `[prefix, before)` (or from `prefix`
    /// on), last key first: the database's next page of up to `limit`,
    /// with pending writes over the keys it spans; and where the next page
    /// ends (`None`: this was the last).
    fn page_rev(
        &self,
        tree: TreeId,
        prefix: Vec<u8>,
        before: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<(Vec<Row>, Option<Vec<u8>>)> {
        let upper = before.clone().or_else(|| records::prefix_end(&prefix));
        // Pending writes first, as in `scan_raw`.
        let mut pending = self.pending().range(tree, &prefix, upper.as_deref());
        let rows = self.page_rows(tree, prefix.clone(), before, limit)?;
        let last_page = (rows.len() as i64) < limit;
        // The page spans down to its last row, or to the prefix if it is
        // the last page.
        let next = match (last_page, rows.last()) {
            (false, Some((lower, _))) => Some(lower.clone()),
            _ => None,
        };
        if let Some(lower) = &next {
            pending.retain(|(key, _)| key >= lower);
        }
        let mut merged = pending::overlay(rows.into_iter().rev().collect(), pending);
        merged.reverse();
        Ok((merged, next))
    }

    /// The database's rows of [`PgJournal::page_rev`].
    fn page_rows(
        &self,
        tree: TreeId,
        prefix: Vec<u8>,
        before: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<Vec<Row>> {
        let sql = self.shared.sql.clone();
        let before = before.or_else(|| records::prefix_end(&prefix));
        self.shared
            .pool
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
        loop {
            let (page, next) = self.page_rev(tree, prefix.clone(), before, PAGE)?;
            for (_, value) in page {
                let record: T = decode(&value)?;
                if keep(&record) {
                    found.push(record);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        Ok(found)
    }
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn flush(&self) -> Result<()> {
        // One flush at a time: a later one may carry newer values of the
        // same keys, which an earlier one committing after it would undo.
        let _one_at_a_time = self
            .flushing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(fence) = &self.fence
            && self.fenced.load(Ordering::Acquire)
        {
            return Err(Fenced::of(fence).into());
        }
        self.writes.flushing(|| {
            let flush = self.pending().to_flush();
            if flush.tables.is_empty() {
                return Ok(());
            }
            let through = flush.through;
            let sql = self.sql.clone();
            let fence = self.fence.clone();
            let written = self
                .pool
                .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                    Box::pin(async move { write_flush(c, &sql, &flush, fence.as_ref()).await })
                });
            if let Err(error) = &written
                && let Some(fenced) = error.downcast_ref::<Fenced>()
                && !self.fenced.swap(true, Ordering::AcqRel)
            {
                tracing::error!(error = %fenced, "a flush was refused: this host lost its lease");
                if let Some(fence) = &self.fence {
                    fence.lost.notify_one();
                }
            }
            written?;
            self.pending().flushed(through);
            Ok(())
        })
    }
}

/// Flushes what is pending every [`BACKGROUND_FLUSH`] until the journal
/// is dropped.
fn flush_in_background(shared: std::sync::Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("stepwise-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(BACKGROUND_FLUSH);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if shared.writes.unflushed()
                    && let Err(error) = shared.flush()
                {
                    tracing::warn!(error = format!("{error:#}"), "background flush failed");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the background flush; writes nobody waits for wait for the next flush");
    }
}

/// The check a fenced flush makes first, in its transaction.
const HOLD_LEASE: &str = "SELECT stepwise.hold_lease($1, $2, $3)";

/// Writes `flush` in one transaction, committed synchronously: its WAL,
/// and every earlier commit's, is on disk when this returns. The
/// statements go out together (pipelined), so a flush costs one round trip
/// besides the WAL's fsync. Under a `fence`, the transaction first checks
/// that this host still holds its lease, and fails with [`Fenced`] when
/// it does not (nothing of it is written).
async fn write_flush(
    c: &mut Connection,
    sql: &[TreeSql],
    flush: &Flush,
    fence: Option<&Fence>,
) -> Result<()> {
    /// One statement of a flush: an upsert (with values) or a delete.
    struct Part<'a> {
        statement: Statement,
        tree: TreeId,
        keys: Vec<&'a [u8]>,
        values: Option<Vec<&'a [u8]>>,
    }
    let mut parts = Vec::new();
    for (tree, puts, deletes) in &flush.tables {
        let sql = &sql[*tree as usize];
        if !puts.is_empty() {
            let (keys, values) = puts
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .unzip();
            parts.push(Part {
                statement: c.statement(&sql.put_many).await?.0,
                tree: *tree,
                keys,
                values: Some(values),
            });
        }
        if !deletes.is_empty() {
            parts.push(Part {
                statement: c.statement(&sql.delete_many).await?.0,
                tree: *tree,
                keys: deletes.iter().map(Vec::as_slice).collect(),
                values: None,
            });
        }
    }
    let hold = match fence {
        Some(_) => Some(c.statement(HOLD_LEASE).await?.0),
        None => None,
    };
    let client = c.client().await?;
    let begin = client.batch_execute("BEGIN; SET LOCAL synchronous_commit TO on");
    let held = async {
        match (&hold, fence) {
            (Some(statement), Some(fence)) => client
                .execute(statement, &[&fence.lease, &fence.holder, &fence.epoch])
                .await
                .map(|_| ()),
            _ => Ok(()),
        }
    };
    let writes = parts.iter().map(|part| async move {
        let done = match &part.values {
            Some(values) => client.execute(&part.statement, &[&part.keys, values]).await,
            None => client.execute(&part.statement, &[&part.keys]).await,
        };
        done.with_context(|| format!("writing to {}", part.tree.name()))
    });
    let commit = client.batch_execute("COMMIT");
    // Polled in this order, so sent in this order on the connection.
    let (begun, held, written, committed) =
        tokio::join!(biased; begin, held, futures_util::future::join_all(writes), commit);
    begun.context("beginning a flush")?;
    if let Err(error) = held {
        // The transaction is aborted: COMMIT rolled it back.
        if lease::is_fenced(&error)
            && let Some(fence) = fence
        {
            return Err(Fenced::of(fence).into());
        }
        return Err(anyhow::Error::new(error).context("checking this host's lease"));
    }
    // A failed statement aborts the transaction, and COMMIT then rolls it
    // back without an error of its own: every result must be checked.
    let failed = written.into_iter().find_map(Result::err);
    committed.context("committing a flush")?;
    match failed {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// `url` as where to connect and how, or what is wrong with it.
fn parse_url(url: &str) -> Result<Target> {
    let (url, settings) = tls::split(url)?;
    let mut config: tokio_postgres::Config = url.parse().with_context(|| {
        "the --store URL is not a PostgreSQL connection string; write it as \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (a unix socket: \
         postgres://USER@/DATABASE?host=/run/postgresql)"
            .to_string()
    })?;
    config.ssl_mode(settings.mode);
    Ok(Target {
        config,
        tls: tls::connector(&settings)?,
    })
}

impl Journal for PgJournal {
    fn apply(&self, batch: Batch) -> Result<()> {
        let Prepared {
            writes,
            stored,
            freed,
            ..
        } = records::prepare_batch(batch)?;
        if let Some(own) = &self.shared.own {
            own.note(&writes);
        }
        self.shared.writes.applying(|| self.pending().apply(writes));
        records::count_usage(&self.usage, &stored, &freed);
        Ok(())
    }

    fn rows_after(&self, tree: TreeId, after: &[u8], limit: usize) -> Result<Vec<Row>> {
        let sql = self.shared.sql.clone();
        let after = after.to_vec();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.shared
            .pool
            .run(move |c: &mut Connection| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let (s, client) = c.statement(&sql[tree as usize].after).await?;
                    let rows = client
                        .query(&s, &[&after, &limit])
                        .await
                        .with_context(|| format!("reading {}", tree.name()))?;
                    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
                })
            })
    }

    fn rows_with_prefix(&self, tree: TreeId, prefix: &[u8]) -> Result<Vec<Row>> {
        self.scan_raw(tree, prefix.to_vec())
    }

    fn flush(&self) -> Result<()> {
        self.shared.flush()
    }

    fn unflushed(&self) -> bool {
        self.shared.writes.unflushed()
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
        if let Some(value) = self.pending().get(TreeId::Components, hash.as_bytes()) {
            return Ok(value.is_some());
        }
        let sql = self.shared.sql.clone();
        let key = hash.as_bytes().to_vec();
        self.shared
            .pool
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
