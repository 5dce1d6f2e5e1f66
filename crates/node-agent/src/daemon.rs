//! The agent as the DaemonSet runs it: install (or uninstall), label the node, answer
//! `/healthz` and `/readyz`, and re-check periodically so drift (a containerd config rewritten
//! by someone else, a restarted node) is repaired.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::agent::{self, AgentError, Options};
use crate::node;
use crate::restart::Restarter;

/// What the agent does on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Install,
    Uninstall,
}

/// Everything a running agent needs.
pub struct Daemon {
    pub mode: Mode,
    pub options: Options,
    pub restarter: Arc<dyn Restarter>,
    /// The Kubernetes client and this node's name; without them no label is managed.
    pub kube: Option<(kube::Client, String)>,
    pub health: SocketAddr,
    pub resync: Duration,
}

/// Readiness as `/readyz` reports it: the last run verified the wanted state.
#[derive(Clone, Default)]
pub struct Ready(Arc<AtomicBool>);

impl Ready {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst)
    }
}

async fn readyz(State(ready): State<Ready>) -> (StatusCode, &'static str) {
    if ready.get() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the health endpoints on `listener`.
pub async fn serve_health(listener: tokio::net::TcpListener, ready: Ready) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    axum::serve(listener, app).await
}

impl Daemon {
    async fn label(&self, ready: bool) {
        let Some((client, name)) = &self.kube else {
            return;
        };
        match node::set_ready_label(client, name, ready).await {
            Ok(()) => tracing::info!(node = %name, ready, "node label {}", node::NODE_READY_LABEL),
            Err(e) => {
                tracing::error!(node = %name, error = %e, "cannot update the node's ready label")
            }
        }
    }

    /// One run: the wanted state, then the label. Returns whether it was verified.
    pub async fn run_once(&self) -> Result<agent::Report, AgentError> {
        match self.mode {
            Mode::Install => {
                let result = agent::install(&self.options, self.restarter.as_ref()).await;
                // The label follows the verified state: set when runsc works, removed when not.
                self.label(result.is_ok()).await;
                result
            }
            Mode::Uninstall => {
                // No new gVisor pods here from now on, then clean up.
                self.label(false).await;
                agent::uninstall(&self.options, self.restarter.as_ref()).await
            }
        }
    }

    /// Runs until `shutdown` resolves: serves health, applies the mode now and every
    /// `resync`, and reports readiness after each verified run.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let ready = Ready::default();
        let listener = tokio::net::TcpListener::bind(self.health).await?;
        let server = tokio::spawn(serve_health(listener, ready.clone()));
        let work = async {
            loop {
                match self.run_once().await {
                    Ok(report) => {
                        tracing::info!(
                            mode = ?self.mode,
                            binaries = ?report.binaries,
                            files = ?report.files,
                            restarts = report.restarts,
                            elapsed_ms = report.elapsed.as_millis() as u64,
                            "verified"
                        );
                        ready.set(true);
                    }
                    Err(e) => {
                        tracing::error!(mode = ?self.mode, error = %e, "run failed; retrying after the resync interval");
                        ready.set(false);
                    }
                }
                tokio::time::sleep(self.resync).await;
            }
        };
        tokio::select! {
            _ = work => {}
            _ = shutdown => tracing::info!("stopping; the node keeps its runtime (uninstall is a separate run)"),
        }
        server.abort();
        Ok(())
    }
}
