//! The product binary: every component of the extension is a subcommand of it, so one image
//! serves the seed controller, the webhooks and the node agent.

mod common;
mod controller;
mod node_agent;

use clap::{Parser, Subcommand};

/// Version, git commit and build date (the commit's date), from build.rs.
const VERSION: &str = concat!(
    "v",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SANDBOX_GIT_COMMIT"),
    ", built ",
    env!("SANDBOX_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(name = "gardener-extension-runtime-sandbox", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the seed-side ContainerRuntime controller (flags as in Gardener's Go extensions).
    Controller(Box<controller::Args>),
    /// Install, verify and announce (or uninstall) the runtime on this node.
    NodeAgent(Box<node_agent::Args>),
    /// Print the version and exit.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Controller(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(controller::run(*args)),
        Command::NodeAgent(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(node_agent::run(*args)),
        Command::Version => {
            println!("gardener-extension-runtime-sandbox {VERSION}");
            Ok(())
        }
    }
}
