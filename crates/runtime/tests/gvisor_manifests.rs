//! Snapshots of every manifest the gVisor actuator puts into a shoot, and the properties
//! that matter to operators: determinism, unique selectors, pool scoping.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use sandbox_api::{ContainerRuntime, ContainerRuntimeSpec, Shoot, WorkerPool};
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::gvisor::{self, GVisor};
use serde_json::{Value, json};

const IMAGE: &str = "registry.local/node-agent:v1";

fn pool_selector(pool: &str) -> LabelSelector {
    WorkerPool::gardenlet(pool).selector
}

/// gVisor's ContainerRuntime of `pool` with `selector` and the raw `provider_config`.
fn cr(pool: &str, selector: &LabelSelector, provider_config: Option<Value>) -> ContainerRuntime {
    ContainerRuntime::new(
        &format!("gvisor-{pool}"),
        ContainerRuntimeSpec {
            type_: "gvisor".into(),
            class: None,
            provider_config,
            binary_path: "/var/bin/containerruntimes".into(),
            worker_pool: WorkerPool {
                name: pool.into(),
                selector: selector.clone(),
            },
        },
    )
}

fn text(data: &std::collections::BTreeMap<String, String>) -> String {
    data.iter()
        .map(|(k, v)| format!("# {k}\n{v}"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The pool's installer objects.
fn render(pool: &str, selector: &LabelSelector, provider_config: Option<Value>) -> String {
    let desired = GVisor.desired(
        &cr(pool, selector, provider_config),
        &Shoot::default(),
        IMAGE,
    );
    text(&desired.unwrap().pool.data)
}

fn flags(flags: Value) -> Option<Value> {
    Some(
        json!({"apiVersion": gvisor::config::API_VERSION, "kind": "GVisorConfiguration", "configFlags": flags}),
    )
}

#[test]
fn shared_objects() {
    let cr = cr("worker-a", &pool_selector("worker-a"), None);
    let desired = GVisor.desired(&cr, &Shoot::default(), IMAGE).unwrap();
    insta::assert_snapshot!(text(&desired.shared.data));
}

#[test]
fn installation_with_default_config() {
    insta::assert_snapshot!(render("worker-a", &pool_selector("worker-a"), None));
}

#[test]
fn installation_with_flags_and_match_expressions() {
    let config =
        flags(json!({"net-raw": "true", "debug": "true", "platform": "kvm", "panic-signal": "6"}));
    let mut selector = pool_selector("gpu");
    selector.match_expressions = Some(vec![LabelSelectorRequirement {
        key: "node.kubernetes.io/instance-type".into(),
        operator: "In".into(),
        values: Some(vec!["m5.large".into(), "c5.large".into()]),
    }]);
    insta::assert_snapshot!(render("gpu", &selector, config));
}

#[test]
fn same_input_gives_the_same_bytes_and_flag_order_does_not_matter() {
    let a = flags(json!({"net-raw": "true", "platform": "kvm", "nvproxy": "true"}));
    let b = flags(json!({"nvproxy": "true", "platform": "kvm", "net-raw": "true"}));
    let sel = pool_selector("p");
    assert_eq!(render("p", &sel, a.clone()), render("p", &sel, b));
    for _ in 0..20 {
        assert_eq!(render("p", &sel, a.clone()), render("p", &sel, a.clone()));
    }
}

#[test]
fn a_config_change_changes_the_pod_template_checksum() {
    let sel = pool_selector("p");
    let off = None;
    let on = flags(json!({"net-raw": "true"}));
    let checksum = |text: &str| {
        text.lines()
            .find(|l| l.contains("checksum/config"))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        checksum(&render("p", &sel, off)),
        checksum(&render("p", &sel, on))
    );
}

#[test]
fn pools_get_disjoint_daemonset_selectors() {
    let a = render("a", &pool_selector("a"), None);
    let b = render("b", &pool_selector("b"), None);
    assert!(a.contains("app.kubernetes.io/instance: containerd-gvisor-a"));
    assert!(b.contains("app.kubernetes.io/instance: containerd-gvisor-b"));
    assert!(!a.contains("containerd-gvisor-b"));
}

#[test]
fn cleanup_runs_uninstall_on_the_same_nodes_as_the_installer() {
    let selector = pool_selector("worker-a");
    let cleanup = GVisor
        .cleanup(&cr("worker-a", &selector, None), &Shoot::default(), IMAGE)
        .unwrap();
    let text = text(&cleanup.pool.data);
    insta::assert_snapshot!(text);

    // Same nodes as the installer: the same nodeSelector block.
    let installer = render("worker-a", &selector, None);
    let node_selector = |yaml: &str| {
        let start = yaml.find("nodeSelector:").unwrap();
        let end = start + yaml[start..].find("priorityClassName").unwrap();
        yaml[start..end].to_string()
    };
    assert_eq!(node_selector(&text), node_selector(&installer));
}

#[test]
fn the_runtime_class_tolerates_the_taints_of_gvisor_pools() {
    let shoot: Shoot = serde_json::from_value(json!({"spec": {"provider": {"workers": [
        {"name": "sandbox", "taints": [{"key": "sandbox.gardener.cloud/untrusted", "value": "true", "effect": "NoSchedule"}],
         "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}},
        {"name": "plain", "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
         "cri": {"name": "containerd"}},
    ]}}}))
    .unwrap();
    let cr: sandbox_api::ContainerRuntime = serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "ContainerRuntime",
        "metadata": {"name": "gvisor-sandbox", "namespace": "shoot--p--s"},
        "spec": {"type": "gvisor", "binaryPath": "/var/bin/containerruntimes",
                 "workerPool": {"name": "sandbox", "selector": {"matchLabels": {"worker.gardener.cloud/pool": "sandbox"}}}},
    }))
    .unwrap();
    let desired = gvisor::GVisor.desired(&cr, &shoot, "img").unwrap();
    let class = desired
        .shared
        .data
        .values()
        .find(|y| y.contains("kind: RuntimeClass"))
        .unwrap();
    let class: serde_json::Value = serde_saphyr::from_str(class).unwrap();
    assert_eq!(
        class["scheduling"]["tolerations"],
        json!([{"key": "sandbox.gardener.cloud/untrusted", "operator": "Equal", "value": "true", "effect": "NoSchedule"}])
    );
    // Same input, same bytes; the cleanup carries the same shared objects.
    assert_eq!(gvisor::GVisor.desired(&cr, &shoot, "img").unwrap(), desired);
    assert_eq!(
        gvisor::GVisor.cleanup(&cr, &shoot, "img").unwrap().shared,
        desired.shared
    );
}
