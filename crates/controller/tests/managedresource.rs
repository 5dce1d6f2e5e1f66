//! Writing ManagedResources against the real API server: concurrent writers of the shared
//! ManagedResource (several pools reconciling at once) must all succeed.

use std::collections::BTreeMap;

use futures::future::join_all;
use kube::api::Api;
use sandbox_api::ManagedResource;
use sandbox_controller::managedresource;

#[tokio::test]
async fn concurrent_ensures_of_one_managed_resource_all_succeed() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "mr-race").await.unwrap();
    let data: BTreeMap<String, String> = [(
        "runtimeclass____gvisor.yaml".to_string(),
        "kind: RuntimeClass\n".to_string(),
    )]
    .into();

    for round in 0..3 {
        let name = format!("shared-{round}");
        let results = join_all(
            (0..8)
                .map(|_| managedresource::ensure(&client, &ns, &name, "test", data.clone(), None)),
        )
        .await;
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(failures.is_empty(), "round {round}: {failures:?}");
        let mr = Api::<ManagedResource>::namespaced(client.clone(), &ns)
            .get(&name)
            .await
            .unwrap();
        assert_eq!(mr.spec.secret_refs.len(), 1);
    }
}

/// A ManagedResource that gardener-resource-manager is still deleting is not "ensured" by an
/// update that would vanish with it: an error until it is gone, then it is created anew.
/// Deleting removes its Secrets first, so a controller stopped in between leaves none behind.
#[tokio::test]
async fn a_managed_resource_being_deleted_is_created_again_only_once_gone() {
    use kube::api::{Patch, PatchParams};
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "mr-deleting").await.unwrap();
    let api = Api::<ManagedResource>::namespaced(client.clone(), &ns);
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    let data: BTreeMap<String, String> = [("a.yaml".to_string(), "kind: A\n".to_string())].into();
    managedresource::ensure(&client, &ns, "shared", "test", data.clone(), None)
        .await
        .unwrap();
    let hold = |on: bool| {
        let patch = serde_json::json!({"metadata": {"finalizers": if on {
            serde_json::json!(["resources.gardener.cloud/gardener-resource-manager"]) } else { serde_json::Value::Null }}});
        let api = api.clone();
        async move {
            api.patch("shared", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    };
    hold(true).await;
    let secret = api.get("shared").await.unwrap().spec.secret_refs[0]
        .name
        .clone();
    assert!(
        !managedresource::delete(&client, &ns, "shared")
            .await
            .unwrap()
    );
    assert!(
        secrets.get_opt(&secret).await.unwrap().is_none(),
        "the Secret goes with the deletion, before the object"
    );

    // With the cached copy, and without one (the create meets the terminating object): the same.
    for cached in [Some(api.get("shared").await.unwrap()), None] {
        let err = managedresource::ensure(&client, &ns, "shared", "test", data.clone(), cached)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                sandbox_controller::Error::ManagedResourceDeleting { .. }
            ),
            "{err}"
        );
    }

    hold(false).await;
    assert!(api.get_opt("shared").await.unwrap().is_none());
    managedresource::ensure(&client, &ns, "shared", "test", data, None)
        .await
        .unwrap();
    let mr = api.get("shared").await.unwrap();
    assert!(mr.metadata.deletion_timestamp.is_none());
    assert!(
        secrets
            .get_opt(&mr.spec.secret_refs[0].name)
            .await
            .unwrap()
            .is_some()
    );
}
