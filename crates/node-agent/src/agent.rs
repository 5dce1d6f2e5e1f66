//! One install or uninstall run of a node plan: binaries, configuration, a restart only when
//! something changed (or containerd has not loaded what is on disk), rollback when containerd
//! does not come back, and the CRI check that every handler is (or is no longer) loaded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandbox_runtime::node_plan::{Handler, NodePlan, major_minor};

use crate::binaries::{self, BinaryError};
use crate::capability::{self, Missing};
use crate::cri::{Cri, CriError, HandlerState};
use crate::host::{self, Change, Host, HostError};
use crate::lock::{HostLock, LockError};
use crate::restart::{RestartError, Restarter};

/// containerd's socket on the host.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Where and what to install.
#[derive(Clone, Debug)]
pub struct Options {
    /// The host's root as the agent sees it.
    pub host: Host,
    /// What the runtime needs on the node.
    pub plan: NodePlan,
    /// The image's folder with the binaries and their checksums (the plan's, unless overridden).
    pub source: PathBuf,
    /// `spec.binaryPath` on the host.
    pub binary_path: String,
    /// How long to wait for containerd to answer after a restart.
    pub restart_timeout: Duration,
    /// How long to wait for another agent's host lock.
    pub lock_timeout: Duration,
}

impl Options {
    /// Options for `plan` with the binaries from the plan's image folder and default timeouts.
    pub fn new(host: Host, plan: NodePlan, binary_path: String) -> Self {
        Options {
            host,
            source: PathBuf::from(&plan.binaries.source),
            plan,
            binary_path,
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
    /// Per-handler ready labels (install only): set, or why not.
    pub labels: Vec<LabelState>,
    /// Older payload versions kept because sandboxes may still use them (versioned installs).
    pub kept_versions: Vec<String>,
    /// The version installed (versioned installs; install only).
    pub version: Option<String>,
}

/// A handler's ready label after an install: whether the node may get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelState {
    pub label: String,
    pub handler: String,
    /// `Err` says why the host cannot run this handler's pods.
    pub ready: Result<(), Missing>,
}

/// Why containerd did not answer after a restart the agent asked for.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// The restart itself failed.
    #[error(transparent)]
    Restart(#[from] RestartError),
    /// containerd was restarted but does not answer over CRI.
    #[error(transparent)]
    Cri(#[from] CriError),
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
    RolledBack {
        #[source]
        cause: Box<Unanswered>,
        /// `runs again`, or `still does not answer: <why>`.
        after: String,
    },
    #[error(
        "containerd did not come back after the configuration change ({cause}), and restoring the previous configuration failed too: {restore}"
    )]
    RollbackFailed {
        cause: Box<Unanswered>,
        #[source]
        restore: crate::files::FileError,
    },
    #[error(
        "containerd {version} cannot run {runtime}, which needs containerd {minimum} or newer ({reason}); nothing was changed"
    )]
    UnsupportedContainerd {
        version: String,
        runtime: String,
        minimum: String,
        reason: String,
    },
    #[error("containerd answers but handler {handler} is {state}")]
    NotLoaded { handler: String, state: String },
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error(
        "{count} pod sandbox(es) of {runtime} still run on this node ({names}); {runtime} stays until they end"
    )]
    SandboxesRunning {
        runtime: String,
        count: usize,
        names: String,
    },
}

impl AgentError {
    /// Why, in one word, for the node's state annotation and the seed's health condition.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Lock(_) => "LockNotAcquired",
            AgentError::Binaries(e) if e.is_pin_violation() => "BinaryNotAsPinned",
            AgentError::Binaries(_) => "BinaryInstallFailed",
            AgentError::Host(HostError::Changed(_)) => "ContainerdConfigChanging",
            AgentError::Host(_) => "ContainerdConfigInvalid",
            AgentError::RolledBack { .. } => "ContainerdRestartFailed",
            AgentError::RollbackFailed { .. } => "RollbackFailed",
            AgentError::UnsupportedContainerd { .. } => "ContainerdTooOld",
            AgentError::NotLoaded { .. } => "HandlerNotLoaded",
            AgentError::Cri(_) => "ContainerdUnreachable",
            AgentError::SandboxesRunning { .. } => "SandboxesRunning",
        }
    }
}

async fn restart_and_wait(
    restarter: &dyn Restarter,
    cri: &Cri,
    timeout: Duration,
) -> Result<(), Unanswered> {
    crate::fault::point("restart", cri.socket());
    restarter.restart().await?;
    crate::fault::point("restarted", cri.socket());
    cri.wait_until_answering(timeout)
        .await
        .map(|_| ())
        .map_err(Unanswered::Cri)
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
    crate::fault::point("roll back", cri.socket());
    if let Err(e) = host::roll_back(&options.host, &options.plan.runtime, changes) {
        return Err(AgentError::RollbackFailed {
            cause: Box::new(cause),
            restore: e,
        });
    }
    report.restarts += 1;
    let after = match restart_and_wait(restarter, &cri, options.restart_timeout).await {
        Ok(()) => "runs again".to_string(),
        Err(e) => format!("still does not answer: {e}"),
    };
    Err(AgentError::RolledBack {
        cause: Box::new(cause),
        after,
    })
}

fn describe(state: &HandlerState) -> String {
    match state {
        HandlerState::Loaded => "loaded".into(),
        HandlerState::Missing => "not loaded".into(),
        HandlerState::WrongType { actual } => format!("loaded with runtime type {actual:?}"),
    }
}

/// Refuses containerd versions older than the plan's minimum, and returns the version
/// (major, minor) containerd reports, which decides whether a drop-in is safe
/// ([`crate::containerd::Imports`]). An unreadable version is let through: the handler check
/// after the install still has the last word.
async fn check_containerd(cri: &Cri, plan: &NodePlan) -> Result<Option<(u32, u32)>, AgentError> {
    let (_, version) = cri.runtime_version().await?;
    match major_minor(&version) {
        Some(found) if found < plan.min_containerd() => Err(AgentError::UnsupportedContainerd {
            version,
            runtime: plan.runtime.clone(),
            minimum: plan.min_containerd.version.clone(),
            reason: plan.min_containerd.reason.clone(),
        }),
        found => Ok(found),
    }
}

/// The first of `handlers` whose state is not `wanted`, with its state (one CRI status).
async fn first_not(
    cri: &Cri,
    handlers: &[Handler],
    wanted: &HandlerState,
) -> Result<Option<(String, HandlerState)>, CriError> {
    let states = cri.handler_states(handlers).await?;
    Ok(handlers
        .iter()
        .zip(states)
        .find(|(_, state)| state != wanted)
        .map(|(handler, state)| (handler.name.clone(), state)))
}

/// Runs a configuration edit again while someone else keeps changing `config.toml` under it
/// (each attempt rolled back what it wrote), a few times, then gives up with the error.
fn with_retries(
    edit: impl Fn() -> Result<Vec<Change>, HostError>,
) -> Result<Vec<Change>, HostError> {
    let mut attempt = 1;
    loop {
        match edit() {
            Err(HostError::Changed(path)) if attempt < 3 => {
                tracing::warn!(path = %path.display(), attempt, "changed by another writer while we edited it; reading it again");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// What a cheap check between runs found (see [`drift`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// Every handler is configured and loaded.
    None,
    /// containerd runs without handler `0` (e.g. it restarted after someone removed ours):
    /// its pods cannot start here until the next run repairs it.
    NotLoaded(String),
    /// containerd still runs the handlers, but the configuration on disk lost one (e.g.
    /// gardener-node-agent re-encoded `config.toml` from a read older than our edit): the next
    /// containerd restart would lose it.
    NotConfigured,
}

/// Checks, without writing anything, that the plan's handlers this host can run are loaded
/// (one CRI status) and still in the configuration files: cheap enough for every few
/// seconds, so the agent notices another writer's change or a containerd restart long before
/// its next full run.
pub async fn drift(options: &Options) -> Result<Drift, AgentError> {
    let writable: Vec<Handler> = capability::writable(&options.host, &options.plan.handlers)
        .into_iter()
        .cloned()
        .collect();
    if let Some((handler, _)) = first_not(&options.cri(), &writable, &HandlerState::Loaded).await? {
        return Ok(Drift::NotLoaded(handler));
    }
    if !host::configured(&options.host, &options.plan, &writable)? {
        return Ok(Drift::NotConfigured);
    }
    Ok(Drift::None)
}

/// Installs binaries and configuration, restarts containerd only if a file changed or
/// containerd has not loaded every handler, and verifies over CRI that all are loaded.
pub async fn install(options: &Options, restarter: &dyn Restarter) -> Result<Report, AgentError> {
    let start = Instant::now();
    let plan = &options.plan;
    let _lock = HostLock::acquire(&options.host.path(&plan.lock), options.lock_timeout).await?;
    let containerd_version = check_containerd(&options.cri(), plan).await?;
    let mut report = Report {
        binaries: binaries::install_with_optional(
            &options.source,
            &plan.binaries.checksums,
            &options.host.path(&plan.binary_dir(&options.binary_path)),
            &plan.binaries.names,
            &plan.binaries.optional,
            &binaries::Expected::for_host(&plan.binaries.pinned),
        )?,
        ..Report::default()
    };
    let writable: Vec<Handler> = capability::writable(&options.host, &plan.handlers)
        .into_iter()
        .cloned()
        .collect();
    let changes = with_retries(|| host::install(&options.host, plan, containerd_version))?;
    report.files = changes.iter().map(|c| c.path.clone()).collect();
    let cri = options.cri();
    let loaded = HandlerState::Loaded;
    let missing = if !changes.is_empty() {
        apply(options, restarter, &changes, &mut report).await?;
        first_not(&cri, &writable, &loaded).await?
    } else {
        match first_not(&cri, &writable, &loaded).await? {
            None => None,
            Some((handler, _)) => {
                // The files are right but containerd has not loaded them, e.g. an earlier
                // run stopped between writing and restarting.
                tracing::info!(
                    "configuration unchanged but not loaded by containerd; restarting it"
                );
                report.restarts += 1;
                restart_and_wait(restarter, &cri, options.restart_timeout)
                    .await
                    .map_err(|cause| AgentError::NotLoaded {
                        handler,
                        state: format!("not loaded and containerd did not come back: {cause}"),
                    })?;
                first_not(&cri, &writable, &loaded).await?
            }
        }
    };
    if let Some((handler, state)) = missing {
        return Err(AgentError::NotLoaded {
            handler,
            state: describe(&state),
        });
    }
    // Loaded; whether each handler's pods can run here is the host's to say.
    for handler in &plan.handlers {
        let Some(label) = &handler.ready_label else {
            continue;
        };
        let ready = match capability::first_missing(&options.host, &handler.written_only_if) {
            Some(missing) => Err(missing),
            None => match capability::first_missing(&options.host, &handler.requires) {
                Some(missing) => Err(missing),
                None => Ok(()),
            },
        };
        if let Err(missing) = &ready {
            tracing::warn!(handler = %handler.name, reason = %missing.reason, "{}; its ready label stays off", missing.message);
        }
        report.labels.push(LabelState {
            label: label.clone(),
            handler: handler.name.clone(),
            ready,
        });
    }
    report.kept_versions = prune_versions(options, &cri).await?;
    report.version = plan.version().map(str::to_string);
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Which version folder below `target` a sandbox started with `config_path` runs from.
fn version_of(target: &str, config_path: &str) -> Option<String> {
    let rest = std::path::Path::new(config_path)
        .strip_prefix(target)
        .ok()?
        .components();
    let mut parts = rest.map(|c| c.as_os_str().to_string_lossy().into_owned());
    let version = parts.next()?;
    parts.next().map(|_| version)
}

/// Removes what a versioned install no longer needs: older version folders that no running
/// sandbox of the plan's handlers uses, and the files of an earlier unversioned install
/// (`replacesBinaries`, `replacesFiles`). Which folder a sandbox uses comes from the shim
/// configuration it was started with (its handler's `ConfigPath`, when the plan puts it in
/// the version's folder); while any sandbox runs whose folder cannot be told (a configuration
/// shared by all versions, or a sandbox of the unversioned install), nothing is removed.
/// Returns the older versions kept.
async fn prune_versions(options: &Options, cri: &Cri) -> Result<Vec<String>, AgentError> {
    let Some(versioned) = &options.plan.binaries.versioned else {
        return Ok(Vec::new());
    };
    let target = options.host.path(&versioned.target);
    let others =
        binaries::other_versions(&target, &versioned.version).map_err(BinaryError::from)?;
    let legacy = replaced_files(options).iter().any(|path| path.exists());
    if others.is_empty() && !legacy {
        return Ok(others);
    }
    let running = cri
        .sandbox_config_paths(&options.plan.handler_names())
        .await?;
    let mut used = std::collections::BTreeSet::new();
    let mut unknown = Vec::new();
    for (name, config_path) in &running {
        match config_path
            .as_deref()
            .and_then(|p| version_of(&versioned.target, p))
        {
            Some(version) => {
                used.insert(version);
            }
            None => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        tracing::info!(versions = ?others, sandboxes = ?unknown, "older versions kept: sandboxes run whose version folder cannot be told");
        return Ok(others);
    }
    let mut kept = Vec::new();
    for version in others {
        if used.contains(&version) {
            tracing::info!(%version, "older version kept while its sandboxes run");
            kept.push(version);
            continue;
        }
        binaries::remove_version(&target, &version).map_err(BinaryError::from)?;
        tracing::info!(%version, "older version removed");
    }
    remove_replaced(options)?;
    Ok(kept)
}

/// Host paths (as the agent sees them) of an earlier unversioned install that a versioned
/// plan replaces.
fn replaced_files(options: &Options) -> Vec<PathBuf> {
    let Some(versioned) = &options.plan.binaries.versioned else {
        return Vec::new();
    };
    let binaries = options.host.path(&options.binary_path);
    versioned
        .replaces_binaries
        .iter()
        .map(|name| binaries.join(name))
        .chain(
            versioned
                .replaces_files
                .iter()
                .map(|path| options.host.path(path)),
        )
        .collect()
}

fn remove_replaced(options: &Options) -> Result<(), AgentError> {
    for path in replaced_files(options) {
        if crate::files::remove(&path).map_err(BinaryError::from)? {
            tracing::info!(path = %path.display(), "file of the earlier unversioned install removed");
        }
    }
    Ok(())
}

/// Removes the handlers and the plan's files, restarts containerd once if anything was
/// removed, verifies the handlers are gone, then removes the binaries (running shims keep
/// theirs).
pub async fn uninstall(options: &Options, restarter: &dyn Restarter) -> Result<Report, AgentError> {
    let start = Instant::now();
    let plan = &options.plan;
    let _lock = HostLock::acquire(&options.host.path(&plan.lock), options.lock_timeout).await?;
    let mut report = Report::default();
    let cri = options.cri();
    // Running sandboxes need their runtime to the end: their shims stop and delete them
    // with its binaries (a VM runtime's pods die with their handler). Never pull it from
    // under them: wait, and say so.
    let running = cri.sandboxes_of(&plan.handler_names()).await?;
    if !running.is_empty() {
        return Err(AgentError::SandboxesRunning {
            runtime: plan.runtime.clone(),
            count: running.len(),
            names: running.join(", "),
        });
    }
    let changes = with_retries(|| host::uninstall(&options.host, plan))?;
    report.files = changes.iter().map(|c| c.path.clone()).collect();
    if !changes.is_empty() {
        apply(options, restarter, &changes, &mut report).await?;
    }
    if let Some((handler, state)) = first_not(&cri, &plan.handlers, &HandlerState::Missing).await? {
        return Err(AgentError::NotLoaded {
            handler,
            state: format!("{} after uninstall", describe(&state)),
        });
    }
    report.binaries = match &plan.binaries.versioned {
        // Every version folder goes (no sandbox runs any more).
        Some(versioned) => {
            let target = options.host.path(&versioned.target);
            let all = binaries::other_versions(&target, "").map_err(BinaryError::from)?;
            for version in &all {
                binaries::remove_version(&target, version).map_err(BinaryError::from)?;
            }
            remove_replaced(options)?;
            all
        }
        None => binaries::uninstall(
            &options.host.path(&options.binary_path),
            &plan.binaries.names,
        )?,
    };
    report.elapsed = start.elapsed();
    Ok(report)
}
