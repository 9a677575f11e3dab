//! MongoDB backend of the message store port.
//!
//! [`MongoMessageStore`] implements [`edgepush_core::MessageStore`] on the
//! `mongodb` driver. It needs no transactions, TTL indexes or partial
//! indexes, so it runs on FerretDB v1 as well as on MongoDB; where the server
//! has TTL indexes it uses one for retention, elsewhere a background sweep.
//!
//! # Stored layout
//!
//! `messages`, one document per recipient's copy:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | `"<user>:<seq, 20 digits>"`: one document per (user, seq) |
//! | `user`, `seq` | string, int64 | the recipient and its seq (unique index `user_seq`) |
//! | `id` | string | the message id, shared by all copies of one request |
//! | `data` | string | the payload as JSON text (never BSON: FerretDB refuses keys with `.`/`$` and nested arrays) |
//! | `source`, `idem` | string | the submitter and `"key:<idempotency key>"` or `"auto:<message id>"` (unique index `source_idem_user` with `user`) |
//! | `created_at` | date | acceptance time; retention counts from it |
//!
//! `users`, one document per user: `{_id: <user>, last_seq, acked_seq}`.
//! `last_seq` is the highest seq known to be stored and only moves forward,
//! also when retention deletes old messages, so a user's seq never restarts.
//!
//! See [`store`] for how seqs stay gap-free and appends idempotent under
//! concurrent writers and crashes.

pub mod config;
mod counters;
mod error;
mod locks;
pub mod retention;
pub mod schema;
pub mod store;

pub use config::MongoConfig;
pub use retention::RetentionMode;
pub use store::MongoMessageStore;
