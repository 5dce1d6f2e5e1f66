//! Writing files on the node so that no reader ever sees half a file: write a temporary file
//! in the same folder, fsync it, rename it over the target, fsync the folder. A file we change
//! is first copied to `<name>.runtime-sandbox.bak`, so a failed change can be undone.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// The backup of `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".runtime-sandbox.bak");
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
    let dir = path.parent().ok_or_else(|| FileError {
        action: "finding the folder of",
        path: path.to_path_buf(),
        source: std::io::Error::other("no parent folder"),
    })?;
    fs::create_dir_all(dir).map_err(failed("creating", dir))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".runtime-sandbox.tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(failed("creating", &tmp))?;
        fill(&mut file).map_err(failed("writing", &tmp))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(failed("setting the mode of", &tmp))?;
        file.sync_all().map_err(failed("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(failed("renaming over", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed("syncing", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies `path` to its backup (atomically) if it exists. Returns whether there was a file.
pub fn backup(path: &Path) -> Result<bool, FileError> {
    match fs::read(path) {
        Ok(content) => {
            let mode = fs::metadata(path)
                .map_err(failed("reading", path))?
                .permissions()
                .mode()
                & 0o7777;
            write_atomic(&backup_path(path), &content, mode)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(failed("reading", path)(e)),
    }
}

/// Puts the backup of `path` back (atomically).
pub fn restore(path: &Path) -> Result<(), FileError> {
    let backup = backup_path(path);
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
    fn backup_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(!backup(&path).unwrap(), "nothing to back up");
        fs::write(&path, b"original").unwrap();
        assert!(backup(&path).unwrap());
        write_atomic(&path, b"changed", 0o644).unwrap();
        restore(&path).unwrap();
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
