//! Leader election and heartbeat Leases against the real API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sandbox_controller::heartbeat::{HEARTBEAT_LEASE, heartbeat};
use sandbox_controller::leader_election::LeaderElection;

#[tokio::test]
async fn only_one_leader_and_release_hands_over_at_once() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "leader").await.unwrap();
    let a = LeaderElection::new(
        client.clone(),
        ns.clone(),
        "test-leader-election".into(),
        "a".into(),
    );
    let b = LeaderElection::new(
        client.clone(),
        ns.clone(),
        "test-leader-election".into(),
        "b".into(),
    );

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the Lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b must not take a fresh Lease"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("test-leader-election")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));

    a.release().await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "a released: b takes over without waiting"
    );
    let spec = Api::<Lease>::namespaced(client, &ns)
        .get("test-leader-election")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn an_expired_lease_of_another_holder_is_taken_over() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "expired").await.unwrap();
    let mut old = LeaderElection::new(
        client.clone(),
        ns.clone(),
        "le".into(),
        "go-extension".into(),
    );
    old.lease_duration = Duration::from_secs(1);
    assert!(old.try_acquire_or_renew().await.unwrap());
    let ours = LeaderElection::new(client.clone(), ns.clone(), "le".into(), "rust".into());
    assert!(!ours.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ours.try_acquire_or_renew().await.unwrap(),
        "expired after 1 s"
    );
}

#[tokio::test]
async fn heartbeat_creates_and_renews_its_lease() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "heartbeat").await.unwrap();
    let task = tokio::spawn(heartbeat(
        client.clone(),
        ns.clone(),
        "runtime-gvisor".into(),
        Duration::from_secs(1),
    ));
    let api = Api::<Lease>::namespaced(client, &ns);
    let mut renewals = Vec::new();
    for _ in 0..50 {
        if let Some(lease) = api.get_opt(HEARTBEAT_LEASE).await.unwrap() {
            let spec = lease.spec.unwrap();
            assert_eq!(spec.holder_identity.as_deref(), Some("runtime-gvisor"));
            assert_eq!(spec.lease_duration_seconds, Some(1));
            let t = spec.renew_time.unwrap().0;
            if renewals.last() != Some(&t) {
                renewals.push(t);
            }
            if renewals.len() >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    assert!(renewals.len() >= 2, "the lease was renewed: {renewals:?}");
}
