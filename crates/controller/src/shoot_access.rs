//! The controller's access to a shoot, for the health check: a token of a shoot
//! ServiceAccount that may only `get` and `list` nodes (its RBAC travels in the runtime's shared
//! ManagedResource), never the shoot admin kubeconfig gardenlet keeps for extensions.
//!
//! Gardener's token-requestor pattern: the controller creates the Secret
//! `shoot-access-<shared ManagedResource>` in the shoot namespace with a kubeconfig that names
//! the shoot's API server and an empty token; gardener-resource-manager's token requestor
//! creates the ServiceAccount in the shoot, writes a short-lived token (renewed at 80 % of its
//! 12 h lifetime) and the CA bundle into that kubeconfig. The controller only creates the
//! Secret (once) and reads it back by name; it deletes it with the shared ManagedResource.
//!
//! A kubeconfig read back is trusted only as far as it needs to be: one that runs a program
//! (`exec`), calls an auth provider, names files on the controller's file system (a token
//! file would send the controller's own seed token to that server), or points at another
//! server than the one the controller wrote, is refused with a reason in the condition.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::Kubeconfig;
use sandbox_runtime::actuator::Description;

/// The shoot's API server as seen from the seed, `{namespace}` replaced by the shoot
/// namespace: the `kube-apiserver` Service there (`--shoot-api-server`).
pub const DEFAULT_SERVER: &str = "https://kube-apiserver.{namespace}.svc";

/// The Secret's key gardener-resource-manager fills.
const KUBECONFIG_KEY: &str = "kubeconfig";

/// The server of the shoot in `namespace` for the template `server`.
pub fn server(template: &str, namespace: &str) -> String {
    template.replace("{namespace}", namespace)
}

/// The shoot-access Secret of `runtime` in `namespace`, as the controller creates it: the
/// token requestor's labels and annotations, and a kubeconfig for `server` without token or
/// CA (gardener-resource-manager injects both).
pub fn secret(namespace: &str, runtime: &Description, server: &str) -> Secret {
    let labels: BTreeMap<String, String> = [
        ("resources.gardener.cloud/purpose", "token-requestor"),
        ("resources.gardener.cloud/class", "shoot"),
        (
            "app.kubernetes.io/managed-by",
            "gardener-extension-runtime-sandbox",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        (
            "serviceaccount.resources.gardener.cloud/name",
            runtime.health_service_account(),
        ),
        (
            "serviceaccount.resources.gardener.cloud/namespace",
            "kube-system".to_string(),
        ),
        (
            "serviceaccount.resources.gardener.cloud/inject-ca-bundle",
            "true".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": namespace,
        "clusters": [{"name": namespace, "cluster": {"server": server}}],
        "contexts": [{"name": namespace, "context": {"cluster": namespace, "user": runtime.health_service_account()}}],
        "users": [{"name": runtime.health_service_account(), "user": {"token": ""}}],
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(runtime.shoot_access_secret()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(
                KUBECONFIG_KEY.to_string(),
                ByteString(kubeconfig.to_string().into_bytes()),
            )]
            .into(),
        ),
        ..Secret::default()
    }
}

/// The kubeconfig in `secret`, once gardener-resource-manager filled it and if it is safe to
/// use for `server`; or why not.
pub fn kubeconfig(secret: &Secret, server: &str) -> Result<Kubeconfig, String> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .ok_or_else(|| format!("secret {name} has no {KUBECONFIG_KEY}"))?;
    let text = std::str::from_utf8(&data.0)
        .map_err(|_| format!("secret {name}: the kubeconfig is not UTF-8"))?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| format!("secret {name}: {e}"))?;
    let refuse = |why: &str| Err(format!("secret {name}: refused, the kubeconfig {why}"));
    for user in &kubeconfig.auth_infos {
        let Some(auth) = &user.auth_info else {
            continue;
        };
        if auth.exec.is_some() {
            return refuse("runs a program (exec)");
        }
        if auth.auth_provider.is_some() {
            return refuse("calls an auth provider");
        }
        if auth.token_file.is_some()
            || auth.client_certificate.is_some()
            || auth.client_key.is_some()
        {
            return refuse("names files on the controller's file system");
        }
    }
    for cluster in &kubeconfig.clusters {
        let Some(c) = &cluster.cluster else { continue };
        if c.certificate_authority.is_some() {
            return refuse("names files on the controller's file system");
        }
        if c.server.as_deref() != Some(server) {
            return refuse(&format!(
                "points at {:?} instead of {server}",
                c.server.as_deref().unwrap_or_default()
            ));
        }
        if c.insecure_skip_tls_verify == Some(true) || c.proxy_url.is_some() {
            return refuse("skips TLS verification or uses a proxy");
        }
    }
    let token_issued = kubeconfig.auth_infos.iter().any(|u| {
        u.auth_info
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .is_some_and(|t| !secrecy::ExposeSecret::expose_secret(t).is_empty())
    });
    if !token_issued {
        return Err(format!(
            "secret {name}: gardener-resource-manager has not issued the token yet"
        ));
    }
    Ok(kubeconfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> &'static Description {
        sandbox_runtime::actuator::actuator("gvisor")
            .unwrap()
            .description()
    }

    fn filled(secret: &Secret, user: serde_json::Value) -> Secret {
        let mut kubeconfig: serde_json::Value =
            serde_json::from_slice(&secret.data.as_ref().unwrap()[KUBECONFIG_KEY].0).unwrap();
        kubeconfig["users"][0]["user"] = user;
        let mut secret = secret.clone();
        secret.data.as_mut().unwrap().insert(
            KUBECONFIG_KEY.into(),
            ByteString(kubeconfig.to_string().into_bytes()),
        );
        secret
    }

    #[test]
    fn the_secret_asks_gardener_resource_manager_for_a_node_reader_token() {
        let s = secret(
            "shoot--p--s",
            runtime(),
            "https://kube-apiserver.shoot--p--s.svc",
        );
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("shoot-access-extension-runtime-gvisor")
        );
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let a = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            a["serviceaccount.resources.gardener.cloud/name"],
            "extension-runtime-gvisor-health"
        );
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["resources.gardener.cloud/purpose"],
            "token-requestor"
        );
        let e = kubeconfig(&s, "https://kube-apiserver.shoot--p--s.svc").unwrap_err();
        assert!(e.contains("has not issued the token yet"), "{e}");
        let ok = filled(&s, serde_json::json!({"token": "t0k3n"}));
        assert!(kubeconfig(&ok, "https://kube-apiserver.shoot--p--s.svc").is_ok());
    }

    #[test]
    fn kubeconfigs_that_run_programs_or_read_files_are_refused() {
        let server = "https://kube-apiserver.shoot--p--s.svc";
        let s = secret("shoot--p--s", runtime(), server);
        for (user, why) in [
            (
                serde_json::json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", "id"]}}),
                "runs a program",
            ),
            (
                serde_json::json!({"auth-provider": {"name": "oidc", "config": {}}}),
                "auth provider",
            ),
            (
                serde_json::json!({"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}),
                "names files",
            ),
            (
                serde_json::json!({"client-key": "/etc/key.pem", "client-certificate": "/etc/cert.pem"}),
                "names files",
            ),
        ] {
            let e = kubeconfig(&filled(&s, user.clone()), server).unwrap_err();
            assert!(e.contains("refused") && e.contains(why), "{user}: {e}");
        }
        let e = kubeconfig(
            &filled(&s, serde_json::json!({"token": "t"})),
            "https://other.example",
        )
        .unwrap_err();
        assert!(e.contains("points at"), "{e}");
    }
}
