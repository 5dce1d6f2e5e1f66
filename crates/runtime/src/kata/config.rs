//! The Kata providerConfig (`KataConfiguration`): which hypervisors a pool offers and how
//! their VMs are sized. Decoded strictly: an unknown field is an error naming it, since a
//! typo here (say `hypervisor:` for `hypervisors:`) would otherwise silently give defaults.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

pub use crate::provider_config::ConfigError;
use crate::provider_config::{TypeMeta, decode, leaf};
use crate::quantity::Quantity;

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
        Overhead::new(memory, "250m")
    }
}

fn names(hypervisors: &[Hypervisor]) -> String {
    hypervisors
        .iter()
        .map(|h| h.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn allowed_hypervisors() -> String {
    names(&Hypervisor::ALL)
}

impl<'de> Deserialize<'de> for Hypervisor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        leaf(d, &allowed_hypervisors(), |v| {
            v.as_str().and_then(Hypervisor::parse)
        })
    }
}

/// What a pod of a hypervisor costs beyond its containers (`RuntimeClass.overhead.podFixed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overhead {
    /// A memory quantity, e.g. `320Mi`.
    pub memory: Quantity,
    /// A CPU quantity, e.g. `250m`.
    pub cpu: Quantity,
}

impl Overhead {
    fn new(memory: &str, cpu: &str) -> Self {
        Overhead {
            memory: Quantity::memory(memory).expect("a valid default"),
            cpu: Quantity::cpu(cpu).expect("a valid default"),
        }
    }

    /// The larger of two overheads, per resource.
    pub fn max(&self, other: &Overhead) -> Overhead {
        Overhead {
            memory: self.memory.clone().max(other.memory.clone()),
            cpu: self.cpu.clone().max(other.cpu.clone()),
        }
    }
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

/// What a `KataConfiguration` must say it is.
pub const TYPE_META: TypeMeta = TypeMeta {
    api_versions: &[API_VERSION],
    kind: KIND,
};

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
    pub devmapper_pool_size: Quantity,
}

impl Default for KataConfig {
    fn default() -> Self {
        KataConfig::offering(&DEFAULT_HYPERVISORS)
    }
}

impl KataConfig {
    /// Every hypervisor, for the cleanup: it removes whatever an earlier config installed.
    pub fn everything() -> Self {
        KataConfig::offering(&Hypervisor::ALL)
    }

    /// The defaults with `hypervisors` offered, each with its default overhead.
    fn offering(hypervisors: &[Hypervisor]) -> Self {
        KataConfig {
            hypervisors: hypervisors.to_vec(),
            overhead: hypervisors
                .iter()
                .map(|h| (*h, h.default_overhead()))
                .collect(),
            debug: false,
            default_vcpus: DEFAULT_VCPUS,
            default_memory_mib: DEFAULT_MEMORY_MIB,
            devmapper_pool_size: Quantity::memory(DEFAULT_POOL_SIZE).expect("a valid default"),
        }
    }
}

/// The providerConfig as written, after `apiVersion` and `kind`. Strict: a typo here (say
/// `hypervisor:` for `hypervisors:`) would otherwise silently give defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default, deserialize_with = "hypervisor_list")]
    hypervisors: Option<Vec<Hypervisor>>,
    /// By name: whether a hypervisor is offered is a rule between fields ([`Spec::validate`]).
    overhead: Option<BTreeMap<String, OverheadSpec>>,
    #[serde(default, deserialize_with = "boolean")]
    debug: Option<bool>,
    #[serde(rename = "defaultVCPUs")]
    default_vcpus: Option<Whole<1, 256>>,
    default_memory: Option<Whole<128, { 1024 * 1024 }>>,
    #[serde(default, deserialize_with = "pool_size")]
    devmapper_pool_size: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverheadSpec {
    #[serde(default, deserialize_with = "memory")]
    memory: Option<Quantity>,
    #[serde(default, deserialize_with = "cpu")]
    cpu: Option<Quantity>,
}

/// A whole number from `MIN` to `MAX`.
#[derive(Debug)]
struct Whole<const MIN: u32, const MAX: u32>(u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        leaf(d, &format!("a whole number from {MIN} to {MAX}"), |v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (MIN..=MAX).contains(n))
                .map(Whole)
        })
    }
}

fn hypervisor_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Hypervisor>>, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Option<Vec<Hypervisor>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list; allowed entries: {}", allowed_hypervisors())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut list = Vec::new();
            while let Some(h) = seq.next_element()? {
                list.push(h);
            }
            Ok(Some(list))
        }
    }
    d.deserialize_any(List)
}

fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    leaf(d, "true, false", |v| match v {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(*b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(Some(false)),
        _ => None,
    })
}

fn memory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    leaf(d, "a memory quantity like 320Mi or 1Gi", |v| {
        v.as_str().and_then(Quantity::memory).map(Some)
    })
}

fn cpu<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    leaf(d, "a CPU quantity like 250m or 1", |v| {
        v.as_str().and_then(Quantity::cpu).map(Some)
    })
}

fn pool_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    leaf(d, "a size like 100Gi (Ki, Mi, Gi or Ti)", |v| match v {
        Value::Null => Some(None),
        v => v.as_str().and_then(Quantity::memory).map(Some),
    })
}

impl crate::actuator::RuntimeConfig for KataConfig {
    /// Every hypervisor the pool offers gets its handler, configuration and ready label.
    fn node_plan(&self, image: &str) -> crate::node_plan::NodePlan {
        super::node::node_plan(self, image)
    }

    fn parse(provider_config: Option<&Value>) -> Result<Self, ConfigError> {
        parse(provider_config)
    }
}

/// Validates a ContainerRuntime's raw providerConfig; None means defaults.
pub fn parse(provider_config: Option<&Value>) -> Result<KataConfig, ConfigError> {
    decode::<Spec>(provider_config, TYPE_META)?
        .unwrap_or_default()
        .validate()
}

impl Spec {
    /// The rules between fields: hypervisors listed once, at least one; overheads only for
    /// offered ones.
    fn validate(self) -> Result<KataConfig, ConfigError> {
        let mut config = KataConfig::default();
        if let Some(listed) = self.hypervisors {
            let mut hypervisors = Vec::new();
            for (i, h) in listed.into_iter().enumerate() {
                if hypervisors.contains(&h) {
                    return Err(ConfigError::at(
                        &format!("hypervisors[{i}]"),
                        format!("{:?} is listed twice", h.name()),
                    ));
                }
                hypervisors.push(h);
            }
            if hypervisors.is_empty() {
                return Err(ConfigError::at(
                    "hypervisors",
                    format!(
                        "must list at least one of {} (leave it out for {})",
                        allowed_hypervisors(),
                        DEFAULT_HYPERVISORS.map(Hypervisor::name).join(", ")
                    ),
                ));
            }
            hypervisors.sort();
            config = KataConfig::offering(&hypervisors);
        }
        for (name, spec) in self.overhead.unwrap_or_default() {
            let offered = Hypervisor::parse(&name).filter(|h| config.hypervisors.contains(h));
            let Some(h) = offered else {
                return Err(ConfigError::at(
                    &format!("overhead.{name}"),
                    format!(
                        "is not an offered hypervisor; allowed: {}",
                        names(&config.hypervisors)
                    ),
                ));
            };
            let current = config
                .overhead
                .get_mut(&h)
                .expect("offered hypervisors have an overhead");
            if let Some(memory) = spec.memory {
                current.memory = memory;
            }
            if let Some(cpu) = spec.cpu {
                current.cpu = cpu;
            }
        }
        config.debug = self.debug.unwrap_or(config.debug);
        if let Some(Whole(n)) = self.default_vcpus {
            config.default_vcpus = n;
        }
        if let Some(Whole(n)) = self.default_memory {
            config.default_memory_mib = n;
        }
        if let Some(size) = self.devmapper_pool_size {
            config.devmapper_pool_size = size;
        }
        Ok(config)
    }
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
        assert_eq!(c.overhead[&Hypervisor::Qemu].memory.as_str(), "320Mi");
        assert_eq!(c.overhead[&Hypervisor::Clh].memory.as_str(), "130Mi");
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
            Overhead::new("400Mi", "250m")
        );
        assert_eq!(c.overhead[&Hypervisor::Fc], Overhead::new("130Mi", "500m"));
        assert!(c.debug);
        assert_eq!((c.default_vcpus, c.default_memory_mib), (2, 4096));
        assert_eq!(c.devmapper_pool_size.as_str(), "20Gi");
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
