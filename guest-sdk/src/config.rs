use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// The operator's `config` table from the topology file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    table: Map<String, Value>,
}

impl Config {
    /// Parses the JSON text the host hands to `init`.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        match serde_json::from_str(text)? {
            Value::Object(table) => Ok(Self { table }),
            other => Err(Error::new(format!("config must be a table, not {other}"))),
        }
    }

    /// A value, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.table.get(name)
    }

    /// A string value; an error names the key if it is present but not a string.
    pub fn get_str(&self, name: &str) -> Result<Option<&str>, Error> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::new(format!(
                "config.{name} must be a string, not {other}"
            ))),
        }
    }

    /// A string value that must be present.
    pub fn require_str(&self, name: &str) -> Result<&str, Error> {
        self.get_str(name)?
            .ok_or_else(|| Error::new(format!("config.{name} is required")))
    }

    /// An integer value; an error names the key if it is present but not an integer.
    pub fn get_i64(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.table.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| Error::new(format!("config.{name} must be an integer, not {v}"))),
        }
    }

    /// A boolean value; an error names the key if it is present but not a boolean.
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.table.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Error::new(format!("config.{name} must be true or false, not {v}"))),
        }
    }

    /// The whole table as a typed struct (use `#[serde(deny_unknown_fields)]` to
    /// reject misspelt keys).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(Value::Object(self.table.clone()))
            .map_err(|e| Error::new(format!("invalid config: {e}")))
    }
}
