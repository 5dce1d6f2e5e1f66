//! `make generate`: writes `example/controller-registration.yaml` and `example/extension.yaml`
//! from the chart. `--check` only compares and fails when they are stale (tests do the same).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox_image::chart;

#[derive(Parser)]
#[command(about = "Generate the Gardener registration files from the chart")]
struct Args {
    /// The workspace root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Compare instead of writing; exit 1 when a file differs.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let files = match chart::generated(&args.root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("registration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stale = false;
    for (rel, content) in files {
        let path = args.root.join(&rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == content {
            continue;
        }
        if args.check {
            eprintln!("{} is stale: run `make generate`", rel.display());
            stale = true;
        } else if let Err(e) = std::fs::write(&path, content) {
            eprintln!("registration: writing {}: {e}", path.display());
            return ExitCode::from(2);
        } else {
            println!("wrote {}", rel.display());
        }
    }
    if stale {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
