//! What every subcommand shares: logging, listen addresses, and the shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client from `--kubeconfig`, else the in-cluster configuration.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
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
    Ok(kube::Client::try_from(config)?)
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
