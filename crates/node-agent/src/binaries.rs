//! Installing the runtime's binaries from the image into `spec.binaryPath` on the host:
//! verified against the checksums shipped in the image, skipped when identical, replaced by
//! rename so a running shim never sees a truncated file ("text file busy" cannot happen).

use std::fs;
use std::path::{Path, PathBuf};

use sandbox_runtime::manifests::sha256_hex;

use crate::files::{self, FileError};

/// Name of the checksum file next to the binaries in the image (`sha256sum` format).
pub const CHECKSUMS: &str = "SHA256SUMS";

/// What went wrong installing binaries.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{path}: checksum {actual} does not match {expected} from {CHECKSUMS}; the image is damaged, nothing was installed"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0} is not listed in {CHECKSUMS}; nothing was installed")]
    Unlisted(String),
    #[error("{CHECKSUMS} line {line} is malformed")]
    Malformed { line: usize },
}

/// Reads a `sha256sum` file: `<hex>  <name>` per line.
pub fn parse_checksums(text: &str) -> Result<Vec<(String, String)>, BinaryError> {
    let mut sums = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = line
            .split_once(char::is_whitespace)
            .ok_or(BinaryError::Malformed { line: i + 1 })?;
        let name = name.trim_start().trim_start_matches('*');
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(BinaryError::Malformed { line: i + 1 });
        }
        sums.push((hash.to_ascii_lowercase(), name.to_string()));
    }
    Ok(sums)
}

/// Copies `names` from `source` (the image's folder with [`CHECKSUMS`]) to `target`. Every
/// source is verified before anything is written. Returns the names that were written.
pub fn install(source: &Path, target: &Path, names: &[&str]) -> Result<Vec<String>, BinaryError> {
    let sums_path = source.join(CHECKSUMS);
    let sums = parse_checksums(&fs::read_to_string(&sums_path).map_err(|e| FileError {
        action: "reading",
        path: sums_path.clone(),
        source: e,
    })?)?;
    let mut verified = Vec::new();
    for name in names {
        let expected = sums
            .iter()
            .find(|(_, n)| n == name)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| BinaryError::Unlisted(name.to_string()))?;
        let path = source.join(name);
        let content = fs::read(&path).map_err(|e| FileError {
            action: "reading",
            path: path.clone(),
            source: e,
        })?;
        let actual = sha256_hex(&content);
        if actual != expected {
            return Err(BinaryError::Checksum {
                path,
                expected,
                actual,
            });
        }
        verified.push((name.to_string(), content));
    }
    let mut written = Vec::new();
    for (name, content) in verified {
        if files::write_atomic(&target.join(&name), &content, 0o755)? {
            written.push(name);
        }
    }
    Ok(written)
}

/// Removes `names` from `target`. Running shims keep their (unlinked) files.
pub fn uninstall(target: &Path, names: &[&str]) -> Result<Vec<String>, BinaryError> {
    let mut removed = Vec::new();
    for name in names {
        if files::remove(&target.join(name))? {
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, files: &[(&str, &[u8])]) {
        let mut sums = String::new();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
            sums.push_str(&format!("{}  {name}\n", sha256_hex(content)));
        }
        fs::write(dir.join(CHECKSUMS), sums).unwrap();
    }

    #[test]
    fn installs_verified_binaries_once_and_upgrades_by_rename() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        image(
            src.path(),
            &[("runsc", b"v1"), ("containerd-shim-runsc-v1", b"shim v1")],
        );
        let names = ["runsc", "containerd-shim-runsc-v1"];
        assert_eq!(install(src.path(), dst.path(), &names).unwrap(), names);
        assert!(
            install(src.path(), dst.path(), &names).unwrap().is_empty(),
            "identical: nothing written"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(dst.path().join("runsc"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        let running_shim = fs::File::open(dst.path().join("containerd-shim-runsc-v1")).unwrap();
        image(
            src.path(),
            &[("runsc", b"v2"), ("containerd-shim-runsc-v1", b"shim v2")],
        );
        assert_eq!(install(src.path(), dst.path(), &names).unwrap(), names);
        assert_eq!(fs::read(dst.path().join("runsc")).unwrap(), b"v2");
        drop(running_shim);
        assert_eq!(uninstall(dst.path(), &names).unwrap(), names);
        assert!(uninstall(dst.path(), &names).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_image_installs_nothing() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        image(
            src.path(),
            &[("runsc", b"good"), ("containerd-shim-runsc-v1", b"shim")],
        );
        fs::write(src.path().join("containerd-shim-runsc-v1"), b"tampered").unwrap();
        let err = install(
            src.path(),
            dst.path(),
            &["runsc", "containerd-shim-runsc-v1"],
        )
        .unwrap_err();
        assert!(matches!(err, BinaryError::Checksum { .. }), "{err}");
        assert!(
            !dst.path().join("runsc").exists(),
            "verification happens before any write"
        );
        assert!(matches!(
            install(src.path(), dst.path(), &["other"]).unwrap_err(),
            BinaryError::Unlisted(_)
        ));
        fs::write(src.path().join(CHECKSUMS), "nonsense\n").unwrap();
        assert!(matches!(
            install(src.path(), dst.path(), &["runsc"]).unwrap_err(),
            BinaryError::Malformed { line: 1 }
        ));
    }
}
