//! `make image`: builds the node agent's image as an OCI archive from local files (the
//! product binary, the C libraries it links, the pinned runsc and shim with their
//! SHA256SUMS). Load it with `ctr images import` or push it with any OCI tool.

use std::path::PathBuf;

use clap::Parser;
use sandbox_runtime::manifests::sha256_hex;

#[derive(Parser)]
#[command(about = "Build the node agent's OCI image archive from local files")]
struct Args {
    /// The product binary (a release build).
    #[arg(long)]
    binary: PathBuf,
    /// Folder with runsc and containerd-shim-runsc-v1 (`hack/tools.sh path gvisor`).
    #[arg(long)]
    gvisor_dir: PathBuf,
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
    let archive = sandbox_image::node_agent_image(&args.name, &args.binary, &args.gvisor_dir)?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &archive)?;
    println!(
        "{}: {} ({:.1} MB, sha256 {})",
        args.out.display(),
        args.name,
        archive.len() as f64 / 1e6,
        &sha256_hex(&archive)[..16]
    );
    Ok(())
}
