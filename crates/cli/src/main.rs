//! The product binary: every component of the extension is a subcommand of it, so one image
//! serves the seed controller, the webhooks and the node agent.

mod admission;
mod common;
mod controller;
mod node_agent;
mod offline;

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
    /// Serve the garden's Shoot validating webhook (Gardener's extension admission).
    Admission(Box<admission::Args>),
    /// Install, verify and announce (or uninstall) the runtime on this node.
    NodeAgent(Box<node_agent::Args>),
    /// Review Shoot manifests as the admission webhook does, without a cluster (exit code 1
    /// when one is rejected).
    Validate(offline::ValidateArgs),
    /// Print what a worker pool's runtimes put into the shoot and onto its nodes, without a
    /// cluster.
    Render(offline::RenderArgs),
    /// Print the version and exit.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Controller(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(controller::run(*args)),
        Command::Admission(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(admission::run(*args)),
        Command::NodeAgent(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(node_agent::run(*args)),
        Command::Validate(args) => offline::validate(args),
        Command::Render(args) => offline::render(args),
        Command::Version => {
            println!("gardener-extension-runtime-sandbox {VERSION}");
            Ok(())
        }
    }
}
