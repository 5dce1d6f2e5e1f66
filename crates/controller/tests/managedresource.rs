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
