//! Certificates and keys for one control plane: a CA, the API server's serving certificate,
//! an admin client certificate (`system:masters`), the service-account signing key, and the
//! front proxy's CA and client certificate with which the aggregation layer forwards requests
//! to aggregated API servers (a CA of its own, as in a real cluster, so that an ordinary
//! client certificate can never assert a user in request headers).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Result, io_err};

/// The files written by [`Pki::write`], plus the admin credentials in memory.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    pub front_proxy_ca_cert: PathBuf,
    pub front_proxy_client_cert: PathBuf,
    pub front_proxy_client_key: PathBuf,
    /// The admin client certificate and key (what the API server presents to kubelets).
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    dir: PathBuf,
    ca_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
}

impl Pki {
    /// Writes the files; the API server's serving certificate is valid for localhost,
    /// 127.0.0.1 and `extra_sans` (e.g. the node IP pods reach it at).
    pub fn write(dir: &Path, extra_sans: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;

        let (ca_pem, issuer) = ca("sandbox-testenv-ca")?;

        let serving_key = KeyPair::generate()?;
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        sans.extend(extra_sans.iter().cloned());
        let mut serving = CertificateParams::new(sans)?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let (admin_cert_pem, admin_key_pem) =
            client_cert(&issuer, "testenv-admin", &["system:masters"])?;

        let service_account_key = KeyPair::generate()?;

        let (front_proxy_ca_pem, front_proxy_issuer) = ca("sandbox-testenv-front-proxy-ca")?;
        let (front_proxy_cert_pem, front_proxy_key_pem) =
            client_cert(&front_proxy_issuer, FRONT_PROXY_USER, &[])?;

        let pki = Pki {
            issuer,
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_public_key: dir.join("service-account.pub"),
            front_proxy_ca_cert: dir.join("front-proxy-ca.crt"),
            front_proxy_client_cert: dir.join("front-proxy-client.crt"),
            front_proxy_client_key: dir.join("front-proxy-client.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            dir: dir.to_path_buf(),
            ca_pem,
            admin_cert_pem,
            admin_key_pem,
        };
        for (path, content) in [
            (&pki.ca_cert, pki.ca_pem.clone()),
            (&pki.serving_cert, serving_cert.pem()),
            (&pki.serving_key, serving_key.serialize_pem()),
            (
                &pki.service_account_key,
                service_account_key.serialize_pem(),
            ),
            (
                &pki.service_account_public_key,
                service_account_key.public_key_pem(),
            ),
            (&pki.front_proxy_ca_cert, front_proxy_ca_pem),
            (&pki.front_proxy_client_cert, front_proxy_cert_pem),
            (&pki.front_proxy_client_key, front_proxy_key_pem),
            (&pki.admin_cert, pki.admin_cert_pem.clone()),
            (&pki.admin_key, pki.admin_key_pem.clone()),
        ] {
            std::fs::write(path, content).map_err(io_err(path))?;
        }
        Ok(pki)
    }

    /// The CA certificate (PEM) that signs every serving and client certificate of this
    /// control plane except the front proxy's.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes a serving certificate for `name` valid for `dns_names` and 127.0.0.1, signed by
    /// the control plane's CA, as `<name>.crt` and `<name>.key`; returns both paths.
    pub fn serving_cert(&self, name: &str, dns_names: &[&str]) -> Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let mut sans: Vec<String> = dns_names.iter().map(|n| n.to_string()).collect();
        sans.push("127.0.0.1".into());
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(io_err(&key_path))?;
        Ok((cert_path, key_path))
    }

    /// An admin kubeconfig (YAML) for the API server at `server`.
    pub fn kubeconfig_yaml(&self, server: &str) -> String {
        kubeconfig_yaml(
            server,
            &self.ca_pem,
            "testenv-admin",
            &self.admin_cert_pem,
            &self.admin_key_pem,
        )
    }

    /// A kubeconfig (YAML) for user `user` in `groups`, authenticated by a new client
    /// certificate.
    pub fn user_kubeconfig_yaml(
        &self,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<String> {
        let (cert, key) = client_cert(&self.issuer, user, groups)?;
        Ok(kubeconfig_yaml(server, &self.ca_pem, user, &cert, &key))
    }
}

/// The common name of the front proxy's client certificate (`--requestheader-allowed-names`).
pub(crate) const FRONT_PROXY_USER: &str = "front-proxy-client";

/// A new self-signed CA: its certificate (PEM) and the issuer that signs with it.
fn ca(common_name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn client_cert(
    issuer: &Issuer<'static, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: testenv
  context:
    cluster: testenv
    user: {user}
current-context: testenv
"#,
            ca = STANDARD.encode(ca_pem),
            cert = STANDARD.encode(cert_pem),
            key = STANDARD.encode(key_pem),
        )
    }
}
