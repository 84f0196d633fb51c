//! What makes a sled flush survive a power cut, not only a process kill.
//!
//! sled 0.34's flush writes its log with `pwrite` and then
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`: the pages reach the
//! disk, but neither the file's metadata (its size, when the log grew) nor
//! the disk's own write cache are flushed, so a power cut can still take
//! acknowledged writes. Values too large for a log segment go to files of
//! their own under `blobs/`, written with no sync at all. So after each
//! group flush [`DiskSync::sync`] `fdatasync`s the log file and every blob
//! file written since the last sync (and the `blobs` directory, for their
//! names). Group commit shares one sync among every writer of the flush.

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A directory's mtime is kept at a coarse clock (a jiffy): a blob added in
/// the same tick as the last look would leave it unchanged. Only an mtime
/// this much older than that look proves nothing was added since.
const MTIME_GRANULARITY: Duration = Duration::from_secs(1);

/// Syncs a sled database's files after its flushes.
pub struct DiskSync {
    log: File,
    blobs_dir: PathBuf,
    blobs: Mutex<BlobsSeen>,
    syncs: AtomicU64,
    blob_syncs: AtomicU64,
}

/// The blob files synced already, and when the directory was last listed.
#[derive(Default)]
struct BlobsSeen {
    names: HashSet<OsString>,
    /// The directory's mtime at the last listing.
    mtime: Option<SystemTime>,
    /// When that listing began.
    listed_at: Option<SystemTime>,
}

impl DiskSync {
    /// Syncs for the sled database in `dir` (opened already): its log and
    /// blob files as they are now are synced once here.
    pub fn open(dir: &Path) -> Result<Self> {
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .with_context(|| format!("opening {} to sync it", log_path.display()))?;
        let sync = DiskSync {
            log,
            blobs_dir: dir.join("blobs"),
            blobs: Mutex::new(BlobsSeen::default()),
            syncs: AtomicU64::new(0),
            blob_syncs: AtomicU64::new(0),
        };
        sync.sync()?;
        sync_dir(dir)?;
        Ok(sync)
    }

    /// Makes everything sled has flushed durable on the disk itself.
    pub fn sync(&self) -> Result<()> {
        self.log
            .sync_data()
            .context("syncing the journal's log file (fdatasync)")?;
        self.sync_new_blobs()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs done so far (each covers one group flush).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Blob files synced so far.
    pub fn blob_syncs(&self) -> u64 {
        self.blob_syncs.load(Ordering::Relaxed)
    }

    fn sync_new_blobs(&self) -> Result<()> {
        let mut seen = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = match std::fs::metadata(&self.blobs_dir) {
            Ok(meta) => meta.modified().ok(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.blobs_dir.display()));
            }
        };
        let unchanged = mtime.is_some() && mtime == seen.mtime;
        let settled = match (mtime, seen.listed_at) {
            (Some(mtime), Some(listed)) => listed
                .duration_since(mtime)
                .is_ok_and(|age| age > MTIME_GRANULARITY),
            _ => false,
        };
        if unchanged && settled {
            return Ok(());
        }
        let listed_at = SystemTime::now();
        let mut present = HashSet::new();
        let mut synced = 0;
        let listing = std::fs::read_dir(&self.blobs_dir)
            .with_context(|| format!("listing {}", self.blobs_dir.display()))?;
        for entry in listing {
            let entry = entry.with_context(|| format!("listing {}", self.blobs_dir.display()))?;
            let name = entry.file_name();
            if !seen.names.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file
                        .sync_data()
                        .with_context(|| format!("syncing {}", entry.path().display()))?,
                    // Collected by sled meanwhile.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("opening {}", entry.path().display()));
                    }
                }
                synced += 1;
            }
            present.insert(name);
        }
        if synced > 0 {
            sync_dir(&self.blobs_dir)?;
            self.blob_syncs.fetch_add(synced, Ordering::Relaxed);
        }
        seen.names = present;
        seen.mtime = mtime;
        seen.listed_at = Some(listed_at);
        Ok(())
    }
}

/// Makes the names in `dir` durable (fsync of the directory).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flush_is_synced_and_every_new_blob_file_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let sync = DiskSync::open(dir.path()).unwrap();
        let opened = sync.syncs();
        db.insert("small", "x").unwrap();
        db.flush().unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.syncs(), opened + 1);
        // Values over a segment's share go to blob files of their own,
        // which sled writes without any sync; two in quick succession (the
        // blobs directory's mtime may not move between them).
        for (n, key) in ["big-1", "big-2"].into_iter().enumerate() {
            db.insert(key, vec![7u8; 1 << 20]).unwrap();
            db.flush().unwrap();
            sync.sync().unwrap();
            assert_eq!(sync.blob_syncs(), n as u64 + 1, "blob {key} synced");
        }
        db.flush().unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.blob_syncs(), 2, "a blob is synced once");
    }
}
