//! The product's images and chart, built reproducibly from local files: nothing is pulled,
//! and the same files give the same bytes and the same digests.
//!
//! - [`oci`]: OCI image archives (layers, the layout, multi-architecture indexes);
//! - [`arch`]: the architectures we build for;
//! - [`elf`]: the C libraries a binary links, found from its ELF headers;
//! - [`payload`]: a runtime's payload, as its node plan describes it, with checksums;
//! - [`images`]: the controller's image and the node agents' images;
//! - [`chart`]: the Helm chart archive and the registration documents.
//!
//! No runtime is named here: which runtime's payload goes into an image is the caller's
//! choice (the `agent-image` builder takes the runtime type and asks its node plan).

pub mod arch;
pub mod chart;
pub mod elf;
pub mod images;
pub mod oci;
pub mod payload;

use std::path::PathBuf;

pub use arch::{Arch, arch_path, pair_by_arch};
pub use images::{
    AgentPlatform, NODE_AGENT_BINARY, NONROOT, agent_image, controller_image, recorded_agent_image,
};
pub use oci::{
    Entry, PlatformImage, archive, index_digest, layer, multi_arch_archive, write_archive,
};
pub use payload::{ChecksumsFile, Files, payload};

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the image archive: {0}")]
    Archive(std::io::Error),
    #[error("{0}")]
    Libraries(String),
    #[error("{0}")]
    Chart(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

fn tar_err(e: std::io::Error) -> Error {
    Error::Archive(e)
}
