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
use std::process::Command;

use sandbox_runtime::gvisor::node::{BINARIES, CHECKSUMS, IMAGE_DIR};
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

/// The Go name of this machine's architecture, as OCI image configurations spell it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
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

/// An image archive named `name` with one layer of `entries`, `entrypoint` and `env`.
pub fn archive(
    name: &str,
    entries: &[Entry],
    entrypoint: &[&str],
    env: &[&str],
) -> Result<Vec<u8>> {
    archive_as(name, entries, entrypoint, env, None)
}

/// [`archive`] whose processes run as `user` (`uid:gid`) unless the pod says otherwise.
pub fn archive_as(
    name: &str,
    entries: &[Entry],
    entrypoint: &[&str],
    env: &[&str],
    user: Option<&str>,
) -> Result<Vec<u8>> {
    let layer = layer(entries)?;
    let layer_digest = sha256_hex(&layer);
    let mut image_config = serde_json::json!({"Entrypoint": entrypoint, "Env": env});
    if let Some(user) = user {
        image_config["User"] = serde_json::json!(user);
    }
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "platform": {"architecture": go_arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }],
    })
    .to_string()
    .into_bytes();

    let mut archive = tar::Builder::new(Vec::new());
    let file = |path: String, content: &[u8], b: &mut tar::Builder<Vec<u8>>| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        b.append_data(&mut header, path, content)
    };
    file(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        &mut archive,
    )
    .map_err(tar_err)?;
    file("index.json".into(), &index, &mut archive).map_err(tar_err)?;
    for blob in [&layer, &config, &manifest] {
        file(
            format!("blobs/sha256/{}", sha256_hex(blob)),
            blob,
            &mut archive,
        )
        .map_err(tar_err)?;
    }
    let mut bytes = archive.into_inner().map_err(tar_err)?;
    bytes.flush().map_err(tar_err)?;
    Ok(bytes)
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

/// The shared libraries `binary` loads (with the dynamic loader), as `ldd` resolves them on
/// this machine: `(path in the image, file on this machine)`, sorted.
fn shared_libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io_err("ldd"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Libraries(format!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push((
                path.trim_start_matches('/').to_string(),
                PathBuf::from(path),
            ));
        }
    }
    libraries.sort();
    libraries.dedup();
    Ok(libraries)
}

/// The files of the image's gVisor folder (the node plan's binaries): the binaries from
/// `gvisor_dir` by name (with `runsc_trailer` appended to runsc, which makes a "new release"
/// that still runs: ELF ignores trailing bytes) and their checksums file, last.
pub fn gvisor_source(gvisor_dir: &Path, runsc_trailer: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut sums = String::new();
    let mut binaries = BINARIES;
    binaries.sort();
    for binary in binaries {
        let path = gvisor_dir.join(binary);
        let mut content = std::fs::read(&path).map_err(io_err(&path))?;
        if binary == "runsc" {
            content.extend_from_slice(runsc_trailer);
        }
        sums.push_str(&format!("{}  {binary}\n", sha256_hex(&content)));
        files.push((binary.to_string(), content));
    }
    files.push((CHECKSUMS.to_string(), sums.into_bytes()));
    Ok(files)
}

/// Writes [`gvisor_source`] into `dest` (created): what the agent's `--source-dir` reads.
pub fn write_gvisor_source(gvisor_dir: &Path, runsc_trailer: &[u8], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(io_err(dest))?;
    for (name, content) in gvisor_source(gvisor_dir, runsc_trailer)? {
        let path = dest.join(name);
        std::fs::write(&path, content).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The user the controller image runs as (distroless' `nonroot`).
pub const NONROOT: &str = "65532:65532";

/// The files an image needs to run `binary` as its entrypoint `/<name>`: the directories, the
/// binary and the C libraries it links, as `(dirs, files)`.
fn binary_with_libraries(binary: &Path, name: &str) -> Result<(Vec<String>, Vec<Entry>)> {
    let read = |path: &Path| std::fs::read(path).map_err(io_err(path));
    let mut dirs = Vec::new();
    let mut files = vec![Entry::File {
        path: name.into(),
        content: read(binary)?,
        mode: 0o755,
    }];
    for (path, source) in shared_libraries(binary)? {
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        files.push(Entry::File {
            path,
            content: read(&source)?,
            mode: 0o755,
        });
    }
    Ok((dirs, files))
}

/// The controller's image: the product binary as entrypoint (`/gardener-extension-runtime-sandbox`,
/// the chart's command), the C libraries it links, and `/etc/passwd` and `/etc/group` naming
/// the non-root user 65532 it runs as. Nothing else: no shell, no package manager, no tools.
pub fn controller_image(name: &str, binary: &Path) -> Result<Vec<u8>> {
    let (mut dirs, files) = binary_with_libraries(binary, NODE_AGENT_BINARY)?;
    dirs.extend(["etc".to_string(), "tmp".into()]);
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<Entry> = dirs.into_iter().map(Entry::Dir).collect();
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        content: b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n".to_vec(),
        mode: 0o644,
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        content: b"root:x:0:\nnonroot:x:65532:\n".to_vec(),
        mode: 0o644,
    });
    entries.extend(files);
    archive_as(
        name,
        &entries,
        &[&format!("/{NODE_AGENT_BINARY}")],
        &["PATH=/"],
        Some(NONROOT),
    )
}

/// The node agent's image: the product binary as entrypoint, the C libraries it links
/// (glibc and libgcc, as distroless `cc` images carry), and in gVisor's image folder (the
/// node plan's `binaries.source`) the gVisor binaries from `gvisor_dir` with their checksums,
/// which the agent verifies before installing anything.
pub fn node_agent_image(name: &str, binary: &Path, gvisor_dir: &Path) -> Result<Vec<u8>> {
    let source_dir = IMAGE_DIR.trim_start_matches('/');
    let (mut dirs, mut files) = binary_with_libraries(binary, NODE_AGENT_BINARY)?;
    dirs.extend([
        "etc".to_string(),
        "tmp".into(),
        "usr".into(),
        "usr/local".into(),
        "usr/local/lib".into(),
        "usr/local/lib/runtime-sandbox".into(),
        source_dir.into(),
    ]);
    for (name, content) in gvisor_source(gvisor_dir, &[])? {
        let mode = if name == CHECKSUMS { 0o644 } else { 0o755 };
        files.push(Entry::File {
            path: format!("{source_dir}/{name}"),
            content,
            mode,
        });
    }
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<Entry> = dirs.into_iter().map(Entry::Dir).collect();
    entries.extend(files);
    archive(
        name,
        &entries,
        &[&format!("/{NODE_AGENT_BINARY}")],
        &["PATH=/"],
    )
}
