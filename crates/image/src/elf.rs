//! What a binary needs to run in an image without a distribution: the shared libraries it
//! links, found from the ELF files themselves (so it works for a foreign architecture too).

use std::path::{Path, PathBuf};

use crate::arch::Arch;
use crate::oci::Entry;
use crate::{Error, Result, io_err};

/// Parses `bytes` (`what`, for errors) as an ELF file built for `arch`.
pub fn elf_for<'a>(bytes: &'a [u8], arch: Arch, what: &Path) -> Result<goblin::elf::Elf<'a>> {
    let elf = goblin::elf::Elf::parse(bytes)
        .map_err(|e| Error::Libraries(format!("{}: not an ELF file: {e}", what.display())))?;
    if elf.header.e_machine != arch.elf_machine() {
        return Err(Error::Libraries(format!(
            "{} is built for ELF machine {}, not for linux/{arch}",
            what.display(),
            elf.header.e_machine
        )));
    }
    Ok(elf)
}

/// The file `name` for `arch` on this machine, from [`Arch::library_dirs`]: its path and
/// content.
fn find_library(name: &str, arch: Arch) -> Result<(PathBuf, Vec<u8>)> {
    let dirs = arch.library_dirs();
    for dir in &dirs {
        let path = dir.join(name);
        if let Ok(bytes) = std::fs::read(&path)
            && elf_for(&bytes, arch, &path).is_ok()
        {
            return Ok((path, bytes));
        }
    }
    Err(Error::Libraries(format!(
        "{name} for linux/{arch} is not in {dirs:?}; install glibc for it (hack/prereqs.sh \
         installs Debian's libc6-dev-arm64-cross for arm64)"
    )))
}

/// The shared libraries `binary` (the ELF file at `path`, built for `arch`) loads,
/// transitively, read from the ELF files themselves (`PT_INTERP`, `DT_NEEDED`) so that it works
/// for a foreign architecture too: `(path in the image, content)`, sorted by path. The dynamic
/// loader goes where `PT_INTERP` says, libraries into `lib/<multiarch>/`, where glibc's loader
/// looks first. A static binary needs none.
fn shared_libraries(binary: &[u8], path: &Path, arch: Arch) -> Result<Vec<(String, Vec<u8>)>> {
    let elf = elf_for(binary, arch, path)?;
    let Some(interpreter) = elf.interpreter else {
        return Ok(Vec::new());
    };
    let loader_name = Path::new(interpreter)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = std::collections::BTreeMap::new();
    found.insert(
        interpreter.trim_start_matches('/').to_string(),
        find_library(&loader_name, arch)?.1,
    );
    let mut pending: Vec<String> = elf.libraries.iter().map(|l| l.to_string()).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if name == loader_name || !seen.insert(name.clone()) {
            continue;
        }
        let (path, library) = find_library(&name, arch)?;
        pending.extend(
            elf_for(&library, arch, &path)?
                .libraries
                .iter()
                .map(|l| l.to_string()),
        );
        found.insert(format!("lib/{}/{name}", arch.multiarch()), library);
    }
    Ok(found.into_iter().collect())
}

/// The files an image needs to run `binary` (built for `arch`) as its entrypoint `/<name>`:
/// the directories, the binary and the C libraries it links, as `(dirs, files)`.
pub fn binary_with_libraries(
    binary: &Path,
    arch: Arch,
    name: &str,
) -> Result<(Vec<String>, Vec<Entry>)> {
    let content = std::fs::read(binary).map_err(io_err(binary))?;
    let libraries = shared_libraries(&content, binary, arch)?;
    let mut dirs = Vec::new();
    let mut files = vec![Entry::File {
        path: name.into(),
        content,
        mode: 0o755,
    }];
    for (path, content) in libraries {
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        files.push(Entry::File {
            path,
            content,
            mode: 0o755,
        });
    }
    Ok((dirs, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_of_another_architecture_is_refused() {
        let me = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&me).unwrap();
        let host = Arch::host().unwrap();
        let other = Arch::ALL.into_iter().find(|a| *a != host).unwrap();
        assert!(elf_for(&bytes, host, &me).is_ok());
        let e = elf_for(&bytes, other, &me).unwrap_err().to_string();
        assert!(e.contains("is built for ELF machine"), "{e}");
        assert!(elf_for(b"#!/bin/sh", host, &me).is_err());
    }

    #[test]
    fn this_test_binary_brings_its_loader_and_libc() {
        let me = std::env::current_exe().unwrap();
        let host = Arch::host().unwrap();
        let (dirs, files) = binary_with_libraries(&me, host, "me").unwrap();
        let paths: Vec<String> = files
            .iter()
            .map(|f| match f {
                Entry::File { path, .. } => path.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(paths[0], "me");
        assert!(
            paths
                .iter()
                .any(|p| p == &format!("lib/{}/libc.so.6", host.multiarch())),
            "{paths:?}"
        );
        assert!(dirs.iter().any(|d| d == "lib"), "{dirs:?}");
    }
}
