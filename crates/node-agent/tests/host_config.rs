//! Applying gVisor's node plan to a temporary host root, from real containerd configs.

use std::fs;
use std::path::Path;

use sandbox_node_agent::containerd::{CONF_D_IMPORT, Config};
use sandbox_node_agent::host::{self, CONFIG_TOML, Host};
use sandbox_runtime::gvisor::node::{DROP_IN, version_dir};
use sandbox_runtime::gvisor::{GVisorConfig, node_plan};
use sandbox_runtime::node_plan::NodePlan;

const CONTAINERD_16: &str = include_str!("fixtures/containerd-1.6-default.toml");
const CONTAINERD_24: &str = include_str!("fixtures/containerd-2.4-default.toml");
/// The versions containerd reports with those configurations (they decide whether a drop-in
/// is safe: containerd 1.x replaces an imported plugin table whole).
const CONTAINERD_1_6: Option<(u32, u32)> = Some((1, 6));
const CONTAINERD_1_7: Option<(u32, u32)> = Some((1, 7));
const CONTAINERD_2_4: Option<(u32, u32)> = Some((2, 4));
const RUNSC: &str = "[runsc_config]\nnet-raw = \"true\"\n";
/// The node-agent image of the plans here: gVisor version `test1`.
const IMAGE: &str = "registry.local/node-agent:v1-gvisor-test1";
/// The shim's configuration of that version.
const RUNSC_TOML: &str = "/opt/runtime-sandbox/gvisor/test1/runsc.toml";

fn handler() -> sandbox_runtime::node_plan::Handler {
    sandbox_runtime::gvisor::node::handler(&version_dir("test1"))
}

/// The agent's backup of `path` (gVisor's).
fn backup_path(path: &Path) -> std::path::PathBuf {
    sandbox_node_agent::files::backup_path(path, "gvisor")
}

/// gVisor's plan with `runsc` as the content of runsc.toml.
fn plan(runsc: &str) -> NodePlan {
    let mut plan = node_plan(&GVisorConfig::default(), IMAGE);
    assert_eq!(plan.files[0].path, RUNSC_TOML);
    plan.files[0].content = runsc.to_string();
    plan
}

fn host_with(config: Option<&str>) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(dir.path());
    if let Some(config) = config {
        fs::create_dir_all(host.path("/etc/containerd")).unwrap();
        fs::write(host.path(CONFIG_TOML), config).unwrap();
    }
    (dir, host)
}

fn read(host: &Host, path: &str) -> String {
    fs::read_to_string(host.path(path)).unwrap()
}

fn changed(changes: &[host::Change]) -> Vec<&str> {
    changes.iter().map(|c| c.path.as_str()).collect()
}

#[test]
fn without_import_config_toml_is_edited_with_a_backup_and_a_rerun_changes_nothing() {
    let (_dir, h) = host_with(Some(CONTAINERD_16));
    let changes = host::install(&h, &plan(RUNSC), CONTAINERD_1_6).unwrap();
    assert_eq!(changed(&changes), [CONFIG_TOML, RUNSC_TOML]);
    assert!(
        Config::parse(&read(&h, CONFIG_TOML))
            .unwrap()
            .has(&handler())
    );
    assert_eq!(
        fs::read_to_string(backup_path(&h.path(CONFIG_TOML))).unwrap(),
        CONTAINERD_16
    );
    assert_eq!(read(&h, RUNSC_TOML), RUNSC);
    assert!(!h.path(DROP_IN).exists());

    assert!(
        host::install(&h, &plan(RUNSC), CONTAINERD_1_6)
            .unwrap()
            .is_empty(),
        "unchanged: zero writes"
    );

    // A flag change touches runsc.toml only.
    let changes = host::install(
        &h,
        &plan("[runsc_config]\nnet-raw = \"false\"\n"),
        CONTAINERD_1_6,
    )
    .unwrap();
    assert_eq!(changed(&changes), [RUNSC_TOML]);
}

#[test]
fn with_the_conf_d_import_a_drop_in_is_written_and_config_toml_untouched() {
    let (_dir, h) = host_with(Some(CONTAINERD_24));
    let changes = host::install(&h, &plan(RUNSC), CONTAINERD_2_4).unwrap();
    assert_eq!(changed(&changes), [DROP_IN, RUNSC_TOML]);
    assert_eq!(
        read(&h, CONFIG_TOML),
        CONTAINERD_24,
        "config.toml keeps every byte"
    );
    assert!(!backup_path(&h.path(CONFIG_TOML)).exists());
    assert!(Config::parse(&read(&h, DROP_IN)).unwrap().has(&handler()));
}

#[test]
fn a_stale_entry_in_config_toml_moves_to_the_drop_in() {
    // The Go extension appended its entry to config.toml; gardener-node-agent later added the
    // import. On containerd 2.x (which merges imports) the entry moves to a drop-in.
    let go = format!(
        "version = 2\nimports = [\"{CONF_D_IMPORT}\"]\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc.v1\"\n"
    );
    let (_dir, h) = host_with(Some(&go));
    let changes = host::install(&h, &plan(RUNSC), CONTAINERD_2_4).unwrap();
    assert_eq!(changed(&changes), [DROP_IN, CONFIG_TOML, RUNSC_TOML]);
    assert!(
        !read(&h, CONFIG_TOML).contains("runsc"),
        "one definition, in the drop-in"
    );
    assert!(
        host::install(&h, &plan(RUNSC), CONTAINERD_2_4)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn on_containerd_1_7_a_stale_entry_is_updated_in_place_and_no_drop_in_is_written() {
    // The same file on containerd 1.7: a drop-in would replace the whole CRI plugin table
    // (see containerd::Imports), so the entry stays in config.toml, and the rest of it too.
    let go = format!(
        "version = 2\nimports = [\"{CONF_D_IMPORT}\"]\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.example/pause:3.10\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc.v1\"\n"
    );
    let (_dir, h) = host_with(Some(&go));
    let changes = host::install(&h, &plan(RUNSC), CONTAINERD_1_7).unwrap();
    assert_eq!(changed(&changes), [CONFIG_TOML, RUNSC_TOML]);
    assert!(!h.path(DROP_IN).exists());
    let config = read(&h, CONFIG_TOML);
    assert!(Config::parse(&config).unwrap().has(&handler()), "{config}");
    assert!(config.contains("registry.example/pause:3.10"), "{config}");
    assert!(
        host::install(&h, &plan(RUNSC), CONTAINERD_1_7)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_broken_or_missing_config_is_an_error_and_nothing_is_written() {
    let broken = "version = 2\n[plugins\n";
    let (dir, h) = host_with(Some(broken));
    let err = host::install(&h, &plan(RUNSC), CONTAINERD_1_6).unwrap_err();
    assert!(
        err.to_string().contains("config.toml") && err.to_string().contains("not valid TOML"),
        "{err}"
    );
    assert_eq!(read(&h, CONFIG_TOML), broken, "untouched");
    assert_eq!(
        files_under(dir.path()),
        ["etc/containerd/config.toml"],
        "no other file written"
    );

    let (_dir, h) = host_with(None);
    let err = host::install(&h, &plan(RUNSC), CONTAINERD_1_6).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!h.path(RUNSC_TOML).exists());
}

#[test]
fn uninstall_restores_the_original_and_roll_back_undoes_an_install() {
    let (_dir, h) = host_with(Some(CONTAINERD_16));
    host::install(&h, &plan(RUNSC), CONTAINERD_1_6).unwrap();
    let changes = host::uninstall(&h, &plan(RUNSC)).unwrap();
    assert_eq!(changed(&changes), [CONFIG_TOML, RUNSC_TOML]);
    assert_eq!(read(&h, CONFIG_TOML), CONTAINERD_16, "byte for byte");
    assert!(!h.path(RUNSC_TOML).exists());
    assert!(
        host::uninstall(&h, &plan(RUNSC)).unwrap().is_empty(),
        "nothing left to remove"
    );

    // Install, then (say containerd did not come back) roll back: as before.
    let (_dir, h) = host_with(Some(CONTAINERD_24));
    let changes = host::install(&h, &plan(RUNSC), CONTAINERD_2_4).unwrap();
    host::roll_back(&h, "gvisor", &changes).unwrap();
    assert_eq!(read(&h, CONFIG_TOML), CONTAINERD_24);
    assert!(
        !h.path(DROP_IN).exists() && !h.path(RUNSC_TOML).exists(),
        "new files are removed again"
    );
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
