//! `make demo`: starts etcd + kube-apiserver with Gardener's CRDs, runs the controller in
//! this process, applies `example/` the way gardenlet would (a shoot with a gVisor pool and a
//! Kata pool), and shows at a glance what the product did: each ContainerRuntime's status and
//! health conditions, the RuntimeClasses the shoot gets, the node plan of each pool, and a Shoot
//! with a bad gVisor flag refused by the admission code with its field path. The full
//! manifests go to files it names (`target/demo/`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use sandbox_api::{
    CloudProfile, Cluster, ContainerRuntime, LastOperationState, ManagedResource, Shoot,
};
use sandbox_controller::ControllerConfig;
use sandbox_runtime::admission::{self, Rules};
use sandbox_runtime::node_plan::{self, NodePlan};
use sandbox_testenv::gardenlet;
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

/// The YAML documents of a file, empty ones left out.
fn documents(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Where the full manifests go (`target/demo/` in the checkout).
fn output_dir() -> PathBuf {
    sandbox_testenv::repo_root().join("target/demo")
}

fn step(what: &str) {
    eprintln!("demo: {what}");
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    step("starting etcd and kube-apiserver with Gardener's CRDs (the seed)...");
    let cp = sandbox_testenv::ControlPlane::start().await?;
    let client = cp.client().await?;
    step(&format!(
        "kube-apiserver {} at {} is ready; starting the controller",
        client.apiserver_version().await?.git_version,
        cp.server_url()
    ));

    let config = ControllerConfig {
        // The node-agent image the extension ships (its tag names the gVisor version).
        image: sandbox_runtime::image::ImageVector::parse(
            sandbox_runtime::image::DEFAULT_IMAGE_VECTOR,
        )?
        .find(sandbox_runtime::image::NODE_AGENT_IMAGE)?
        .reference(),
        // Health conditions within seconds rather than at the default 30 s.
        health_sync_period: Duration::from_secs(2),
        ..ControllerConfig::default()
    };
    tokio::spawn(sandbox_controller::run(
        cp.client().await?,
        config,
        Arc::new(sandbox_controller::metrics::NoObserver),
        Default::default(),
        std::future::pending(),
    ));

    let example = sandbox_testenv::repo_root().join("example");
    let mut shoot = None;
    let mut runtimes = Vec::new();
    for file in ["10-cluster.yaml", "20-containerruntimes.yaml"] {
        for doc in documents(&example.join(file))? {
            match doc["kind"].as_str() {
                Some("Cluster") => {
                    let cluster: Cluster = serde_json::from_value(doc)?;
                    let namespace = Namespace {
                        metadata: ObjectMeta {
                            name: Some(cluster.name_any()),
                            labels: Some(
                                [("gardener.cloud/role".to_string(), "shoot".to_string())].into(),
                            ),
                            ..ObjectMeta::default()
                        },
                        ..Namespace::default()
                    };
                    Api::<Namespace>::all(client.clone())
                        .create(&PostParams::default(), &namespace)
                        .await?;
                    Api::<Cluster>::all(client.clone())
                        .create(&PostParams::default(), &cluster)
                        .await?;
                    step(&format!(
                        "applied Cluster {} (example/{file})",
                        cluster.name_any()
                    ));
                    shoot = Some(cluster.spec.shoot.clone());
                }
                Some("ContainerRuntime") => {
                    let mut cr: ContainerRuntime = serde_json::from_value(doc)?;
                    // As gardenlet: ask for a reconcile, stamped with the request time.
                    gardenlet::request(&mut cr, "reconcile");
                    let ns = cr.namespace().unwrap_or_default();
                    Api::<ContainerRuntime>::namespaced(client.clone(), &ns)
                        .create(&PostParams::default(), &cr)
                        .await?;
                    step(&format!(
                        "applied ContainerRuntime {ns}/{} (example/{file})",
                        cr.name_any()
                    ));
                    runtimes.push((ns, cr.name_any()));
                }
                other => return Err(format!("{file}: unexpected kind {other:?}").into()),
            }
        }
    }
    let shoot: Shoot =
        serde_json::from_value(shoot.ok_or("example/10-cluster.yaml has no Cluster")?)?;

    step("waiting for the controller to reconcile and report health...");
    let done = wait_for_runtimes(&client, &runtimes).await?;
    let ns = runtimes[0].0.clone();
    let mrs = Api::<ManagedResource>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    // Every object of every ManagedResource, and the full manifests on disk.
    let out = output_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let mut objects: Vec<(String, Value)> = Vec::new();
    let mut files = Vec::new();
    for mr in &mrs.items {
        let mut text = String::new();
        for secret_ref in &mr.spec.secret_refs {
            let secret = secrets.get(&secret_ref.name).await?;
            for (key, value) in secret.data.unwrap_or_default() {
                let yaml = String::from_utf8_lossy(&value.0).into_owned();
                let _ = writeln!(text, "---\n# Secret {}, {key}\n{yaml}", secret_ref.name);
                for doc in serde_saphyr::from_multiple::<Value>(&yaml)? {
                    if !doc.is_null() {
                        objects.push((mr.name_any(), doc));
                    }
                }
            }
        }
        let file = out.join(format!("managedresource-{}.yaml", mr.name_any()));
        std::fs::write(&file, text)?;
        files.push(file);
    }
    for cr in &done {
        let file = out.join(format!("containerruntime-{}.yaml", cr.name_any()));
        std::fs::write(&file, serde_saphyr::to_string(cr)?)?;
        files.push(file);
    }

    let mut report = String::new();
    summary_shoot(&mut report, &ns, &shoot);
    summary_runtimes(&mut report, &done);
    summary_runtime_classes(&mut report, &objects);
    summary_node_plans(&mut report, &objects)?;
    summary_admission(&mut report, &example)?;
    let _ = writeln!(report, "\n== Full manifests");
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(report, "  target/demo/{name}");
    }
    print!("{report}");

    let failed: Vec<String> = done
        .iter()
        .filter(|cr| state(cr) != Some(LastOperationState::Succeeded))
        .map(|cr| cr.name_any())
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "not every ContainerRuntime succeeded: {}",
            failed.join(", ")
        )
        .into());
    }
    step(&format!(
        "all ContainerRuntimes Succeeded in {:.0} s; stopping the control plane",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn state(cr: &ContainerRuntime) -> Option<LastOperationState> {
    cr.status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .map(|o| o.state)
}

/// Waits until each runtime's last operation is final and its health conditions are written
/// (at most 60 s), and returns them.
async fn wait_for_runtimes(
    client: &kube::Client,
    runtimes: &[(String, String)],
) -> Result<Vec<ContainerRuntime>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    for (ns, name) in runtimes {
        let api = Api::<ContainerRuntime>::namespaced(client.clone(), ns);
        loop {
            let cr = api.get(name).await?;
            let final_state = matches!(
                state(&cr),
                Some(LastOperationState::Succeeded | LastOperationState::Error)
            );
            let conditions = cr.status.as_ref().is_some_and(|s| s.conditions.len() >= 2);
            if (final_state && conditions) || Instant::now() > deadline {
                done.push(cr);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(done)
}

fn summary_shoot(out: &mut String, ns: &str, shoot: &Shoot) {
    let pools: Vec<String> = shoot
        .spec
        .provider
        .workers
        .iter()
        .map(|w| {
            let runtimes: Vec<&str> = w
                .cri
                .iter()
                .flat_map(|c| &c.container_runtimes)
                .map(|r| r.type_.as_str())
                .collect();
            format!("{} ({})", w.name, runtimes.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "\n== Shoot {}/{} in seed namespace {ns}: pools {}",
        shoot.metadata.namespace.as_deref().unwrap_or("-"),
        shoot.metadata.name.as_deref().unwrap_or("-"),
        pools.join(", ")
    );
}

fn summary_runtimes(out: &mut String, runtimes: &[ContainerRuntime]) {
    let _ = writeln!(out, "\n== ContainerRuntimes (status as gardenlet reads it)");
    for cr in runtimes {
        let status = cr.status.as_ref();
        let op = status.and_then(|s| s.last_operation.as_ref());
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<10} {}",
            cr.name_any(),
            op.map(|o| format!("{:?}", o.type_))
                .unwrap_or_else(|| "-".into()),
            op.map(|o| format!("{:?}", o.state))
                .unwrap_or_else(|| "-".into()),
            op.map(|o| o.description.as_str())
                .unwrap_or("no status yet"),
        );
        if let Some(error) = status.and_then(|s| s.last_error.as_ref()) {
            let _ = writeln!(out, "  lastError: {} {:?}", error.description, error.codes);
        }
        for c in status.map(|s| s.conditions.as_slice()).unwrap_or_default() {
            let _ = writeln!(
                out,
                "  {:<24} {:<7} {}: {}",
                c.type_,
                c.status,
                c.reason,
                shorten(&c.message, 110)
            );
        }
    }
    let _ = writeln!(
        out,
        "  (no gardener-resource-manager and no shoot nodes in this demo: the conditions say what they cannot see yet)"
    );
}

fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        return line.to_string();
    }
    format!("{}...", line.chars().take(max).collect::<String>())
}

fn summary_runtime_classes(out: &mut String, objects: &[(String, Value)]) {
    let _ = writeln!(out, "\n== RuntimeClasses in the shoot");
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:<24} NODES (scheduling.nodeSelector)",
        "NAME", "HANDLER", "OVERHEAD"
    );
    for (_, rc) in objects.iter().filter(|(_, o)| o["kind"] == "RuntimeClass") {
        let selector = rc["scheduling"]["nodeSelector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "-".into());
        let overhead = rc["overhead"]["podFixed"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<12} {:<12} {overhead:<24} {selector}",
            rc["metadata"]["name"].as_str().unwrap_or_default(),
            rc["handler"].as_str().unwrap_or_default(),
        );
    }
}

fn summary_node_plans(out: &mut String, objects: &[(String, Value)]) -> Result<(), Error> {
    let _ = writeln!(
        out,
        "\n== Node plans (what the node agent does on each node of a pool)"
    );
    for (mr, cm) in objects.iter().filter(|(_, o)| o["kind"] == "ConfigMap") {
        let Some(text) = cm["data"][node_plan::FILE_NAME].as_str() else {
            continue;
        };
        let plan = NodePlan::parse(text)?;
        let pool = mr.rsplit("-installation-").next().unwrap_or(mr);
        let handlers: Vec<String> = plan
            .handlers
            .iter()
            .map(|h| format!("{} ({})", h.name, h.runtime_type))
            .collect();
        let target = match &plan.binaries.versioned {
            // The version folder, named by the image's tag (gVisor: the gVisor version).
            Some(v) => format!("{}/", v.dir()),
            None => "spec.binaryPath".to_string(),
        };
        let _ = writeln!(out, "pool {pool}, {}:", plan.runtime);
        let _ = writeln!(out, "  containerd handlers: {}", handlers.join(", "));
        let _ = writeln!(
            out,
            "  binaries from {} (checked against {}): {} -> {target}",
            plan.binaries.source,
            plan.binaries.checksums,
            plan.binaries.names.join(", ")
        );
        if !plan.files.is_empty() {
            let files: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
            let _ = writeln!(out, "  files: {}", files.join(", "));
        }
        let _ = writeln!(
            out,
            "  drop-in {} (or the same tables in config.toml); node label {} once loaded",
            plan.drop_in, plan.ready_label
        );
    }
    Ok(())
}

/// The admission code on `example/garden/shoot.yaml` with its gVisor pool's `platform` flag
/// set to a value gVisor does not have.
fn summary_admission(out: &mut String, example: &Path) -> Result<(), Error> {
    let profile_doc = documents(&example.join("garden/cloudprofile.yaml"))?
        .into_iter()
        .next()
        .ok_or("example/garden/cloudprofile.yaml is empty")?;
    let profile: CloudProfile = serde_json::from_value(profile_doc)?;
    let mut doc = documents(&example.join("garden/shoot.yaml"))?
        .into_iter()
        .next()
        .ok_or("example/garden/shoot.yaml is empty")?;
    let flags = doc
        .pointer_mut("/spec/provider/workers/0/cri/containerRuntimes/0/providerConfig/configFlags")
        .and_then(Value::as_object_mut)
        .ok_or("example/garden/shoot.yaml: its first pool has no gVisor configFlags")?;
    flags.insert("platform".into(), "ptrace".into());
    let shoot: Shoot = serde_json::from_value(doc)?;
    let verdict = admission::review(&shoot, None, Some(&profile), &Rules::default());
    let _ = writeln!(
        out,
        "\n== Garden admission: example/garden/shoot.yaml with configFlags.platform: ptrace"
    );
    let _ = writeln!(
        out,
        "Shoot {}/{}: {}",
        shoot.metadata.namespace.as_deref().unwrap_or("-"),
        shoot.metadata.name.as_deref().unwrap_or("-"),
        verdict.report()
    );
    Ok(())
}
