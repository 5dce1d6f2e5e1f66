//! Hostile providerConfigs, generated: the decoders and the Shoot review never panic, and
//! every rejection names a field (with the Shoot's full path in the review).

use proptest::prelude::*;
use sandbox_api::Shoot;
use sandbox_runtime::actuator::ACTUATORS;
use sandbox_runtime::admission::{Rules, review};
use serde_json::{Map, Value, json};

/// Keys the decoders know, plus noise, so generated objects reach deep into them.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "configFlags",
    "platform",
    "net-raw",
    "debug",
    "nvproxy",
    "panic-signal",
    "hypervisors",
    "overhead",
    "memory",
    "cpu",
    "qemu",
    "clh",
    "fc",
    "defaultVCPUs",
    "defaultMemory",
    "devmapperPoolSize",
    "x",
    "",
    "../../etc",
    "a\"b",
    "[plugins]",
];

/// Values the decoders know, plus hostile strings.
const STRINGS: &[&str] = &[
    "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
    "gvisor.os.extensions.gardener.cloud/v1alpha1",
    "GVisorConfiguration",
    "kata.runtime.extensions.config.gardener.cloud/v1alpha1",
    "KataConfiguration",
    "systrap",
    "kvm",
    "true",
    "false",
    "9",
    "65",
    "qemu",
    "clh",
    "fc",
    "320Mi",
    "250m",
    "100Gi",
    "-1Gi",
    "1e400",
    "\"\n[plugins]\nx = 1",
    "$(reboot)",
    "",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

/// A providerConfig that often has the right apiVersion and kind, so that the generated
/// rest reaches the field checks.
fn provider_config() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&STRINGS[..5]),
        proptest::sample::select(&STRINGS[..5]),
        json_value(),
    )
        .prop_map(|(api_version, kind, rest)| {
            let mut object = match rest {
                Value::Object(map) => map,
                other => Map::from_iter([("configFlags".to_string(), other)]),
            };
            object
                .entry("apiVersion")
                .or_insert_with(|| Value::from(api_version));
            object.entry("kind").or_insert_with(|| Value::from(kind));
            Value::Object(object)
        })
}

fn check(value: &Value) {
    for runtime in ACTUATORS {
        if let Err(e) = runtime.validate(Some(value)) {
            assert!(
                e.field.starts_with("providerConfig"),
                "{}: {e:?} for {value}",
                runtime.description().runtime_type
            );
            assert!(!e.message.is_empty());
        }
        let shoot: Shoot = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "spec": {"provider": {"workers": [{"name": "p", "machine": {"type": "m"},
                "cri": {"name": "containerd", "containerRuntimes": [
                    {"type": runtime.description().runtime_type, "providerConfig": value}]}}]}},
        }))
        .unwrap();
        let verdict = review(&shoot, None, None, &Rules::default());
        for finding in verdict.errors.iter().chain(&verdict.warnings) {
            assert!(
                finding.field.starts_with("spec.") && !finding.message.is_empty(),
                "{finding}"
            );
        }
    }
}

proptest! {
    #![proptest_config(sandbox_fuzz::config(2000))]

    #[test]
    fn structured_provider_configs(value in provider_config()) {
        check(&value);
    }

    #[test]
    fn any_json(value in json_value()) {
        check(&value);
    }

    #[test]
    fn bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            check(&value);
        }
    }
}
