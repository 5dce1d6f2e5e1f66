//! `make image-kata`: builds Kata's node agent image (`runtime-kata-installation`) as a
//! multi-architecture OCI archive from local files: per architecture the product binary, the
//! C libraries it links, and a Kata payload folder with its `SHA256SUMS` (docs/kata.md says
//! how operators assemble one from Kata's release). The payload is verified before anything
//! is written. Tag the image with the Kata version: the tag names the install folder.

use std::path::PathBuf;

use clap::Parser;
use sandbox_image::{Arch, KataPlatform};

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
    let pairs = sandbox_image::pair_by_arch(&args.binaries, &args.payloads, "payload")?;
    let platforms: Vec<KataPlatform<'_>> = pairs
        .iter()
        .map(|&(arch, binary, payload_dir)| KataPlatform {
            arch,
            binary,
            payload_dir,
        })
        .collect();
    let archive = sandbox_image::kata_node_agent_image(&args.name, &platforms)?;
    let archs: Vec<Arch> = pairs.iter().map(|p| p.0).collect();
    sandbox_image::write_archive(&args.out, &args.name, &archive, &archs)?;
    Ok(())
}
