//! `node-agent install|uninstall`: the DaemonSet's command on every node of a gVisor pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use sandbox_node_agent::agent::Options;
use sandbox_node_agent::daemon::{Daemon, Mode};
use sandbox_node_agent::host::Host;
use sandbox_node_agent::restart::Systemd;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    /// Install and verify the runtime, label the node, keep it so.
    Install,
    /// Remove the runtime and the label.
    Uninstall,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// What to do on this node.
    #[arg(value_enum)]
    action: Action,
    /// The runtime (only gvisor so far).
    #[arg(long, default_value = "gvisor")]
    runtime: String,
    /// Where the host's root file system is mounted.
    #[arg(long, default_value = "/host")]
    host_root: PathBuf,
    /// Host folder for the runtime's binaries (the ContainerRuntime's spec.binaryPath).
    #[arg(long, default_value = "/usr/local/bin")]
    binary_path: String,
    /// Folder with the rendered runsc.toml (the pool's ConfigMap).
    #[arg(long, default_value = "/etc/runtime-sandbox")]
    config_dir: PathBuf,
    /// Folder in the image with the binaries and their SHA256SUMS.
    #[arg(long, default_value = "/usr/local/lib/runtime-sandbox/gvisor")]
    source_dir: PathBuf,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = ":8081")]
    health_bind_address: String,
    /// This node's name, for the ready label (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// containerd's systemd unit.
    #[arg(long, default_value = "containerd.service")]
    containerd_unit: String,
    /// The host's D-Bus system bus socket (a host path).
    #[arg(long, default_value = "/run/dbus/system_bus_socket")]
    dbus_socket: String,
    /// Seconds between re-checks of the node.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Run once, print the report and exit (non-zero on failure).
    #[arg(long)]
    once: bool,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "warn,sandbox_node_agent={0},gardener_extension_runtime_sandbox={0}",
            args.log_level
        )))
        .init();
    if args.runtime != "gvisor" {
        bail!(
            "--runtime={} is not supported; allowed: gvisor",
            args.runtime
        );
    }
    let mode = match args.action {
        Action::Install => Mode::Install,
        Action::Uninstall => Mode::Uninstall,
    };
    let runsc_toml = match mode {
        Mode::Install => {
            let path = args.config_dir.join("runsc.toml");
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (the pool's ConfigMap)", path.display()))?
        }
        Mode::Uninstall => String::new(),
    };
    let host = Host::new(&args.host_root);
    let restarter = Arc::new(Systemd::new(
        host.path(&args.dbus_socket),
        args.containerd_unit.clone(),
    ));
    let options = Options::gvisor(host, args.source_dir, args.binary_path, runsc_toml);
    let kube = match args.node_name {
        Some(name) => Some((
            kube::Client::try_default()
                .await
                .context("no Kubernetes client for the node label (in-cluster or KUBECONFIG)")?,
            name,
        )),
        None => {
            tracing::warn!("no --node-name/NODE_NAME: the node's ready label is not managed");
            None
        }
    };
    let daemon = Daemon {
        mode,
        options,
        restarter,
        kube,
        health: crate::controller::bind_address("health-bind-address", &args.health_bind_address)?,
        resync: Duration::from_secs(args.resync_seconds.max(1)),
    };
    if args.once {
        let report = daemon.run_once().await?;
        println!(
            "verified: binaries={:?} files={:?} restarts={} elapsed_ms={}",
            report.binaries,
            report.files,
            report.restarts,
            report.elapsed.as_millis()
        );
        return Ok(());
    }
    daemon.run(crate::controller::shutdown_signal()).await?;
    Ok(())
}
