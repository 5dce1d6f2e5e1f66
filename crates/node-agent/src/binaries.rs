//! Installing the runtime's binaries from the image into `spec.binaryPath` on the host:
//! verified against the checksums shipped in the image, skipped when identical, replaced by
//! rename so a running shim never sees a truncated file ("text file busy" cannot happen).
//! Files are hashed and copied in chunks: a runtime's binary can be ~100 MB, and the agent's
//! memory limit is 128 MiB.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::files::{self, FileError};

const CHUNK: usize = 64 * 1024;

/// Lower-case hex sha256 of what `reader` yields, copying it to `sink` on the way.
fn hash_copy(mut reader: impl Read, mut sink: impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        sink.write_all(&buffer[..n])?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Lower-case hex sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    File::open(path)
        .and_then(|file| hash_copy(file, std::io::sink()))
        .map_err(files::failed("reading", path))
}

/// What went wrong installing binaries.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{path}: checksum {actual} does not match {expected} from the image's checksums file; the image is damaged, nothing was installed"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0} is not listed in the image's checksums file; nothing was installed")]
    Unlisted(String),
    #[error("the image's checksums file, line {line}, is malformed")]
    Malformed { line: usize },
    /// The image's binary is not the one the seed recorded for it (the image vector's
    /// checksums): the image changed after it was recorded, its own checksums file agreeing
    /// or not.
    #[error(
        "{name}: the image's binary has sha256 {image}, the seed expects {seed} (recorded in the image vector); the image was changed after it was recorded, nothing was installed"
    )]
    NotAsPinned {
        name: String,
        image: String,
        seed: String,
    },
    #[error(
        "{name} is not among the binaries the seed recorded for {arch} (the image vector's checksums); nothing was installed"
    )]
    Unpinned { name: String, arch: String },
}

impl BinaryError {
    /// Whether the seed's record refused the image (as opposed to a damaged or unreadable one).
    pub fn is_pin_violation(&self) -> bool {
        matches!(
            self,
            BinaryError::NotAsPinned { .. } | BinaryError::Unpinned { .. }
        )
    }
}

/// What the seed expects of one architecture's binaries, if it recorded anything: `pinned`
/// (the plan's, by architecture) for `arch`. A plan that pins other architectures only pins
/// this one to nothing: every binary is then [`BinaryError::Unpinned`].
pub struct Expected<'a> {
    pub arch: &'a str,
    pub sums: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl<'a> Expected<'a> {
    /// Nothing recorded: the image's checksums file decides.
    pub const NONE: Expected<'static> = Expected {
        arch: "",
        sums: None,
    };

    /// From the plan's `pinned` for this machine.
    pub fn for_host(pinned: &'a sandbox_runtime::node_plan::Pins) -> Self {
        static EMPTY: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        let arch = sandbox_runtime::node_plan::host_arch();
        Expected {
            arch,
            sums: (!pinned.is_empty()).then(|| pinned.get(arch).unwrap_or(&EMPTY)),
        }
    }
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

/// Copies `names` from `source` (the image's folder with the `sha256sum` file `checksums`)
/// to `target`. Every source is verified before anything is written. Returns the names that
/// were written.
pub fn install(
    source: &Path,
    checksums: &str,
    target: &Path,
    names: &[String],
) -> Result<Vec<String>, BinaryError> {
    install_with_optional(source, checksums, target, names, &[], &Expected::NONE)
}

/// [`install`], plus those of `optional` that the checksums file lists, each also checked
/// against what the seed `expected`.
pub fn install_with_optional(
    source: &Path,
    checksums: &str,
    target: &Path,
    names: &[String],
    optional: &[String],
    expected_by_seed: &Expected<'_>,
) -> Result<Vec<String>, BinaryError> {
    let sums_path = source.join(checksums);
    let sums = parse_checksums(
        &fs::read_to_string(&sums_path).map_err(files::failed("reading", &sums_path))?,
    )?;
    let listed: Vec<String> = optional
        .iter()
        .filter(|name| sums.iter().any(|(_, n)| n == *name))
        .cloned()
        .collect();
    fs::create_dir_all(target).map_err(files::failed("creating", target))?;
    let mut verified = Vec::new();
    for name in names.iter().chain(&listed) {
        let expected = sums
            .iter()
            .find(|(_, n)| n == name)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| BinaryError::Unlisted(name.clone()))?;
        let path = source.join(name);
        let actual = sha256_file(&path)?;
        if let Some(seed) = expected_by_seed.sums {
            let seed = seed.get(name).ok_or_else(|| BinaryError::Unpinned {
                name: name.clone(),
                arch: expected_by_seed.arch.to_string(),
            })?;
            if *seed != actual {
                return Err(BinaryError::NotAsPinned {
                    name: name.clone(),
                    image: actual,
                    seed: seed.clone(),
                });
            }
        }
        if actual != expected {
            return Err(BinaryError::Checksum {
                path,
                expected,
                actual,
            });
        }
        verified.push((name.clone(), path, expected));
    }
    let mut written = Vec::new();
    for (name, path, expected) in verified {
        let destination = target.join(&name);
        // A name may have a folder (a runtime's sidecar folder).
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent).map_err(files::failed("creating", parent))?;
        }
        if destination.exists()
            && files::has_mode(&destination, 0o755)
            && sha256_file(&destination)? == expected
        {
            continue;
        }
        // Hashed again while copying: what lands on the node is what was verified.
        let mut copied = None;
        files::write_atomic_with(&destination, 0o755, |file| {
            let actual = hash_copy(File::open(&path)?, &mut *file)?;
            if actual != expected {
                copied = Some(actual);
                return Err(std::io::Error::other("changed while copying"));
            }
            Ok(())
        })
        .map_err(|e| match copied.take() {
            Some(actual) => BinaryError::Checksum {
                path: path.clone(),
                expected: expected.clone(),
                actual,
            },
            None => e.into(),
        })?;
        written.push(name);
    }
    Ok(written)
}

/// The version folders below `target` other than `keep` (sorted).
pub fn other_versions(target: &Path, keep: &str) -> Result<Vec<String>, FileError> {
    let entries = match fs::read_dir(target) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(files::failed("reading", target)(e)),
    };
    let mut versions: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != keep && !name.starts_with('.'))
        .collect();
    versions.sort();
    Ok(versions)
}

/// Removes the version folder `target/version` with everything in it.
pub fn remove_version(target: &Path, version: &str) -> Result<(), FileError> {
    let dir = target.join(version);
    crate::fault::point("remove folder", &dir);
    fs::remove_dir_all(&dir).map_err(files::failed("removing", &dir))
}

/// Removes `names` from `target`. Running shims keep their (unlinked) files.
pub fn uninstall(target: &Path, names: &[String]) -> Result<Vec<String>, BinaryError> {
    let mut removed = Vec::new();
    for name in names {
        if files::remove(&target.join(name))? {
            removed.push(name.clone());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_runtime::manifests::sha256_hex;

    const CHECKSUMS: &str = "SHA256SUMS";

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn image(dir: &Path, files: &[(&str, &[u8])]) {
        let mut sums = String::new();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
            sums.push_str(&format!("{}  {name}\n", sha256_hex(content)));
        }
        fs::write(dir.join(CHECKSUMS), sums).unwrap();
    }

    #[test]
    fn a_tampered_image_with_matching_checksums_is_refused_when_the_seed_pinned_the_binaries() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pinned: sandbox_runtime::node_plan::Pins = [(
            sandbox_runtime::node_plan::host_arch().to_string(),
            [
                ("runtime".to_string(), sha256_hex(b"v1")),
                ("shim".to_string(), sha256_hex(b"shim v1")),
            ]
            .into(),
        )]
        .into();
        let names = strings(&["runtime", "shim"]);
        let install = |pins: &sandbox_runtime::node_plan::Pins| {
            install_with_optional(
                src.path(),
                CHECKSUMS,
                dst.path(),
                &names,
                &[],
                &Expected::for_host(pins),
            )
        };
        // Whoever pushed the tag replaced the runtime and wrote a checksums file to match.
        image(src.path(), &[("runtime", b"evil"), ("shim", b"shim v1")]);
        let e = install(&pinned).unwrap_err();
        assert!(e.is_pin_violation(), "{e}");
        assert!(
            e.to_string()
                .contains("runtime: the image's binary has sha256")
                && e.to_string().contains("the seed expects"),
            "{e}"
        );
        assert!(!dst.path().join("runtime").exists() && !dst.path().join("shim").exists());
        // Without the seed's record, the image's own checksums file is all there is.
        assert_eq!(install(&Default::default()).unwrap(), names);
        // A binary the seed did not record, or an architecture it recorded nothing for.
        fs::remove_dir_all(dst.path()).unwrap();
        image(src.path(), &[("runtime", b"v1"), ("shim", b"shim v1")]);
        assert_eq!(install(&pinned).unwrap(), names);
        let mut partial = pinned.clone();
        partial.values_mut().for_each(|m| {
            m.remove("shim");
        });
        assert!(matches!(
            install(&partial),
            Err(BinaryError::Unpinned { .. })
        ));
        let other: sandbox_runtime::node_plan::Pins =
            [("s390x".to_string(), Default::default())].into();
        assert!(matches!(install(&other), Err(BinaryError::Unpinned { .. })));
    }

    #[test]
    fn installs_verified_binaries_once_and_upgrades_by_rename() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        image(src.path(), &[("runtime", b"v1"), ("shim", b"shim v1")]);
        let names = strings(&["runtime", "shim"]);
        assert_eq!(
            install(src.path(), CHECKSUMS, dst.path(), &names).unwrap(),
            names
        );
        assert!(
            install(src.path(), CHECKSUMS, dst.path(), &names)
                .unwrap()
                .is_empty(),
            "identical: nothing written"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(dst.path().join("runtime"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        let running_shim = fs::File::open(dst.path().join("shim")).unwrap();
        image(src.path(), &[("runtime", b"v2"), ("shim", b"shim v2")]);
        assert_eq!(
            install(src.path(), CHECKSUMS, dst.path(), &names).unwrap(),
            names
        );
        assert_eq!(fs::read(dst.path().join("runtime")).unwrap(), b"v2");
        drop(running_shim);
        assert_eq!(uninstall(dst.path(), &names).unwrap(), names);
        assert!(uninstall(dst.path(), &names).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_image_installs_nothing() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        image(src.path(), &[("runtime", b"good"), ("shim", b"shim")]);
        fs::write(src.path().join("shim"), b"tampered").unwrap();
        let err = install(
            src.path(),
            CHECKSUMS,
            dst.path(),
            &strings(&["runtime", "shim"]),
        )
        .unwrap_err();
        assert!(matches!(err, BinaryError::Checksum { .. }), "{err}");
        assert!(
            !dst.path().join("runtime").exists(),
            "verification happens before any write"
        );
        assert!(matches!(
            install(src.path(), CHECKSUMS, dst.path(), &strings(&["other"])).unwrap_err(),
            BinaryError::Unlisted(_)
        ));
        fs::write(src.path().join(CHECKSUMS), "nonsense\n").unwrap();
        assert!(matches!(
            install(src.path(), CHECKSUMS, dst.path(), &strings(&["runtime"])).unwrap_err(),
            BinaryError::Malformed { line: 1 }
        ));
    }
}
