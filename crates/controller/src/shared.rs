//! Order between the writes that concern one shoot's ManagedResources across its
//! ContainerRuntimes: the pools of a shoot share one ManagedResource per runtime (the
//! RuntimeClass, the node agents' RBAC), created by any pool's reconcile and deleted by the last
//! pool's deletion. Two races lose it while a pool reports Succeeded (found by the chaos test):
//! - a deletion decides "no other pool needs it" and deletes it while another pool's reconcile
//!   finds it present and reports Succeeded: the decision and the deletion hold the shoot's
//!   lock for that runtime, and so does every ensure of the shared ManagedResource;
//! - a reconcile right after our own deletion trusts the cache, which has not seen the deletion
//!   yet, and writes nothing: a ManagedResource this process deleted is marked, and the next
//!   ensure of it goes to the API server (until it has been written again).
//!
//! Only the leader reconciles, so one process's order is the order; a new leader starts from
//! fresh caches. The maps hold an entry per shoot namespace and runtime that ever had a
//! deletion or shared ensure (a few dozen bytes each).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Key = (String, String);

#[derive(Default)]
pub(crate) struct SharedResources {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    deleted: Mutex<HashSet<Key>>,
}

impl SharedResources {
    /// Waits for the lock of ManagedResource `name` in `namespace`.
    pub(crate) async fn lock(&self, namespace: &str, name: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Notes that this process deleted ManagedResource (or shoot-access Secret) `name` in
    /// `namespace`.
    pub(crate) fn mark_deleted(&self, namespace: &str, name: &str) {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.to_string(), name.to_string()));
    }

    /// Whether the cache may still show object `name` after our deletion.
    pub(crate) fn deleted_since_written(&self, namespace: &str, name: &str) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(namespace.to_string(), name.to_string()))
    }

    /// Object `name` was written again: the cache may be trusted once more.
    pub(crate) fn written(&self, namespace: &str, name: &str) {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }
}
