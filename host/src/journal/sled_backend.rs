//! The sled backend of the journal.
//!
//! One tree per record kind; records are JSON. A batch of one op is a plain
//! insert (the step path: ~5 µs); a larger batch is one multi-tree
//! transaction, so that, say, a waiter and its step never exist apart.
//!
//! A sled transaction is costly beyond its own writes: it takes sled's
//! global write lock, which waits for a flush in progress and, while it
//! waits, holds back every other insert. So a batch that is one run record
//! (a run starting or ending: two keys, the run and its entry in the set of
//! active runs) is written as two inserts in an order that is safe without
//! one (see `SledJournal::prepare`).

use super::backup;
use super::disk_sync::DiskSync;
use super::keys;
use super::records::{self, Prepared, TREE_NAMES, TreeId, Write, WriteCounts, decode, index_key};
use super::usage::StorageUsage;
use super::{Batch, Journal, QueryJournal, RunFilter, RunJournal};
use crate::model::{
    AppRecord, EventRecord, FunctionRecord, IndexKind, IndexRef, LogChunk, RunKey, RunRecord,
    RunStatus, StepRecord, TenantRecord, Timer, Waiter,
};
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

/// The journal in a sled database on local disk.
pub struct SledJournal {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    usage: StorageUsage,
    writes: WriteCounts,
    /// Makes flushes survive power loss (`None`: `--unsafe-no-fsync`).
    disk: Option<DiskSync>,
    /// Held shared by every apply, and alone by a backup's copy, so that
    /// the copy holds every batch wholly or not at all.
    write_gate: RwLock<()>,
}

/// How long opening waits for the journal's file lock when it is held: a
/// journal this process just closed keeps it until sled's flusher thread
/// lets go, up to its flush interval (500 ms) after the last handle went
/// (a start that migrates the journal closes and opens it again).
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// The sled database in `dir`, waiting up to [`LOCK_PATIENCE`] for its
/// lock.
fn open_db(dir: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Records are small and read once per resume; a big cache would
            // only cost resident memory.
            .cache_capacity(64 * 1024 * 1024)
            .open();
        match opened {
            // sled says so only in the message (an io error of kind Other).
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(error).with_context(|| {
                        format!(
                            "opening the journal in {}: another process holds it (is another stepwise host running on this data directory?)",
                            dir.display()
                        )
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            opened => {
                return opened.with_context(|| format!("opening the journal in {}", dir.display()));
            }
        }
    }
}

impl SledJournal {
    /// Applies `batch` atomically (see [`Journal::apply`]).
    fn apply_batch(&self, batch: Batch) -> Result<()> {
        let _writing = self.write_gate.read().unwrap_or_else(|p| p.into_inner());
        let Prepared {
            writes,
            stored,
            one_run,
            freed,
        } = records::prepare_batch(batch)?;
        let count = |usage: &StorageUsage| records::count_usage(usage, &stored, &freed);
        if writes.len() == 1 || one_run {
            // In order: sled recovers its log as a prefix, so a crash keeps
            // the first of these writes whenever it keeps a later one.
            for write in &writes {
                match write {
                    Write::Put(tree, key, value) => {
                        self.tree(*tree).insert(key.as_slice(), value.as_slice())?;
                    }
                    Write::Delete(tree, key) => {
                        self.tree(*tree).remove(key.as_slice())?;
                    }
                }
            }
            count(&self.usage);
            return Ok(());
        }
        // Only the trees this batch writes take part in the transaction:
        // each one costs sled a lock and a staging area.
        let mut slot = [usize::MAX; TREE_NAMES.len()];
        let mut touched: Vec<&sled::Tree> = Vec::new();
        for write in &writes {
            let (Write::Put(tree, ..) | Write::Delete(tree, _)) = write;
            if slot[*tree as usize] == usize::MAX {
                slot[*tree as usize] = touched.len();
                touched.push(self.tree(*tree));
            }
        }
        touched
            .as_slice()
            .transaction(|trees| {
                for write in &writes {
                    match write {
                        Write::Put(tree, key, value) => {
                            trees[slot[*tree as usize]].insert(key.as_slice(), value.as_slice())?;
                        }
                        Write::Delete(tree, key) => {
                            trees[slot[*tree as usize]].remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(()) => anyhow::anyhow!("journal transaction aborted"),
                TransactionError::Storage(e) => {
                    anyhow::Error::new(e).context("journal transaction failed")
                }
            })?;
        count(&self.usage);
        Ok(())
    }

    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        recover_interrupted_rewrite(dir)?;
        let db = open_db(dir)?;
        let trees = TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<sled::Result<Vec<_>>>()
            .context("opening the journal's trees")?;
        let saved = trees[TreeId::Settings as usize]
            .get(super::usage::USAGE_SETTING.as_bytes())
            .context("reading the storage usage")?
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
        let usage = StorageUsage::restore(saved.as_deref());
        let disk = Some(DiskSync::open(dir)?);
        Ok(SledJournal {
            db,
            trees,
            usage,
            writes: WriteCounts::default(),
            disk,
            write_gate: RwLock::new(()),
        })
    }

    /// Flushes as sled alone does: a process kill loses nothing flushed,
    /// a power cut may (see [`DiskSync`]). For measuring what the sync
    /// costs, and for hosts whose disk is not worth it.
    pub fn without_fsync(mut self) -> Self {
        self.disk = None;
        self
    }

    /// Rewrites the (closed) journal in `dir` into a fresh copy holding only
    /// its live records. sled is log-structured: a removed value stays in
    /// its files until its segment is reused, so a secret removed from the
    /// journal (a key an older host kept in clear) is really gone only
    /// after this. The old files are removed once the copy is complete; an
    /// interrupted rewrite leaves the original in place.
    pub fn rewrite(dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("the journal directory has no name")?;
        let fresh = dir.with_file_name(format!("{name}.rewrite"));
        let old = dir.with_file_name(format!("{name}.old"));
        for leftover in [&fresh, &old] {
            if leftover.exists() {
                std::fs::remove_dir_all(leftover)
                    .with_context(|| format!("removing {}", leftover.display()))?;
            }
        }
        {
            let from = sled::Config::new()
                .path(dir)
                .open()
                .with_context(|| format!("opening the journal in {}", dir.display()))?;
            let to = sled::Config::new()
                .path(&fresh)
                .open()
                .with_context(|| format!("creating {}", fresh.display()))?;
            to.import(from.export());
            to.flush().context("flushing the rewritten journal")?;
        }
        std::fs::rename(dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
        std::fs::rename(&fresh, dir)
            .with_context(|| format!("moving the rewritten journal to {}", dir.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        Ok(())
    }

    fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id as usize]
    }

    fn get<T: DeserializeOwned>(&self, id: TreeId, key: &[u8]) -> Result<Option<T>> {
        match self.tree(id).get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, id: TreeId, prefix: &[u8]) -> Result<Vec<T>> {
        self.tree(id)
            .scan_prefix(prefix)
            .map(|entry| decode(&entry?.1))
            .collect()
    }
}

impl Journal for SledJournal {
    fn apply(&self, batch: Batch) -> Result<()> {
        self.writes.applying(|| self.apply_batch(batch))
    }

    fn unflushed(&self) -> bool {
        self.writes.unflushed()
    }

    fn usage(&self) -> &StorageUsage {
        &self.usage
    }

    fn flush(&self) -> Result<()> {
        self.writes.flushing(|| {
            self.db
                .flush()
                .map(drop)
                .context("flushing the journal to disk")?;
            match &self.disk {
                Some(disk) => disk.sync(),
                None => Ok(()),
            }
        })
    }

    fn rows_after(&self, tree: TreeId, after: &[u8], limit: usize) -> Result<Vec<records::Row>> {
        use std::ops::Bound;
        self.tree(tree)
            .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn rows_with_prefix(&self, tree: TreeId, prefix: &[u8]) -> Result<Vec<records::Row>> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn disk_syncs(&self) -> Option<u64> {
        self.disk.as_ref().map(DiskSync::syncs)
    }

    fn backup_to(&self, dest: &Path) -> Result<backup::BackupReport> {
        backup::check_destination(dest)?;
        super::make_private(dest)?;
        let partial = backup::partial_of(dest);
        let copied = (|| -> Result<_> {
            let (rows, bytes, paused) = {
                let _paused = self.write_gate.write().unwrap_or_else(|p| p.into_inner());
                let began = std::time::Instant::now();
                let (rows, bytes) = backup::copy_trees(&self.db, &partial)?;
                (rows, bytes, began.elapsed())
            };
            backup::put_in_place(&partial, dest)?;
            Ok((rows, bytes, paused))
        })();
        let (rows, bytes, paused) = copied.inspect_err(|_| {
            // A copy that is not whole is no backup.
            let _ = std::fs::remove_dir_all(&partial);
        })?;
        Ok(backup::BackupReport {
            dest: dest.to_path_buf(),
            rows,
            bytes,
            paused_ms: paused.as_millis() as u64,
        })
    }
}

/// Puts the journal back if a [`SledJournal::rewrite`] stopped after moving
/// it aside and before its copy took its place.
fn recover_interrupted_rewrite(dir: &Path) -> Result<()> {
    let Some(name) = dir.file_name() else {
        return Ok(());
    };
    let old = dir.with_file_name(format!("{}.old", name.to_string_lossy()));
    if !dir.exists() && old.exists() {
        tracing::warn!(journal = %dir.display(), "a journal rewrite was interrupted; restoring the journal from before it");
        std::fs::rename(&old, dir).with_context(|| format!("restoring {}", dir.display()))?;
    }
    Ok(())
}

impl RunJournal for SledJournal {
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>> {
        self.get(TreeId::Runs, &keys::run(key))
    }

    fn run_status(&self, key: &RunKey) -> Result<Option<RunStatus>> {
        self.tree(TreeId::Runs)
            .get(keys::run(key))?
            .map(|bytes| records::status_of(&bytes))
            .transpose()
    }

    fn run_events(&self, key: &RunKey) -> Result<Vec<EventRecord>> {
        Ok(self
            .get(TreeId::RunEvents, &keys::run(key))?
            .unwrap_or_default())
    }

    fn steps(&self, key: &RunKey) -> Result<Vec<StepRecord>> {
        self.scan(TreeId::Steps, &keys::run_prefix(key))
    }

    fn step(&self, key: &RunKey, seq: u32) -> Result<Option<StepRecord>> {
        self.get(TreeId::Steps, &keys::step(key, seq))
    }

    fn active_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        for entry in self.tree(TreeId::Active).iter() {
            let (key, _) = entry?;
            // A crash between a run's two writes may leave its entry here
            // with no record yet, or after its end (see `prepare`).
            if let Some(run) = self.get::<RunRecord>(TreeId::Runs, &key)?
                && !run.status().is_terminal()
            {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    fn timers(&self) -> Result<Vec<Timer>> {
        self.scan(TreeId::Timers, &[])
    }

    fn waiters(&self, tenant: &str, name: &str) -> Result<Vec<Waiter>> {
        self.scan(TreeId::Waiters, &keys::waiter_prefix(tenant, name))
    }

    fn event_seen(&self, tenant: &str, id: &str) -> Result<Option<u64>> {
        let key = keys::join(&[tenant.as_bytes(), id.as_bytes()]);
        Ok(self.tree(TreeId::EventIds).get(key)?.map(|bytes| {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[..8]);
            u64::from_be_bytes(be)
        }))
    }

    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(TreeId::Components)
            .get(hash.as_bytes())?
            .map(|bytes| bytes.to_vec()))
    }

    fn has_component(&self, hash: &str) -> Result<bool> {
        Ok(self
            .tree(TreeId::Components)
            .contains_key(hash.as_bytes())?)
    }

    fn all_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.scan(TreeId::Functions, &[])
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .tree(TreeId::Settings)
            .get(name.as_bytes())?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.scan(TreeId::Tenants, &[])
    }

    fn index(&self, kind: IndexKind, key: &str) -> Result<Option<String>> {
        let at = IndexRef {
            kind,
            key: key.to_string(),
        };
        Ok(self
            .tree(TreeId::Indexes)
            .get(index_key(&at))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn index_scan(&self, kind: IndexKind, prefix: &str) -> Result<Vec<(String, String)>> {
        let at = IndexRef {
            kind,
            key: prefix.to_string(),
        };
        self.tree(TreeId::Indexes)
            .scan_prefix(index_key(&at))
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    String::from_utf8_lossy(&key[1..]).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ))
            })
            .collect()
    }
}

impl QueryJournal for SledJournal {
    fn list_runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        for entry in self
            .tree(TreeId::Runs)
            .scan_prefix(keys::tenant_prefix(tenant))
            .rev()
        {
            let run: RunRecord = decode(&entry?.1)?;
            let function_ok = filter.function.as_ref().is_none_or(|f| *f == run.function);
            let status_ok = filter.status.is_none_or(|s| s == run.status());
            if function_ok && status_ok {
                runs.push(run);
                if runs.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(runs)
    }

    fn list_events(&self, tenant: &str, limit: usize) -> Result<Vec<EventRecord>> {
        self.tree(TreeId::Events)
            .scan_prefix(keys::tenant_prefix(tenant))
            .rev()
            .take(limit)
            .map(|entry| decode(&entry?.1))
            .collect()
    }

    fn logs(&self, key: &RunKey) -> Result<Vec<LogChunk>> {
        self.scan(TreeId::Logs, &keys::run_prefix(key))
    }

    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        self.scan(TreeId::Apps, &keys::tenant_prefix(tenant))
    }

    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>> {
        self.get(
            TreeId::Apps,
            &keys::join(&[tenant.as_bytes(), name.as_bytes()]),
        )
    }

    fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>> {
        self.scan(TreeId::Functions, &keys::tenant_prefix(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Op;
    use crate::model::{RunState, RunStatus, StepKind, StepStatus, TimerKind};

    fn run(id: &str, status: RunStatus) -> RunRecord {
        let state = match status {
            RunStatus::Queued => RunState::Queued { start_at: None },
            RunStatus::Running => RunState::Running { retry_at: None },
            RunStatus::Sleeping => RunState::Sleeping,
            RunStatus::Waiting => RunState::Waiting,
            ended => RunState::ended(ended, 0, None, None),
        };
        RunRecord {
            key: RunKey::new("default", id),
            app: "app".into(),
            version: "v".into(),
            function: "f".into(),
            state,
            event_ids: vec![],
            retries: 0,
            attempt: 0,
            handler_error: None,
            created_at: 0,
            started_at: None,
            kind: Default::default(),
            parent: None,
            queue: Default::default(),
            cleanup: Vec::new(),
            finish_timeout_ms: None,
        }
    }

    #[test]
    fn runs_leave_the_active_set_when_they_end_and_batches_apply_whole() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let key = RunKey::new("default", "r1");
        let timer = Timer {
            at: 10,
            key: key.clone(),
            seq: 0,
            kind: TimerKind::Sleep,
        };
        let step = StepRecord {
            seq: 0,
            id: "nap".into(),
            kind: StepKind::Sleep,
            status: StepStatus::Sleeping,
            attempts: 0,
            output: None,
            error: None,
            started_at: 0,
            ended_at: None,
            wake_at: Some(10),
            wait: None,
            child: None,
        };
        journal
            .apply(vec![
                Op::PutRun(run("r1", RunStatus::Sleeping)),
                Op::PutStep(key.clone(), step.clone()),
                Op::PutTimer(timer.clone()),
            ])
            .unwrap();
        assert_eq!(journal.active_runs().unwrap().len(), 1);
        assert_eq!(journal.steps(&key).unwrap(), vec![step]);
        assert_eq!(journal.timers().unwrap(), vec![timer.clone()]);

        journal
            .apply(vec![
                Op::PutRun(run("r1", RunStatus::Completed)),
                Op::DeleteTimer(timer),
            ])
            .unwrap();
        assert!(journal.active_runs().unwrap().is_empty());
        assert!(journal.timers().unwrap().is_empty());
        assert_eq!(
            journal.run(&key).unwrap().unwrap().status(),
            RunStatus::Completed
        );
        let runs = journal
            .list_runs(
                "default",
                &RunFilter {
                    limit: 10,
                    ..RunFilter::default()
                },
            )
            .unwrap();
        assert_eq!(runs.len(), 1);
        assert!(
            journal
                .list_runs(
                    "other-tenant",
                    &RunFilter {
                        limit: 10,
                        ..RunFilter::default()
                    }
                )
                .unwrap()
                .is_empty()
        );
    }

    /// The ids of the runs a restart would resume.
    fn active_ids(journal: &SledJournal) -> Vec<String> {
        journal
            .active_runs()
            .unwrap()
            .into_iter()
            .map(|r| r.key.run)
            .collect()
    }

    #[test]
    fn a_journal_just_closed_opens_again_and_one_held_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let journal = SledJournal::open(dir.path()).unwrap();
            journal.flush().unwrap();
        }
        let _held = SledJournal::open(dir.path()).unwrap();
        let error = format!("{:#}", SledJournal::open(dir.path()).err().unwrap());
        assert!(error.contains("another process holds it"), "{error}");
    }

    #[test]
    fn a_lone_run_record_keeps_the_active_set_in_step_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        journal
            .apply(vec![Op::PutRun(run("a", RunStatus::Running))])
            .unwrap();
        journal
            .apply(vec![Op::PutRun(run("b", RunStatus::Running))])
            .unwrap();
        journal
            .apply(vec![Op::PutRun(run("b", RunStatus::Completed))])
            .unwrap();
        assert_eq!(active_ids(&journal), ["a"]);
        assert!(
            journal
                .tree(TreeId::Active)
                .get(keys::run(&run("b", RunStatus::Completed).key))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn active_entries_a_crash_left_behind_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        // What a crash between a run's two writes can leave: an ended run
        // still in the active set, and an entry whose record never came.
        journal
            .apply(vec![Op::PutRun(run("ended", RunStatus::Failed))])
            .unwrap();
        for id in ["ended", "never-written"] {
            let key = keys::run(&RunKey::new("default", id));
            journal
                .tree(TreeId::Active)
                .insert(key, Vec::new())
                .unwrap();
        }
        journal
            .apply(vec![Op::PutRun(run("live", RunStatus::Sleeping))])
            .unwrap();
        assert_eq!(active_ids(&journal), ["live"]);
    }
}
