//! `validate` and `render` on the examples: the product binary, no cluster.

use std::process::Command;

use sandbox_testenv::repo_root;

/// Runs the product binary with `args` in the repository root: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const PROFILE: &str = "example/garden/cloudprofile.yaml";
const SHOOT: &str = "example/garden/shoot.yaml";

#[test]
fn validate_admits_the_example_and_rejects_what_the_webhook_rejects() {
    let (code, out, err) = run(&["validate", "--cloud-profile", PROFILE, SHOOT]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("{SHOOT}: Shoot garden-dev/sandboxed: admitted\n")
    );

    // Without a CloudProfile only the runtimes' configuration is checked, and it says so.
    let (code, out, _) = run(&["validate", SHOOT]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: spec.cloudProfile: no CloudProfile given"),
        "{out}"
    );

    // The example broken three ways, in one file with a second, valid Shoot.
    let original = std::fs::read_to_string(repo_root().join(SHOOT)).unwrap();
    let broken = original
        .replace(
            "platform: systrap",
            "platform: ptrace\n                  fancy: \"1\"",
        )
        .replace("type: local-metal", "type: local")
        .replace("name: sandboxed", "name: broken");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shoots.yaml");
    std::fs::write(&file, format!("{broken}\n---\n{original}")).unwrap();
    let file = file.to_string_lossy().into_owned();
    let (code, out, err) = run(&["validate", "--cloud-profile", PROFILE, &file]);
    assert_eq!(code, 1, "{out}{err}");
    for expected in [
        "Shoot garden-dev/broken: rejected",
        "  error: spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.configFlags.platform: \"ptrace\" is not allowed; allowed: systrap, kvm",
        "  error: spec.provider.workers[1].machine.type: pool \"isolated\": machine type \"local\" does not offer nested virtualisation, which Kata Containers needs",
        "Shoot garden-dev/sandboxed: admitted",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    assert!(err.contains("1 of 2 Shoots rejected"), "{err}");

    // The operator's flag: Kata allowed on any machine type.
    let only_kata = original.replace("type: local-metal", "type: local");
    std::fs::write(dir.path().join("kata.yaml"), only_kata).unwrap();
    let kata = dir.path().join("kata.yaml").to_string_lossy().into_owned();
    assert_eq!(run(&["validate", "--cloud-profile", PROFILE, &kata]).0, 1);
    let (code, out, _) = run(&[
        "validate",
        "--cloud-profile",
        PROFILE,
        "--virtualization-capability=",
        &kata,
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn render_prints_what_lands_in_the_shoot_and_on_the_nodes() {
    let (code, out, err) = run(&["render", "--shoot", SHOOT, "--pool", "isolated"]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "# Kata Containers in pool isolated: in the shoot",
        "kind: RuntimeClass",
        "name: kata-qemu",
        "name: kata-clh",
        "kind: DaemonSet",
        "key: sandbox.gardener.cloud/isolated",
        "kind: NodePlan",
        "runtime_type = \"io.containerd.kata-qemu.v2\"",
        "containerd2ConfigVersion3",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} not in the Kata rendering"
        );
    }
    assert!(
        !out.contains("name: kata-fc\n") && !out.contains("runtimes.kata-fc]"),
        "fc is not offered, so neither its RuntimeClass nor its handler"
    );
    assert!(!out.contains("gvisor"), "the pool has no gVisor");

    let (code, out, err) = run(&["render", "--shoot", SHOOT, "--pool", "general"]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "# gVisor in pool general: in the shoot",
        "name: gvisor",
        "handler: runsc",
        "runsc.toml",
        "platform = \"systrap\"",
        "net-raw = \"true\"",
        "runtime_type = \"io.containerd.runsc.v1\"",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    // Same input, same bytes.
    assert_eq!(
        run(&["render", "--shoot", SHOOT, "--pool", "general"]).1,
        out
    );

    let (code, _, err) = run(&["render", "--shoot", SHOOT, "--pool", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no worker pool \"nope\"; pools: general, isolated"),
        "{err}"
    );
}
