//! containerd's configuration on a host as a node plan wants it: where the handlers go
//! (the plan's drop-in or `config.toml`), the plan's files, uninstall, and rollback. All paths
//! are under a host root: `/` on a node, `/host` in the agent's pod, a temporary folder in
//! tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use sandbox_runtime::node_plan::{Handler, NodePlan};

use crate::capability;
use crate::containerd::{self, Config, ConfigError, Imports};
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
    #[error(
        "{0} changed while this run edited it (another writer); nothing was written, the edit is redone from what is there now"
    )]
    Changed(PathBuf),
    #[error(transparent)]
    File(FileError),
}

impl From<FileError> for HostError {
    fn from(e: FileError) -> Self {
        if e.is_changed() {
            HostError::Changed(e.path)
        } else {
            HostError::File(e)
        }
    }
}

/// `config.toml` parsed, with the text it was parsed from (an edit is written only if the
/// file still holds that text).
fn read_config(host: &Host) -> Result<(Config, String), HostError> {
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
    let config = Config::parse(&text).map_err(|source| HostError::Config { path, source })?;
    Ok((config, text))
}

/// Writes our edit `content` of `config.toml`, whose text was `read`, backing up what was
/// there; refused ([`HostError::Changed`]) if someone else changed the file in between.
fn put_edited(
    host: &Host,
    owner: &str,
    read: &str,
    content: &str,
    changes: &mut Vec<Change>,
) -> Result<(), HostError> {
    let full = host.path(CONFIG_TOML);
    let mode = fs::metadata(&full)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    if fs::read(&full).ok().as_deref() != Some(read.as_bytes()) {
        return Err(HostError::Changed(full));
    }
    files::backup(&full, owner)?;
    if files::replace_edited(&full, read.as_bytes(), content.as_bytes(), mode)? {
        changes.push(Change {
            path: CONFIG_TOML.to_string(),
            had_file: true,
        });
    }
    Ok(())
}

/// Writes `content` to the host path if it differs, backing up what was there.
fn put(
    host: &Host,
    owner: &str,
    path: &str,
    content: &str,
    changes: &mut Vec<Change>,
) -> Result<(), FileError> {
    let full = host.path(path);
    let existing = fs::read(&full).ok();
    if existing.as_deref() == Some(content.as_bytes()) {
        return Ok(());
    }
    let mode = fs::metadata(&full)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let had_file = files::backup(&full, owner)?;
    files::write_atomic(&full, content.as_bytes(), mode)?;
    changes.push(Change {
        path: path.to_string(),
        had_file,
    });
    Ok(())
}

fn delete(
    host: &Host,
    owner: &str,
    path: &str,
    changes: &mut Vec<Change>,
) -> Result<(), FileError> {
    let full = host.path(path);
    if !full.exists() {
        return Ok(());
    }
    files::backup(&full, owner)?;
    files::remove(&full)?;
    changes.push(Change {
        path: path.to_string(),
        had_file: true,
    });
    Ok(())
}

/// Registers the plan's handlers and writes its files. Uses the plan's drop-in when
/// `config.toml` imports `conf.d` and containerd merges imported tables
/// ([`Imports::Merged`]: 2.0+, from `containerd_version` as containerd reports it, or the
/// schema when it is unknown), and then removes stale entries of the same handlers from
/// `config.toml` (e.g. the Go extension's). Otherwise (containerd 1.x, or no import) it edits
/// `config.toml` in place, and removes a drop-in of ours that an older agent wrote there:
/// on containerd 1.x it would replace the CRI plugin's whole table. Returns
/// what changed (nothing on an unchanged re-run). A missing or invalid `config.toml` is an
/// error before any write. When someone else changes `config.toml` while this runs, what
/// this call wrote is rolled back and [`HostError::Changed`] returned (the caller runs it
/// again).
///
/// A handler whose `writtenOnlyIf` does not hold on this host is not written (and removed if
/// an earlier run wrote it): e.g. an entry naming the devmapper snapshotter, since
/// containerd 2.x loses its CRI plugin when that is configured without a pool.
pub fn install(
    host: &Host,
    plan: &NodePlan,
    containerd_version: Option<(u32, u32)>,
) -> Result<Vec<Change>, HostError> {
    let mut changes = Vec::new();
    let result = install_into(host, plan, containerd_version, &mut changes);
    undo_on_changed(host, &plan.runtime, result, changes)
}

/// `result` of a run that made `changes`; on [`HostError::Changed`] the changes are rolled
/// back first, so that nothing this run wrote stays behind.
fn undo_on_changed(
    host: &Host,
    owner: &str,
    result: Result<(), HostError>,
    changes: Vec<Change>,
) -> Result<Vec<Change>, HostError> {
    match result {
        Ok(()) => Ok(changes),
        Err(HostError::Changed(path)) => {
            roll_back(host, owner, &changes)?;
            Err(HostError::Changed(path))
        }
        Err(e) => Err(e),
    }
}

fn install_into(
    host: &Host,
    plan: &NodePlan,
    containerd_version: Option<(u32, u32)>,
    changes: &mut Vec<Change>,
) -> Result<(), HostError> {
    let (config, read) = read_config(host)?;
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
    if config.imports_conf_d()
        && Imports::of(containerd_version, config.schema()) == Imports::Merged
    {
        put(
            host,
            &plan.runtime,
            &plan.drop_in,
            &containerd::drop_in(config.schema(), &writable, &plan.containerd_imports),
            changes,
        )?;
        if let Some(cleaned) = without_plan(&config, plan).map_err(config_error(host))? {
            put_edited(host, &plan.runtime, &read, &cleaned, changes)?;
        }
    } else {
        delete(host, &plan.runtime, &plan.drop_in, changes)?;
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
            put_edited(host, &plan.runtime, &read, &edited, changes)?;
        }
    }
    for file in &plan.files {
        put(host, &plan.runtime, &file.path, &file.content, changes)?;
    }
    Ok(())
}

/// Whether every one of `handlers` is still configured, in `config.toml` or the plan's
/// drop-in, read without writing anything. Another writer can drop ours: gardener-node-agent
/// re-encodes `config.toml` from what it read, without a compare, so an edit of ours that
/// landed between its read and its write is lost.
pub fn configured(host: &Host, plan: &NodePlan, handlers: &[Handler]) -> Result<bool, HostError> {
    let (config, _) = read_config(host)?;
    let drop_in = match fs::read_to_string(host.path(&plan.drop_in)) {
        Ok(text) => Config::parse(&text).ok(),
        Err(_) => None,
    };
    Ok(handlers
        .iter()
        .all(|h| config.has(h) || drop_in.as_ref().is_some_and(|d| d.has(h))))
}

/// Removes the plan's handlers (drop-in and any entry in `config.toml`) and its files.
pub fn uninstall(host: &Host, plan: &NodePlan) -> Result<Vec<Change>, HostError> {
    let mut changes = Vec::new();
    let result = uninstall_from(host, plan, &mut changes);
    undo_on_changed(host, &plan.runtime, result, changes)
}

fn uninstall_from(
    host: &Host,
    plan: &NodePlan,
    changes: &mut Vec<Change>,
) -> Result<(), HostError> {
    delete(host, &plan.runtime, &plan.drop_in, changes)?;
    match read_config(host) {
        Ok((config, read)) => {
            if let Some(cleaned) = without_plan(&config, plan).map_err(config_error(host))? {
                put_edited(host, &plan.runtime, &read, &cleaned, changes)?;
            }
        }
        // Without a config there is no entry to remove; a broken one we do not touch.
        Err(HostError::MissingConfig(_)) => {}
        Err(e) => return Err(e),
    }
    for file in &plan.files {
        delete(host, &plan.runtime, &file.path, changes)?;
    }
    Ok(())
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

/// Undoes `changes` that `owner`'s agent made (newest first): backed-up files come back from
/// its backups, new files go.
pub fn roll_back(host: &Host, owner: &str, changes: &[Change]) -> Result<(), FileError> {
    for change in changes.iter().rev() {
        let full = host.path(&change.path);
        if change.had_file {
            files::restore(&full, owner)?;
        } else {
            files::remove(&full)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::CONF_D_IMPORT;

    const DROP_IN: &str = "/etc/containerd/conf.d/sandboxed.toml";
    const THEIRS: &str = "\n# added by someone else while the agent edited\n[grpc]\n  address = \"/run/other.sock\"\n";

    /// A plan of a runtime the agent does not know: a handler, a shim configuration file.
    fn plan() -> NodePlan {
        NodePlan::parse(
            &serde_json::json!({
                "apiVersion": sandbox_runtime::node_plan::API_VERSION,
                "kind": sandbox_runtime::node_plan::KIND,
                "runtime": "sandboxed",
                "handlers": [{"name": "sandboxed", "runtimeType": "io.containerd.sandboxed.v1",
                    "options": {"ConfigPath": "/etc/containerd/sandboxed.toml"}}],
                "files": [{"path": "/etc/containerd/sandboxed.toml", "content": "[config]\n"}],
                "binaries": {"source": "/image", "checksums": "SHA256SUMS", "names": ["shim"]},
                "dropIn": DROP_IN,
                "lock": "/run/runtime-sandbox/sandboxed.lock",
                "readyLabel": "example.com/sandboxed-ready",
                "minContainerd": {"version": "1.7", "reason": "test"},
            })
            .to_string(),
        )
        .unwrap()
    }

    /// Appends [`THEIRS`] to `config.toml` the first time a write of it is about to be renamed
    /// into place: another writer between our read and our write.
    fn interfere_once(host: &Host) {
        let config = host.path(CONFIG_TOML);
        let mut done = false;
        crate::fault::set_hook(Some(Box::new(move |what, path| {
            if !done && what == "rename over" && path == config {
                done = true;
                let mut text = fs::read_to_string(&config).unwrap();
                text.push_str(THEIRS);
                fs::write(&config, text).unwrap();
            }
        })));
    }

    const CONTAINERD_1_7: Option<(u32, u32)> = Some((1, 7));
    const CONTAINERD_2: Option<(u32, u32)> = Some((2, 0));

    fn host_with(config: &str) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        fs::create_dir_all(host.path("/etc/containerd")).unwrap();
        fs::write(host.path(CONFIG_TOML), config).unwrap();
        (dir, host)
    }

    #[test]
    fn an_edit_by_someone_else_between_read_and_write_is_not_lost() {
        let plan = plan();
        let (_dir, host) = host_with("version = 2\n");
        interfere_once(&host);
        let err = install(&host, &plan, CONTAINERD_1_7).unwrap_err();
        assert!(matches!(err, HostError::Changed(_)), "{err}");
        let now = fs::read_to_string(host.path(CONFIG_TOML)).unwrap();
        assert_eq!(
            now,
            format!("version = 2\n{THEIRS}"),
            "their edit stays, ours is not written"
        );
        for file in &plan.files {
            assert!(!host.path(&file.path).exists(), "{} written", file.path);
        }
        // The next attempt reads their edit and keeps it.
        crate::fault::set_hook(None);
        install(&host, &plan, CONTAINERD_1_7).unwrap();
        let now = fs::read_to_string(host.path(CONFIG_TOML)).unwrap();
        assert!(now.contains(THEIRS.trim()), "{now}");
        assert!(Config::parse(&now).unwrap().has(&plan.handlers[0]));
    }

    #[test]
    fn with_a_drop_in_what_this_run_wrote_is_rolled_back_too() {
        // conf.d imported, and an old entry of the handler in config.toml that the install
        // removes: the drop-in is written first, then config.toml is edited, and someone else
        // interferes.
        let plan = plan();
        let config = format!(
            "version = 2\nimports = [\"{CONF_D_IMPORT}\"]\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandboxed]\n  runtime_type = \"io.containerd.sandboxed.v1\"\n"
        );
        let (_dir, host) = host_with(&config);
        interfere_once(&host);
        let err = install(&host, &plan, CONTAINERD_2).unwrap_err();
        assert!(matches!(err, HostError::Changed(_)), "{err}");
        assert!(
            !host.path(DROP_IN).exists(),
            "the failed attempt's drop-in stays"
        );
        assert_eq!(
            fs::read_to_string(host.path(CONFIG_TOML)).unwrap(),
            format!("{config}{THEIRS}")
        );
        crate::fault::set_hook(None);
        install(&host, &plan, CONTAINERD_2).unwrap();
        assert!(host.path(DROP_IN).exists());
        let now = fs::read_to_string(host.path(CONFIG_TOML)).unwrap();
        assert!(
            now.contains(THEIRS.trim()) && !now.contains("runtimes.sandboxed"),
            "{now}"
        );
    }

    #[test]
    fn on_containerd_1_x_the_import_gets_no_drop_in_and_an_old_one_goes() {
        // What gardener-node-agent writes on every containerd version: conf.d imported, the
        // CRI plugin's settings in config.toml. An older agent left a drop-in of ours.
        let plan = plan();
        let config = format!(
            "version = 2\nimports = [\"{CONF_D_IMPORT}\"]\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.example/pause:3.10\"\n"
        );
        let (_dir, host) = host_with(&config);
        fs::create_dir_all(host.path("/etc/containerd/conf.d")).unwrap();
        fs::write(host.path(DROP_IN), "# an older agent's drop-in\n").unwrap();
        let changes = install(&host, &plan, CONTAINERD_1_7).unwrap();
        assert!(!host.path(DROP_IN).exists(), "the drop-in is still there");
        let now = fs::read_to_string(host.path(CONFIG_TOML)).unwrap();
        assert!(Config::parse(&now).unwrap().has(&plan.handlers[0]), "{now}");
        assert!(now.contains("registry.example/pause:3.10"), "{now}");
        let paths: Vec<_> = changes.iter().map(|c| c.path.as_str()).collect();
        assert!(
            paths.contains(&DROP_IN) && paths.contains(&CONFIG_TOML),
            "{paths:?}"
        );
        // Unknown version, version 2 file: in place too; version 3: a drop-in.
        let (_dir, host) = host_with(&config);
        install(&host, &plan, None).unwrap();
        assert!(!host.path(DROP_IN).exists());
        let v3 = format!("version = 3\nimports = [\"{CONF_D_IMPORT}\"]\n");
        let (_dir, host) = host_with(&v3);
        install(&host, &plan, None).unwrap();
        assert!(host.path(DROP_IN).exists());
        assert_eq!(fs::read_to_string(host.path(CONFIG_TOML)).unwrap(), v3);
    }
}
