//! `make image`: builds the node agent's image as a multi-architecture OCI archive from local
//! files (per architecture: the product binary, the C libraries it links, the pinned runsc and
//! shim with their SHA256SUMS). Load it with `ctr images import` or push it with any OCI tool.

use std::path::PathBuf;

use clap::Parser;
use sandbox_image::{Arch, NodeAgentPlatform};
use sandbox_runtime::manifests::sha256_hex;

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
    /// The image reference recorded in the archive.
    #[arg(
        long,
        default_value = "ghcr.io/gardener-extension-runtime-sandbox/node-agent:v0.1.0"
    )]
    name: String,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut platforms = Vec::new();
    for (arch, binary) in &args.binaries {
        let gvisor_dir = args
            .gvisor_dirs
            .iter()
            .find(|(a, _)| a == arch)
            .map(|(_, dir)| dir)
            .ok_or_else(|| format!("--binary {arch}=... needs a --gvisor-dir {arch}=..."))?;
        platforms.push(NodeAgentPlatform {
            arch: *arch,
            binary,
            gvisor_dir,
        });
    }
    let archive = sandbox_image::node_agent_image(&args.name, &platforms)?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &archive)?;
    println!(
        "{}: {} for {} ({:.1} MB, sha256 {})",
        args.out.display(),
        args.name,
        platforms
            .iter()
            .map(|p| format!("linux/{}", p.arch))
            .collect::<Vec<_>>()
            .join(", "),
        archive.len() as f64 / 1e6,
        &sha256_hex(&archive)[..16]
    );
    Ok(())
}
