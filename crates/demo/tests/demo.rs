//! `make demo` keeps working: the example objects reconcile to Succeeded and the manifests
//! are printed.

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
    assert_eq!(stdout.matches("state: Succeeded").count(), 2, "{stdout}");
    for expected in [
        "== ManagedResource shoot--dev--demo/extension-runtime-gvisor\n",
        "== ManagedResource shoot--dev--demo/extension-runtime-gvisor-installation-general",
        "== ManagedResource shoot--dev--demo/extension-runtime-gvisor-installation-untrusted",
        "handler: runsc",
        "platform = \"systrap\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
