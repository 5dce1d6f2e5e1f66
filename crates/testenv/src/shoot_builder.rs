//! Shoots as gardenlet embeds them in a Cluster, for tests: one skeleton instead of a JSON
//! literal per test.

use serde_json::{Value, json};

/// The Kubernetes version of the tests' shoots.
pub const KUBERNETES_VERSION: &str = "1.36.4";

/// A Shoot: `core.gardener.cloud/v1beta1`, provider `local`, not hibernated, its last
/// operation a successful reconcile, and the worker pools added.
#[derive(Clone, Debug)]
pub struct ShootBuilder(Value);

impl ShootBuilder {
    /// Shoot `name` in the project namespace `garden-test`, without pools.
    pub fn new(name: &str) -> Self {
        ShootBuilder(json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": "garden-test"},
            "spec": {"kubernetes": {"version": KUBERNETES_VERSION},
                     "provider": {"type": "local", "workers": []}},
            "status": {"hibernated": false, "lastOperation": {"type": "Reconcile", "state": "Succeeded"}},
        }))
    }

    /// In project namespace `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// With Kubernetes `version`.
    pub fn kubernetes(mut self, version: &str) -> Self {
        self.0["spec"]["kubernetes"]["version"] = json!(version);
        self
    }

    /// With a containerd pool `name` that asks for `runtimes` (by type).
    pub fn pool(self, name: &str, runtimes: &[&str]) -> Self {
        self.worker(pool(name, runtimes))
    }

    /// With the pool `worker` as given (taints, providerConfigs, ...).
    pub fn worker(mut self, worker: Value) -> Self {
        self.workers_mut().push(worker);
        self
    }

    /// With exactly the pools `workers` (a JSON array).
    pub fn workers(mut self, workers: Value) -> Self {
        self.0["spec"]["provider"]["workers"] = workers;
        self
    }

    /// With `patch` merged in (objects merge, anything else replaces).
    pub fn patch(mut self, patch: Value) -> Self {
        merge(&mut self.0, patch);
        self
    }

    pub fn build(self) -> Value {
        self.0
    }

    fn workers_mut(&mut self) -> &mut Vec<Value> {
        self.0["spec"]["provider"]["workers"]
            .as_array_mut()
            .expect("workers is a list")
    }
}

/// A containerd pool `name` that asks for `runtimes` (by type; none: a plain containerd pool).
pub fn pool(name: &str, runtimes: &[&str]) -> Value {
    let mut cri = json!({"name": "containerd"});
    if !runtimes.is_empty() {
        let runtimes: Vec<Value> = runtimes.iter().map(|t| json!({"type": t})).collect();
        cri["containerRuntimes"] = json!(runtimes);
    }
    json!({"name": name, "cri": cri})
}

/// A JSON merge patch, as `kubectl patch --type merge` applies it.
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_patches_land_where_gardenlet_puts_them() {
        let shoot = ShootBuilder::new("s")
            .namespace("garden-p")
            .pool("a", &["gvisor"])
            .pool("plain", &[])
            .patch(json!({"status": {"hibernated": true}}))
            .build();
        assert_eq!(shoot["metadata"]["namespace"], "garden-p");
        let workers = &shoot["spec"]["provider"]["workers"];
        assert_eq!(workers[0]["cri"]["containerRuntimes"][0]["type"], "gvisor");
        assert!(workers[1]["cri"].get("containerRuntimes").is_none());
        assert_eq!(shoot["status"]["hibernated"], true);
        assert_eq!(shoot["status"]["lastOperation"]["state"], "Succeeded");
        let parsed: sandbox_api::Shoot = serde_json::from_value(shoot).unwrap();
        assert!(parsed.worker("a").unwrap().wants_runtime("gvisor"));
    }
}
