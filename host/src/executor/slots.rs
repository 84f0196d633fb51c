//! Compile slots: how many uploads the host compiles and inspects at once,
//! and how those slots are shared between tenants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The host's compile slots, shared fairly between tenants.
///
/// Compiling a component keeps a core busy for a while (a few hundred ms
/// for a Rust app, seconds for Python's or JavaScript's runtime), so the
/// host compiles at most `total` uploads at once: one per core, not one
/// for the whole host.
///
/// The fair scheme: an upload first takes one of its tenant's slots (half
/// the total, at least one), then one of the host's. A tenant's uploads
/// beyond its share wait in its own queue, never in the host's, so the
/// host's queue holds at most `per_tenant` uploads of any tenant, served
/// in arrival order (tokio's semaphores are FIFO). However many uploads one
/// tenant sends, another tenant's upload waits only for the compiles
/// already running and those queued ahead of it in the host's queue.
pub struct CompileSlots {
    host: Arc<Semaphore>,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One compile slot, held while an upload is compiled and inspected;
/// dropping it frees the slot for the next upload in line.
pub struct CompileSlot {
    // Dropped first: the host's slot goes to the upload waiting longest,
    // before this tenant's next upload can queue for it.
    _host: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

impl CompileSlots {
    /// `total` slots (at least one), each tenant using at most half.
    pub fn new(total: usize) -> Self {
        let total = total.max(1);
        CompileSlots {
            host: Arc::new(Semaphore::new(total)),
            per_tenant: (total / 2).max(1),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// One slot per core of the machine.
    pub fn for_cores() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many uploads of one tenant may be compiled at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// Waits for a slot for an upload of `tenant` (see the scheme above).
    pub async fn acquire(&self, tenant: &str) -> CompileSlot {
        let queue = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            // Forget the queues no upload holds or waits on (only the map
            // has them), so that tenants come and go without a leak.
            tenants.retain(|_, queue| Arc::strong_count(queue) > 1);
            tenants
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        // Neither semaphore is ever closed.
        let tenant_permit = queue
            .acquire_owned()
            .await
            .expect("compile queues are never closed");
        let host_permit = self
            .host
            .clone()
            .acquire_owned()
            .await
            .expect("compile slots are never closed");
        CompileSlot {
            _host: host_permit,
            _tenant: tenant_permit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::poll_once;

    #[test]
    fn one_tenant_takes_at_most_half_and_another_gets_a_slot_at_once() {
        let slots = CompileSlots::new(2);
        assert_eq!(slots.per_tenant(), 1);
        let mut a1 = std::pin::pin!(slots.acquire("a"));
        let a1 = poll_once(a1.as_mut()).expect("a free slot");
        let mut a2 = std::pin::pin!(slots.acquire("a"));
        assert!(
            poll_once(a2.as_mut()).is_none(),
            "a second upload of a tenant must wait: it may hold half the slots"
        );
        let mut b = std::pin::pin!(slots.acquire("b"));
        let b = poll_once(b.as_mut()).expect("b gets the other slot while a waits");
        drop(a1);
        let a2 = poll_once(a2.as_mut()).expect("a's next upload once its first is done");
        drop((a2, b));
    }

    #[test]
    fn a_flooding_tenant_queues_behind_a_tenant_that_waited_first() {
        let slots = CompileSlots::new(4);
        assert_eq!(slots.per_tenant(), 2);
        let mut held = Vec::new();
        for tenant in ["a", "a", "b", "b"] {
            let mut slot = std::pin::pin!(slots.acquire(tenant));
            held.push(poll_once(slot.as_mut()).expect("a free slot"));
        }
        // a sends more uploads; then c sends one: every slot is taken.
        let mut a_more: Vec<_> = (0..6).map(|_| Box::pin(slots.acquire("a"))).collect();
        for slot in &mut a_more {
            assert!(poll_once(slot.as_mut()).is_none());
        }
        let mut c = std::pin::pin!(slots.acquire("c"));
        assert!(poll_once(c.as_mut()).is_none(), "every slot is taken");
        // One of a's compiles ends: the slot goes to c, not to a's queue,
        // although six of a's uploads arrived before c's.
        drop(held.remove(0));
        let c = poll_once(c.as_mut()).expect("c is next in the host's queue");
        for slot in &mut a_more {
            assert!(
                poll_once(slot.as_mut()).is_none(),
                "a waits in its own queue"
            );
        }
        // The next slot freed goes to a's next upload.
        drop(c);
        let ready: Vec<CompileSlot> = a_more
            .iter_mut()
            .filter_map(|slot| poll_once(slot.as_mut()))
            .collect();
        assert_eq!(ready.len(), 1, "a's next upload gets the freed slot");
        drop((ready, held));
    }

    #[test]
    fn idle_tenant_queues_are_forgotten() {
        let slots = CompileSlots::new(2);
        for tenant in ["a", "b", "c"] {
            let mut slot = std::pin::pin!(slots.acquire(tenant));
            drop(poll_once(slot.as_mut()).expect("a free slot"));
        }
        let mut last = std::pin::pin!(slots.acquire("d"));
        drop(poll_once(last.as_mut()).expect("a free slot"));
        let queues = slots.tenants.lock().unwrap().len();
        assert_eq!(queues, 1, "only the last tenant's queue is left");
    }
}
