//! The product binary: every component of the extension is a subcommand of it, so one image
//! serves the seed controller, the webhooks and the node agent.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gardener-extension-runtime-sandbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and exit.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => println!(
            "gardener-extension-runtime-sandbox {}",
            env!("CARGO_PKG_VERSION")
        ),
    }
    Ok(())
}
