//! Decoding a providerConfig, the same way for every runtime: `None` or `null` means the
//! defaults; otherwise an object whose `apiVersion` and `kind` are checked first (so a config
//! meant for another runtime is named as such), then the rest is decoded by serde into the
//! runtime's own types, with `serde_path_to_error` naming the field. Every error is a
//! [`ConfigError`] with the field's path and the values allowed there.
//!
//! The leaf types of a runtime's config decode through [`leaf`], which says what it got and
//! what is allowed; the runtime's `validate` then checks the rules between fields.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

/// A providerConfig that cannot be used; the message names the field and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid providerConfig: {field}: {message}")]
pub struct ConfigError {
    /// JSON path of the offending field, e.g. `providerConfig.configFlags.platform`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    /// An error at `field` below the providerConfig (`""` for the providerConfig itself).
    pub fn at(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: if field.is_empty() {
                ROOT.into()
            } else {
                format!("{ROOT}.{field}")
            },
            message: message.into(),
        }
    }
}

/// Something about a providerConfig that is accepted but that the owner should know (e.g.
/// a gVisor flag we do not pass on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Why, as an Event reason, e.g. `UnknownFlags`.
    pub reason: &'static str,
    /// JSON path of the field, e.g. `providerConfig.configFlags`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const ROOT: &str = "providerConfig";

/// What a runtime's providerConfig must say it is.
#[derive(Clone, Copy, Debug)]
pub struct TypeMeta {
    /// Accepted `apiVersion`s, the current one first.
    pub api_versions: &'static [&'static str],
    pub kind: &'static str,
}

/// Decodes `raw` into `T` (without `apiVersion` and `kind`, which are checked here); `None`
/// when there is no providerConfig.
pub fn decode<T: DeserializeOwned>(
    raw: Option<&Value>,
    meta: TypeMeta,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let object = raw
        .as_object()
        .ok_or_else(|| ConfigError::at("", format!("must be an object of kind {}", meta.kind)))?;
    let api_version = object.get("apiVersion");
    if !api_version
        .and_then(Value::as_str)
        .is_some_and(|v| meta.api_versions.contains(&v))
    {
        return Err(ConfigError::at(
            "apiVersion",
            format!(
                "{} is not supported; allowed: {}",
                describe(api_version),
                meta.api_versions.join(", ")
            ),
        ));
    }
    let kind = object.get("kind");
    if kind.and_then(Value::as_str) != Some(meta.kind) {
        return Err(ConfigError::at(
            "kind",
            format!(
                "{} is not supported; allowed: {}",
                describe(kind),
                meta.kind
            ),
        ));
    }
    let mut body = object.clone();
    body.remove("apiVersion");
    body.remove("kind");
    serde_path_to_error::deserialize(Value::Object(body))
        .map(Some)
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigError::at(&path, reword(&e.into_inner().to_string()))
        })
}

/// serde's own messages, said as ours are: what is allowed, and what was given.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // "unknown field `x`, expected one of `a`, `b`" (the path already names `x`).
        return match rest.split_once(", expected ") {
            Some((_, expected)) => format!(
                "is not a field; allowed: {}",
                expected
                    .trim_start_matches("one of ")
                    .replace('`', "")
                    .replace(" or ", ", ")
            ),
            None => "is not a field; there are none".into(),
        };
    }
    if let Some((got, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        return format!("must be {expected}, not {got}");
    }
    message.to_string()
}

/// How a value reads in a message: strings quoted, anything else as JSON.
pub fn describe(value: Option<&Value>) -> String {
    match value {
        None => "a missing value".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

/// Decodes a leaf value: `accept` turns it into `T`, or it is refused with what is allowed.
pub fn leaf<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    allowed: &str,
    accept: impl FnOnce(&Value) -> Option<T>,
) -> Result<T, D::Error> {
    let value = Value::deserialize(deserializer)?;
    accept(&value).ok_or_else(|| {
        D::Error::custom(format!(
            "{} is not allowed; allowed: {allowed}",
            describe(Some(&value))
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const META: TypeMeta = TypeMeta {
        api_versions: &["a/v1", "a/v0"],
        kind: "K",
    };

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        items: Option<Vec<u8>>,
    }

    fn error(raw: Value) -> ConfigError {
        decode::<Body>(Some(&raw), META).unwrap_err()
    }

    #[test]
    fn nothing_means_defaults() {
        assert!(decode::<Body>(None, META).unwrap().is_none());
        assert!(decode::<Body>(Some(&Value::Null), META).unwrap().is_none());
        assert!(
            decode::<Body>(Some(&json!({"apiVersion": "a/v0", "kind": "K"})), META)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn errors_name_the_field_and_what_is_allowed() {
        let e = error(json!([1]));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("providerConfig", "must be an object of kind K")
        );
        let e = error(json!({"apiVersion": 1, "kind": "K"}));
        assert_eq!(
            e.to_string(),
            "invalid providerConfig: providerConfig.apiVersion: 1 is not supported; allowed: a/v1, a/v0"
        );
        let e = error(json!({"apiVersion": "a/v1"}));
        assert_eq!(e.message, "a missing value is not supported; allowed: K");
        let e = error(json!({"apiVersion": "a/v1", "kind": "K", "item": []}));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("providerConfig.item", "is not a field; allowed: items")
        );
        let e = error(json!({"apiVersion": "a/v1", "kind": "K", "items": "x"}));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (
                "providerConfig.items",
                "must be a sequence, not string \"x\""
            )
        );
        let e = error(json!({"apiVersion": "a/v1", "kind": "K", "items": [1, -1]}));
        assert_eq!(e.field, "providerConfig.items[1]");
    }
}
