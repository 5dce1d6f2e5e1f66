//! containerd's configuration on a host: where the handler goes (drop-in or `config.toml`),
//! `runsc.toml`, uninstall, and rollback. All paths are under a host root: `/` on a node,
//! `/host` in the agent's pod, a temporary folder in tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::containerd::{self, Config, ConfigError, Handler};
use crate::files::{self, FileError};

/// containerd's main configuration.
pub const CONFIG_TOML: &str = "/etc/containerd/config.toml";
/// Our drop-in, used when `config.toml` imports `conf.d`.
pub const DROP_IN: &str = "/etc/containerd/conf.d/runtime-sandbox-gvisor.toml";
/// runsc's flags for containerd-shim-runsc-v1.
pub const RUNSC_TOML: &str = "/etc/containerd/runsc.toml";

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

fn read_config(host: &Host) -> Result<(String, Config), HostError> {
    let path = host.path(CONFIG_TOML);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostError::MissingConfig(path));
        }
        Err(e) => {
            return Err(FileError {
                action: "reading",
                path,
                source: e,
            }
            .into());
        }
    };
    let config = Config::parse(&text).map_err(|source| HostError::Config { path, source })?;
    Ok((text, config))
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

/// Registers `handler` and writes `runsc.toml`. Prefers the drop-in when `config.toml`
/// imports `conf.d` (and then removes a stale entry from `config.toml`, e.g. the Go
/// extension's); otherwise edits `config.toml` in place. Returns what changed (nothing on an
/// unchanged re-run). A missing or invalid `config.toml` is an error before any write.
pub fn install(host: &Host, handler: &Handler, runsc_toml: &str) -> Result<Vec<Change>, HostError> {
    let (_, config) = read_config(host)?;
    let mut changes = Vec::new();
    if config.imports_conf_d() {
        put(
            host,
            DROP_IN,
            &containerd::drop_in(config.schema(), handler),
            &mut changes,
        )?;
        if let Some(cleaned) = config.without_handler(&handler.name) {
            put(host, CONFIG_TOML, &cleaned, &mut changes)?;
        }
    } else {
        let edited = config
            .with_handler(handler)
            .map_err(|source| HostError::Config {
                path: host.path(CONFIG_TOML),
                source,
            })?;
        if let Some(edited) = edited {
            put(host, CONFIG_TOML, &edited, &mut changes)?;
        }
    }
    put(host, RUNSC_TOML, runsc_toml, &mut changes)?;
    Ok(changes)
}

/// Removes the handler (drop-in and any entry in `config.toml`) and `runsc.toml`.
pub fn uninstall(host: &Host, handler_name: &str) -> Result<Vec<Change>, HostError> {
    let mut changes = Vec::new();
    delete(host, DROP_IN, &mut changes)?;
    match read_config(host) {
        Ok((_, config)) => {
            if let Some(cleaned) = config.without_handler(handler_name) {
                put(host, CONFIG_TOML, &cleaned, &mut changes)?;
            }
        }
        // Without a config there is no entry to remove; a broken one we do not touch.
        Err(HostError::MissingConfig(_)) => {}
        Err(e) => return Err(e),
    }
    delete(host, RUNSC_TOML, &mut changes)?;
    Ok(changes)
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
