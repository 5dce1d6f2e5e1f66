//! The test control plane's audit log (`ControlPlaneOptions::audit_log`), read back: one
//! [`Request`] per completed request, in order, for the tests and benchmarks that count or pin
//! what a component asked the API server.

use std::path::Path;

use serde_json::Value;

/// One completed request (the audit policy's `Metadata` level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub user: String,
    /// The user's groups, as authenticated.
    pub groups: Vec<String>,
    pub verb: String,
    /// `objectRef.apiGroup` (`""` for the core group).
    pub api_group: String,
    /// `objectRef.resource`, `""` for a non-resource request.
    pub resource: String,
    /// `objectRef.subresource`, `""` if none.
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// `responseStatus.code`.
    pub code: u16,
    pub uri: String,
}

impl Request {
    /// `resource` or `resource/subresource`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Whether the request writes (create, update, patch, delete, deletecollection).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    fn from_json(entry: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let object = &entry["objectRef"];
        Request {
            user: text(&entry["user"]["username"]),
            groups: entry["user"]["groups"]
                .as_array()
                .map(|g| g.iter().map(text).collect())
                .unwrap_or_default(),
            verb: text(&entry["verb"]),
            api_group: text(&object["apiGroup"]),
            resource: text(&object["resource"]),
            subresource: text(&object["subresource"]),
            namespace: text(&object["namespace"]),
            name: text(&object["name"]),
            code: entry["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or_default(),
            uri: text(&entry["requestURI"]),
        }
    }
}

/// The requests in the audit log at `path` from line `from` on, and the number of lines read
/// (where the next read starts). A line the server is still writing is left for the next read.
pub fn read(path: &Path, from: usize) -> (Vec<Request>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut requests = Vec::new();
    let mut lines = from;
    for (i, line) in text.lines().enumerate().skip(from) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            break;
        };
        requests.push(Request::from_json(&entry));
        lines = i + 1;
    }
    (requests, lines)
}

/// The requests of `user` in the audit log at `path` from line `from` on.
pub fn by_user(path: &Path, user: &str, from: usize) -> Vec<Request> {
    read(path, from)
        .0
        .into_iter()
        .filter(|r| r.user == user)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_in_order_and_a_partial_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let entry = |verb: &str, sub: &str| {
            serde_json::json!({"user": {"username": "u"}, "verb": verb, "requestURI": "/x",
                "objectRef": {"resource": "secrets", "subresource": sub, "namespace": "n", "name": "s"},
                "responseStatus": {"code": 200}})
            .to_string()
        };
        let text = format!(
            "{}\n{}\n{{\"user\":",
            entry("get", ""),
            entry("patch", "status")
        );
        std::fs::write(&log, text).unwrap();
        let (requests, lines) = read(&log, 0);
        assert_eq!(lines, 2);
        assert_eq!(requests[0].verb, "get");
        assert_eq!(requests[1].resource_path(), "secrets/status");
        assert!(requests[1].is_write() && !requests[0].is_write());
        assert_eq!(read(&log, 1).0, requests[1..]);
        assert!(by_user(&log, "other", 0).is_empty());
    }
}
