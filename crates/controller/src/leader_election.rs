//! Lease-based leader election, compatible with controller-runtime's Lease lock (client-go's
//! `leaderelection` with `resourcelock.LeasesResourceLock`), so that this controller and a Go
//! extension using the same Lease exclude each other.
//!
//! Written here rather than taken from a crate, because the switch-over from the Go extension
//! needs exactly client-go's record: a holder's Lease is valid until `renewTime +
//! leaseDurationSeconds`, taking it over sets `acquireTime` and bumps `leaseTransitions`, and an
//! update carries the resourceVersion so two candidates never both win. `kube-leader-election`
//! documents itself as "a very basic form of leader election without fencing" for workloads
//! that "tolerate multiple replicas acting as leader for a short amount of time", and
//! `kube-lease-manager` has its own locking protocol (server-side apply); neither promises
//! client-go's record, and the test against the Go extension is what proves ours.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{info, warn};

use crate::{Error, Result, kube_err};

/// Lease-based leader election with controller-runtime's timings and Lease fields, so that
/// our controller and a Go extension using the same id exclude each other.
#[derive(Clone)]
pub struct LeaderElection {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// controller-runtime's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(client: Client, namespace: String, name: String, identity: String) -> Self {
        LeaderElection {
            client,
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Blocks until we hold the Lease.
    pub async fn acquire(&self) -> Result<()> {
        info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "waiting for leadership");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, "became leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews until renewal fails for longer than the renew deadline; returns then (the
    /// caller must stop working: someone else may take over).
    pub async fn keep(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::LeadershipLost {
                        lease: self.name.clone(),
                    };
                }
                Err(e) => warn!(error = %e, "could not renew leadership"),
            }
            if last_renewal.elapsed() > self.renew_deadline {
                return Error::LeadershipNotRenewed {
                    lease: self.name.clone(),
                    seconds: self.renew_deadline.as_secs(),
                };
            }
        }
    }

    /// Gives the Lease up on shutdown, so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        let patch = json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": MicroTime(Timestamp::now())}});
        if let Ok(Some(lease)) = api.get_opt(&self.name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        {
            let _ = api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }

    /// One round of client-go's algorithm: true if we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = api
            .get_opt(&self.name)
            .await
            .map_err(kube_err("reading the leader election Lease"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(kube_err("creating the leader election Lease")(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            let expires =
                spec.renew_time
                    .as_ref()
                    .map(|t| {
                        t.0 + Duration::from_secs(
                            spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
                        )
                    })
                    .unwrap_or(now);
            if expires > now {
                return Ok(false);
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        // Replace carries the resourceVersion: a concurrent change makes this a conflict.
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(kube_err("updating the leader election Lease")(e)),
        }
    }
}
