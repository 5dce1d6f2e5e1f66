//! containerd's configuration, edited without losing anything: the runtime handler goes into a
//! drop-in file when `config.toml` imports `/etc/containerd/conf.d/*.toml` (gardener-node-agent
//! sets that import), otherwise into `config.toml` itself, format-preserving (toml_edit), every
//! other byte kept. Pure functions: text in, text out.

use toml_edit::{DocumentMut, Item, Table, value};

pub use sandbox_runtime::node_plan::Handler;

/// containerd 2.x's CRI image service plugin (config v3).
const IMAGES_PLUGIN: &str = "io.containerd.cri.v1.images";

/// The comment on an `imports` key this agent created, so that uninstall removes the key
/// again but keeps one that was there before (containerd 1.7's default has `imports = []`).
const IMPORTS_CREATED: &str = " # added by gardener-extension-runtime-sandbox";

/// The import gardener-node-agent adds to `config.toml`.
pub const CONF_D_IMPORT: &str = "/etc/containerd/conf.d/*.toml";

/// containerd configuration schemas we edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// `version = 2` (containerd 1.x): CRI plugin `io.containerd.grpc.v1.cri`.
    V2,
    /// `version = 3` or `4` (containerd 2.x): CRI runtime plugin `io.containerd.cri.v1.runtime`.
    V3,
}

impl Schema {
    /// The plugin whose `containerd.runtimes` table holds handlers.
    pub fn cri_plugin(self) -> &'static str {
        match self {
            Schema::V2 => "io.containerd.grpc.v1.cri",
            Schema::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    fn version_number(self) -> i64 {
        match self {
            Schema::V2 => 2,
            Schema::V3 => 3,
        }
    }
}

/// How containerd combines a file in `imports` with `config.toml`, which decides whether a
/// drop-in is safe.
///
/// containerd 2.0 and newer merge an imported file into `config.toml` key by key, so a
/// drop-in with only our `containerd.runtimes.<handler>` tables adds them. containerd 1.x
/// replaces each plugin table an imported file names **whole**: a drop-in holding only
/// `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>]` resets the whole CRI
/// plugin to its defaults (the sandbox image, runc's `SystemdCgroup`, the registry's
/// `config_path` that gardener-node-agent wrote are gone). Upstream installers guard the same
/// way (drop-ins only on containerd 2.0+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imports {
    /// containerd 2.0+: a drop-in adds our tables to what `config.toml` says.
    Merged,
    /// containerd 1.x: a drop-in would replace the CRI plugin's table; edit in place.
    ReplaceTables,
}

impl Imports {
    /// Decided from the version containerd reports (`v1.7.35`, `2.4.2`), or, when it cannot be
    /// read, from the schema: only containerd 2.x reads version 3 and 4 files; a version 2
    /// file may be read by either, so it gets the edit in place that is right for both.
    pub fn of(containerd_version: Option<(u32, u32)>, schema: Schema) -> Self {
        match (containerd_version, schema) {
            (Some((major, _)), _) if major >= 2 => Imports::Merged,
            (Some(_), _) => Imports::ReplaceTables,
            (None, Schema::V3) => Imports::Merged,
            (None, Schema::V2) => Imports::ReplaceTables,
        }
    }
}

/// Why a configuration cannot be edited. Nothing is changed in that case.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("containerd config is not valid TOML: {0}")]
    Parse(String),
    #[error(
        "containerd config version {0} is not supported (supported: 2 for containerd 1.x, 3 and 4 for containerd 2.x); run `containerd config migrate`"
    )]
    UnsupportedVersion(i64),
    #[error(
        "containerd config has no `version`; version 1 is not supported, set `version = 2` or newer"
    )]
    MissingVersion,
    #[error("containerd config: `{0}` has an unexpected type")]
    Shape(String),
}

/// A parsed `config.toml`.
#[derive(Clone, Debug)]
pub struct Config {
    doc: DocumentMut,
    schema: Schema,
}

impl Config {
    /// Parses `config.toml` and tells its schema.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse(e.to_string()))?;
        let schema = match doc.get("version") {
            None => return Err(ConfigError::MissingVersion),
            Some(item) => match item.as_integer() {
                Some(2) => Schema::V2,
                Some(3 | 4) => Schema::V3,
                Some(other) => return Err(ConfigError::UnsupportedVersion(other)),
                None => return Err(ConfigError::Shape("version".into())),
            },
        };
        Ok(Config { doc, schema })
    }

    /// The schema of this file.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Whether `imports` contains gardener-node-agent's `conf.d` import, so a drop-in works.
    pub fn imports_conf_d(&self) -> bool {
        self.doc
            .get("imports")
            .and_then(Item::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(CONF_D_IMPORT)))
    }

    fn runtimes_path(&self) -> [&'static str; 4] {
        [
            "plugins",
            self.schema.cri_plugin(),
            "containerd",
            "runtimes",
        ]
    }

    /// The handler entry as it is now, if any.
    fn current(&self, name: &str) -> Option<&Table> {
        let mut item = self.doc.as_item();
        for key in self.runtimes_path() {
            item = item.get(key)?;
        }
        item.get(name)?.as_table()
    }

    /// Whether the handler is present exactly as wanted (for config v3 with a snapshotter,
    /// also its image platform entry).
    pub fn has(&self, handler: &Handler) -> bool {
        self.current(&handler.name)
            .is_some_and(|t| entry_matches(t, handler))
            && self.platform_matches(handler)
    }

    /// v3's `plugins."io.containerd.cri.v1.images".runtime_platforms.<handler>`, if any.
    fn platform(&self, name: &str) -> Option<&Table> {
        self.doc
            .get("plugins")?
            .get(IMAGES_PLUGIN)?
            .get("runtime_platforms")?
            .get(name)?
            .as_table()
    }

    /// containerd 2.x pulls and unpacks images in its CRI image service, which needs the
    /// handler's snapshotter there too (as containerd's own docs write it); config v2 has no
    /// such entry.
    fn platform_matches(&self, handler: &Handler) -> bool {
        match (self.schema, &handler.snapshotter) {
            (Schema::V3, Some(snapshotter)) => self.platform(&handler.name).is_some_and(|t| {
                t.len() == 1
                    && t.get("snapshotter").and_then(Item::as_str) == Some(snapshotter.as_str())
            }),
            _ => true,
        }
    }

    /// The file with `handlers` added or updated, or None if they are all there as wanted
    /// already. Everything else in the file keeps its bytes.
    pub fn with_handlers(&self, handlers: &[Handler]) -> Result<Option<String>, ConfigError> {
        if handlers.iter().all(|h| self.has(h)) {
            return Ok(None);
        }
        let mut doc = self.doc.clone();
        let mut table = doc.as_table_mut();
        for key in self.runtimes_path() {
            let entry = table.entry(key).or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Shape(key.to_string()))?;
        }
        let platforms: Vec<(&str, &str)> = handlers
            .iter()
            .filter(|_| self.schema == Schema::V3)
            .filter_map(|h| Some((h.name.as_str(), h.snapshotter.as_deref()?)))
            .collect();
        for handler in handlers {
            // An existing entry is replaced in place (an outdated one, e.g. appended by the Go
            // extension without options, must not survive because its name is present).
            match table.get_mut(&handler.name).and_then(Item::as_table_mut) {
                Some(existing) => {
                    existing.clear();
                    fill_entry(existing, handler);
                }
                None => {
                    let mut entry = Table::new();
                    fill_entry(&mut entry, handler);
                    table.insert(&handler.name, Item::Table(entry));
                }
            }
        }
        if !platforms.is_empty() {
            let mut table = doc.as_table_mut();
            for key in ["plugins", IMAGES_PLUGIN, "runtime_platforms"] {
                let entry = table.entry(key).or_insert_with(|| {
                    let mut t = Table::new();
                    t.set_implicit(true);
                    Item::Table(t)
                });
                table = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Shape(key.to_string()))?;
            }
            for (name, snapshotter) in platforms {
                // Replaced in place like the runtime entry: a comment above it stays.
                match table.get_mut(name).and_then(Item::as_table_mut) {
                    Some(existing) => {
                        existing.clear();
                        existing.insert("snapshotter", value(snapshotter));
                    }
                    None => {
                        let mut entry = Table::new();
                        entry.insert("snapshotter", value(snapshotter));
                        table.insert(name, Item::Table(entry));
                    }
                }
            }
        }
        Ok(Some(doc.to_string()))
    }

    /// [`Config::with_handlers`] for one handler.
    pub fn with_handler(&self, handler: &Handler) -> Result<Option<String>, ConfigError> {
        self.with_handlers(std::slice::from_ref(handler))
    }

    /// The file without the handlers `names`, or None if none of them is there.
    pub fn without_handlers<S: AsRef<str>>(&self, names: &[S]) -> Option<String> {
        let has_entry = names.iter().any(|n| self.current(n.as_ref()).is_some());
        let has_platform = names.iter().any(|n| self.platform(n.as_ref()).is_some());
        if !has_entry && !has_platform {
            return None;
        }
        let mut doc = self.doc.clone();
        if has_entry {
            let mut table = doc.as_table_mut();
            for key in self.runtimes_path() {
                table = table.get_mut(key)?.as_table_mut()?;
            }
            for name in names {
                table.remove(name.as_ref());
            }
        }
        if has_platform {
            let mut table = doc.as_table_mut();
            for key in ["plugins", IMAGES_PLUGIN, "runtime_platforms"] {
                table = table.get_mut(key)?.as_table_mut()?;
            }
            for name in names {
                table.remove(name.as_ref());
            }
        }
        Some(doc.to_string())
    }

    /// [`Config::without_handlers`] for one handler.
    pub fn without_handler(&self, name: &str) -> Option<String> {
        self.without_handlers(&[name])
    }

    fn import_list(&self) -> Vec<String> {
        self.doc
            .get("imports")
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The file with `imports` appended to its `imports` (created if absent), or None if they
    /// are all there. Everything else keeps its bytes.
    pub fn with_imports(&self, imports: &[String]) -> Result<Option<String>, ConfigError> {
        let present = self.import_list();
        let missing: Vec<&String> = imports.iter().filter(|i| !present.contains(i)).collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let mut doc = self.doc.clone();
        let array = doc
            .entry("imports")
            .or_insert_with(|| {
                let mut created = toml_edit::Value::from(toml_edit::Array::new());
                created.decor_mut().set_suffix(IMPORTS_CREATED);
                Item::Value(created)
            })
            .as_array_mut()
            .ok_or_else(|| ConfigError::Shape("imports".into()))?;
        for import in missing {
            array.push(import.as_str());
        }
        Ok(Some(doc.to_string()))
    }

    /// The file without `imports` in its `imports`, or None if none of them is there. The key
    /// goes only if [`Config::with_imports`] created it (its marker comment says so) and nothing
    /// else is left in it; an `imports = []` that was there before stays, byte for byte.
    pub fn without_imports(&self, imports: &[String]) -> Option<String> {
        if !self.import_list().iter().any(|i| imports.contains(i)) {
            return None;
        }
        let mut doc = self.doc.clone();
        let array = doc.get_mut("imports")?.as_array_mut()?;
        array.retain(|v| v.as_str().is_none_or(|s| !imports.iter().any(|i| i == s)));
        let created = array.decor().suffix().and_then(|s| s.as_str()) == Some(IMPORTS_CREATED);
        if array.is_empty() && created {
            doc.remove("imports");
        }
        Some(doc.to_string())
    }
}

fn entry_matches(table: &Table, handler: &Handler) -> bool {
    let mut wanted = Table::new();
    fill_entry(&mut wanted, handler);
    same_table(table, &wanted)
}

/// Same keys and values, ignoring formatting and order.
fn same_table(a: &Table, b: &Table) -> bool {
    a.len() == b.len()
        && b.iter().all(|(key, wanted)| {
            let Some(actual) = a.get(key) else {
                return false;
            };
            match (actual.as_table(), wanted.as_table()) {
                (Some(x), Some(y)) => same_table(x, y),
                (None, None) => match (actual.as_value(), wanted.as_value()) {
                    (Some(x), Some(y)) => same_value(x, y),
                    _ => false,
                },
                _ => false,
            }
        })
}

fn same_value(a: &toml_edit::Value, b: &toml_edit::Value) -> bool {
    use toml_edit::Value as V;
    match (a, b) {
        (V::String(x), V::String(y)) => x.value() == y.value(),
        (V::Boolean(x), V::Boolean(y)) => x.value() == y.value(),
        (V::Integer(x), V::Integer(y)) => x.value() == y.value(),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same_value(p, q))
        }
        _ => false,
    }
}

/// The entry's keys in the order containerd's docs (and common installers) write them; optional ones
/// only when the plan sets them.
fn fill_entry(entry: &mut Table, handler: &Handler) {
    entry.insert("runtime_type", value(handler.runtime_type.as_str()));
    if let Some(path) = &handler.runtime_path {
        entry.insert("runtime_path", value(path.as_str()));
    }
    if handler.privileged_without_host_devices {
        entry.insert("privileged_without_host_devices", value(true));
    }
    for (key, patterns) in [
        ("pod_annotations", &handler.pod_annotations),
        ("container_annotations", &handler.container_annotations),
    ] {
        if !patterns.is_empty() {
            let array: toml_edit::Array = patterns.iter().map(String::as_str).collect();
            entry.insert(key, value(array));
        }
    }
    if let Some(snapshotter) = &handler.snapshotter {
        entry.insert("snapshotter", value(snapshotter.as_str()));
    }
    let mut options = Table::new();
    for (k, v) in &handler.options {
        options.insert(k, value(v.as_str()));
    }
    entry.insert("options", Item::Table(options));
}

/// A complete drop-in file for `conf.d` that registers `handlers` and imports `imports`
/// (containerd reads imports of imported files too).
pub fn drop_in(schema: Schema, handlers: &[Handler], imports: &[String]) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("version", value(schema.version_number()));
    if !imports.is_empty() {
        let array: toml_edit::Array = imports.iter().map(String::as_str).collect();
        doc.insert("imports", value(array));
    }
    let config = Config { doc, schema };
    // No handler (none may be written on this host): the file still says its version, which
    // containerd needs of every imported file.
    config
        .with_handlers(handlers)
        .ok()
        .flatten()
        .unwrap_or_else(|| config.doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler shaped like a sandboxed runtime's, with a shim configuration file.
    fn sandboxed() -> Handler {
        Handler {
            name: "sandboxed".into(),
            runtime_type: "io.containerd.sandboxed.v1".into(),
            options: [
                (
                    "TypeUrl".to_string(),
                    "io.containerd.sandboxed.v1.options".to_string(),
                ),
                (
                    "ConfigPath".to_string(),
                    "/etc/containerd/sandboxed.toml".to_string(),
                ),
            ]
            .into(),
            ..Handler::default()
        }
    }

    #[test]
    fn drop_ins_only_where_containerd_merges_imports() {
        use Imports::*;
        assert_eq!(Imports::of(Some((1, 7)), Schema::V2), ReplaceTables);
        assert_eq!(Imports::of(Some((1, 6)), Schema::V2), ReplaceTables);
        assert_eq!(Imports::of(Some((2, 0)), Schema::V2), Merged);
        assert_eq!(Imports::of(Some((2, 4)), Schema::V3), Merged);
        assert_eq!(Imports::of(None, Schema::V3), Merged);
        assert_eq!(Imports::of(None, Schema::V2), ReplaceTables);
    }

    #[test]
    fn schema_detection_and_errors() {
        assert_eq!(Config::parse("version = 2\n").unwrap().schema(), Schema::V2);
        assert_eq!(Config::parse("version = 3\n").unwrap().schema(), Schema::V3);
        assert_eq!(Config::parse("version = 4\n").unwrap().schema(), Schema::V3);
        assert_eq!(
            Config::parse("root = \"/x\"\n").unwrap_err(),
            ConfigError::MissingVersion
        );
        assert_eq!(
            Config::parse("version = 1\n").unwrap_err(),
            ConfigError::UnsupportedVersion(1)
        );
        assert!(matches!(
            Config::parse("version = [").unwrap_err(),
            ConfigError::Parse(_)
        ));
        assert_eq!(
            Config::parse("version = \"2\"\n").unwrap_err(),
            ConfigError::Shape("version".into())
        );
        let e =
            Config::parse("version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\" = 5\n").unwrap();
        assert_eq!(
            e.with_handler(&sandboxed()).unwrap_err(),
            ConfigError::Shape("io.containerd.grpc.v1.cri".into())
        );
    }

    #[test]
    fn imports_are_detected() {
        let c =
            Config::parse("version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n").unwrap();
        assert!(c.imports_conf_d());
        assert!(
            !Config::parse("version = 2\nimports = []\n")
                .unwrap()
                .imports_conf_d()
        );
    }

    #[test]
    fn drop_ins_for_both_schemas() {
        assert_eq!(
            drop_in(Schema::V2, &[sandboxed()], &[]),
            "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandboxed]\nruntime_type = \"io.containerd.sandboxed.v1\"\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandboxed.options]\nConfigPath = \"/etc/containerd/sandboxed.toml\"\nTypeUrl = \"io.containerd.sandboxed.v1.options\"\n"
        );
        assert!(
            drop_in(Schema::V3, &[sandboxed()], &[]).contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.sandboxed]"
            )
        );
    }

    #[test]
    fn install_is_idempotent_and_uninstall_restores() {
        let original = "version = 2\n# keep me\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";
        let installed = Config::parse(original)
            .unwrap()
            .with_handler(&sandboxed())
            .unwrap()
            .unwrap();
        assert!(
            installed.starts_with(original),
            "everything else keeps its bytes:\n{installed}"
        );
        let again = Config::parse(&installed).unwrap();
        assert!(again.has(&sandboxed()));
        assert_eq!(
            again.with_handler(&sandboxed()).unwrap(),
            None,
            "unchanged: no write"
        );
        assert_eq!(again.without_handler("sandboxed").unwrap(), original);
        assert_eq!(
            Config::parse(original)
                .unwrap()
                .without_handler("sandboxed"),
            None
        );
    }

    #[test]
    fn an_outdated_entry_is_updated_not_skipped() {
        // What the Go extension's script appended: the name is there, the options are not.
        let go = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandboxed]\n  runtime_type = \"io.containerd.sandboxed.v1\"\n";
        let c = Config::parse(go).unwrap();
        assert!(!c.has(&sandboxed()));
        let updated = c.with_handler(&sandboxed()).unwrap().unwrap();
        assert!(Config::parse(&updated).unwrap().has(&sandboxed()));
        assert_eq!(
            updated.matches("runtimes.sandboxed]").count(),
            1,
            "one entry, updated in place:\n{updated}"
        );
    }

    #[test]
    fn imports_are_added_once_and_removed_to_the_byte() {
        let glob = vec!["/run/example/*.toml".to_string()];
        for original in [
            "version = 2\n\n[plugins]\n",
            "imports = []\nversion = 2\n",
            "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        ] {
            let config = Config::parse(original).unwrap();
            let added = config.with_imports(&glob).unwrap().unwrap();
            let again = Config::parse(&added).unwrap();
            assert!(again.import_list().contains(&glob[0]), "{added}");
            assert_eq!(again.with_imports(&glob).unwrap(), None, "added once");
            assert_eq!(again.without_imports(&glob).unwrap(), original);
            assert_eq!(config.without_imports(&glob), None);
        }
        let file = drop_in(Schema::V3, &[sandboxed()], &glob);
        assert!(
            file.contains("imports = [\"/run/example/*.toml\"]"),
            "{file}"
        );
    }

    #[test]
    fn a_snapshotter_gets_its_image_platform_entry_in_v3_only() {
        let mut handler = sandboxed();
        handler.snapshotter = Some("devmapper".into());
        for (original, platform) in [("version = 2\n", false), ("version = 3\n", true)] {
            let config = Config::parse(original).unwrap();
            let added = config.with_handler(&handler).unwrap().unwrap();
            let again = Config::parse(&added).unwrap();
            assert_eq!(
                added.contains("runtime_platforms"),
                platform,
                "{original}: {added}"
            );
            if platform {
                assert_eq!(
                    again.doc["plugins"]["io.containerd.cri.v1.images"]["runtime_platforms"]
                        [&handler.name]["snapshotter"]
                        .as_str(),
                    Some("devmapper")
                );
            }
            assert!(again.has(&handler), "{added}");
            assert_eq!(again.with_handler(&handler).unwrap(), None);
            assert_eq!(again.without_handler(&handler.name).unwrap(), original);
        }
        // A v3 entry without its platform entry is not "there": it gets completed.
        let v3 = Config::parse("version = 3\n").unwrap();
        let mut partial = Config::parse(&v3.with_handler(&handler).unwrap().unwrap()).unwrap();
        partial.doc["plugins"]["io.containerd.cri.v1.images"]
            .as_table_mut()
            .unwrap()
            .remove("runtime_platforms");
        assert!(!partial.has(&handler));
        assert!(
            partial
                .with_handler(&handler)
                .unwrap()
                .unwrap()
                .contains("runtime_platforms")
        );
    }
}
