//! Controller chaos: the product binary's controller (one replica, or two with leader election)
//! against its own kube-apiserver + etcd while gardenlet, simulated, creates, re-reconciles,
//! migrates and restores, and deletes ContainerRuntimes in many shoots, and faults hit at
//! random moments: a controller process SIGKILLed (the leader, when two run) and started again
//! as a kubelet would, kube-apiserver restarted, etcd frozen (SIGSTOP) and thawed.
//! gardener-resource-manager is a stand-in that marks every ManagedResource applied and
//! healthy (the real one is in shoot_e2e.rs; here the subject is the controller under faults).
//!
//! Invariants, checked after every round and at the end:
//! - every gardenlet request converges to what gardenlet waits for (its readiness check,
//!   Migrate Succeeded, or the object gone);
//! - no ContainerRuntime was seen Succeeded while one of its ManagedResources was missing
//!   (checked all along by a watcher, twice-read so that a concurrent change is not blamed);
//! - nothing orphaned: each shoot has exactly the ManagedResources of its live
//!   ContainerRuntimes, every Secret is referenced by one of them, no finalizer is left on a
//!   deleted object, the only Lease is the leader election's, held by a live replica or free;
//! - no hot loop: in a quiet window after each round the controller writes nothing but its
//!   Lease (audit log), and over the whole run its writes stay within a bound per request.
//!
//! Seeded: the seed is printed first (and again on failure); `CHAOS_SEED=<n>` replays the same
//! requests and fault schedule (the timing of processes is the machine's). Without it the seed
//! is fixed (`make test` is reproducible); `make chaos` draws a new one. `CHAOS_SHOOTS`,
//! `CHAOS_ROUNDS` size the run: `make test` runs the short default, `make chaos` a long one.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sandbox_api::{
    Cluster, ContainerRuntime, LastOperationState, LastOperationType, ManagedResource,
    OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION,
};
use sandbox_controller::contract::FINALIZER;
use sandbox_testenv::shoot_builder::{ShootBuilder, pool};
use sandbox_testenv::{ControlPlane, free_port, gardenlet};
use serde_json::{Value, json};

/// The controller's user in the audit log.
const CONTROLLER_USER: &str = "chaos-controller";
const LEASE: &str = "runtime-gvisor-leader-election";
const SHARED_MR: &str = "extension-runtime-gvisor";
const POOLS: [&str; 2] = ["pool-a", "pool-b"];
/// How long one gardenlet request may take under faults (a leader's Lease expires after 15 s,
/// an error backs off exponentially).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// SplitMix64: small, seedable, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed again when the test fails.
struct SeedOnPanic(u64);
impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos failed with seed {0}; replay: CHAOS_SEED={0} make chaos",
                self.0
            );
        }
    }
}

/// Calls `f` until it succeeds (the API server may be restarting or etcd frozen).
async fn retry<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, kube::Error>) -> T {
    sandbox_testenv::eventually_or(120, what, async || f().await.map_err(|e| e.to_string())).await
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The controller replicas, kept running as a kubelet keeps a Deployment's pods running.
struct Replicas {
    args: Vec<String>,
    children: Mutex<Vec<Option<Child>>>,
    logs: std::path::PathBuf,
    /// Exits nobody asked for (e.g. leadership lost while the API server was away).
    self_exits: AtomicU64,
}

impl Replicas {
    fn spawn(&self, slot: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("controller-{slot}.log")))
            .unwrap();
        let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
        Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
            .args(&self.args)
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs `count` replicas (starting or stopping some).
    fn scale(&self, count: usize) {
        let mut children = self.children.lock().unwrap();
        while children.len() > count {
            if let Some(mut child) = children.pop().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        while children.len() < count {
            let slot = children.len();
            children.push(Some(self.spawn(slot)));
        }
    }

    /// Restarts replicas that exited on their own.
    fn keep_running(&self) {
        let mut children = self.children.lock().unwrap();
        for slot in 0..children.len() {
            let exited = match children[slot].as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => false,
            };
            if exited {
                self.self_exits.fetch_add(1, Ordering::SeqCst);
                children[slot] = Some(self.spawn(slot));
            }
        }
    }

    /// SIGKILLs the replica in `slot` (or, with `leader`, the one holding the Lease) and starts
    /// it again after `pause`. Returns the pid killed.
    async fn kill(&self, slot: usize, leader: Option<String>, pause: Duration) -> Option<u32> {
        let pid = {
            let mut children = self.children.lock().unwrap();
            let slot = match leader {
                Some(holder) => children.iter().position(|c| {
                    c.as_ref()
                        .is_some_and(|c| holder.ends_with(&format!("_{}", c.id())))
                })?,
                None => slot % children.len(),
            };
            let mut child = children[slot].take()?;
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            pid
        };
        tokio::time::sleep(pause).await;
        let mut children = self.children.lock().unwrap();
        for slot in 0..children.len() {
            if children[slot].is_none() {
                children[slot] = Some(self.spawn(slot));
            }
        }
        Some(pid)
    }

    fn pids(&self) -> Vec<u32> {
        self.children
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(Child::id)
            .collect()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.scale(0);
    }
}

/// Faults injected, by kind.
#[derive(Default, Debug)]
struct Faults {
    controller_killed: u64,
    leader_killed: u64,
    apiserver_restarted: u64,
    etcd_paused: u64,
}

impl Faults {
    fn total(&self) -> u64 {
        self.controller_killed + self.leader_killed + self.apiserver_restarted + self.etcd_paused
    }
}

/// What gardenlet asks of one shoot in a round.
#[derive(Clone, Copy, Debug)]
enum Request {
    Create,
    Reconcile,
    Delete,
}

/// One shoot's seed namespace and which of its pools run gVisor.
struct ShootState {
    ns: String,
    live: BTreeSet<&'static str>,
}

fn workers(live: &BTreeSet<&'static str>) -> Value {
    Value::Array(
        POOLS
            .iter()
            .map(|p| {
                let runtimes: &[&str] = if live.contains(p) { &["gvisor"] } else { &[] };
                pool(p, runtimes)
            })
            .collect(),
    )
}

fn pool_mr(pool: &str) -> String {
    format!("extension-runtime-gvisor-installation-{pool}")
}

fn cr_name(pool: &str) -> String {
    format!("gvisor-{pool}")
}

/// The gardenlet side, with retries around every call.
struct Gardenlet {
    client: kube::Client,
    /// Where the controller replicas log (their tails go into a failure's message).
    logs: std::path::PathBuf,
}

/// The last lines of every controller replica's log.
fn controller_log_tails(logs: &std::path::Path, lines: usize) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(logs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "--- {} ---\n{}\n",
            file.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        ));
    }
    out
}

impl Gardenlet {
    fn runtimes(&self, ns: &str) -> Api<ContainerRuntime> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn set_workers(&self, ns: &str, live: &BTreeSet<&'static str>) {
        let patch = json!({"spec": {"shoot": {"spec": {"provider": {"workers": workers(live)}}}}});
        let clusters = Api::<Cluster>::all(self.client.clone());
        retry("update the Cluster", async || {
            clusters
                .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        })
        .await;
    }

    async fn annotate(&self, ns: &str, name: &str, operation: &str) -> String {
        let ts = gardenlet::now_annotation();
        let patch = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: operation, TIMESTAMP_ANNOTATION: ts}}});
        let api = self.runtimes(ns);
        retry("annotate", async || {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        })
        .await;
        ts
    }

    /// Creates the ContainerRuntime with `operation` (`reconcile`, or `wait-for-state` on a
    /// migration's destination); a create whose answer was lost counts as done.
    async fn create(&self, ns: &str, pool: &str, operation: &str) -> String {
        let mut cr = gardenlet::container_runtime(
            ns,
            pool,
            Some(json!({
            "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
            "kind": "GVisorConfiguration", "configFlags": {"net-raw": "true"}})),
        );
        let ts = gardenlet::request(&mut cr, operation);
        let api = self.runtimes(ns);
        retry("create", async || {
            match api.create(&PostParams::default(), &cr).await {
                Err(e) if is_code(&e, 409) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
        ts
    }

    async fn delete(&self, ns: &str, name: &str) {
        let patch = json!({"metadata": {"annotations": {
            "confirmation.gardener.cloud/deletion": "true", TIMESTAMP_ANNOTATION: gardenlet::now_annotation()}}});
        let api = self.runtimes(ns);
        retry("confirm deletion", async || {
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Err(e) if is_code(&e, 404) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
        retry("delete", async || {
            match api.delete(name, &DeleteParams::default()).await {
                Err(e) if is_code(&e, 404) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
    }

    /// Waits until `check` holds for the object (None: absent).
    async fn wait(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(Option<&ContainerRuntime>) -> bool,
    ) {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let api = self.runtimes(ns);
        let mut last = None;
        loop {
            if let Ok(cr) = api.get_opt(name).await {
                if check(cr.as_ref()) {
                    return;
                }
                last = Some(cr);
            }
            if Instant::now() >= deadline {
                let seen = last.flatten().map(|cr| {
                    format!("annotations {:?}, finalizers {:?}, deletion {:?}, generation {:?}, status {:?}",
                        cr.metadata.annotations, cr.metadata.finalizers, cr.metadata.deletion_timestamp,
                        cr.metadata.generation, cr.status)
                });
                panic!(
                    "{ns}/{name}: {what} not reached in {REQUEST_TIMEOUT:?}; last seen: {seen:?}\n{}",
                    controller_log_tails(&self.logs, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name}: {what} not reached in {REQUEST_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, ns: &str, name: &str, ts: &str) {
        self.wait(ns, name, "gardenlet's readiness check", |cr| {
            cr.is_some_and(|cr| gardenlet::is_ready(cr, ts))
        })
        .await;
    }

    /// A control plane migration of the whole shoot (every extension object of it at once, as
    /// gardenlet does): migrate each, the source seed's objects go, the destination's appear
    /// waiting for state, then restore each.
    async fn migrate_and_restore(&self, shoot: &ShootState, pools: &[&'static str]) {
        let ns = shoot.ns.as_str();
        futures::future::join_all(pools.iter().map(|pool| async move {
            let name = cr_name(pool);
            self.annotate(ns, &name, "migrate").await;
            self.wait(ns, &name, "Migrate Succeeded, finalizer gone", |cr| {
                cr.is_some_and(|c| {
                    gardenlet::is_migrated(c)
                        && c.metadata
                            .annotations
                            .as_ref()
                            .is_none_or(|a| !a.contains_key(OPERATION_ANNOTATION))
                })
            })
            .await;
        }))
        .await;
        futures::future::join_all(pools.iter().map(|pool| async move {
            let name = cr_name(pool);
            self.delete(ns, &name).await;
            self.wait(ns, &name, "migrated object gone", |cr| cr.is_none())
                .await;
        }))
        .await;
        futures::future::join_all(pools.iter().map(|pool| async move {
            let name = cr_name(pool);
            self.create(ns, pool, "wait-for-state").await;
            let ts = self.annotate(ns, &name, "restore").await;
            self.wait_ready(ns, &name, &ts).await;
        }))
        .await;
    }

    /// Carries out `request` for `pool` of `shoot` and waits as gardenlet does.
    async fn request(&self, shoot: &ShootState, pool: &'static str, request: Request) {
        let (ns, name) = (shoot.ns.as_str(), cr_name(pool));
        match request {
            Request::Create => {
                let ts = self.create(ns, pool, "reconcile").await;
                self.wait_ready(ns, &name, &ts).await;
            }
            Request::Reconcile => {
                let ts = self.annotate(ns, &name, "reconcile").await;
                self.wait_ready(ns, &name, &ts).await;
            }
            Request::Delete => {
                self.delete(ns, &name).await;
                self.wait(ns, &name, "deleted", |cr| cr.is_none()).await;
            }
        }
    }
}

/// gardener-resource-manager, stand-in: every ManagedResource applied, healthy, rolled out
/// for its current generation.
async fn resource_manager(client: kube::Client, stop: Arc<AtomicBool>) {
    let api = Api::<ManagedResource>::all(client.clone());
    while !stop.load(Ordering::SeqCst) {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for mr in list.items {
                let generation = mr.metadata.generation;
                let observed = mr.status.as_ref().and_then(|s| s.observed_generation);
                if observed == generation || mr.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let ns = mr.metadata.namespace.clone().unwrap_or_default();
                let name = mr.metadata.name.clone().unwrap_or_default();
                let patch = json!({"status": {"observedGeneration": generation,
                    "conditions": gardenlet::grm_conditions(None)}});
                let _ = Api::<ManagedResource>::namespaced(client.clone(), &ns)
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Watches for a ContainerRuntime reported Succeeded (create, reconcile, restore; not being
/// deleted, no request pending, generation observed) while one of its ManagedResources is
/// missing. The object is read again after the ManagedResources: only if it did not change in
/// between is a missing one a violation.
async fn succeeded_without_resources(
    client: kube::Client,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    checks: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::SeqCst) {
        for ns in &namespaces {
            let runtimes = Api::<ContainerRuntime>::namespaced(client.clone(), ns);
            let Ok(list) = runtimes.list(&ListParams::default()).await else {
                continue;
            };
            for cr in list.items {
                let Some(op) = cr.status.as_ref().and_then(|s| s.last_operation.as_ref()) else {
                    continue;
                };
                let settled = op.state == LastOperationState::Succeeded
                    && matches!(
                        op.type_,
                        LastOperationType::Create
                            | LastOperationType::Reconcile
                            | LastOperationType::Restore
                    )
                    && cr.metadata.deletion_timestamp.is_none()
                    && cr
                        .metadata
                        .annotations
                        .as_ref()
                        .is_none_or(|a| !a.contains_key(OPERATION_ANNOTATION))
                    && cr.status.as_ref().and_then(|s| s.observed_generation)
                        == cr.metadata.generation;
                if !settled {
                    continue;
                }
                let Ok(mrs) = Api::<ManagedResource>::namespaced(client.clone(), ns)
                    .list(&ListParams::default())
                    .await
                else {
                    continue;
                };
                let present: BTreeSet<String> = mrs
                    .items
                    .iter()
                    .filter(|m| m.metadata.deletion_timestamp.is_none())
                    .filter_map(|m| m.metadata.name.clone())
                    .collect();
                let wanted = [SHARED_MR.to_string(), pool_mr(&cr.spec.worker_pool.name)];
                let missing: Vec<&String> =
                    wanted.iter().filter(|w| !present.contains(*w)).collect();
                checks.fetch_add(1, Ordering::SeqCst);
                if missing.is_empty() {
                    continue;
                }
                let name = cr.metadata.name.clone().unwrap_or_default();
                if let Ok(again) = runtimes.get(&name).await
                    && again.metadata.resource_version == cr.metadata.resource_version
                {
                    violations.lock().unwrap().push(format!(
                        "{ns}/{name} reported {:?} Succeeded while {missing:?} missing",
                        op.type_
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes by the controller in the audit log (not its Lease), from line `from` on: count and
/// the next line to read.
fn controller_writes(audit: &std::path::Path, from: usize) -> (u64, usize, BTreeMap<String, u64>) {
    let (requests, lines) = sandbox_testenv::audit::read(audit, from);
    let mut count = 0;
    let mut by_kind = BTreeMap::new();
    for r in requests
        .iter()
        .filter(|r| r.user == CONTROLLER_USER && r.is_write() && r.resource != "leases")
    {
        count += 1;
        *by_kind
            .entry(format!("{} {}", r.verb, r.resource_path()))
            .or_default() += 1;
    }
    (count, lines, by_kind)
}

/// Nothing orphaned in `shoots`: exactly the live ContainerRuntimes, Succeeded, with their
/// finalizer; exactly their ManagedResources; every Secret referenced; one Lease.
/// Returns how many Secrets are left for gardener-resource-manager's garbage collector.
async fn check_nothing_orphaned(
    client: &kube::Client,
    shoots: &[ShootState],
    system: &str,
    pids: &[u32],
) -> u64 {
    let mut unreferenced = 0;
    for shoot in shoots {
        let ns = &shoot.ns;
        let runtimes: Vec<ContainerRuntime> = retry("list runtimes", async || {
            Api::<ContainerRuntime>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
        })
        .await
        .items;
        let names: BTreeSet<String> = runtimes
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let wanted: BTreeSet<String> = shoot.live.iter().map(|p| cr_name(p)).collect();
        assert_eq!(names, wanted, "{ns}: ContainerRuntimes");
        for cr in &runtimes {
            assert!(
                cr.metadata.deletion_timestamp.is_none(),
                "{ns}: {:?} stuck deleting",
                cr.metadata.name
            );
            assert!(
                cr.metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
                "{ns}: {:?} without finalizer",
                cr.metadata.name
            );
        }
        let mrs: Vec<ManagedResource> = retry("list managed resources", async || {
            Api::<ManagedResource>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
        })
        .await
        .items;
        let mr_names: BTreeSet<String> =
            mrs.iter().filter_map(|m| m.metadata.name.clone()).collect();
        let mut wanted_mrs: BTreeSet<String> = shoot.live.iter().map(|p| pool_mr(p)).collect();
        if !shoot.live.is_empty() {
            wanted_mrs.insert(SHARED_MR.to_string());
        }
        assert_eq!(mr_names, wanted_mrs, "{ns}: ManagedResources");
        let referenced: BTreeSet<String> = mrs
            .iter()
            .flat_map(|m| m.spec.secret_refs.iter().map(|r| r.name.clone()))
            .collect();
        let secrets = retry("list secrets", async || {
            Api::<Secret>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
        })
        .await
        .items;
        let names: BTreeSet<String> = secrets
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let missing: Vec<&String> = referenced.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "{ns}: referenced Secrets missing: {missing:?}"
        );
        // The health check's shoot-access Secret lives exactly as long as the shared
        // ManagedResource whose RBAC gives its token meaning (docs/security.md).
        let shoot_access = "shoot-access-extension-runtime-gvisor".to_string();
        assert_eq!(
            names.contains(&shoot_access),
            mr_names.contains(SHARED_MR),
            "{ns}: the shoot-access Secret and the shared ManagedResource ({SHARED_MR}) come and go together"
        );
        // A Secret nothing references must be one gardener-resource-manager's garbage collector
        // takes (its label): the content a ManagedResource referenced before an update (e.g.
        // the installer's, replaced by the node cleanup's), as in Gardener; or one created just
        // before a controller was killed. Deletion removes a ManagedResource's Secrets first.
        for secret in secrets.iter().filter(|s| {
            s.metadata
                .name
                .as_ref()
                .is_some_and(|n| !referenced.contains(n) && *n != shoot_access)
        }) {
            let labels = secret.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("resources.gardener.cloud/garbage-collectable-reference")
                    .map(String::as_str),
                Some("true"),
                "{ns}: Secret {:?} is referenced by nothing and not garbage-collectable",
                secret.metadata.name
            );
            unreferenced += 1;
        }
    }
    // The only Lease is the leader election's; a killed leader's name stays on it until it
    // expires and a live replica takes it over.
    sandbox_testenv::eventually_or(40, "the Lease held by a live replica", async || {
        let leases = retry("list leases", async || {
            Api::<Lease>::namespaced(client.clone(), system)
                .list(&ListParams::default())
                .await
        })
        .await
        .items;
        let names: Vec<String> = leases
            .iter()
            .filter_map(|l| l.metadata.name.clone())
            .collect();
        assert_eq!(names, [LEASE], "Leases");
        let holder = leases[0]
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder.is_empty() || pids.iter().any(|p| holder.ends_with(&format!("_{p}"))) {
            Ok(())
        } else {
            Err(format!(
                "held by {holder:?}, not by a live replica {pids:?}"
            ))
        }
    })
    .await;
    unreferenced
}

/// The seed of the short run in `make test`: that of the 20-round run in docs/reliability.md.
const FIXED_SEED: u64 = 67_352_352;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_converges_under_faults() {
    // A fixed seed unless told otherwise, so that `make test` is reproducible; `make chaos`
    // passes a new random one each run (and prints it).
    let seed = env_u64("CHAOS_SEED", FIXED_SEED);
    let _seed_on_panic = SeedOnPanic(seed);
    let shoot_count = env_u64("CHAOS_SHOOTS", 6) as usize;
    let rounds = env_u64("CHAOS_ROUNDS", 3);
    println!(
        "chaos seed: {seed} (replay: CHAOS_SEED={seed}); {shoot_count} shoots, {rounds} rounds"
    );
    let mut rng = Rng(seed);
    let started = Instant::now();

    let cp = ControlPlane::start_audited().await.unwrap();
    let audit = cp.audit_log().unwrap().to_path_buf();
    let client = cp.client().await.unwrap();
    let system = cp.namespace(&client, "garden-chaos").await.unwrap();
    let kubeconfig = cp
        .user_kubeconfig(CONTROLLER_USER, &["system:masters"])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let replicas = Arc::new(Replicas {
        args: vec![
            "controller".into(),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-election=true".into(),
            format!("--leader-election-namespace={system}"),
            "--disable-webhooks=kata-devmapper".into(),
            "--health-check-sync-period-seconds=3".into(),
            "--log-format=text".into(),
        ],
        children: Mutex::new(Vec::new()),
        logs: work.path().to_path_buf(),
        self_exits: AtomicU64::new(0),
    });
    replicas.scale(1);
    let cp = Arc::new(tokio::sync::Mutex::new(cp));

    // Shoots as gardenlet writes them: a Cluster each, no runtime yet.
    let gardenlet = Gardenlet {
        client: client.clone(),
        logs: work.path().to_path_buf(),
    };
    let mut shoots = Vec::new();
    for i in 0..shoot_count {
        let ns = cp
            .lock()
            .await
            .namespace(&client, &format!("shoot--chaos--s{i}"))
            .await
            .unwrap();
        let live = BTreeSet::new();
        let shoot = ShootBuilder::new(&format!("s{i}")).workers(workers(&live));
        gardenlet::create_cluster(&client, &ns, shoot.build()).await;
        shoots.push(ShootState { ns, live });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let grm = tokio::spawn(resource_manager(client.clone(), stop.clone()));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let watcher_checks = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(succeeded_without_resources(
        client.clone(),
        shoots.iter().map(|s| s.ns.clone()).collect(),
        stop.clone(),
        violations.clone(),
        watcher_checks.clone(),
    ));
    let keeper = {
        let (replicas, stop) = (replicas.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                replicas.keep_running();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let mut faults = Faults::default();
    let mut requests: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut quiet_writes = 0;
    for round in 0..rounds {
        // Odd rounds run two replicas with leader election.
        let two = round % 2 == 1;
        replicas.scale(if two { 2 } else { 1 });
        // Every shoot gets one request per pool, chosen by the seed, or now and then a
        // migration of its control plane (all its pools at once).
        let mut plan = Vec::new();
        let mut migrations = Vec::new();
        for (s, shoot) in shoots.iter_mut().enumerate() {
            if !shoot.live.is_empty() && rng.below(10) < 2 {
                migrations.push(s);
                continue;
            }
            for pool in POOLS {
                let request = if !shoot.live.contains(pool) {
                    Request::Create
                } else {
                    match rng.below(10) {
                        0..=5 => Request::Reconcile,
                        _ => Request::Delete,
                    }
                };
                plan.push((s, pool, request));
            }
        }
        // The Cluster first, as gardenlet does: a pool that gets gVisor lists it before its
        // ContainerRuntime is created, a pool that loses it no longer lists it when its
        // ContainerRuntime is deleted (so the nodes are cleaned).
        let mut next_live: Vec<BTreeSet<&'static str>> =
            shoots.iter().map(|s| s.live.clone()).collect();
        for (s, pool, request) in &plan {
            match request {
                Request::Create => {
                    next_live[*s].insert(pool);
                }
                Request::Delete => {
                    next_live[*s].remove(pool);
                }
                _ => {}
            }
        }
        for (s, shoot) in shoots.iter().enumerate() {
            gardenlet.set_workers(&shoot.ns, &next_live[s]).await;
        }
        *requests.entry("migrate+restore").or_default() += migrations
            .iter()
            .map(|s| shoots[*s].live.len() as u64)
            .sum::<u64>();
        for (_, _, request) in &plan {
            *requests
                .entry(match request {
                    Request::Create => "create",
                    Request::Reconcile => "reconcile",
                    Request::Delete => "delete",
                })
                .or_default() += 1;
        }

        // Faults while the requests run.
        let fault_seed = rng.next();
        let round_done = Arc::new(AtomicBool::new(false));
        let fault_task = {
            let (cp, replicas, round_done) = (cp.clone(), replicas.clone(), round_done.clone());
            let client = client.clone();
            let system = system.clone();
            tokio::spawn(async move {
                let mut rng = Rng(fault_seed);
                let mut faults = Faults::default();
                tokio::time::sleep(rng.millis(500, 2500)).await;
                while !round_done.load(Ordering::SeqCst) {
                    match rng.below(if two { 4 } else { 3 }) {
                        0 => {
                            let slot = rng.below(2) as usize;
                            if replicas
                                .kill(slot, None, rng.millis(0, 3000))
                                .await
                                .is_some()
                            {
                                faults.controller_killed += 1;
                            }
                        }
                        1 => {
                            cp.lock().await.restart_apiserver().await.unwrap();
                            faults.apiserver_restarted += 1;
                        }
                        2 => {
                            let pause = rng.millis(500, 4000);
                            let cp = cp.lock().await;
                            cp.pause_etcd().unwrap();
                            tokio::time::sleep(pause).await;
                            cp.resume_etcd().unwrap();
                            faults.etcd_paused += 1;
                        }
                        _ => {
                            let holder = Api::<Lease>::namespaced(client.clone(), &system)
                                .get_opt(LEASE)
                                .await
                                .ok()
                                .flatten()
                                .and_then(|l| l.spec?.holder_identity);
                            if let Some(holder) = holder
                                && replicas
                                    .kill(0, Some(holder), rng.millis(0, 3000))
                                    .await
                                    .is_some()
                            {
                                faults.leader_killed += 1;
                            }
                        }
                    }
                    tokio::time::sleep(rng.millis(1000, 6000)).await;
                }
                faults
            })
        };

        let runs = plan
            .iter()
            .map(|(s, pool, request)| gardenlet.request(&shoots[*s], pool, *request));
        let gardenlet_ref = &gardenlet;
        let moves = migrations.iter().map(|s| {
            let pools: Vec<&'static str> = shoots[*s].live.iter().copied().collect();
            let shoot = &shoots[*s];
            async move { gardenlet_ref.migrate_and_restore(shoot, &pools).await }
        });
        futures::future::join(
            futures::future::join_all(runs),
            futures::future::join_all(moves),
        )
        .await;
        round_done.store(true, Ordering::SeqCst);
        let round_faults = fault_task.await.unwrap();
        for (s, shoot) in shoots.iter_mut().enumerate() {
            shoot.live = std::mem::take(&mut next_live[s]);
        }
        println!(
            "round {round} ({} replica(s)): {} requests done at {:?}; faults {round_faults:?}",
            if two { 2 } else { 1 },
            plan.len(),
            started.elapsed()
        );
        faults.controller_killed += round_faults.controller_killed;
        faults.leader_killed += round_faults.leader_killed;
        faults.apiserver_restarted += round_faults.apiserver_restarted;
        faults.etcd_paused += round_faults.etcd_paused;

        // Converged: nothing orphaned; then a quiet window without writes.
        let left = check_nothing_orphaned(&client, &shoots, &system, &replicas.pids()).await;
        println!(
            "round {round}: nothing orphaned ({left} Secret(s) left for the garbage collector)"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, from, _) = controller_writes(&audit, 0);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (writes, _, kinds) = controller_writes(&audit, from);
        assert_eq!(
            writes, 0,
            "round {round}: the controller kept writing in a quiet window: {kinds:?}"
        );
        quiet_writes += writes;
    }

    // The end: gardenlet deletes everything; nothing may stay.
    replicas.scale(1);
    let mut deletions = Vec::new();
    let gardenlet = &gardenlet;
    for shoot in &shoots {
        for pool in shoot.live.iter() {
            deletions.push(async move {
                gardenlet.request(shoot, pool, Request::Delete).await;
            });
        }
    }
    futures::future::join_all(deletions).await;
    for shoot in shoots.iter_mut() {
        shoot.live.clear();
    }
    let left_for_gc = check_nothing_orphaned(&client, &shoots, &system, &replicas.pids()).await;

    stop.store(true, Ordering::SeqCst);
    for task in [grm, watcher, keeper] {
        task.await.unwrap();
    }
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        watcher_checks.load(Ordering::SeqCst) > 0,
        "the Succeeded watcher never checked anything"
    );

    let (writes, _, kinds) = controller_writes(&audit, 0);
    let total_requests: u64 = requests.values().sum::<u64>() + shoots.len() as u64;
    // A request costs the controller at most ~10 writes (finalizer, Secrets, ManagedResources,
    // status twice, annotation, events); a fault can cost every in-flight request a retry.
    let bound = 25 * total_requests + 40 * faults.total();
    println!(
        "chaos done in {:?}: seed {seed}, {rounds} rounds, {shoot_count} shoots, requests {requests:?}, \
         faults {faults:?} ({} in all), controller self-exits {}, invariant violations 0 \
         (Succeeded-watcher checks {}), controller writes {writes} (bound {bound}; {:.1} per request), quiet-window writes {quiet_writes}, Secrets left for the garbage collector {left_for_gc}; \
         writes by kind {kinds:?}",
        started.elapsed(),
        faults.total(),
        replicas.self_exits.load(Ordering::SeqCst),
        watcher_checks.load(Ordering::SeqCst),
        writes as f64 / total_requests as f64,
    );
    assert!(faults.total() > 0, "no fault was injected");
    assert!(
        writes <= bound,
        "{writes} controller writes for {total_requests} requests and {} faults: {kinds:?}",
        faults.total()
    );
}
