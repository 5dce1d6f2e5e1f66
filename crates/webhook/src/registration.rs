//! Registration of our seed webhook the way Gardener's extensions register theirs: a
//! MutatingWebhookConfiguration `gardener-extension-runtime-sandbox` owned by the extension's
//! namespace (deleted with it), pointing at our Service (`service` mode, in the seed) or at a
//! URL (`url` mode, running outside), with our CA bundle; certificates in Secrets next to us,
//! renewed by [`reconcile`], which every replica runs periodically (writes are optimistic, so
//! replicas never overwrite each other's renewal).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use sandbox_runtime::kata::devmapper::POOL_LABEL;
use tracing::info;

use crate::certificates::{self, Ca, Server};
use crate::osc;
use crate::tls::Certificate;

/// Name of the webhook configuration and (in `service` mode) of our Service, as Gardener
/// names an extension's (`gardener-extension-<name>`).
pub const NAME: &str = "gardener-extension-runtime-sandbox";
/// The CA Secret.
pub const CA_SECRET: &str = "gardener-extension-runtime-sandbox-webhook-ca";
/// The server certificate Secret.
pub const SERVER_SECRET: &str = "gardener-extension-runtime-sandbox-webhook-server";
/// Field manager of our writes.
const MANAGER: &str = "gardener-extension-runtime-sandbox";
/// Label on our Secrets.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// How the API server reaches us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the Service `NAME` in `namespace` on `port` (inside the seed).
    Service { port: u16 },
    /// At `https://<host:port>` (outside the seed, e.g. development and tests).
    Url { host_port: String },
}

/// The webhook's registration settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// Namespace of our Service and Secrets (and the owner of the configuration).
    pub namespace: String,
    /// The installation mode: in `osc` the webhook must see every OSC it is meant for
    /// (`failurePolicy: Fail`).
    pub installation: sandbox_runtime::osc::InstallationMode,
}

/// Registration errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] certificates::Error),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

impl Config {
    /// The DNS names and IP addresses our server certificate must carry.
    pub fn server_names(&self) -> (Vec<String>, Vec<IpAddr>) {
        match &self.mode {
            Mode::Service { .. } => (
                vec![
                    NAME.to_string(),
                    format!("{NAME}.{}", self.namespace),
                    format!("{NAME}.{}.svc", self.namespace),
                ],
                Vec::new(),
            ),
            Mode::Url { host_port } => {
                let host = host_port
                    .rsplit_once(':')
                    .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(host_port.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => (Vec::new(), vec![ip]),
                    Err(_) => (vec![host.to_string()], Vec::new()),
                }
            }
        }
    }

    fn client_config(&self, path: &str, ca_bundle: &str) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca_bundle.as_bytes().to_vec()));
        match &self.mode {
            Mode::Service { port } => WebhookClientConfig {
                ca_bundle,
                service: Some(ServiceReference {
                    name: NAME.into(),
                    namespace: self.namespace.clone(),
                    path: Some(path.into()),
                    port: Some((*port).into()),
                }),
                url: None,
            },
            Mode::Url { host_port } => WebhookClientConfig {
                ca_bundle,
                service: None,
                url: Some(format!("https://{host_port}{path}")),
            },
        }
    }
}

/// The MutatingWebhookConfiguration: OSCs of shoot namespaces, only those of a worker pool
/// and (CEL match condition) only reconcile OSCs, so the API server calls us for nothing
/// else. In installation mode `daemonset`, `failurePolicy: Ignore`: we cannot tell Kata pools
/// from others before the call, and with `Fail` an outage of ours would block every OSC write
/// of the seed; an OSC written without our unit only leaves `kata-fc` unlabelled until the
/// next write (docs/kata.md). In mode `osc`, `Fail`: an OSC written without our entries would
/// take the runtime's binaries off the pool's nodes (gardener-node-agent deletes files no OSC
/// lists), which is worse than a delayed OSC write (docs/operations.md).
/// `reinvocationPolicy: IfNeeded`: another extension's OSC webhook may rewrite files after us.
pub fn webhook_configuration(
    config: &Config,
    ca_bundle: &str,
    owner: Option<&Namespace>,
) -> MutatingWebhookConfiguration {
    let owner_references = owner.and_then(|ns| {
        Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: ns.metadata.name.clone()?,
            uid: ns.metadata.uid.clone()?,
            controller: Some(true),
            block_owner_deletion: Some(false),
        }])
    });
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                NAME.to_string(),
            )])),
            owner_references,
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: osc::NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: config.client_config(osc::PATH, ca_bundle),
            failure_policy: Some(
                match config.installation {
                    sandbox_runtime::osc::InstallationMode::Osc => "Fail",
                    sandbox_runtime::osc::InstallationMode::DaemonSet => "Ignore",
                }
                .into(),
            ),
            match_policy: Some("Exact".into()),
            match_conditions: Some(vec![MatchCondition {
                name: "reconcile-purpose".into(),
                expression: "has(object.spec.purpose) && object.spec.purpose == 'reconcile'".into(),
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "gardener.cloud/role".to_string(),
                    "shoot".to_string(),
                )])),
                match_expressions: None,
            }),
            object_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: POOL_LABEL.into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
            }),
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["extensions.gardener.cloud".into()]),
                api_versions: Some(vec!["v1alpha1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec!["operatingsystemconfigs".into()]),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(10),
        }]),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn secret_parts(secret: &Secret) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    (data, annotations)
}

/// Writes `data`/`annotations` as Secret `name`: created if `current` is None, else replaced
/// at `current`'s resourceVersion (a concurrent renewal by another replica wins, and we
/// read its result on the next round).
async fn write_secret(
    secrets: &Api<Secret>,
    name: &str,
    current: Option<&Secret>,
    (data, annotations): (BTreeMap<String, String>, BTreeMap<String, String>),
) -> Result<(), Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_string(),
                MANAGER.to_string(),
            )])),
            resource_version: current.and_then(|s| s.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    match current {
        None => secrets.create(&PostParams::default(), &secret).await,
        Some(_) => secrets.replace(name, &PostParams::default(), &secret).await,
    }
    .map_err(api(format!("writing Secret {name}")))?;
    Ok(())
}

/// The CA, created or renewed as needed.
async fn ensure_ca(secrets: &Api<Secret>, now: i64) -> Result<Ca, Error> {
    let current = secrets
        .get_opt(CA_SECRET)
        .await
        .map_err(api(format!("reading Secret {CA_SECRET}")))?;
    let existing = match &current {
        Some(secret) => {
            let (data, annotations) = secret_parts(secret);
            // An unreadable CA Secret is replaced: nothing can be signed with it anyway.
            Ca::from_secret(CA_SECRET, &data, &annotations).ok()
        }
        None => None,
    };
    let next = match &existing {
        Some(ca) if !certificates::due(ca.not_before, ca.not_after, now) => match ca.pruned(now) {
            None => return Ok(ca.clone()),
            Some(pruned) => pruned,
        },
        Some(ca) => {
            info!(
                "renewing the webhook CA (the previous one stays in the bundle until it expires)"
            );
            certificates::new_ca(now, Some(ca))?
        }
        None => {
            info!("creating the webhook CA");
            certificates::new_ca(now, None)?
        }
    };
    write_secret(secrets, CA_SECRET, current.as_ref(), next.to_secret()).await?;
    Ok(next)
}

/// The server certificate, issued or renewed as needed.
async fn ensure_server(
    secrets: &Api<Secret>,
    ca: &Ca,
    config: &Config,
    now: i64,
) -> Result<Server, Error> {
    let (dns, ips) = config.server_names();
    let names = certificates::names_key(&dns, &ips);
    let current = secrets
        .get_opt(SERVER_SECRET)
        .await
        .map_err(api(format!("reading Secret {SERVER_SECRET}")))?;
    if let Some(secret) = &current {
        let (data, annotations) = secret_parts(secret);
        if let Ok(server) = Server::from_secret(SERVER_SECRET, &data, &annotations)
            && !server.needs_renewal(ca, &names, now)
        {
            return Ok(server);
        }
    }
    info!(%names, "issuing the webhook server certificate");
    let server = certificates::new_server(ca, &dns, &ips, now)?;
    write_secret(secrets, SERVER_SECRET, current.as_ref(), server.to_secret()).await?;
    Ok(server)
}

/// One round: CA (renewed if due), the webhook configuration with the CA bundle, then the
/// server certificate (re-issued if due or signed by an older CA), served from now on.
/// Returns whether the served certificate changed.
pub async fn reconcile(
    client: &kube::Client,
    config: &Config,
    certificate: &Certificate,
) -> Result<bool, Error> {
    let now = now();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let ca = ensure_ca(&secrets, now).await?;
    let owner = Api::<Namespace>::all(client.clone())
        .get_opt(&config.namespace)
        .await
        .map_err(api(format!("reading Namespace {}", config.namespace)))?;
    let desired = webhook_configuration(config, &ca.bundle_pem, owner.as_ref());
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            NAME,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(api(format!("applying MutatingWebhookConfiguration {NAME}")))?;
    let server = ensure_server(&secrets, &ca, config, now).await?;
    Ok(certificate.set(&server.cert_pem, &server.key_pem)?)
}

/// Deletes the webhook configuration (the extension is being removed, or webhooks disabled).
pub async fn deregister(client: &kube::Client) -> Result<(), Error> {
    match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(NAME, &Default::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api(format!("deleting MutatingWebhookConfiguration {NAME}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_per_mode() {
        let service = Config {
            mode: Mode::Service { port: 443 },
            namespace: "extension-runtime-sandbox-x".into(),
            installation: Default::default(),
        };
        assert_eq!(
            service.server_names().0,
            [
                "gardener-extension-runtime-sandbox",
                "gardener-extension-runtime-sandbox.extension-runtime-sandbox-x",
                "gardener-extension-runtime-sandbox.extension-runtime-sandbox-x.svc"
            ]
        );
        let url = |h: &str| Config {
            mode: Mode::Url {
                host_port: h.into(),
            },
            namespace: "x".into(),
            installation: Default::default(),
        };
        assert_eq!(
            url("127.0.0.1:9443").server_names().1,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            url("[::1]:9443").server_names().1,
            ["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            url("webhook.example.org").server_names().0,
            ["webhook.example.org"]
        );
        let config = webhook_configuration(&url("127.0.0.1:9443"), "PEM", None);
        let webhook = &config.webhooks.as_ref().unwrap()[0];
        assert_eq!(
            webhook.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/webhooks/kata-devmapper")
        );
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        let osc = Config {
            installation: sandbox_runtime::osc::InstallationMode::Osc,
            ..url("127.0.0.1:9443")
        };
        let config = webhook_configuration(&osc, "PEM", None);
        let webhook = &config.webhooks.as_ref().unwrap()[0];
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    }
}
