//! The ready queue: which job executes next, under concurrency limits,
//! throttles and priorities.
//!
//! Jobs that share the same concurrency keys (and, for first starts, the
//! same throttle) form a *partition*, ordered by score (enqueue time minus
//! priority head start) and then arrival, so each partition is FIFO within
//! a priority. A partition is in exactly one place: ready (ordered by its
//! head's score), blocked on one full key, throttled until a time, or idle
//! (empty). Popping takes the best ready partition's head (of the tenant
//! whose turn it is, see below); a partition whose
//! key is full is parked on that key and comes back only when the key frees
//! a slot, one partition per slot. Every operation is O(log n) in queued jobs
//! and partitions, whatever the queue's size: parking and waking touch one
//! partition, never a scan.
//!
//! Executing slots are shared between tenants ([`SlotPolicy`]): the tenant
//! with the fewest jobs executing goes first (ties: the one served longest
//! ago), so tenants take turns instead of the first to arrive taking every
//! slot. The share is work-conserving: a tenant alone may use every slot,
//! and since a started job cannot be preempted, a small reserve of slots
//! beyond those lets any tenant below its share start even when another
//! tenant holds them all.
//!
//! Throttles use GCRA (as Inngest does): `limit` starts per `period`, plus
//! `burst` at once; the state (a theoretical arrival time per key) is kept in
//! memory, so a restart forgets how much of a period was used.

use crate::model::{QueueSpec, RunKey, ThrottleKey};
use rustc_hash::FxHashMap as HashMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Lower runs first: enqueue time in ms minus the priority head start.
pub type Score = i64;

/// Something to execute: a run's handler, or one branch of a parallel group.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Job {
    /// The run to execute (tenant and id).
    pub run: RunKey,
    /// The parallel branch (its step's position), or `None` for the run.
    pub branch: Option<u32>,
}

impl Job {
    /// The run's own job (its handler, not a branch).
    pub fn run(run: RunKey) -> Self {
        Job { run, branch: None }
    }
}

/// How a job is queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Its run's concurrency keys (its tenant's cap among them), throttle
    /// and priority.
    pub spec: QueueSpec,
    /// Whether it is the run's first start (throttles count only those).
    pub first_start: bool,
}

/// How the host's executing slots are shared between tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPolicy {
    /// Jobs executing at once host-wide, whichever tenants they belong to.
    pub slots: u32,
    /// Jobs each tenant may start even when every one of `slots` is taken
    /// (by others): its guaranteed share.
    pub share: u32,
    /// Slots beyond `slots` that only tenants below their share may use, so
    /// that a tenant holding every slot with long steps cannot starve the
    /// others until its steps end.
    pub reserve: u32,
}

impl Default for SlotPolicy {
    fn default() -> Self {
        SlotPolicy {
            slots: u32::MAX,
            share: 0,
            reserve: 0,
        }
    }
}

impl SlotPolicy {
    /// Whether a tenant with `executing` jobs may start one more while
    /// `total` execute host-wide.
    fn may_start(&self, executing: u32, total: u32) -> bool {
        total < self.slots
            || (executing < self.share && total < self.slots.saturating_add(self.reserve))
    }
}

/// The concurrency slots a popped job holds until [`Queue::release`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lease {
    keys: Vec<u64>,
    tenant: TenantId,
}

type PartId = u64;
type KeyId = u64;
type TenantId = u64;
/// A position: score, then arrival order.
type Pos = (Score, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Idle,
    Ready(Pos),
    Blocked(KeyId, Pos),
    Throttled(u64),
}

struct Partition {
    name: String,
    tenant: TenantId,
    keys: Vec<KeyId>,
    throttle: Option<ThrottleKey>,
    /// The waiting jobs, with their fingerprints.
    jobs: BTreeMap<Pos, (Job, u64)>,
    place: Place,
}

struct Key {
    name: String,
    limit: u32,
    in_use: u32,
    /// Partitions that count against it.
    partitions: u32,
    blocked: BTreeSet<(Pos, PartId)>,
}

impl Key {
    fn full(&self) -> bool {
        self.in_use >= self.limit
    }
}

/// A tenant's turn at the slots.
#[derive(Default)]
struct Tenant {
    name: String,
    /// Its partitions that are ready, best first.
    ready: BTreeSet<(Pos, PartId)>,
    /// Its jobs executing now.
    executing: u32,
    /// When it last started a job (a counter): lower waited longer.
    turn: u64,
    /// Its partitions (it is forgotten when none is left and nothing
    /// executes).
    partitions: u32,
}

impl Tenant {
    fn order(&self, id: TenantId) -> (u32, u64, TenantId) {
        (self.executing, self.turn, id)
    }
}

/// The queue. Not thread-safe: the scheduler holds it under its lock.
#[derive(Default)]
pub struct Queue {
    policy: SlotPolicy,
    keys: HashMap<KeyId, Key>,
    key_ids: HashMap<String, KeyId>,
    parts: HashMap<PartId, Partition>,
    part_ids: HashMap<String, PartId>,
    tenants: HashMap<TenantId, Tenant>,
    tenant_ids: HashMap<String, TenantId>,
    /// Tenants with a ready partition, in the order they get a slot: fewest
    /// executing first, then the one that waited longest.
    turns: BTreeSet<(u32, u64, TenantId)>,
    /// Jobs executing host-wide.
    executing: u32,
    /// Starts so far (the clock of tenants' turns).
    starts: u64,
    /// Why a ready partition is ready: the key that woke it, if any (when it
    /// turns out blocked elsewhere, that key wakes its next partition).
    woken_by: HashMap<PartId, KeyId>,
    throttled: BTreeSet<(u64, PartId)>,
    /// Where each waiting job is, by its fingerprint: with 100,000 jobs
    /// waiting, a map keyed by the jobs' strings spends its time in cache
    /// misses on them; fingerprints are computed while a job is at hand.
    jobs: HashMap<u64, (PartId, Pos)>,
    /// Jobs whose fingerprint another waiting job had already (rare).
    collided: std::collections::HashMap<Job, (PartId, Pos)>,
    /// Waiting jobs per tenant (tenants may limit how many).
    per_tenant: HashMap<String, usize>,
    /// GCRA theoretical arrival time per throttle key, ms.
    throttles: HashMap<String, u64>,
    next_id: u64,
    arrivals: u64,
    /// Reused to build partition names without allocating.
    scratch: String,
}

impl Queue {
    /// An empty queue with no bound on executing jobs but their keys'.
    pub fn new() -> Self {
        Queue::default()
    }

    /// An empty queue sharing executing slots by `policy`.
    pub fn with_policy(policy: SlotPolicy) -> Self {
        Queue {
            policy,
            ..Queue::default()
        }
    }

    /// Sets how many jobs execute at once (more when worker hosts join);
    /// jobs executing beyond it keep their slots until they end.
    pub fn set_slots(&mut self, slots: u32) {
        self.policy.slots = slots;
    }

    /// Jobs executing now (popped and not yet released).
    pub fn executing(&self) -> u32 {
        self.executing
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.jobs.len() + self.collided.len()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `job` waits here.
    pub fn contains(&self, job: &Job) -> bool {
        self.find(job).is_some()
    }

    /// Jobs of `tenant` waiting.
    pub fn len_of(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Where `job` waits, if it does.
    fn find(&self, job: &Job) -> Option<(PartId, Pos)> {
        let found = self.jobs.get(&fingerprint(job)).copied();
        match found {
            Some((part, pos))
                if self.parts[&part]
                    .jobs
                    .get(&pos)
                    .is_some_and(|(j, _)| j == job) =>
            {
                Some((part, pos))
            }
            _ => self.collided.get(job).copied(),
        }
    }

    /// Queues `job` at `now` (ms); a job already queued stays where it is.
    pub fn push(&mut self, job: Job, admission: &Admission, now: u64) {
        if self.contains(&job) {
            return;
        }
        let part = self.partition(&job.run.tenant, admission);
        self.arrivals += 1;
        let pos = (
            (now as i64).saturating_sub(admission.spec.priority_ms),
            self.arrivals,
        );
        let print = fingerprint(&job);
        match self.per_tenant.get_mut(&job.run.tenant) {
            Some(count) => *count += 1,
            None => {
                self.per_tenant.insert(job.run.tenant.clone(), 1);
            }
        }
        match self.jobs.entry(print) {
            Entry::Vacant(slot) => {
                slot.insert((part, pos));
            }
            Entry::Occupied(_) => {
                self.collided.insert(job.clone(), (part, pos));
            }
        }
        let partition = self.parts.get_mut(&part).expect("partition exists");
        partition.jobs.insert(pos, (job, print));
        // A new head (of a new or a lower-priority partition) moves it.
        if partition.jobs.keys().next() == Some(&pos) {
            self.reposition(part);
        }
    }

    /// Takes the next job allowed to execute at `now`, with the slots it
    /// holds: from the tenant whose turn it is, if the [`SlotPolicy`] lets
    /// it start one more.
    pub fn pop(&mut self, now: u64) -> Option<(Job, Lease)> {
        self.pop_where(now, |_| true)
    }

    /// [`Queue::pop`], passing over tenants for which `room` says no (the
    /// host lacks resources for them now).
    pub fn pop_where(&mut self, now: u64, room: impl Fn(&str) -> bool) -> Option<(Job, Lease)> {
        while let Some(&(at, part)) = self.throttled.first() {
            if at > now {
                break;
            }
            self.throttled.remove(&(at, part));
            self.parts.get_mut(&part).expect("partition").place = Place::Idle;
            self.reposition(part);
        }
        loop {
            // Tenants in turn; once one may not start for the slots, no
            // later one (with as many executing or more) may.
            let tenant = self
                .turns
                .iter()
                .take_while(|(executing, ..)| self.policy.may_start(*executing, self.executing))
                .map(|&(.., tenant)| tenant)
                .find(|tenant| room(&self.tenants[tenant].name))?;
            let (pos, part) = self.take_ready(tenant);
            let woken_by = self.woken_by.remove(&part);
            let partition = &self.parts[&part];
            if let Some(&key) = partition.keys.iter().find(|k| self.keys[*k].full()) {
                self.parts.get_mut(&part).expect("partition").place = Place::Blocked(key, pos);
                self.keys
                    .get_mut(&key)
                    .expect("key")
                    .blocked
                    .insert((pos, part));
                if let Some(origin) = woken_by {
                    self.wake_blocked(origin);
                }
                continue;
            }
            if let Some(throttle) = partition.throttle.clone()
                && let Err(until) = self.take_throttle(&throttle, now)
            {
                self.parts.get_mut(&part).expect("partition").place = Place::Throttled(until);
                self.throttled.insert((until, part));
                continue;
            }
            let partition = self.parts.get_mut(&part).expect("partition");
            partition.place = Place::Idle;
            let (pos, (job, print)) = partition
                .jobs
                .pop_first()
                .expect("a ready partition has jobs");
            let keys = partition.keys.clone();
            for key in &keys {
                self.keys.get_mut(key).expect("key").in_use += 1;
            }
            self.forget(&job, print, (part, pos));
            self.starts += 1;
            let turn = self.starts;
            self.update_tenant(tenant, |t| {
                t.executing += 1;
                t.turn = turn;
            });
            self.executing += 1;
            self.reposition(part);
            return Some((job, Lease { keys, tenant }));
        }
    }

    /// Gives back the slots of a job that stopped executing.
    pub fn release(&mut self, lease: Lease) {
        if self.tenants.contains_key(&lease.tenant) {
            self.executing = self.executing.saturating_sub(1);
            self.update_tenant(lease.tenant, |t| {
                t.executing = t.executing.saturating_sub(1)
            });
            self.forget_tenant_if_unused(lease.tenant);
        }
        for key in lease.keys {
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            state.in_use = state.in_use.saturating_sub(1);
            self.wake_blocked(key);
            self.forget_key_if_unused(key);
        }
    }

    /// Takes `job` out of the queue (its run was cancelled).
    pub fn remove(&mut self, job: &Job) -> bool {
        let Some((part, pos)) = self.find(job) else {
            return false;
        };
        self.forget(job, fingerprint(job), (part, pos));
        let partition = self.parts.get_mut(&part).expect("partition");
        let was_head = partition.jobs.keys().next() == Some(&pos);
        partition.jobs.remove(&pos);
        if was_head {
            self.reposition(part);
        }
        true
    }

    /// Drops `job` (at `at`) from the index of waiting jobs.
    fn forget(&mut self, job: &Job, print: u64, at: (PartId, Pos)) {
        if let Some(count) = self.per_tenant.get_mut(&job.run.tenant) {
            *count -= 1;
            if *count == 0 {
                self.per_tenant.remove(&job.run.tenant);
            }
        }
        if self.jobs.get(&print) == Some(&at) {
            self.jobs.remove(&print);
        } else {
            self.collided.remove(job);
        }
    }

    /// When the first throttled partition may start, if one is waiting.
    pub fn next_wake(&self) -> Option<u64> {
        self.throttled.first().map(|(at, _)| *at)
    }

    /// Moves one partition blocked on `key` back to ready, if `key` has a
    /// free slot.
    fn wake_blocked(&mut self, key: KeyId) {
        let Some(state) = self.keys.get_mut(&key) else {
            return;
        };
        if state.full() {
            return;
        }
        if let Some((_, part)) = state.blocked.pop_first() {
            self.parts.get_mut(&part).expect("partition").place = Place::Idle;
            self.reposition(part);
            if matches!(self.parts[&part].place, Place::Ready(_)) {
                self.woken_by.insert(part, key);
            }
        }
    }

    /// Puts `part` where its head belongs (after its head or place changed).
    fn reposition(&mut self, part: PartId) {
        let partition = &self.parts[&part];
        let head = partition.jobs.keys().next().copied();
        let (tenant, place) = (partition.tenant, partition.place);
        match place {
            Place::Ready(pos) => self.unready(tenant, (pos, part)),
            Place::Blocked(key, pos) => {
                let state = self.keys.get_mut(&key).expect("key");
                state.blocked.remove(&(pos, part));
                if let Some(head) = head {
                    state.blocked.insert((head, part));
                    self.parts.get_mut(&part).expect("partition").place = Place::Blocked(key, head);
                    return;
                }
            }
            // Throttled stays put until its time; the head is read then.
            Place::Throttled(_) if head.is_some() => return,
            Place::Throttled(at) => {
                self.throttled.remove(&(at, part));
            }
            Place::Idle => {}
        }
        match head {
            Some(head) => {
                self.parts.get_mut(&part).expect("partition").place = Place::Ready(head);
                self.make_ready(tenant, (head, part));
            }
            None => {
                self.woken_by.remove(&part);
                let partition = self.parts.remove(&part).expect("partition");
                self.part_ids.remove(&partition.name);
                self.update_tenant(tenant, |t| t.partitions -= 1);
                self.forget_tenant_if_unused(tenant);
                for key in partition.keys {
                    if let Some(state) = self.keys.get_mut(&key) {
                        state.partitions -= 1;
                    }
                    self.forget_key_if_unused(key);
                }
            }
        }
    }

    /// Adds a ready partition of `tenant` (the tenant joins the turns if it
    /// had none).
    fn make_ready(&mut self, tenant: TenantId, entry: (Pos, PartId)) {
        let state = self.tenants.get_mut(&tenant).expect("tenant");
        if state.ready.is_empty() {
            self.turns.insert(state.order(tenant));
        }
        state.ready.insert(entry);
    }

    /// Removes a ready partition of `tenant` (the tenant leaves the turns
    /// if it has no other).
    fn unready(&mut self, tenant: TenantId, entry: (Pos, PartId)) {
        let state = self.tenants.get_mut(&tenant).expect("tenant");
        if state.ready.remove(&entry) && state.ready.is_empty() {
            self.turns.remove(&state.order(tenant));
        }
    }

    /// Takes `tenant`'s best ready partition (it has one: it is in the
    /// turns).
    fn take_ready(&mut self, tenant: TenantId) -> (Pos, PartId) {
        let state = self.tenants.get_mut(&tenant).expect("tenant");
        let entry = *state.ready.first().expect("a tenant in the turns is ready");
        self.unready(tenant, entry);
        entry
    }

    /// Changes `tenant`'s counts, keeping its place in the turns right.
    fn update_tenant(&mut self, tenant: TenantId, change: impl FnOnce(&mut Tenant)) {
        let state = self.tenants.get_mut(&tenant).expect("tenant");
        let queued = !state.ready.is_empty();
        if queued {
            self.turns.remove(&state.order(tenant));
        }
        change(state);
        if queued {
            self.turns.insert(state.order(tenant));
        }
    }

    /// The id of tenant `name`, created if new.
    fn tenant(&mut self, name: &str) -> TenantId {
        if let Some(&id) = self.tenant_ids.get(name) {
            return id;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.tenants.insert(
            id,
            Tenant {
                name: name.to_string(),
                ..Tenant::default()
            },
        );
        self.tenant_ids.insert(name.to_string(), id);
        id
    }

    fn forget_tenant_if_unused(&mut self, tenant: TenantId) {
        let Some(state) = self.tenants.get(&tenant) else {
            return;
        };
        if state.executing > 0 || state.partitions > 0 {
            return;
        }
        let name = state.name.clone();
        self.tenants.remove(&tenant);
        self.tenant_ids.remove(&name);
    }

    /// The partition of `tenant` for `admission`, created if new.
    fn partition(&mut self, tenant: &str, admission: &Admission) -> PartId {
        let spec = &admission.spec;
        let throttle = spec.throttle.as_ref().filter(|_| admission.first_start);
        let mut names: Vec<&str> = spec.concurrency.iter().map(|c| c.key.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{tenant}\u{2}");
        for name in &names {
            let _ = write!(scratch, "{name}\u{0}");
        }
        let _ = write!(
            scratch,
            "\u{1}{}",
            throttle.map(|t| t.key.as_str()).unwrap_or("")
        );
        for limit in &spec.concurrency {
            self.key(&limit.key, limit.limit);
        }
        if let Some(&id) = self.part_ids.get(scratch.as_str()) {
            self.scratch = scratch;
            return id;
        }
        let name = scratch.clone();
        self.scratch = scratch;
        let keys: Vec<KeyId> = names.iter().map(|n| self.key_ids[*n]).collect();
        for key in &keys {
            self.keys.get_mut(key).expect("key").partitions += 1;
        }
        let tenant = self.tenant(tenant);
        self.update_tenant(tenant, |t| t.partitions += 1);
        self.next_id += 1;
        let id = self.next_id;
        self.parts.insert(
            id,
            Partition {
                name: name.clone(),
                tenant,
                keys,
                throttle: throttle.cloned(),
                jobs: BTreeMap::new(),
                place: Place::Idle,
            },
        );
        self.part_ids.insert(name, id);
        id
    }

    fn key(&mut self, name: &str, limit: u32) -> KeyId {
        if let Some(&id) = self.key_ids.get(name) {
            let key = self.keys.get_mut(&id).expect("key");
            if key.limit != limit.max(1) {
                key.limit = limit.max(1);
                self.wake_blocked(id);
            }
            return id;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.keys.insert(
            id,
            Key {
                name: name.to_string(),
                limit: limit.max(1),
                in_use: 0,
                partitions: 0,
                blocked: BTreeSet::new(),
            },
        );
        self.key_ids.insert(name.to_string(), id);
        id
    }

    fn forget_key_if_unused(&mut self, key: KeyId) {
        let Some(state) = self.keys.get(&key) else {
            return;
        };
        if state.in_use > 0 || state.partitions > 0 || !state.blocked.is_empty() {
            return;
        }
        let name = state.name.clone();
        self.keys.remove(&key);
        self.key_ids.remove(&name);
    }

    /// Takes a start from `throttle` at `now`, or says when one is free.
    fn take_throttle(&mut self, throttle: &ThrottleKey, now: u64) -> Result<(), u64> {
        let tat = self.throttles.get(&throttle.key).copied();
        let tat = gcra(tat, now, throttle.limit, throttle.period_ms, throttle.burst)?;
        self.throttles.insert(throttle.key.clone(), tat);
        if self.throttles.len() > 100_000 {
            self.throttles.retain(|_, tat| *tat > now);
        }
        Ok(())
    }
}

/// A job's fingerprint in the index of waiting jobs.
fn fingerprint(job: &Job) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(job)
}

/// GCRA, as Inngest uses for throttles and rate limits: `limit` per
/// `period_ms`, plus `burst` at once. Given a key's theoretical arrival time
/// (`None` for a fresh key), returns the new one if a start is allowed at
/// `now`, or else the time from which one is.
pub fn gcra(
    tat: Option<u64>,
    now: u64,
    limit: u32,
    period_ms: u64,
    burst: u32,
) -> Result<u64, u64> {
    let limit = u64::from(limit.max(1));
    let interval = (period_ms / limit).max(1);
    let tolerance = interval * (limit + u64::from(burst) - 1);
    let tat = tat.unwrap_or(now).max(now);
    if tat - now > tolerance {
        return Err(tat - tolerance);
    }
    Ok(tat + interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConcurrencyKey;

    fn job(id: &str) -> Job {
        Job::run(RunKey::new("t", id))
    }

    fn limited(keys: &[(&str, u32)]) -> Admission {
        Admission {
            spec: QueueSpec {
                concurrency: keys
                    .iter()
                    .map(|(key, limit)| ConcurrencyKey {
                        key: key.to_string(),
                        limit: *limit,
                    })
                    .collect(),
                ..QueueSpec::default()
            },
            first_start: true,
        }
    }

    fn ids(popped: &[(Job, Lease)]) -> Vec<String> {
        popped.iter().map(|(j, _)| j.run.run.clone()).collect()
    }

    #[test]
    fn unlimited_jobs_come_out_in_arrival_order_with_priority_first() {
        let mut q = Queue::new();
        q.push(job("a"), &Admission::default(), 10);
        q.push(job("b"), &Admission::default(), 10);
        let mut urgent = Admission::default();
        urgent.spec.priority_ms = 5_000;
        q.push(job("c"), &urgent, 20);
        let popped: Vec<_> = std::iter::from_fn(|| q.pop(20)).collect();
        assert_eq!(ids(&popped), ["c", "a", "b"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_key_holds_its_jobs_until_a_slot_is_released() {
        let mut q = Queue::new();
        for id in ["a", "b", "c"] {
            q.push(job(id), &limited(&[("fn", 2)]), 1);
        }
        assert_eq!(q.len_of("t"), 3);
        let first = q.pop(1).unwrap();
        let second = q.pop(1).unwrap();
        assert!(q.pop(1).is_none(), "the limit is 2");
        assert_eq!(q.len_of("t"), 1);
        q.release(first.1);
        let third = q.pop(1).unwrap();
        assert_eq!(third.0, job("c"));
        q.release(second.1);
        q.release(third.1);
        assert!(q.pop(1).is_none());
    }

    #[test]
    fn keyed_limits_let_other_keys_through_and_share_the_function_limit() {
        let mut q = Queue::new();
        // Per-user limit 1, function limit 2.
        for (id, user) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            q.push(job(id), &limited(&[("fn", 2), (user, 1)]), 1);
        }
        let p1 = q.pop(1).unwrap();
        let p2 = q.pop(1).unwrap();
        assert_eq!(ids(&[p1, p2]), ["a1", "b1"], "a2 waits for user a");
        assert!(q.pop(1).is_none(), "the function limit is full");
        // Releasing b1 frees the function key and user b: c1 goes next (a2
        // is still held by user a).
        let mut q2 = Queue::new();
        for (id, user) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            q2.push(job(id), &limited(&[("fn", 2), (user, 1)]), 1);
        }
        let a1 = q2.pop(1).unwrap();
        let b1 = q2.pop(1).unwrap();
        q2.release(b1.1);
        assert_eq!(q2.pop(1).unwrap().0, job("c1"));
        assert!(q2.pop(1).is_none());
        q2.release(a1.1);
        assert_eq!(q2.pop(1).unwrap().0, job("a2"));
    }

    #[test]
    fn a_partition_woken_for_one_key_but_blocked_on_another_passes_the_slot_on() {
        let mut q = Queue::new();
        q.push(job("z0"), &limited(&[("shared", 1)]), 1);
        q.push(job("x0"), &limited(&[("x", 1)]), 1);
        let z0 = q.pop(1).unwrap();
        let _x0 = q.pop(1).unwrap();
        q.push(job("x1"), &limited(&[("shared", 1), ("x", 1)]), 2);
        q.push(job("y1"), &limited(&[("shared", 1), ("y", 1)]), 3);
        assert!(q.pop(3).is_none(), "both wait for the shared key");
        // The shared slot frees: x1 (older) is woken first but is still held
        // by its own key, so the slot goes on to y1.
        q.release(z0.1);
        assert_eq!(q.pop(4).unwrap().0, job("y1"));
        assert!(q.pop(4).is_none());
    }

    #[test]
    fn throttles_delay_first_starts_in_order_and_spare_resumes() {
        let throttle = ThrottleKey {
            key: "fn".into(),
            limit: 2,
            period_ms: 6_000,
            burst: 1,
        };
        let admission = Admission {
            spec: QueueSpec {
                throttle: Some(throttle),
                ..QueueSpec::default()
            },
            first_start: true,
        };
        let mut q = Queue::new();
        for i in 0..6 {
            q.push(job(&format!("r{i}")), &admission, 0);
        }
        // limit + burst at once, then one per period / limit.
        let started: Vec<_> = std::iter::from_fn(|| q.pop(0)).collect();
        assert_eq!(ids(&started), ["r0", "r1", "r2"]);
        assert_eq!(q.next_wake(), Some(3_000));
        let mut resumed = admission.clone();
        resumed.first_start = false;
        q.push(job("old"), &resumed, 1);
        assert_eq!(q.pop(1).unwrap().0, job("old"), "resumes are not throttled");
        assert!(q.pop(2_999).is_none());
        assert_eq!(q.pop(3_000).unwrap().0, job("r3"));
        assert!(q.pop(3_000).is_none());
        assert_eq!(q.pop(6_000).unwrap().0, job("r4"));
    }

    #[test]
    fn jobs_whose_fingerprints_collide_are_still_found_popped_and_removed() {
        let mut q = Queue::new();
        let (a, b, c) = (job("a"), job("b"), job("c"));
        q.push(a.clone(), &Admission::default(), 1);
        // Make b's and c's fingerprints look taken, as if they collided.
        let at = q.jobs[&fingerprint(&a)];
        q.jobs.insert(fingerprint(&b), at);
        q.jobs.insert(fingerprint(&c), at);
        q.push(b.clone(), &Admission::default(), 2);
        q.push(c.clone(), &Admission::default(), 3);
        assert_eq!(q.collided.len(), 2);
        assert!(q.contains(&a) && q.contains(&b) && q.contains(&c));
        q.push(b.clone(), &Admission::default(), 4);
        assert_eq!(
            q.collided.len(),
            2,
            "a job already waiting is not added twice"
        );
        assert!(q.remove(&c));
        assert!(!q.contains(&c));
        assert_eq!(q.pop(5).unwrap().0, a);
        assert_eq!(q.pop(5).unwrap().0, b);
        assert!(q.pop(5).is_none());
        assert!(q.collided.is_empty());
        assert_eq!(q.len_of("t"), 0);
    }

    #[test]
    fn removed_jobs_never_come_out_and_partitions_are_freed() {
        let mut q = Queue::new();
        q.push(job("a"), &limited(&[("k", 1)]), 1);
        q.push(job("b"), &limited(&[("k", 1)]), 2);
        assert!(q.remove(&job("a")));
        assert!(!q.remove(&job("a")));
        let (b, lease) = q.pop(3).unwrap();
        assert_eq!(b, job("b"));
        q.release(lease);
        assert!(q.parts.is_empty() && q.keys.is_empty() && q.turns.is_empty());
        assert!(q.tenants.is_empty() && q.tenant_ids.is_empty());
    }

    fn of(tenant: &str, id: &str) -> Job {
        Job::run(RunKey::new(tenant, id))
    }

    const POLICY: SlotPolicy = SlotPolicy {
        slots: 4,
        share: 2,
        reserve: 2,
    };

    #[test]
    fn tenants_take_turns_instead_of_first_come() {
        let mut q = Queue::with_policy(POLICY);
        for i in 0..6 {
            q.push(of("a", &format!("a{i}")), &Admission::default(), 1);
        }
        q.push(of("b", "b0"), &Admission::default(), 2);
        q.push(of("b", "b1"), &Admission::default(), 3);
        let started: Vec<_> = std::iter::from_fn(|| q.pop(3)).collect();
        let order: Vec<_> = started
            .iter()
            .map(|(j, _)| format!("{}:{}", j.run.tenant, j.run.run))
            .collect();
        // b's jobs arrived last but do not wait for a's six.
        assert_eq!(order[..4], ["a:a0", "b:b0", "a:a1", "b:b1"]);
        assert_eq!(
            order.len(),
            4,
            "four slots, and both tenants hold their share"
        );
        assert_eq!(q.executing(), 4);
    }

    #[test]
    fn a_tenant_alone_uses_every_slot_and_others_still_get_their_share() {
        let mut q = Queue::with_policy(POLICY);
        for i in 0..10 {
            q.push(of("a", &format!("a{i}")), &Admission::default(), 1);
        }
        let a: Vec<_> = std::iter::from_fn(|| q.pop(1)).collect();
        assert_eq!(a.len(), 4, "work-conserving: a alone takes every slot");
        // a holds them all, with steps that may block for long: b still
        // starts its share from the reserve, and no more.
        for i in 0..5 {
            q.push(of("b", &format!("b{i}")), &Admission::default(), 2);
        }
        let b: Vec<_> = std::iter::from_fn(|| q.pop(2)).collect();
        assert_eq!(ids(&b), ["b0", "b1"]);
        assert_eq!(q.executing(), 6);
        // Three of a's end: the slots left are shared, a getting back to
        // b's two and no further while b waits.
        let mut a = a.into_iter();
        q.release(a.next().unwrap().1);
        q.release(a.next().unwrap().1);
        q.release(a.next().unwrap().1);
        assert_eq!(q.executing(), 3);
        let next: Vec<_> = std::iter::from_fn(|| q.pop(3)).collect();
        assert_eq!(ids(&next), ["a4"]);
        // One of b's ends: b (one executing) goes before a (two).
        let mut b = b.into_iter();
        q.release(b.next().unwrap().1);
        let next_b: Vec<_> = std::iter::from_fn(|| q.pop(4)).collect();
        assert_eq!(ids(&next_b), ["b2"]);
        let next: Vec<_> = next.into_iter().chain(next_b).collect();
        for (_, lease) in next.into_iter().chain(b).chain(a) {
            q.release(lease);
        }
        assert_eq!(q.executing(), 0);
    }

    #[test]
    fn the_reserve_is_only_for_tenants_below_their_share() {
        let mut q = Queue::with_policy(SlotPolicy {
            slots: 2,
            share: 1,
            reserve: 1,
        });
        for t in ["a", "b", "c"] {
            for i in 0..3 {
                q.push(of(t, &format!("{t}{i}")), &Admission::default(), 1);
            }
        }
        let started: Vec<_> = std::iter::from_fn(|| q.pop(1)).collect();
        // Two slots for a and b in turn, the reserve's one for c.
        let tenants: Vec<_> = started.iter().map(|(j, _)| j.run.tenant.clone()).collect();
        assert_eq!(tenants, ["a", "b", "c"]);
        assert!(q.pop(1).is_none());
    }

    #[test]
    fn tenants_the_host_has_no_room_for_are_passed_over() {
        let mut q = Queue::with_policy(POLICY);
        q.push(of("a", "a0"), &Admission::default(), 1);
        q.push(of("b", "b0"), &Admission::default(), 2);
        let (job, _) = q.pop_where(2, |tenant| tenant != "a").unwrap();
        assert_eq!(job, of("b", "b0"));
        assert!(q.pop_where(2, |tenant| tenant != "a").is_none());
        assert_eq!(
            q.pop(2).unwrap().0,
            of("a", "a0"),
            "a waited, nothing failed"
        );
    }
}
