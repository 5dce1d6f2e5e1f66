//! Images for tests: reading back the archives the product builds, the small busybox images
//! the test nodes run, and gVisor's payload from the pinned build (with a trailer that makes
//! "another release" of the same binaries).

use std::path::Path;

use sandbox_image::{Arch, ChecksumsFile, Entry, Error, Result, archive};
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::gvisor::GVisor;
use sandbox_runtime::node_plan::Binaries;

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
    for entry in tar::Archive::new(archive)
        .entries()
        .map_err(Error::Archive)?
    {
        let mut entry = entry.map_err(Error::Archive)?;
        let path = entry
            .path()
            .map_err(Error::Archive)?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(Error::Archive)?;
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
        if descriptor["mediaType"] == "application/vnd.oci.image.index.v1+json" {
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
pub fn busybox_archive(name: &str, busybox: &[u8], entrypoint: &[&str]) -> Result<Vec<u8>> {
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

/// What gVisor's node plan installs (from the image `image`).
pub fn gvisor_binaries() -> Binaries {
    GVisor
        .node_plan(None, "registry.local/node-agent:test")
        .expect("the default configuration is valid")
        .binaries
}

/// Writes gVisor's payload from the pinned build in `gvisor_dir` into `dest`, as the node
/// agent's image carries it (what the agent's `--source-dir` reads), with `runsc_trailer`
/// appended to runsc: a "new release" that still runs (ELF ignores trailing bytes).
pub fn write_gvisor_payload(gvisor_dir: &Path, runsc_trailer: &[u8], dest: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let binaries = gvisor_binaries();
    // The files go straight into `dest`; their checksums are computed there, over what the
    // agent will read (an older checksums file would be verified instead: it goes first).
    let sums = dest.join(&binaries.checksums);
    if let Err(e) = std::fs::remove_file(&sums)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io(&sums)(e));
    }
    for name in binaries.names.iter().chain(&binaries.optional) {
        let from = gvisor_dir.join(name);
        if !from.is_file() {
            continue;
        }
        let mut content = std::fs::read(&from).map_err(io(&from))?;
        if name == "runsc" {
            content.extend_from_slice(runsc_trailer);
        }
        let to = dest.join(name);
        std::fs::create_dir_all(to.parent().expect("a file in the folder")).map_err(io(&to))?;
        std::fs::write(&to, content).map_err(io(&to))?;
    }
    let arch = Arch::host().expect("tests run on an architecture we build for");
    let files = sandbox_image::payload(dest, &binaries, arch, ChecksumsFile::IfPresent)?;
    let (_, content) = files.last().expect("the checksums file comes last");
    std::fs::write(&sums, content).map_err(io(&sums))
}

/// The gVisor node agent's image `name`: per `(arch, product binary, gVisor build folder)`.
pub fn gvisor_agent_image(name: &str, platforms: &[(Arch, &Path, &Path)]) -> Result<Vec<u8>> {
    Ok(recorded_gvisor_agent_image(name, platforms)?.0)
}

/// [`gvisor_agent_image`], and the binaries' checksums the image vector records for it.
pub fn recorded_gvisor_agent_image(
    name: &str,
    platforms: &[(Arch, &Path, &Path)],
) -> Result<(Vec<u8>, sandbox_runtime::node_plan::Pins)> {
    let platforms: Vec<sandbox_image::AgentPlatform<'_>> = platforms
        .iter()
        .map(
            |&(arch, binary, payload_dir)| sandbox_image::AgentPlatform {
                arch,
                binary,
                payload_dir,
            },
        )
        .collect();
    sandbox_image::recorded_agent_image(
        name,
        &gvisor_binaries(),
        sandbox_image::ChecksumsFile::IfPresent,
        &platforms,
    )
}
