//! What every subcommand shares: logging, listen addresses, and the shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client from `--kubeconfig`, else the in-cluster configuration.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(kubeconfig).await?)?)
}

/// The configuration [`client`] builds its client from.
pub async fn config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster configuration")?,
    };
    Ok(config)
}

/// Flags every long-running subcommand shares (the Go extensions' names and defaults).
#[derive(clap::Args, Debug)]
pub struct ProcessFlags {
    /// Address of the metrics server.
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Address of the health server.
    #[arg(long, default_value = ":8081")]
    pub health_bind_address: String,
    /// Log level.
    #[arg(long, default_value = "info", value_parser = ["info", "debug", "error"])]
    pub log_level: String,
    /// Log format.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

impl ProcessFlags {
    /// Logging for `crates` (and the binary) at the level and in the format asked for.
    pub fn init_logging(&self, crates: &[&str]) {
        init_logging(&self.log_level, &self.log_format, crates);
    }

    /// The health and metrics addresses.
    pub fn addresses(&self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        Ok((
            bind_address("health-bind-address", &self.health_bind_address)?,
            bind_address("metrics-bind-address", &self.metrics_bind_address)?,
        ))
    }
}

/// Serves `health_router` on `health` and `metrics_router` on `metrics` (one server when the
/// addresses are the same).
pub async fn serve_probes(
    health: SocketAddr,
    health_router: axum::Router,
    metrics: SocketAddr,
    metrics_router: axum::Router,
) -> std::io::Result<()> {
    if health == metrics {
        return sandbox_probes::serve(health, health_router.merge(metrics_router)).await;
    }
    tokio::try_join!(
        sandbox_probes::serve(health, health_router),
        sandbox_probes::serve(metrics, metrics_router)
    )?;
    Ok(())
}

/// `:8080` means every address, as in Go.
pub fn bind_address(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    full.parse()
        .with_context(|| format!("--{flag}={value} is not an address like :8080 or 127.0.0.1:8080"))
}

/// Logs at `level` for our crates (`crates`, plus the binary's own) and warnings for the rest,
/// as JSON or text; `RUST_LOG` overrides the filter.
pub fn init_logging(level: &str, format: &str, crates: &[&str]) {
    let mut directives = vec!["warn".to_string()];
    for name in crates.iter().chain(&["gardener_extension_runtime_sandbox"]) {
        directives.push(format!("{name}={level}"));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives.join(",")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
