//! Link flags for the product binary.
//!
//! On Linux with glibc, relative relocations are packed (`DT_RELR`, glibc 2.36+, binutils
//! 2.38+): the dynamic loader otherwise reads a ~0.9 MB `.rela.dyn` table at every start,
//! which the node agent pays in resident memory on every node and every run. The binary stays
//! position-independent (ASLR unchanged); a glibc older than 2.36 refuses it at load time
//! with a clear `GLIBC_ABI_DT_RELR` version error instead of misbehaving.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
