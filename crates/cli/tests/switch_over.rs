//! The switch-over from the Go gVisor extension, against the real thing: the Go extension
//! (pinned in hack/versions.env, built from its Go module) and ours run beside each other with
//! leader election on, as during a rollout that replaces one with the other. Only one may
//! reconcile at a time, in both directions, with the Lease fields and timings of
//! controller-runtime's resource lock (15 s lease, 2 s retry).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use sandbox_api::ContainerRuntime;
use sandbox_testenv::{free_port, gardenlet, http_get};
use serde_json::json;

/// The Go extension's Lease (`LeaderElectionNameID("runtime-gvisor")`), also our default.
const LEASE: &str = "runtime-gvisor-leader-election";

struct Process(Child);
impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}
impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn go_extension(kubeconfig: &Path, namespace: &str, log: &Path) -> Process {
    let binary = sandbox_testenv::Tool::GvisorExtension
        .path()
        .unwrap()
        .join("gardener-extension-runtime-gvisor");
    let log = std::fs::File::create(log).unwrap();
    Process(
        Command::new(binary)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-election=true")
            .arg(format!("--leader-election-namespace={namespace}"))
            .arg(format!(
                "--metrics-bind-address=127.0.0.1:{}",
                free_port().unwrap()
            ))
            .arg(format!(
                "--health-bind-address=127.0.0.1:{}",
                free_port().unwrap()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Ours with default leader election settings (only the namespace given); returns the process
/// and its metrics port (health and metrics on one port).
fn ours(kubeconfig: &Path, namespace: &str) -> (Process, u16) {
    let port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
        .args(["controller", "--log-format=text"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env("LEADER_ELECTION_NAMESPACE", namespace)
        .arg(format!("--health-bind-address=127.0.0.1:{port}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (Process(child), port)
}

async fn lease(api: &Api<Lease>) -> Option<(String, i32, i32)> {
    let spec = api.get_opt(LEASE).await.unwrap()?.spec?;
    Some((
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
        spec.lease_duration_seconds.unwrap_or_default(),
    ))
}

/// Waits up to `within` for a holder that `accept` likes; returns it and how long it took.
async fn wait_holder(
    api: &Api<Lease>,
    within: Duration,
    accept: impl Fn(&str) -> bool,
) -> ((String, i32, i32), Duration) {
    let started = Instant::now();
    loop {
        if let Some(l) = lease(api).await
            && accept(&l.0)
        {
            return (l, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no matching Lease holder within {within:?}: {:?}",
            lease(api).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reconciles(port: u16) -> u64 {
    let (_, body) = http_get(port, "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("runtime_sandbox_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn only_one_of_go_and_ours_reconciles_and_each_takes_over_from_the_other() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let system = cp.namespace(&client, "extension-switch").await.unwrap();
    let shoot_ns = cp.namespace(&client, "shoot--switch").await.unwrap();
    let leases = Api::<Lease>::namespaced(client.clone(), &system);
    let kubeconfig = cp.kubeconfig_path();
    let work = tempfile::tempdir().unwrap();
    let go_log = work.path().join("go.log");

    // The Go extension holds the Lease.
    let mut go = go_extension(kubeconfig, &system, &go_log);
    let ((go_id, transitions, duration), _) =
        wait_holder(&leases, Duration::from_secs(60), |h| !h.is_empty()).await;
    assert_eq!(duration, 15, "controller-runtime's lease duration");

    // Ours starts beside it, and a shoot with gVisor appears.
    let (mut ours, port) = ours(kubeconfig, &system);
    gardenlet::create_cluster(
        &client,
        &shoot_ns,
        // This minimal Shoot, not ShootBuilder's complete one: the test needs the request still
        // pending when ours takes over, and the Go extension completes it for a complete Shoot.
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "switch"}, "spec": {"provider": {"workers": [
                {"name": "pool-a", "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}}]}},
            "status": {"lastOperation": {"type": "Reconcile", "state": "Succeeded"}}}),
    )
    .await;
    let mut cr = gardenlet::container_runtime(&shoot_ns, "pool-a", None);
    gardenlet::request(&mut cr, "reconcile");
    let runtimes = Api::<ContainerRuntime>::namespaced(client.clone(), &shoot_ns);
    runtimes.create(&PostParams::default(), &cr).await.unwrap();

    // Ours is up once it answers /healthz (on a loaded machine that takes a moment after the
    // spawn; the test binaries run side by side).
    let up = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/healthz").is_none() {
        assert!(Instant::now() < up, "ours never answered /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // For longer than a lease: ours serves health but does not reconcile, Go keeps the Lease.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        assert_eq!(
            lease(&leases).await.unwrap().0,
            go_id,
            "ours took the Lease from a live holder"
        );
        assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));
        assert_eq!(
            http_get(port, "/readyz").map(|(c, _)| c),
            Some(503),
            "ours started its controller"
        );
        assert_eq!(
            reconciles(port),
            0,
            "ours reconciled while Go held the Lease"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Go dies without releasing: ours takes over once the lease expired (15 s + a 2 s retry).
    go.kill();
    let ((ours_id, ours_transitions, ours_duration), took) =
        wait_holder(&leases, Duration::from_secs(25), |h| {
            !h.is_empty() && h != go_id
        })
        .await;
    println!("ours became leader {took:?} after the Go extension was killed");
    assert!(took <= Duration::from_secs(18), "took {took:?}");
    assert_eq!(
        ours_transitions,
        transitions + 1,
        "a takeover counts as a transition"
    );
    assert_eq!(ours_duration, 15);
    // And now it reconciles: the pending request is served by ours.
    let started = Instant::now();
    while reconciles(port) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ours never reconciled as leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The other direction: Go starts while ours holds the Lease, and must wait.
    let go_log2 = work.path().join("go-2.log");
    let _go = go_extension(kubeconfig, &system, &go_log2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        assert_eq!(
            lease(&leases).await.unwrap().0,
            ours_id,
            "Go took the Lease from ours"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Ours stops (SIGTERM releases the Lease): Go takes over at its next retry, not after 15 s.
    ours.terminate();
    let ((go2_id, go2_transitions, _), took) = wait_holder(&leases, Duration::from_secs(10), |h| {
        !h.is_empty() && h != ours_id
    })
    .await;
    println!("the Go extension became leader {took:?} after ours released the Lease");
    assert_ne!(go2_id, go_id, "a new Go process");
    assert_eq!(go2_transitions, ours_transitions + 1);
    // Go says so itself (klog flushes its buffer every 5 s).
    let started = Instant::now();
    loop {
        let go_says = std::fs::read_to_string(&go_log2).unwrap();
        if go_says
            .to_lowercase()
            .contains("successfully acquired lease")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{go_says}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
