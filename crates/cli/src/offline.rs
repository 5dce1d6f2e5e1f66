//! `validate` and `render`: the admission review and the controller's rendering, without a
//! cluster, for GitOps pipelines and reviews. Same code as the webhook and the controller.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use sandbox_api::containerruntime::{ContainerRuntimeSpec, WorkerPool};
use sandbox_api::{CloudProfile, ContainerRuntime, Shoot};
use sandbox_node_agent::containerd::{Schema, drop_in};
use sandbox_runtime::actuator::actuator;
use sandbox_runtime::admission::{self, Capability, Rules};
use sandbox_runtime::image::{DEFAULT_IMAGE_VECTOR, ImageVector};
use serde_json::Value;

/// Where gardenlet tells runtimes to put their binaries.
const BINARY_PATH: &str = "/var/bin/containerruntimes";

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Files with Shoot manifests (YAML, several documents per file allowed; other kinds
    /// are skipped).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The CloudProfile (or NamespacedCloudProfile) the Shoots use; without it only the
    /// runtimes' configuration is checked.
    #[arg(long)]
    cloud_profile: Option<PathBuf>,
    /// As the admission webhook's flag.
    #[arg(long, default_value = admission::DEFAULT_VIRTUALIZATION_CAPABILITY)]
    virtualization_capability: String,
    /// As the admission webhook's flag.
    #[arg(long, default_value = admission::DEFAULT_VIRTUALIZATION_VALUE)]
    virtualization_capability_value: String,
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// A file with the Shoot manifest.
    #[arg(long)]
    shoot: PathBuf,
    /// The worker pool to render.
    #[arg(long)]
    pool: String,
}

/// YAML documents of `path`, as JSON values (empty documents skipped).
fn documents(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{}: not YAML: {e}", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn cloud_profile(path: &PathBuf) -> anyhow::Result<CloudProfile> {
    let doc = documents(path)?
        .into_iter()
        .find(|d| matches!(kind(d), "CloudProfile" | "NamespacedCloudProfile"))
        .with_context(|| format!("{}: no CloudProfile in it", path.display()))?;
    if kind(&doc) == "NamespacedCloudProfile" {
        let namespaced: sandbox_api::shoot::NamespacedCloudProfile =
            serde_json::from_value(doc).context("decoding the NamespacedCloudProfile")?;
        return Ok(CloudProfile {
            metadata: namespaced.metadata,
            spec: namespaced.status.cloud_profile_spec,
        });
    }
    serde_json::from_value(doc).context("decoding the CloudProfile")
}

/// Prints the findings for every Shoot in the files; Err (exit code 1) if any is rejected.
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let rules = Rules {
        virtualization: (!args.virtualization_capability.is_empty()).then(|| Capability {
            name: args.virtualization_capability.clone(),
            value: args.virtualization_capability_value.clone(),
        }),
    };
    let profile = args.cloud_profile.as_ref().map(cloud_profile).transpose()?;
    let (mut shoots, mut rejected) = (0, 0);
    let mut out = String::new();
    for path in &args.files {
        for doc in documents(path)? {
            if kind(&doc) != "Shoot" {
                continue;
            }
            shoots += 1;
            let shoot: Shoot = serde_json::from_value(doc)
                .with_context(|| format!("{}: decoding a Shoot", path.display()))?;
            let name = format!(
                "{}/{}",
                shoot.metadata.namespace.as_deref().unwrap_or("-"),
                shoot.metadata.name.as_deref().unwrap_or("-")
            );
            let verdict = admission::review(&shoot, None, profile.as_ref(), &rules);
            let _ = writeln!(
                out,
                "{}: Shoot {name}: {}",
                path.display(),
                verdict.report()
            );
            if !verdict.allowed() {
                rejected += 1;
            }
        }
    }
    print!("{out}");
    if shoots == 0 {
        bail!("no Shoot in {:?}", args.files);
    }
    if rejected > 0 {
        bail!("{rejected} of {shoots} Shoots rejected");
    }
    Ok(())
}

/// Prints, per runtime of the pool, what lands in the shoot (the ManagedResources' objects)
/// and on the nodes (the node plan: containerd handlers, files, binaries).
pub fn render(args: RenderArgs) -> anyhow::Result<()> {
    let doc = documents(&args.shoot)?
        .into_iter()
        .find(|d| kind(d) == "Shoot")
        .with_context(|| format!("{}: no Shoot in it", args.shoot.display()))?;
    let shoot: Shoot = serde_json::from_value(doc).context("decoding the Shoot")?;
    let worker = shoot.worker(&args.pool).with_context(|| {
        format!(
            "the Shoot has no worker pool {:?}; pools: {}",
            args.pool,
            shoot
                .spec
                .provider
                .workers
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let runtimes: Vec<_> = worker
        .cri
        .iter()
        .flat_map(|cri| &cri.container_runtimes)
        .filter_map(|r| actuator(&r.type_).map(|a| (a, r)))
        .collect();
    if runtimes.is_empty() {
        bail!(
            "worker pool {:?} lists no runtime this extension serves",
            args.pool
        );
    }
    let vector = ImageVector::parse(DEFAULT_IMAGE_VECTOR)?;
    let mut out = String::new();
    for (runtime, entry) in runtimes {
        let image = vector.find(runtime.description().image_name)?.reference();
        let mut cr = ContainerRuntime::new(
            &format!("{}-{}", runtime.description().runtime_type, args.pool),
            ContainerRuntimeSpec {
                type_: runtime.description().runtime_type.into(),
                class: None,
                provider_config: entry.provider_config.clone(),
                binary_path: BINARY_PATH.into(),
                worker_pool: WorkerPool::gardenlet(&args.pool),
            },
        );
        cr.metadata.namespace = Some("shoot--render".into());
        let desired = runtime.desired(&cr, &shoot, &image).map_err(|e| {
            anyhow::anyhow!(
                "{} in pool {:?}: {e}",
                runtime.description().display_name,
                args.pool
            )
        })?;
        let plan = runtime
            .node_plan(entry.provider_config.as_ref(), &image)
            .map_err(|e| anyhow::anyhow!("{}: {e}", runtime.description().display_name))?;
        let _ = writeln!(
            out,
            "# {} in pool {}: in the shoot",
            runtime.description().display_name,
            args.pool
        );
        for content in [&desired.shared, &desired.pool] {
            for (key, objects) in &content.data {
                let _ = writeln!(out, "---\n# ManagedResource {}, {key}", content.name);
                out.push_str(objects);
                if !objects.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        let _ = writeln!(
            out,
            "---\n# {} in pool {}: on each node (the node agent's plan)",
            runtime.description().display_name,
            args.pool
        );
        out.push_str(&plan.to_yaml());
        let _ = writeln!(
            out,
            "---\n# {} in pool {}: containerd's entries as the agent writes them (drop-in, or the same tables in config.toml)",
            runtime.description().display_name,
            args.pool
        );
        let entries = serde_json::json!({
            "dropIn": plan.drop_in,
            "containerd17ConfigVersion2": drop_in(Schema::V2, &plan.handlers, &plan.containerd_imports),
            "containerd2ConfigVersion3": drop_in(Schema::V3, &plan.handlers, &plan.containerd_imports),
        });
        out.push_str(&serde_saphyr::to_string(&entries).context("rendering containerd's entries")?);
        for warning in &desired.warnings {
            let _ = writeln!(out, "# warning: {}", warning.message);
        }
    }
    print!("{out}");
    Ok(())
}
