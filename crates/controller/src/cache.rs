//! What a reconcile reads, served from watches instead of one request per read: every Cluster
//! (read as a [`ClusterShoot`]: the embedded CloudProfile and Seed are skipped while parsing and
//! the Shoot is decoded straight into the few fields the contract decides on) and our own
//! ManagedResources (by `origin` label, without managed fields), and the metadata of our
//! shoot-access Secrets (by name: whether one exists and its resourceVersion,
//! so the health loop reads a Secret only when it changed, and never asks for one that does
//! not exist).
//!
//! Memory is bounded by what we keep, not by what gardenlet writes: the initial lists come in
//! pages of [`LIST_PAGE`] objects (kube's default is 500 whole Clusters, each with its
//! CloudProfile, in one response body), and no Cluster is ever held whole.
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
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use sandbox_api::{ClusterShoot, ManagedResource};
use tokio::task::JoinHandle;

/// The watched objects and the tasks that keep them current.
pub(crate) struct Caches {
    clusters: Store<ClusterShoot>,
    managed_resources: Store<ManagedResource>,
    /// One store per name in `shoot_access_names`, in the same order.
    shoot_access: Vec<(String, Store<PartialObjectMeta<Secret>>)>,
    tasks: Vec<JoinHandle<()>>,
}

/// Objects per page of a watch's initial list. A page's response body is held whole while it
/// is decoded: 10 Clusters of 100 KiB are 1 MiB (of 1 MiB, 10 MiB), where kube's default of
/// 500 was 50 MiB (500 MiB). Measured in docs/benchmarks.md: pages of 50 kept 1 MiB Clusters
/// at 166 MiB peak RSS.
pub(crate) const LIST_PAGE: u32 = 10;

/// The watch configuration for the Clusters and for the trigger on them.
pub(crate) fn cluster_watch() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

impl Caches {
    /// Starts watching every Cluster, the ManagedResources whose `origin` is one of
    /// `origins`, and the metadata of the Secrets named `shoot_access_names` in every
    /// namespace (one watch per name: a field selector matches one name, and RBAC grants
    /// list and watch by name only with it).
    pub(crate) fn start(client: &Client, origins: &[&str], shoot_access_names: &[&str]) -> Self {
        let (clusters, cluster_writer) = reflector::store();
        let cluster_stream = watcher(Api::<ClusterShoot>::all(client.clone()), cluster_watch())
            .default_backoff()
            .modify(|cluster: &mut ClusterShoot| cluster.metadata.managed_fields = None)
            .reflect(cluster_writer)
            .for_each(|_| ready(()));
        let (managed_resources, mr_writer) = reflector::store();
        let selector = format!("origin in ({})", origins.join(","));
        let mr_stream = watcher(
            Api::<ManagedResource>::all(client.clone()),
            watcher::Config::default()
                .labels(&selector)
                .page_size(LIST_PAGE),
        )
        .default_backoff()
        .modify(|mr: &mut ManagedResource| mr.metadata.managed_fields = None)
        .reflect(mr_writer)
        .for_each(|_| ready(()));
        let mut tasks = vec![tokio::spawn(cluster_stream), tokio::spawn(mr_stream)];
        let mut shoot_access = Vec::new();
        for name in shoot_access_names {
            let (store, writer) = reflector::store();
            let stream = watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                watcher::Config::default()
                    .fields(&format!("metadata.name={name}"))
                    .page_size(LIST_PAGE),
            )
            .default_backoff()
            .modify(|s: &mut PartialObjectMeta<Secret>| s.metadata.managed_fields = None)
            .reflect(writer)
            .for_each(|_| ready(()));
            tasks.push(tokio::spawn(stream));
            shoot_access.push((name.to_string(), store));
        }
        Caches {
            clusters,
            managed_resources,
            shoot_access,
            tasks,
        }
    }

    /// Waits until both caches hold their initial lists. One caller at a time: the underlying
    /// `Store::wait_until_ready` wakes only the last of concurrent waiters.
    pub(crate) async fn wait_until_ready(&self) {
        let _ = self.clusters.wait_until_ready().await;
        let _ = self.managed_resources.wait_until_ready().await;
        for (_, store) in &self.shoot_access {
            let _ = store.wait_until_ready().await;
        }
    }

    /// The resourceVersion of shoot-access Secret `name` in `namespace`, if it exists.
    pub(crate) fn shoot_access(&self, namespace: &str, name: &str) -> Option<String> {
        let (_, store) = self.shoot_access.iter().find(|(n, _)| n == name)?;
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| s.metadata.resource_version.clone().unwrap_or_default())
    }

    /// The cached Cluster `name` (its Shoot's projection), if the cache has it.
    pub(crate) fn cluster(&self, name: &str) -> Option<Arc<ClusterShoot>> {
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
