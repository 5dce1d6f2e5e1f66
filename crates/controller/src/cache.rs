//! What a reconcile reads, served from watches instead of one request per read: every Cluster
//! (kept as a projection of its Shoot: the few fields the contract decides on, not the whole
//! embedded Shoot, CloudProfile and Seed) and our own ManagedResources (by `origin` label,
//! without managed fields).
//!
//! A cache may lag behind the API server by a watch event. Where that lag could lead to a
//! decision the contract forbids, the reconcile reads live instead:
//! - a deletion re-reads its Cluster (whether the pool's nodes need cleaning, whether to wait)
//!   and lists the namespace's ContainerRuntimes and reads ManagedResources live before it
//!   deletes anything;
//! - a Cluster missing from the cache is read live (it may have been created a moment ago);
//! - a ManagedResource write that conflicts (created or changed meanwhile) re-reads it live.
//!
//! Elsewhere a stale read costs at most one redundant write or one more reconcile.

use std::future::ready;
use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use sandbox_api::{Cluster, ManagedResource};
use tokio::task::JoinHandle;

/// The watched objects and the tasks that keep them current.
pub(crate) struct Caches {
    clusters: Store<Cluster>,
    managed_resources: Store<ManagedResource>,
    tasks: Vec<JoinHandle<()>>,
}

/// Keeps only the Shoot's projection in a cached Cluster; an undecodable Shoot stays as it
/// is, so the reconcile reports why it cannot decode it.
fn project_cluster(cluster: &mut Cluster) {
    cluster.metadata.managed_fields = None;
    cluster.spec.cloud_profile = serde_json::Value::Null;
    cluster.spec.seed = None;
    if let Ok(shoot) = cluster.shoot()
        && let Ok(projected) = serde_json::to_value(shoot.projection())
    {
        cluster.spec.shoot = projected;
    }
}

impl Caches {
    /// Starts watching every Cluster and the ManagedResources whose `origin` is one of
    /// `origins`.
    pub(crate) fn start(client: &Client, origins: &[&str]) -> Self {
        let (clusters, cluster_writer) = reflector::store();
        let cluster_stream = watcher(
            Api::<Cluster>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(project_cluster)
        .reflect(cluster_writer)
        .for_each(|_| ready(()));
        let (managed_resources, mr_writer) = reflector::store();
        let selector = format!("origin in ({})", origins.join(","));
        let mr_stream = watcher(
            Api::<ManagedResource>::all(client.clone()),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff()
        .modify(|mr: &mut ManagedResource| mr.metadata.managed_fields = None)
        .reflect(mr_writer)
        .for_each(|_| ready(()));
        Caches {
            clusters,
            managed_resources,
            tasks: vec![tokio::spawn(cluster_stream), tokio::spawn(mr_stream)],
        }
    }

    /// Waits until both caches hold their initial lists. One caller at a time: the underlying
    /// `Store::wait_until_ready` wakes only the last of concurrent waiters.
    pub(crate) async fn wait_until_ready(&self) {
        let _ = self.clusters.wait_until_ready().await;
        let _ = self.managed_resources.wait_until_ready().await;
    }

    /// The cached Cluster `name` (a projection), if the cache has it.
    pub(crate) fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(&ObjectRef::new(name))
    }

    /// The cached ManagedResource `namespace/name`, if the cache has it.
    pub(crate) fn managed_resource(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<ManagedResource>> {
        self.managed_resources
            .get(&ObjectRef::new(name).within(namespace))
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
