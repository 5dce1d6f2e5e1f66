//! Writing files on the node so that no reader ever sees half a file: write a temporary file
//! in the same folder, fsync it, rename it over the target, fsync the folder. A file we change
//! is first copied to `<name>.runtime-sandbox-<owner>.bak`, so a failed change can be undone;
//! the owner is the runtime whose agent changes it, so two runtimes' agents on one node never
//! restore each other's backup.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fault;

/// A file operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Turns an I/O error of `action` on `path` into a [`FileError`] (for `map_err`).
pub fn failed<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The backup of `path` that `owner`'s agent keeps.
pub fn backup_path(path: &Path, owner: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".runtime-sandbox-{owner}.bak"));
    path.with_file_name(name)
}

/// Atomically replaces (or creates) `path` with `content` and permission `mode`.
/// Returns false, writing nothing, when the file already has exactly this content and mode.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<bool, FileError> {
    if let Ok(existing) = fs::read(path)
        && existing == content
        && has_mode(path, mode)
    {
        return Ok(false);
    }
    write_atomic_with(path, mode, |file| file.write_all(content))?;
    Ok(true)
}

/// Whether `path` exists with permission bits `mode`.
pub fn has_mode(path: &Path, mode: u32) -> bool {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777 == mode)
        .unwrap_or(false)
}

/// Atomically replaces (or creates) `path` with what `fill` writes into the temporary file
/// (streamed, so large binaries never sit in memory), with permission `mode`. When `fill`
/// fails, the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), FileError> {
    write(path, mode, fill, None)
}

/// The file changed between our read and our write: someone else edited it. Nothing was
/// written; read it again and redo the edit.
#[derive(Debug, thiserror::Error)]
#[error("it changed since it was read (another writer); nothing was written")]
pub struct Changed;

impl FileError {
    /// Whether this is [`Changed`].
    pub fn is_changed(&self) -> bool {
        self.source.get_ref().is_some_and(|e| e.is::<Changed>())
    }
}

/// [`write_atomic`] of a file we edited: writes `content` only if `path` still holds exactly
/// `read` (what the edit started from), checked once more just before the rename, so that an
/// edit by someone else in the meantime is not lost ([`FileError::is_changed`]). The window
/// left is the rename itself; a writer that does not rename atomically can still race it.
pub fn replace_edited(
    path: &Path,
    read: &[u8],
    content: &[u8],
    mode: u32,
) -> Result<bool, FileError> {
    let unchanged = |path: &Path| -> Result<(), FileError> {
        match fs::read(path) {
            Ok(now) if now == read => Ok(()),
            Ok(_) => Err(changed(path)),
            Err(e) => Err(failed("reading", path)(e)),
        }
    };
    unchanged(path)?;
    if read == content && has_mode(path, mode) {
        return Ok(false);
    }
    write(path, mode, |file| file.write_all(content), Some(&unchanged))?;
    Ok(true)
}

fn changed(path: &Path) -> FileError {
    FileError {
        action: "replacing",
        path: path.to_path_buf(),
        source: std::io::Error::other(Changed),
    }
}

/// Our temporary files for `path`: `<name>.runtime-sandbox.tmp.<pid>`.
fn temp_prefix(path: &Path) -> std::ffi::OsString {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".runtime-sandbox.tmp.");
    name
}

/// Removes temporary files of `path` left by an earlier run that died before its rename
/// (a killed agent would otherwise leave a copy of a 60 MB binary per crash).
fn remove_stale_temps(dir: &Path, path: &Path) {
    let prefix = temp_prefix(path);
    let prefix = prefix.as_encoded_bytes();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().as_encoded_bytes().starts_with(prefix) {
            let stale = entry.path();
            match fs::remove_file(&stale) {
                Ok(()) => {
                    tracing::info!(path = %stale.display(), "removed a temporary file an earlier run left")
                }
                Err(e) => {
                    tracing::warn!(path = %stale.display(), error = %e, "cannot remove a temporary file an earlier run left")
                }
            }
        }
    }
}

/// Creates the temporary file `tmp`, which must not exist: `O_CREAT|O_EXCL` never follows a
/// link planted at that name (it fails instead of truncating the link's target).
fn create_temp(tmp: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
}

/// A last check of the target just before the rename.
type Check<'a> = dyn Fn(&Path) -> Result<(), FileError> + 'a;

fn write(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    before_rename: Option<&Check<'_>>,
) -> Result<(), FileError> {
    let dir = path.parent().ok_or_else(|| FileError {
        action: "finding the folder of",
        path: path.to_path_buf(),
        source: std::io::Error::other("no parent folder"),
    })?;
    fs::create_dir_all(dir).map_err(failed("creating", dir))?;
    // Every agent that writes here holds the one containerd lock: a temporary file is never
    // another running agent's.
    remove_stale_temps(dir, path);
    let mut name = temp_prefix(path);
    name.push(std::process::id().to_string());
    let tmp = path.with_file_name(name);
    let result = (|| {
        let mut file = create_temp(&tmp, mode).map_err(failed("creating", &tmp))?;
        fill(&mut file).map_err(failed("writing", &tmp))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(failed("setting the mode of", &tmp))?;
        file.sync_all().map_err(failed("syncing", &tmp))?;
        fault::point("rename over", path);
        if let Some(check) = before_rename {
            check(path)?;
        }
        fs::rename(&tmp, path).map_err(failed("renaming over", path))?;
        fault::point("renamed", path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed("syncing", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies `path` to `owner`'s backup (atomically) if it exists. Returns whether there was a
/// file.
pub fn backup(path: &Path, owner: &str) -> Result<bool, FileError> {
    match fs::read(path) {
        Ok(content) => {
            let mode = fs::metadata(path)
                .map_err(failed("reading", path))?
                .permissions()
                .mode()
                & 0o7777;
            write_atomic(&backup_path(path, owner), &content, mode)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(failed("reading", path)(e)),
    }
}

/// Puts `owner`'s backup of `path` back (atomically).
pub fn restore(path: &Path, owner: &str) -> Result<(), FileError> {
    let backup = backup_path(path, owner);
    let content = fs::read(&backup).map_err(failed("reading", &backup))?;
    let mode = fs::metadata(&backup)
        .map_err(failed("reading", &backup))?
        .permissions()
        .mode()
        & 0o7777;
    write_atomic(path, &content, mode).map(|_| ())
}

/// Removes `path`; a missing file is fine. Returns whether something was removed.
pub fn remove(path: &Path) -> Result<bool, FileError> {
    fault::point("remove", path);
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(failed("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_on_change_with_exact_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        assert!(write_atomic(&path, b"a = 1\n", 0o644).unwrap());
        assert!(
            !write_atomic(&path, b"a = 1\n", 0o644).unwrap(),
            "same content and mode: no write"
        );
        assert!(
            write_atomic(&path, b"a = 1\n", 0o600).unwrap(),
            "a mode change is a change"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = dir.path().join("config.toml.runtime-sandbox.tmp.77");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = create_temp(&tmp, 0o644).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A stale plain file is not reused either: the caller removes it first.
        fs::remove_file(&tmp).unwrap();
        fs::write(&tmp, b"stale").unwrap();
        assert!(create_temp(&tmp, 0o644).is_err());
    }

    #[test]
    fn temporary_files_of_a_killed_run_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim");
        let stale = dir.path().join("shim.runtime-sandbox.tmp.4242");
        let other = dir.path().join("shim-other.runtime-sandbox.tmp.4242");
        fs::write(&stale, b"half a binary").unwrap();
        fs::write(&other, b"not ours to judge").unwrap();
        write_atomic(&path, b"binary", 0o755).unwrap();
        assert!(!stale.exists());
        assert!(
            other.exists(),
            "only the temporary files of the file written go"
        );
    }

    #[test]
    fn an_edit_is_refused_when_the_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, b"read").unwrap();
        assert!(replace_edited(&path, b"read", b"ours", 0o644).unwrap());
        fs::write(&path, b"theirs").unwrap();
        let err = replace_edited(&path, b"ours", b"ours again", 0o644).unwrap_err();
        assert!(err.is_changed(), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"theirs");
    }

    #[test]
    fn backup_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(!backup(&path, "a").unwrap(), "nothing to back up");
        fs::write(&path, b"original").unwrap();
        assert!(backup(&path, "a").unwrap());
        write_atomic(&path, b"changed by a", 0o644).unwrap();
        // Another runtime's agent backs up what it found; each restores its own.
        assert!(backup(&path, "b").unwrap());
        write_atomic(&path, b"changed by b", 0o644).unwrap();
        restore(&path, "b").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"changed by a");
        restore(&path, "a").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn a_reader_holding_the_old_file_keeps_it_whole() {
        // rename() swaps the directory entry; an open handle (a running shim) keeps the old inode.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim");
        write_atomic(&path, b"old binary", 0o755).unwrap();
        let mut open = File::open(&path).unwrap();
        write_atomic(&path, b"new binary, longer", 0o755).unwrap();
        let mut old = String::new();
        std::io::Read::read_to_string(&mut open, &mut old).unwrap();
        assert_eq!(old, "old binary");
        assert_eq!(fs::read(&path).unwrap(), b"new binary, longer");
    }
}
