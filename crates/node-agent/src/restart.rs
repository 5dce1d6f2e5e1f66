//! Restarting containerd. On a node that is the host's systemd, reached over D-Bus through
//! the host's `/run/dbus` (no `nsenter`, no privileged pod); tests plug in their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;

/// Why containerd could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The system bus or systemd failed or refused.
    #[error("{what} (system bus {}): {source}", bus.display())]
    Bus {
        what: String,
        bus: PathBuf,
        #[source]
        source: Box<zbus::Error>,
    },
    /// systemd's restart job did not finish in time.
    #[error("systemd's job {job} restarting {unit} did not finish within {}s", timeout.as_secs())]
    JobTimeout {
        job: String,
        unit: String,
        timeout: Duration,
    },
    /// The bus went away before the job finished.
    #[error("the system bus {} closed before systemd's job {job} finished", bus.display())]
    BusClosed { bus: PathBuf, job: String },
    /// The job finished, but not with `done`.
    #[error("systemd's job restarting {unit} ended with result {result:?}")]
    JobFailed { unit: String, result: String },
    /// Another restart mechanism failed (tests restart their own containerd).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

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
            let fail = |what: &str, source: zbus::Error| RestartError::Bus {
                what: what.to_string(),
                bus: self.socket.clone(),
                source: Box::new(source),
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
                .map_err(|_| RestartError::JobTimeout {
                    job: job.as_str().to_string(),
                    unit: self.unit.clone(),
                    timeout: self.job_timeout,
                })?
                .ok_or_else(|| RestartError::BusClosed {
                    bus: self.socket.clone(),
                    job: job.as_str().to_string(),
                })?;
            if result != "done" {
                return Err(RestartError::JobFailed {
                    unit: self.unit.clone(),
                    result,
                });
            }
            Ok(())
        })
    }
}
