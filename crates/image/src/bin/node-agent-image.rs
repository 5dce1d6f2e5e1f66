//! `make image`: builds the node agent's image as a multi-architecture OCI archive from local
//! files (per architecture: the product binary, the C libraries it links, the pinned runsc and
//! shim with their SHA256SUMS). Load it with `ctr images import` or push it with any OCI tool.

use std::path::PathBuf;

use clap::Parser;
use sandbox_image::{Arch, NodeAgentPlatform};
use sandbox_runtime::image::{DEFAULT_IMAGE_VECTOR, ImageVector, NODE_AGENT_IMAGE};

#[derive(Parser)]
#[command(about = "Build the node agent's multi-architecture OCI image archive from local files")]
struct Args {
    /// The product binary (a release build) of one architecture, as ARCH=PATH (`amd64`,
    /// `arm64`); once per architecture.
    #[arg(long = "binary", value_parser = sandbox_image::arch_path, required = true)]
    binaries: Vec<(Arch, PathBuf)>,
    /// Folder with runsc and containerd-shim-runsc-v1 of one architecture, as ARCH=PATH
    /// (`hack/tools.sh path gvisor`, `hack/tools.sh path gvisor-arm64`); once per architecture.
    #[arg(long = "gvisor-dir", value_parser = sandbox_image::arch_path, required = true)]
    gvisor_dirs: Vec<(Arch, PathBuf)>,
    /// The image reference recorded in the archive; by default the image vector's
    /// `runtime-gvisor-installation`, whose tag carries the gVisor version
    /// (`<release>-gvisor-<version>`: the node plan's version folder).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let pairs = sandbox_image::pair_by_arch(&args.binaries, &args.gvisor_dirs, "gvisor-dir")?;
    let platforms: Vec<NodeAgentPlatform<'_>> = pairs
        .iter()
        .map(|&(arch, binary, gvisor_dir)| NodeAgentPlatform {
            arch,
            binary,
            gvisor_dir,
        })
        .collect();
    let name = match args.name {
        Some(name) => name,
        None => ImageVector::parse(DEFAULT_IMAGE_VECTOR)?
            .find(NODE_AGENT_IMAGE)?
            .reference(),
    };
    let archive = sandbox_image::node_agent_image(&name, &platforms)?;
    let archs: Vec<Arch> = pairs.iter().map(|p| p.0).collect();
    sandbox_image::write_archive(&args.out, &name, &archive, &archs)?;
    Ok(())
}
