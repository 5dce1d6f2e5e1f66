//! Hostile pool names and flag values, generated, through every registered actuator: a name
//! that is not a DNS label short enough for every object we derive from it is an Error naming
//! `spec.workerPool.name` (never a broken DaemonSet, never `../` in a name); flag values with
//! quotes, newlines or TOML table headers end up as one quoted string each in `runsc.toml`,
//! never as an extra key or table.

use proptest::prelude::*;
use sandbox_api::{ContainerRuntime, Shoot};
use sandbox_runtime::actuator::{ACTUATORS, ActuatorError};
use sandbox_runtime::gvisor::config;
use serde_json::json;

fn cr(runtime: &str, pool: &str) -> ContainerRuntime {
    serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "ContainerRuntime",
        "metadata": {"name": "cr", "namespace": "shoot--p--s"},
        "spec": {"type": runtime, "binaryPath": "/var/bin/containerruntimes",
            "workerPool": {"name": pool, "selector": {"matchLabels": {"worker.gardener.cloud/pool": pool}}}},
    }))
    .unwrap()
}

fn shoot(pool: &str, runtime: &str) -> Shoot {
    serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {"provider": {"workers": [{"name": pool, "cri": {"name": "containerd",
            "containerRuntimes": [{"type": runtime}]}}]}},
    }))
    .unwrap()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Every object's name is a path segment (RBAC's may hold `:`), a DNS subdomain for the
/// kinds whose names must be one, and every label value at most 63 characters.
fn check_objects(data: &std::collections::BTreeMap<String, String>) -> Result<(), TestCaseError> {
    for (key, text) in data {
        let object: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| TestCaseError::fail(format!("{key}: {e}")))?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        prop_assert!(
            !name.is_empty()
                && name.len() <= 253
                && !name.contains('/')
                && name != "."
                && name != ".."
                && name.chars().all(|c| c.is_ascii_graphic()),
            "{key}: name {name:?}"
        );
        let kind = object["kind"].as_str().unwrap_or_default();
        if !kind.starts_with("ClusterRole") && !kind.starts_with("Role") {
            prop_assert!(is_dns_subdomain(name), "{key}: name {name:?}");
        }
        for labels in [
            &object["metadata"]["labels"],
            &object["spec"]["template"]["metadata"]["labels"],
        ] {
            if let Some(labels) = labels.as_object() {
                for (k, v) in labels {
                    let v = v.as_str().unwrap_or_default();
                    prop_assert!(v.len() <= 63, "{key}: label {k}={v:?}");
                }
            }
        }
    }
    Ok(())
}

fn pool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,40}[a-z0-9]",
        "[a-z0-9-]{0,70}",
        Just("../../etc".to_string()),
        Just("pool\nname".to_string()),
        Just("pool/../x".to_string()),
        Just("Pool".to_string()),
        Just("-pool".to_string()),
        Just("a".repeat(300)),
        ".{0,20}",
    ]
}

proptest! {
    #![proptest_config(sandbox_fuzz::config(1000))]

    #[test]
    fn pool_names(pool in pool_name()) {
        for actuator in ACTUATORS {
            let runtime = actuator.description().runtime_type;
            let (cr, shoot) = (cr(runtime, &pool), shoot(&pool, runtime));
            let desired = actuator.desired(&cr, &shoot, "registry.local/node-agent:v1");
            let cleanup = actuator.cleanup(&cr, &shoot, "registry.local/node-agent:v1");
            match (desired, cleanup) {
                (Ok(desired), Ok(cleanup)) => {
                    prop_assert!(is_dns_label(&pool), "{runtime}: accepted {pool:?}");
                    check_objects(&desired.pool.data)?;
                    check_objects(&desired.shared.data)?;
                    check_objects(&cleanup.pool.data)?;
                }
                (Err(ActuatorError::Configuration(e)), Err(ActuatorError::Configuration(c))) => {
                    prop_assert_eq!(&e.field, "spec.workerPool.name");
                    prop_assert_eq!(&c.field, "spec.workerPool.name");
                    prop_assert!(e.message.contains("a-z, 0-9 and '-'"), "{}", e.message);
                }
                (d, c) => prop_assert!(false, "{runtime} {pool:?}: desired {d:?}, cleanup {c:?}"),
            }
        }
    }

    /// Known flags with hostile values: accepted flags become exactly one string key each in
    /// `[runsc_config]`; the file has no other table and no other key.
    #[test]
    fn flag_values_never_inject_toml(
        values in proptest::collection::btree_map(
            proptest::sample::select(config::supported_flags()),
            prop_oneof![
                Just("true\n[runsc_config]\nplatform = \"ptrace\"".to_string()),
                Just("x\" \nroot = \"/".to_string()),
                Just("'''".to_string()),
                Just("$(reboot)".to_string()),
                ".{0,40}",
            ],
            1..5,
        ),
    ) {
        let provider_config = json!({"apiVersion": config::API_VERSION, "kind": "GVisorConfiguration", "configFlags": values});
        match config::parse(Some(&provider_config)) {
            Ok(parsed) => {
                let text = parsed.runsc_toml();
                let doc: toml_edit::DocumentMut = text.parse().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                prop_assert_eq!(doc.len(), 1, "one table only:\n{}", text);
                let table = doc["runsc_config"].as_table().unwrap();
                let flags = parsed.runsc_flags();
                prop_assert_eq!(table.len(), flags.len(), "{}", text);
                for (k, v) in &flags {
                    prop_assert_eq!(table.get(k).and_then(|i| i.as_str()), Some(v.as_str()));
                }
            }
            Err(e) => {
                prop_assert!(e.field.starts_with("providerConfig.configFlags"), "{e:?}");
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
