//! Scheduling that follows the shoot's pools: a RuntimeClass tolerates the taints of every
//! pool that offers its runtime, so a pod that only sets `runtimeClassName` lands on a
//! tainted ("dedicated") sandbox pool, while pods without it stay off.

use k8s_openapi::api::core::v1::Toleration;
use sandbox_api::Shoot;
use sandbox_api::shoot::Taint;

/// Tolerations for the taints of every pool of `shoot` that asks for `runtime_type`: one per
/// distinct (key, value, effect), sorted, so the same pools always give the same bytes.
/// `None` when no such pool is tainted (the RuntimeClass then has no `tolerations` field).
pub fn pool_tolerations(shoot: &Shoot, runtime_type: &str) -> Option<Vec<Toleration>> {
    let tolerations = tolerate(
        shoot
            .spec
            .provider
            .workers
            .iter()
            .filter(|w| w.wants_runtime(runtime_type))
            .flat_map(|w| w.taints.iter()),
    );
    Some(tolerations).filter(|t| !t.is_empty())
}

/// One toleration per distinct taint of `taints` (key, value, effect), sorted.
pub fn tolerate<'a>(taints: impl IntoIterator<Item = &'a Taint>) -> Vec<Toleration> {
    let mut taints: Vec<(String, String, String)> = taints
        .into_iter()
        .map(|t| {
            (
                t.key.clone(),
                t.value.clone().unwrap_or_default(),
                t.effect.clone(),
            )
        })
        .collect();
    taints.sort();
    taints.dedup();
    taints
        .into_iter()
        .map(|(key, value, effect)| Toleration {
            key: Some(key),
            // Equal with an empty value matches a taint without a value, and nothing else.
            operator: Some("Equal".into()),
            value: Some(value),
            // An empty effect in a toleration would match every effect of the key.
            effect: (!effect.is_empty()).then_some(effect),
            ..Toleration::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shoot(workers: serde_json::Value) -> Shoot {
        serde_json::from_value(json!({"spec": {"provider": {"workers": workers}}})).unwrap()
    }

    fn gvisor(name: &str, taints: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "taints": taints,
            "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}})
    }

    #[test]
    fn tolerates_exactly_the_taints_of_pools_with_the_runtime() {
        let s = shoot(json!([
            gvisor("b", json!([{"key": "sandbox", "value": "gvisor", "effect": "NoSchedule"},
                               {"key": "dedicated", "effect": "NoExecute"}])),
            gvisor("a", json!([{"key": "sandbox", "value": "gvisor", "effect": "NoSchedule"}])),
            {"name": "plain", "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
             "cri": {"name": "containerd"}},
        ]));
        let t = pool_tolerations(&s, "gvisor").unwrap();
        let rendered: Vec<_> = t
            .iter()
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t.key.as_deref().unwrap(),
                    t.value.as_deref().unwrap(),
                    t.effect.as_deref().unwrap()
                )
            })
            .collect();
        // Sorted, the duplicate of pools a and b once, the plain pool's gpu taint not at all.
        assert_eq!(
            rendered,
            ["dedicated=:NoExecute", "sandbox=gvisor:NoSchedule"]
        );
        assert!(t.iter().all(|t| t.operator.as_deref() == Some("Equal")));
        // Order of pools does not matter.
        let reversed = shoot(json!([
            gvisor(
                "a",
                json!([{"key": "sandbox", "value": "gvisor", "effect": "NoSchedule"}])
            ),
            gvisor(
                "b",
                json!([{"key": "dedicated", "effect": "NoExecute"},
                               {"key": "sandbox", "value": "gvisor", "effect": "NoSchedule"}])
            ),
        ]));
        assert_eq!(pool_tolerations(&reversed, "gvisor").unwrap(), t);
    }

    #[test]
    fn no_tainted_pool_no_tolerations() {
        let s = shoot(json!([gvisor("a", json!([])),
            {"name": "plain", "taints": [{"key": "gpu", "effect": "NoSchedule"}]}]));
        assert_eq!(pool_tolerations(&s, "gvisor"), None);
        assert_eq!(pool_tolerations(&s, "kata"), None);
    }
}
