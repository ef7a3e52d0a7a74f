//! Run configuration: a TOML file (optional) with command-line overrides.
//!
//! Every flag is an override of one dotted key (`--lr 3e-5` is
//! `--set train.lr=3e-5`); `--set key=value` reaches any key. The merged
//! table is then deserialised with unknown keys refused, so a typo in a file
//! or a flag is an error that names it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::task::TaskSpec;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
pub use crate::model::io::expand_home;
pub use crate::train::config::TrainSection;

/// A TOML table built from a file and overrides.
pub struct ConfigTable {
    table: toml::Table,
    source: String,
}

impl ConfigTable {
    pub fn empty() -> ConfigTable {
        ConfigTable {
            table: toml::Table::new(),
            source: "command line".into(),
        }
    }

    pub fn from_file(path: &Path) -> Result<ConfigTable> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        Ok(ConfigTable {
            table,
            source: path.display().to_string(),
        })
    }

    /// Sets `a.b.c` to a value written as TOML (`3e-5`, `true`, `"x"`, `[1, 2]`);
    /// anything that does not parse as TOML is taken as a string.
    pub fn set(&mut self, key: &str, raw: &str) -> Result<()> {
        let value = parse_value(raw);
        self.set_value(key, value)
    }

    pub fn set_value(&mut self, key: &str, value: toml::Value) -> Result<()> {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::msg(format!("--set: malformed key '{key}'")));
        }
        let mut t = &mut self.table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(Error::msg(format!("--set {key}: '{p}' is not a table"))),
            };
        }
        t.insert(parts[parts.len() - 1].to_string(), value);
        Ok(())
    }

    /// Applies `key=value` pairs (from `--set`).
    pub fn apply_sets(&mut self, sets: &[String]) -> Result<()> {
        for s in sets {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| Error::msg(format!("--set '{s}': expected key=value")))?;
            self.set(k.trim(), v.trim())?;
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        let mut v: Option<&toml::Value> = None;
        let mut t = &self.table;
        for (i, p) in key.split('.').enumerate() {
            let x = t.get(p)?;
            if i + 1 < key.split('.').count() {
                t = x.as_table()?;
            } else {
                v = Some(x);
            }
        }
        v
    }

    /// Deserialises into `T`; errors name the source and the offending key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let text = toml::to_string(&self.table)
            .map_err(|e| Error::msg(format!("{}: {e}", self.source)))?;
        toml::from_str(&text).map_err(|e| Error::msg(format!("{}: {}", self.source, e.message())))
    }
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// `lpaf finetune`'s whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// A Hugging Face BERT directory (pre-trained or fine-tuned).
    pub model: PathBuf,
    pub output: PathBuf,
    #[serde(default)]
    pub device: DeviceChoice,
    pub data: TaskSpec,
    #[serde(default)]
    pub train: TrainSection,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Precision;

    #[test]
    fn overrides_and_unknown_keys() {
        let mut c = ConfigTable::empty();
        c.set("model", "\"m\"").unwrap();
        c.set("output", "out").unwrap();
        c.set("data.task", "polarity").unwrap();
        c.set("train.lr", "3e-5").unwrap();
        c.set("train.precision", "bf16").unwrap();
        let f: FinetuneConfig = c.parse().unwrap();
        assert_eq!(f.train.lr, 3e-5);
        assert_eq!(f.train.precision, Precision::Bf16);
        assert_eq!(f.model, PathBuf::from("m"));
        assert_eq!(f.output, PathBuf::from("out"));
        c.set("train.lrr", "1").unwrap();
        let e = c.parse::<FinetuneConfig>().unwrap_err().to_string();
        assert!(e.contains("lrr"), "{e}");
    }
}
