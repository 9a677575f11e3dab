//! AWS adapters of edgepush.
//!
//! Two things the functions need when they run on AWS, each over the real
//! AWS SDK for Rust:
//!
//! - [`SqsHandoff`]: the [`Handoff`](edgepush_core::Handoff) from collect to
//!   dispatch through an SQS queue (with a dead-letter queue behind it). The
//!   queue's message bodies are JSON arrays of
//!   [`StoredMessage`](edgepush_core::StoredMessage)s; [`body`] owns that
//!   format on both sides.
//! - [`SecretSource`] and [`resolve_lookup`]: configuration values given as
//!   `ssm:/path/name` (SSM Parameter Store), `secretsmanager:<secret id>`
//!   or `secretsmanager:<secret id>#<json key>` (Secrets Manager), or plain
//!   literals, resolved once at start-up so that the typed `from_lookup`
//!   configurations never see a reference.
//!
//! [`AwsSettings`] builds the SDK configuration from a lookup function, so
//! tests point every client at an emulator (LocalStack, moto) without
//! touching the process environment.
//!
//! # Layout
//!
//! - [`settings`]: [`AwsSettings`], endpoint, region and credentials.
//! - [`body`]: the SQS message body format (encode on send, decode on receive).
//! - [`sqs`]: [`SqsHandoff`] and its [`SqsHandoffConfig`].
//! - [`secrets`]: [`SecretSource`], [`SecretRef`], [`resolve_lookup`].
//! - [`handoff_choice`]: [`HandoffChoice`], which hand-off collect uses.

pub mod body;
pub mod handoff_choice;
mod sdk_error;
pub mod secrets;
pub mod settings;
pub mod sqs;

pub use handoff_choice::HandoffChoice;
pub use secrets::{SecretError, SecretRef, SecretSource, resolve_lookup};
pub use settings::AwsSettings;
pub use sqs::{SqsHandoff, SqsHandoffConfig};
