//! The installer and the cleanup DaemonSets of one pool.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Agent, CONFIG_DIR, DBUS_DIR, HEALTH_PORT, HOST_ROOT, PoolInput, SHOOT_NAMESPACE};
use crate::manifests::{ObjectSet, RenderError, secret_checksum};
use crate::node_plan::{self, PLAN_ENV};
use crate::{CRI_CONTAINERD, CRI_NAME_LABEL};

/// Labels of one DaemonSet and its pods; unique per pool and purpose (the Go extension's
/// DaemonSets all shared one selector and overlapped).
fn labels(app: &str, instance: String) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        ("app.kubernetes.io/instance".to_string(), instance),
    ]
    .into()
}

/// The pool's installer objects.
pub fn installation_objects(
    agent: &Agent,
    input: &PoolInput<'_>,
) -> Result<ObjectSet, RenderError> {
    let name = agent.installer_name(input.pool);
    let labels = labels(agent.app, name.clone());
    let config_data: BTreeMap<String, String> =
        [(node_plan::FILE_NAME.to_string(), input.plan.to_yaml())].into();
    // Gardener's checksum of a data map, as for the ManagedResource secrets: a new plan rolls
    // the DaemonSet, an unchanged one does not.
    let config_checksum = secret_checksum(config_data.iter().map(|(k, v)| (k, v.as_bytes())));
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(SHOOT_NAMESPACE.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        data: Some(config_data),
        ..ConfigMap::default()
    };
    let daemon_set = agent_daemon_set(AgentDaemonSet {
        agent,
        name: &name,
        labels,
        input,
        action: "install",
        plan: Plan::ConfigMap {
            name: &name,
            checksum: config_checksum,
        },
    });
    let mut set = ObjectSet::default();
    set.add(&config_map)?;
    set.add(&daemon_set)?;
    Ok(set)
}

/// The pool's cleanup objects: a DaemonSet whose pods run `node-agent uninstall` and turn
/// ready once their node no longer has the runtime (labels removed, containerd without its
/// handlers, binaries gone). Rolled out on every node of the pool means the pool is clean.
pub fn cleanup_objects(agent: &Agent, input: &PoolInput<'_>) -> Result<ObjectSet, RenderError> {
    let name = agent.cleanup_name(input.pool);
    let daemon_set = agent_daemon_set(AgentDaemonSet {
        agent,
        name: &name,
        labels: labels(&format!("{}-cleanup", agent.app), name.clone()),
        input,
        action: "uninstall",
        plan: Plan::Inline(input.plan.to_yaml()),
    });
    let mut set = ObjectSet::default();
    set.add(&daemon_set)?;
    Ok(set)
}

/// How a DaemonSet's pods get their node plan.
enum Plan<'a> {
    /// Mounted from ConfigMap `name` at [`CONFIG_DIR`]; `checksum` rolls the pods on change.
    ConfigMap { name: &'a str, checksum: String },
    /// In the `NODE_PLAN` environment variable.
    Inline(String),
}

/// One node-agent DaemonSet of a pool.
struct AgentDaemonSet<'a> {
    agent: &'a Agent,
    name: &'a str,
    labels: BTreeMap<String, String>,
    input: &'a PoolInput<'a>,
    /// `install` or `uninstall`.
    action: &'a str,
    /// Where the pods find the node plan.
    plan: Plan<'a>,
}

fn agent_daemon_set(ds: AgentDaemonSet<'_>) -> DaemonSet {
    let mut node_selector: BTreeMap<String, String> =
        [(CRI_NAME_LABEL.to_string(), CRI_CONTAINERD.to_string())].into();
    node_selector.extend(ds.input.selector.match_labels.clone().unwrap_or_default());
    let affinity = node_affinity(ds.input.selector);
    let plan = ds.input.plan;
    // A versioned payload's folder holds every version (old ones are pruned from it).
    let binaries = match &plan.binaries.versioned {
        Some(versioned) => versioned.target.as_str(),
        None => ds.input.binary_path,
    };

    let host_path = |name: &str, path: &str, kind: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let host = |path: &str| format!("{HOST_ROOT}{path}");
    // The node plan's files live below /etc/containerd, its lock below /run/runtime-sandbox.
    let mut volumes = vec![
        host_path("binaries", binaries, "DirectoryOrCreate"),
        host_path(
            "containerd-config",
            node_plan::CONTAINERD_DIR,
            "DirectoryOrCreate",
        ),
        host_path("containerd-run", "/run/containerd", "DirectoryOrCreate"),
        host_path("dbus", DBUS_DIR, "DirectoryOrCreate"),
        host_path("lock", node_plan::LOCK_DIR, "DirectoryOrCreate"),
    ];
    let mut volume_mounts = vec![
        mount("binaries", &host(binaries), false),
        mount("containerd-config", &host(node_plan::CONTAINERD_DIR), false),
        // The agent only connects to the sockets there: read-only (a socket on a read-only
        // mount still accepts connections).
        mount("containerd-run", &host("/run/containerd"), true),
        mount("dbus", &host(DBUS_DIR), true),
        mount("lock", &host(node_plan::LOCK_DIR), false),
    ];
    // A versioned plan that replaces an unversioned install removes its binaries from
    // `spec.binaryPath` once no sandbox may use them: that folder too.
    if plan
        .binaries
        .versioned
        .as_ref()
        .is_some_and(|v| !v.replaces_binaries.is_empty())
    {
        volumes.push(host_path(
            "replaced-binaries",
            ds.input.binary_path,
            "DirectoryOrCreate",
        ));
        volume_mounts.push(mount(
            "replaced-binaries",
            &host(ds.input.binary_path),
            false,
        ));
    }
    let mut args = vec![
        "node-agent".to_string(),
        ds.action.to_string(),
        format!("--host-root={HOST_ROOT}"),
        format!("--binary-path={}", ds.input.binary_path),
    ];
    // Host capabilities the plan checks are looked at (never opened) through a read-only /dev.
    let checks_devices = plan.handlers.iter().any(|h| {
        h.requires
            .iter()
            .chain(&h.written_only_if)
            .any(|r| r.path.starts_with("/dev/"))
    });
    if checks_devices {
        volumes.push(host_path("dev", "/dev", "Directory"));
        volume_mounts.push(mount("dev", &host("/dev"), true));
    }
    let mut env = vec![EnvVar {
        name: "NODE_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "spec.nodeName".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    let mut pod_annotations = BTreeMap::new();
    match ds.plan {
        Plan::ConfigMap { name, checksum } => {
            volumes.push(Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.to_string(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            volume_mounts.push(mount("config", CONFIG_DIR, true));
            args.push(format!("--config-dir={CONFIG_DIR}"));
            pod_annotations.insert("checksum/config".to_string(), checksum);
        }
        Plan::Inline(plan) => env.push(EnvVar {
            name: PLAN_ENV.into(),
            value: Some(plan),
            ..EnvVar::default()
        }),
    }
    args.push(format!("--health-bind-address=:{HEALTH_PORT}"));

    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("health".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let quantity = |q: &str| Quantity(q.to_string());

    let container = Container {
        name: "node-agent".into(),
        image: Some(ds.input.image.into()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: HEALTH_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 10)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..probe("/healthz", 30)
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".into(), quantity("10m")),
                    ("memory".into(), quantity("32Mi")),
                ]
                .into(),
            ),
            limits: Some(
                [
                    ("cpu".into(), quantity("200m")),
                    ("memory".into(), quantity("128Mi")),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        // Root to write root-owned host files and talk to systemd; nothing more. Every file
        // and folder it writes is root's, so uid 0 needs no capability: not CHOWN (it changes
        // no owner), not DAC_OVERRIDE (it is the owner), not FOWNER (it sets modes of its own
        // files only).
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let mut pod_labels = ds.labels.clone();
    pod_labels.insert("origin".into(), ds.agent.origin.into());
    pod_labels.insert("gardener.cloud/role".into(), "container-runtime".into());

    DaemonSet {
        metadata: ObjectMeta {
            name: Some(ds.name.to_string()),
            namespace: Some(SHOOT_NAMESPACE.into()),
            labels: Some(ds.labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(ds.labels),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..RollingUpdateDaemonSet::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations).filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ds.agent.service_account.into()),
                    // The agent labels its node once the runtime works there (nodes get/patch only).
                    automount_service_account_token: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    node_selector: Some(node_selector),
                    affinity,
                    tolerations: Some(vec![
                        Toleration {
                            effect: Some("NoSchedule".into()),
                            operator: Some("Exists".into()),
                            ..Toleration::default()
                        },
                        Toleration {
                            effect: Some("NoExecute".into()),
                            operator: Some("Exists".into()),
                            ..Toleration::default()
                        },
                    ]),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

/// The selector's matchExpressions as required node affinity (a nodeSelector cannot say them).
/// LabelSelector operators `In`, `NotIn`, `Exists`, `DoesNotExist` exist for nodes too.
fn node_affinity(selector: &LabelSelector) -> Option<Affinity> {
    let expressions = selector
        .match_expressions
        .as_ref()
        .filter(|e| !e.is_empty())?;
    let mut requirements: Vec<NodeSelectorRequirement> = expressions
        .iter()
        .map(|e| NodeSelectorRequirement {
            key: e.key.clone(),
            operator: e.operator.clone(),
            values: e.values.clone().map(|mut v| {
                v.sort();
                v
            }),
        })
        .collect();
    requirements.sort_by(|a, b| (&a.key, &a.operator).cmp(&(&b.key, &b.operator)));
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    })
}
