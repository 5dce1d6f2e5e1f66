//! `make demo`: starts a local etcd + kube-apiserver with Gardener's CRDs and shows what is
//! served. With `--hold` it keeps running (until Ctrl-C) so you can point kubectl at it.

use std::path::PathBuf;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::discovery::Discovery;

#[derive(Parser)]
#[command(about = "Start a local control plane with Gardener's CRDs and show them served")]
struct Args {
    /// Keep the control plane running until Ctrl-C.
    #[arg(long)]
    hold: bool,
    /// Also copy the admin kubeconfig here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    eprintln!("starting etcd and kube-apiserver...");
    let cp = sandbox_testenv::ControlPlane::start().await?;
    let client = cp.client().await?;
    let version = client.apiserver_version().await?;
    println!("kube-apiserver {} is ready", version.git_version);
    println!("server: {}", cp.server_url());
    println!("data:   {}", cp.root().display());

    println!("\nGardener CRDs installed:");
    println!(
        "{:<55} {:<12} {:<10} ESTABLISHED",
        "NAME", "SCOPE", "VERSIONS"
    );
    let crds = Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for crd in &crds.items {
        let versions: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        println!(
            "{:<55} {:<12} {:<10} {}",
            crd.metadata.name.as_deref().unwrap_or_default(),
            crd.spec.scope,
            versions.join(","),
            sandbox_testenv::is_established(crd),
        );
    }

    println!("\nServed by API discovery:");
    let discovery = Discovery::new(client.clone())
        .filter(&["extensions.gardener.cloud", "resources.gardener.cloud"])
        .run()
        .await?;
    let mut served = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            let mut subresources: Vec<&str> = caps
                .subresources
                .iter()
                .map(|(r, _)| r.plural.as_str())
                .collect();
            subresources.sort_unstable();
            served.push(format!(
                "  {}/{} {} (subresources: {})",
                resource.group,
                resource.version,
                resource.plural,
                if subresources.is_empty() {
                    "-".to_string()
                } else {
                    subresources.join(",")
                }
            ));
        }
    }
    served.sort();
    for line in served {
        println!("{line}");
    }

    if let Some(out) = &args.kubeconfig_out {
        std::fs::copy(cp.kubeconfig_path(), out)?;
        println!("\nkubeconfig written to {}", out.display());
    }
    if args.hold {
        println!(
            "\nRunning. Try: KUBECONFIG={} kubectl get crds\nPress Ctrl-C to stop.",
            args.kubeconfig_out
                .as_deref()
                .unwrap_or(cp.kubeconfig_path())
                .display()
        );
        tokio::signal::ctrl_c().await?;
    }
    eprintln!("stopping the control plane");
    Ok(())
}
