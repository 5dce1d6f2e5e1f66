//! The node agent applies a node plan and knows no runtime: no runtime's name, handler, shim
//! or path appears in its code or manifest. Everything runtime-specific comes from the plan
//! (`sandbox_runtime::<runtime>::node`). The tests beside this one drive gVisor's plan on a
//! real containerd, so they may name it; the product code may not.
//!
//! The same holds for the image builder (`crates/image`): a runtime's image carries what its
//! node plan says it installs, and the runtime is chosen on the command line, so a new
//! runtime needs no change there.

use std::path::Path;

/// Names that belong to a runtime, not to the agent.
const RUNTIME_WORDS: [&str; 6] = [
    "gvisor",
    "runsc",
    "kata",
    "firecracker",
    "cloud-hypervisor",
    "qemu",
];

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_agents_code_names_no_runtime() {
    names_no_runtime(Path::new(env!("CARGO_MANIFEST_DIR")));
}

#[test]
fn the_image_builders_code_names_no_runtime() {
    names_no_runtime(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../image"));
}

/// Fails with every line of the crate's `Cargo.toml` and `src/` that names a runtime.
fn names_no_runtime(crate_dir: &Path) {
    let mut checked = vec![crate_dir.join("Cargo.toml")];
    files(&crate_dir.join("src"), &mut checked);
    assert!(checked.len() > 5, "{checked:?}");
    let mut found = Vec::new();
    for path in &checked {
        let text = std::fs::read_to_string(path).unwrap().to_lowercase();
        for (number, line) in text.lines().enumerate() {
            for word in RUNTIME_WORDS {
                if line.contains(word) {
                    found.push(format!("{}:{}: {word}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "runtime-specific names in {}:\n{}",
        crate_dir.display(),
        found.join("\n")
    );
}
