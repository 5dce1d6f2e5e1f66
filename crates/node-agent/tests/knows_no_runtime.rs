//! The node agent applies a node plan and knows no runtime: no runtime's name, handler, shim
//! or path appears in its code or manifest. Everything runtime-specific comes from the plan
//! (`sandbox_runtime::<runtime>::node`). The tests beside this one drive gVisor's plan on a
//! real containerd, so they may name it; the product code may not.

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
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
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
        "runtime-specific names in the node agent:\n{}",
        found.join("\n")
    );
}
