//! containerd's configuration on a host as a node plan wants it: where the handlers go
//! (the plan's drop-in or `config.toml`), the plan's files, uninstall, and rollback. All paths
//! are under a host root: `/` on a node, `/host` in the agent's pod, a temporary folder in
//! tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use sandbox_runtime::node_plan::NodePlan;

use crate::capability;
use crate::containerd::{self, Config, ConfigError};
use crate::files::{self, FileError};

/// containerd's main configuration.
pub const CONFIG_TOML: &str = "/etc/containerd/config.toml";

/// A host's file system seen from the agent.
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    /// The agent's path of the host's absolute path `path`.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// A file this run changed, and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The host's absolute path.
    pub path: String,
    /// There was a file before (its backup is next to it); otherwise the file is new.
    pub had_file: bool,
}

/// Why installing or uninstalling the configuration failed. Nothing was written then.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0} does not exist; containerd must be configured before a runtime can be added")]
    MissingConfig(PathBuf),
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    File(#[from] FileError),
}

fn read_config(host: &Host) -> Result<Config, HostError> {
    let path = host.path(CONFIG_TOML);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostError::MissingConfig(path));
        }
        Err(e) => {
            return Err(files::failed("reading", &path)(e).into());
        }
    };
    Config::parse(&text).map_err(|source| HostError::Config { path, source })
}

/// Writes `content` to the host path if it differs, backing up what was there.
fn put(host: &Host, path: &str, content: &str, changes: &mut Vec<Change>) -> Result<(), FileError> {
    let full = host.path(path);
    let existing = fs::read(&full).ok();
    if existing.as_deref() == Some(content.as_bytes()) {
        return Ok(());
    }
    let mode = fs::metadata(&full)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let had_file = files::backup(&full)?;
    files::write_atomic(&full, content.as_bytes(), mode)?;
    changes.push(Change {
        path: path.to_string(),
        had_file,
    });
    Ok(())
}

fn delete(host: &Host, path: &str, changes: &mut Vec<Change>) -> Result<(), FileError> {
    let full = host.path(path);
    if !full.exists() {
        return Ok(());
    }
    files::backup(&full)?;
    files::remove(&full)?;
    changes.push(Change {
        path: path.to_string(),
        had_file: true,
    });
    Ok(())
}

/// Registers the plan's handlers and writes its files. Prefers the plan's drop-in when
/// `config.toml` imports `conf.d` (and then removes stale entries of the same handlers from
/// `config.toml`, e.g. the Go extension's); otherwise edits `config.toml` in place. Returns
/// what changed (nothing on an unchanged re-run). A missing or invalid `config.toml` is an
/// error before any write.
///
/// A handler whose `writtenOnlyIf` does not hold on this host is not written (and removed if
/// an earlier run wrote it): e.g. an entry naming the devmapper snapshotter, since
/// containerd 2.x loses its CRI plugin when that is configured without a pool.
pub fn install(host: &Host, plan: &NodePlan) -> Result<Vec<Change>, HostError> {
    let config = read_config(host)?;
    let mut changes = Vec::new();
    let writable: Vec<_> = capability::writable(host, &plan.handlers)
        .into_iter()
        .cloned()
        .collect();
    let unwritable: Vec<&str> = plan
        .handlers
        .iter()
        .filter(|h| !writable.iter().any(|w| w.name == h.name))
        .map(|h| h.name.as_str())
        .collect();
    if config.imports_conf_d() {
        put(
            host,
            &plan.drop_in,
            &containerd::drop_in(config.schema(), &writable, &plan.containerd_imports),
            &mut changes,
        )?;
        if let Some(cleaned) = without_plan(&config, plan).map_err(config_error(host))? {
            put(host, CONFIG_TOML, &cleaned, &mut changes)?;
        }
    } else {
        let mut current = config;
        let mut edited = None;
        if let Some(text) = current.without_handlers(&unwritable) {
            current = Config::parse(&text).map_err(config_error(host))?;
            edited = Some(text);
        }
        if let Some(text) = current
            .with_handlers(&writable)
            .map_err(config_error(host))?
        {
            current = Config::parse(&text).map_err(config_error(host))?;
            edited = Some(text);
        }
        if let Some(text) = current
            .with_imports(&plan.containerd_imports)
            .map_err(config_error(host))?
        {
            edited = Some(text);
        }
        if let Some(edited) = edited {
            put(host, CONFIG_TOML, &edited, &mut changes)?;
        }
    }
    for file in &plan.files {
        put(host, &file.path, &file.content, &mut changes)?;
    }
    Ok(changes)
}

/// Removes the plan's handlers (drop-in and any entry in `config.toml`) and its files.
pub fn uninstall(host: &Host, plan: &NodePlan) -> Result<Vec<Change>, HostError> {
    let mut changes = Vec::new();
    delete(host, &plan.drop_in, &mut changes)?;
    match read_config(host) {
        Ok(config) => {
            if let Some(cleaned) = without_plan(&config, plan).map_err(config_error(host))? {
                put(host, CONFIG_TOML, &cleaned, &mut changes)?;
            }
        }
        // Without a config there is no entry to remove; a broken one we do not touch.
        Err(HostError::MissingConfig(_)) => {}
        Err(e) => return Err(e),
    }
    for file in &plan.files {
        delete(host, &file.path, &mut changes)?;
    }
    Ok(changes)
}

fn config_error(host: &Host) -> impl Fn(containerd::ConfigError) -> HostError + '_ {
    move |source| HostError::Config {
        path: host.path(CONFIG_TOML),
        source,
    }
}

/// `config` without the plan's handlers and imports, or None if it has none of them.
fn without_plan(
    config: &Config,
    plan: &NodePlan,
) -> Result<Option<String>, containerd::ConfigError> {
    let mut current = config.clone();
    let mut edited = None;
    if let Some(text) = current.without_handlers(&plan.handler_names()) {
        current = Config::parse(&text)?;
        edited = Some(text);
    }
    if let Some(text) = current.without_imports(&plan.containerd_imports) {
        edited = Some(text);
    }
    Ok(edited)
}

/// Undoes `changes` (newest first): backed-up files come back, new files go.
pub fn roll_back(host: &Host, changes: &[Change]) -> Result<(), FileError> {
    for change in changes.iter().rev() {
        let full = host.path(&change.path);
        if change.had_file {
            files::restore(&full)?;
        } else {
            files::remove(&full)?;
        }
    }
    Ok(())
}
