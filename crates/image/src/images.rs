//! The product's images: the controller's, and a node agent's, which carries the payload a
//! runtime's node plan installs (`binaries`: its image folder, file names and checksums
//! file). Which runtime an image is for is the caller's choice; nothing here names one.

use std::path::Path;

use sandbox_runtime::node_plan::{Binaries, Pins};

use crate::Result;
use crate::arch::Arch;
use crate::elf::binary_with_libraries;
use crate::oci::{Entry, PlatformImage, multi_arch_archive};
use crate::payload::{ChecksumsFile, Files, payload};

/// The product binary in the images (their entrypoint).
pub const NODE_AGENT_BINARY: &str = "gardener-extension-runtime-sandbox";
/// The user the controller image runs as (distroless' `nonroot`).
pub const NONROOT: &str = "65532:65532";

/// The product binary's image configuration: `/gardener-extension-runtime-sandbox` as entrypoint
/// (the chart's and the DaemonSet's command), nothing on `PATH` but `/`.
fn product_image(
    arch: Arch,
    mut dirs: Vec<String>,
    files: Vec<Entry>,
    user: Option<&str>,
) -> PlatformImage {
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<Entry> = dirs.into_iter().map(Entry::Dir).collect();
    entries.extend(files);
    PlatformImage {
        arch,
        entries,
        entrypoint: vec![format!("/{NODE_AGENT_BINARY}")],
        env: vec!["PATH=/".into()],
        user: user.map(str::to_string),
    }
}

/// The controller's image, one variant per `(architecture, product binary)`: the binary as
/// entrypoint, the C libraries it links, and `/etc/passwd` and `/etc/group` naming the
/// non-root user 65532 it runs as. Nothing else: no shell, no package manager, no tools.
pub fn controller_image(name: &str, binaries: &[(Arch, &Path)]) -> Result<Vec<u8>> {
    let mut images = Vec::new();
    for &(arch, binary) in binaries {
        let (mut dirs, libraries) = binary_with_libraries(binary, arch, NODE_AGENT_BINARY)?;
        dirs.extend(["etc".to_string(), "tmp".into()]);
        let mut files = vec![
            Entry::File {
                path: "etc/passwd".into(),
                content: b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n".to_vec(),
                mode: 0o644,
            },
            Entry::File {
                path: "etc/group".into(),
                content: b"root:x:0:\nnonroot:x:65532:\n".to_vec(),
                mode: 0o644,
            },
        ];
        files.extend(libraries);
        images.push(product_image(arch, dirs, files, Some(NONROOT)));
    }
    multi_arch_archive(name, &images)
}

/// One architecture's inputs of a node agent's image.
#[derive(Clone, Copy, Debug)]
pub struct AgentPlatform<'a> {
    pub arch: Arch,
    /// The product binary built for `arch`.
    pub binary: &'a Path,
    /// The folder with the payload for `arch` (see [`payload`]).
    pub payload_dir: &'a Path,
}

/// A node agent's image, one variant per platform: the product binary as entrypoint, the C
/// libraries it links (glibc and libgcc, as distroless `cc` images carry), and in the plan's
/// image folder (`binaries.source`) that platform's payload with its checksums file, which
/// the agent verifies before installing anything.
pub fn agent_image(
    name: &str,
    binaries: &Binaries,
    checksums: ChecksumsFile,
    platforms: &[AgentPlatform<'_>],
) -> Result<Vec<u8>> {
    Ok(recorded_agent_image(name, binaries, checksums, platforms)?.0)
}

/// [`agent_image`], and the sha256 of every binary it carries by architecture: what the
/// image vector records (`binaries`) so that the seed, not the image, says which binaries
/// nodes may install (docs/security.md).
pub fn recorded_agent_image(
    name: &str,
    binaries: &Binaries,
    checksums: ChecksumsFile,
    platforms: &[AgentPlatform<'_>],
) -> Result<(Vec<u8>, Pins)> {
    let mut sources = Vec::new();
    let mut pins = Pins::new();
    for platform in platforms {
        let files = payload(platform.payload_dir, binaries, platform.arch, checksums)?;
        let recorded = files
            .iter()
            .filter(|(file, _)| binaries.names.contains(file) || binaries.optional.contains(file))
            .map(|(file, content)| {
                (
                    file.clone(),
                    sandbox_runtime::manifests::sha256_hex(content),
                )
            })
            .collect();
        pins.insert(platform.arch.to_string(), recorded);
        sources.push((platform.arch, platform.binary, files));
    }
    Ok((image_with_payload(name, binaries, &sources)?, pins))
}

/// Per `(arch, binary, files)`, the binary as entrypoint with its C libraries and `files` in
/// the plan's image folder (executable, but the checksums file).
fn image_with_payload(
    name: &str,
    binaries: &Binaries,
    sources: &[(Arch, &Path, Files)],
) -> Result<Vec<u8>> {
    let source_dir = binaries.source.trim_start_matches('/');
    let checksums = binaries.checksums.as_str();
    let mut images = Vec::new();
    for (arch, binary, source) in sources {
        let (mut dirs, mut files) = binary_with_libraries(binary, *arch, NODE_AGENT_BINARY)?;
        dirs.extend(["etc".to_string(), "tmp".into()]);
        let mut parent = Some(Path::new(source_dir));
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        for (file, content) in source {
            // A payload file in a subfolder (a sidecar folder) needs its folder.
            if let Some((folder, _)) = file.rsplit_once('/') {
                let folder = format!("{source_dir}/{folder}");
                if !dirs.contains(&folder) {
                    dirs.push(folder);
                }
            }
            files.push(Entry::File {
                path: format!("{source_dir}/{file}"),
                content: content.clone(),
                mode: if file == checksums { 0o644 } else { 0o755 },
            });
        }
        images.push(product_image(*arch, dirs, files, None));
    }
    multi_arch_archive(name, &images)
}
