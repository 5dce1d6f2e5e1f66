//! The Kata providerConfig (`KataConfiguration`): which hypervisors a pool offers and how
//! their VMs are sized. Decoded strictly: an unknown field is an error naming it, since a
//! typo here (say `hypervisor:` for `hypervisors:`) would otherwise silently give defaults.

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::actuator::ConfigError;

/// The providerConfig's apiVersion.
pub const API_VERSION: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";
/// The providerConfig's kind.
pub const KIND: &str = "KataConfiguration";

/// A hypervisor Kata can start its VMs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hypervisor {
    /// QEMU: the most compatible; needs `/dev/kvm` and `/dev/vhost-vsock`.
    Qemu,
    /// Cloud Hypervisor: smaller and faster to boot; needs `/dev/kvm`.
    Clh,
    /// Firecracker: smallest; needs `/dev/kvm` and a devmapper thin pool for its disks.
    Fc,
}

impl Hypervisor {
    pub const ALL: [Hypervisor; 3] = [Hypervisor::Qemu, Hypervisor::Clh, Hypervisor::Fc];

    /// The name in providerConfigs, handlers and RuntimeClasses (`kata-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Clh => "clh",
            Hypervisor::Fc => "fc",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Hypervisor::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The RuntimeClass overhead kata-deploy ships today (qemu's 160Mi was OOM-killed).
    pub fn default_overhead(self) -> Overhead {
        let memory = match self {
            Hypervisor::Qemu => "320Mi",
            Hypervisor::Clh | Hypervisor::Fc => "130Mi",
        };
        Overhead {
            memory: memory.into(),
            cpu: "250m".into(),
        }
    }
}

fn allowed_hypervisors() -> String {
    Hypervisor::ALL.map(Hypervisor::name).join(", ")
}

/// What a pod of a hypervisor costs beyond its containers (`RuntimeClass.overhead.podFixed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overhead {
    /// A memory quantity, e.g. `320Mi`.
    pub memory: String,
    /// A CPU quantity, e.g. `250m`.
    pub cpu: String,
}

/// The hypervisors offered when the providerConfig does not say: the two that need nothing
/// but KVM on the node (Firecracker needs a devmapper pool, so it is asked for explicitly).
pub const DEFAULT_HYPERVISORS: [Hypervisor; 2] = [Hypervisor::Qemu, Hypervisor::Clh];
/// vCPUs a VM starts with unless the pod's limits ask for more.
pub const DEFAULT_VCPUS: u32 = 1;
/// MiB a VM starts with unless the pod's limits ask for more.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// Size of Firecracker's devmapper thin pool's data file.
pub const DEFAULT_POOL_SIZE: &str = "100Gi";

/// The validated Kata configuration of one worker pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KataConfig {
    /// Offered hypervisors, sorted, at least one.
    pub hypervisors: Vec<Hypervisor>,
    /// Overhead per offered hypervisor.
    pub overhead: BTreeMap<Hypervisor, Overhead>,
    /// Kata's debug logging (agent, runtime, hypervisor).
    pub debug: bool,
    pub default_vcpus: u32,
    pub default_memory_mib: u32,
    /// The devmapper pool's data size (only meaningful with `fc`).
    pub devmapper_pool_size: String,
}

impl Default for KataConfig {
    fn default() -> Self {
        KataConfig {
            hypervisors: DEFAULT_HYPERVISORS.to_vec(),
            overhead: DEFAULT_HYPERVISORS
                .into_iter()
                .map(|h| (h, h.default_overhead()))
                .collect(),
            debug: false,
            default_vcpus: DEFAULT_VCPUS,
            default_memory_mib: DEFAULT_MEMORY_MIB,
            devmapper_pool_size: DEFAULT_POOL_SIZE.into(),
        }
    }
}

impl KataConfig {
    /// Every hypervisor, for the cleanup: it removes whatever an earlier config installed.
    pub fn everything() -> Self {
        KataConfig {
            hypervisors: Hypervisor::ALL.to_vec(),
            overhead: Hypervisor::ALL
                .into_iter()
                .map(|h| (h, h.default_overhead()))
                .collect(),
            ..KataConfig::default()
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

fn describe(value: Option<&Value>) -> String {
    match value {
        None => "a missing value".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

const FIELDS: [&str; 8] = [
    "apiVersion",
    "kind",
    "hypervisors",
    "overhead",
    "debug",
    "defaultVCPUs",
    "defaultMemory",
    "devmapperPoolSize",
];

/// Validates a ContainerRuntime's raw providerConfig; None means defaults.
pub fn parse(provider_config: Option<&Value>) -> Result<KataConfig, ConfigError> {
    let Some(raw) = provider_config.filter(|v| !v.is_null()) else {
        return Ok(KataConfig::default());
    };
    let object = raw.as_object().ok_or_else(|| {
        invalid(
            "providerConfig",
            format!("must be an object of kind {KIND}"),
        )
    })?;
    let field = |name: &str| format!("providerConfig.{name}");
    if object.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION) {
        return Err(invalid(
            field("apiVersion"),
            format!(
                "{} is not supported; allowed: {API_VERSION}",
                describe(object.get("apiVersion"))
            ),
        ));
    }
    if object.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Err(invalid(
            field("kind"),
            format!(
                "{} is not supported; allowed: {KIND}",
                describe(object.get("kind"))
            ),
        ));
    }
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            field(unknown),
            format!(
                "is not a field of {KIND}; allowed: {}",
                FIELDS[2..].join(", ")
            ),
        ));
    }
    let mut config = KataConfig::default();

    if let Some(list) = object.get("hypervisors").filter(|v| !v.is_null()) {
        let items = list.as_array().ok_or_else(|| {
            invalid(
                field("hypervisors"),
                format!("must be a list; allowed entries: {}", allowed_hypervisors()),
            )
        })?;
        let mut hypervisors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let h = item.as_str().and_then(Hypervisor::parse).ok_or_else(|| {
                invalid(
                    format!("providerConfig.hypervisors[{i}]"),
                    format!(
                        "{} is not allowed; allowed: {}",
                        describe(Some(item)),
                        allowed_hypervisors()
                    ),
                )
            })?;
            if hypervisors.contains(&h) {
                return Err(invalid(
                    format!("providerConfig.hypervisors[{i}]"),
                    format!("{:?} is listed twice", h.name()),
                ));
            }
            hypervisors.push(h);
        }
        if hypervisors.is_empty() {
            return Err(invalid(
                field("hypervisors"),
                format!(
                    "must list at least one of {} (leave it out for {})",
                    allowed_hypervisors(),
                    DEFAULT_HYPERVISORS.map(Hypervisor::name).join(", ")
                ),
            ));
        }
        hypervisors.sort();
        config.hypervisors = hypervisors;
    }
    config.overhead = config
        .hypervisors
        .iter()
        .map(|h| (*h, h.default_overhead()))
        .collect();

    if let Some(overhead) = object.get("overhead").filter(|v| !v.is_null()) {
        let map = overhead.as_object().ok_or_else(|| {
            invalid(
                field("overhead"),
                "must be a map of hypervisor to {memory, cpu}",
            )
        })?;
        for (name, value) in map {
            let at = format!("providerConfig.overhead.{name}");
            let h = Hypervisor::parse(name)
                .filter(|h| config.hypervisors.contains(h))
                .ok_or_else(|| {
                    invalid(
                        &at,
                        format!(
                            "is not an offered hypervisor; allowed: {}",
                            config
                                .hypervisors
                                .iter()
                                .map(|h| h.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            let entry = value
                .as_object()
                .ok_or_else(|| invalid(&at, "must be an object with memory and/or cpu"))?;
            let current = config
                .overhead
                .get_mut(&h)
                .expect("offered hypervisors have an overhead");
            for (key, v) in entry {
                let at = format!("{at}.{key}");
                let text = v.as_str().map(str::trim).unwrap_or_default();
                match key.as_str() {
                    "memory" if is_memory(text) => current.memory = text.into(),
                    "cpu" if is_cpu(text) => current.cpu = text.into(),
                    "memory" => {
                        return Err(invalid(
                            at,
                            format!(
                                "{} is not allowed; allowed: a memory quantity like 320Mi or 1Gi",
                                describe(Some(v))
                            ),
                        ));
                    }
                    "cpu" => {
                        return Err(invalid(
                            at,
                            format!(
                                "{} is not allowed; allowed: a CPU quantity like 250m or 1",
                                describe(Some(v))
                            ),
                        ));
                    }
                    _ => return Err(invalid(at, "is not a field; allowed: memory, cpu")),
                }
            }
        }
    }

    if let Some(v) = object.get("debug").filter(|v| !v.is_null()) {
        config.debug = match v {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            other => {
                return Err(invalid(
                    field("debug"),
                    format!(
                        "{} is not allowed; allowed: true, false",
                        describe(Some(other))
                    ),
                ));
            }
        };
    }
    let number = |name: &str, min: u64, max: u64| -> Result<Option<u32>, ConfigError> {
        match object.get(name).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n as u32)),
                _ => Err(invalid(
                    field(name),
                    format!(
                        "{} is not allowed; allowed: a whole number from {min} to {max}",
                        describe(Some(v))
                    ),
                )),
            },
        }
    };
    if let Some(n) = number("defaultVCPUs", 1, 256)? {
        config.default_vcpus = n;
    }
    if let Some(n) = number("defaultMemory", 128, 1024 * 1024)? {
        config.default_memory_mib = n;
    }
    if let Some(v) = object.get("devmapperPoolSize").filter(|v| !v.is_null()) {
        match v.as_str().map(str::trim) {
            Some(text) if is_memory(text) && text.ends_with('i') => {
                config.devmapper_pool_size = text.into()
            }
            _ => {
                return Err(invalid(
                    field("devmapperPoolSize"),
                    format!(
                        "{} is not allowed; allowed: a size like 100Gi (Mi, Gi or Ti)",
                        describe(Some(v))
                    ),
                ));
            }
        }
    }
    Ok(config)
}

/// Bytes of a validated `<digits><Ki|Mi|Gi|Ti>` size; None for anything else.
pub fn memory_bytes(text: &str) -> Option<u64> {
    if !is_memory(text) {
        return None;
    }
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    let shift = match &text[digits.len()..] {
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => 40,
    };
    n.checked_mul(1 << shift)
}

/// `<digits><Ki|Mi|Gi|Ti>` (binary suffixes only: what memory is sized in).
fn is_memory(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(suffix, "Ki" | "Mi" | "Gi" | "Ti")
}

/// `<digits>m` or `<digits>` (cores).
fn is_cpu(text: &str) -> bool {
    let digits = text.strip_suffix('m').unwrap_or(text);
    !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(fields: Value) -> Value {
        let mut v = json!({"apiVersion": API_VERSION, "kind": KIND});
        for (k, x) in fields.as_object().unwrap() {
            v[k.as_str()] = x.clone();
        }
        v
    }

    #[test]
    fn defaults_are_qemu_and_clh_with_kata_deploys_overheads() {
        let c = parse(None).unwrap();
        assert_eq!(c.hypervisors, [Hypervisor::Qemu, Hypervisor::Clh]);
        assert_eq!(c.overhead[&Hypervisor::Qemu].memory, "320Mi");
        assert_eq!(c.overhead[&Hypervisor::Clh].memory, "130Mi");
        assert_eq!(parse(Some(&cfg(json!({})))).unwrap(), c);
    }

    #[test]
    fn every_field_is_read() {
        let c = parse(Some(&cfg(json!({
            "hypervisors": ["fc", "qemu"],
            "overhead": {"qemu": {"memory": "400Mi"}, "fc": {"cpu": "500m"}},
            "debug": true, "defaultVCPUs": 2, "defaultMemory": 4096, "devmapperPoolSize": "20Gi",
        }))))
        .unwrap();
        assert_eq!(c.hypervisors, [Hypervisor::Qemu, Hypervisor::Fc]);
        assert_eq!(
            c.overhead[&Hypervisor::Qemu],
            Overhead {
                memory: "400Mi".into(),
                cpu: "250m".into()
            }
        );
        assert_eq!(
            c.overhead[&Hypervisor::Fc],
            Overhead {
                memory: "130Mi".into(),
                cpu: "500m".into()
            }
        );
        assert!(c.debug);
        assert_eq!((c.default_vcpus, c.default_memory_mib), (2, 4096));
        assert_eq!(c.devmapper_pool_size, "20Gi");
    }

    #[test]
    fn rejections_name_the_field_and_the_allowed_values() {
        let cases = [
            (
                json!({"hypervisors": ["qemu", "kvm"]}),
                "providerConfig.hypervisors[1]",
                "allowed: qemu, clh, fc",
            ),
            (
                json!({"hypervisors": ["qemu", "qemu"]}),
                "providerConfig.hypervisors[1]",
                "twice",
            ),
            (
                json!({"hypervisors": []}),
                "providerConfig.hypervisors",
                "at least one",
            ),
            (
                json!({"hypervisors": "qemu"}),
                "providerConfig.hypervisors",
                "must be a list",
            ),
            (
                json!({"hypervisor": ["qemu"]}),
                "providerConfig.hypervisor",
                "not a field",
            ),
            (
                json!({"overhead": {"fc": {"memory": "1Gi"}}}),
                "providerConfig.overhead.fc",
                "allowed: qemu, clh",
            ),
            (
                json!({"overhead": {"qemu": {"memory": "lots"}}}),
                "providerConfig.overhead.qemu.memory",
                "320Mi",
            ),
            (
                json!({"overhead": {"qemu": {"cpu": "1.5"}}}),
                "providerConfig.overhead.qemu.cpu",
                "250m",
            ),
            (
                json!({"overhead": {"qemu": {"disk": "1"}}}),
                "providerConfig.overhead.qemu.disk",
                "memory, cpu",
            ),
            (
                json!({"debug": "yes"}),
                "providerConfig.debug",
                "true, false",
            ),
            (
                json!({"defaultVCPUs": 0}),
                "providerConfig.defaultVCPUs",
                "from 1 to 256",
            ),
            (
                json!({"defaultMemory": "2Gi"}),
                "providerConfig.defaultMemory",
                "from 128",
            ),
            (
                json!({"devmapperPoolSize": "100G\"\n[x]"}),
                "providerConfig.devmapperPoolSize",
                "100Gi",
            ),
        ];
        for (fields, field, allowed) in cases {
            let e = parse(Some(&cfg(fields.clone()))).unwrap_err();
            assert_eq!(e.field, field, "{fields}: {e}");
            assert!(e.message.contains(allowed), "{fields}: {e}");
        }
        let e = parse(Some(&json!({"apiVersion": "v1", "kind": KIND}))).unwrap_err();
        assert_eq!(e.field, "providerConfig.apiVersion");
        assert!(e.message.contains(API_VERSION), "{e}");
        let e = parse(Some(&json!({"apiVersion": API_VERSION}))).unwrap_err();
        assert_eq!(e.field, "providerConfig.kind");
        assert_eq!(
            parse(Some(&json!([1]))).unwrap_err().field,
            "providerConfig"
        );
    }
}
