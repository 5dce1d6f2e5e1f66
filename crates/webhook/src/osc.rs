//! The OperatingSystemConfig webhook. It puts Firecracker's devmapper pool script and unit
//! ([`sandbox_runtime::kata::devmapper`]) into the reconcile OSC of each pool whose Kata
//! ContainerRuntime offers `fc`; in installation mode `osc` it also puts each runtime the
//! pool offers into the OSC ([`sandbox_runtime::osc`]: handlers as containerd plugin entries,
//! binaries as files from our node image, configuration files), and `op: remove` entries for
//! a runtime the pool no longer offers while its ContainerRuntime still exists (the
//! controller deletes it once no node of the pool reports the handler). Every other OSC is
//! left alone.
//!
//! The pool comes from the OSC's `worker.gardener.cloud/pool` label, its runtimes from the
//! shoot in the Cluster named like the OSC's namespace (the OSC carries no runtime label).
//! Anything we cannot decide on (no Cluster yet, an undecodable object) is admitted unchanged
//! and logged: the node agent then leaves `kata-fc` unlabelled with `NoDevmapperPool`, and
//! the next OSC write (gardenlet rewrites OSCs on every shoot reconcile) tries again. In mode
//! `osc` such an OSC would take the runtime's files off the nodes, so there the webhook is
//! registered with `failurePolicy: Fail` and refuses an OSC it cannot decide on
//! (docs/operations.md, "Installation modes").

use std::collections::BTreeMap;

use kube::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use sandbox_api::{Cluster, ContainerRuntime, Shoot};
use sandbox_runtime::actuator::ACTUATORS;
use sandbox_runtime::kata::devmapper::{self, Skip};
use sandbox_runtime::node_plan::Pins;
use sandbox_runtime::osc::{self as osc_install, InstallationMode, RuntimeEntries};
use serde_json::Value;
use tracing::{info, warn};

/// The webhook's path on our server.
pub const PATH: &str = "/webhooks/kata-devmapper";
/// The webhook's name in the MutatingWebhookConfiguration.
pub const NAME: &str = "kata-devmapper.runtime-sandbox.extensions.gardener.cloud";

/// What the webhook installs through OSCs.
#[derive(Clone, Debug, Default)]
pub struct Install {
    /// The installation mode: in `daemonset`, only Firecracker's devmapper unit.
    pub mode: InstallationMode,
    /// Per runtime type: its node image (the image vector's reference) and the checksums
    /// recorded for its binaries.
    pub images: BTreeMap<String, (String, Pins)>,
}

/// What the handler needs from the seed.
pub trait Shoots: Send + Sync {
    /// The shoot in the Cluster named `namespace`, or why there is none.
    fn shoot(&self, namespace: &str) -> impl Future<Output = Result<Shoot, String>> + Send;
    /// The ContainerRuntimes in `namespace` (`type`, pool), or why they cannot be read.
    fn container_runtimes(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, String>> + Send;
}

/// Clusters and ContainerRuntimes read from the API server.
#[derive(Clone)]
pub struct ClusterApi {
    pub client: kube::Client,
}

impl ClusterApi {
    pub fn new(client: kube::Client) -> Self {
        ClusterApi { client }
    }
}

impl Shoots for ClusterApi {
    async fn shoot(&self, namespace: &str) -> Result<Shoot, String> {
        let cluster = Api::<Cluster>::all(self.client.clone())
            .get_opt(namespace)
            .await
            .map_err(|e| format!("reading Cluster {namespace}: {e}"))?
            .ok_or_else(|| format!("no Cluster {namespace}"))?;
        cluster
            .shoot()
            .map_err(|e| format!("Cluster {namespace} has no readable shoot: {e}"))
    }

    async fn container_runtimes(&self, namespace: &str) -> Result<Vec<(String, String)>, String> {
        let list = Api::<ContainerRuntime>::namespaced(self.client.clone(), namespace)
            .list(&Default::default())
            .await
            .map_err(|e| format!("listing ContainerRuntimes in {namespace}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .map(|cr| (cr.spec.type_, cr.spec.worker_pool.name))
            .collect())
    }
}

/// Answers one AdmissionReview (as JSON): the review back with the response.
pub async fn review(body: Value, shoots: &impl Shoots, install: &Install) -> Value {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "undecodable AdmissionReview");
            return to_json(
                AdmissionResponse::invalid(format!("undecodable AdmissionReview: {e}"))
                    .into_review(),
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return to_json(
                AdmissionResponse::invalid(format!("AdmissionReview without request: {e}"))
                    .into_review(),
            );
        }
    };
    to_json(respond(&request, shoots, install).await.into_review())
}

fn to_json(review: AdmissionReview<DynamicObject>) -> Value {
    serde_json::to_value(review).unwrap_or(Value::Null)
}

async fn respond(
    request: &AdmissionRequest<DynamicObject>,
    shoots: &impl Shoots,
    install: &Install,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref() else {
        return response;
    };
    let osc = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "OSC not representable as JSON; admitted unchanged");
            return response;
        }
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = request.name.as_str();
    // Cheap checks first: most OSCs never need the Cluster.
    let Some(pool) = osc["metadata"]["labels"][devmapper::POOL_LABEL].as_str() else {
        return response;
    };
    if osc["spec"]["purpose"].as_str() != Some("reconcile") {
        return response;
    }
    // In mode osc an OSC admitted without our entries takes the runtime's files off the
    // nodes: refuse what we cannot decide on (gardenlet retries), rather than admit it.
    let undecided = |why: String| {
        if install.mode == InstallationMode::Osc {
            warn!(%namespace, osc = name, error = %why, "OSC refused: its pool's runtimes are unknown");
            AdmissionResponse::from(request).deny(format!(
                "runtime-sandbox cannot tell which runtimes pool {pool} offers: {why}"
            ))
        } else {
            warn!(%namespace, osc = name, error = %why, "OSC admitted unchanged: the pool's runtimes are unknown");
            response.clone()
        }
    };
    let shoot = match shoots.shoot(namespace).await {
        Ok(s) => s,
        Err(e) => return undecided(e),
    };
    let mut target = osc.clone();
    match devmapper::mutation(&osc, &shoot) {
        Ok(ops) => match serde_json::from_value::<json_patch::Patch>(Value::Array(ops))
            .map_err(|e| e.to_string())
            .and_then(|p| json_patch::patch(&mut target, &p).map_err(|e| e.to_string()))
        {
            Ok(()) => info!(%namespace, osc = name, "adding Firecracker's devmapper pool unit"),
            Err(e) => {
                warn!(error = %e, "internal: devmapper patch not applicable; OSC admitted unchanged");
                return response;
            }
        },
        Err(Skip::UpToDate | Skip::NoFirecracker | Skip::NotReconcile | Skip::NoPool) => {}
    }
    let old = request
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    if install.mode == InstallationMode::DaemonSet
        && let Some(old) = &old
    {
        // Back from mode osc: the release's files stay listed (the agent owns the same).
        let kept = kept_after_switch(install, &shoot, pool, old);
        if !kept.is_empty() && osc_install::apply(&mut target, &kept).is_ok() {
            info!(%namespace, osc = name, %pool, "OSC keeps the files of installation mode osc");
        }
    }
    if install.mode == InstallationMode::Osc {
        let runtimes = match shoots.container_runtimes(namespace).await {
            Ok(r) => r,
            Err(e) => return undecided(e),
        };
        let mut entries = runtime_entries(install, &shoot, pool, &runtimes);
        // The OSC as stored: the previous release's files stay through an upgrade.
        if let Some(old) = &old {
            for e in &mut entries {
                e.retain_previous(old);
            }
        }
        match osc_install::apply(&mut target, &entries) {
            Ok(()) => {
                let names: Vec<&str> = entries.iter().map(|e| e.runtime.as_str()).collect();
                info!(%namespace, osc = name, %pool, runtimes = ?names, "OSC carries the pool's runtimes");
            }
            Err(osc_install::Skip::NoContainerdSection) => {
                warn!(%namespace, osc = name, %pool, "the OSC has no criConfig.containerd (gardenlet older than v1.103?): installation mode osc cannot add the runtime");
            }
            Err(osc_install::Skip::UpToDate | osc_install::Skip::NotContainerd) => {}
        }
    }
    if target == osc {
        return response;
    }
    let patch = json_patch::diff(&osc, &target);
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        Err(e) => {
            warn!(error = %e, "internal: patch not serialisable; OSC admitted unchanged");
            response
        }
    }
}

/// In installation mode daemonset: for each runtime `pool` offers, the files of mode osc the
/// stored OSC still lists ([`osc_install::keep_after_switch`]); empty when it lists none.
fn kept_after_switch(
    install: &Install,
    shoot: &Shoot,
    pool: &str,
    old: &Value,
) -> Vec<RuntimeEntries> {
    ACTUATORS
        .iter()
        .filter(|a| {
            let kind = a.description().runtime_type;
            shoot.worker(pool).and_then(|w| w.runtime(kind)).is_some()
        })
        .filter_map(|a| {
            let (image, _) = install.images.get(a.description().image_name)?;
            let owned = a.osc_removal(image).ok()?;
            let kept = osc_install::keep_after_switch(owned, old);
            (!kept.files.is_empty()).then_some(kept)
        })
        .collect()
}

/// Each runtime's entries for `pool`: installed where the pool offers it, removed where it no
/// longer does but its ContainerRuntime still exists, nothing otherwise. A pool whose
/// providerConfig is invalid keeps no entry of that runtime changed here: the controller
/// reports the configuration error on the ContainerRuntime.
fn runtime_entries(
    install: &Install,
    shoot: &Shoot,
    pool: &str,
    runtimes: &[(String, String)],
) -> Vec<RuntimeEntries> {
    let mut out = Vec::new();
    for actuator in ACTUATORS {
        let description = actuator.description();
        let kind = description.runtime_type;
        let Some((image, pins)) = install.images.get(description.image_name) else {
            continue;
        };
        let offered = shoot.worker(pool).and_then(|w| w.runtime(kind));
        let entries = match offered {
            Some(runtime) => actuator.osc_install(runtime.provider_config.as_ref(), image, pins),
            None if runtimes.iter().any(|(t, p)| t == kind && p == pool) => {
                actuator.osc_removal(image)
            }
            None => continue,
        };
        match entries {
            Ok(entries) => {
                for (handler, why) in &entries.skipped {
                    warn!(%pool, %handler, "handler left out of the OSC: {why}");
                }
                out.push(entries);
            }
            Err(e) => warn!(%pool, runtime = kind, error = %e, "runtime left out of the OSC"),
        }
    }
    out
}
