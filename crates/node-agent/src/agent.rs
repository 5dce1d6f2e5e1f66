//! One install or uninstall run on a node: binaries, configuration, a restart only when
//! something changed (or containerd has not loaded what is on disk), rollback when containerd
//! does not come back, and the CRI check that the handler is (or is no longer) loaded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binaries::{self, BinaryError};
use crate::containerd::Handler;
use crate::cri::{self, Cri, CriError, HandlerState};
use crate::host::{self, Change, Host, HostError};
use crate::lock::{HostLock, LOCK_FILE, LockError};
use crate::restart::{RestartError, Restarter};

/// gVisor's binaries, as shipped in the image next to `SHA256SUMS`.
pub const GVISOR_BINARIES: [&str; 2] = ["runsc", "containerd-shim-runsc-v1"];
/// containerd's socket on the host.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Where and what to install.
#[derive(Clone, Debug)]
pub struct Options {
    /// The host's root as the agent sees it.
    pub host: Host,
    /// The image's folder with the binaries and `SHA256SUMS`.
    pub source: PathBuf,
    /// `spec.binaryPath` on the host.
    pub binary_path: String,
    /// The rendered `runsc.toml`.
    pub runsc_toml: String,
    /// The handler to register.
    pub handler: Handler,
    /// How long to wait for containerd to answer after a restart.
    pub restart_timeout: Duration,
    /// How long to wait for another agent's host lock.
    pub lock_timeout: Duration,
}

impl Options {
    /// Options for gVisor's `runsc` handler with default timeouts.
    pub fn gvisor(host: Host, source: PathBuf, binary_path: String, runsc_toml: String) -> Self {
        Options {
            host,
            source,
            binary_path,
            runsc_toml,
            handler: Handler::runsc(),
            restart_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(120),
        }
    }

    fn cri(&self) -> Cri {
        Cri::new(self.host.path(CONTAINERD_SOCKET))
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Binaries written or removed.
    pub binaries: Vec<String>,
    /// Configuration files written or removed (host paths).
    pub files: Vec<String>,
    /// containerd restarts this run asked for.
    pub restarts: u32,
    /// From agent start to the handler's state verified.
    pub elapsed: Duration,
}

/// Why a run failed. Whatever it changed in containerd's configuration has been rolled back
/// unless the error says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Binaries(#[from] BinaryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(
        "containerd did not come back after the configuration change ({cause}); the previous configuration was restored and containerd {after}"
    )]
    RolledBack { cause: String, after: String },
    #[error(
        "containerd did not come back after the configuration change ({cause}), and restoring the previous configuration failed too: {restore}"
    )]
    RollbackFailed { cause: String, restore: String },
    #[error(
        "containerd {version} cannot run gVisor's shim, which needs containerd 1.7 or newer (it answers with the shim bootstrap protocol version 2); nothing was changed"
    )]
    UnsupportedContainerd { version: String },
    #[error("containerd answers but handler {handler} is {state}")]
    NotLoaded { handler: String, state: String },
    #[error(transparent)]
    Cri(#[from] CriError),
}

async fn restart_and_wait(
    restarter: &dyn Restarter,
    cri: &Cri,
    timeout: Duration,
) -> Result<(), String> {
    restarter.restart().await.map_err(|RestartError(e)| e)?;
    cri.wait_until_answering(timeout)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Restarts containerd after `changes`; if it does not come back, restores the previous
/// files, restarts again and reports the failure.
async fn apply(
    options: &Options,
    restarter: &dyn Restarter,
    changes: &[Change],
    report: &mut Report,
) -> Result<(), AgentError> {
    let cri = options.cri();
    report.restarts += 1;
    let Err(cause) = restart_and_wait(restarter, &cri, options.restart_timeout).await else {
        return Ok(());
    };
    tracing::error!(%cause, "containerd did not come back; restoring the previous configuration");
    if let Err(e) = host::roll_back(&options.host, changes) {
        return Err(AgentError::RollbackFailed {
            cause,
            restore: e.to_string(),
        });
    }
    report.restarts += 1;
    let after = match restart_and_wait(restarter, &cri, options.restart_timeout).await {
        Ok(()) => "runs again".to_string(),
        Err(e) => format!("still does not answer: {e}"),
    };
    Err(AgentError::RolledBack { cause, after })
}

fn describe(state: &HandlerState) -> String {
    match state {
        HandlerState::Loaded => "loaded".into(),
        HandlerState::Missing => "not loaded".into(),
        HandlerState::WrongType { actual } => format!("loaded with runtime type {actual:?}"),
    }
}

/// The oldest containerd gVisor's current shim works with: 1.6 cannot read the shim's
/// bootstrap answer (proven by the scenario tests with Debian's containerd 1.6).
pub const MIN_CONTAINERD: (u32, u32) = (1, 7);

/// Refuses containerd versions gVisor's shim cannot work with. An unreadable version is
/// let through: the handler check after the install still has the last word.
async fn check_containerd(cri: &Cri) -> Result<(), AgentError> {
    let (_, version) = cri.runtime_version().await?;
    match cri::major_minor(&version) {
        Some(found) if found < MIN_CONTAINERD => Err(AgentError::UnsupportedContainerd { version }),
        _ => Ok(()),
    }
}

/// Installs binaries and configuration, restarts containerd only if a file changed or
/// containerd has not loaded the handler, and verifies over CRI that it is loaded.
pub async fn install(options: &Options, restarter: &dyn Restarter) -> Result<Report, AgentError> {
    let start = Instant::now();
    let _lock = HostLock::acquire(&options.host.path(LOCK_FILE), options.lock_timeout).await?;
    check_containerd(&options.cri()).await?;
    let mut report = Report {
        binaries: binaries::install(
            &options.source,
            &options.host.path(&options.binary_path),
            &GVISOR_BINARIES,
        )?,
        ..Report::default()
    };
    let changes = host::install(&options.host, &options.handler, &options.runsc_toml)?;
    report.files = changes.iter().map(|c| c.path.clone()).collect();
    let cri = options.cri();
    let wanted = &options.handler;
    let handler_state = || cri.handler(&wanted.name, &wanted.runtime_type);
    let state = if !changes.is_empty() {
        apply(options, restarter, &changes, &mut report).await?;
        handler_state().await?
    } else {
        match handler_state().await? {
            HandlerState::Loaded => HandlerState::Loaded,
            _ => {
                // The files are right but containerd has not loaded them, e.g. an earlier
                // run stopped between writing and restarting.
                tracing::info!(
                    "configuration unchanged but not loaded by containerd; restarting it"
                );
                report.restarts += 1;
                restart_and_wait(restarter, &cri, options.restart_timeout)
                    .await
                    .map_err(|cause| AgentError::NotLoaded {
                        handler: wanted.name.clone(),
                        state: format!("not loaded and containerd did not come back: {cause}"),
                    })?;
                handler_state().await?
            }
        }
    };
    if state != HandlerState::Loaded {
        return Err(AgentError::NotLoaded {
            handler: wanted.name.clone(),
            state: describe(&state),
        });
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Removes the handler and `runsc.toml`, restarts containerd once if anything was removed,
/// verifies the handler is gone, then removes the binaries (running shims keep theirs).
pub async fn uninstall(options: &Options, restarter: &dyn Restarter) -> Result<Report, AgentError> {
    let start = Instant::now();
    let _lock = HostLock::acquire(&options.host.path(LOCK_FILE), options.lock_timeout).await?;
    let mut report = Report::default();
    let changes = host::uninstall(&options.host, &options.handler.name)?;
    report.files = changes.iter().map(|c| c.path.clone()).collect();
    let cri = options.cri();
    if !changes.is_empty() {
        apply(options, restarter, &changes, &mut report).await?;
    }
    let state = cri
        .handler(&options.handler.name, &options.handler.runtime_type)
        .await?;
    if state != HandlerState::Missing {
        return Err(AgentError::NotLoaded {
            handler: options.handler.name.clone(),
            state: format!("{} after uninstall", describe(&state)),
        });
    }
    report.binaries =
        binaries::uninstall(&options.host.path(&options.binary_path), &GVISOR_BINARIES)?;
    report.elapsed = start.elapsed();
    Ok(report)
}
