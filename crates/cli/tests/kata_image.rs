//! Kata's node agent image (`runtime-kata-installation`), built from a payload folder as
//! operators build it (docs/kata.md): here the pinned `containerd-shim-kata-v2`
//! (`hack/tools.sh ensure kata`), Debian's `qemu-system-x86_64` and stand-ins for Kata's guest
//! kernel and image (no Debian package ships them; no VM boots on this host). The payload lands
//! in Kata's image folder byte for byte with its `SHA256SUMS`, the same files give the same
//! archive, and a payload that would only fail on the nodes is refused with what is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sandbox_image::{AgentPlatform, Arch, ChecksumsFile, agent_image};
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::kata::Kata;
use sandbox_runtime::kata::node::{self as kata_node, IMAGE_DIR};
use sandbox_runtime::manifests::sha256_hex;
use sandbox_runtime::node_plan::CHECKSUMS;
use sandbox_testenv::images::read_archive;

const IMAGE: &str = "localhost/runtime-sandbox-test/node-agent-kata:3.20.0";

/// Writes `files` and their `SHA256SUMS` into `dir`.
fn write_payload(dir: &Path, files: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sums = String::new();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(content)));
    }
    std::fs::write(dir.join(CHECKSUMS), sums).unwrap();
}

fn test_payload() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            kata_node::SHIM,
            std::fs::read(
                sandbox_testenv::Tool::Kata
                    .path()
                    .unwrap()
                    .join(kata_node::SHIM),
            )
            .unwrap(),
        ),
        (
            "qemu-system-x86_64",
            std::fs::read("/usr/bin/qemu-system-x86_64")
                .expect("Debian's qemu-system-x86 is installed by hack/prereqs.sh"),
        ),
        (
            kata_node::GUEST_KERNEL,
            b"stand-in for Kata's guest kernel\n".to_vec(),
        ),
        (
            kata_node::GUEST_IMAGE,
            b"stand-in for Kata's guest image\n".to_vec(),
        ),
    ]
}

fn files_of(layer: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(layer).entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mode = entry.header().mode().unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.insert(path, (mode, content));
    }
    files
}

#[test]
fn the_payload_lands_in_the_image_verified_and_a_broken_one_is_refused() {
    let host = Arch::host().unwrap();
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("payload");
    let files = test_payload();
    write_payload(&payload, &files);
    let build = |dir: &Path| {
        let binaries = Kata.node_plan(None, IMAGE).unwrap().binaries;
        agent_image(
            IMAGE,
            &binaries,
            ChecksumsFile::Required,
            &[AgentPlatform {
                arch: host,
                binary: binary.as_ref(),
                payload_dir: dir,
            }],
        )
    };

    let archive = build(&payload).unwrap();
    assert_eq!(archive, build(&payload).unwrap(), "same files, same bytes");
    let images = read_archive(&archive).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].architecture, host.oci());
    assert_eq!(
        images[0].config["config"]["Entrypoint"],
        serde_json::json!(["/gardener-extension-runtime-sandbox"])
    );
    let layer = files_of(&images[0].layer);
    let dir = IMAGE_DIR.trim_start_matches('/');
    for (name, content) in &files {
        let (mode, in_image) = &layer[&format!("{dir}/{name}")];
        assert_eq!(in_image, content, "{name} is the payload's, byte for byte");
        assert_eq!(*mode, 0o755, "{name}");
    }
    let sums = &layer[&format!("{dir}/{CHECKSUMS}")];
    assert_eq!(sums.1, std::fs::read(payload.join(CHECKSUMS)).unwrap());
    assert_eq!(sums.0, 0o644);
    assert!(layer.contains_key("gardener-extension-runtime-sandbox"));

    // Refused, each with what is wrong.
    let refused = |name: &str, files: &[(&str, Vec<u8>)], edit: &dyn Fn(&Path)| {
        let dir = work.path().join(name);
        write_payload(&dir, files);
        edit(&dir);
        build(&dir).unwrap_err().to_string()
    };
    let err = refused("tampered", &files, &|d| {
        std::fs::write(d.join(kata_node::GUEST_IMAGE), b"something else").unwrap()
    });
    assert!(
        err.contains("kata-containers.img does not match its checksum"),
        "{err}"
    );
    let err = refused("unlisted", &files, &|d| {
        std::fs::write(d.join("firecracker"), b"#!/bin/sh\n").unwrap()
    });
    assert!(err.contains("not in SHA256SUMS: firecracker"), "{err}");
    let err = refused("no-kernel", &files[..2], &|_| {});
    assert!(err.contains("vmlinux.container is required"), "{err}");
    let err = refused("traversal", &files, &|d| {
        let mut sums = std::fs::read_to_string(d.join(CHECKSUMS)).unwrap();
        sums.push_str(&format!("{}  ../../etc/passwd\n", "0".repeat(64)));
        std::fs::write(d.join(CHECKSUMS), sums).unwrap();
    });
    assert!(
        err.contains("is not a sha256 and a plain file name"),
        "{err}"
    );
    // A hypervisor built for another architecture would only fail on every node.
    let other = sandbox_testenv::Tool::GvisorArm64.path().unwrap();
    let mut wrong = files.clone();
    wrong[1].1 = std::fs::read(other.join("runsc")).unwrap();
    let err = refused("wrong-arch", &wrong, &|_| {});
    assert!(
        err.contains("qemu-system-x86_64 is built for ELF machine"),
        "{err}"
    );
}
