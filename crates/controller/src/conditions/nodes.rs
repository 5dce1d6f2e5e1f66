//! `EveryNodeReady` from what the pool's node agents reported on their nodes.

use super::{Check, Input};

/// What one node's agent reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    /// The node carries the ready label (the agent verified the runtime).
    pub ready: bool,
    /// The agent's reason when not ready (e.g. `ContainerdTooOld`), if it reported one.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Parts of the runtime verified separately (Kata's hypervisors) that are not ready on
    /// this node, with the agent's reason.
    pub components_not_ready: Vec<ComponentState>,
    /// The runtime version the agent last installed there, if it reported one.
    pub version: Option<String>,
}

/// A separately verified part of a runtime that is not ready on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentState {
    /// As operators know it, e.g. `kata-qemu`.
    pub name: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl NodeState {
    fn all_ready(&self) -> bool {
        self.ready && self.components_not_ready.is_empty()
    }

    fn reported_failure(&self) -> bool {
        self.reason.is_some() || self.components_not_ready.iter().any(|c| c.reason.is_some())
    }

    fn describe(&self) -> String {
        let why = |reason: &Option<String>, message: &Option<String>| match (reason, message) {
            (Some(reason), Some(message)) => format!("{reason}: {message}"),
            (Some(reason), None) => reason.clone(),
            _ => "no report from its node agent yet".to_string(),
        };
        if !self.ready {
            return format!("{} ({})", self.name, why(&self.reason, &self.message));
        }
        let parts: Vec<String> = self
            .components_not_ready
            .iter()
            .map(|c| format!("{}: {}", c.name, why(&c.reason, &c.message)))
            .collect();
        format!("{} ({})", self.name, parts.join("; "))
    }
}

/// The pool's nodes against what the agents reported.
pub(super) fn check_nodes(input: &Input<'_>, rollout: &Check) -> Check {
    let nodes = match &input.nodes {
        Ok(nodes) => nodes,
        // Without the shoot's nodes, the installer's readiness as gardener-resource-manager
        // reflects it is all there is.
        Err(why) => {
            return match rollout {
                Check::Ok => Check::Ok,
                Check::Progressing(d) => Check::Progressing(d.clone()),
                Check::Failed(d) | Check::Error(d) => Check::Error(format!(
                    "the pool's nodes could not be read ({why}); the installer reports: {d}"
                )),
            };
        }
    };
    let not_ready: Vec<&NodeState> = nodes.iter().filter(|n| !n.all_ready()).collect();
    if not_ready.is_empty() {
        // Ready everywhere, but not with one version: a rollout on its way (and, past the
        // progressing threshold, one that is stuck). Which node runs which version is named.
        return match versions(nodes) {
            Some(mixed) => Check::Progressing(format!(
                "every node of pool {} has {} ready, with different versions: {mixed}",
                input.pool, input.runtime
            )),
            None => Check::Ok,
        };
    }
    // Each named node's detail is cut, so that ten of them and the count of the rest fit the
    // condition's size.
    let mut names: Vec<String> = not_ready
        .iter()
        .map(|n| super::cut(&n.describe(), super::NODE_DETAIL_MAX))
        .collect();
    names.sort();
    let detail = format!(
        "{} of {} nodes of pool {} have {} ready; not ready: {}",
        nodes.len() - not_ready.len(),
        nodes.len(),
        input.pool,
        input.runtime,
        super::name_some(&names)
    );
    // While the installer rolls out and no agent reported a failure, nodes are on their way.
    let reported_failure = not_ready.iter().any(|n| n.reported_failure());
    if matches!(rollout, Check::Progressing(_)) && !reported_failure {
        Check::Progressing(detail)
    } else {
        Check::Failed(detail)
    }
}

/// `version on node, node; version on node`, sorted, when the nodes' reported versions
/// differ (a node without a report counts as `unknown`); None when they agree.
fn versions(nodes: &[NodeState]) -> Option<String> {
    let mut by_version: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for node in nodes {
        by_version
            .entry(node.version.as_deref().unwrap_or("unknown"))
            .or_default()
            .push(&node.name);
    }
    if by_version.len() < 2 || !nodes.iter().any(|n| n.version.is_some()) {
        return None;
    }
    Some(
        by_version
            .into_iter()
            .map(|(version, mut names)| {
                names.sort();
                let names: Vec<String> = names.into_iter().map(String::from).collect();
                format!("{version} on {}", super::name_some(&names))
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}
