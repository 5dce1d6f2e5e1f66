//! The product binary for another architecture, built by Cargo for tests of the
//! multi-architecture images (the host's build is `CARGO_BIN_EXE_...`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use sandbox_image::Arch;

use crate::{Error, Result, repo_root};

/// The package and binary of the product.
const PACKAGE: &str = "gardener-extension-runtime-sandbox";

/// Variables `cargo test` sets for the test process, not for the build we start.
const INHERITED_FROM_CARGO_TEST: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "SANDBOX_GIT_COMMIT",
    "SANDBOX_BUILD_DATE",
];

/// Builds the product binary (the dev profile without debug info: the tests only start it
/// under qemu-user; dependencies keep the dev profile's settings, so the host's build scripts
/// and proc-macros are shared with the test build) for `arch` with the workspace's
/// Cargo and target folder, and returns its path. Cargo's progress goes to our stderr; a
/// missing Rust target or cross linker is an error saying what to install.
pub fn product_binary(arch: Arch) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = arch.rust_target();
    let mut command = Command::new(&cargo);
    // Cargo gives a test process its package's variables and its build scripts' `rustc-env`
    // values; build scripts that watch them (ours, ring's) would see a change and rebuild
    // what a plain `cargo build` (CI's prebuild) left fresh.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if INHERITED_FROM_CARGO_TEST
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            command.env_remove(&*key);
        }
    }
    let output = command
        .current_dir(repo_root())
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .args(["build", "--locked", "--package", PACKAGE, "--bin", PACKAGE])
        .args([
            "--target",
            target,
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", cargo.to_string_lossy())))?;
    if !output.status.success() {
        return Err(Error::Tools(format!(
            "cargo build --target {target} failed ({}); hack/prereqs.sh installs what it needs \
             (rustup target add {target}; Debian's gcc-aarch64-linux-gnu and \
             libc6-dev-arm64-cross, the linker .cargo/config.toml names)",
            output.status
        )));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == PACKAGE)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            Error::Tools(format!(
                "cargo build --target {target} reported no executable for {PACKAGE}"
            ))
        })
}
