//! What the node agent's pods may do on the node, for every runtime, installer and cleanup
//! alike: root without a single capability, the socket folders read-only, writable only the
//! folders the plan writes; and no `spec.binaryPath` that would mount more than a binary
//! folder (docs/security.md).

use k8s_openapi::api::apps::v1::DaemonSet;
use sandbox_api::{ContainerRuntime, ContainerRuntimeSpec, Shoot, WorkerPool};
use sandbox_runtime::actuator::{ACTUATORS, ActuatorError};

const IMAGE: &str = "registry.local/node-agent:v1";

fn cr(runtime_type: &str, binary_path: &str) -> ContainerRuntime {
    ContainerRuntime::new(
        &format!("{runtime_type}-pool-a"),
        ContainerRuntimeSpec {
            type_: runtime_type.into(),
            class: None,
            provider_config: None,
            binary_path: binary_path.into(),
            worker_pool: WorkerPool::gardenlet("pool-a"),
        },
    )
}

fn daemon_sets(data: &std::collections::BTreeMap<String, String>) -> Vec<DaemonSet> {
    data.iter()
        .filter(|(k, _)| k.starts_with("daemonset__"))
        .map(|(_, v)| serde_saphyr::from_str(v).unwrap())
        .collect()
}

#[test]
fn agent_pods_run_as_root_without_capabilities_and_only_write_what_the_plan_writes() {
    for actuator in ACTUATORS {
        let runtime_type = actuator.description().runtime_type;
        let cr = cr(runtime_type, "/var/bin/containerruntimes");
        let desired = actuator.desired(&cr, &Shoot::default(), IMAGE).unwrap();
        let cleanup = actuator.cleanup(&cr, &Shoot::default(), IMAGE).unwrap();
        let sets: Vec<DaemonSet> = daemon_sets(&desired.pool.data)
            .into_iter()
            .chain(daemon_sets(&cleanup.pool.data))
            .collect();
        assert_eq!(sets.len(), 2, "{runtime_type}: installer and cleanup");
        for ds in sets {
            let name = ds.metadata.name.clone().unwrap();
            let pod = ds.spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.host_pid, None, "{name}");
            assert_eq!(pod.host_network, None, "{name}");
            for container in &pod.containers {
                let sc = container.security_context.clone().unwrap();
                let caps = sc.capabilities.unwrap();
                assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{name}");
                assert_eq!(caps.add, None, "{name}: no capability added");
                assert_eq!(sc.privileged, Some(false), "{name}");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
                for mount in container.volume_mounts.as_deref().unwrap_or_default() {
                    let writable = mount.read_only != Some(true);
                    let may_write = ["binaries", "containerd-config", "lock", "replaced-binaries"]
                        .contains(&mount.name.as_str());
                    assert!(
                        !writable || may_write,
                        "{name}: {} ({}) is writable",
                        mount.name,
                        mount.mount_path
                    );
                    if ["containerd-run", "dbus"].contains(&mount.name.as_str()) {
                        assert!(!writable, "{name}: socket folder {} writable", mount.name);
                    }
                }
            }
        }
    }
}

#[test]
fn a_binary_path_that_would_mount_more_than_a_binary_folder_is_a_configuration_error() {
    for actuator in ACTUATORS {
        let runtime_type = actuator.description().runtime_type;
        for bad in [
            "/",
            "/etc",
            "/run/containerd",
            "/var/bin/../../etc",
            "/dev/shm",
        ] {
            let cr = cr(runtime_type, bad);
            for result in [
                actuator.desired(&cr, &Shoot::default(), IMAGE).err(),
                actuator.cleanup(&cr, &Shoot::default(), IMAGE).err(),
            ] {
                match result {
                    Some(ActuatorError::Configuration(e)) => {
                        assert_eq!(e.field, "spec.binaryPath", "{runtime_type} {bad}");
                        assert!(e.message.contains("allowed:"), "{}", e.message);
                    }
                    other => panic!("{runtime_type} {bad}: {other:?}"),
                }
            }
        }
    }
}
