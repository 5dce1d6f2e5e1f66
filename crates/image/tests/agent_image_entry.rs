//! `agent-image --image-vector-entry` (what `make image` runs): the entry it writes pins the
//! image it built by digest, keeps the tag, and records the sha256 of every binary it packed,
//! so that nodes install nothing else (docs/security.md, S4). The "binaries" are copies of an
//! ELF file of this machine (the payload check wants this architecture's ELF files).

use std::process::Command;

use sandbox_image::Arch;
use sandbox_runtime::image::{ImageVector, NODE_AGENT_IMAGE};
use sandbox_runtime::manifests::sha256_hex;

#[test]
fn the_entry_pins_the_built_image_by_digest_and_records_its_binaries() {
    let arch = Arch::host().expect("an architecture we build images for");
    let elf = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for (i, name) in ["runsc", "containerd-shim-runsc-v1"].iter().enumerate() {
        let mut content = std::fs::read(&elf).unwrap();
        content.extend_from_slice(format!("#{i}").as_bytes());
        std::fs::write(payload.join(name), &content).unwrap();
        expected.insert(name.to_string(), sha256_hex(&content));
    }
    let (out, entry) = (
        dir.path().join("agent.oci.tar"),
        dir.path().join("entry.yaml"),
    );
    let status = Command::new(env!("CARGO_BIN_EXE_agent-image"))
        .args([
            "--runtime",
            "gvisor",
            "--name",
            "registry.local/agent:v9-gvisor-x",
        ])
        .arg(format!("--binary={arch}={}", elf.display()))
        .arg(format!("--payload={arch}={}", payload.display()))
        .arg(format!("--out={}", out.display()))
        .arg(format!("--image-vector-entry={}", entry.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let vector = ImageVector::parse(&std::fs::read_to_string(&entry).unwrap()).unwrap();
    let source = vector.find(NODE_AGENT_IMAGE).unwrap();
    let digest = sandbox_image::index_digest(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(source.repository, "registry.local/agent");
    assert_eq!(
        source.tag.as_deref(),
        Some(format!("v9-gvisor-x@{digest}").as_str())
    );
    assert!(source.pinned_by_digest());
    let recorded = &source.binaries[&arch.to_string()];
    for (name, sum) in &expected {
        assert_eq!(recorded.get(name), Some(sum), "{name}");
    }
}
