//! The Makefile's image targets: builds a runtime's node agent image as a
//! multi-architecture OCI archive from local files. Per architecture: the product binary, the
//! C libraries it links, and the runtime's payload folder, which holds what the runtime's node
//! plan installs (`binaries`): binaries just built from source (their checksums are computed
//! here) or a published payload with its own `SHA256SUMS` (verified before anything is
//! written). The image's tag names the installed version.

use std::path::PathBuf;

use clap::Parser;
use sandbox_image::{AgentPlatform, Arch, ChecksumsFile};
use sandbox_runtime::actuator::{ACTUATORS, actuator};
use sandbox_runtime::image::{DEFAULT_IMAGE_VECTOR, ImageSource, ImageVector};

#[derive(Parser)]
#[command(about = "Build a runtime's node agent OCI image archive from local files")]
struct Args {
    /// The ContainerRuntime type whose node agent image this is.
    #[arg(long)]
    runtime: String,
    /// The product binary (a release build) of one architecture, as ARCH=PATH (`amd64`,
    /// `arm64`); once per architecture.
    #[arg(long = "binary", value_parser = sandbox_image::arch_path, required = true)]
    binaries: Vec<(Arch, PathBuf)>,
    /// The runtime's payload folder of one architecture, as ARCH=PATH; once per architecture.
    #[arg(long = "payload", value_parser = sandbox_image::arch_path, required = true)]
    payloads: Vec<(Arch, PathBuf)>,
    /// The payload is published with its own checksums file (`SHA256SUMS`), which must be
    /// there and match; without this flag, checksums are computed when the folder has none.
    #[arg(long)]
    require_checksums: bool,
    /// The image reference recorded in the archive; by default the image vector's entry of
    /// the runtime (whose tag names the node plan's version folder).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
    /// Also write the image vector entry that pins this image: by the digest it is served
    /// under, with the sha256 of every binary it carries per architecture (what the node
    /// agent installs, and nothing else; docs/security.md). A release copies it into
    /// crates/runtime/images.yaml or an operator's IMAGEVECTOR_OVERWRITE.
    #[arg(long)]
    image_vector_entry: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = actuator(&args.runtime).ok_or_else(|| {
        let known: Vec<&str> = ACTUATORS
            .iter()
            .map(|a| a.description().runtime_type)
            .collect();
        format!(
            "--runtime {:?}: allowed: {}",
            args.runtime,
            known.join(", ")
        )
    })?;
    let pairs = sandbox_image::pair_by_arch(&args.binaries, &args.payloads, "payload")?;
    let platforms: Vec<AgentPlatform<'_>> = pairs
        .iter()
        .map(|&(arch, binary, payload_dir)| AgentPlatform {
            arch,
            binary,
            payload_dir,
        })
        .collect();
    let name = match args.name {
        Some(name) => name,
        None => ImageVector::parse(DEFAULT_IMAGE_VECTOR)?
            .find(runtime.description().image_name)?
            .reference(),
    };
    // The default configuration's plan: where the payload goes in the image and what it holds.
    let binaries = runtime.node_plan(None, &name)?.binaries;
    let checksums = if args.require_checksums {
        ChecksumsFile::Required
    } else {
        ChecksumsFile::IfPresent
    };
    let (archive, recorded) =
        sandbox_image::recorded_agent_image(&name, &binaries, checksums, &platforms)?;
    let archs: Vec<Arch> = pairs.iter().map(|p| p.0).collect();
    sandbox_image::write_archive(&args.out, &name, &archive, &archs)?;
    if let Some(path) = args.image_vector_entry {
        // `repository[:tag][@digest]`: the tag stays (it names the node's version folder),
        // the digest of what was just built pins it.
        let named = name.rsplit_once('@').map_or(name.as_str(), |(n, _)| n);
        let (repository, tag) = match named.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (named, None),
        };
        let digest = sandbox_image::index_digest(&archive)?;
        let entry = ImageVector {
            images: vec![ImageSource {
                name: runtime.description().image_name.to_string(),
                source_repository: None,
                repository: repository.to_string(),
                tag: Some(match tag {
                    Some(tag) => format!("{tag}@{digest}"),
                    None => digest,
                }),
                binaries: recorded,
            }],
        };
        std::fs::write(&path, serde_saphyr::to_string(&entry)?)?;
        println!("{}: the image vector entry pinning it", path.display());
    }
    Ok(())
}
