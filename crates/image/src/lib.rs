//! OCI image archives built from local files (`ctr images import` format, also an OCI image
//! layout in a tar): the node agent's image that ships to users, and the small busybox images
//! the test nodes run. Nothing is pulled. Entries carry mtime 0 and a fixed order, so the same
//! files give the same bytes and the same digests.
//!
//! The three JSON documents (config, manifest, index) are written here rather than with the
//! `oci-spec` crate: its `Descriptor` keeps annotations in a `HashMap`, so an index with our two
//! annotations (`io.containerd.image.name`, `org.opencontainers.image.ref.name`) would not
//! serialise to the same bytes twice, and the digest would change on every build.

pub mod chart;

use std::io::Write;
use std::path::{Path, PathBuf};

use sandbox_runtime::gvisor::node::{BINARIES, CHECKSUMS, IMAGE_DIR, SIDECAR_DIR, SIDECARS};
use sandbox_runtime::manifests::sha256_hex;

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the image archive: {0}")]
    Archive(std::io::Error),
    #[error("{0}")]
    Libraries(String),
    #[error("{0}")]
    Chart(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// The product binary in the node agent's image (its entrypoint).
pub const NODE_AGENT_BINARY: &str = "gardener-extension-runtime-sandbox";

/// One entry of an image layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String),
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// A CPU architecture the images are built for (all `linux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture the released images carry, in index order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// This machine's architecture, if it is one we build for.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The name OCI image configurations and indexes use (`amd64`, `arm64`).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Rust target the product binary is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Debian's multiarch tuple: where glibc keeps this architecture's libraries.
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => goblin::elf::header::EM_X86_64,
            Arch::Arm64 => goblin::elf::header::EM_AARCH64,
        }
    }

    /// Where this machine keeps this architecture's C libraries: natively, as Debian's
    /// multiarch packages, or as Debian's cross-compilation packages
    /// (`libc6-arm64-cross` puts them in `/usr/aarch64-linux-gnu/lib`).
    fn library_dirs(self) -> [PathBuf; 3] {
        let tuple = self.multiarch();
        [
            PathBuf::from(format!("/lib/{tuple}")),
            PathBuf::from(format!("/usr/lib/{tuple}")),
            PathBuf::from(format!("/usr/{tuple}/lib")),
        ]
    }
}

/// Parses `ARCH=PATH` (`amd64=/path`), as the image builders' flags take them.
pub fn arch_path(value: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = value
        .split_once('=')
        .ok_or_else(|| format!("expected ARCH=PATH (e.g. amd64=/path), got {value:?}"))?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.oci())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches("linux/") {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            other => Err(format!(
                "unknown architecture {other:?} (supported: amd64, arm64)"
            )),
        }
    }
}

fn tar_err(e: std::io::Error) -> Error {
    Error::Archive(e)
}

/// The uncompressed layer tar of `entries`, in their order.
pub fn layer(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                layer.append_data(&mut header, path, std::io::empty())
            }
            Entry::File {
                path,
                content,
                mode,
            } => {
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                layer.append_data(&mut header, path, content.as_slice())
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                layer.append_link(&mut header, path, target)
            }
        }
        .map_err(tar_err)?;
    }
    layer.into_inner().map_err(tar_err)
}

/// One architecture's variant of an image: its one layer and its configuration.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub arch: Arch,
    pub entries: Vec<Entry>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// The user (`uid:gid`) its processes run as unless the pod says otherwise.
    pub user: Option<String>,
}

/// The manifest of `image` and the blobs it refers to (layer, config).
fn manifest(image: &PlatformImage) -> Result<(Vec<u8>, [Vec<u8>; 2])> {
    let layer = layer(&image.entries)?;
    let layer_digest = sha256_hex(&layer);
    let mut image_config = serde_json::json!({"Entrypoint": image.entrypoint, "Env": image.env});
    if let Some(user) = &image.user {
        image_config["User"] = serde_json::json!(user);
    }
    let config = serde_json::json!({
        "architecture": image.arch.oci(),
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    Ok((manifest, [layer, config]))
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The descriptor of `blob` (of `media_type`), with the platform of `arch` when given.
fn descriptor(media_type: &str, blob: &[u8], arch: Option<Arch>) -> serde_json::Value {
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(blob)),
        "size": blob.len(),
    });
    if let Some(arch) = arch {
        descriptor["platform"] = serde_json::json!({"architecture": arch.oci(), "os": "linux"});
    }
    descriptor
}

/// `index.json` naming `descriptor` `name`, as `ctr images import` and OCI tools read it.
fn named_index(name: &str, mut descriptor: serde_json::Value) -> Vec<u8> {
    descriptor["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name,
    });
    serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]})
        .to_string()
        .into_bytes()
}

/// The OCI layout as a tar: `oci-layout`, `index.json`, then the blobs in the given order.
fn layout(index: &[u8], blobs: &[&[u8]]) -> Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut file = |path: String, content: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        archive.append_data(&mut header, path, content)
    };
    file("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(tar_err)?;
    file("index.json".into(), index).map_err(tar_err)?;
    for blob in blobs {
        file(format!("blobs/sha256/{}", sha256_hex(blob)), blob).map_err(tar_err)?;
    }
    let mut bytes = archive.into_inner().map_err(tar_err)?;
    bytes.flush().map_err(tar_err)?;
    Ok(bytes)
}

/// An image archive named `name` for this machine's architecture, with one layer of
/// `entries`, `entrypoint` and `env` (the test nodes' images).
pub fn archive(
    name: &str,
    entries: &[Entry],
    entrypoint: &[&str],
    env: &[&str],
) -> Result<Vec<u8>> {
    let arch = Arch::host().ok_or_else(|| {
        Error::Libraries(format!(
            "this machine's architecture {} is not one we build images for",
            std::env::consts::ARCH
        ))
    })?;
    let image = PlatformImage {
        arch,
        entries: entries.to_vec(),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        user: None,
    };
    let (manifest, [layer, config]) = manifest(&image)?;
    let index = named_index(name, descriptor(MANIFEST, &manifest, Some(arch)));
    layout(&index, &[&layer, &config, &manifest])
}

/// A multi-architecture image archive named `name`: `index.json` names one image index,
/// which lists one manifest per platform (what registries serve and `ctr images import`,
/// `skopeo` or `crane` read). Platforms appear in the given order.
pub fn multi_arch_archive(name: &str, images: &[PlatformImage]) -> Result<Vec<u8>> {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let (manifest, [layer, config]) = manifest(image)?;
        manifests.push(descriptor(MANIFEST, &manifest, Some(image.arch)));
        blobs.extend([layer, config, manifest]);
    }
    let image_index =
        serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
            .to_string()
            .into_bytes();
    let index = named_index(name, descriptor(INDEX, &image_index, None));
    blobs.push(image_index);
    layout(&index, &blobs.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// What an image archive holds for one platform: read back from the archive's bytes.
#[derive(Clone, Debug)]
pub struct ArchivedImage {
    /// The platform's architecture as the index names it.
    pub architecture: String,
    /// The image configuration.
    pub config: serde_json::Value,
    /// The one layer (an uncompressed tar).
    pub layer: Vec<u8>,
}

/// The images of an archive built here, one per platform, in index order: follows
/// `index.json` through image indexes to the manifests.
pub fn read_archive(archive: &[u8]) -> Result<Vec<ArchivedImage>> {
    use std::io::Read;
    let bad = |what: String| Error::Archive(std::io::Error::other(what));
    let mut files = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(archive).entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(tar_err)?;
        files.insert(path, data);
    }
    let raw = |digest: &serde_json::Value| -> Result<&Vec<u8>> {
        let digest = digest.as_str().unwrap_or_default();
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        files
            .get(&path)
            .ok_or_else(|| bad(format!("{path} is missing")))
    };
    let blob = |digest: &serde_json::Value| -> Result<serde_json::Value> {
        serde_json::from_slice(raw(digest)?).map_err(|e| bad(format!("{digest}: {e}")))
    };
    let index: serde_json::Value = serde_json::from_slice(
        files
            .get("index.json")
            .ok_or_else(|| bad("index.json is missing".into()))?,
    )
    .map_err(|e| bad(format!("index.json: {e}")))?;
    let mut pending: Vec<serde_json::Value> =
        index["manifests"].as_array().cloned().unwrap_or_default();
    pending.reverse();
    let mut images = Vec::new();
    while let Some(descriptor) = pending.pop() {
        let document = blob(&descriptor["digest"])?;
        if descriptor["mediaType"] == INDEX {
            let mut children = document["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            children.reverse();
            pending.extend(children);
            continue;
        }
        let config = blob(&document["config"]["digest"])?;
        let layer_digest = document["layers"][0]["digest"].as_str().unwrap_or_default();
        let layer_path = format!(
            "blobs/sha256/{}",
            layer_digest.trim_start_matches("sha256:")
        );
        let layer = files
            .get(&layer_path)
            .cloned()
            .ok_or_else(|| bad(format!("{layer_path} is missing")))?;
        images.push(ArchivedImage {
            architecture: config["architecture"].as_str().unwrap_or_default().into(),
            config,
            layer,
        });
    }
    Ok(images)
}

/// An image archive named `name`: one layer with the static busybox and its applets, and
/// `entrypoint`.
pub fn oci_archive(name: &str, busybox: &[u8], entrypoint: &[&str]) -> Result<Vec<u8>> {
    let mut entries: Vec<Entry> = ["bin", "dev", "etc", "proc", "sys", "tmp"]
        .into_iter()
        .map(|d| Entry::Dir(d.into()))
        .collect();
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        content: busybox.to_vec(),
        mode: 0o755,
    });
    for applet in ["sh", "sleep", "dmesg", "cat", "echo", "ls", "uname"] {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    archive(name, &entries, entrypoint, &["PATH=/bin"])
}

/// Parses `bytes` (`what`, for errors) as an ELF file built for `arch`.
fn elf_for<'a>(bytes: &'a [u8], arch: Arch, what: &Path) -> Result<goblin::elf::Elf<'a>> {
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

/// The files of the image's gVisor folder (the node plan's binaries): the binaries from
/// `gvisor_dir` by name (with `runsc_trailer` appended to runsc, which makes a "new release"
/// that still runs: ELF ignores trailing bytes), runsc's sidecars that `gvisor_dir` has in
/// `gvisor-bin/` (none when built from the Go module, docs/gvisor-packaging.md), and their
/// checksums file, last.
pub fn gvisor_source(gvisor_dir: &Path, runsc_trailer: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut sums = String::new();
    let mut binaries: Vec<String> = BINARIES.iter().map(|b| b.to_string()).collect();
    binaries.sort();
    for sidecar in SIDECARS {
        let name = format!("{SIDECAR_DIR}/{sidecar}");
        if gvisor_dir.join(&name).is_file() {
            binaries.push(name);
        }
    }
    for binary in binaries {
        let path = gvisor_dir.join(&binary);
        let mut content = std::fs::read(&path).map_err(io_err(&path))?;
        if binary == "runsc" {
            content.extend_from_slice(runsc_trailer);
        }
        sums.push_str(&format!("{}  {binary}\n", sha256_hex(&content)));
        files.push((binary, content));
    }
    files.push((CHECKSUMS.to_string(), sums.into_bytes()));
    Ok(files)
}

/// Writes [`gvisor_source`] into `dest` (created): what the agent's `--source-dir` reads.
pub fn write_gvisor_source(gvisor_dir: &Path, runsc_trailer: &[u8], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(io_err(dest))?;
    for (name, content) in gvisor_source(gvisor_dir, runsc_trailer)? {
        let path = dest.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, content).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The user the controller image runs as (distroless' `nonroot`).
pub const NONROOT: &str = "65532:65532";

/// The files an image needs to run `binary` (built for `arch`) as its entrypoint `/<name>`:
/// the directories, the binary and the C libraries it links, as `(dirs, files)`.
fn binary_with_libraries(
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

/// One architecture's inputs of the node agent's image.
#[derive(Clone, Copy, Debug)]
pub struct NodeAgentPlatform<'a> {
    pub arch: Arch,
    /// The product binary built for `arch`.
    pub binary: &'a Path,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` built for `arch`.
    pub gvisor_dir: &'a Path,
}

/// The node agent's image, one variant per platform: the product binary as entrypoint, the C
/// libraries it links (glibc and libgcc, as distroless `cc` images carry), and in gVisor's
/// image folder (the node plan's `binaries.source`) that platform's gVisor binaries with their
/// checksums, which the agent verifies before installing anything.
pub fn node_agent_image(name: &str, platforms: &[NodeAgentPlatform<'_>]) -> Result<Vec<u8>> {
    let mut sources = Vec::new();
    for platform in platforms {
        let mut files = Vec::new();
        for (name, content) in gvisor_source(platform.gvisor_dir, &[])? {
            if name != CHECKSUMS {
                // A runsc of the wrong architecture would only fail on the node.
                elf_for(&content, platform.arch, &platform.gvisor_dir.join(&name))?;
            }
            files.push((name, content));
        }
        sources.push((platform.arch, platform.binary, files));
    }
    agent_image(name, IMAGE_DIR, CHECKSUMS, &sources)
}

/// Pairs each `--binary ARCH=...` with the `--<flag> ARCH=...` of the same architecture, for
/// the image builders' command lines.
pub fn pair_by_arch<'a>(
    binaries: &'a [(Arch, PathBuf)],
    others: &'a [(Arch, PathBuf)],
    flag: &str,
) -> std::result::Result<Vec<(Arch, &'a Path, &'a Path)>, String> {
    binaries
        .iter()
        .map(|(arch, binary)| {
            others
                .iter()
                .find(|(a, _)| a == arch)
                .map(|(_, other)| (*arch, binary.as_path(), other.as_path()))
                .ok_or_else(|| format!("--binary {arch}=... needs a --{flag} {arch}=..."))
        })
        .collect()
}

/// Writes an image archive to `out` (creating its folder) and prints what was written.
pub fn write_archive(out: &Path, name: &str, archive: &[u8], archs: &[Arch]) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(out, archive).map_err(io_err(out))?;
    println!(
        "{}: {name} for {} ({:.1} MB, sha256 {})",
        out.display(),
        archs
            .iter()
            .map(|a| format!("linux/{a}"))
            .collect::<Vec<_>>()
            .join(", "),
        archive.len() as f64 / 1e6,
        &sha256_hex(archive)[..16]
    );
    Ok(())
}

/// One architecture's inputs of Kata's node agent image.
#[derive(Clone, Copy, Debug)]
pub struct KataPlatform<'a> {
    pub arch: Arch,
    /// The product binary built for `arch`.
    pub binary: &'a Path,
    /// The payload folder of `arch` (docs/kata.md): the shim, guest kernel and image,
    /// optional hypervisors, and `SHA256SUMS` over all of them.
    pub payload_dir: &'a Path,
}

/// Kata's payload folder, verified: `SHA256SUMS` lists every file (and only files that are
/// there, with matching checksums), the shim and guest files are present, and every ELF file
/// is built for `arch`. Returns the files with `SHA256SUMS` last. A payload that fails any
/// check is refused with what is wrong: it would only fail later, on every node.
pub fn kata_payload(payload_dir: &Path, arch: Arch) -> Result<Files> {
    use sandbox_runtime::kata::node::{CHECKSUMS, GUEST_IMAGE, GUEST_KERNEL, SHIM};
    let bad = |what: String| Error::Libraries(format!("payload {}: {what}", payload_dir.display()));
    let sums_path = payload_dir.join(CHECKSUMS);
    let sums = std::fs::read_to_string(&sums_path).map_err(io_err(&sums_path))?;
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
                    "{CHECKSUMS} line {}: not `<sha256>  <file>`",
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
                "{CHECKSUMS} line {}: {line:?} is not a sha256 and a plain file name",
                n + 1
            )));
        }
        if listed
            .insert(file.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad(format!("{CHECKSUMS} lists {file} twice")));
        }
    }
    for required in [SHIM, GUEST_KERNEL, GUEST_IMAGE] {
        if !listed.contains_key(required) {
            return Err(bad(format!(
                "{required} is required (and must be in {CHECKSUMS})"
            )));
        }
    }
    let mut present = Vec::new();
    for entry in std::fs::read_dir(payload_dir).map_err(io_err(payload_dir))? {
        let entry = entry.map_err(io_err(payload_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != CHECKSUMS && !listed.contains_key(&name) {
            present.push(name);
        }
    }
    if !present.is_empty() {
        present.sort();
        return Err(bad(format!("not in {CHECKSUMS}: {}", present.join(", "))));
    }
    let mut files = Vec::new();
    for (file, hash) in &listed {
        let path = payload_dir.join(file);
        let content = std::fs::read(&path).map_err(io_err(&path))?;
        if sha256_hex(&content) != *hash {
            return Err(bad(format!(
                "{file} does not match its checksum in {CHECKSUMS}"
            )));
        }
        if content.starts_with(b"\x7fELF") {
            elf_for(&content, arch, &path)?;
        }
        files.push((file.clone(), content));
    }
    files.push((CHECKSUMS.to_string(), sums.into_bytes()));
    Ok(files)
}

/// Kata's node agent image (`runtime-kata-installation`), one variant per platform: the
/// product binary and its C libraries, and the verified payload in Kata's image folder (the
/// node plan's `binaries.source`), which the agent verifies again before installing it.
pub fn kata_node_agent_image(name: &str, platforms: &[KataPlatform<'_>]) -> Result<Vec<u8>> {
    use sandbox_runtime::kata::node::{CHECKSUMS, IMAGE_DIR};
    let mut sources = Vec::new();
    for platform in platforms {
        let files = kata_payload(platform.payload_dir, platform.arch)?;
        sources.push((platform.arch, platform.binary, files));
    }
    agent_image(name, IMAGE_DIR, CHECKSUMS, &sources)
}

/// Files by name with their content.
type Files = Vec<(String, Vec<u8>)>;

/// A node agent image: per `(arch, binary, files)`, the binary as entrypoint with its C
/// libraries and `files` in `source_dir` (executable, but the checksums file).
fn agent_image(
    name: &str,
    source_dir: &str,
    checksums: &str,
    sources: &[(Arch, &Path, Files)],
) -> Result<Vec<u8>> {
    let source_dir = source_dir.trim_start_matches('/');
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
            // A payload file in a subfolder (runsc's `gvisor-bin/`) needs its folder.
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
