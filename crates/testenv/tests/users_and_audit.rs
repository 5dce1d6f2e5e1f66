//! Extra users are authenticated but authorized by RBAC only, and the audit log records who
//! did what (benchmarks count the controller's requests with it).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox_testenv::ControlPlane;

#[tokio::test]
async fn a_user_without_rbac_is_forbidden_and_audited() {
    let cp = ControlPlane::start_audited().await.unwrap();
    let _logs = cp.logs_on_panic();
    let path = cp.user_kubeconfig("alice", &["developers"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let alice = kube::Client::try_from(config).unwrap();
    let err = Api::<Namespace>::all(alice)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );

    let entry = sandbox_testenv::audit::by_user(cp.audit_log().unwrap(), "alice", 0)
        .into_iter()
        .next()
        .expect("alice's request is in the audit log");
    assert_eq!(entry.verb, "list");
    assert_eq!(entry.resource, "namespaces");
    assert_eq!(entry.code, 403);
    assert_eq!(entry.groups[0], "developers");
}
