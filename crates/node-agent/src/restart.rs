//! Restarting containerd. On a node that is the host's systemd, reached over D-Bus through
//! the host's `/run/dbus` (no `nsenter`, no privileged pod); tests plug in their own.

use std::path::{Path, PathBuf};

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

/// The host's systemd over its D-Bus system bus: `RestartUnit(unit, "replace")`.
#[derive(Clone, Debug)]
pub struct Systemd {
    socket: PathBuf,
    unit: String,
}

impl Systemd {
    /// `socket` is the agent's path of the host's system bus socket
    /// (`<host root>/run/dbus/system_bus_socket`); `unit` is e.g. `containerd.service`.
    pub fn new(socket: impl Into<PathBuf>, unit: impl Into<String>) -> Self {
        Systemd {
            socket: socket.into(),
            unit: unit.into(),
        }
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
    fn restart_unit(&self, name: &str, mode: &str)
    -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
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
            let job = manager
                .restart_unit(&self.unit, "replace")
                .await
                .map_err(|e| fail(&format!("systemd refused to restart {}", self.unit), e))?;
            tracing::info!(unit = %self.unit, job = %job.as_str(), "asked systemd to restart containerd");
            Ok(())
        })
    }
}
