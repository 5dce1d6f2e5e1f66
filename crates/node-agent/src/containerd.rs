//! containerd's configuration, edited without losing anything: the runtime handler goes into a
//! drop-in file when `config.toml` imports `/etc/containerd/conf.d/*.toml` (gardener-node-agent
//! sets that import), otherwise into `config.toml` itself, format-preserving (toml_edit), every
//! other byte kept. Pure functions: text in, text out.

use std::collections::BTreeMap;

use toml_edit::{DocumentMut, Item, Table, value};

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

/// A CRI runtime handler entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// Handler name, as in a RuntimeClass's `handler`.
    pub name: String,
    /// containerd shim, e.g. `io.containerd.runsc.v1`.
    pub runtime_type: String,
    /// The entry's `options` table (string values).
    pub options: BTreeMap<String, String>,
}

impl Handler {
    /// gVisor's handler `runsc`, configured by `/etc/containerd/runsc.toml`.
    pub fn runsc() -> Self {
        Handler {
            name: "runsc".into(),
            runtime_type: "io.containerd.runsc.v1".into(),
            options: [
                (
                    "TypeUrl".to_string(),
                    "io.containerd.runsc.v1.options".to_string(),
                ),
                (
                    "ConfigPath".to_string(),
                    "/etc/containerd/runsc.toml".to_string(),
                ),
            ]
            .into(),
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

    /// Whether the handler is present exactly as wanted.
    pub fn has(&self, handler: &Handler) -> bool {
        self.current(&handler.name)
            .is_some_and(|t| entry_matches(t, handler))
    }

    /// The file with `handler` added or updated, or None if it is there as wanted already.
    /// Everything else in the file keeps its bytes.
    pub fn with_handler(&self, handler: &Handler) -> Result<Option<String>, ConfigError> {
        if self.has(handler) {
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
        Ok(Some(doc.to_string()))
    }

    /// The file without handler `name`, or None if it is not there.
    pub fn without_handler(&self, name: &str) -> Option<String> {
        self.current(name)?;
        let mut doc = self.doc.clone();
        let mut table = doc.as_table_mut();
        for key in self.runtimes_path() {
            table = table.get_mut(key)?.as_table_mut()?;
        }
        table.remove(name);
        Some(doc.to_string())
    }
}

fn entry_matches(table: &Table, handler: &Handler) -> bool {
    let keys: Vec<&str> = table.iter().map(|(k, _)| k).collect();
    let options_match = table
        .get("options")
        .and_then(Item::as_table)
        .is_some_and(|options| {
            options.len() == handler.options.len()
                && handler
                    .options
                    .iter()
                    .all(|(k, v)| options.get(k).and_then(Item::as_str) == Some(v.as_str()))
        });
    keys.len() == 2
        && table.get("runtime_type").and_then(Item::as_str) == Some(handler.runtime_type.as_str())
        && options_match
}

fn fill_entry(entry: &mut Table, handler: &Handler) {
    entry.insert("runtime_type", value(handler.runtime_type.as_str()));
    let mut options = Table::new();
    for (k, v) in &handler.options {
        options.insert(k, value(v.as_str()));
    }
    entry.insert("options", Item::Table(options));
}

/// A complete drop-in file for `conf.d` that registers `handler`.
pub fn drop_in(schema: Schema, handler: &Handler) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("version", value(schema.version_number()));
    let config = Config { doc, schema };
    config
        .with_handler(handler)
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            e.with_handler(&Handler::runsc()).unwrap_err(),
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
            drop_in(Schema::V2, &Handler::runsc()),
            "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\nruntime_type = \"io.containerd.runsc.v1\"\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc.options]\nConfigPath = \"/etc/containerd/runsc.toml\"\nTypeUrl = \"io.containerd.runsc.v1.options\"\n"
        );
        assert!(
            drop_in(Schema::V3, &Handler::runsc())
                .contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runsc]")
        );
    }

    #[test]
    fn install_is_idempotent_and_uninstall_restores() {
        let original = "version = 2\n# keep me\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";
        let installed = Config::parse(original)
            .unwrap()
            .with_handler(&Handler::runsc())
            .unwrap()
            .unwrap();
        assert!(
            installed.starts_with(original),
            "everything else keeps its bytes:\n{installed}"
        );
        let again = Config::parse(&installed).unwrap();
        assert!(again.has(&Handler::runsc()));
        assert_eq!(
            again.with_handler(&Handler::runsc()).unwrap(),
            None,
            "unchanged: no write"
        );
        assert_eq!(again.without_handler("runsc").unwrap(), original);
        assert_eq!(
            Config::parse(original).unwrap().without_handler("runsc"),
            None
        );
    }

    #[test]
    fn an_outdated_entry_is_updated_not_skipped() {
        // What the Go extension's script appended: the name is there, the options are not.
        let go = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc.v1\"\n";
        let c = Config::parse(go).unwrap();
        assert!(!c.has(&Handler::runsc()));
        let updated = c.with_handler(&Handler::runsc()).unwrap().unwrap();
        assert!(Config::parse(&updated).unwrap().has(&Handler::runsc()));
        assert_eq!(
            updated.matches("runtimes.runsc]").count(),
            1,
            "one entry, updated in place:\n{updated}"
        );
    }
}
