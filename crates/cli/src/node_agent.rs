//! `node-agent install|uninstall`: the DaemonSet's command on every node of a pool with a
//! sandboxed runtime. What to install comes from the node plan in the pool's ConfigMap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use sandbox_node_agent::agent::Options;
use sandbox_node_agent::daemon::{Daemon, Mode};
use sandbox_node_agent::host::Host;
use sandbox_node_agent::restart::Systemd;
use sandbox_runtime::installation;
use sandbox_runtime::node_plan::{self, NodePlan};

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
    /// Where the host's root file system is mounted.
    #[arg(long, default_value = installation::HOST_ROOT)]
    host_root: PathBuf,
    /// Host folder for the runtime's binaries (the ContainerRuntime's spec.binaryPath).
    #[arg(long, default_value = "/usr/local/bin")]
    binary_path: String,
    /// Folder with the node plan (the pool's ConfigMap, key node-plan.yaml); unused when
    /// NODE_PLAN holds the plan.
    #[arg(long, default_value = installation::CONFIG_DIR)]
    config_dir: PathBuf,
    /// The node plan itself (the cleanup DaemonSet sets it); wins over --config-dir.
    #[arg(long, env = node_plan::PLAN_ENV, hide_env_values = true)]
    node_plan: Option<String>,
    /// Folder with the binaries and their checksums; the plan's image folder when unset.
    #[arg(long)]
    source_dir: Option<PathBuf>,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = installation::HEALTH_BIND_ADDRESS)]
    health_bind_address: String,
    /// This node's name, for the ready label (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// containerd's systemd unit.
    #[arg(long, default_value = "containerd.service")]
    containerd_unit: String,
    /// The host's D-Bus system bus socket (a host path).
    #[arg(long, default_value = installation::DBUS_SOCKET)]
    dbus_socket: String,
    /// Seconds between full runs (re-checks and repairs of the node).
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between cheap checks in between (one CRI status, the configuration read): a
    /// handler that containerd or its configuration lost starts a full run at once.
    #[arg(long, default_value_t = 30)]
    verify_seconds: u64,
    /// Run once, print the report and exit (non-zero on failure).
    #[arg(long)]
    once: bool,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["json", "text"])]
    log_format: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    crate::common::init_logging(&args.log_level, &args.log_format, &["sandbox_node_agent"]);
    let mode = match args.action {
        Action::Install => Mode::Install,
        Action::Uninstall => Mode::Uninstall,
    };
    // A plan this agent cannot read stops it here, before anything on the node changes.
    let plan = match args.node_plan {
        Some(text) => NodePlan::parse(&text)
            .with_context(|| format!("reading the node plan in {}", node_plan::PLAN_ENV))?,
        None => {
            let path = args.config_dir.join(node_plan::FILE_NAME);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading the node plan {} (the pool's ConfigMap)",
                    path.display()
                )
            })?;
            NodePlan::parse(&text).with_context(|| format!("reading {}", path.display()))?
        }
    };
    // The DaemonSet passes what the seed checked; an agent started by hand gets the same rule.
    sandbox_runtime::installation::check_binary_path(
        &args.binary_path,
        plan.binaries.versioned.as_ref().map(|v| v.target.as_str()),
    )
    .map_err(|e| anyhow::anyhow!("--binary-path: {}", e.message))?;
    let host = Host::new(&args.host_root);
    let restarter = Arc::new(Systemd::new(
        host.path(&args.dbus_socket),
        args.containerd_unit.clone(),
    ));
    let mut options = Options::new(host, plan, args.binary_path);
    if let Some(source) = args.source_dir {
        options.source = source;
    }
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
        health: crate::common::bind_address("health-bind-address", &args.health_bind_address)?,
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        verify: Duration::from_secs(args.verify_seconds.max(1)),
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
    daemon.run(crate::common::shutdown_signal()).await?;
    Ok(())
}
