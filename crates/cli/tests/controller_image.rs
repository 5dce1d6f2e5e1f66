//! The controller's image, built from local files: the same bytes twice, nothing in it but the
//! product binary, its C libraries and the user database, a non-root user, and it runs as the
//! chart runs it (its command) in a real containerd 2.4.

use sandbox_image::{Arch, NONROOT, controller_image};
use sandbox_testenv::images::read_archive;
use sandbox_testenv::node::{Flavor, TestNode};
use sandbox_testenv::pods::{Container, Pods, run_container};
use serde_json::Value;

const IMAGE: &str = "localhost/runtime-sandbox-test/controller:1";

/// (path, size) of every file in the image's one layer, and the image configuration.
fn contents(archive: &[u8]) -> (Vec<(String, u64)>, Value) {
    let images = read_archive(archive).unwrap();
    assert_eq!(images.len(), 1, "one platform");
    let image = &images[0];
    let mut files = Vec::new();
    for entry in tar::Archive::new(image.layer.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            files.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                entry.header().size().unwrap(),
            ));
        }
    }
    (files, image.config.clone())
}

#[tokio::test]
async fn the_controller_image_holds_only_the_binary_and_runs_as_non_root() {
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let platforms = [(Arch::host().unwrap(), binary.as_ref())];
    let archive = controller_image(IMAGE, &platforms).unwrap();
    assert_eq!(
        archive,
        controller_image(IMAGE, &platforms).unwrap(),
        "same files, same bytes"
    );

    let (files, config) = contents(&archive);
    assert_eq!(config["config"]["User"], NONROOT);
    assert_eq!(
        config["config"]["Entrypoint"][0],
        "/gardener-extension-runtime-sandbox"
    );
    for (path, _) in &files {
        let allowed = path == "gardener-extension-runtime-sandbox"
            || path == "etc/passwd"
            || path == "etc/group"
            || path.contains(".so");
        assert!(
            allowed,
            "unexpected file in the controller image: {path} (all: {files:?})"
        );
        for shell in ["sh", "bash", "busybox"] {
            assert!(
                !path.ends_with(&format!("/{shell}")) && path != shell,
                "a shell in the image: {path}"
            );
        }
    }

    // It runs as the chart runs it: the image's entrypoint with the chart's subcommand.
    let node = TestNode::new(Flavor::V2).unwrap();
    node.start().unwrap();
    node.import_images().unwrap(); // the pause image
    node.import_archive(IMAGE, &archive).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let pods = Pods::new(node.socket());
    for args in [
        vec!["--version".to_string()],
        vec!["controller".into(), "--help".into()],
    ] {
        let result = run_container(
            &pods,
            "",
            &Container {
                image: IMAGE.into(),
                args: args.clone(),
                ..Container::default()
            },
            logs.path(),
        )
        .await
        .unwrap();
        assert_eq!(result.exit_code, 0, "{args:?}: {}", result.output);
        let expected = if args[0] == "--version" {
            "gardener-extension-runtime-sandbox v"
        } else {
            "--max-concurrent-reconciles"
        };
        assert!(
            result.output.contains(expected),
            "{args:?}: {}",
            result.output
        );
    }
}
