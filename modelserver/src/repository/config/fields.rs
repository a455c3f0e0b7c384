//! Reading `config.pbtxt` values: typed accessors for one field (string, word, number, boolean,
//! message, file name, key/value entry) that report a wrong value with its field path and line.

use super::ConfigError;
use crate::repository::pbtxt::{Field, Value};

/// A supported field with a bad value, at `path` (the enclosing message's dotted path).
pub(super) fn invalid(path: &str, f: &Field, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: join(path, &f.name),
        line: f.line,
        message: message.into(),
    }
}

pub(super) fn unsupported(path: &str, f: &Field) -> ConfigError {
    ConfigError::Unsupported {
        path: join(path, &f.name),
        line: f.line,
    }
}

pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn string(path: &str, f: &Field) -> Result<String, ConfigError> {
    match &f.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(invalid(path, f, "expected a quoted string")),
    }
}

pub(super) fn word<'a>(path: &str, f: &'a Field) -> Result<&'a str, ConfigError> {
    match &f.value {
        Value::Word(w) => Ok(w),
        _ => Err(invalid(path, f, "expected a number or identifier")),
    }
}

pub(super) fn number<T: std::str::FromStr>(path: &str, f: &Field) -> Result<T, ConfigError> {
    let w = word(path, f)?;
    w.parse().map_err(|_| {
        invalid(
            path,
            f,
            format!("'{w}' is not a valid {}", std::any::type_name::<T>()),
        )
    })
}

pub(super) fn boolean(path: &str, f: &Field) -> Result<bool, ConfigError> {
    match word(path, f)? {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        other => Err(invalid(path, f, format!("'{other}' is not a boolean"))),
    }
}

pub(super) fn message<'a>(path: &str, f: &'a Field) -> Result<&'a [Field], ConfigError> {
    match &f.value {
        Value::Message(m) => Ok(m),
        _ => Err(invalid(path, f, "expected a message { ... }")),
    }
}

pub(super) fn file_name(path: &str, f: &Field) -> Result<String, ConfigError> {
    let s = string(path, f)?;
    if s.is_empty() || s.contains('/') || s.contains('\\') || s == "." || s == ".." {
        return Err(invalid(path, f, format!("'{s}' must be a plain file name")));
    }
    Ok(s)
}

pub(super) fn string_map_entry(path: &str, f: &Field) -> Result<(String, String), ConfigError> {
    let mut key = None;
    let mut value = None;
    for g in message(path, f)? {
        match g.name.as_str() {
            "key" => key = Some(string(path, g)?),
            "value" => value = Some(string(path, g)?),
            _ => return Err(unsupported(&join(path, &f.name), g)),
        }
    }
    match (key, value) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(invalid(path, f, "needs 'key' and 'value'")),
    }
}
