//! Health of one ContainerRuntime as Gardener's extensions report it: conditions on the
//! extension object, which gardenlet's care controller merges into the Shoot's conditions of
//! the same type. Types, reasons, messages and timestamps follow Gardener's health check library
//! (`extensions/pkg/controller/healthcheck`):
//!
//! - `SystemComponentsHealthy`: the runtime's objects in the shoot are applied and healthy
//!   (the shared and the pool's ManagedResource, as gardener-resource-manager reports them);
//! - `EveryNodeReady`: every node of the pool has the runtime ready, as its node agent reported
//!   it on the node (ready label and state annotation); when the shoot cannot be read, the
//!   installer DaemonSet's readiness as gardener-resource-manager reflects it.
//!
//! Status `True` (reason `HealthCheckSuccessful`), `Progressing` (`HealthCheckProgressing`,
//! while a rollout runs, for at most [`PROGRESSING_THRESHOLD`]), `False`
//! (`HealthCheckUnsuccessful`), `Unknown` (`ConditionCheckError`). `lastTransitionTime` moves
//! when the status changes, `lastUpdateTime` when reason, message or codes change: a check
//! that finds nothing new computes the old conditions again and nothing is written.
//!
//! Everything here is pure; [`crate::health_check`] reads and writes.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sandbox_api::ManagedResource;
use sandbox_api::extension::Condition;

mod nodes;

use nodes::check_nodes;
pub use nodes::{ComponentState, NodeState};

/// The condition types this extension reports.
pub const SYSTEM_COMPONENTS_HEALTHY: &str = "SystemComponentsHealthy";
pub const EVERY_NODE_READY: &str = "EveryNodeReady";
/// Reasons, as Gardener's health check library writes them.
pub const REASON_SUCCESSFUL: &str = "HealthCheckSuccessful";
pub const REASON_UNSUCCESSFUL: &str = "HealthCheckUnsuccessful";
pub const REASON_PROGRESSING: &str = "HealthCheckProgressing";
pub const REASON_CHECK_ERROR: &str = "ConditionCheckError";
/// How long a rollout may keep a condition `Progressing` before it counts as `False`.
pub const PROGRESSING_THRESHOLD: Duration = Duration::from_secs(10 * 60);

/// A condition message is cut to this many bytes (it lands in the ContainerRuntime's and,
/// through gardenlet, the Shoot's status).
pub const MESSAGE_MAX: usize = 4096;
/// A condition message names at most this many nodes, then says how many more there are.
pub const NAMED_NODES_MAX: usize = 10;
/// What a condition says about one node (name, reason, message) is cut to this many bytes.
pub const NODE_DETAIL_MAX: usize = 320;

/// `s` cut to at most `max` bytes at a character boundary, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker = "…";
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

/// `items` joined with `, `: at most [`NAMED_NODES_MAX`], then `and N more`.
pub(crate) fn name_some(items: &[String]) -> String {
    let shown = items
        .iter()
        .take(NAMED_NODES_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(NAMED_NODES_MAX) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Everything the health of one ContainerRuntime depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The runtime as operators name it, e.g. `gVisor`.
    pub runtime: &'a str,
    pub pool: &'a str,
    pub namespace: &'a str,
    /// Name and current state of the shared ManagedResource.
    pub shared: (&'a str, Option<&'a ManagedResource>),
    /// Name and current state of the pool's ManagedResource.
    pub pool_mr: (&'a str, Option<&'a ManagedResource>),
    /// The pool's nodes as read from the shoot, or why they could not be read.
    pub nodes: Result<Vec<NodeState>, String>,
    pub hibernated: bool,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    Ok,
    Progressing(String),
    Failed(String),
    /// The check itself could not run.
    Error(String),
}

impl Check {
    fn failed(&self) -> Option<&String> {
        match self {
            Check::Failed(d) => Some(d),
            _ => None,
        }
    }
    fn progressing(&self) -> Option<&String> {
        match self {
            Check::Progressing(d) => Some(d),
            _ => None,
        }
    }
    fn error(&self) -> Option<&String> {
        match self {
            Check::Error(d) => Some(d),
            _ => None,
        }
    }
}

/// Gardener's `CheckManagedResource` plus its `ResourcesProgressing` condition.
fn check_managed_resource(namespace: &str, name: &str, mr: Option<&ManagedResource>) -> Check {
    let Some(mr) = mr else {
        return Check::Failed(format!(
            "Managed Resource {name:?} in namespace {namespace:?} not found"
        ));
    };
    let status = mr.status.clone().unwrap_or_default();
    let generation = mr.metadata.generation.unwrap_or_default();
    let observed = status.observed_generation.unwrap_or_default();
    if observed != generation {
        return Check::Failed(format!(
            "observed generation of managed resource {namespace}/{name} outdated ({observed}/{generation})"
        ));
    }
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    for type_ in ["ResourcesApplied", "ResourcesHealthy"] {
        match condition(type_) {
            None => {
                return Check::Failed(format!(
                    "condition {type_} for managed resource {namespace}/{name} has not been reported yet"
                ));
            }
            Some(c) if c.status != "True" => {
                // A DaemonSet whose new pods are not all available yet is unhealthy and
                // progressing at once: that is a rollout, not a failure (yet).
                let rolling = condition("ResourcesProgressing").is_some_and(|p| p.status == "True");
                let detail = format!(
                    "condition {type_} of managed resource {namespace}/{name} is {}: {}",
                    c.status, c.message
                );
                return if rolling && type_ == "ResourcesHealthy" {
                    Check::Progressing(detail)
                } else {
                    Check::Failed(detail)
                };
            }
            Some(_) => {}
        }
    }
    match condition("ResourcesProgressing") {
        Some(c) if c.status == "True" => Check::Progressing(format!(
            "managed resource {namespace}/{name} is progressing: {}",
            c.message
        )),
        _ => Check::Ok,
    }
}

fn with_dot(s: &str) -> String {
    if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// Several checks of one condition type into one (status, reason, message), as the library
/// combines them.
fn combine(checks: &[Check]) -> (&'static str, &'static str, String) {
    let failed: Vec<&String> = checks.iter().filter_map(Check::failed).collect();
    let progressing: Vec<&String> = checks.iter().filter_map(Check::progressing).collect();
    let errors: Vec<&String> = checks.iter().filter_map(Check::error).collect();
    let list = |items: &[&String]| -> String {
        if items.len() == 1 {
            with_dot(items[0])
        } else {
            items
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{}) {}", i + 1, with_dot(d)))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    if !errors.is_empty() {
        let n = errors.len();
        let word = if n > 1 { "checks" } else { "check" };
        return (
            "Unknown",
            REASON_CHECK_ERROR,
            format!("failed to execute {n} health {word}: {}", list(&errors)),
        );
    }
    if !failed.is_empty() {
        let mut message = list(&failed);
        if !progressing.is_empty() {
            message = format!(
                "Failed {}: {message} Progressing {}: {}",
                if failed.len() > 1 { "checks" } else { "check" },
                if progressing.len() > 1 {
                    "checks"
                } else {
                    "check"
                },
                list(&progressing)
            );
        }
        return ("False", REASON_UNSUCCESSFUL, message);
    }
    if !progressing.is_empty() {
        return ("Progressing", REASON_PROGRESSING, list(&progressing));
    }
    (
        "True",
        REASON_SUCCESSFUL,
        "All health checks successful".into(),
    )
}

/// The conditions `old` becomes at `now` for `input`: our two types computed afresh (with
/// Gardener's timestamp rules and progressing threshold), conditions of other writers kept,
/// and stale health check conditions (a type we no longer report, left with a health check
/// reason) removed. Sorted by type.
pub fn conditions(input: &Input<'_>, old: &[Condition], now: Timestamp) -> Vec<Condition> {
    let computed: Vec<(&str, &str, &str, String)> = if input.hibernated {
        [SYSTEM_COMPONENTS_HEALTHY, EVERY_NODE_READY]
            .into_iter()
            .map(|t| {
                (
                    t,
                    "True",
                    REASON_SUCCESSFUL,
                    "Shoot is hibernated".to_string(),
                )
            })
            .collect()
    } else {
        let shared = check_managed_resource(input.namespace, input.shared.0, input.shared.1);
        let pool = check_managed_resource(input.namespace, input.pool_mr.0, input.pool_mr.1);
        let nodes = check_nodes(input, &pool);
        let (s1, r1, m1) = combine(&[shared, pool]);
        let (s2, r2, m2) = combine(&[nodes]);
        vec![
            (SYSTEM_COMPONENTS_HEALTHY, s1, r1, m1),
            (EVERY_NODE_READY, s2, r2, m2),
        ]
    };
    let mut result: Vec<Condition> = old
        .iter()
        .filter(|c| {
            let ours = c.type_ == SYSTEM_COMPONENTS_HEALTHY || c.type_ == EVERY_NODE_READY;
            let stale = !ours
                && [
                    REASON_SUCCESSFUL,
                    REASON_UNSUCCESSFUL,
                    REASON_PROGRESSING,
                    REASON_CHECK_ERROR,
                ]
                .contains(&c.reason.as_str());
            !ours && !stale
        })
        .cloned()
        .collect();
    for (type_, status, reason, message) in computed {
        let previous = old.iter().find(|c| c.type_ == type_);
        let (mut status, mut reason) = (status, reason);
        // Progressing for longer than the threshold is a failure.
        if status == "Progressing"
            && let Some(p) = previous
            && p.status == "Progressing"
            && now
                .duration_since(p.last_transition_time.0)
                .as_secs()
                .max(0) as u64
                > PROGRESSING_THRESHOLD.as_secs()
        {
            status = "False";
            reason = REASON_UNSUCCESSFUL;
        }
        let message = cut(&message, MESSAGE_MAX);
        result.push(build(type_, status, reason, message, previous, now));
    }
    result.sort_by(|a, b| a.type_.cmp(&b.type_));
    result
}

/// Gardener's condition builder: the transition time moves with the status, the update time
/// with reason, message or codes.
fn build(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    old: Option<&Condition>,
    now: Timestamp,
) -> Condition {
    let now = Time(now);
    let Some(old) = old else {
        return Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: now.clone(),
            last_update_time: now,
            reason: reason.into(),
            message,
            codes: Vec::new(),
        };
    };
    let last_transition_time = if old.status == status {
        old.last_transition_time.clone()
    } else {
        now.clone()
    };
    let last_update_time =
        if old.reason != reason || old.message != message || !old.codes.is_empty() {
            now
        } else {
            old.last_update_time.clone()
        };
    Condition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time,
        last_update_time,
        reason: reason.into(),
        message,
        codes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mr(name: &str, conditions: serde_json::Value) -> ManagedResource {
        serde_json::from_value(json!({
            "apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
            "metadata": {"name": name, "namespace": "shoot--p--s", "generation": 2},
            "spec": {"secretRefs": []},
            "status": {"observedGeneration": 2, "conditions": conditions},
        }))
        .unwrap()
    }

    fn cond(t: &str, s: &str, msg: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "lastTransitionTime": "2026-11-22T10:00:00Z",
               "lastUpdateTime": "2026-11-22T10:00:00Z", "reason": "R", "message": msg})
    }

    fn healthy(name: &str) -> ManagedResource {
        mr(
            name,
            json!([
                cond("ResourcesApplied", "True", ""),
                cond("ResourcesHealthy", "True", ""),
                cond("ResourcesProgressing", "False", "")
            ]),
        )
    }

    fn node(name: &str, ready: bool, reason: Option<&str>) -> NodeState {
        NodeState {
            components_not_ready: Vec::new(),
            version: None,
            name: name.into(),
            ready,
            reason: reason.map(String::from),
            message: reason.map(|_| "containerd 1.6.20 is older than 1.7".into()),
        }
    }

    fn input<'a>(
        shared: Option<&'a ManagedResource>,
        pool: Option<&'a ManagedResource>,
        nodes: Result<Vec<NodeState>, String>,
    ) -> Input<'a> {
        Input {
            runtime: "gVisor",
            pool: "sandbox",
            namespace: "shoot--p--s",
            shared: ("extension-runtime-gvisor", shared),
            pool_mr: ("extension-runtime-gvisor-installation-sandbox", pool),
            nodes,
            hibernated: false,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn find<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn healthy_everywhere_is_true_and_a_second_check_changes_nothing() {
        let (s, p) = (healthy("a"), healthy("b"));
        let i = input(Some(&s), Some(&p), Ok(vec![node("n1", true, None)]));
        let first = conditions(&i, &[], at("2026-11-22T10:00:00Z"));
        for t in [SYSTEM_COMPONENTS_HEALTHY, EVERY_NODE_READY] {
            let c = find(&first, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("True", REASON_SUCCESSFUL)
            );
            assert_eq!(c.message, "All health checks successful");
        }
        let again = conditions(&i, &first, at("2026-11-22T10:05:00Z"));
        assert_eq!(again, first, "nothing new, nothing to write");
    }

    #[test]
    fn a_broken_node_is_named_with_its_agents_reason() {
        let (s, p) = (healthy("a"), healthy("b"));
        let i = input(
            Some(&s),
            Some(&p),
            Ok(vec![
                node("n2", false, Some("ContainerdTooOld")),
                node("n1", true, None),
            ]),
        );
        let old = conditions(
            &input(Some(&s), Some(&p), Ok(vec![node("n1", true, None)])),
            &[],
            at("2026-11-22T10:00:00Z"),
        );
        let now = at("2026-11-22T10:01:00Z");
        let cs = conditions(&i, &old, now);
        let c = find(&cs, EVERY_NODE_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REASON_UNSUCCESSFUL)
        );
        assert_eq!(
            c.message,
            "1 of 2 nodes of pool sandbox have gVisor ready; not ready: n2 (ContainerdTooOld: containerd 1.6.20 is older than 1.7)."
        );
        assert_eq!((c.last_transition_time.0, c.last_update_time.0), (now, now));
        // The other condition did not change: its timestamps stay.
        assert_eq!(
            find(&cs, SYSTEM_COMPONENTS_HEALTHY),
            find(&old, SYSTEM_COMPONENTS_HEALTHY)
        );
    }

    #[test]
    fn nodes_on_different_versions_are_named_until_they_agree() {
        let (s, p) = (healthy("a"), healthy("b"));
        let on = |name: &str, version: &str| NodeState {
            version: Some(version.into()),
            ..node(name, true, None)
        };
        let mixed = vec![
            on("n2", "20260905"),
            on("n1", "20260527"),
            on("n3", "20260905"),
        ];
        let cs = conditions(
            &input(Some(&s), Some(&p), Ok(mixed)),
            &[],
            at("2026-11-22T10:00:00Z"),
        );
        let c = find(&cs, EVERY_NODE_READY);
        assert_eq!(c.status, "Progressing");
        assert_eq!(
            c.message,
            "every node of pool sandbox has gVisor ready, with different versions: 20260527 on n1; 20260905 on n2, n3."
        );
        let agreed = vec![on("n1", "20260905"), on("n2", "20260905")];
        let cs = conditions(
            &input(Some(&s), Some(&p), Ok(agreed)),
            &cs,
            at("2026-11-22T10:01:00Z"),
        );
        assert_eq!(find(&cs, EVERY_NODE_READY).status, "True");
    }

    #[test]
    fn a_hypervisor_not_verified_on_a_node_is_named_with_its_reason() {
        let (s, p) = (healthy("a"), healthy("b"));
        let mut n1 = node("n1", true, None);
        n1.components_not_ready = vec![
            ComponentState {
                name: "kata-qemu".into(),
                reason: Some("NoVhostVsock".into()),
                message: Some("/dev/vhost-vsock is missing".into()),
            },
            ComponentState {
                name: "kata-fc".into(),
                reason: None,
                message: None,
            },
        ];
        let mut i = input(Some(&s), Some(&p), Ok(vec![n1, node("n2", true, None)]));
        i.runtime = "Kata Containers";
        let cs = conditions(&i, &[], at("2026-11-22T10:00:00Z"));
        let c = find(&cs, EVERY_NODE_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REASON_UNSUCCESSFUL)
        );
        assert_eq!(
            c.message,
            "1 of 2 nodes of pool sandbox have Kata Containers ready; not ready: n1 (kata-qemu: NoVhostVsock: /dev/vhost-vsock is missing; kata-fc: no report from its node agent yet)."
        );
    }

    #[test]
    fn a_rollout_is_progressing_until_the_threshold() {
        let s = healthy("a");
        let p = mr(
            "b",
            json!([
                cond("ResourcesApplied", "True", ""),
                cond(
                    "ResourcesHealthy",
                    "False",
                    "DaemonSet \"kube-system/x\" is unhealthy: too many unavailable pods found (1/1)"
                ),
                cond(
                    "ResourcesProgressing",
                    "True",
                    "DaemonSet \"kube-system/x\" is progressing: 0 of 1 replica(s) have been updated"
                )
            ]),
        );
        let i = input(Some(&s), Some(&p), Ok(vec![node("n1", false, None)]));
        let t0 = at("2026-11-22T10:00:00Z");
        let cs = conditions(&i, &[], t0);
        for t in [SYSTEM_COMPONENTS_HEALTHY, EVERY_NODE_READY] {
            assert_eq!(find(&cs, t).status, "Progressing", "{t}");
            assert_eq!(find(&cs, t).reason, REASON_PROGRESSING);
        }
        let later = conditions(&i, &cs, at("2026-11-22T10:11:00Z"));
        assert_eq!(find(&later, EVERY_NODE_READY).status, "False");
        assert_eq!(find(&later, EVERY_NODE_READY).reason, REASON_UNSUCCESSFUL);
    }

    #[test]
    fn missing_managed_resources_and_unreadable_nodes() {
        let i = input(None, None, Err("secret gardener-internal not found".into()));
        let cs = conditions(&i, &[], at("2026-11-22T10:00:00Z"));
        let c = find(&cs, SYSTEM_COMPONENTS_HEALTHY);
        assert_eq!(c.status, "False");
        assert_eq!(
            c.message,
            "1) Managed Resource \"extension-runtime-gvisor\" in namespace \"shoot--p--s\" not found. 2) Managed Resource \"extension-runtime-gvisor-installation-sandbox\" in namespace \"shoot--p--s\" not found."
        );
        let c = find(&cs, EVERY_NODE_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", REASON_CHECK_ERROR)
        );
        assert!(
            c.message.contains("secret gardener-internal not found"),
            "{}",
            c.message
        );
    }

    #[test]
    fn hibernated_is_true_and_stale_health_conditions_go() {
        let mut i = input(None, None, Ok(vec![]));
        i.hibernated = true;
        let old: Vec<Condition> = serde_json::from_value(json!([
            {"type": "ControlPlaneHealthy", "status": "True", "lastTransitionTime": "2026-11-22T09:00:00Z",
             "lastUpdateTime": "2026-11-22T09:00:00Z", "reason": REASON_SUCCESSFUL, "message": "old"},
            {"type": "SomeoneElses", "status": "True", "lastTransitionTime": "2026-11-22T09:00:00Z",
             "lastUpdateTime": "2026-11-22T09:00:00Z", "reason": "Other", "message": "kept"},
        ]))
        .unwrap();
        let cs = conditions(&i, &old, at("2026-11-22T10:00:00Z"));
        let types: Vec<&str> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [EVERY_NODE_READY, "SomeoneElses", SYSTEM_COMPONENTS_HEALTHY]
        );
        assert_eq!(find(&cs, EVERY_NODE_READY).message, "Shoot is hibernated");
    }

    #[test]
    fn a_thousand_failing_nodes_with_huge_reports_make_a_bounded_message() {
        let huge = "x".repeat(256 * 1024);
        let nodes: Vec<NodeState> = (0..1000)
            .map(|i| NodeState {
                name: format!("node-{i:04}-{}", "n".repeat(200)),
                ready: false,
                reason: Some("BinaryNotAsPinned".into()),
                message: Some(huge.clone()),
                components_not_ready: Vec::new(),
                version: Some(format!("v{i}")),
            })
            .collect();
        let i = input(None, None, Ok(nodes));
        let conditions = conditions(&i, &[], Timestamp::UNIX_EPOCH);
        let c = conditions
            .iter()
            .find(|c| c.type_ == EVERY_NODE_READY)
            .unwrap();
        assert!(c.message.len() <= MESSAGE_MAX, "{}", c.message.len());
        assert!(
            c.message.contains("0 of 1000 nodes"),
            "{}",
            &c.message[..200]
        );
        assert!(
            c.message.contains("BinaryNotAsPinned"),
            "{}",
            &c.message[..200]
        );
        assert!(c.message.contains("and 990 more"), "{}", c.message);
    }

    #[test]
    fn node_lists_name_ten_nodes_then_count_the_rest() {
        let names: Vec<String> = (0..25).map(|i| format!("n{i}")).collect();
        let listed = name_some(&names);
        assert!(
            listed.starts_with("n0, n1,") && listed.ends_with("n9 and 15 more"),
            "{listed}"
        );
        assert_eq!(name_some(&names[..3]), "n0, n1, n2");
        assert_eq!(cut("äöü", 4), "…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
