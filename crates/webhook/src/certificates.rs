//! The webhook's certificates, handled as Gardener's extension webhooks handle theirs: the
//! extension makes its own CA (30 days) and server certificate, keeps both in Secrets in its
//! namespace, puts the CA bundle into its webhook configuration and renews both before they
//! expire. A renewed CA is published next to the previous one (the bundle holds both until the
//! old one expires), and the server certificate is re-issued only after the bundle with the
//! new CA has been written, so the API server trusts every certificate we serve throughout.
//!
//! The functions here are pure (time in, PEM out); [`crate::registration`] reads and writes
//! the Secrets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// How long a CA is valid (Gardener's webhook CA: 30 days).
pub const CA_VALIDITY_SECS: i64 = 30 * 24 * 3600;
/// How long a server certificate is valid.
pub const SERVER_VALIDITY_SECS: i64 = 30 * 24 * 3600;
/// Common name of our CA.
const CA_COMMON_NAME: &str = "gardener-extension-runtime-sandbox-webhook";

/// Annotation: when a certificate was issued (Unix seconds).
pub const NOT_BEFORE: &str = "runtime-sandbox.gardener.cloud/not-before";
/// Annotation: when a certificate expires (Unix seconds).
pub const NOT_AFTER: &str = "runtime-sandbox.gardener.cloud/not-after";
/// Annotation on the CA Secret: when the previous CA (still in the bundle) expires.
pub const PREVIOUS_NOT_AFTER: &str = "runtime-sandbox.gardener.cloud/previous-not-after";
/// Annotation on the server Secret: the `not-after` of the CA that signed it.
pub const ISSUED_BY: &str = "runtime-sandbox.gardener.cloud/issued-by";
/// Annotation on the server Secret: the names it is valid for.
pub const NAMES: &str = "runtime-sandbox.gardener.cloud/names";

/// Certificate errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret {secret}: {what}")]
    Secret { secret: String, what: String },
}

/// Our CA as its Secret holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    /// The current CA and, until it expires, the previous one.
    pub bundle_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Expiry of the previous CA while it is in the bundle.
    pub previous_not_after: Option<i64>,
}

/// A server certificate as its Secret holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `not_after` of the CA that signed it (CAs are told apart by their expiry).
    pub issued_by: i64,
    /// The DNS names and IP addresses it is valid for, comma-separated.
    pub names: String,
}

/// Whether a certificate valid from `not_before` to `not_after` should be renewed at `now`:
/// once 80 % of its lifetime has passed (Gardener's secrets manager renews at 80 % too).
pub fn due(not_before: i64, not_after: i64, now: i64) -> bool {
    now >= not_before + (not_after - not_before) * 4 / 5
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A new CA valid from `now`; `previous` (if still valid) stays in the bundle.
pub fn new_ca(now: i64, previous: Option<&Ca>) -> Result<Ca, Error> {
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    params.not_before = at(now - 60);
    params.not_after = at(now + CA_VALIDITY_SECS);
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let previous = previous.filter(|p| p.not_after > now);
    let bundle_pem = match previous {
        Some(p) => format!("{cert_pem}{}", p.cert_pem),
        None => cert_pem.clone(),
    };
    Ok(Ca {
        cert_pem,
        key_pem: key.serialize_pem(),
        bundle_pem,
        not_before: now,
        not_after: now + CA_VALIDITY_SECS,
        previous_not_after: previous.map(|p| p.not_after),
    })
}

impl Ca {
    /// The same CA without the previous one in its bundle, once that one expired; None when
    /// nothing changes.
    pub fn pruned(&self, now: i64) -> Option<Ca> {
        let expired = self.previous_not_after.is_some_and(|t| t <= now);
        expired.then(|| Ca {
            bundle_pem: self.cert_pem.clone(),
            previous_not_after: None,
            ..self.clone()
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        // The issuer is rebuilt from our own CA's parameters and key: the subject and the key
        // identifier a signed certificate names are derived from exactly these.
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::new(ca_params()?, key))
    }

    /// Secret data and annotations.
    pub fn to_secret(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let data = [
            ("ca.crt", &self.cert_pem),
            ("ca.key", &self.key_pem),
            ("bundle.crt", &self.bundle_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let mut annotations: BTreeMap<String, String> = [
            (NOT_BEFORE, self.not_before.to_string()),
            (NOT_AFTER, self.not_after.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(t) = self.previous_not_after {
            annotations.insert(PREVIOUS_NOT_AFTER.into(), t.to_string());
        }
        (data, annotations)
    }

    /// Reads a CA Secret's data and annotations back.
    pub fn from_secret(
        secret: &str,
        data: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Ca, Error> {
        let get = |m: &BTreeMap<String, String>, k: &str| field(secret, m, k);
        Ok(Ca {
            cert_pem: get(data, "ca.crt")?,
            key_pem: get(data, "ca.key")?,
            bundle_pem: get(data, "bundle.crt")?,
            not_before: number(secret, &get(annotations, NOT_BEFORE)?)?,
            not_after: number(secret, &get(annotations, NOT_AFTER)?)?,
            previous_not_after: annotations
                .get(PREVIOUS_NOT_AFTER)
                .map(|t| number(secret, t))
                .transpose()?,
        })
    }
}

/// `key` of a Secret's data or annotations, or an error naming both.
fn field(secret: &str, map: &BTreeMap<String, String>, key: &str) -> Result<String, Error> {
    map.get(key).cloned().ok_or_else(|| Error::Secret {
        secret: secret.into(),
        what: format!("{key} is missing"),
    })
}

fn number(secret: &str, text: &str) -> Result<i64, Error> {
    text.parse().map_err(|_| Error::Secret {
        secret: secret.into(),
        what: format!("{text:?} is not a Unix time"),
    })
}

/// The names a server certificate must carry, comma-separated and sorted (the form kept in
/// its Secret, so a changed Service name or URL re-issues it).
pub fn names_key(dns: &[String], ips: &[IpAddr]) -> String {
    let mut all: Vec<String> = dns
        .iter()
        .cloned()
        .chain(ips.iter().map(IpAddr::to_string))
        .collect();
    all.sort();
    all.dedup();
    all.join(",")
}

/// A server certificate for `dns` and `ips`, signed by `ca`, valid from `now`.
pub fn new_server(ca: &Ca, dns: &[String], ips: &[IpAddr], now: i64) -> Result<Server, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns.to_vec())?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(
        DnType::CommonName,
        dns.first().map(String::as_str).unwrap_or(CA_COMMON_NAME),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Never valid beyond the CA that signs it.
    let not_after = (now + SERVER_VALIDITY_SECS).min(ca.not_after);
    params.not_before = at(now - 60);
    params.not_after = at(not_after);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok(Server {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before: now,
        not_after,
        issued_by: ca.not_after,
        names: names_key(dns, ips),
    })
}

impl Server {
    /// Whether this certificate must be re-issued: due, signed by another CA, or for other names.
    pub fn needs_renewal(&self, ca: &Ca, names: &str, now: i64) -> bool {
        due(self.not_before, self.not_after, now)
            || self.issued_by != ca.not_after
            || self.names != names
    }

    /// Secret data (`tls.crt`, `tls.key`) and annotations.
    pub fn to_secret(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let data = [("tls.crt", &self.cert_pem), ("tls.key", &self.key_pem)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let annotations = [
            (NOT_BEFORE, self.not_before.to_string()),
            (NOT_AFTER, self.not_after.to_string()),
            (ISSUED_BY, self.issued_by.to_string()),
            (NAMES, self.names.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        (data, annotations)
    }

    /// Reads a server Secret's data and annotations back.
    pub fn from_secret(
        secret: &str,
        data: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Server, Error> {
        let get = |m: &BTreeMap<String, String>, k: &str| field(secret, m, k);
        Ok(Server {
            cert_pem: get(data, "tls.crt")?,
            key_pem: get(data, "tls.key")?,
            not_before: number(secret, &get(annotations, NOT_BEFORE)?)?,
            not_after: number(secret, &get(annotations, NOT_AFTER)?)?,
            issued_by: number(secret, &get(annotations, ISSUED_BY)?)?,
            names: get(annotations, NAMES)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn renewal_at_80_percent_and_on_another_ca_or_name() {
        assert!(!due(0, 100, 79));
        assert!(due(0, 100, 80));
        let now = 1_800_000_000;
        let ca = new_ca(now, None).unwrap();
        let dns = vec!["gardener-extension-runtime-sandbox.ns.svc".to_string()];
        let names = names_key(&dns, &[]);
        let server = new_server(&ca, &dns, &[], now).unwrap();
        assert!(!server.needs_renewal(&ca, &names, now + 20 * DAY));
        assert!(server.needs_renewal(&ca, &names, now + 25 * DAY));
        assert!(server.needs_renewal(&ca, "other.ns.svc", now));
        let next = new_ca(now + 24 * DAY, Some(&ca)).unwrap();
        assert!(server.needs_renewal(&next, &names, now + DAY));
    }

    #[test]
    fn a_renewed_ca_keeps_the_previous_one_in_the_bundle_until_it_expires() {
        let now = 1_800_000_000;
        let first = new_ca(now, None).unwrap();
        assert_eq!(first.bundle_pem, first.cert_pem);
        let second = new_ca(now + 24 * DAY, Some(&first)).unwrap();
        assert_eq!(
            second.bundle_pem,
            format!("{}{}", second.cert_pem, first.cert_pem)
        );
        assert_eq!(second.pruned(now + 29 * DAY), None);
        let pruned = second.pruned(now + 30 * DAY).unwrap();
        assert_eq!(pruned.bundle_pem, second.cert_pem);
        assert_eq!(pruned.pruned(now + 31 * DAY), None);
        // An expired CA is not carried at all.
        let late = new_ca(now + 31 * DAY, Some(&first)).unwrap();
        assert_eq!(late.bundle_pem, late.cert_pem);
    }

    #[test]
    fn secrets_round_trip_and_server_never_outlives_its_ca() {
        let now = 1_800_000_000;
        let ca = new_ca(now, None).unwrap();
        let (data, annotations) = ca.to_secret();
        assert_eq!(Ca::from_secret("ca", &data, &annotations).unwrap(), ca);
        let ips = ["127.0.0.1".parse().unwrap()];
        let server = new_server(&ca, &[], &ips, now + 20 * DAY).unwrap();
        assert_eq!(server.not_after, ca.not_after);
        let (data, annotations) = server.to_secret();
        assert_eq!(
            Server::from_secret("s", &data, &annotations).unwrap(),
            server
        );
        let mut broken = annotations.clone();
        broken.insert(NOT_AFTER.into(), "soon".into());
        let err = Server::from_secret("s", &data, &broken)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"soon\" is not a Unix time"), "{err}");
    }
}
