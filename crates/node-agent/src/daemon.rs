//! The agent as the DaemonSet runs it: install (or uninstall), label the node, answer
//! `/healthz` and `/readyz`, and re-check periodically so drift (a containerd config rewritten
//! by someone else, a restarted node) is repaired.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sandbox_probes::Readiness;
use sandbox_runtime::node_plan::NodeReport;

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
    /// Time between full runs.
    pub resync: Duration,
    /// Time between cheap checks ([`agent::drift`]) in between: a handler missing from
    /// containerd or from the files starts a full run at once.
    pub verify: Duration,
}

impl Daemon {
    /// Sets the plan's ready label from `report` and each handler's from `handlers` (a
    /// handler without an entry shares `report`); `None` removes them all.
    async fn label(&self, report: Option<NodeReport>, handlers: &[agent::LabelState]) {
        let Some((client, name)) = &self.kube else {
            return;
        };
        let plan = &self.options.plan;
        let handler_reports: Vec<(String, Option<NodeReport>)> = plan
            .handlers
            .iter()
            .filter_map(|h| h.ready_label.clone())
            .map(|label| {
                let own = handlers.iter().find(|s| s.label == label);
                let state = match (&report, own) {
                    (Some(r), Some(s)) if r.ready => Some(match &s.ready {
                        Ok(()) => NodeReport::ready(),
                        Err(missing) => NodeReport::failed(&missing.reason, &missing.message),
                    }),
                    (other, _) => other.clone(),
                };
                (label, state)
            })
            .collect();
        let mut labels: Vec<(&str, Option<&NodeReport>)> =
            vec![(plan.ready_label.as_str(), report.as_ref())];
        labels.extend(
            handler_reports
                .iter()
                .map(|(l, r)| (l.as_str(), r.as_ref())),
        );
        let ready: Vec<&str> = labels
            .iter()
            .filter(|(_, r)| r.is_some_and(|r| r.ready))
            .map(|(l, _)| *l)
            .collect();
        match node::set_labels(client, name, &labels).await {
            Ok(()) => tracing::info!(node = %name, ?ready, "node labels updated"),
            Err(e) => {
                tracing::error!(node = %name, error = %e, "cannot update the node's ready labels")
            }
        }
    }

    /// One run: the wanted state, then the label. Returns whether it was verified.
    pub async fn run_once(&self) -> Result<agent::Report, AgentError> {
        match self.mode {
            Mode::Install => {
                let result = agent::install(&self.options, self.restarter.as_ref()).await;
                // The label follows the verified state: set when the runtime works, removed when
                // not; the state annotation says why.
                let (report, handlers) = match &result {
                    Ok(r) => (
                        NodeReport::ready().with_version(r.version.clone()),
                        r.labels.clone(),
                    ),
                    Err(e) => (NodeReport::failed(e.reason(), &e.to_string()), Vec::new()),
                };
                self.label(Some(report), &handlers).await;
                result
            }
            Mode::Uninstall => {
                // No new sandboxed pods here from now on, then clean up.
                self.label(None, &[]).await;
                let result = agent::uninstall(&self.options, self.restarter.as_ref()).await;
                // Not done (e.g. sandboxes still run on the runtime): why, in the state
                // annotation, with the label still off.
                if let Err(e) = &result {
                    self.label(Some(NodeReport::failed(e.reason(), &e.to_string())), &[])
                        .await;
                }
                result
            }
        }
    }

    /// Waits for the next full run: `resync`, or earlier when a check every `verify` finds a
    /// handler gone. A handler containerd no longer runs takes the ready label off at once
    /// (with the reason), until the run that follows has repaired and verified it.
    async fn until_next_run(&self, ready: &Readiness) {
        let started = tokio::time::Instant::now();
        loop {
            let left = self.resync.saturating_sub(started.elapsed());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(self.verify)).await;
            if self.mode != Mode::Install || started.elapsed() >= self.resync {
                continue;
            }
            match agent::drift(&self.options).await {
                Ok(agent::Drift::None) => {}
                Ok(agent::Drift::NotLoaded(handler)) => {
                    let message = format!(
                        "containerd runs without handler {handler} (restarted after its configuration lost it?); repairing"
                    );
                    tracing::warn!(%handler, "{message}");
                    ready.set(false);
                    self.label(Some(NodeReport::failed("HandlerMissing", &message)), &[])
                        .await;
                    return;
                }
                Ok(agent::Drift::NotConfigured) => {
                    tracing::warn!(
                        "containerd's configuration lost a handler of ours (another writer re-wrote it); repairing before containerd restarts"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "check between runs failed; running now");
                    return;
                }
            }
        }
    }

    /// Runs until `shutdown` resolves: serves health, applies the mode now and every
    /// `resync`, and reports readiness after each verified run. A run that has started is
    /// never cut short by `shutdown` (SIGTERM): it may be rolling back a containerd restart
    /// that failed, and stopping then would leave containerd down with the configuration it
    /// failed on. The agent stops once that run is over; waits between runs end at once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        // `/readyz` is 200 while the last run verified the wanted state.
        let ready = Readiness::default();
        let listener = tokio::net::TcpListener::bind(self.health).await?;
        let router = sandbox_probes::router(ready.clone(), "not ready");
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
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
                        // Verified; handlers this host cannot run (their labels stay off) are
                        // named with the reason, as in the node's state annotations.
                        let mut detail: Vec<String> = report
                            .version
                            .iter()
                            .map(|v| format!("{} {v}", self.options.plan.runtime))
                            .collect();
                        detail.extend(
                            report
                                .labels
                                .iter()
                                .filter_map(|l| l.ready.as_ref().err().map(|m| (l, m)))
                                .map(|(l, m)| {
                                    format!("{}: {}: {}", l.handler, m.reason, m.message)
                                }),
                        );
                        ready.set_with(true, detail.join("\n"));
                    }
                    Err(e) => {
                        tracing::error!(mode = ?self.mode, error = %e, "run failed; retrying after the resync interval");
                        ready.set(false);
                    }
                }
                if *stopping.borrow() {
                    break;
                }
                // An uninstall that could not finish (sandboxes still run on the runtime) is
                // tried again every `verify`, so the pool's cleanup ends soon after the last
                // such pod, not a whole resync later.
                let retry_soon = self.mode == Mode::Uninstall && !ready.is_ready();
                tokio::select! {
                    _ = async {
                        if retry_soon {
                            tokio::time::sleep(self.verify).await
                        } else {
                            self.until_next_run(&ready).await
                        }
                    } => {}
                    _ = stopping.changed() => break,
                }
            }
        };
        let signal = async {
            shutdown.await;
            tracing::info!(
                "stopping once the current run is over; the node keeps its runtime (uninstall is a separate run)"
            );
            let _ = stop.send(true);
        };
        tokio::pin!(work, signal);
        // The signal only asks; the work loop ends at its next safe point.
        tokio::select! {
            _ = &mut work => {}
            _ = &mut signal => work.await,
        }
        server.abort();
        Ok(())
    }
}
