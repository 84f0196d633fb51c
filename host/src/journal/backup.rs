//! A consistent copy of a live sled journal, for `stepwise backup`.
//!
//! sled has no snapshots, and a copy read tree by tree while writes go on
//! could hold a run's step without the run, or a waiter without its step.
//! So the journal pauses its writes ([`super::SledJournal`]'s write gate)
//! for the copy: every batch is either wholly in it or not at all, as
//! after a crash. Reads and step bodies go on; a write waits for the copy
//! to end, and the backup reports how long that was (`paused_ms`). The
//! copy is written beside its destination and renamed into place once it
//! is flushed and synced, so a destination that exists is always a whole
//! copy.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Rows written to the copy per sled batch.
const ROWS_PER_BATCH: usize = 1024;

/// What a backup copied.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The data directory made: `serve --data` on it serves the copy.
    pub dest: PathBuf,
    /// Rows copied, across the journal's trees.
    pub rows: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// How long the journal's writes waited for the copy.
    pub paused_ms: u64,
}

/// A destination a backup may not go to (the caller's mistake, not the
/// host's failure).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadDestination(String);

/// Checks that `dest` can receive a backup: an absolute path that does not
/// exist or is an empty directory (a backup never overwrites anything).
pub fn check_destination(dest: &Path) -> Result<()> {
    if !dest.is_absolute() {
        return Err(BadDestination(format!(
            "the backup destination must be an absolute path on the host's machine, not {}",
            dest.display()
        ))
        .into());
    }
    match std::fs::read_dir(dest).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(BadDestination(format!(
            "{} is not empty: a backup goes to a new or empty directory, and overwrites nothing",
            dest.display()
        ))
        .into()),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dest.display())),
    }
}

/// Where a backup to `dest` is written before it is whole.
pub fn partial_of(dest: &Path) -> PathBuf {
    dest.join("journal.partial")
}

/// Copies every tree of `db` into a new sled database at `partial` and
/// flushes it: (rows, bytes) copied. The caller keeps the journal's writes
/// paused throughout.
pub fn copy_trees(db: &sled::Db, partial: &Path) -> Result<(u64, u64)> {
    if partial.exists() {
        std::fs::remove_dir_all(partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    let (mut rows, mut bytes) = (0u64, 0u64);
    let copy = sled::Config::new()
        .path(partial)
        .open()
        .with_context(|| format!("creating the copy in {}", partial.display()))?;
    for name in db.tree_names() {
        let from = db.open_tree(&name).context("opening a tree to copy")?;
        let to = copy
            .open_tree(&name)
            .context("creating a tree in the copy")?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in from.iter() {
            let (key, value) = entry.context("reading the journal to copy it")?;
            rows += 1;
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == ROWS_PER_BATCH {
                to.apply_batch(std::mem::take(&mut batch))
                    .context("writing the copy")?;
                in_batch = 0;
            }
        }
        to.apply_batch(batch).context("writing the copy")?;
    }
    copy.flush().context("flushing the copy")?;
    Ok((rows, bytes))
}

/// Syncs the flushed copy at `partial` to the disk and moves it to
/// `dest/journal`, where `serve --data dest` finds it.
pub fn put_in_place(partial: &Path, dest: &Path) -> Result<()> {
    super::disk_sync::DiskSync::open(partial).context("syncing the copy to disk")?;
    let journal = dest.join("journal");
    std::fs::rename(partial, &journal)
        .with_context(|| format!("moving the copy to {}", journal.display()))?;
    super::disk_sync::sync_dir(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_goes_only_to_an_absolute_new_or_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_destination(&dir.path().join("new")).is_ok());
        assert!(check_destination(dir.path()).is_ok(), "empty");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let full = check_destination(dir.path()).unwrap_err().to_string();
        assert!(full.contains("not empty"), "{full}");
        let relative = check_destination(Path::new("backup"))
            .unwrap_err()
            .to_string();
        assert!(relative.contains("absolute"), "{relative}");
    }

    #[test]
    fn the_copy_holds_every_tree_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        // More rows than one batch of the copy holds.
        for (tree, rows) in [("runs", 3u32), ("steps", 2_000)] {
            let tree = db.open_tree(tree).unwrap();
            for n in 0..rows {
                tree.insert(n.to_be_bytes(), vec![7u8; 10]).unwrap();
            }
        }
        let partial = partial_of(dir.path());
        let (rows, bytes) = copy_trees(&db, &partial).unwrap();
        put_in_place(&partial, dir.path()).unwrap();
        assert!(!partial.exists());
        let copy = sled::open(dir.path().join("journal")).unwrap();
        assert_eq!(copy.open_tree("runs").unwrap().len(), 3);
        let steps = copy.open_tree("steps").unwrap();
        assert_eq!(steps.len(), 2_000);
        assert_eq!(
            steps.get(1_999u32.to_be_bytes()).unwrap().unwrap(),
            vec![7u8; 10]
        );
        assert_eq!((rows, bytes), (2_003, 2_003 * 14));
    }
}
