//! `make bench`: N shoots with M gVisor pools each, created the way gardenlet creates them,
//! reconciled by the product binary's `controller` (a separate process, so its RSS and CPU
//! are its own). Requests are counted from the API server's audit log by user.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use sandbox_api::{
    Cluster, ContainerRuntime, LastOperationState, OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION,
};
use sandbox_testenv::{free_port, gardenlet, http_get};
use serde_json::json;

mod floor;
mod soak;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CONTROLLER_USER: &str = "runtime-sandbox-controller";

#[derive(Parser)]
#[command(about = "Benchmark the ContainerRuntime controller against a local control plane")]
struct Args {
    /// Shoot namespaces (each with a Cluster).
    #[arg(long, default_value_t = 500)]
    shoots: usize,
    /// gVisor worker pools (ContainerRuntimes) per shoot.
    #[arg(long, default_value_t = 2)]
    pools: usize,
    /// The product binary; default: next to this one.
    #[arg(long)]
    controller: Option<PathBuf>,
    /// Parallel creates, like several gardenlet shoot flows at once.
    #[arg(long, default_value_t = 16)]
    parallelism: usize,
    /// Then re-reconcile every ContainerRuntime periodically for this many minutes (0: no soak).
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// The soak's re-reconcile period per object (gardenlet's is an hour; shorter here).
    #[arg(long, default_value_t = 120)]
    soak_period_seconds: u64,
    /// Then this many create/delete cycles of extra pools in the same shoots.
    #[arg(long, default_value_t = 0)]
    cycles: usize,
    /// Size of each Cluster's embedded CloudProfile in KiB (gardenlet embeds the whole
    /// CloudProfile and Seed into every Cluster; real ones are 100 KiB and more).
    #[arg(long, default_value_t = 100)]
    cluster_kib: usize,
    /// Then, after a 35 s settle (the first health round), count the controller's requests
    /// while nothing changes for this many seconds (more than two health sync periods of 30 s).
    #[arg(long, default_value_t = 65)]
    idle_seconds: u64,
    /// At the end, with the controller stopped: the same writes by a bare client (the API
    /// floor; false to skip it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    floor: bool,
}

struct Controller {
    child: Child,
    health: u16,
}

impl Controller {
    fn start(binary: &Path, kubeconfig: &Path) -> Result<Self, Error> {
        let health = free_port()?;
        let metrics = free_port()?;
        let child = Command::new(binary)
            .arg("controller")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--leader-election=false",
                "--log-level=error",
                "--log-format=text",
            ])
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Controller { child, health })
    }

    async fn wait_ready(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        while http_get(self.health, "/readyz").map(|(code, _)| code) != Some(200) {
            if started.elapsed() > Duration::from_secs(120) {
                return Err("controller not ready within 120s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(started.elapsed())
    }

    /// (peak RSS in MiB, CPU seconds) from /proc.
    fn usage(&self) -> Result<(f64, f64), Error> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or("no VmHWM")?;
        Ok((hwm_kib / 1024.0, process_cpu(&pid.to_string())?))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> Result<f64, Error> {
    Ok(
        String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
            .trim()
            .parse()?,
    )
}

/// (busy, total) core-seconds of the whole machine so far, from /proc/stat.
fn machine_cpu() -> Result<(f64, f64), Error> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let idle =
        ticks.get(3).copied().unwrap_or_default() + ticks.get(4).copied().unwrap_or_default();
    let total: f64 = ticks.iter().take(8).sum();
    let hz = clock_ticks()?;
    Ok(((total - idle) / hz, total / hz))
}

/// User + system CPU seconds of a process (`self` or a pid), from /proc.
fn process_cpu(pid: &str) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad stat")?
        .1
        .split_whitespace()
        .collect();
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / clock_ticks()?)
}

/// The controller's requests in the audit log from line `from` on, by verb and resource.
fn controller_request_kinds(log: &Path, from: usize) -> Result<BTreeMap<String, usize>, Error> {
    let mut kinds = BTreeMap::new();
    for r in sandbox_testenv::audit::by_user(log, CONTROLLER_USER, from) {
        *kinds
            .entry(format!("{} {}", r.verb, r.resource_path()))
            .or_insert(0) += 1;
    }
    Ok(kinds)
}

/// The controller's requests in the audit log from line `from` on: (total, writes by resource).
fn controller_requests(
    log: &Path,
    from: usize,
) -> Result<(usize, usize, BTreeMap<String, usize>), Error> {
    let (requests, lines) = sandbox_testenv::audit::read(log, from);
    let mut total = 0;
    let mut writes = BTreeMap::new();
    for r in requests.iter().filter(|r| r.user == CONTROLLER_USER) {
        total += 1;
        if r.is_write() {
            *writes.entry(r.resource_path()).or_insert(0) += 1;
        }
    }
    Ok((total, lines, writes))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A pool's ContainerRuntime with two runsc flags, as gardenlet creates it.
fn runtime(ns: &str, pool: &str) -> ContainerRuntime {
    let provider_config = json!({"apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
        "kind": "GVisorConfiguration", "configFlags": {"net-raw": "true", "platform": "systrap"}});
    let mut cr = gardenlet::container_runtime(ns, pool, Some(provider_config));
    gardenlet::request(&mut cr, "reconcile");
    cr
}

/// Watches all ContainerRuntimes and records when each first reports Succeeded at or after
/// `since`.
fn watch_succeeded(client: Client, since: Timestamp) -> Arc<Mutex<HashMap<String, Instant>>> {
    let done = Arc::new(Mutex::new(HashMap::new()));
    let seen = done.clone();
    tokio::spawn(async move {
        let mut stream = watcher(
            Api::<ContainerRuntime>::all(client),
            watcher::Config::default(),
        )
        .applied_objects()
        .boxed();
        while let Ok(Some(cr)) = stream.try_next().await {
            let ok = cr
                .status
                .as_ref()
                .and_then(|s| s.last_operation.as_ref())
                .is_some_and(|o| {
                    o.state == LastOperationState::Succeeded
                        && o.last_update_time.0.as_second() >= since.as_second()
                })
                && cr.annotations().get(OPERATION_ANNOTATION).is_none();
            if ok {
                let key = format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any());
                seen.lock().unwrap().entry(key).or_insert_with(Instant::now);
            }
        }
    });
    done
}

async fn wait_all(done: &Mutex<HashMap<String, Instant>>, total: usize) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(900);
    while done.lock().unwrap().len() < total {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {total} Succeeded within 15 minutes",
                done.lock().unwrap().len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let binary = match args.controller {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("gardener-extension-runtime-sandbox"),
    };
    let total = args.shoots * args.pools;
    eprintln!("starting the control plane (audit log on)...");
    let cp = sandbox_testenv::ControlPlane::start_audited().await?;
    let client = cp.client().await?;
    let audit = cp.audit_log().ok_or("no audit log")?.to_path_buf();
    let kubeconfig = cp.user_kubeconfig(CONTROLLER_USER, &["system:masters"])?;

    let cloud_profile = gardenlet::cloud_profile(args.cluster_kib);
    let seed = gardenlet::seed();
    let cluster_bytes = serde_json::to_vec(&gardenlet::cluster_with(
        "shoot--bench--s0000",
        json!({}),
        cloud_profile.clone(),
        seed.clone(),
    ))?
    .len();
    eprintln!(
        "creating {} shoot namespaces with Clusters of {:.0} KiB...",
        args.shoots,
        cluster_bytes as f64 / 1024.0
    );
    let namespaces: Vec<String> = (0..args.shoots)
        .map(|i| format!("shoot--bench--s{i:04}"))
        .collect();
    futures::stream::iter(namespaces.clone())
        .map(|ns| {
            let client = client.clone();
            let (cloud_profile, seed) = (cloud_profile.clone(), seed.clone());
            async move {
                let namespace = Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..ObjectMeta::default() }, ..Namespace::default() };
                Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
                let shoot = json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": ns},
                                   "spec": {"kubernetes": {"version": "1.34.2"}}, "status": {"hibernated": false}});
                let cluster = gardenlet::cluster_with(&ns, shoot, cloud_profile, seed);
                Api::<Cluster>::all(client).create(&PostParams::default(), &cluster).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(args.parallelism)
        .try_collect::<Vec<_>>()
        .await?;

    let controller = Controller::start(&binary, &kubeconfig)?;
    controller.wait_ready().await?;
    let (_, audit_start, _) = controller_requests(&audit, 0)?;

    eprintln!("creating {total} ContainerRuntimes as gardenlet does...");
    let since = Timestamp::now();
    let done = watch_succeeded(client.clone(), since);
    let machine_before = machine_cpu()?;
    let bench_before = process_cpu("self")?;
    let started = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(
        namespaces
            .iter()
            .flat_map(|ns| (0..args.pools).map(move |p| (ns.clone(), format!("pool{p}")))),
    )
    .map(|(ns, pool)| {
        let client = client.clone();
        async move {
            let cr = runtime(&ns, &pool);
            Api::<ContainerRuntime>::namespaced(client, &ns)
                .create(&PostParams::default(), &cr)
                .await?;
            Ok::<_, kube::Error>((format!("{ns}/gvisor-{pool}"), Instant::now()))
        }
    })
    .buffer_unordered(args.parallelism)
    .try_collect()
    .await?;
    wait_all(&done, total).await?;
    let all_done = started.elapsed();
    let (machine_busy, machine_all) = {
        let after = machine_cpu()?;
        (after.0 - machine_before.0, after.1 - machine_before.1)
    };
    let bench_cpu = process_cpu("self")? - bench_before;
    let (rss_mib, cpu_seconds) = controller.usage()?;
    let (requests, _, writes) = controller_requests(&audit, audit_start)?;
    let mut latencies: Vec<Duration> = {
        let done = done.lock().unwrap();
        created
            .iter()
            .map(|(k, at)| done[k].saturating_duration_since(*at))
            .collect()
    };
    latencies.sort();

    // A restart relists everything: nothing may be written for objects that are up to date.
    eprintln!("restarting the controller (full relist, no changes)...");
    controller.stop();
    let (_, before_restart, _) = controller_requests(&audit, 0)?;
    let controller = Controller::start(&binary, &kubeconfig)?;
    let ready_after = controller.wait_ready().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, _, restart_writes) = controller_requests(&audit, before_restart)?;

    // gardenlet's periodic reconcile with unchanged input: only the ContainerRuntime itself
    // is written (annotation + status); ManagedResources and Secrets stay untouched.
    eprintln!("re-reconciling every ContainerRuntime with unchanged input...");
    let (_, before_again, _) = controller_requests(&audit, 0)?;
    let since_again = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let done_again = watch_succeeded(client.clone(), since_again);
    futures::stream::iter(created.iter().map(|(k, _)| k.clone()))
        .map(|key| {
            let client = client.clone();
            async move {
                let (ns, name) = key.split_once('/').expect("ns/name");
                let patch = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: "reconcile",
                                   TIMESTAMP_ANNOTATION: Timestamp::now().to_string()}}});
                Api::<ContainerRuntime>::namespaced(client, ns)
                    .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
            }
        })
        .buffer_unordered(args.parallelism)
        .try_collect::<Vec<_>>()
        .await?;
    wait_all(&done_again, total).await?;
    let (requests_again, _, writes_again) = controller_requests(&audit, before_again)?;

    // Nothing changes: what the controller asks the API server for anyway (health checks).
    // First a health round writes each object's first conditions (once); the idle window
    // starts after it.
    eprintln!("settling for 35 s (the first health round writes each object's conditions)...");
    let (_, before_settle, _) = controller_requests(&audit, 0)?;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let settle = controller_request_kinds(&audit, before_settle)?;
    eprintln!("idle for {} s...", args.idle_seconds);
    let (_, before_idle, _) = controller_requests(&audit, 0)?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle = controller_request_kinds(&audit, before_idle)?;

    let keys: Vec<String> = created.iter().map(|(k, _)| k.clone()).collect();
    let soaked = if args.soak_minutes > 0 {
        eprintln!(
            "soak: every ContainerRuntime re-reconciled every {} s for {} minutes...",
            args.soak_period_seconds, args.soak_minutes
        );
        Some(
            soak::soak(
                client.clone(),
                controller.child.id(),
                &keys,
                args.soak_minutes,
                Duration::from_secs(args.soak_period_seconds),
            )
            .await?,
        )
    } else {
        None
    };
    let cycled = if args.cycles > 0 {
        eprintln!("{} create/delete cycles...", args.cycles);
        Some(soak::cycles(client.clone(), &namespaces, args.cycles, args.parallelism).await?)
    } else {
        None
    };
    controller.stop();
    let floor = if args.floor {
        eprintln!(
            "the API floor: the same writes for {total} ContainerRuntimes by a bare client..."
        );
        Some(floor::floor(client.clone(), &namespaces, args.pools, args.parallelism).await?)
    } else {
        None
    };

    let reconciles = total as f64;
    println!(
        "## Controller benchmark: {} shoots x {} gVisor pools = {total} ContainerRuntimes, Clusters of {:.0} KiB\n",
        args.shoots,
        args.pools,
        cluster_bytes as f64 / 1024.0
    );
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| time until all Succeeded | {:.1} s |",
        all_done.as_secs_f64()
    );
    println!(
        "| per-object latency p50 / p99 / max | {:.0} ms / {:.0} ms / {:.0} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("| controller peak RSS | {rss_mib:.1} MiB |");
    println!("| controller CPU (user+system) for the run | {cpu_seconds:.2} s |");
    println!(
        "| machine CPU busy during the run | {:.1} of {:.1} core-seconds ({:.0}%): controller {cpu_seconds:.1}, this benchmark's client {bench_cpu:.1}, the rest (API server, etcd) {:.1} |",
        machine_busy,
        machine_all,
        100.0 * machine_busy / machine_all.max(f64::EPSILON),
        machine_busy - cpu_seconds - bench_cpu
    );
    println!(
        "| API requests per create reconcile | {:.2} |",
        requests as f64 / reconciles
    );
    println!(
        "| API writes per create reconcile | {:.2} ({}) |",
        writes.values().sum::<usize>() as f64 / reconciles,
        fmt_writes(&writes)
    );
    println!(
        "| restart with {total} up-to-date objects: ready after | {:.2} s |",
        ready_after.as_secs_f64()
    );
    println!(
        "| API writes during the no-op resync (restart + relist) | {} |",
        restart_writes.values().sum::<usize>()
    );
    println!(
        "| unchanged re-reconcile: requests / writes per object | {:.2} / {:.2} ({}) |",
        requests_again as f64 / reconciles,
        writes_again.values().sum::<usize>() as f64 / reconciles,
        fmt_writes(&writes_again)
    );
    println!(
        "| first health round (35 s): controller requests | {} ({}) |",
        settle.values().sum::<usize>(),
        fmt_writes(&settle)
    );
    let idle_total: usize = idle.values().sum();
    let idle_rate = idle_total as f64 / args.idle_seconds as f64;
    println!(
        "| idle ({} s, nothing changes): controller requests/s, per 1,000 objects | {idle_rate:.2}, {:.2} ({}) |",
        args.idle_seconds,
        idle_rate * 1000.0 / reconciles,
        if idle.is_empty() {
            "none".to_string()
        } else {
            fmt_writes(&idle)
        }
    );
    if let Some(floor) = floor {
        println!(
            "| API floor: the same creates and writes by a bare client, {} in flight | {:.1} s; ours / floor {:.2} |",
            args.parallelism,
            floor.as_secs_f64(),
            all_done.as_secs_f64() / floor.as_secs_f64()
        );
    }
    if let Some(soaked) = soaked {
        let first = soaked.rss.first().map(|r| r.1).unwrap_or_default();
        let last = soaked.rss.last().map(|r| r.1).unwrap_or_default();
        let max = soaked.rss.iter().map(|r| r.1).fold(0.0, f64::max);
        println!(
            "| soak: {:.1} min of periodic re-reconciles | {} re-reconciles, latency p50 / p99 / max {:.0} / {:.0} / {:.0} ms |",
            soaked.minutes,
            soaked.reconciles,
            percentile(&soaked.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&soaked.latencies, 0.99).as_secs_f64() * 1e3,
            soaked
                .latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        );
        println!(
            "| soak: controller RSS first / last / max, slope after the first minute | {first:.1} / {last:.1} / {max:.1} MiB, {:+.3} MiB per minute ({} samples) |",
            soaked.rss_slope(),
            soaked.rss.len()
        );
        println!(
            "| soak: objects ever seen with an error status | {} {:?} |",
            soaked.errors.len(),
            soaked.errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    if let Some((elapsed, left)) = cycled {
        println!(
            "| {} create/delete cycles: time, objects left (ContainerRuntimes, ManagedResources, Secrets) | {:.1} s, {left} |",
            args.cycles,
            elapsed.as_secs_f64()
        );
        if left > 0 {
            return Err(format!("{left} objects of the cycles were left behind").into());
        }
    }
    Ok(())
}

fn fmt_writes(writes: &BTreeMap<String, usize>) -> String {
    writes
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
