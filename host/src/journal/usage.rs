//! Logical bytes each tenant stores — its events and its runs' journals —
//! for the storage quota that keeps a public event key from filling the
//! disk.
//!
//! Backends count as they write ([`counted_tenant`] says which writes
//! count: accepted events, the events a run keeps, finished steps, output
//! lines and ended runs, each once) and take the bytes off when data is
//! deleted. The counts live in memory and are saved as one host setting by
//! the housekeeping task ([`StorageUsage::changed_snapshot`]), so a crash
//! may forget the last few seconds of writes: the quota is a guard against
//! abuse, not an invoice.

use super::Op;
use crate::model::StepStatus;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The host setting the counts are saved in.
pub const USAGE_SETTING: &str = "storage-usage";

/// Logical bytes each tenant stores, counted in memory and saved now and
/// then (see the module's note).
#[derive(Debug, Default)]
pub struct StorageUsage {
    bytes: Mutex<HashMap<String, u64>>,
    changed: AtomicBool,
}

impl StorageUsage {
    /// The counts saved in the usage setting (empty if none or unreadable).
    pub fn restore(saved: Option<&str>) -> Self {
        let bytes = saved
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        StorageUsage {
            bytes: Mutex::new(bytes),
            changed: AtomicBool::new(false),
        }
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `tenant` stores.
    pub fn used(&self, tenant: &str) -> u64 {
        self.bytes().get(tenant).copied().unwrap_or(0)
    }

    /// `tenant` stored `bytes` more.
    pub fn add(&self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut all = self.bytes();
        match all.get_mut(tenant) {
            Some(used) => *used = used.saturating_add(bytes),
            None => {
                all.insert(tenant.to_string(), bytes);
            }
        }
        self.changed.store(true, Ordering::Relaxed);
    }

    /// `bytes` of `tenant`'s data were deleted.
    pub fn remove(&self, tenant: &str, bytes: u64) {
        if let Some(used) = self.bytes().get_mut(tenant) {
            *used = used.saturating_sub(bytes);
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// The counts to save, if they changed since the last call.
    pub fn changed_snapshot(&self) -> Option<String> {
        if !self.changed.swap(false, Ordering::Relaxed) {
            return None;
        }
        serde_json::to_string(&*self.bytes()).ok()
    }
}

/// The tenant whose storage `op` adds to, if it counts. Records rewritten
/// as they change count once: a step when it finishes, a run when it ends.
pub fn counted_tenant(op: &Op) -> Option<&str> {
    match op {
        Op::PutEvent { tenant, .. } => Some(tenant),
        Op::PutRunEvents(key, _) | Op::PutLog(key, _) => Some(&key.tenant),
        Op::PutStep(key, step)
            if matches!(step.status, StepStatus::Completed | StepStatus::Failed) =>
        {
            Some(&key.tenant)
        }
        Op::PutRun(run) if run.status().is_terminal() => Some(&run.key.tenant),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_up_and_down_and_survive_a_save() {
        let usage = StorageUsage::default();
        assert_eq!(usage.changed_snapshot(), None);
        usage.add("a", 100);
        usage.add("a", 50);
        usage.add("b", 7);
        usage.remove("a", 30);
        assert_eq!(usage.used("a"), 120);
        let saved = usage.changed_snapshot().unwrap();
        assert_eq!(usage.changed_snapshot(), None, "saved once per change");
        let restored = StorageUsage::restore(Some(&saved));
        assert_eq!((restored.used("a"), restored.used("b")), (120, 7));
        restored.remove("b", 100);
        assert_eq!(restored.used("b"), 0, "never below zero");
        assert_eq!(StorageUsage::restore(Some("not json")).used("a"), 0);
    }
}
