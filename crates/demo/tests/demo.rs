//! `make demo` keeps working: the example shoot's gVisor and Kata pools reconcile to
//! Succeeded with health conditions, the summary names the RuntimeClasses, node plans and the
//! admission refusal with its field path, and the full manifests are in the files it names.

use std::process::Command;

#[test]
fn demo_reconciles_the_examples() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "pools general (gvisor), isolated (kata)",
        "gvisor-general   Create     Succeeded",
        "kata-isolated    Create     Succeeded",
        "  EveryNodeReady ",
        "  SystemComponentsHealthy ",
        "\ngvisor       runsc        -",
        "\nkata-qemu    kata-qemu    cpu 250m",
        "\nkata-clh     kata-clh     cpu 250m",
        "pool general, gvisor:\n  containerd handlers: runsc (io.containerd.runsc.v1)",
        "pool isolated, kata:\n  containerd handlers: kata-qemu (io.containerd.kata-qemu.v2), kata-clh (io.containerd.kata-clh.v2)",
        "Shoot garden-dev/sandboxed: rejected\n  error: spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.configFlags.platform: \"ptrace\" is not allowed; allowed: systrap, kvm",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    // The files it names hold the full manifests.
    let root = sandbox_testenv::repo_root();
    let files: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  target/demo/"))
        .collect();
    assert_eq!(files.len(), 6, "{stdout}");
    let text = |name: &str| std::fs::read_to_string(root.join("target/demo").join(name)).unwrap();
    assert!(files.contains(&"managedresource-extension-runtime-gvisor-installation-general.yaml"));
    assert!(
        text("managedresource-extension-runtime-gvisor-installation-general.yaml")
            .contains("platform = \"systrap\"")
    );
    assert!(text("managedresource-extension-runtime-kata.yaml").contains("handler: kata-qemu"));
    assert!(text("containerruntime-kata-isolated.yaml").contains("state: Succeeded"));
}
