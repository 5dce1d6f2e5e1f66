//! Snapshots of every manifest the gVisor actuator puts into a shoot, and the properties
//! that matter to operators: determinism, unique selectors, pool scoping.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use sandbox_api::WorkerPool;
use sandbox_runtime::gvisor::{self, InstallationInput};
use serde_json::json;

fn pool_selector(pool: &str) -> LabelSelector {
    WorkerPool::gardenlet(pool).selector
}

fn render(pool: &str, selector: &LabelSelector, config: &gvisor::GVisorConfig) -> String {
    let set = gvisor::installation_objects(&InstallationInput {
        pool,
        selector,
        binary_path: "/var/bin/containerruntimes",
        config,
        image: "registry.local/node-agent:v1",
    })
    .unwrap();
    set.data()
        .iter()
        .map(|(k, v)| format!("# {k}\n{v}"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn shared_objects() {
    let set = gvisor::shared_objects(None).unwrap();
    let text: Vec<String> = set
        .data()
        .iter()
        .map(|(k, v)| format!("# {k}\n{v}"))
        .collect();
    insta::assert_snapshot!(text.join("---\n"));
}

#[test]
fn installation_with_default_config() {
    let config = gvisor::config::parse(None).unwrap();
    insta::assert_snapshot!(render("worker-a", &pool_selector("worker-a"), &config));
}

#[test]
fn installation_with_flags_and_match_expressions() {
    let config = gvisor::config::parse(Some(&json!({
        "apiVersion": gvisor::config::API_VERSION,
        "kind": "GVisorConfiguration",
        "configFlags": {"net-raw": "true", "debug": "true", "platform": "kvm", "panic-signal": "6"},
    })))
    .unwrap();
    let mut selector = pool_selector("gpu");
    selector.match_expressions = Some(vec![LabelSelectorRequirement {
        key: "node.kubernetes.io/instance-type".into(),
        operator: "In".into(),
        values: Some(vec!["m5.large".into(), "c5.large".into()]),
    }]);
    insta::assert_snapshot!(render("gpu", &selector, &config));
}

#[test]
fn same_input_gives_the_same_bytes_and_flag_order_does_not_matter() {
    let a = gvisor::config::parse(Some(
        &json!({"apiVersion": gvisor::config::API_VERSION, "kind": "GVisorConfiguration",
        "configFlags": {"net-raw": "true", "platform": "kvm", "nvproxy": "true"}}),
    ))
    .unwrap();
    let b = gvisor::config::parse(Some(
        &json!({"apiVersion": gvisor::config::API_VERSION, "kind": "GVisorConfiguration",
        "configFlags": {"nvproxy": "true", "platform": "kvm", "net-raw": "true"}}),
    ))
    .unwrap();
    let sel = pool_selector("p");
    assert_eq!(render("p", &sel, &a), render("p", &sel, &b));
    for _ in 0..20 {
        assert_eq!(render("p", &sel, &a), render("p", &sel, &a));
    }
}

#[test]
fn a_config_change_changes_the_pod_template_checksum() {
    let sel = pool_selector("p");
    let off = gvisor::config::parse(None).unwrap();
    let on = gvisor::config::parse(Some(
        &json!({"apiVersion": gvisor::config::API_VERSION, "kind": "GVisorConfiguration",
        "configFlags": {"net-raw": "true"}}),
    ))
    .unwrap();
    let checksum = |text: &str| {
        text.lines()
            .find(|l| l.contains("checksum/config"))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        checksum(&render("p", &sel, &off)),
        checksum(&render("p", &sel, &on))
    );
}

#[test]
fn pools_get_disjoint_daemonset_selectors() {
    let config = gvisor::GVisorConfig::default();
    let a = render("a", &pool_selector("a"), &config);
    let b = render("b", &pool_selector("b"), &config);
    assert!(a.contains("app.kubernetes.io/instance: containerd-gvisor-a"));
    assert!(b.contains("app.kubernetes.io/instance: containerd-gvisor-b"));
    assert!(!a.contains("containerd-gvisor-b"));
}

#[test]
fn cleanup_runs_uninstall_on_the_same_nodes_as_the_installer() {
    let selector = pool_selector("worker-a");
    let cleanup = gvisor::cleanup_objects(&gvisor::CleanupInput {
        pool: "worker-a",
        selector: &selector,
        binary_path: "/var/bin/containerruntimes",
        image: "registry.local/node-agent:v1",
    })
    .unwrap();
    let text: Vec<String> = cleanup
        .data()
        .iter()
        .map(|(k, v)| format!("# {k}\n{v}"))
        .collect();
    let text = text.join("---\n");
    insta::assert_snapshot!(text);

    // Same nodes as the installer: the same nodeSelector block.
    let config = gvisor::config::parse(None).unwrap();
    let installer = render("worker-a", &selector, &config);
    let node_selector = |yaml: &str| {
        let start = yaml.find("nodeSelector:").unwrap();
        let end = start + yaml[start..].find("priorityClassName").unwrap();
        yaml[start..end].to_string()
    };
    assert_eq!(node_selector(&text), node_selector(&installer));
}

#[test]
fn the_runtime_class_tolerates_the_taints_of_gvisor_pools() {
    use sandbox_runtime::actuator::Actuator;
    let shoot: sandbox_api::Shoot = serde_json::from_value(json!({"spec": {"provider": {"workers": [
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
