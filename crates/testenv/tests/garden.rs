//! The test garden serves Gardener's API through the real gardener-apiserver, aggregated into
//! the garden's kube-apiserver: Gardener's defaulting and validation run, and authorization
//! is delegated back to the kube-apiserver's RBAC for the user the aggregator forwards.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn controller_registrations(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("core.gardener.cloud", "v1beta1", "ControllerRegistration");
    Api::all_with(client, &ApiResource::from_gvk(&gvk))
}

fn registration(name: &str, deployment: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "ControllerRegistration",
        "metadata": {"name": name},
        "spec": {
            "resources": [{"kind": "ContainerRuntime", "type": "gvisor"}],
            "deployment": deployment,
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn gardener_apiserver_serves_gardener_api_groups_through_the_aggregator() {
    let garden = sandbox_testenv::garden::shared();
    let _logs = garden.logs_on_panic();
    let served = garden.group_versions();
    for gv in [
        "core.gardener.cloud/v1beta1",
        "core.gardener.cloud/v1",
        "seedmanagement.gardener.cloud/v1alpha1",
    ] {
        assert!(served.iter().any(|s| s == gv), "{gv} not in {served:?}");
    }
    // The garden has none of the seed's extension CRDs.
    assert!(garden.crds().is_empty(), "{:?}", garden.crds());

    let client = garden.client().await.unwrap();
    let groups = client.list_api_groups().await.unwrap();
    assert!(
        groups
            .groups
            .iter()
            .any(|g| g.name == "core.gardener.cloud"),
        "the kube-apiserver's discovery must list core.gardener.cloud"
    );
}

#[tokio::test]
async fn gardener_defaulting_and_validation_run() {
    let garden = sandbox_testenv::garden::shared();
    let _logs = garden.logs_on_panic();
    let api = controller_registrations(garden.client().await.unwrap());

    // Defaulting by gardener-apiserver: a resource is primary unless it says otherwise, and
    // the deployment policy is OnDemand.
    let created = api
        .create(
            &PostParams::default(),
            &registration("garden-defaults", json!({})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["resources"][0]["primary"], true);
    assert_eq!(created.data["spec"]["deployment"]["policy"], "OnDemand");

    // Validation by gardener-apiserver: an unknown policy is refused, naming the field and
    // the values it supports.
    let error = api
        .create(
            &PostParams::default(),
            &registration("garden-invalid", json!({"policy": "Sometimes"})),
        )
        .await
        .expect_err("an unknown deployment policy must be refused");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.deployment.policy") && status.message.contains("OnDemand"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn the_aggregator_forwards_the_user_and_rbac_decides() {
    let garden = sandbox_testenv::garden::shared();
    let _logs = garden.logs_on_panic();
    // A user without any RBAC binding: gardener-apiserver asks the kube-apiserver (delegated
    // authorization) about the user the front proxy forwarded, and refuses.
    let path = garden
        .user_kubeconfig("garden-nobody", &["garden-testers"])
        .unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let client = sandbox_testenv::client_for(kubeconfig).await.unwrap();
    let api = controller_registrations(client);
    let error = api
        .list(&Default::default())
        .await
        .expect_err("a user without RBAC must not list ControllerRegistrations");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains("garden-nobody"),
        "{}",
        status.message
    );
}
