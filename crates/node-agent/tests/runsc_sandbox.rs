//! The pinned runsc (built by hack/tools.sh) boots a real gVisor sandbox on this machine:
//! the ground the node agent's containerd tests stand on. Needs root, as CI has.

use std::process::Command;

#[test]
fn pinned_runsc_boots_a_gvisor_sandbox() {
    let runsc = sandbox_testenv::Tool::Gvisor.path().unwrap().join("runsc");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    // Debian's busybox-static (hack/prereqs.sh installs it): one static binary is a root fs.
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox"))
        .expect("/bin/busybox from busybox-static");

    let spec = Command::new(&runsc)
        .current_dir(&bundle)
        .args(["spec", "--", "/bin/busybox", "dmesg"])
        .status()
        .unwrap();
    assert!(spec.success());
    let id = format!("sandbox-test-{}", std::process::id());
    let output = Command::new(&runsc)
        .arg(format!("--root={}", dir.path().join("state").display()))
        .args(["--network=none", "run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "runsc run failed:\n{stdout}\n{stderr}"
    );
    // gVisor's own kernel answers dmesg, not the host's Linux.
    assert!(
        stdout.contains("Starting gVisor..."),
        "not a gVisor sandbox:\n{stdout}"
    );
    assert!(
        !stdout.contains("Linux version"),
        "the host kernel answered:\n{stdout}"
    );
}
