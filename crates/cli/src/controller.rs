//! `controller`: wires flags, logging, the Kubernetes client, leader election, heartbeat,
//! health and metrics around `sandbox_controller::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ArgAction;
use sandbox_controller::heartbeat::heartbeat;
use sandbox_controller::leader_election::LeaderElection;
use sandbox_controller::metrics::{self, Metrics};
use sandbox_controller::{ControllerConfig, Error as ControllerError};
use sandbox_probes::Readiness;
use sandbox_runtime::image::{DEFAULT_IMAGE_VECTOR, ImageVector, NODE_AGENT_IMAGE};
use sandbox_runtime::osc::InstallationMode;
use tracing::{error, info, warn};

use crate::common::{ProcessFlags, bind_address, client, serve_probes, shutdown_signal};

/// Flags of the controller; names and defaults follow Gardener's Go extensions.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig of the seed; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Whether to use leader election.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader election Lease. The default is the Go gVisor extension's
    /// (`LeaderElectionNameID("runtime-gvisor")`), so during a switch-over only one of the two
    /// reconciles.
    #[arg(long, default_value = "runtime-gvisor-leader-election")]
    leader_election_id: String,
    /// Namespace of the leader election Lease; defaults to the pod's namespace. The Go
    /// extension's chart sets `LEADER_ELECTION_NAMESPACE`, which is read here too.
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// How many ContainerRuntimes are reconciled at once.
    #[arg(long, default_value_t = 5)]
    max_concurrent_reconciles: u16,
    /// Reconcile on generation changes instead of gardenlet's operation annotation.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    ignore_operation_annotation: bool,
    /// Extension classes served, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "shoot")]
    extension_classes: Vec<String>,
    /// Namespace of the heartbeat Lease; no heartbeat when unset.
    #[arg(long)]
    heartbeat_namespace: Option<String>,
    /// Renew interval of the heartbeat Lease.
    #[arg(long, default_value_t = 30)]
    heartbeat_renew_interval_seconds: u64,
    /// How often the health conditions on each ContainerRuntime are refreshed (Gardener's
    /// extensions default to 30 s).
    #[arg(long, default_value_t = 30)]
    health_check_sync_period_seconds: u64,
    /// The shoot's API server as seen from the seed, for the health check's node-reader token;
    /// `{namespace}` stands for the shoot namespace.
    #[arg(long, default_value = sandbox_controller::shoot_access::DEFAULT_SERVER)]
    shoot_api_server: String,
    #[command(flatten)]
    process: ProcessFlags,
    /// Version of the Gardener that deployed us (informational).
    #[arg(long)]
    gardener_version: Option<String>,
    /// How the seed's API server reaches the webhook: `service` (our Service in
    /// --webhook-config-namespace) or `url` (--webhook-config-url, when running outside).
    #[arg(long, default_value = "service", value_parser = ["service", "url"])]
    webhook_config_mode: String,
    /// `host:port` the API server calls in `url` mode.
    #[arg(long)]
    webhook_config_url: Option<String>,
    /// Namespace of the webhook's Service and certificate Secrets; the pod's by default.
    #[arg(long, env = "WEBHOOK_CONFIG_NAMESPACE")]
    webhook_config_namespace: Option<String>,
    /// Port of our Service the API server calls in `service` mode.
    #[arg(long, default_value_t = 443)]
    webhook_config_service_port: u16,
    /// Address the webhook server binds to.
    #[arg(long, default_value = "0.0.0.0")]
    webhook_config_server_host: String,
    /// Port of the webhook server.
    #[arg(long, default_value_t = 10250)]
    webhook_config_server_port: u16,
    /// How often the webhook's certificates and registration are checked and renewed when due.
    #[arg(long, default_value_t = 300)]
    webhook_config_sync_period_seconds: u64,
    /// How the runtimes reach the nodes: `daemonset` (the installer DaemonSet's node agent)
    /// or `osc` (the pools' OperatingSystemConfigs, applied by gardener-node-agent before the
    /// kubelet starts; needs the OSC webhook). docs/operations.md, "Installation modes".
    #[arg(long, default_value = "daemonset", value_parser = ["daemonset", "osc"])]
    installation_mode: String,
    /// Webhooks to switch off (comma-separated): `kata-devmapper`. A disabled webhook is
    /// deregistered.
    #[arg(long, value_delimiter = ',', value_parser = ["kata-devmapper"])]
    disable_webhooks: Vec<String>,
}

/// The webhook server's options, or None when it is disabled.
fn webhook_options(
    args: &Args,
    install: sandbox_webhook::osc::Install,
) -> anyhow::Result<Option<sandbox_webhook::Options>> {
    use sandbox_webhook::registration::{Config, Mode};
    if args.disable_webhooks.iter().any(|w| w == "kata-devmapper") {
        if install.mode == InstallationMode::Osc {
            bail!("--installation-mode=osc needs the OSC webhook: do not disable kata-devmapper");
        }
        return Ok(None);
    }
    let mode = match args.webhook_config_mode.as_str() {
        "url" => Mode::Url {
            host_port: args
                .webhook_config_url
                .clone()
                .context("--webhook-config-mode=url needs --webhook-config-url")?,
        },
        _ => Mode::Service {
            port: args.webhook_config_service_port,
        },
    };
    let Some(namespace) = args.webhook_config_namespace.clone().or_else(own_namespace) else {
        // Outside a cluster without a namespace for its Secrets (a developer's `make start`):
        // nothing could reach a Service-mode webhook anyway. The chart always passes one.
        warn!(
            "the webhook is not served: no --webhook-config-namespace and no pod namespace \
             (run with --webhook-config-mode=url --webhook-config-url=HOST:PORT \
             --webhook-config-namespace=NS to serve it from outside the cluster)"
        );
        return Ok(None);
    };
    let bind = bind_address(
        "webhook-config-server-host/port",
        &format!(
            "{}:{}",
            args.webhook_config_server_host, args.webhook_config_server_port
        ),
    )?;
    Ok(Some(sandbox_webhook::Options {
        registration: Config {
            mode,
            namespace,
            installation: install.mode,
        },
        install,
        bind,
        renew_period: Duration::from_secs(args.webhook_config_sync_period_seconds.max(1)),
    }))
}

/// Our image vector with the operator's `IMAGEVECTOR_OVERWRITE` applied.
fn image_vector() -> anyhow::Result<ImageVector> {
    let mut vector = ImageVector::parse(DEFAULT_IMAGE_VECTOR)?;
    if let Some(path) = std::env::var_os("IMAGEVECTOR_OVERWRITE") {
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading IMAGEVECTOR_OVERWRITE {}",
                PathBuf::from(&path).display()
            )
        })?;
        vector = vector.overwritten_by(ImageVector::parse(&text)?);
    }
    Ok(vector)
}

fn own_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok().or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// `/healthz` and `/readyz` on `health`, `/metrics` on `metrics_addr` (may be the same).
async fn serve(
    health: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> std::io::Result<()> {
    serve_probes(
        health,
        sandbox_probes::router(readiness, "cache not synced"),
        metrics_addr,
        metrics::router(metrics),
    )
    .await
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.process
        .init_logging(&["sandbox_controller", "sandbox_webhook"]);
    let (health, metrics_addr) = args.process.addresses()?;
    let vector = image_vector()?;
    let image = vector.find(NODE_AGENT_IMAGE)?.reference();
    let mut images = std::collections::BTreeMap::new();
    let mut pinned = std::collections::BTreeMap::new();
    for actuator in sandbox_runtime::actuator::ACTUATORS {
        let name = actuator.description().image_name;
        let source = vector.find(name)?;
        images.insert(name.to_string(), source.reference());
        pinned.insert(name.to_string(), source.binaries.clone());
        // Said once at start, where an operator looks: what protects the nodes' root binaries.
        if !source.pinned_by_digest() || source.binaries.is_empty() {
            warn!(
                image = name,
                reference = %source.reference(),
                pinned_by_digest = source.pinned_by_digest(),
                binaries_recorded = !source.binaries.is_empty(),
                "the image vector neither pins this image by digest nor records its binaries' checksums: whoever can push its tag ships root binaries to every node (docs/security.md)"
            );
        }
    }
    let client = client(args.kubeconfig.as_ref()).await?;
    info!(version = env!("CARGO_PKG_VERSION"), gardener_version = args.gardener_version.as_deref().unwrap_or("unknown"), %image, "starting the controller");

    let mode: InstallationMode = args
        .installation_mode
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let install = sandbox_webhook::osc::Install {
        mode,
        images: images
            .iter()
            .map(|(name, image)| {
                let pins = pinned.get(name).cloned().unwrap_or_default();
                (name.clone(), (image.clone(), pins))
            })
            .collect(),
    };
    info!(installation_mode = %mode, "runtimes reach the nodes through {}", match mode {
        InstallationMode::DaemonSet => "the installer DaemonSets",
        InstallationMode::Osc => "the pools' OperatingSystemConfigs",
    });
    let webhook = match webhook_options(&args, install)? {
        Some(options) => tokio::spawn(sandbox_webhook::run(
            client.clone(),
            options,
            shutdown_signal(),
        )),
        None => {
            sandbox_webhook::registration::deregister(&client).await?;
            info!("webhooks disabled; the webhook configuration is removed");
            tokio::spawn(std::future::pending())
        }
    };

    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let server = tokio::spawn(serve(
        health,
        metrics_addr,
        metrics.clone(),
        readiness.clone(),
    ));
    if let Some(namespace) = args.heartbeat_namespace.clone() {
        tokio::spawn(heartbeat(
            client.clone(),
            namespace,
            "runtime-gvisor".into(),
            Duration::from_secs(args.heartbeat_renew_interval_seconds.max(1)),
        ));
    }

    let config = ControllerConfig {
        extension_classes: args.extension_classes.clone(),
        ignore_operation_annotation: args.ignore_operation_annotation,
        max_concurrent_reconciles: args.max_concurrent_reconciles.max(1),
        image,
        images,
        pinned,
        health_sync_period: std::time::Duration::from_secs(
            args.health_check_sync_period_seconds.max(1),
        ),
        shoot_api_server: args.shoot_api_server.clone(),
        installation_mode: mode,
        ..ControllerConfig::default()
    };

    let election = if args.leader_election {
        let Some(namespace) = args
            .leader_election_namespace
            .clone()
            .or_else(own_namespace)
        else {
            bail!("leader election needs --leader-election-namespace (or POD_NAMESPACE)");
        };
        let identity = format!(
            "{}_{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".into()),
            std::process::id()
        );
        let election = LeaderElection::new(
            client.clone(),
            namespace,
            args.leader_election_id.clone(),
            identity,
        );
        tokio::select! {
            result = election.acquire() => result?,
            _ = shutdown_signal() => return Ok(()),
        }
        Some(election)
    } else {
        None
    };

    let controller = sandbox_controller::run(client, config, metrics, readiness, shutdown_signal());
    let lost: ControllerError = tokio::select! {
        () = controller => {
            if let Some(e) = &election { e.release().await; }
            info!("stopped");
            return Ok(());
        }
        lost = async { match &election { Some(e) => e.keep().await, None => std::future::pending().await } } => lost,
        result = server => bail!("the health/metrics server stopped: {result:?}"),
        result = webhook => bail!("the webhook server stopped: {result:?}"),
    };
    error!(error = %lost, "lost leadership; exiting");
    Err(lost.into())
}
