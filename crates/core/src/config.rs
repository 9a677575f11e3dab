//! Typed configuration read through a lookup, with one treatment of empty
//! values and one error type.
//!
//! Every component parses its configuration once from `lookup(name) ->
//! Option<String>`: in binaries the process environment after the start-up
//! path resolved its `ssm:`/`secretsmanager:` references (`edgepush-startup`),
//! in tests a map (so tests never mutate the process environment).
//!
//! [`Vars`] wraps such a lookup and is the only way the configurations read
//! it, so that they all agree:
//!
//! - a variable set to an empty or blank value counts as unset;
//! - values are trimmed, except where a value is used byte for byte
//!   ([`Vars::untrimmed`], for secrets);
//! - a missing required value is [`ConfigError::Missing`], a value that does
//!   not parse is [`ConfigError::Invalid`], naming the variable and never
//!   showing the value (it may be a secret).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// The prefix of a value that names an SSM Parameter Store parameter
/// (`ssm:/edgepush/jwt-secret`) instead of holding the value.
pub const SSM_PREFIX: &str = "ssm:";
/// The prefix of a value that names a Secrets Manager secret
/// (`secretsmanager:<id>` or `secretsmanager:<id>#<json key>`).
pub const SECRETS_MANAGER_PREFIX: &str = "secretsmanager:";

/// Whether `value` names a parameter or a secret (see [`SSM_PREFIX`] and
/// [`SECRETS_MANAGER_PREFIX`]) rather than holding a value: such a value
/// must be resolved before a configuration reads it.
pub fn is_reference(value: &str) -> bool {
    value.starts_with(SSM_PREFIX) || value.starts_with(SECRETS_MANAGER_PREFIX)
}

/// A configuration value is missing or unusable. The one error of every
/// `from_lookup` in the workspace; messages name the variable, never its
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or blank.
    #[error("{0} must be set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The variable (or, for a group of variables, their common prefix
        /// such as `EDGEPUSH_JWT_*`).
        name: &'static str,
        /// Why it was refused (never the value itself: it may be a secret).
        reason: String,
    },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for `name`, because of `reason`.
    pub fn invalid(name: &'static str, reason: impl ToString) -> Self {
        Self::Invalid {
            name,
            reason: reason.to_string(),
        }
    }
}

/// The typed reads of a configuration lookup; see the module docs.
#[derive(Clone, Copy)]
pub struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// Reads through `lookup`.
    pub fn new(lookup: F) -> Self {
        Self(lookup)
    }

    /// The value of `name`, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` exactly as given (for secrets used byte for
    /// byte); `None` when unset or blank.
    pub fn untrimmed(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// Whether `name` is set to something not blank.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name`, or [`ConfigError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// `name` parsed as a `T`, or `None` when unset.
    pub fn parse_opt<T>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| v.parse().map_err(|e| ConfigError::invalid(name, e)))
            .transpose()
    }

    /// `name` parsed as a `T`, `default` when unset.
    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// `name` as a whole number of milliseconds, `default` when unset.
    pub fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self
            .parse_opt::<u64>(name)?
            .map_or(default, Duration::from_millis))
    }

    /// `name` as a whole number of seconds, `default` when unset.
    pub fn secs(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self
            .parse_opt::<u64>(name)?
            .map_or(default, Duration::from_secs))
    }

    /// `name` as a flag: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`
    /// (any case), `false` when unset.
    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("0" | "false" | "no" | "off") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some(_) => Err(ConfigError::invalid(
                name,
                "expected one of 1, true, yes, on, 0, false, no, off",
            )),
        }
    }

    /// The lookup itself, for configurations of other crates.
    pub fn lookup(&self) -> &F {
        &self.0
    }
}

/// A lookup over fixed `(name, value)` pairs, for tests and tools.
pub fn lookup_from_pairs(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_given_pairs_only() {
        let lookup = lookup_from_pairs(&[("A", "1")]);
        assert_eq!(lookup("A").as_deref(), Some("1"));
        assert_eq!(lookup("B"), None);
    }

    #[test]
    fn blank_values_are_unset_everywhere() {
        let vars = Vars::new(lookup_from_pairs(&[
            ("BLANK", "  "),
            ("EMPTY", ""),
            ("PADDED", " 42 "),
            ("SECRET", " s3cret "),
        ]));
        for name in ["BLANK", "EMPTY", "UNSET"] {
            assert_eq!(vars.get(name), None, "{name}");
            assert_eq!(vars.untrimmed(name), None, "{name}");
            assert!(!vars.is_set(name), "{name}");
            assert_eq!(vars.required(name), Err(ConfigError::Missing(name)));
            assert_eq!(vars.parse::<u32>(name, 7), Ok(7));
            assert_eq!(vars.flag(name), Ok(false));
        }
        assert_eq!(vars.get("PADDED").as_deref(), Some("42"));
        assert_eq!(vars.parse::<u32>("PADDED", 0), Ok(42));
        assert_eq!(vars.untrimmed("SECRET").as_deref(), Some(" s3cret "));
    }

    #[test]
    fn malformed_values_name_the_variable_not_the_value() {
        let vars = Vars::new(lookup_from_pairs(&[
            ("N", "twelve-s3cret"),
            ("F", "maybe"),
            ("MS", "1500"),
            ("ON", "YES"),
        ]));
        let err = vars.parse::<u32>("N", 0).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { name: "N", .. }));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(vars.flag("F").is_err());
        assert_eq!(vars.flag("ON"), Ok(true));
        assert_eq!(
            vars.millis("MS", Duration::ZERO),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            vars.secs("UNSET", Duration::from_secs(3)),
            Ok(Duration::from_secs(3))
        );
    }
}
