//! The admission webhook's decoder, fuzzed: whatever bytes reach `/webhooks/validate-shoot`
//! (arbitrary bytes, arbitrary JSON, AdmissionReviews with generated and hostile Shoots), the
//! answer is an AdmissionReview (never a panic), for the request's uid when it has one; a
//! refusal says why, and every finding with a field names a path under `spec.`.

use proptest::prelude::*;
use sandbox_api::CloudProfile;
use sandbox_api::shoot::CloudProfileReference;
use sandbox_runtime::admission::Rules;
use sandbox_webhook::admission::{CloudProfiles, Context, Metrics, answer};
use serde_json::{Map, Value, json};

use sandbox_fuzz as fuzz;

/// A garden whose CloudProfile has one machine type with nested virtualisation and one
/// image version that lists both runtimes (a stand-in for the garden's API: this is a unit
/// test of the decoder; the real API is in crates/cli/tests/admission.rs).
struct Garden;

impl CloudProfiles for Garden {
    async fn get(
        &self,
        _reference: &CloudProfileReference,
        _namespace: &str,
    ) -> Result<Option<CloudProfile>, String> {
        Ok(Some(
            serde_json::from_value(json!({
                "apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                "metadata": {"name": "local"},
                "spec": {
                    "machineTypes": [
                        {"name": "m", "cpu": "2", "gpu": "0", "memory": "4Gi", "usable": true,
                         "capabilities": {"nestedVirtualization": ["true"]}},
                        {"name": "small", "cpu": "1", "gpu": "0", "memory": "1Gi", "usable": true}],
                    "machineImages": [{"name": "gardenlinux", "versions": [{"version": "1.0",
                        "cri": [{"name": "containerd", "containerRuntimes": [{"type": "gvisor"}, {"type": "kata"}]}]}]}]
                }
            }))
            .map_err(|e| e.to_string())?,
        ))
    }
}

const STRINGS: &[&str] = &[
    "gvisor",
    "kata",
    "containerd",
    "docker",
    "m",
    "small",
    "gardenlinux",
    "1.0",
    "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
    "GVisorConfiguration",
    "kata.runtime.extensions.config.gardener.cloud/v1alpha1",
    "KataConfiguration",
    "../../etc",
    "\"\n[plugins]",
    "$(reboot)",
    "",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ]
}

const KEYS: &[&str] = &[
    "name",
    "type",
    "cri",
    "containerRuntimes",
    "providerConfig",
    "machine",
    "image",
    "version",
    "configFlags",
    "hypervisors",
    "workers",
    "provider",
    "spec",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |entries| Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>()
                )
            ),
        ]
    })
}

/// A Shoot with workers that often use our runtimes, with generated parts.
fn shoot() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(
            (
                proptest::sample::select(&STRINGS[..8]),
                proptest::sample::select(&STRINGS[..8]),
                proptest::collection::vec(
                    (proptest::sample::select(&STRINGS[..2]), json_value()),
                    0..3,
                ),
                json_value(),
            ),
            0..3,
        ),
        json_value(),
    )
        .prop_map(|(workers, noise)| {
            let workers: Vec<Value> = workers
                .into_iter()
                .enumerate()
                .map(|(i, (cri, machine, runtimes, extra))| {
                    let runtimes: Vec<Value> = runtimes
                        .into_iter()
                        .map(|(t, pc)| json!({"type": t, "providerConfig": pc}))
                        .collect();
                    json!({"name": format!("pool-{i}"), "machine": {"type": machine,
                        "image": {"name": "gardenlinux", "version": "1.0"}},
                        "cri": {"name": cri, "containerRuntimes": runtimes}, "extra": extra})
                })
                .collect();
            json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
                "metadata": {"name": "s", "namespace": "garden-p"},
                "spec": {"cloudProfile": {"kind": "CloudProfile", "name": "local"},
                    "provider": {"type": "local", "workers": workers}, "noise": noise}})
        })
}

fn review(object: Value, old: Option<Value>, operation: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0b0e6b4f-8a3b-4b0e-9d5e-000000000001",
            "kind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
            "resource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
            "requestKind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
            "requestResource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
            "name": "s", "namespace": "garden-p", "operation": operation,
            "userInfo": {"username": "owner"}, "object": object, "oldObject": old,
            "dryRun": false}})
}

fn context() -> Context<Garden> {
    Context {
        profiles: Garden,
        rules: Rules::default(),
        metrics: Metrics::default(),
    }
}

/// Answers `body` and checks the answer's shape.
fn check(body: &[u8], uid: Option<&str>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (answer, outcome) = runtime
        .block_on(answer(body, &context()))
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    prop_assert_eq!(&answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    if let Some(uid) = uid {
        prop_assert_eq!(response["uid"].as_str(), Some(uid));
    }
    let allowed = response["allowed"].as_bool();
    prop_assert!(allowed.is_some(), "{answer}");
    prop_assert_eq!(
        allowed == Some(false),
        outcome == "denied",
        "{} {}",
        outcome,
        answer
    );
    if allowed == Some(false) {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        prop_assert!(!message.is_empty(), "a refusal says why: {answer}");
        if let Some(causes) = response["status"]["details"]["causes"].as_array() {
            for cause in causes {
                let field = cause["field"].as_str().unwrap_or_default();
                prop_assert!(field.starts_with("spec."), "{field} in {answer}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(1000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes, None)?;
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        check(value.to_string().as_bytes(), None)?;
    }

    #[test]
    fn reviews_of_generated_shoots(
        object in shoot(),
        old in proptest::option::of(shoot()),
        operation in proptest::sample::select(&["CREATE", "UPDATE", "DELETE", "CONNECT"][..]),
        garbage_object in any::<bool>(),
        garbage in json_value(),
    ) {
        let object = if garbage_object { garbage } else { object };
        let body = review(object, old, operation).to_string();
        check(body.as_bytes(), Some("0b0e6b4f-8a3b-4b0e-9d5e-000000000001"))?;
    }
}
