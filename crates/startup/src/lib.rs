//! The one start-up path of every edgepush binary: the four Lambda
//! functions, `edge-node serve` and dev mode.
//!
//! A `main.rs` calls [`start`] once and then only wires: it parses its typed
//! configuration from [`Env::lookup`], connects its stores and serves.
//! [`start`] does three things, in this order:
//!
//! 1. reads the process environment, the only place in the workspace that
//!    does ([`Env::from_process`]); a value that is empty or blank counts as
//!    unset from here on;
//! 2. sets up tracing ([`init_tracing`]) from that environment (`RUST_LOG`,
//!    `EDGEPUSH_LOG_FORMAT`), so that what follows is logged;
//! 3. resolves every `EDGEPUSH_*` value that names a parameter or a secret
//!    (`ssm:/name`, `secretsmanager:<id>`, `secretsmanager:<id>#<key>`)
//!    through SSM Parameter Store and Secrets Manager ([`Env::resolve`]), so
//!    that no configuration ever sees a reference. With only literal values
//!    no AWS client is built and nothing calls AWS.
//!
//! The resolution needs the `aws` feature (the functions and `edge-node
//! serve` have it; dev mode does not, so it compiles no AWS SDK). Without
//! it a reference is refused at start-up with an error naming the variable.
//!
//! Tests never touch the process environment: they build an [`Env`] from
//! pairs ([`Env::from_pairs`]) and resolve it the same way.
//!
//! # Layout
//!
//! - [`start`], [`Env`], [`init_tracing`], [`LogFailure`] (here): the start.
//! - [`signal`]: [`shutdown_signal`], SIGTERM or SIGINT, on which every
//!   long-running binary drains or stops.
//! - [`mode`]: [`long_running`], the argument that runs a function's binary
//!   as a long-running process (`collect serve`, `dispatch consume`).

pub mod mode;
pub mod signal;

pub use mode::{UnknownMode, long_running};
pub use signal::shutdown_signal;

use std::collections::HashMap;
use std::fmt;

use edgepush_core::config::is_reference;
use tracing_subscriber::EnvFilter;

/// The prefix of the variables that may name a parameter or a secret.
pub const RESOLVED_PREFIX: &str = "EDGEPUSH_";
/// The log filter (`tracing_subscriber` syntax); `info` when unset.
pub const RUST_LOG: &str = "RUST_LOG";
/// `json` for JSON lines from a server ([`LogStyle::Server`]).
pub const LOG_FORMAT: &str = "EDGEPUSH_LOG_FORMAT";

/// How a binary logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// A Lambda function: JSON lines without colours, timestamps or targets
    /// (CloudWatch adds the time).
    Lambda,
    /// A long-running server (`edge-node serve`, dev mode): human-readable
    /// lines on stderr, or JSON lines with `EDGEPUSH_LOG_FORMAT=json`.
    Server,
}

impl LogStyle {
    /// A function's binary: [`LogStyle::Server`] in its long-running mode
    /// (see [`long_running`]), else [`LogStyle::Lambda`].
    pub fn of_function(long_running: bool) -> Self {
        if long_running {
            Self::Server
        } else {
            Self::Lambda
        }
    }
}

/// The start-up failed: a reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A `ssm:`/`secretsmanager:` value could not be resolved.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Secret(#[from] edgepush_aws::SecretError),
    /// A value names a parameter or a secret, and this binary was built
    /// without AWS support (dev mode).
    #[error(
        "{variable} names a parameter or a secret, which this binary cannot resolve (built without the `aws` feature)"
    )]
    Unsupported {
        /// The variable.
        variable: String,
    },
}

/// The environment a binary is configured from, read once: values as
/// given, blank ones left out, and after [`Env::resolve`] every
/// `EDGEPUSH_*` reference replaced by what it names. `Debug` shows the
/// names only, never a value.
#[derive(Clone, Default)]
pub struct Env {
    values: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment: the one read of it in the workspace.
    /// Variables whose name or value is not UTF-8 are left out.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// An environment of these pairs (tests, tools); blank values left out.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let values = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        Self { values }
    }

    /// The value of `name`, as given (blank values are not there).
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// The lookup the typed configurations read (`Config::from_lookup`).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.get(name)
    }

    /// The names of the variables that may hold references, sorted.
    fn resolvable(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .values
            .keys()
            .map(String::as_str)
            .filter(|name| name.starts_with(RESOLVED_PREFIX))
            .collect();
        names.sort_unstable();
        names
    }

    /// This environment with every `EDGEPUSH_*` reference resolved. The AWS
    /// clients are configured from the same environment (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, credentials; the SDK's default chain for the rest), and
    /// built only when there is a reference to resolve.
    pub async fn resolve(self) -> Result<Self, StartError> {
        let names = self.resolvable();
        let Some(first) = names
            .iter()
            .find(|name| self.values.get(**name).is_some_and(|v| is_reference(v)))
        else {
            return Ok(self);
        };
        #[cfg(feature = "aws")]
        {
            let _ = first;
            let resolved = edgepush_aws::resolve_lookup(self.lookup(), &names).await?;
            let mut values = self.values.clone();
            values.extend(resolved);
            Ok(Self { values })
        }
        #[cfg(not(feature = "aws"))]
        {
            Err(StartError::Unsupported {
                variable: (*first).to_owned(),
            })
        }
    }
}

/// Sets up the process's tracing subscriber in `style`, filtered by
/// `RUST_LOG` from `env` (`info` when unset or unusable). A second call
/// (tests starting several components) keeps the first set-up.
pub fn init_tracing(style: LogStyle, env: &Env) {
    let filter = env
        .get(RUST_LOG)
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match style {
        LogStyle::Lambda => builder
            .json()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_current_span(false)
            .try_init(),
        LogStyle::Server if env.get(LOG_FORMAT).is_some_and(|f| f == "json") => {
            builder.json().with_writer(std::io::stderr).try_init()
        }
        LogStyle::Server => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// The start of every binary: the process environment, tracing in `style`,
/// and the references resolved (see the crate docs). A failure is logged
/// before it is returned.
pub async fn start(style: LogStyle) -> Result<Env, StartError> {
    let env = Env::from_process();
    init_tracing(style, &env);
    env.resolve()
        .await
        .inspect_err(|error| tracing::error!(%error, "configuration not resolved"))
}

/// Logs a start-up step's failure before a `main` returns it, so that it
/// is in the function's logs, not only in the runtime's report.
pub trait LogFailure: Sized {
    /// Logs the error, if any, with `what` failed.
    fn log_failure(self, what: &str) -> Self;
}

impl<T, E: fmt::Display> LogFailure for Result<T, E> {
    fn log_failure(self, what: &str) -> Self {
        self.inspect_err(|error| tracing::error!(%error, "{what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_are_left_out_and_debug_shows_names_only() {
        let env = Env::from_pairs([
            ("EDGEPUSH_A", "s3cret"),
            ("EDGEPUSH_BLANK", "  "),
            ("OTHER", "x"),
        ]);
        assert_eq!(env.get("EDGEPUSH_A").as_deref(), Some("s3cret"));
        assert_eq!(env.get("EDGEPUSH_BLANK"), None);
        assert_eq!((env.lookup())("OTHER").as_deref(), Some("x"));
        let shown = format!("{env:?}");
        assert!(
            shown.contains("EDGEPUSH_A") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn literal_values_resolve_to_themselves_without_aws() {
        let env = Env::from_pairs([
            ("EDGEPUSH_REDIS_URL", "redis://127.0.0.1:6379"),
            // Only EDGEPUSH_* values are references; others pass as they are.
            ("SOMETHING_ELSE", "ssm:/not/mine"),
        ]);
        let resolved = env.clone().resolve().await.expect("nothing to resolve");
        assert_eq!(
            resolved.get("EDGEPUSH_REDIS_URL").as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(
            resolved.get("SOMETHING_ELSE").as_deref(),
            Some("ssm:/not/mine")
        );
    }

    #[cfg(not(feature = "aws"))]
    #[tokio::test]
    async fn without_aws_a_reference_is_refused_by_name() {
        let env = Env::from_pairs([("EDGEPUSH_JWT_SECRET", "ssm:/edgepush/jwt")]);
        let err = env.resolve().await.expect_err("cannot resolve");
        assert!(err.to_string().contains("EDGEPUSH_JWT_SECRET"), "{err}");
    }
}
