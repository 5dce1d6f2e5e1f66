//! `make image`: the controller's OCI image archive (the product binary, its C libraries,
//! user 65532), built from local files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Build the controller's OCI image archive from local files")]
struct Args {
    /// The product binary (release build).
    #[arg(long)]
    binary: PathBuf,
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
    match sandbox_image::controller_image(&args.name, &args.binary)
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
