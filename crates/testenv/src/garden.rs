//! A garden for tests: a kube-apiserver + etcd of its own with Gardener's real
//! `gardener-apiserver` aggregated into it, the way Gardener's own test environment and local
//! setup run it. `ControllerRegistration`, `ControllerDeployment`, `Shoot`, `CloudProfile` ...
//! are then served with Gardener's real defaulting, validation and admission plugins.
//!
//! ```no_run
//! # async fn t() {
//! let garden = sandbox_testenv::garden::shared();
//! let _logs = garden.logs_on_panic();
//! let client = garden.client().await.unwrap(); // talks to the garden's kube-apiserver
//! # }
//! ```
//!
//! The aggregation: the kube-apiserver proxies `/apis/core.gardener.cloud/...` to the
//! `APIService`'s Service, here an `ExternalName` Service `kube-system/gardener-apiserver`
//! pointing at `localhost` (there is no kube-proxy), on the port gardener-apiserver listens
//! on. It verifies gardener-apiserver's serving certificate against the `APIService`'s
//! `caBundle` for the name `gardener-apiserver.kube-system.svc`, and forwards the user in
//! `X-Remote-*` headers with the front proxy's client certificate, which gardener-apiserver
//! trusts through the `kube-system/extension-apiserver-authentication` ConfigMap. Objects are
//! stored in the garden's etcd under a prefix of their own.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIService, APIServiceSpec, ServiceReference,
};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{ControlPlane, Error, Options, Result, Server, Tool, server};

/// The Service (in `kube-system`) the `APIService`s point to.
pub const SERVICE_NAME: &str = "gardener-apiserver";
const SERVICE_NAMESPACE: &str = "kube-system";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A garden: kube-apiserver + etcd with gardener-apiserver aggregated.
///
/// Derefs to its [`ControlPlane`] (the garden's kube-apiserver): clients, kubeconfigs,
/// namespaces. Dropping it stops gardener-apiserver, then the control plane.
pub struct Garden {
    // Field order is drop order: gardener-apiserver stops before its etcd.
    gardener_apiserver: Server,
    control_plane: ControlPlane,
    group_versions: Vec<String>,
}

impl Deref for Garden {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.control_plane
    }
}

impl Garden {
    /// Starts the garden's etcd and kube-apiserver (without the seed's extension CRDs), then
    /// gardener-apiserver, registers one `APIService` per group version gardener-apiserver
    /// serves, and waits until each is Available and its resources are discoverable through
    /// the kube-apiserver. Builds the tools first if they are missing.
    pub async fn start() -> Result<Self> {
        let control_plane = ControlPlane::start_with(Options {
            skip_crds: true,
            ..Default::default()
        })
        .await?;
        let root = control_plane.root().to_path_buf();
        let service_host = format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc");
        let (cert, key) = control_plane
            .pki
            .serving_cert("gardener-apiserver", &[&service_host, "localhost"])?;
        let port = server::free_port()?;
        let kubeconfig = control_plane.kubeconfig_path().display().to_string();
        let gardener_apiserver = Server::start(
            "gardener-apiserver",
            &Tool::Gardener.path()?.join("gardener-apiserver"),
            &[
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", cert.display()),
                format!("--tls-private-key-file={}", key.display()),
                format!("--etcd-servers={}", control_plane.etcd_url()),
                // Gardener's objects next to the kube-apiserver's, in a key space of their own.
                "--etcd-prefix=/registry-gardener".into(),
                "--cluster-identity=sandbox-testenv-garden".into(),
                // Core API (informers for namespaces, secrets ...), delegated authentication
                // (TokenReview, the front proxy's CA) and authorization (SubjectAccessReview):
                // all against the garden's kube-apiserver, as the admin.
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--profiling=false".into(),
            ],
            &root,
            None,
        )?;
        let mut garden = Garden {
            gardener_apiserver,
            control_plane,
            group_versions: Vec::new(),
        };
        let direct = garden.direct_client(port).await?;
        garden.wait_healthy(&direct).await?;
        garden.group_versions = garden.register(&direct, port).await?;
        garden.wait_available().await?;
        Ok(garden)
    }

    /// The group versions gardener-apiserver serves (`core.gardener.cloud/v1beta1`, ...), each
    /// registered as an `APIService`.
    pub fn group_versions(&self) -> &[String] {
        &self.group_versions
    }

    /// The last `lines` lines of each server's log, gardener-apiserver's included.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "{}\n--- gardener-apiserver ({}) ---\n{}",
            self.control_plane.log_tails(lines),
            self.gardener_apiserver.log_path().display(),
            self.gardener_apiserver.log_tail(lines),
        )
    }

    /// A guard that prints all log tails if the test holding it panics.
    pub fn logs_on_panic(&self) -> crate::LogsOnPanic<'_> {
        crate::LogsOnPanic(self)
    }

    /// A client that talks to gardener-apiserver itself (not through the aggregator), as the
    /// admin: gardener-apiserver's serving certificate is signed by the control plane's CA,
    /// and it trusts the admin's client certificate through the kube-apiserver's
    /// authentication ConfigMap.
    async fn direct_client(&self, port: u16) -> Result<kube::Client> {
        let mut kubeconfig = self.control_plane.kubeconfig().clone();
        for cluster in &mut kubeconfig.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(format!("https://127.0.0.1:{port}"));
            }
        }
        crate::client_for(kubeconfig).await
    }

    async fn wait_healthy(&self, direct: &kube::Client) -> Result<()> {
        if crate::readyz_ok(direct, &self.gardener_apiserver, READY_TIMEOUT).await {
            return Ok(());
        }
        Err(Error::NotReady {
            server: "gardener-apiserver",
            seconds: READY_TIMEOUT.as_secs(),
            log_tail: self.log_tails(30),
        })
    }

    /// Creates the `ExternalName` Service and one `APIService` per group version that
    /// gardener-apiserver's own discovery lists; the preferred version gets the highest
    /// version priority, as Gardener's chart registers them.
    async fn register(&self, direct: &kube::Client, port: u16) -> Result<Vec<String>> {
        let client = self.control_plane.client().await?;
        let service = Service {
            metadata: ObjectMeta {
                name: Some(SERVICE_NAME.into()),
                namespace: Some(SERVICE_NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("localhost".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Service>::namespaced(client.clone(), SERVICE_NAMESPACE)
            .create(&PostParams::default(), &service)
            .await?;

        // Ready does not mean its client CA (read from the kube-apiserver's
        // extension-apiserver-authentication ConfigMap) is loaded: until it is, our client
        // certificate counts as anonymous and gets 403. Retry that, briefly.
        let deadline = Instant::now() + READY_TIMEOUT;
        let groups = loop {
            match direct.list_api_groups().await {
                Err(kube::Error::Api(e)) if e.code == 403 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => break other?,
            }
        };
        let api_services = Api::<APIService>::all(client);
        let mut registered = Vec::new();
        for group in &groups.groups {
            let preferred = group.preferred_version.as_ref().map(|v| v.version.as_str());
            for (i, version) in group.versions.iter().enumerate() {
                let priority = if Some(version.version.as_str()) == preferred {
                    100
                } else {
                    90 - i32::try_from(i).unwrap_or(0)
                };
                let api_service = APIService {
                    metadata: ObjectMeta {
                        name: Some(format!("{}.{}", version.version, group.name)),
                        ..Default::default()
                    },
                    spec: Some(APIServiceSpec {
                        group: Some(group.name.clone()),
                        version: Some(version.version.clone()),
                        group_priority_minimum: 10_000,
                        version_priority: priority,
                        ca_bundle: Some(ByteString(
                            self.control_plane.pki.ca_pem().as_bytes().to_vec(),
                        )),
                        service: Some(ServiceReference {
                            name: Some(SERVICE_NAME.into()),
                            namespace: Some(SERVICE_NAMESPACE.into()),
                            port: Some(i32::from(port)),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                api_services
                    .create(&PostParams::default(), &api_service)
                    .await?;
                registered.push(version.group_version.clone());
            }
        }
        if registered.is_empty() {
            return Err(Error::Tools(
                "gardener-apiserver's discovery listed no API groups".into(),
            ));
        }
        Ok(registered)
    }

    /// Waits until every `APIService` is Available and each group version lists resources
    /// through the kube-apiserver's discovery (before that, clients see "no matches").
    async fn wait_available(&self) -> Result<()> {
        let client = self.control_plane.client().await?;
        let api_services = Api::<APIService>::all(client.clone());
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: BTreeMap<String, String> = self
            .group_versions
            .iter()
            .map(|gv| (gv.clone(), "not yet checked".to_string()))
            .collect();
        while !pending.is_empty() {
            for (gv, why) in pending.iter_mut() {
                let (group, version) = gv.split_once('/').unwrap_or(("", gv));
                let name = format!("{version}.{group}");
                *why = match api_services.get(&name).await {
                    Ok(s) if is_available(&s) => match client.list_api_group_resources(gv).await {
                        Ok(list) if !list.resources.is_empty() => String::new(),
                        Ok(_) => "discovery lists no resources yet".into(),
                        Err(e) => format!("discovery: {e}"),
                    },
                    Ok(s) => format!("APIService {name} not Available: {}", condition(&s)),
                    Err(e) => format!("APIService {name}: {e}"),
                };
            }
            pending.retain(|_, why| !why.is_empty());
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline || !self.gardener_apiserver.is_running() {
                let reasons: Vec<String> = pending
                    .iter()
                    .map(|(gv, why)| format!("{gv}: {why}"))
                    .collect();
                return Err(Error::NotReady {
                    server: "gardener-apiserver (aggregated)",
                    seconds: READY_TIMEOUT.as_secs(),
                    log_tail: format!("{}\n{}", reasons.join("\n"), self.log_tails(30)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

fn is_available(api_service: &APIService) -> bool {
    api_service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

fn condition(api_service: &APIService) -> String {
    api_service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"))
        .map(|c| {
            format!(
                "{} ({})",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "no Available condition yet".into())
}

impl crate::LogTails for Garden {
    fn log_tails(&self, lines: usize) -> String {
        Garden::log_tails(self, lines)
    }
}

/// The garden shared by all tests of this test binary, started on first use.
///
/// Panics with the reason (including server log tails) if it cannot be started.
pub fn shared() -> &'static Garden {
    static SHARED: OnceLock<Result<Garden, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| crate::start_on_own_thread(Garden::start));
    match started {
        Ok(garden) => garden,
        Err(e) => panic!("cannot start the test garden: {e}"),
    }
}
