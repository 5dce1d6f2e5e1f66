//! Restarting containerd. On a node that is the host's systemd, reached over D-Bus through
//! the host's `/run/dbus` (no `nsenter`, no privileged pod); tests plug in their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;

/// Why containerd could not be restarted.
#[derive(Debug, thiserror::Error)]
#[error("restarting containerd: {0}")]
pub struct RestartError(pub String);

/// Restarts containerd. The agent waits for containerd to answer afterwards, so an
/// implementation may return as soon as the restart was requested.
pub trait Restarter: Send + Sync {
    fn restart(&self) -> BoxFuture<'_, Result<(), RestartError>>;
}

/// The host's systemd over its D-Bus system bus: `RestartUnit(unit, "replace")`, then wait
/// for the job's `JobRemoved` signal, as `systemctl restart` does. `RestartUnit` answers as
/// soon as the job is queued; asking containerd before the job is done would reach the old
/// process and verify the old configuration.
#[derive(Clone, Debug)]
pub struct Systemd {
    socket: PathBuf,
    unit: String,
    job_timeout: Duration,
}

/// How long a restart job may take (systemd's default stop timeout is 90 s).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

impl Systemd {
    /// `socket` is the agent's path of the host's system bus socket
    /// (`<host root>/run/dbus/system_bus_socket`); `unit` is e.g. `containerd.service`.
    pub fn new(socket: impl Into<PathBuf>, unit: impl Into<String>) -> Self {
        Systemd {
            socket: socket.into(),
            unit: unit.into(),
            job_timeout: JOB_TIMEOUT,
        }
    }

    /// The same with another limit for the restart job.
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The bus socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    /// Without a subscriber systemd sends no job signals.
    fn subscribe(&self) -> zbus::Result<()>;

    fn restart_unit(&self, name: &str, mode: &str)
    -> zbus::Result<zbus::zvariant::OwnedObjectPath>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

impl Restarter for Systemd {
    fn restart(&self) -> BoxFuture<'_, Result<(), RestartError>> {
        Box::pin(async move {
            let fail = |what: &str, e: zbus::Error| {
                RestartError(format!(
                    "{what} (system bus {}): {e}",
                    self.socket.display()
                ))
            };
            let address = format!("unix:path={}", self.socket.display());
            let connection = zbus::connection::Builder::address(address.as_str())
                .map_err(|e| fail("invalid bus address", e))?
                .build()
                .await
                .map_err(|e| fail("cannot connect to the host's D-Bus", e))?;
            let manager = ManagerProxy::new(&connection)
                .await
                .map_err(|e| fail("cannot reach systemd", e))?;
            manager
                .subscribe()
                .await
                .map_err(|e| fail("cannot subscribe to systemd's job signals", e))?;
            // Listen before asking: the job may finish before the answer arrives.
            let mut removed = manager
                .receive_job_removed()
                .await
                .map_err(|e| fail("cannot listen for systemd's job signals", e))?;
            let job = manager
                .restart_unit(&self.unit, "replace")
                .await
                .map_err(|e| fail(&format!("systemd refused to restart {}", self.unit), e))?;
            tracing::info!(unit = %self.unit, job = %job.as_str(), "asked systemd to restart containerd");
            let finished = async {
                while let Some(signal) = removed.next().await {
                    let Ok(args) = signal.args() else { continue };
                    if args.job.as_str() == job.as_str() {
                        return Some(args.result.to_string());
                    }
                }
                None
            };
            let result = tokio::time::timeout(self.job_timeout, finished)
                .await
                .map_err(|_| {
                    RestartError(format!(
                        "systemd's job {} restarting {} did not finish within {}s",
                        job.as_str(),
                        self.unit,
                        self.job_timeout.as_secs()
                    ))
                })?
                .ok_or_else(|| {
                    RestartError(format!(
                        "the system bus {} closed before systemd's job {} finished",
                        self.socket.display(),
                        job.as_str()
                    ))
                })?;
            if result != "done" {
                return Err(RestartError(format!(
                    "systemd's job restarting {} ended with result {result:?}",
                    self.unit
                )));
            }
            Ok(())
        })
    }
}
