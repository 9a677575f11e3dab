//! Which hand-off collect uses, read once from configuration.
//!
//! `EDGEPUSH_HANDOFF=sqs` (the default when `EDGEPUSH_QUEUE_URL` is set)
//! sends stored messages to the queue at `EDGEPUSH_QUEUE_URL`;
//! `EDGEPUSH_HANDOFF=direct` (the default otherwise) runs dispatch in the
//! collect process.

use edgepush_core::config::{ConfigError, Vars};

use crate::SqsHandoffConfig;

/// Names of the variables read by [`HandoffChoice::from_lookup`].
pub mod env {
    /// `sqs` or `direct`.
    pub const HANDOFF: &str = "EDGEPUSH_HANDOFF";
    /// The SQS queue URL, for `sqs`.
    pub const QUEUE_URL: &str = "EDGEPUSH_QUEUE_URL";
}

/// How collect hands stored messages to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffChoice {
    /// Dispatch in-process (dev mode, or a deployment without a queue).
    Direct,
    /// Through the SQS queue of this configuration.
    Sqs(SqsHandoffConfig),
}

impl HandoffChoice {
    /// Reads [`env::HANDOFF`] and [`env::QUEUE_URL`] through `lookup`;
    /// blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(lookup);
        let queue_url = vars.get(env::QUEUE_URL);
        let kind = vars.get(env::HANDOFF).map(|k| k.to_ascii_lowercase());
        let want_sqs = match kind.as_deref() {
            Some("sqs") => true,
            Some("direct") => false,
            Some(_) => {
                return Err(ConfigError::invalid(
                    env::HANDOFF,
                    "must be `sqs` or `direct`",
                ));
            }
            None => queue_url.is_some(),
        };
        if !want_sqs {
            return Ok(HandoffChoice::Direct);
        }
        let url = queue_url.ok_or(ConfigError::Missing(env::QUEUE_URL))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                env::QUEUE_URL,
                "must be an http:// or https:// queue URL",
            ));
        }
        Ok(HandoffChoice::Sqs(SqsHandoffConfig::new(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(handoff: Option<&str>, url: Option<&str>) -> Result<HandoffChoice, ConfigError> {
        HandoffChoice::from_lookup(|name| match name {
            env::HANDOFF => handoff.map(str::to_owned),
            env::QUEUE_URL => url.map(str::to_owned),
            _ => None,
        })
    }

    #[test]
    fn chooses_by_kind_and_queue() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123/edgepush-dispatch";
        assert_eq!(choose(None, None), Ok(HandoffChoice::Direct));
        assert_eq!(choose(Some("direct"), Some(url)), Ok(HandoffChoice::Direct));
        assert_eq!(
            choose(None, Some(url)),
            Ok(HandoffChoice::Sqs(SqsHandoffConfig::new(url)))
        );
        assert_eq!(
            choose(Some("SQS"), Some(url)),
            Ok(HandoffChoice::Sqs(SqsHandoffConfig::new(url)))
        );
        assert_eq!(
            choose(Some("sqs"), None),
            Err(ConfigError::Missing(env::QUEUE_URL))
        );
        assert_eq!(
            choose(Some("sqs"), Some("edgepush-dispatch")),
            Err(ConfigError::invalid(
                env::QUEUE_URL,
                "must be an http:// or https:// queue URL"
            ))
        );
        assert_eq!(
            choose(Some("kinesis"), None),
            Err(ConfigError::invalid(
                env::HANDOFF,
                "must be `sqs` or `direct`"
            ))
        );
    }
}
