//! Shoot admission, pure: what the garden's validating webhook, the offline `validate`
//! command and (for providerConfigs) the seed controller decide about a Shoot's container
//! runtimes. Every providerConfig goes through its runtime's [`Actuator::validate`], the
//! decoder the controller renders with, so the garden and the seed cannot disagree.
//!
//! Rules, for each worker pool that lists a runtime we serve (`gvisor`, `kata`):
//! - each such runtime's providerConfig is valid (errors name the field with its full path,
//!   e.g. `spec.provider.workers[1].cri.containerRuntimes[0].providerConfig.configFlags.platform`,
//!   and the allowed values; accepted oddities such as unknown gVisor flags are warnings);
//! - the pool's CRI is containerd, and each runtime type is listed at most once;
//! - with a CloudProfile: a runtime that needs virtualisation (Kata) only on machine types
//!   whose capability (by default `nestedVirtualization`, configurable) has the value (by
//!   default `"true"`), and any runtime only on machine image versions whose CloudProfile
//!   entry lists it under `cri[].containerRuntimes` (GEP-10: the CloudProfile is the
//!   operator's contract; Kubernetes versions carry no runtime list, the machine image
//!   version does).
//!
//! On an update only pools whose runtimes, CRI or machine changed are checked: a Shoot that a
//! CloudProfile change made invalid is not stuck on unrelated edits. A Shoot being deleted is
//! never checked.

use std::collections::BTreeMap;
use std::fmt;

use sandbox_api::shoot::{CloudProfileSpec, Worker};
use sandbox_api::{CloudProfile, Shoot};

use crate::CRI_CONTAINERD;
use crate::actuator::{Actuator, actuator};

/// Default capability a machine type needs for runtimes that run VMs.
pub const DEFAULT_VIRTUALIZATION_CAPABILITY: &str = "nestedVirtualization";
/// Default value that capability must have.
pub const DEFAULT_VIRTUALIZATION_VALUE: &str = "true";
/// At most this many allowed machine types are named in a message.
const LISTED_MACHINE_TYPES: usize = 10;

/// One finding: the field (Kubernetes field path) and what is wrong or worth knowing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The verdict on one Shoot: rejected if there is any error; warnings never reject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// `admitted` or `rejected`, then a line per error and warning (`  error: field: message`):
    /// how `validate` and the demo print a verdict.
    pub fn report(&self) -> String {
        let mut out = String::from(if self.allowed() {
            "admitted"
        } else {
            "rejected"
        });
        for (kind, findings) in [("error", &self.errors), ("warning", &self.warnings)] {
            for finding in findings {
                out.push_str(&format!("\n  {kind}: {finding}"));
            }
        }
        out
    }

    /// The errors as one message, Kubernetes' way (`field: message; field: message`).
    pub fn message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The machine-type capability a runtime that runs VMs needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: String,
    pub value: String,
}

/// Operator-configurable rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// None: Kata is admitted on any machine type.
    pub virtualization: Option<Capability>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            virtualization: Some(Capability {
                name: DEFAULT_VIRTUALIZATION_CAPABILITY.into(),
                value: DEFAULT_VIRTUALIZATION_VALUE.into(),
            }),
        }
    }
}

/// Whether `shoot` uses any runtime we serve (only such Shoots need a review).
pub fn uses_our_runtimes(shoot: &Shoot) -> bool {
    shoot
        .spec
        .provider
        .workers
        .iter()
        .filter_map(|w| w.cri.as_ref())
        .flat_map(|cri| &cri.container_runtimes)
        .any(|r| actuator(&r.type_).is_some())
}

/// Reviews `shoot` (with `old` on an update) against `profile` (None: the CloudProfile rules
/// are not checked, and a warning says so).
pub fn review(
    shoot: &Shoot,
    old: Option<&Shoot>,
    profile: Option<&CloudProfile>,
    rules: &Rules,
) -> Verdict {
    let mut verdict = Verdict::default();
    if shoot.is_deleting() {
        return verdict;
    }
    let mut unchecked_profile = false;
    let mut empty_profile = None;
    for (i, worker) in shoot.spec.provider.workers.iter().enumerate() {
        let Some(cri) = worker.cri.as_ref() else {
            continue;
        };
        let ours: Vec<(usize, &'static dyn Actuator, Option<&serde_json::Value>)> = cri
            .container_runtimes
            .iter()
            .enumerate()
            .filter_map(|(j, r)| actuator(&r.type_).map(|a| (j, a, r.provider_config.as_ref())))
            .collect();
        if ours.is_empty() {
            continue;
        }
        if !changed(worker, old) {
            continue;
        }
        let cri_path = format!("spec.provider.workers[{i}].cri");
        if cri.name != CRI_CONTAINERD {
            verdict.errors.push(Finding {
                field: format!("{cri_path}.name"),
                message: format!(
                    "{:?} cannot run {}; allowed: {CRI_CONTAINERD}",
                    cri.name,
                    ours.iter()
                        .map(|(_, a, _)| a.description().runtime_type)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for &(j, runtime, provider_config) in &ours {
            let path = format!("{cri_path}.containerRuntimes[{j}]");
            if let Some(earlier) = first.get(runtime.description().runtime_type) {
                verdict.errors.push(Finding {
                    field: format!("{path}.type"),
                    message: format!(
                        "{} is already listed at containerRuntimes[{earlier}]; a pool lists each runtime type at most once",
                        runtime.description().runtime_type
                    ),
                });
                continue;
            }
            first.insert(runtime.description().runtime_type, j);
            match runtime.validate(provider_config) {
                Ok(warnings) => verdict
                    .warnings
                    .extend(warnings.into_iter().map(|w| Finding {
                        field: format!("{path}.{}", w.field),
                        message: w.message,
                    })),
                Err(e) => verdict.errors.push(Finding {
                    field: format!("{path}.{}", e.field),
                    message: e.message,
                }),
            }
            match profile {
                // A NamespacedCloudProfile whose status gardener-controller-manager has not
                // written yet has nothing to check against: say so rather than pass silently.
                Some(profile)
                    if profile.spec.machine_types.is_empty()
                        && profile.spec.machine_images.is_empty() =>
                {
                    empty_profile = Some(name(profile).to_string());
                }
                Some(profile) => {
                    verdict.errors.extend(machine_image_lists(
                        profile, worker, runtime, &cri.name, &path,
                    ));
                    if runtime.description().needs_virtualization
                        && let Some(capability) = &rules.virtualization
                    {
                        verdict.errors.extend(machine_type_virtualizes(
                            profile, worker, i, runtime, capability,
                        ));
                    }
                }
                None => unchecked_profile = true,
            }
        }
    }
    if let Some(profile) = empty_profile {
        verdict.warnings.push(Finding {
            field: "spec.cloudProfile".into(),
            message: format!(
                "CloudProfile {profile} lists no machine types or images (a NamespacedCloudProfile's status may not be written yet): machine types and machine image versions were not checked"
            ),
        });
    }
    if unchecked_profile {
        verdict.warnings.push(Finding {
            field: "spec.cloudProfile".into(),
            message:
                "no CloudProfile given: machine types and machine image versions were not checked"
                    .into(),
        });
    }
    verdict
}

/// Whether the pool is new, or what we check changed in it (its CRI with the runtimes and
/// their providerConfigs, its machine).
fn changed(worker: &Worker, old: Option<&Shoot>) -> bool {
    old.and_then(|old| old.worker(&worker.name))
        .is_none_or(|before| before.cri != worker.cri || before.machine != worker.machine)
}

/// Whether [`review`] would look at anything: the Shoot is not being deleted and a pool with
/// a runtime we serve is new or changed (so the CloudProfile is read only then).
pub fn needs_review(shoot: &Shoot, old: Option<&Shoot>) -> bool {
    !shoot.is_deleting()
        && shoot.spec.provider.workers.iter().any(|w| {
            w.cri.as_ref().is_some_and(|cri| {
                cri.container_runtimes
                    .iter()
                    .any(|r| actuator(&r.type_).is_some())
            }) && changed(w, old)
        })
}

/// GEP-10's rule: the pool's machine image version lists the runtime for the pool's CRI.
fn machine_image_lists(
    profile: &CloudProfile,
    worker: &Worker,
    runtime: &dyn Actuator,
    cri_name: &str,
    path: &str,
) -> Option<Finding> {
    let image = worker.machine.image.as_ref()?;
    let version = image.version.as_deref()?;
    // An image or version the CloudProfile does not have is Gardener's own validation's to
    // refuse; we only judge what the operator listed.
    let listed = spec(profile)
        .machine_images
        .iter()
        .find(|m| m.name == image.name)?
        .versions
        .iter()
        .find(|v| v.version == version)?;
    let runtimes: Vec<&str> = listed
        .cri
        .iter()
        .filter(|c| c.name == cri_name)
        .flat_map(|c| c.container_runtimes.iter().map(|r| r.type_.as_str()))
        .collect();
    if runtimes.contains(&runtime.description().runtime_type) {
        return None;
    }
    Some(Finding {
        field: format!("{path}.type"),
        message: format!(
            "machine image {}@{version} does not list container runtime {} under cri[{cri_name}].containerRuntimes in CloudProfile {}; listed: {}",
            image.name,
            runtime.description().runtime_type,
            name(profile),
            if runtimes.is_empty() {
                "none".to_string()
            } else {
                runtimes.join(", ")
            }
        ),
    })
}

/// Runtimes that run VMs need a machine type with the virtualisation capability.
fn machine_type_virtualizes(
    profile: &CloudProfile,
    worker: &Worker,
    i: usize,
    runtime: &dyn Actuator,
    capability: &Capability,
) -> Option<Finding> {
    let spec = spec(profile);
    let definitions = &spec.machine_capabilities;
    // A machine type the CloudProfile does not have is Gardener's own validation's to refuse.
    let machine_type = spec
        .machine_types
        .iter()
        .find(|m| m.name == worker.machine.type_)?;
    let offers = |m: &sandbox_api::shoot::MachineType| {
        m.capability_values(&capability.name, definitions)
            .contains(&capability.value)
    };
    if offers(machine_type) {
        return None;
    }
    let capable: Vec<&str> = spec
        .machine_types
        .iter()
        .filter(|m| offers(m))
        .map(|m| m.name.as_str())
        .collect();
    let allowed = match capable.len() {
        0 => "none in this CloudProfile".to_string(),
        n if n > LISTED_MACHINE_TYPES => format!(
            "{} and {} more",
            capable[..LISTED_MACHINE_TYPES].join(", "),
            n - LISTED_MACHINE_TYPES
        ),
        _ => capable.join(", "),
    };
    Some(Finding {
        field: format!("spec.provider.workers[{i}].machine.type"),
        message: format!(
            "pool {:?}: machine type {:?} does not offer nested virtualisation, which {} needs (CloudProfile {} capability {}: {:?}); allowed: machine types whose {} includes {:?}: {allowed}",
            worker.name,
            worker.machine.type_,
            runtime.description().display_name,
            name(profile),
            capability.name,
            machine_type.capability_values(&capability.name, definitions),
            capability.name,
            capability.value,
        ),
    })
}

fn spec(profile: &CloudProfile) -> &CloudProfileSpec {
    &profile.spec
}

fn name(profile: &CloudProfile) -> &str {
    profile.metadata.name.as_deref().unwrap_or("(unnamed)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn shoot(workers: Value) -> Shoot {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "garden-p"},
            "spec": {"cloudProfile": {"kind": "CloudProfile", "name": "cp"},
                "provider": {"type": "local", "workers": workers}},
        }))
        .unwrap()
    }

    fn worker(name: &str, machine_type: &str, runtimes: Value) -> Value {
        json!({"name": name,
            "machine": {"type": machine_type, "image": {"name": "gardenlinux", "version": "1.0"}},
            "cri": {"name": "containerd", "containerRuntimes": runtimes}})
    }

    fn profile() -> CloudProfile {
        serde_json::from_value(json!({
            "metadata": {"name": "cp"},
            "spec": {"type": "local",
                "machineCapabilities": [{"name": "nestedVirtualization", "values": ["false", "true"]}],
                "machineTypes": [
                    {"name": "small", "capabilities": {"nestedVirtualization": ["false"]}},
                    {"name": "metal", "capabilities": {"nestedVirtualization": ["true"]}},
                    {"name": "undeclared"},
                ],
                "machineImages": [{"name": "gardenlinux", "versions": [
                    {"version": "1.0", "cri": [{"name": "containerd",
                        "containerRuntimes": [{"type": "gvisor"}, {"type": "kata"}]}]},
                    {"version": "0.9", "cri": [{"name": "containerd"}]},
                ]}]}
        }))
        .unwrap()
    }

    fn gvisor(flags: Value) -> Value {
        json!({"type": "gvisor", "providerConfig": {
            "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
            "kind": "GVisorConfiguration", "configFlags": flags}})
    }

    fn check(shoot: &Shoot) -> Verdict {
        review(shoot, None, Some(&profile()), &Rules::default())
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            workers: Value,
            errors: &'static [&'static str],
            warnings: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "valid: both runtimes, Kata on a capable machine type",
                workers: json!([
                    worker("a", "small", json!([gvisor(json!({"platform": "kvm"}))])),
                    worker("b", "metal", json!([{"type": "kata"}, gvisor(json!({}))]))
                ]),
                errors: &[],
                warnings: &[],
            },
            Case {
                name: "invalid gVisor flag value names the field and the allowed values",
                workers: json!([{"name": "x"}, worker("a", "small", json!([gvisor(json!({"platform": "ptrace"}))]))]),
                errors: &[
                    "spec.provider.workers[1].cri.containerRuntimes[0].providerConfig.configFlags.platform: \"ptrace\" is not allowed; allowed: systrap, kvm",
                ],
                warnings: &[],
            },
            Case {
                name: "unknown gVisor flag is a warning",
                workers: json!([worker(
                    "a",
                    "small",
                    json!([gvisor(json!({"foo": "1", "bar": "2"}))])
                )]),
                errors: &[],
                warnings: &[
                    "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.configFlags: bar, foo are not supported and ignored; supported: debug, net-raw, nvproxy, panic-signal, platform",
                ],
            },
            Case {
                name: "Kata on a machine type without the capability",
                workers: json!([worker("a", "small", json!([{"type": "kata"}]))]),
                errors: &[
                    "spec.provider.workers[0].machine.type: pool \"a\": machine type \"small\" does not offer nested virtualisation, which Kata Containers needs (CloudProfile cp capability nestedVirtualization: [\"false\"]); allowed: machine types whose nestedVirtualization includes \"true\": metal, undeclared",
                ],
                warnings: &[],
            },
            Case {
                name: "CRI other than containerd",
                workers: json!([{"name": "a", "machine": {"type": "small"},
                    "cri": {"name": "cri-o", "containerRuntimes": [{"type": "gvisor"}]}}]),
                errors: &[
                    "spec.provider.workers[0].cri.name: \"cri-o\" cannot run gvisor; allowed: containerd",
                ],
                warnings: &[],
            },
            Case {
                name: "a runtime type twice in a pool",
                workers: json!([worker(
                    "a",
                    "metal",
                    json!([{"type": "gvisor"}, {"type": "kata"}, {"type": "gvisor"}])
                )]),
                errors: &[
                    "spec.provider.workers[0].cri.containerRuntimes[2].type: gvisor is already listed at containerRuntimes[0]; a pool lists each runtime type at most once",
                ],
                warnings: &[],
            },
            Case {
                name: "machine image version that does not list the runtime",
                workers: json!([{"name": "a", "machine": {"type": "small", "image": {"name": "gardenlinux", "version": "0.9"}},
                    "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}}]),
                errors: &[
                    "spec.provider.workers[0].cri.containerRuntimes[0].type: machine image gardenlinux@0.9 does not list container runtime gvisor under cri[containerd].containerRuntimes in CloudProfile cp; listed: none",
                ],
                warnings: &[],
            },
            Case {
                name: "runtimes we do not serve are not ours to judge",
                workers: json!([{"name": "a", "machine": {"type": "small"},
                    "cri": {"name": "cri-o", "containerRuntimes": [{"type": "other"}, {"type": "other"}]}}]),
                errors: &[],
                warnings: &[],
            },
            Case {
                name: "invalid Kata providerConfig",
                workers: json!([worker(
                    "a",
                    "metal",
                    json!([{"type": "kata", "providerConfig": {
                    "apiVersion": "nope/v1", "kind": "KataConfiguration"}}])
                )]),
                errors: &[
                    "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.apiVersion",
                ],
                warnings: &[],
            },
        ];
        for case in cases {
            let verdict = check(&shoot(case.workers));
            assert_eq!(
                verdict.errors.len(),
                case.errors.len(),
                "{}: {verdict:?}",
                case.name
            );
            for (found, expected) in verdict.errors.iter().zip(case.errors) {
                assert!(
                    found.to_string().starts_with(expected),
                    "{}: {found} vs {expected}",
                    case.name
                );
            }
            let warnings: Vec<String> = verdict.warnings.iter().map(ToString::to_string).collect();
            assert_eq!(warnings, case.warnings, "{}", case.name);
            assert_eq!(verdict.allowed(), case.errors.is_empty(), "{}", case.name);
        }
    }

    #[test]
    fn updates_are_checked_only_where_they_change_what_we_own() {
        let old = shoot(json!([
            worker("a", "small", json!([{"type": "kata"}])),
            worker("b", "small", json!([]))
        ]));
        // Invalid already (e.g. the CloudProfile changed): an unrelated edit goes through.
        let mut edited = old.clone();
        edited.spec.kubernetes.version = "1.35.0".into();
        edited.spec.provider.workers[1].machine.type_ = "metal".into();
        let verdict = review(&edited, Some(&old), Some(&profile()), &Rules::default());
        assert!(verdict.allowed(), "{verdict:?}");
        // A change to the pool's runtimes is checked.
        let mut changed = old.clone();
        changed.spec.provider.workers[0]
            .cri
            .as_mut()
            .unwrap()
            .container_runtimes[0]
            .provider_config = Some(json!({"apiVersion": "x"}));
        assert!(!review(&changed, Some(&old), Some(&profile()), &Rules::default()).allowed());
        // A create of the same shoot is checked.
        assert!(!check(&old).allowed());
    }

    #[test]
    fn deletion_is_never_blocked() {
        let mut deleting = shoot(json!([worker(
            "a",
            "small",
            json!([gvisor(json!({"platform": "x"}))])
        )]));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-22T10:00:00Z".parse().unwrap(),
            ));
        assert!(check(&deleting).allowed());
    }

    #[test]
    fn without_a_cloud_profile_only_the_configuration_is_checked() {
        let s = shoot(json!([worker("a", "small", json!([{"type": "kata"}]))]));
        let verdict = review(&s, None, None, &Rules::default());
        assert!(verdict.allowed());
        assert_eq!(verdict.warnings[0].field, "spec.cloudProfile");
        let empty = CloudProfile {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("fresh".into()),
                ..Default::default()
            },
            ..CloudProfile::default()
        };
        let verdict = review(&s, None, Some(&empty), &Rules::default());
        assert!(verdict.allowed());
        assert!(
            verdict.warnings[0]
                .message
                .starts_with("CloudProfile fresh lists no machine types")
        );
        let disabled = Rules {
            virtualization: None,
        };
        assert!(review(&s, None, Some(&profile()), &disabled).allowed());
    }
}
