//! `admission`: the garden's Shoot validating webhook (Gardener's
//! `gardener-extension-admission-<name>`), with health, readiness and metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sandbox_probes::Readiness;
use sandbox_runtime::admission::{Capability, Rules};
use sandbox_webhook::admission::{self, Context, GardenApi, Metrics, ServeOptions};
use tracing::info;

use crate::common::{self, ProcessFlags, bind_address, serve_probes, shutdown_signal};

/// Connect and read timeout of the garden client (the API server gives the webhook 10 s).
const GARDEN_TIMEOUT: Duration = Duration::from_secs(4);

/// Flags of the admission webhook; names follow Gardener's admission components.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig of the (virtual) garden, where Shoots and CloudProfiles are (gardener-operator
    /// injects GARDEN_KUBECONFIG); in-cluster configuration when unset.
    #[arg(long, env = "GARDEN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address the webhook server binds to.
    #[arg(long, default_value = "0.0.0.0")]
    webhook_config_server_host: String,
    /// Port of the webhook server.
    #[arg(long, default_value_t = 10250)]
    webhook_config_server_port: u16,
    /// Folder with the serving certificate `tls.crt` and key `tls.key` (a mounted Secret);
    /// changes are picked up while serving.
    #[arg(long)]
    webhook_config_cert_dir: Option<PathBuf>,
    /// The serving certificate (PEM, leaf first); overrides --webhook-config-cert-dir.
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// The serving key (PEM); overrides --webhook-config-cert-dir.
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value_t = 10)]
    cert_reload_period_seconds: u64,
    /// The CloudProfile machine-type capability Kata needs; empty: Kata is admitted on any
    /// machine type.
    #[arg(long, default_value = sandbox_runtime::admission::DEFAULT_VIRTUALIZATION_CAPABILITY)]
    virtualization_capability: String,
    /// The value that capability must include.
    #[arg(long, default_value = sandbox_runtime::admission::DEFAULT_VIRTUALIZATION_VALUE)]
    virtualization_capability_value: String,
    #[command(flatten)]
    process: ProcessFlags,
}

impl Args {
    fn rules(&self) -> Rules {
        Rules {
            virtualization: (!self.virtualization_capability.is_empty()).then(|| Capability {
                name: self.virtualization_capability.clone(),
                value: self.virtualization_capability_value.clone(),
            }),
        }
    }

    fn files(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = self.webhook_config_cert_dir.as_ref();
        let cert = self
            .tls_cert_file
            .clone()
            .or_else(|| dir.map(|d| d.join("tls.crt")))
            .context("--tls-cert-file or --webhook-config-cert-dir is needed")?;
        let key = self
            .tls_private_key_file
            .clone()
            .or_else(|| dir.map(|d| d.join("tls.key")))
            .context("--tls-private-key-file or --webhook-config-cert-dir is needed")?;
        Ok((cert, key))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.process.init_logging(&["sandbox_webhook"]);
    let (health, metrics_addr) = args.process.addresses()?;
    let bind = bind_address(
        "webhook-config-server-host",
        &format!(
            "{}:{}",
            args.webhook_config_server_host, args.webhook_config_server_port
        ),
    )?;
    let (cert_file, key_file) = args.files()?;
    // The garden is read while the API server waits for our answer (10 s): a garden call
    // that hangs must fail well before that, not after kube's default of 295 s.
    let mut config = common::config(args.kubeconfig.as_ref()).await?;
    config.connect_timeout = Some(GARDEN_TIMEOUT);
    config.read_timeout = Some(GARDEN_TIMEOUT);
    config.write_timeout = Some(GARDEN_TIMEOUT);
    let client = kube::Client::try_from(config)?;
    let rules = args.rules();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        ?rules,
        "starting the Shoot admission webhook"
    );

    let metrics = Metrics::default();
    let readiness = Readiness::default();
    let health_router = sandbox_probes::router(readiness.clone(), "no serving certificate yet");
    let metrics_router = admission::metrics_router(metrics.clone());
    let probes = serve_probes(health, health_router, metrics_addr, metrics_router);
    let context = Arc::new(Context {
        profiles: GardenApi(client),
        rules,
        metrics,
    });
    let options = ServeOptions {
        bind,
        cert_file,
        key_file,
        reload_period: Duration::from_secs(args.cert_reload_period_seconds.max(1)),
    };
    tokio::select! {
        served = admission::serve(context, options, readiness, shutdown_signal()) => served?,
        probes = probes => probes.context("health or metrics server")?,
    }
    Ok(())
}
