//! The soak and create/delete cycles of `controller-bench` (`make soak`): gardenlet's periodic
//! re-reconcile of every ContainerRuntime for minutes, with the controller's RSS sampled (its
//! slope says whether memory grows with time), the re-reconcile latency, and every error status
//! seen; then create/delete cycles in the same shoots, after which none of their objects may be
//! left.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use sandbox_api::{
    ContainerRuntime, LastOperationState, ManagedResource, OPERATION_ANNOTATION,
    TIMESTAMP_ANNOTATION,
};
use serde_json::json;

use crate::Error;

/// What the soak measured.
pub struct Soak {
    pub minutes: f64,
    pub reconciles: usize,
    pub latencies: Vec<Duration>,
    /// (minutes since start, RSS MiB).
    pub rss: Vec<(f64, f64)>,
    /// Objects seen with an Error or a lastError.
    pub errors: BTreeSet<String>,
}

impl Soak {
    /// Least-squares slope of RSS over time after the first minute (MiB per minute).
    pub fn rss_slope(&self) -> f64 {
        let points: Vec<(f64, f64)> = self
            .rss
            .iter()
            .copied()
            .filter(|(t, _)| *t >= 1.0)
            .collect();
        let n = points.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
        });
        if den == 0.0 { 0.0 } else { num / den }
    }
}

/// Resident memory of `pid` in MiB.
pub fn rss_mib(pid: u32) -> Result<f64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// Re-annotates every object in `keys` (`ns/name`) once per `period`, spread evenly, for
/// `minutes`, as gardenlet's periodic shoot reconciles do; measures each until Succeeded.
pub async fn soak(
    client: Client,
    controller_pid: u32,
    keys: &[String],
    minutes: u64,
    period: Duration,
) -> Result<Soak, Error> {
    let pending: Arc<Mutex<HashMap<String, (Timestamp, Instant)>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let errors: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let watch = {
        let (pending, latencies, errors) = (pending.clone(), latencies.clone(), errors.clone());
        let client = client.clone();
        tokio::spawn(async move {
            let mut stream = watcher(
                Api::<ContainerRuntime>::all(client),
                watcher::Config::default(),
            )
            .applied_objects()
            .boxed();
            while let Ok(Some(cr)) = stream.try_next().await {
                let key = format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any());
                let Some(status) = cr.status.as_ref() else {
                    continue;
                };
                let Some(op) = status.last_operation.as_ref() else {
                    continue;
                };
                if op.state == LastOperationState::Error || status.last_error.is_some() {
                    errors.lock().unwrap().insert(key.clone());
                }
                if op.state != LastOperationState::Succeeded
                    || cr.annotations().contains_key(OPERATION_ANNOTATION)
                {
                    continue;
                }
                let mut pending = pending.lock().unwrap();
                if let Some((requested, at)) = pending.get(&key).copied()
                    && op.last_update_time.0.as_second() >= requested.as_second()
                {
                    pending.remove(&key);
                    latencies.lock().unwrap().push(at.elapsed());
                }
            }
        })
    };

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut rss = Vec::new();
    let mut reconciles = 0;
    let ticks = period.as_secs().max(1);
    let mut tick = 0u64;
    while Instant::now() < end {
        let due: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % ticks == tick % ticks)
            .map(|(_, k)| k.clone())
            .collect();
        reconciles += due.len();
        futures::stream::iter(due)
            .map(|key| {
                let (client, pending) = (client.clone(), pending.clone());
                async move {
                    let (ns, name) = key.split_once('/').expect("ns/name");
                    let now = Timestamp::now();
                    pending.lock().unwrap().insert(key.clone(), (now, Instant::now()));
                    let patch = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: "reconcile",
                        TIMESTAMP_ANNOTATION: now.to_string()}}});
                    Api::<ContainerRuntime>::namespaced(client, ns)
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        if tick.is_multiple_of(5) {
            rss.push((
                started.elapsed().as_secs_f64() / 60.0,
                rss_mib(controller_pid)?,
            ));
        }
        tick += 1;
        let next = started + Duration::from_secs(tick);
        tokio::time::sleep_until(next.into()).await;
    }
    // The last requests finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    let unfinished = pending.lock().unwrap().len();
    if unfinished > 0 {
        return Err(format!("{unfinished} re-reconciles did not finish").into());
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let errors = errors.lock().unwrap().clone();
    Ok(Soak {
        minutes: started.elapsed().as_secs_f64() / 60.0,
        reconciles,
        latencies,
        rss,
        errors,
    })
}

/// `cycles` create/delete cycles of a ContainerRuntime for pool `cycle-<n>` spread over
/// `namespaces` (as gardenlet adds a pool with gVisor and removes it again), `parallelism` at
/// once; then counts what is left of them: ContainerRuntimes, ManagedResources, Secrets.
pub async fn cycles(
    client: Client,
    namespaces: &[String],
    cycles: usize,
    parallelism: usize,
) -> Result<(Duration, usize), Error> {
    let started = Instant::now();
    futures::stream::iter(0..cycles)
        .map(|i| {
            let client = client.clone();
            let ns = namespaces[i % namespaces.len()].clone();
            async move {
                let pool = format!("cycle-{}", i / namespaces.len());
                let api = Api::<ContainerRuntime>::namespaced(client, &ns);
                let cr = crate::runtime(&ns, &pool);
                let name = cr.name_any();
                let requested = Timestamp::now();
                api.create(&PostParams::default(), &cr).await?;
                wait(&api, &name, |cr| {
                    cr.is_some_and(|cr| sandbox_testenv::gardenlet::is_ready(cr, &requested.to_string()))
                })
                .await?;
                let patch = json!({"metadata": {"annotations": {"confirmation.gardener.cloud/deletion": "true"}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                api.delete(&name, &Default::default()).await?;
                wait(&api, &name, |cr| cr.is_none()).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(parallelism)
        .try_collect::<Vec<_>>()
        .await?;
    let elapsed = started.elapsed();
    let mut left = 0;
    for ns in namespaces {
        left += cycle_objects::<ContainerRuntime>(&client, ns).await?
            + cycle_objects::<ManagedResource>(&client, ns).await?
            + cycle_objects::<Secret>(&client, ns).await?;
    }
    Ok((elapsed, left))
}

/// How many objects of kind `K` in `ns` the create/delete cycles left (their names say `cycle-`).
async fn cycle_objects<K>(client: &Client, ns: &str) -> Result<usize, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let list = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|o| o.name_any().contains("cycle-"))
        .count())
}

async fn wait(
    api: &Api<ContainerRuntime>,
    name: &str,
    check: impl Fn(Option<&ContainerRuntime>) -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if check(api.get_opt(name).await?.as_ref()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name}: not done within 300 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
