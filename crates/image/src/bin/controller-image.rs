//! `make image`: the controller's multi-architecture OCI image archive (per architecture: the
//! product binary, its C libraries, user 65532), built from local files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox_image::Arch;

#[derive(Parser)]
#[command(about = "Build the controller's multi-architecture OCI image archive from local files")]
struct Args {
    /// The product binary (release build) of one architecture, as ARCH=PATH (`amd64`,
    /// `arm64`); once per architecture.
    #[arg(long = "binary", value_parser = sandbox_image::arch_path, required = true)]
    binaries: Vec<(Arch, PathBuf)>,
    /// Image reference recorded in the archive.
    #[arg(
        long,
        default_value = "ghcr.io/gardener-extension-runtime-sandbox/controller:v0.1.0"
    )]
    name: String,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let binaries: Vec<(Arch, &std::path::Path)> = args
        .binaries
        .iter()
        .map(|(arch, path)| (*arch, path.as_path()))
        .collect();
    match sandbox_image::controller_image(&args.name, &binaries)
        .and_then(|bytes| std::fs::write(&args.out, bytes).map_err(sandbox_image::Error::Archive))
    {
        Ok(()) => {
            println!("wrote {} ({})", args.out.display(), args.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("controller-image: {e}");
            ExitCode::FAILURE
        }
    }
}
