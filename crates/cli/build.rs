//! Build information and link flags for the product binary.
//!
//! `--version` prints the version, the git commit and the build date, as Gardener's extensions
//! do. The date is the commit's date (or `SOURCE_DATE_EPOCH`), not the clock, so the same
//! commit builds the same bytes; `SANDBOX_GIT_COMMIT` overrides the commit where there is no
//! git checkout (e.g. a source tarball).
//!
//! On x86-64 Linux with glibc, relative relocations are packed (`DT_RELR`, glibc 2.36+, binutils
//! 2.38+): the dynamic loader otherwise reads a ~0.9 MB `.rela.dyn` table at every start,
//! which the node agent pays in resident memory on every node and every run. The binary stays
//! position-independent (ASLR unchanged); a glibc older than 2.36 refuses it at load time
//! with a clear `GLIBC_ABI_DT_RELR` version error instead of misbehaving.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    run("git", args)
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SANDBOX_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{reference}");
        }
        // A missing file watched counts as changed on every build: watch it only if it is there.
        if std::path::Path::new(&format!("{dir}/packed-refs")).exists() {
            println!("cargo:rerun-if-changed={dir}/packed-refs");
        }
    }
    let commit = std::env::var("SANDBOX_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => run(
            "date",
            &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"],
        )
        .unwrap_or(format!("@{epoch}")),
        Err(_) => run(
            "git",
            &[
                "show",
                "-s",
                "--format=%cd",
                "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
                "HEAD",
            ],
        )
        .unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=SANDBOX_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SANDBOX_BUILD_DATE={date}");

    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // Debian 12's aarch64 linker (binutils 2.40) ignores the flag with a warning: the arm64
    // binary keeps ordinary relative relocations.
    if os == "linux" && env == "gnu" && arch == "x86_64" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
