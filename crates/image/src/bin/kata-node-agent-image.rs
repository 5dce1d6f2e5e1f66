//! `make image-kata`: builds Kata's node agent image (`runtime-kata-installation`) as a
//! multi-architecture OCI archive from local files: per architecture the product binary, the
//! C libraries it links, and a Kata payload folder with its `SHA256SUMS` (docs/kata.md says
//! how operators assemble one from Kata's release). The payload is verified before anything
//! is written. Tag the image with the Kata version: the tag names the install folder.

use std::path::PathBuf;

use clap::Parser;
use sandbox_image::{Arch, KataPlatform};
use sandbox_runtime::manifests::sha256_hex;

#[derive(Parser)]
#[command(
    about = "Build Kata's node agent OCI image archive from local files and a payload folder"
)]
struct Args {
    /// The product binary (a release build) of one architecture, as ARCH=PATH; once per
    /// architecture.
    #[arg(long = "binary", value_parser = sandbox_image::arch_path, required = true)]
    binaries: Vec<(Arch, PathBuf)>,
    /// The Kata payload folder of one architecture, as ARCH=PATH; once per architecture.
    #[arg(long = "payload", value_parser = sandbox_image::arch_path, required = true)]
    payloads: Vec<(Arch, PathBuf)>,
    /// The image reference recorded in the archive (its tag is the payload version).
    #[arg(long)]
    name: String,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut platforms = Vec::new();
    for (arch, binary) in &args.binaries {
        let payload_dir = args
            .payloads
            .iter()
            .find(|(a, _)| a == arch)
            .map(|(_, dir)| dir)
            .ok_or_else(|| format!("--binary {arch}=... needs a --payload {arch}=..."))?;
        platforms.push(KataPlatform {
            arch: *arch,
            binary,
            payload_dir,
        });
    }
    let archive = sandbox_image::kata_node_agent_image(&args.name, &platforms)?;
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
