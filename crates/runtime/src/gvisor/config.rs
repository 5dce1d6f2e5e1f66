//! The gVisor providerConfig (`GVisorConfiguration`) and the `runsc.toml` it turns into.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

pub use crate::provider_config::{ConfigError, ConfigWarning};
use crate::provider_config::{TypeMeta, decode, describe};

/// The apiVersion the Go extension accepts.
pub const API_VERSION: &str = "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1";
/// The apiVersion the Go extension's README documented; accepted as a synonym.
pub const API_VERSION_LEGACY: &str = "gvisor.os.extensions.gardener.cloud/v1alpha1";
/// The providerConfig's kind.
pub const KIND: &str = "GVisorConfiguration";
/// Where runsc writes debug logs when `debug` is on (`%ID%` is the container ID,
/// `%COMMAND%` the runsc command).
pub const DEBUG_LOG_PATH: &str = "/var/log/runsc/%ID%/%COMMAND%-gvisor.log";

/// A flag we pass on to runsc, with the values it takes.
struct KnownFlag {
    name: &'static str,
    allowed: Allowed,
}

enum Allowed {
    /// One of these exact strings.
    OneOf(&'static [&'static str]),
    /// A signal number.
    Signal,
}

const KNOWN_FLAGS: &[KnownFlag] = &[
    KnownFlag {
        name: "debug",
        allowed: Allowed::OneOf(&["true", "false"]),
    },
    KnownFlag {
        name: "net-raw",
        allowed: Allowed::OneOf(&["true", "false"]),
    },
    KnownFlag {
        name: "nvproxy",
        allowed: Allowed::OneOf(&["true", "false"]),
    },
    KnownFlag {
        name: "panic-signal",
        allowed: Allowed::Signal,
    },
    KnownFlag {
        name: "platform",
        allowed: Allowed::OneOf(&["systrap", "kvm"]),
    },
];

/// What a `GVisorConfiguration` must say it is.
pub const TYPE_META: TypeMeta = TypeMeta {
    api_versions: &[API_VERSION, API_VERSION_LEGACY],
    kind: KIND,
};

/// The validated gVisor configuration of one worker pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GVisorConfig {
    /// runsc flags, sorted by name, values normalised.
    pub flags: BTreeMap<String, String>,
    /// Flags the user set that we do not pass on (ignored, as documented, but reported).
    pub ignored_flags: Vec<String>,
}

/// The providerConfig as written, after `apiVersion` and `kind`. Unknown fields are ignored,
/// like the Go extension's non-strict decoding (configs written for it keep working).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, deserialize_with = "flags")]
    config_flags: BTreeMap<String, FlagValue>,
}

/// A flag's value: a string in the Go API; booleans and numbers are accepted and normalised,
/// since YAML users write `net-raw: true` and mean the same. Anything else is refused by
/// [`GVisorConfig::validate`] if we know the flag, which can say what the flag takes.
#[derive(Debug)]
enum FlagValue {
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for FlagValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => FlagValue::Text(s.trim().to_string()),
            Value::Bool(b) => FlagValue::Text(b.to_string()),
            Value::Number(n) => FlagValue::Text(n.to_string()),
            _ => FlagValue::Other,
        })
    }
}

/// `configFlags`: a map (`null` for none).
fn flags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, FlagValue>, D::Error> {
    struct Flags;
    impl<'de> serde::de::Visitor<'de> for Flags {
        type Value = BTreeMap<String, FlagValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of flag names to string values")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut flags = BTreeMap::new();
            while let Some((name, value)) = map.next_entry()? {
                flags.insert(name, value);
            }
            Ok(flags)
        }
    }
    d.deserialize_any(Flags)
}

/// The flags we pass on to runsc, by name.
pub fn supported_flags() -> Vec<&'static str> {
    KNOWN_FLAGS.iter().map(|f| f.name).collect()
}

/// Validates a ContainerRuntime's raw providerConfig. None means defaults. Unknown top-level
/// fields are ignored like the Go extension's non-strict decoding; unknown flags are
/// ignored but listed in `ignored_flags`; known flags with invalid values are errors.
pub fn parse(provider_config: Option<&Value>) -> Result<GVisorConfig, ConfigError> {
    decode::<Spec>(provider_config, TYPE_META)?
        .unwrap_or_default()
        .validate()
}

impl Spec {
    /// The value rules: each known flag's value is one it takes.
    fn validate(self) -> Result<GVisorConfig, ConfigError> {
        let mut config = GVisorConfig::default();
        for (name, value) in self.config_flags {
            let field = format!("configFlags.{name}");
            let Some(known) = KNOWN_FLAGS.iter().find(|f| f.name == name) else {
                config.ignored_flags.push(name);
                continue;
            };
            let FlagValue::Text(text) = value else {
                return Err(ConfigError::at(
                    &field,
                    format!("must be a string; {}", known.allowed.describe()),
                ));
            };
            let normalised = known.allowed.check(&text).ok_or_else(|| {
                ConfigError::at(
                    &field,
                    format!(
                        "{} is not allowed; {}",
                        describe(Some(&Value::String(text.clone()))),
                        known.allowed.describe()
                    ),
                )
            })?;
            config.flags.insert(name, normalised);
        }
        Ok(config)
    }
}

impl crate::actuator::RuntimeConfig for GVisorConfig {
    fn parse(provider_config: Option<&Value>) -> Result<Self, ConfigError> {
        parse(provider_config)
    }

    fn warnings(&self) -> Vec<ConfigWarning> {
        warnings(self)
    }

    fn node_plan(&self, image: &str) -> crate::node_plan::NodePlan {
        super::node::node_plan(self, image)
    }
}

/// What the owner should know about an accepted configuration: the flags we do not pass on.
pub fn warnings(config: &GVisorConfig) -> Vec<ConfigWarning> {
    if config.ignored_flags.is_empty() {
        return Vec::new();
    }
    vec![ConfigWarning {
        reason: "UnknownFlags",
        field: "providerConfig.configFlags".into(),
        message: format!(
            "{} {} not supported and ignored; supported: {}",
            config.ignored_flags.join(", "),
            if config.ignored_flags.len() == 1 {
                "is"
            } else {
                "are"
            },
            supported_flags().join(", ")
        ),
    }]
}

impl Allowed {
    fn check(&self, text: &str) -> Option<String> {
        match self {
            Allowed::OneOf(values) => {
                let lower = text.to_ascii_lowercase();
                values.iter().find(|v| **v == lower).map(|v| v.to_string())
            }
            Allowed::Signal => match text.parse::<i32>() {
                Ok(n) if (1..=64).contains(&n) => Some(n.to_string()),
                _ => None,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Allowed::OneOf(values) => format!("allowed: {}", values.join(", ")),
            Allowed::Signal => "allowed: a signal number from 1 to 64".to_string(),
        }
    }
}

impl GVisorConfig {
    /// The flags runsc gets, in name order; `false` for debug or nvproxy means the flag is
    /// left out, and debug adds the debug-log path.
    pub fn runsc_flags(&self) -> BTreeMap<String, String> {
        let mut flags = BTreeMap::new();
        for (name, value) in &self.flags {
            match (name.as_str(), value.as_str()) {
                ("debug" | "nvproxy", "false") => {}
                ("debug", "true") => {
                    flags.insert("debug".to_string(), "true".to_string());
                    flags.insert("debug-log".to_string(), DEBUG_LOG_PATH.to_string());
                }
                _ => {
                    flags.insert(name.clone(), value.clone());
                }
            }
        }
        flags
    }

    /// `/etc/containerd/runsc.toml` for containerd-shim-runsc-v1: a `[runsc_config]` table
    /// with one string per flag, sorted, encoded by a TOML library (no injection possible).
    pub fn runsc_toml(&self) -> String {
        let mut doc = toml_edit::DocumentMut::new();
        doc.insert("runsc_config", toml_edit::Item::Table(self.runsc_config()));
        doc.to_string()
    }

    /// The `[runsc_config]` table of [`GVisorConfig::runsc_toml`].
    pub fn runsc_config(&self) -> toml_edit::Table {
        let mut table = toml_edit::Table::new();
        for (name, value) in self.runsc_flags() {
            table.insert(&name, toml_edit::value(value));
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(flags: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "configFlags": flags})
    }

    #[test]
    fn no_config_means_no_flags() {
        assert_eq!(parse(None).unwrap(), GVisorConfig::default());
        assert_eq!(parse(Some(&Value::Null)).unwrap(), GVisorConfig::default());
        assert_eq!(GVisorConfig::default().runsc_toml(), "[runsc_config]\n");
    }

    #[test]
    fn known_flags_are_sorted_and_normalised() {
        let c = parse(Some(&cfg(json!({
            "platform": "KVM", "net-raw": true, "panic-signal": 6, "nvproxy": "true", "debug": "true"
        }))))
        .unwrap();
        assert_eq!(
            c.runsc_toml(),
            "[runsc_config]\ndebug = \"true\"\ndebug-log = \"/var/log/runsc/%ID%/%COMMAND%-gvisor.log\"\n\
             net-raw = \"true\"\nnvproxy = \"true\"\npanic-signal = \"6\"\nplatform = \"kvm\"\n"
        );
    }

    #[test]
    fn legacy_api_version_is_accepted() {
        let raw = json!({"apiVersion": API_VERSION_LEGACY, "kind": KIND, "configFlags": {"net-raw": "false"}});
        assert_eq!(parse(Some(&raw)).unwrap().flags["net-raw"], "false");
    }

    #[test]
    fn unknown_flags_and_fields_are_ignored_but_reported() {
        let mut raw = cfg(json!({"net-raw": "true", "strace": "true", "a-flag": "x"}));
        raw["somethingElse"] = json!(1);
        let c = parse(Some(&raw)).unwrap();
        assert_eq!(c.ignored_flags, ["a-flag", "strace"]);
        assert_eq!(c.runsc_flags().keys().collect::<Vec<_>>(), ["net-raw"]);
    }

    #[test]
    fn invalid_values_name_the_field_and_the_allowed_values() {
        let e = parse(Some(&cfg(json!({"platform": "ptrace"})))).unwrap_err();
        assert_eq!(e.field, "providerConfig.configFlags.platform");
        assert_eq!(
            e.to_string(),
            "invalid providerConfig: providerConfig.configFlags.platform: \"ptrace\" is not allowed; allowed: systrap, kvm"
        );
        let e = parse(Some(&cfg(json!({"panic-signal": "SIGUSR1"})))).unwrap_err();
        assert!(e.message.contains("signal number from 1 to 64"), "{e}");
        let e = parse(Some(&cfg(json!({"net-raw": ["true"]})))).unwrap_err();
        assert!(e.message.contains("allowed: true, false"), "{e}");
        let e = parse(Some(&cfg(json!(["net-raw"])))).unwrap_err();
        assert_eq!(e.field, "providerConfig.configFlags");
    }

    #[test]
    fn wrong_api_version_kind_or_shape_is_an_error() {
        let e = parse(Some(&json!({"apiVersion": "v1", "kind": KIND}))).unwrap_err();
        assert_eq!(e.field, "providerConfig.apiVersion");
        assert!(
            e.message.contains(API_VERSION) && e.message.contains(API_VERSION_LEGACY),
            "{e}"
        );
        let e = parse(Some(&json!({"apiVersion": API_VERSION, "kind": "Other"}))).unwrap_err();
        assert_eq!(e.field, "providerConfig.kind");
        let e = parse(Some(&json!({"kind": KIND}))).unwrap_err();
        assert!(e.message.contains("a missing value"), "{e}");
        let e = parse(Some(&json!("net-raw=true"))).unwrap_err();
        assert_eq!(e.field, "providerConfig");
    }

    #[test]
    fn values_cannot_inject_toml() {
        // An unknown flag name with TOML syntax is ignored, never rendered.
        let c = parse(Some(&cfg(json!({"x\"]\n[evil": "1", "net-raw": "true"})))).unwrap();
        assert_eq!(c.runsc_toml(), "[runsc_config]\nnet-raw = \"true\"\n");
        // Values are validated; even if one were free text, toml_edit would quote it.
        let mut t = GVisorConfig::default();
        t.flags.insert("platform".into(), "kvm\"\n[x]".into());
        let doc: toml_edit::DocumentMut = t.runsc_toml().parse().unwrap();
        assert_eq!(doc["runsc_config"]["platform"].as_str(), Some("kvm\"\n[x]"));
        assert_eq!(doc.len(), 1);
    }
}
