//! Guest memory host-wide: what instances have actually grown to, charged
//! against one budget that new jobs wait on.
//!
//! Each instance may grow to its tenant's limit (256 MiB by default), and
//! hundreds may execute at once, so per-instance limits alone let a few
//! tenants take the machine's memory. Every store's [`GuestLimiter`] charges
//! the bytes its memories really grow to (not their maximum) to the
//! [`MemoryBudget`] (and to its tenant's account) and gives them back when
//! the store is dropped. While the budget is spent, the scheduler starts no
//! new job: they wait in the queue, and nothing fails; an instance that is
//! already executing may still grow within its own limit. So that one
//! tenant spending the budget does not stop the others, a tenant using less
//! than an eighth of it may still start jobs, up to a quarter more than the
//! budget in all (as the executing slots keep a reserve).
//!
//! A job's memory grows after it starts, so starting jobs until the budget
//! reads spent would start a whole burst at once. Each job therefore
//! reserves, as it leaves the queue, the most its app version has been seen
//! to grow to; its store adopts the reservation and charges growth beyond
//! it. A version not seen yet reserves its tenant's per-instance limit, for
//! [`SETTLE`] only: then the store is charged what it has really grown to,
//! that becomes the version's known size, and the scheduler looks again.

use crate::model::RunKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use wasmtime::{ResourceLimiter, StoreLimits};

/// How long a job of a version not seen yet holds the per-instance limit
/// before it is charged what it has grown to.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The host's budget of guest memory.
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    /// Bytes in use per tenant.
    tenants: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Reservations of jobs whose store does not exist yet: bytes, and
    /// whether it is the guess for a version not seen yet.
    pending: Mutex<HashMap<JobKey, (u64, bool)>>,
    /// The most memory each app version has grown to, per tenant (a
    /// tenant learns nothing of what others run).
    peaks: Mutex<HashMap<(String, String), u64>>,
    /// Called when memory is given back other than by a job ending (the
    /// scheduler then looks at its queue again).
    on_room: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

/// A job: a run, and its parallel branch if it is one.
pub type JobKey = (RunKey, Option<u32>);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
            tenants: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            peaks: Mutex::new(HashMap::new()),
            on_room: OnceLock::new(),
        })
    }

    /// Sets what to call when memory is given back other than by a job
    /// ending.
    pub fn on_room(&self, callback: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_room.set(Box::new(callback));
    }

    /// Reserves memory for `job` of `version` as it starts: the version's
    /// peak so far, or `unknown` if it has none. Dropping the returned guard
    /// gives it back, unless the job's store adopted it.
    pub fn reserve(self: &Arc<Self>, job: JobKey, version: &str, unknown: u64) -> Reserved {
        let peak_key = (job.0.tenant.clone(), version.to_string());
        let known = lock(&self.peaks).get(&peak_key).copied();
        let bytes = known.unwrap_or(unknown);
        self.charge(&self.account(&job.0.tenant), bytes);
        if let Some((old, _)) = lock(&self.pending).insert(job.clone(), (bytes, known.is_none())) {
            self.give_back(&self.account(&job.0.tenant), old);
        }
        Reserved {
            budget: self.clone(),
            job,
        }
    }

    fn charge(&self, account: &AtomicU64, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        account.fetch_add(bytes, Ordering::Relaxed);
    }

    fn give_back(&self, account: &AtomicU64, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        account.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn learn_peak(&self, version: &(String, String), grown: u64) {
        if version.1.is_empty() {
            return;
        }
        let mut peaks = lock(&self.peaks);
        if peaks.len() > 100_000 {
            peaks.clear();
        }
        let peak = peaks.entry(version.clone()).or_default();
        *peak = (*peak).max(grown);
    }

    /// `tenant`'s account.
    fn account(&self, tenant: &str) -> Arc<AtomicU64> {
        let mut tenants = lock(&self.tenants);
        if tenants.len() > 10_000 {
            tenants.retain(|_, used| Arc::strong_count(used) > 1);
        }
        tenants.entry(tenant.to_string()).or_default().clone()
    }

    /// Bytes of guest memory `tenant`'s instances use now.
    pub fn used_by(&self, tenant: &str) -> u64 {
        lock(&self.tenants)
            .get(tenant)
            .map(|used| used.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Bytes of guest memory in use now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a new job of `tenant` may start: the budget is not spent,
    /// or the tenant uses little of it and the reserve is not spent.
    pub fn has_room_for(&self, tenant: &str) -> bool {
        let used = self.used();
        used < self.limit
            || (used < self.limit.saturating_add(self.limit / 4)
                && self.used_by(tenant) < self.limit / 8)
    }
}

/// A job's reservation until its store adopts it (dropped before that, as
/// when the job had nothing to do or was aborted, it is given back).
pub struct Reserved {
    budget: Arc<MemoryBudget>,
    job: JobKey,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some((bytes, _)) = lock(&self.budget.pending).remove(&self.job) {
            self.budget
                .give_back(&self.budget.account(&self.job.0.tenant), bytes);
        }
    }
}

/// Where a store's memory is charged: the budget, the tenant's account,
/// and (tenant, version) for the version's known size.
type ChargedTo = (Arc<MemoryBudget>, Arc<AtomicU64>, (String, String));

/// What a store has grown to, and what is charged for it.
#[derive(Default)]
struct Charge {
    to: Option<ChargedTo>,
    /// What its memories have grown to.
    grown: u64,
    /// Charged now: the larger of the adopted reservation and `grown`.
    charged: u64,
}

impl Charge {
    fn grow(&mut self, bytes: u64) {
        self.grown += bytes;
        if self.grown > self.charged {
            if let Some((budget, account, _)) = &self.to {
                budget.charge(account, self.grown - self.charged);
            }
            self.charged = self.grown;
        }
    }

    /// Charges what was really grown from now on (a first-run guess ends),
    /// and records it as the version's size.
    fn correct(&mut self) {
        let Some((budget, account, version)) = &self.to else {
            return;
        };
        budget.learn_peak(version, self.grown);
        if self.charged > self.grown {
            budget.give_back(account, self.charged - self.grown);
            self.charged = self.grown;
            if let Some(callback) = budget.on_room.get() {
                callback();
            }
        }
    }

    fn release(&mut self) {
        if let Some((budget, account, version)) = self.to.take() {
            budget.give_back(&account, self.charged);
            budget.learn_peak(&version, self.grown);
            self.charged = 0;
        }
    }
}

/// A store's limits, charging what its memories grow to to the budget.
pub struct GuestLimiter {
    limits: StoreLimits,
    charge: Arc<Mutex<Charge>>,
}

/// A store's charge, to correct once [`SETTLE`] has passed.
pub struct GuessedCharge(Weak<Mutex<Charge>>);

impl GuessedCharge {
    /// Charges the store what it has really grown to (if it still exists).
    pub fn correct(self) {
        if let Some(charge) = self.0.upgrade() {
            lock(&charge).correct();
        }
    }
}

impl GuestLimiter {
    /// A limiter with `limits`, charging nothing until
    /// [`GuestLimiter::charge_to`].
    pub fn new(limits: StoreLimits) -> Self {
        GuestLimiter {
            limits,
            charge: Arc::default(),
        }
    }

    /// Charges this store's memory to `budget`, on the account of `job`'s
    /// tenant, adopting the job's reservation; `version` is the app
    /// version whose size it records. Returns the charge to correct after
    /// [`SETTLE`] if the reservation was a first-run guess.
    pub fn charge_to(
        &mut self,
        budget: Arc<MemoryBudget>,
        job: &JobKey,
        version: &str,
    ) -> Option<GuessedCharge> {
        let mut charge = lock(&self.charge);
        charge.release();
        let (reserved, guess) = lock(&budget.pending).remove(job).unwrap_or((0, false));
        let account = budget.account(&job.0.tenant);
        let charged = reserved.max(charge.grown);
        budget.charge(&account, charged - reserved);
        charge.charged = charged;
        charge.to = Some((budget, account, (job.0.tenant.clone(), version.to_string())));
        drop(charge);
        guess.then(|| GuessedCharge(Arc::downgrade(&self.charge)))
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed && maximum.is_none_or(|max| desired <= max) {
            lock(&self.charge).grow(desired.saturating_sub(current) as u64);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        lock(&self.charge).release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    const MIB: usize = 1 << 20;

    fn job(tenant: &str, run: &str) -> JobKey {
        (RunKey::new(tenant, run), None)
    }

    fn store(budget: &Arc<MemoryBudget>, job: &JobKey, version: &str) -> GuestLimiter {
        let mut limiter =
            GuestLimiter::new(StoreLimitsBuilder::new().memory_size(80 * MIB).build());
        let _ = limiter.charge_to(budget.clone(), job, version);
        limiter
    }

    #[test]
    fn grown_memory_is_charged_and_given_back_when_the_store_goes() {
        let budget = MemoryBudget::new(100 * MIB as u64);
        let mut first = store(&budget, &job("a", "1"), "v1");
        assert!(first.memory_growing(0, MIB, None).unwrap());
        assert!(first.memory_growing(MIB, 60 * MIB, None).unwrap());
        assert_eq!(budget.used(), 60 * MIB as u64, "what it grew to, not 80");
        assert_eq!(budget.used_by("a"), 60 * MIB as u64);
        assert!(budget.has_room_for("a"));
        let mut second = store(&budget, &job("a", "2"), "v1");
        assert!(second.memory_growing(0, 50 * MIB, None).unwrap());
        assert!(!budget.has_room_for("a"), "110 of 100 MiB: a's jobs wait");
        assert!(
            budget.has_room_for("b"),
            "b uses none of it: the reserve lets it start"
        );
        // Beyond its own limit a store may not grow, and is not charged.
        assert!(!second.memory_growing(50 * MIB, 90 * MIB, None).unwrap());
        assert_eq!(budget.used(), 110 * MIB as u64);
        let mut third = store(&budget, &job("b", "3"), "v2");
        assert!(third.memory_growing(0, 20 * MIB, None).unwrap());
        assert!(
            !budget.has_room_for("c"),
            "130 MiB: the reserve is spent too"
        );
        drop(third);
        drop(first);
        assert_eq!(budget.used(), 50 * MIB as u64);
        assert!(budget.has_room_for("a"));
        drop(second);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.used_by("a"), 0);
    }

    #[test]
    fn starting_jobs_reserve_their_versions_peak_so_a_burst_cannot_overshoot() {
        let budget = MemoryBudget::new(100 * MIB as u64);
        let unknown = 80 * MIB as u64;
        // A version not seen yet reserves the per-instance limit: one job.
        let first = budget.reserve(job("a", "1"), "v1", unknown);
        assert_eq!(budget.used(), unknown);
        let mut running =
            GuestLimiter::new(StoreLimitsBuilder::new().memory_size(80 * MIB).build());
        let guessed = running
            .charge_to(budget.clone(), &job("a", "1"), "v1")
            .expect("a first-run guess is settled later");
        drop(first);
        assert_eq!(budget.used(), unknown, "the store adopted the reservation");
        assert!(running.memory_growing(0, 30 * MIB, None).unwrap());
        assert_eq!(
            budget.used(),
            unknown,
            "growth under the reservation is covered"
        );
        // Corrected, it is charged what it grew to, and room is announced.
        let poked = Arc::new(AtomicU64::new(0));
        let counter = poked.clone();
        budget.on_room(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        guessed.correct();
        assert_eq!(budget.used(), 30 * MIB as u64);
        assert_eq!(poked.load(Ordering::Relaxed), 1);
        drop(running);
        assert_eq!(budget.used(), 0);
        // Now v1 is known to grow to 30 MiB: three fit in the budget, and
        // the fourth waits, before any of them has grown at all.
        let burst: Vec<_> = (0..4)
            .map_while(|i| {
                budget
                    .has_room_for("a")
                    .then(|| budget.reserve(job("a", &format!("b{i}")), "v1", unknown))
            })
            .collect();
        assert_eq!(burst.len(), 4, "0, 30, 60 and 90 MiB are under 100");
        assert!(!budget.has_room_for("a"));
        // A reservation whose job never made a store is given back.
        drop(burst);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.used_by("a"), 0);
    }
}
