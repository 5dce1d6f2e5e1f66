//! Snapshots of every manifest the Kata actuator puts into a shoot (RuntimeClasses for every
//! hypervisor, RBAC and the label policy, one pool's installer with its node plan), and their
//! determinism.

use sandbox_api::{ContainerRuntime, Shoot};
use sandbox_runtime::actuator::actuator;
use serde_json::json;

fn shoot() -> Shoot {
    serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"provider": {"workers": [
        {"name": "pool-a", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": config()}]},
         "taints": [{"key": "sandbox", "value": "kata", "effect": "NoSchedule"}]},
    ]}}}))
    .unwrap()
}

fn config() -> serde_json::Value {
    json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration",
        "hypervisors": ["qemu", "clh", "fc"], "debug": true, "defaultVCPUs": 2})
}

fn cr() -> ContainerRuntime {
    serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "ContainerRuntime",
        "metadata": {"name": "kata-pool-a", "namespace": "shoot--p--s"},
        "spec": {"type": "kata", "binaryPath": "/var/bin/containerruntimes", "providerConfig": config(),
            "workerPool": {"name": "pool-a", "selector": {"matchLabels": {"worker.gardener.cloud/pool": "pool-a"}}}},
    }))
    .unwrap()
}

fn text(data: &std::collections::BTreeMap<String, String>) -> String {
    data.iter()
        .map(|(k, v)| format!("# {k}\n{v}"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn every_manifest() {
    let kata = actuator("kata").unwrap();
    let desired = kata
        .desired(&cr(), &shoot(), "registry.local/node-agent-kata:v3.20.0")
        .unwrap();
    assert_eq!(desired.shared.name, "extension-runtime-kata");
    assert_eq!(
        desired.pool.name,
        "extension-runtime-kata-installation-pool-a"
    );
    insta::assert_snapshot!("shared", text(&desired.shared.data));
    insta::assert_snapshot!("pool", text(&desired.pool.data));
    let again = kata
        .desired(&cr(), &shoot(), "registry.local/node-agent-kata:v3.20.0")
        .unwrap();
    assert_eq!(again, desired, "same input, same bytes");
    let cleanup = kata
        .cleanup(&cr(), &shoot(), "registry.local/node-agent-kata:v3.20.0")
        .unwrap();
    insta::assert_snapshot!("cleanup", text(&cleanup.pool.data));
}
