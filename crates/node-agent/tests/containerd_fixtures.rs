//! The editor on real containerd configurations, each the output of `containerd config default`
//! of the version in its file name (Debian's 1.6.20; 1.7.35 and 2.4.2 built from their Go
//! modules): format preserved, idempotent, reversible.

use sandbox_node_agent::containerd::{CONF_D_IMPORT, Config, Schema};
use sandbox_runtime::gvisor::node::version_dir;

/// gVisor's handler of version `v1`.
fn handler() -> sandbox_runtime::node_plan::Handler {
    sandbox_runtime::gvisor::node::handler(&version_dir("v1"))
}

const CONTAINERD_16: &str = include_str!("fixtures/containerd-1.6-default.toml");

/// Checks schema and import detection, then install (snapshot of the added lines),
/// re-install (no change) and uninstall (every byte back).
fn round_trip(name: &str, fixture: &str, schema: Schema, imports_conf_d: bool) {
    let config = Config::parse(fixture).unwrap();
    assert_eq!(config.schema(), schema);
    assert_eq!(config.imports_conf_d(), imports_conf_d);
    let installed = config.with_handler(&handler()).unwrap().unwrap();
    insta::assert_snapshot!(name, diff(fixture, &installed));
    let reparsed = Config::parse(&installed).unwrap();
    assert_eq!(reparsed.with_handler(&handler()).unwrap(), None);
    assert_eq!(
        reparsed.without_handler("runsc").unwrap(),
        fixture,
        "uninstall gives back every byte"
    );
}

#[test]
fn containerd_1_6_default_config() {
    round_trip(
        "containerd_1_6_default_config",
        CONTAINERD_16,
        Schema::V2,
        false,
    );
}

#[test]
fn containerd_1_6_with_gardener_node_agent_import() {
    let with_import = CONTAINERD_16.replacen(
        "imports = []",
        &format!("imports = [\"{CONF_D_IMPORT}\"]"),
        1,
    );
    let config = Config::parse(&with_import).unwrap();
    assert!(config.imports_conf_d(), "drop-in preferred");
}

/// The lines the edit added (the rest is asserted byte-equal by the round trip).
fn diff(before: &str, after: &str) -> String {
    let before: Vec<&str> = before.lines().collect();
    after
        .lines()
        .filter(|l| !l.trim().is_empty() && !before.contains(l))
        .collect::<Vec<_>>()
        .join("\n")
}

const CONTAINERD_24: &str = include_str!("fixtures/containerd-2.4-default.toml");

#[test]
fn containerd_2_4_default_config() {
    // version = 4 uses the containerd 2.x plugin names; conf.d is imported by default.
    round_trip(
        "containerd_2_4_default_config",
        CONTAINERD_24,
        Schema::V3,
        true,
    );
}

const CONTAINERD_17: &str = include_str!("fixtures/containerd-1.7-default.toml");

#[test]
fn containerd_1_7_default_config() {
    round_trip(
        "containerd_1_7_default_config",
        CONTAINERD_17,
        Schema::V2,
        false,
    );
}
