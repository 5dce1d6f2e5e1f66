//! Hostile input for the node agent's pure parts, generated: containerd's `config.toml` (the
//! editor gets arbitrary TOML and either refuses it with a clear error or returns a file that
//! still parses, keeps every other key and every other line, and gains exactly the handler's
//! keys), hostile handler names and option values (quotes, newlines, table headers: quoted by
//! the TOML writer, never an extra key), and the node plan decoder (arbitrary bytes and
//! hostile paths: an error naming the field, never a path outside its folder).

use std::collections::BTreeMap;

use sandbox_fuzz as fuzz;

use proptest::prelude::*;
use sandbox_node_agent::containerd::{Config, ConfigError, Handler, Schema, drop_in};
use sandbox_runtime::node_plan::{NodePlan, PlanError};
use toml_edit::{DocumentMut, Item};

/// Every leaf of a TOML document as `(key path, value)`, arrays as one value.
fn leaves(doc: &DocumentMut) -> BTreeMap<Vec<String>, String> {
    fn walk(item: &Item, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, String>) {
        if let Some(table) = item.as_table_like() {
            for (key, child) in table.iter() {
                path.push(key.to_string());
                walk(child, path, out);
                path.pop();
            }
        } else if let Some(value) = item.as_value() {
            out.insert(path.clone(), value.clone().decorated("", "").to_string());
        }
    }
    let mut out = BTreeMap::new();
    walk(doc.as_item(), &mut Vec::new(), &mut out);
    out
}

/// Strings meant to break out of a key or a value.
const HOSTILE: &[&str] = &[
    "runsc",
    "a\"b",
    "a'b",
    "x\ny = 1",
    "]\n[plugins]\nz = 1\n[",
    "\\",
    "\"\"\"",
    "$(reboot)",
    "`id`; rm -rf /",
    "../../etc/passwd",
    "ä€𝄞",
    "\u{0}",
    "\t",
    "a.b",
    "[x]",
    "#comment",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(HOSTILE).prop_map(String::from),
        "[a-z]{1,12}",
        any::<String>(),
        ".{0,300}",
    ]
}

fn handler() -> impl Strategy<Value = Handler> {
    (
        hostile(),
        hostile(),
        proptest::collection::btree_map(hostile(), hostile(), 0..4),
        proptest::option::of(hostile()),
        proptest::collection::vec(hostile(), 0..3),
    )
        .prop_map(
            |(name, runtime_type, options, snapshotter, pod_annotations)| Handler {
                name,
                runtime_type,
                options,
                snapshotter,
                pod_annotations,
                ..Handler::default()
            },
        )
}

/// A TOML value, as text: scalars, arrays and inline tables with hostile strings.
fn value_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        hostile().prop_map(|s| toml_edit::Value::from(s).to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,6}", inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

const TABLES: &[&str] = &[
    "",
    "plugins",
    "plugins.\"io.containerd.grpc.v1.cri\"",
    "plugins.\"io.containerd.grpc.v1.cri\".containerd",
    "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc",
    "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options",
    "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc",
    "plugins.\"io.containerd.cri.v1.images\"",
    "plugins.\"io.containerd.cri.v1.images\".runtime_platforms.runsc",
    "grpc",
    "metrics",
    "x.\"a b\".'c'",
];

/// A containerd-like `config.toml`: a version, then tables from containerd's shapes with
/// generated keys and values, comments and odd spacing.
fn config_text() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&[2i64, 3, 4][..]),
        proptest::option::of(value_text()),
        proptest::collection::vec(
            (
                proptest::sample::select(TABLES),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            "[a-z_]{1,10}".prop_map(|k| k),
                            hostile()
                                .prop_map(|k| toml_edit::Key::new(k).display_repr().into_owned()),
                            Just("runtimes".to_string()),
                            Just("imports".to_string()),
                        ],
                        value_text(),
                    ),
                    0..4,
                ),
                proptest::option::of(hostile()),
            ),
            0..6,
        ),
    )
        .prop_map(|(version, imports, tables)| {
            let mut text = format!("version = {version}\n");
            if let Some(imports) = imports {
                text.push_str(&format!("imports = {imports}\n"));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (table, keys, comment) in tables {
                if !table.is_empty() && seen.insert(table) {
                    text.push_str(&format!("\n[{table}]\n"));
                } else if !table.is_empty() {
                    continue;
                }
                if let Some(comment) = comment {
                    let line: String = comment.chars().filter(|c| !c.is_control()).collect();
                    text.push_str(&format!("  # {line}\n"));
                }
                for (key, value) in keys {
                    text.push_str(&format!("  {key} = {value}\n"));
                }
            }
            text
        })
}

/// Checks one edit: it parses, only the handlers' keys (and at most `imports`) are new,
/// nothing else changed, and every line of the original is still there in order.
fn check_edit(original: &str, edited: &str, handlers: &[Handler]) -> Result<(), TestCaseError> {
    let before: DocumentMut = original.parse().unwrap();
    let after: DocumentMut = edited
        .parse()
        .map_err(|e| TestCaseError::fail(format!("edited config does not parse: {e}\n{edited}")))?;
    let cfg = Config::parse(edited).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for h in handlers {
        prop_assert!(cfg.has(h), "handler {:?} not present as wanted", h.name);
    }
    let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
    let owned = |path: &[String]| {
        path.len() >= 5
            && path[0] == "plugins"
            && names.contains(&path[4].as_str())
            && ((path[2] == "containerd" && path[3] == "runtimes")
                || path[2] == "runtime_platforms")
            || path.len() >= 4
                && path[0] == "plugins"
                && path[2] == "runtime_platforms"
                && names.contains(&path[3].as_str())
    };
    let (b, a) = (leaves(&before), leaves(&after));
    for (path, value) in &b {
        if owned(path) {
            continue;
        }
        prop_assert_eq!(a.get(path), Some(value), "key {:?} lost or changed", path);
    }
    for path in a.keys() {
        prop_assert!(
            b.contains_key(path) || owned(path),
            "extra key {:?} in\n{}",
            path,
            edited
        );
    }
    // Every original line that is not inside a replaced handler entry survives, in order.
    let mut rest = edited.lines();
    let mut in_handler_table = false;
    for line in original.lines() {
        if line.starts_with('[') {
            in_handler_table = names.iter().any(|n| line.contains(n));
        }
        if in_handler_table || names.iter().any(|n| line.contains(n)) || line.trim().is_empty() {
            continue;
        }
        prop_assert!(
            rest.any(|l| l == line),
            "line {:?} of the original is gone:\n{}",
            line,
            edited
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(2000))]

    /// Arbitrary text: parse refuses it with a reason or accepts it; no panic either way.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), handler in handler()) {
        if let Ok(config) = Config::parse(&text) {
            let _ = config.with_handler(&handler);
            let _ = config.without_handler(&handler.name);
            let _ = config.with_imports(std::slice::from_ref(&handler.name));
        }
    }

    /// Arbitrary bytes as containerd would read them (lossy UTF-8 is what a file may hold).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Config::parse(&String::from_utf8_lossy(&bytes));
        let _ = NodePlan::parse(&String::from_utf8_lossy(&bytes));
    }

    /// containerd-shaped configurations with hostile handlers: a clear error (a key of the
    /// wrong type, named) or an edit that keeps everything else; uninstall gives the
    /// original's keys back.
    #[test]
    fn edits_keep_everything_else(text in config_text(), handlers in proptest::collection::vec(handler(), 1..3)) {
        let Ok(config) = Config::parse(&text) else {
            // Generated duplicates (a key twice) are invalid TOML: refused, not edited.
            return Ok(());
        };
        // Two handlers of one name cannot both be present; the plan validator refuses that.
        let mut names = std::collections::BTreeSet::new();
        let handlers: Vec<Handler> = handlers.into_iter().filter(|h| names.insert(h.name.clone())).collect();
        match config.with_handlers(&handlers) {
            Err(ConfigError::Shape(key)) => prop_assert!(!key.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(None) => prop_assert!(handlers.iter().all(|h| config.has(h))),
            Ok(Some(edited)) => {
                check_edit(&text, &edited, &handlers)?;
                let again = Config::parse(&edited).unwrap();
                prop_assert_eq!(again.with_handlers(&handlers).unwrap(), None, "not idempotent");
                let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
                let removed = again.without_handlers(&names).unwrap_or(edited.clone());
                let back: DocumentMut = removed.parse().unwrap();
                let before: DocumentMut = text.parse().unwrap();
                let owned = |p: &Vec<String>| p.len() >= 4 && p[0] == "plugins" && p.iter().any(|k| names.contains(&k.as_str()));
                let strip = |m: BTreeMap<Vec<String>, String>| m.into_iter().filter(|(p, _)| !owned(p)).collect::<BTreeMap<_, _>>();
                prop_assert_eq!(strip(leaves(&back)), strip(leaves(&before)), "uninstall changed other keys");
            }
        }
    }

    /// A drop-in for hostile handlers is valid TOML with exactly their entries.
    #[test]
    fn drop_ins_are_valid_toml(handlers in proptest::collection::vec(handler(), 1..3), v3 in any::<bool>()) {
        let schema = if v3 { Schema::V3 } else { Schema::V2 };
        let mut names = std::collections::BTreeSet::new();
        let handlers: Vec<Handler> = handlers.into_iter().filter(|h| names.insert(h.name.clone())).collect();
        let text = drop_in(schema, &handlers, &[]);
        let config = Config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for h in &handlers {
            prop_assert!(config.has(h));
        }
        let doc: DocumentMut = text.parse().unwrap();
        let runtimes = doc["plugins"][schema.cri_plugin()]["containerd"]["runtimes"].as_table_like().unwrap();
        prop_assert_eq!(runtimes.len(), handlers.len());
    }
}

/// A plan read from YAML with one field replaced.
fn plan_with(field: &str, value: &str) -> Result<NodePlan, PlanError> {
    let plan = sandbox_runtime::gvisor::node_plan(
        &sandbox_runtime::gvisor::GVisorConfig::default(),
        "registry.local/node-agent:v1",
    );
    let mut json = serde_json::to_value(&plan).unwrap();
    let pointer = json
        .pointer_mut(field)
        .unwrap_or_else(|| panic!("no {field} in the plan"));
    *pointer = serde_json::Value::String(value.into());
    // JSON is YAML: the decoder reads it as the ConfigMap's text.
    NodePlan::parse(&json.to_string())
}

proptest! {
    #![proptest_config(fuzz::config(500))]

    /// Paths and names in a plan: accepted only inside their folder, otherwise an error that
    /// names the field.
    #[test]
    fn plan_paths_stay_in_their_folders(
        which in proptest::sample::select(&["/dropIn", "/files/0/path", "/lock", "/binaries/names/0", "/handlers/0/name"][..]),
        value in prop_oneof![
            proptest::sample::select(HOSTILE).prop_map(String::from),
            Just("/etc/containerd/../shadow".to_string()),
            Just("/etc/containerd/conf.d/../../passwd".to_string()),
            Just("/etc/containerd//x.toml".to_string()),
            Just("/etc/containerd/".to_string()),
            Just("/etc/containerd".to_string()),
            "/etc/containerd/[a-z./]{0,20}",
            ".{0,40}",
        ],
    ) {
        match plan_with(which, &value) {
            Ok(plan) => {
                // A file of the version goes in the version's folder, nowhere else below /opt.
                let version_dir = format!("{}/", plan.binaries.versioned.as_ref().unwrap().dir());
                for path in std::iter::once(&plan.drop_in).chain(plan.files.iter().map(|f| &f.path)).chain(std::iter::once(&plan.lock)) {
                    let p = std::path::Path::new(path);
                    prop_assert!(p.components().all(|c| !matches!(c, std::path::Component::ParentDir)), "{path}");
                    prop_assert!(path.starts_with("/etc/containerd/") || path.starts_with("/run/runtime-sandbox/") || path.starts_with(&version_dir), "{path}");
                }
                for name in &plan.binaries.names {
                    let parts: Vec<&str> = name.split('/').collect();
                    prop_assert!(parts.len() <= 2 && parts.iter().all(|p| !p.is_empty() && *p != ".." && *p != "."), "{name}");
                }
            }
            Err(PlanError::Invalid { field, message }) => {
                prop_assert!(!field.is_empty() && !message.is_empty());
            }
            Err(PlanError::Decode(message)) => prop_assert!(!message.is_empty()),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}
