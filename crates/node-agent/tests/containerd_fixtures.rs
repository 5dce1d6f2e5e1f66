//! The editor on real containerd configurations, each the output of `containerd config default`
//! of the version in its file name (Debian's 1.6.20; 1.7.35 and 2.4.2 built from their Go
//! modules): format preserved, idempotent, reversible.

use sandbox_node_agent::containerd::{CONF_D_IMPORT, Config, Handler, Schema};

const CONTAINERD_16: &str = include_str!("fixtures/containerd-1.6-default.toml");

#[test]
fn containerd_1_6_default_config() {
    let config = Config::parse(CONTAINERD_16).unwrap();
    assert_eq!(config.schema(), Schema::V2);
    assert!(!config.imports_conf_d());
    let installed = config.with_handler(&Handler::runsc()).unwrap().unwrap();
    insta::assert_snapshot!(diff(CONTAINERD_16, &installed));
    let reparsed = Config::parse(&installed).unwrap();
    assert_eq!(reparsed.with_handler(&Handler::runsc()).unwrap(), None);
    assert_eq!(
        reparsed.without_handler("runsc").unwrap(),
        CONTAINERD_16,
        "uninstall gives back every byte"
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
    let config = Config::parse(CONTAINERD_24).unwrap();
    assert_eq!(
        config.schema(),
        Schema::V3,
        "version 4 uses the containerd 2.x plugin names"
    );
    assert!(
        config.imports_conf_d(),
        "containerd 2.x imports conf.d by default: drop-in preferred"
    );
    let installed = config.with_handler(&Handler::runsc()).unwrap().unwrap();
    insta::assert_snapshot!(diff(CONTAINERD_24, &installed));
    let reparsed = Config::parse(&installed).unwrap();
    assert_eq!(reparsed.with_handler(&Handler::runsc()).unwrap(), None);
    assert_eq!(
        reparsed.without_handler("runsc").unwrap(),
        CONTAINERD_24,
        "uninstall gives back every byte"
    );
}

const CONTAINERD_17: &str = include_str!("fixtures/containerd-1.7-default.toml");

#[test]
fn containerd_1_7_default_config() {
    let config = Config::parse(CONTAINERD_17).unwrap();
    assert_eq!(config.schema(), Schema::V2);
    assert!(!config.imports_conf_d());
    let installed = config.with_handler(&Handler::runsc()).unwrap().unwrap();
    insta::assert_snapshot!(diff(CONTAINERD_17, &installed));
    let reparsed = Config::parse(&installed).unwrap();
    assert_eq!(reparsed.with_handler(&Handler::runsc()).unwrap(), None);
    assert_eq!(
        reparsed.without_handler("runsc").unwrap(),
        CONTAINERD_17,
        "uninstall gives back every byte"
    );
}
