//! A runtime's payload: the files its node plan installs (`binaries`: required names,
//! optional ones, the checksums file), read from a local folder for one architecture, with
//! the checksums the node agent verifies before installing anything.
//!
//! A folder that carries its own checksums file (a payload published with `SHA256SUMS`) is
//! verified against it: every file there is listed, every listed file is there and matches,
//! the plan's required files are among them. A folder without one (binaries just built from
//! source) gets the checksums computed here over the plan's files. Either way every ELF file
//! must be built for the image's architecture: a binary of the wrong one would only fail
//! later, on every node.

use std::path::Path;

use sandbox_runtime::manifests::sha256_hex;
use sandbox_runtime::node_plan::Binaries;

use crate::arch::Arch;
use crate::elf::elf_for;
use crate::{Error, Result, io_err};

/// Files by name (relative to the payload folder) with their content.
pub type Files = Vec<(String, Vec<u8>)>;

/// Whether a payload folder must carry its own checksums file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumsFile {
    /// A published payload: its checksums file is part of it.
    Required,
    /// Binaries just built from source: checksums are computed unless the folder has a file.
    IfPresent,
}

/// The payload in `dir` for `arch` as `binaries` describe it, with its checksums file last.
pub fn payload(
    dir: &Path,
    binaries: &Binaries,
    arch: Arch,
    checksums: ChecksumsFile,
) -> Result<Files> {
    let sums = dir.join(&binaries.checksums);
    if sums.exists() || checksums == ChecksumsFile::Required {
        verified(dir, &sums, binaries, arch)
    } else {
        computed(dir, binaries, arch)
    }
}

/// The plan's files in `dir` (the optional ones that are there), with checksums computed.
fn computed(dir: &Path, binaries: &Binaries, arch: Arch) -> Result<Files> {
    let mut names = binaries.names.clone();
    names.sort();
    let mut optional: Vec<&String> = binaries
        .optional
        .iter()
        .filter(|name| dir.join(name).is_file())
        .collect();
    optional.sort();
    names.extend(optional.into_iter().cloned());
    let mut files = Vec::new();
    let mut sums = String::new();
    for name in names {
        let path = dir.join(&name);
        let content = std::fs::read(&path).map_err(io_err(&path))?;
        if content.starts_with(b"\x7fELF") {
            elf_for(&content, arch, &path)?;
        }
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&content)));
        files.push((name, content));
    }
    files.push((binaries.checksums.clone(), sums.into_bytes()));
    Ok(files)
}

/// The files `sums_path` lists in `dir`, verified (see the module's documentation).
fn verified(
    payload_dir: &Path,
    sums_path: &Path,
    binaries: &Binaries,
    arch: Arch,
) -> Result<Files> {
    let checksums = &binaries.checksums;
    let bad = |what: String| Error::Libraries(format!("payload {}: {what}", payload_dir.display()));
    let sums = std::fs::read_to_string(sums_path).map_err(io_err(sums_path))?;
    let mut listed = std::collections::BTreeMap::new();
    for (n, line) in sums
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (hash, file) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(|| {
                bad(format!(
                    "{checksums} line {}: not `<sha256>  <file>`",
                    n + 1
                ))
            })?;
        let plain = !file.is_empty()
            && file != "."
            && file != ".."
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
        if !plain || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "{checksums} line {}: {line:?} is not a sha256 and a plain file name",
                n + 1
            )));
        }
        if listed
            .insert(file.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad(format!("{checksums} lists {file} twice")));
        }
    }
    let missing: Vec<String> = binaries
        .names
        .iter()
        .filter(|name| !listed.contains_key(*name))
        .map(|name| format!("{name} is required (and must be in {checksums})"))
        .collect();
    if !missing.is_empty() {
        return Err(bad(missing.join("; ")));
    }
    let mut present = Vec::new();
    for entry in std::fs::read_dir(payload_dir).map_err(io_err(payload_dir))? {
        let entry = entry.map_err(io_err(payload_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != *checksums && !listed.contains_key(&name) {
            present.push(name);
        }
    }
    if !present.is_empty() {
        present.sort();
        return Err(bad(format!("not in {checksums}: {}", present.join(", "))));
    }
    let mut files = Vec::new();
    for (file, hash) in &listed {
        let path = payload_dir.join(file);
        let content = std::fs::read(&path).map_err(io_err(&path))?;
        if sha256_hex(&content) != *hash {
            return Err(bad(format!(
                "{file} does not match its checksum in {checksums}"
            )));
        }
        if content.starts_with(b"\x7fELF") {
            elf_for(&content, arch, &path)?;
        }
        files.push((file.clone(), content));
    }
    files.push((checksums.to_string(), sums.into_bytes()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binaries() -> Binaries {
        Binaries {
            source: "/usr/local/lib/x".into(),
            checksums: "SHA256SUMS".into(),
            names: vec!["b".into(), "a".into()],
            optional: vec!["extra/c".into(), "d".into()],
            versioned: None,
            pinned: Default::default(),
        }
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    #[test]
    fn without_a_checksums_file_the_plans_files_get_one() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[("a", "1"), ("b", "2"), ("extra/c", "3"), ("unrelated", "4")],
        );
        let files = payload(
            dir.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::IfPresent,
        )
        .unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "extra/c", "SHA256SUMS"]);
        let sums = String::from_utf8(files[3].1.clone()).unwrap();
        assert_eq!(sums.lines().count(), 3);
        assert!(
            sums.starts_with(&format!("{}  a\n", sha256_hex(b"1"))),
            "{sums}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = payload(
            empty.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::IfPresent,
        );
        assert!(e.is_err(), "a required file is missing");
        let e = payload(
            dir.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::Required,
        );
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("SHA256SUMS"),
            "a published payload brings its own: {e}"
        );
    }

    #[test]
    fn a_checksums_file_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let sums = format!("{}  a\n{}  b\n", sha256_hex(b"1"), sha256_hex(b"2"));
        write(dir.path(), &[("a", "1"), ("b", "2"), ("SHA256SUMS", &sums)]);
        let files = payload(
            dir.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::Required,
        )
        .unwrap();
        assert_eq!(files.last().unwrap().1, sums.as_bytes());
        write(dir.path(), &[("b", "changed")]);
        let e = payload(
            dir.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::IfPresent,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("b does not match its checksum in SHA256SUMS"),
            "{e}"
        );
        write(dir.path(), &[("b", "2"), ("stray", "x")]);
        let e = payload(
            dir.path(),
            &binaries(),
            Arch::Amd64,
            ChecksumsFile::IfPresent,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not in SHA256SUMS: stray"), "{e}");
    }
}
