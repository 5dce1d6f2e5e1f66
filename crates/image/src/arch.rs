//! The CPU architectures the images are built for, and the `ARCH=PATH` flags of the image
//! builders.

use std::path::{Path, PathBuf};

/// A CPU architecture the images are built for (all `linux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture the released images carry, in index order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// This machine's architecture, if it is one we build for.
    pub fn host() -> Option<Arch> {
        sandbox_runtime::node_plan::host_arch().parse().ok()
    }

    /// The name OCI image configurations and indexes use (`amd64`, `arm64`).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Rust target the product binary is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Debian's multiarch tuple: where glibc keeps this architecture's libraries.
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => goblin::elf::header::EM_X86_64,
            Arch::Arm64 => goblin::elf::header::EM_AARCH64,
        }
    }

    /// Where this machine keeps this architecture's C libraries: natively, as Debian's
    /// multiarch packages, or as Debian's cross-compilation packages
    /// (`libc6-arm64-cross` puts them in `/usr/aarch64-linux-gnu/lib`).
    pub(crate) fn library_dirs(self) -> [PathBuf; 3] {
        let tuple = self.multiarch();
        [
            PathBuf::from(format!("/lib/{tuple}")),
            PathBuf::from(format!("/usr/lib/{tuple}")),
            PathBuf::from(format!("/usr/{tuple}/lib")),
        ]
    }
}

/// Parses `ARCH=PATH` (`amd64=/path`), as the image builders' flags take them.
pub fn arch_path(value: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = value
        .split_once('=')
        .ok_or_else(|| format!("expected ARCH=PATH (e.g. amd64=/path), got {value:?}"))?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.oci())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches("linux/") {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            other => Err(format!(
                "unknown architecture {other:?} (supported: amd64, arm64)"
            )),
        }
    }
}

/// Pairs each `--binary ARCH=...` with the `--<flag> ARCH=...` of the same architecture, for
/// the image builders' command lines.
pub fn pair_by_arch<'a>(
    binaries: &'a [(Arch, PathBuf)],
    others: &'a [(Arch, PathBuf)],
    flag: &str,
) -> std::result::Result<Vec<(Arch, &'a Path, &'a Path)>, String> {
    binaries
        .iter()
        .map(|(arch, binary)| {
            others
                .iter()
                .find(|(a, _)| a == arch)
                .map(|(_, other)| (*arch, binary.as_path(), other.as_path()))
                .ok_or_else(|| format!("--binary {arch}=... needs a --{flag} {arch}=..."))
        })
        .collect()
}
