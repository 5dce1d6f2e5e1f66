//! Both images for linux/amd64 and linux/arm64: an OCI index per image, each platform's files
//! built for that platform (no amd64 file in the arm64 variant), the arm64 variant's binaries
//! running under Debian's qemu-user with nothing but the image's own files as their root (its
//! dynamic loader and C libraries), and the amd64 variant picked from the index by a real
//! containerd 2.4, which runs it.

use std::path::Path;
use std::process::Command;

use sandbox_image::{Arch, controller_image};
use sandbox_testenv::images::{gvisor_agent_image, read_archive};
use sandbox_testenv::node::{Flavor, TestNode};
use sandbox_testenv::pods::{Container, Pods, run_container};
use sandbox_testenv::{Tool, cross};

mod support;

const CONTROLLER: &str = "localhost/runtime-sandbox-test/controller:multi-arch";
const NODE_AGENT: &str = "localhost/runtime-sandbox-test/node-agent:multi-arch";
const QEMU: &str = "/usr/bin/qemu-aarch64-static";

/// The ELF machine of `bytes`, if they are an ELF file.
fn elf_machine(bytes: &[u8]) -> Option<u16> {
    (bytes.len() > 20 && bytes.starts_with(b"\x7fELF"))
        .then(|| u16::from_le_bytes([bytes[18], bytes[19]]))
}

/// Unpacks `layer` into `dir` and checks that every ELF file in it is built for `arch`;
/// returns the ELF files' paths.
fn unpack_and_check(layer: &[u8], arch: Arch, dir: &Path) -> Vec<String> {
    tar::Archive::new(layer).unpack(dir).unwrap();
    let mut elves = Vec::new();
    for entry in tar::Archive::new(layer).entries().unwrap() {
        let entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(dir.join(&path)).unwrap();
        if let Some(machine) = elf_machine(&bytes) {
            assert_eq!(
                machine,
                arch.elf_machine(),
                "{path} in the linux/{arch} variant is built for another machine"
            );
            elves.push(path);
        }
    }
    elves.sort();
    elves
}

/// Runs `program` (a path inside `root`) under qemu-user for arm64 with `root` as the guest's
/// file system root: its dynamic loader and libraries come from `root`.
fn run_arm64(root: &Path, program: &str, args: &[&str]) -> String {
    assert!(
        Path::new(QEMU).exists(),
        "{QEMU} is missing: install Debian's qemu-user-static (hack/prereqs.sh does)"
    );
    let output = Command::new(QEMU)
        .arg("-L")
        .arg(root)
        .arg(root.join(program))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} under qemu-aarch64: {}\n{text}",
        output.status
    );
    text
}

#[tokio::test]
async fn both_images_carry_amd64_and_arm64_and_both_run() {
    let amd64 = Path::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"));
    let arm64 = cross::product_binary(Arch::Arm64).unwrap();
    // Both architectures of the images carry the binary we ship: no crash points.
    support::assert_no_crash_points(amd64);
    support::assert_no_crash_points(&arm64);
    let controller =
        controller_image(CONTROLLER, &[(Arch::Amd64, amd64), (Arch::Arm64, &arm64)]).unwrap();
    let node_agent = gvisor_agent_image(
        NODE_AGENT,
        &[
            (Arch::Amd64, amd64, &Tool::Gvisor.path().unwrap()),
            (Arch::Arm64, &arm64, &Tool::GvisorArm64.path().unwrap()),
        ],
    )
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    for (image, archive) in [("controller", &controller), ("node-agent", &node_agent)] {
        let platforms = read_archive(archive).unwrap();
        let architectures: Vec<&str> = platforms.iter().map(|p| p.architecture.as_str()).collect();
        assert_eq!(architectures, ["amd64", "arm64"], "{image}");
        for (platform, arch) in platforms.iter().zip(Arch::ALL) {
            let root = work.path().join(format!("{image}-{arch}"));
            let elves = unpack_and_check(&platform.layer, arch, &root);
            let loader = match arch {
                Arch::Amd64 => "lib64/ld-linux-x86-64.so.2",
                Arch::Arm64 => "lib/ld-linux-aarch64.so.1",
            };
            for file in [
                "gardener-extension-runtime-sandbox".to_string(),
                loader.to_string(),
                format!("lib/{}/libc.so.6", arch.multiarch()),
            ] {
                assert!(
                    elves.contains(&file),
                    "{image} linux/{arch}: no {file} in {elves:?}"
                );
            }
        }
    }

    // The arm64 binaries are real: they run (emulated) from the image's own files.
    let controller_root = work.path().join("controller-arm64");
    let version = run_arm64(
        &controller_root,
        "gardener-extension-runtime-sandbox",
        &["--version"],
    );
    assert!(
        version.starts_with("gardener-extension-runtime-sandbox v"),
        "{version}"
    );
    let help = run_arm64(
        &controller_root,
        "gardener-extension-runtime-sandbox",
        &["controller", "--help"],
    );
    assert!(help.contains("--max-concurrent-reconciles"), "{help}");
    let agent_root = work.path().join("node-agent-arm64");
    let help = run_arm64(
        &agent_root,
        "gardener-extension-runtime-sandbox",
        &["node-agent", "--help"],
    );
    assert!(help.contains("--source-dir"), "{help}");
    let gvisor = sandbox_runtime::gvisor::node::IMAGE_DIR.trim_start_matches('/');
    let runsc = run_arm64(&agent_root, &format!("{gvisor}/runsc"), &["--version"]);
    assert!(runsc.contains("runsc version"), "{runsc}");
    let shim = run_arm64(
        &agent_root,
        &format!("{gvisor}/containerd-shim-runsc-v1"),
        &["-v"],
    );
    assert!(shim.contains("containerd-shim-runsc-v1"), "{shim}");

    // containerd picks this machine's variant from the index and runs it.
    let node = TestNode::new(Flavor::V2).unwrap();
    node.start().unwrap();
    node.import_images().unwrap(); // the pause image
    node.import_archive(CONTROLLER, &controller).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let result = run_container(
        &Pods::new(node.socket()),
        "",
        &Container {
            image: CONTROLLER.into(),
            args: vec!["--version".into()],
            ..Container::default()
        },
        logs.path(),
    )
    .await
    .unwrap();
    assert_eq!(result.exit_code, 0, "{}", result.output);
    assert!(
        result
            .output
            .contains("gardener-extension-runtime-sandbox v"),
        "{}",
        result.output
    );
}
