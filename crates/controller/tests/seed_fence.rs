//! The chart's admission policy fences the controller's ServiceAccount: with the chart's own
//! token on a real API server, every way a stolen token could chain its grants into seed admin
//! is refused, and what the controller really writes is admitted (the contract tests run under
//! the same policy). docs/security.md, threat S1.

mod common;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use sandbox_api::ManagedResource;
use sandbox_testenv::chart;
use serde_json::{Value, json};

fn secret(name: &str, type_: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "type": type_,
        "stringData": {"k": "v"}}))
    .unwrap()
}

fn managed_resource(name: &str, spec: Value) -> ManagedResource {
    serde_json::from_value(json!({"apiVersion": "resources.gardener.cloud/v1alpha1",
        "kind": "ManagedResource", "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

/// The policy's refusal: 403 from the ValidatingAdmissionPolicy, with its message.
fn refused_by_policy<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e))
            if e.code == 403 && e.message.contains("ValidatingAdmissionPolicy") =>
        {
            println!("refused: {what}: {}", e.message);
            e.message
        }
        other => panic!("{what}: expected the policy's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stolen_controller_token_cannot_chain_its_grants_into_seed_admin() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let admin = cp.client().await.unwrap();
    let (_, kubeconfig) = chart::install_identity(cp, &[]).await.unwrap();
    let stolen = sandbox_testenv::client_for(kubeconfig).await.unwrap();
    let shoot_ns = cp.namespace(&admin, "shoot--fence").await.unwrap();
    let other_ns = cp.namespace(&admin, "fence-other").await.unwrap();
    let secrets = |ns: &str| Api::<Secret>::namespaced(stolen.clone(), ns);
    let mrs = |ns: &str| Api::<ManagedResource>::namespaced(stolen.clone(), ns);
    let pp = PostParams::default();

    // The attack of the review: a token Secret named `gardener` in kube-system for a powerful
    // ServiceAccount, to be read back with the `get gardener` grant.
    let mut token = secret("gardener", "kubernetes.io/service-account-token");
    token.metadata.annotations = Some(
        [(
            "kubernetes.io/service-account.name".into(),
            "generic-garbage-collector".into(),
        )]
        .into(),
    );
    token.string_data = None;
    refused_by_policy(
        "token Secret gardener in kube-system",
        secrets("kube-system").create(&pp, &token).await,
    );
    // Each rule on its own.
    refused_by_policy(
        "Opaque Secret gardener in kube-system",
        secrets("kube-system")
            .create(&pp, &secret("gardener", "Opaque"))
            .await,
    );
    refused_by_policy(
        "our prefix outside a shoot namespace",
        secrets(&other_ns)
            .create(
                &pp,
                &secret(
                    "managedresource-extension-runtime-gvisor-0123abcd",
                    "Opaque",
                ),
            )
            .await,
    );
    let message = refused_by_policy(
        "a foreign name in a shoot namespace",
        secrets(&shoot_ns)
            .create(&pp, &secret("gardener", "Opaque"))
            .await,
    );
    assert!(message.contains("only its own Secrets"), "{message}");
    let message = refused_by_policy(
        "a token Secret with our prefix",
        secrets(&shoot_ns)
            .create(&pp, &{
                let mut s = token.clone();
                s.metadata.name = Some("managedresource-extension-runtime-gvisor-0123abcd".into());
                s
            })
            .await,
    );
    assert!(message.contains("only Opaque"), "{message}");
    refused_by_policy(
        "a TLS Secret with our prefix",
        secrets(&shoot_ns)
            .create(
                &pp,
                &serde_json::from_value::<Secret>(json!({
                    "metadata": {"name": "managedresource-extension-runtime-gvisor-0123abcd"},
                    "type": "kubernetes.io/tls",
                    "stringData": {"tls.crt": "x", "tls.key": "y"}}))
                .unwrap(),
            )
            .await,
    );
    refused_by_policy(
        "a foreign Secret in our own namespace",
        secrets(chart::RELEASE_NAMESPACE)
            .create(&pp, &secret("gardener", "Opaque"))
            .await,
    );

    // Deletes only of ours: gardenlet's kubeconfig Secret in the shoot namespace stays.
    Api::<Secret>::namespaced(admin.clone(), &shoot_ns)
        .create(&pp, &secret("gardener", "Opaque"))
        .await
        .unwrap();
    refused_by_policy(
        "deleting gardenlet's Secret",
        secrets(&shoot_ns)
            .delete("gardener", &DeleteParams::default())
            .await,
    );
    assert!(
        Api::<Secret>::namespaced(admin.clone(), &shoot_ns)
            .get_opt("gardener")
            .await
            .unwrap()
            .is_some()
    );

    // ManagedResources: a seed-class one, a foreign name, one outside a shoot namespace, one
    // that applies somebody else's Secret; deleting a foreign one.
    let ours_spec =
        json!({"secretRefs": [{"name": "managedresource-extension-runtime-gvisor-0123abcd"}]});
    let message = refused_by_policy("a class: seed ManagedResource", mrs(&shoot_ns).create(&pp, &managed_resource("extension-runtime-gvisor", json!({
        "class": "seed", "secretRefs": [{"name": "managedresource-extension-runtime-gvisor-0123abcd"}]}))).await);
    assert!(message.contains("never to the seed"), "{message}");
    refused_by_policy(
        "a foreign ManagedResource name",
        mrs(&shoot_ns)
            .create(
                &pp,
                &managed_resource(
                    "shoot-core-gardener-resource-manager",
                    json!({"secretRefs": []}),
                ),
            )
            .await,
    );
    refused_by_policy(
        "a ManagedResource outside a shoot namespace",
        mrs(&other_ns)
            .create(
                &pp,
                &managed_resource("extension-runtime-gvisor", ours_spec.clone()),
            )
            .await,
    );
    refused_by_policy(
        "a ManagedResource applying a foreign Secret",
        mrs(&shoot_ns)
            .create(
                &pp,
                &managed_resource(
                    "extension-runtime-gvisor",
                    json!({"secretRefs": [{"name": "gardener"}]}),
                ),
            )
            .await,
    );
    let foreign = managed_resource("shoot-core-namespaces", json!({"secretRefs": []}));
    Api::<ManagedResource>::namespaced(admin.clone(), &shoot_ns)
        .create(&pp, &foreign)
        .await
        .unwrap();
    refused_by_policy(
        "deleting a foreign ManagedResource",
        mrs(&shoot_ns)
            .delete("shoot-core-namespaces", &DeleteParams::default())
            .await,
    );

    // What the controller does write is admitted: its content Secret and ManagedResource,
    // both deleted again, and a scoped shoot-access Secret.
    secrets(&shoot_ns)
        .create(
            &pp,
            &secret(
                "managedresource-extension-runtime-gvisor-0123abcd",
                "Opaque",
            ),
        )
        .await
        .unwrap();
    mrs(&shoot_ns)
        .create(
            &pp,
            &managed_resource("extension-runtime-gvisor", ours_spec),
        )
        .await
        .unwrap();
    mrs(&shoot_ns)
        .delete("extension-runtime-gvisor", &DeleteParams::default())
        .await
        .unwrap();
    secrets(&shoot_ns)
        .delete(
            "managedresource-extension-runtime-gvisor-0123abcd",
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    secrets(&shoot_ns)
        .create(
            &pp,
            &secret("shoot-access-extension-runtime-gvisor", "Opaque"),
        )
        .await
        .unwrap();

    // The fence is the controller's alone: an administrator is not bound by it.
    Api::<Secret>::namespaced(admin.clone(), &other_ns)
        .create(
            &pp,
            &secret(
                "managedresource-extension-runtime-gvisor-0123abcd",
                "Opaque",
            ),
        )
        .await
        .unwrap();
}
