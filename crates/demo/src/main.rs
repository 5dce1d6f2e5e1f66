//! `make demo`: starts etcd + kube-apiserver with Gardener's CRDs, runs the controller in
//! this process, applies `example/` the way gardenlet would, and prints the resulting
//! statuses and the manifests inside the ManagedResource secrets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use sandbox_api::{Cluster, ContainerRuntime, LastOperationState, ManagedResource};
use sandbox_controller::ControllerConfig;
use sandbox_testenv::gardenlet;
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

fn documents(text: &str) -> Result<Vec<Value>, Error> {
    let mut docs = Vec::new();
    for part in text.split("\n---\n") {
        let value: Value = serde_saphyr::from_str(part)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    eprintln!("starting etcd and kube-apiserver with Gardener's CRDs...");
    let cp = sandbox_testenv::ControlPlane::start().await?;
    let client = cp.client().await?;
    println!(
        "kube-apiserver {} at {}\n",
        client.apiserver_version().await?.git_version,
        cp.server_url()
    );

    let controller_client = cp.client().await?;
    let config = ControllerConfig {
        image: "ghcr.io/gardener-extension-runtime-sandbox/node-agent:v0.1.0".into(),
        ..ControllerConfig::default()
    };
    tokio::spawn(sandbox_controller::run(
        controller_client,
        config,
        Arc::new(sandbox_controller::metrics::NoObserver),
        Default::default(),
        std::future::pending(),
    ));

    let example = sandbox_testenv::repo_root().join("example");
    let mut runtimes = Vec::new();
    for file in ["10-cluster.yaml", "20-containerruntimes.yaml"] {
        let text = std::fs::read_to_string(example.join(file))?;
        for doc in documents(&text)? {
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
                    println!("applied Cluster {}", cluster.name_any());
                }
                Some("ContainerRuntime") => {
                    let mut cr: ContainerRuntime = serde_json::from_value(doc)?;
                    // As gardenlet: ask for a reconcile, stamped with the request time.
                    gardenlet::request(&mut cr, "reconcile");
                    let ns = cr.namespace().unwrap_or_default();
                    Api::<ContainerRuntime>::namespaced(client.clone(), &ns)
                        .create(&PostParams::default(), &cr)
                        .await?;
                    println!("applied ContainerRuntime {ns}/{}", cr.name_any());
                    runtimes.push((ns, cr.name_any()));
                }
                other => return Err(format!("{file}: unexpected kind {other:?}").into()),
            }
        }
    }

    println!("\nwaiting for the controller...");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    for (ns, name) in &runtimes {
        let api = Api::<ContainerRuntime>::namespaced(client.clone(), ns);
        loop {
            let cr = api.get(name).await?;
            let state = cr
                .status
                .as_ref()
                .and_then(|s| s.last_operation.as_ref())
                .map(|o| o.state);
            if matches!(
                state,
                Some(LastOperationState::Succeeded | LastOperationState::Error)
            ) || Instant::now() > deadline
            {
                done.push(cr);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    println!("\n== ContainerRuntime status");
    for cr in &done {
        println!(
            "--- {}/{}",
            cr.namespace().unwrap_or_default(),
            cr.name_any()
        );
        println!("finalizers: {:?}", cr.finalizers());
        print!("{}", serde_saphyr::to_string(&cr.status)?);
    }

    let ns = &runtimes[0].0;
    let mrs = Api::<ManagedResource>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    for mr in &mrs.items {
        println!("\n== ManagedResource {ns}/{}", mr.name_any());
        print!(
            "{}",
            serde_saphyr::to_string(
                &serde_json::json!({"metadata": {"labels": mr.labels(), "annotations": mr.annotations()}, "spec": mr.spec})
            )?
        );
        for secret_ref in &mr.spec.secret_refs {
            let secret = secrets.get(&secret_ref.name).await?;
            println!(
                "\n-- Secret {} (immutable: {:?})",
                secret_ref.name, secret.immutable
            );
            for (key, value) in secret.data.unwrap_or_default() {
                println!("# {key}\n{}", String::from_utf8_lossy(&value.0));
            }
        }
    }
    let failed = done.iter().any(|cr| {
        cr.status
            .as_ref()
            .and_then(|s| s.last_operation.as_ref())
            .map(|o| o.state)
            != Some(LastOperationState::Succeeded)
    });
    if failed {
        return Err("not every ContainerRuntime succeeded".into());
    }
    eprintln!("\nall ContainerRuntimes Succeeded; stopping the control plane");
    Ok(())
}
