//! Who may deploy when. There is no host-wide deploy lock: tenants'
//! uploads are compiled side by side (in the executor's fair compile
//! slots), and only what must be ordered is:
//!
//! - the versions of one app are deployed one at a time, in the order
//!   they arrived (per tenant and app, held for the whole deploy);
//! - the apps of one tenant commit one at a time, so that two of them
//!   cannot both claim a function id (per tenant, held while committing);
//! - collecting old versions excludes every commit, so that it never
//!   drops bytes a deploy is committing (a host-wide read-write lock:
//!   commits share it, collection takes it alone).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// The locks deploys take (see the module's note).
#[derive(Default)]
pub struct DeployLocks {
    apps: Locks<(String, String)>,
    tenants: Locks<String>,
    store: RwLock<()>,
}

/// Held while a tenant's deploy commits.
pub struct CommitGuard<'a> {
    // Released in this order: the tenant's lock, then the shared one.
    _tenant: OwnedMutexGuard<()>,
    _store: RwLockReadGuard<'a, ()>,
}

impl DeployLocks {
    /// Waits for the earlier deploys of `app` of `tenant` to finish.
    pub async fn app(&self, tenant: &str, app: &str) -> OwnedMutexGuard<()> {
        self.apps.lock((tenant.to_string(), app.to_string())).await
    }

    /// Waits until `tenant` may commit a deploy (its other commits and any
    /// collection are over).
    pub async fn commit(&self, tenant: &str) -> CommitGuard<'_> {
        let tenant = self.tenants.lock(tenant.to_string()).await;
        CommitGuard {
            _tenant: tenant,
            _store: self.store.read().await,
        }
    }

    /// Waits until no deploy is committing, and keeps them out.
    pub async fn collect(&self) -> RwLockWriteGuard<'_, ()> {
        self.store.write().await
    }
}

/// One async lock per key, made on first use and forgotten once idle.
struct Locks<K> {
    map: Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
}

impl<K> Default for Locks<K> {
    fn default() -> Self {
        Locks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Locks<K> {
    async fn lock(&self, key: K) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Idle locks (only the map has them) go, so keys come and go
            // without a leak; a held or awaited one has other owners.
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            map.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::poll_once;
    use std::pin::pin;

    #[test]
    fn one_app_deploys_in_turn_while_other_apps_and_tenants_do_not_wait() {
        let locks = DeployLocks::default();
        let held = poll_once(pin!(locks.app("a", "shop")).as_mut()).expect("free");
        let mut second = pin!(locks.app("a", "shop"));
        assert!(
            poll_once(second.as_mut()).is_none(),
            "shop's next version waits"
        );
        let mail = poll_once(pin!(locks.app("a", "mail")).as_mut());
        assert!(mail.is_some(), "another app of the tenant does not wait");
        let other = poll_once(pin!(locks.app("b", "shop")).as_mut());
        assert!(
            other.is_some(),
            "another tenant's app of that name does not wait"
        );
        drop(held);
        assert!(
            poll_once(second.as_mut()).is_some(),
            "then shop's next goes"
        );
    }

    #[test]
    fn collection_waits_for_commits_and_tenants_commit_side_by_side() {
        let locks = DeployLocks::default();
        let a = poll_once(pin!(locks.commit("a")).as_mut()).expect("free");
        let b = poll_once(pin!(locks.commit("b")).as_mut());
        assert!(b.is_some(), "tenants commit side by side");
        let mut a_again = pin!(locks.commit("a"));
        assert!(
            poll_once(a_again.as_mut()).is_none(),
            "one tenant's commits take turns"
        );
        let mut collect = pin!(locks.collect());
        assert!(
            poll_once(collect.as_mut()).is_none(),
            "collection waits for commits"
        );
        drop((a, b));
        // Waiting a's commit comes after the collection queued before it.
        assert!(poll_once(a_again.as_mut()).is_none());
        let collecting = poll_once(collect.as_mut()).expect("no commit is left");
        assert!(
            poll_once(a_again.as_mut()).is_none(),
            "no commit while collecting"
        );
        drop(collecting);
        assert!(
            poll_once(a_again.as_mut()).is_some(),
            "then a's commit goes"
        );
    }
}
