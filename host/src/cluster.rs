//! Several hosts on one PostgreSQL database: which one leads, and what the
//! others do meanwhile.
//!
//! The host holding the runs lease ([`RUNS_LEASE`]) runs the run state
//! machine, its timers, crons and executor, as a lone host does; every
//! other host stands by, forwards each request it gets to the leader
//! ([`crate::api::forward`]) and claims the lease as soon as it is free:
//! at once when the leader stops (SIGTERM releases it), within the lease's
//! time when the leader dies. The new leader starts as a restarted host
//! does: it reads the journal and resumes every run by replay. A leader
//! that can no longer renew its lease, or whose flush found it taken
//! (fencing, see [`crate::journal::postgres::lease`]), exits with
//! [`EXIT_LEASE_LOST`]: whatever it still had in memory is either in the
//! database or never acknowledged, and a supervisor starting it again
//! makes it a standby.

pub use crate::journal::postgres::lease::{Claim, Fence, Leases, RUNS_LEASE};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// The exit status of a host that lost its lease (`EX_TEMPFAIL`): start it
/// again and it stands by.
pub const EXIT_LEASE_LOST: i32 = 75;

/// How long a lease lasts unless renewed, by default: with a standby's
/// polling, another host takes over within 10 s of a leader's death.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(8);

/// The file, in the data directory, that keeps the host's id.
const HOST_ID_FILE: &str = "host-id";

/// The file, in the data directory, a running host holds locked.
const LOCK_FILE: &str = "host.lock";

/// This host's id: `given` (`--host-id`), else the one kept in the data
/// directory, made once from the machine's name and a random suffix. A
/// host started again on its data directory is the same host, and takes
/// its lease back without waiting for it to expire.
pub fn host_id(data_dir: &Path, given: Option<&str>) -> Result<String> {
    if let Some(id) = given {
        check_host_id(id)?;
        return Ok(id.to_string());
    }
    let path = data_dir.join(HOST_ID_FILE);
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim();
        check_host_id(kept).with_context(|| format!("the host id kept in {}", path.display()))?;
        return Ok(kept.to_string());
    }
    let id = format!("{}-{:08x}", machine_name(), rand::random::<u32>());
    std::fs::write(&path, &id)
        .with_context(|| format!("keeping the host id in {}", path.display()))?;
    Ok(id)
}

fn check_host_id(id: &str) -> Result<()> {
    let fine = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        bail!(
            "host id {id:?} is not valid: use 1 to 100 letters, digits, '-', '_' or '.', \
             different for every host on the database"
        );
    }
    Ok(())
}

/// The machine's name (empty if it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// The machine's name, made safe for a host id.
fn machine_name() -> String {
    let name: String = hostname()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '-' {
            true => c,
            false => '-',
        })
        .take(60)
        .collect();
    match name.is_empty() {
        true => "host".to_string(),
        false => name,
    }
}

/// The data directory, held by this process until it exits: two hosts on
/// one data directory would share a host id, and so a lease.
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks `data_dir` for this process, or says which host holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock only takes an advisory lock on an open descriptor.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            bail!(
                "another stepwise host is running on the data directory {}: give each host its own --data",
                data_dir.display()
            );
        }
    }
    Ok(DataDirLock { _file: file })
}

/// How often a standby tries to claim the lease: often enough that a
/// released lease is taken at once, and a dead leader's soon after it
/// expires.
fn claim_interval(ttl: Duration) -> Duration {
    (ttl / 8).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Claims the runs lease, trying again until this host wins it; tells
/// `leader_at` where the leading host is meanwhile. Returns the epoch won.
pub async fn wait_to_lead(
    leases: &mut Leases,
    ttl: Duration,
    mut leader_at: impl FnMut(&str),
) -> i64 {
    let mut told = None;
    let released = leases.released();
    loop {
        match leases.claim(RUNS_LEASE).await {
            Ok(Claim::Won { epoch }) => return epoch,
            Ok(Claim::HeldBy { holder, address }) => {
                if told.as_ref() != Some(&holder) {
                    tracing::info!(leader = %holder, %address, "standing by: another host leads");
                    told = Some(holder);
                }
                leader_at(&address);
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not claim the runs lease; trying again"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(claim_interval(ttl)) => {}
            _ = released.notified() => {
                tracing::info!("a lease was released: claiming it now");
            }
        }
    }
}

/// The lease a leading host holds, kept alive in the background.
pub struct Leadership {
    leases: Arc<Mutex<Leases>>,
    /// What the journal's flushes must hold; its `lost` is told by the
    /// journal when a flush found the lease taken.
    fence: Fence,
}

impl Leadership {
    /// Starts renewing the runs lease won at `epoch` every quarter of
    /// `ttl`. The process exits with [`EXIT_LEASE_LOST`] when a renewal
    /// finds the lease taken, when no renewal succeeded for `ttl` (another
    /// host may have it by now), or when a flush was refused.
    pub fn keep(leases: Leases, epoch: i64, ttl: Duration) -> Self {
        let fence = Fence::runs(leases.holder(), epoch);
        let leases = Arc::new(Mutex::new(leases));
        tokio::spawn(renew(leases.clone(), epoch, ttl, fence.lost.clone()));
        Leadership { leases, fence }
    }

    /// The fence the journal's flushes must hold.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The epoch this host leads at.
    pub fn epoch(&self) -> i64 {
        self.fence.epoch
    }

    /// Lets the lease go at once (a host stopping), so that a standby takes
    /// over without waiting for it to expire.
    pub async fn release(&self) {
        match self
            .leases
            .lock()
            .await
            .release(RUNS_LEASE, self.fence.epoch)
            .await
        {
            Ok(()) => tracing::info!("released the runs lease"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not release the runs lease: another host takes over when it expires"
            ),
        }
    }
}

async fn renew(leases: Arc<Mutex<Leases>>, epoch: i64, ttl: Duration, lost: Arc<Notify>) {
    let every = ttl / 4;
    let mut renewed_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = lost.notified() => lose("a flush was refused: another host holds the runs lease now"),
        }
        let started = Instant::now();
        let attempt = tokio::time::timeout(every, async {
            leases.lock().await.renew(RUNS_LEASE, epoch).await
        })
        .await;
        match attempt {
            Ok(Ok(true)) => renewed_at = started,
            Ok(Ok(false)) => lose("another host holds the runs lease now"),
            Ok(Err(error)) => tracing::warn!(
                error = format!("{error:#}"),
                "could not renew the runs lease; trying again"
            ),
            Err(_) => tracing::warn!("renewing the runs lease timed out; trying again"),
        }
        if renewed_at.elapsed() >= ttl {
            lose("the runs lease could not be renewed in time, so another host may hold it");
        }
    }
}

/// Stops the process: this host may no longer write.
fn lose(why: &str) -> ! {
    tracing::error!(
        "{why}; stopping (exit status {EXIT_LEASE_LOST}): start this host again and it stands by"
    );
    eprintln!("stepwise: {why}; stopping");
    std::process::exit(EXIT_LEASE_LOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = host_id(dir.path(), None).unwrap();
        assert_eq!(host_id(dir.path(), None).unwrap(), first);
        assert_eq!(host_id(dir.path(), Some("b-2")).unwrap(), "b-2");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(host_id(other.path(), None).unwrap(), first);
    }

    #[test]
    fn a_host_id_with_odd_characters_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = host_id(dir.path(), Some("a b")).unwrap_err().to_string();
        assert!(error.contains("not valid"), "{error}");
    }

    #[test]
    fn a_second_host_on_one_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        let error = lock_data_dir(dir.path()).err().unwrap().to_string();
        assert!(error.contains("another stepwise host"), "{error}");
    }

    #[test]
    fn standbys_claim_often_but_not_in_a_busy_loop() {
        assert_eq!(claim_interval(DEFAULT_LEASE_TTL), Duration::from_secs(1));
        assert_eq!(
            claim_interval(Duration::from_millis(400)),
            Duration::from_millis(100)
        );
    }
}
