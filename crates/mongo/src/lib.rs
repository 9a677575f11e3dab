//! MongoDB backends of the message store and topic store ports.
//!
//! [`MongoMessageStore`] implements [`edgepush_core::MessageStore`] (one log
//! per user) and [`MongoTopicStore`] implements [`edgepush_core::TopicStore`]
//! (one log per topic) on the `mongodb` driver, both on one gap-free,
//! idempotent log ([`log`]). They need no transactions, TTL indexes or
//! partial indexes, so they run on FerretDB v1 as well as on MongoDB; where
//! the server has TTL indexes they use one for retention, elsewhere a
//! background sweep.
//!
//! # Stored layout
//!
//! `messages`, one document per recipient's copy:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `_id` | string | `"<user>:<seq, 20 digits>"`: one document per (user, seq) |
//! | `user`, `seq` | string, int64 | the recipient and its seq (unique index `user_seq` where the server answers ranges from indexes, see [`server`]; the `_id` keeps a seq unique everywhere) |
//! | `id` | string | the message id, shared by all copies of one request |
//! | `data` | string | the payload as JSON text (never BSON: FerretDB refuses keys with `.`/`$` and nested arrays) |
//! | `source`, `idem` | string | the submitter and `"key:<idempotency key>"` or `"auto:<message id>"` (unique index `source_idem_user` with `user`) |
//! | `created_at` | date | acceptance time; retention counts from it |
//!
//! `users`, one document per user: `{_id: <user>, last_seq, acked_seq}`.
//! `last_seq` is a seq known to be stored (on MongoDB the highest; on
//! FerretDB a lower bound, moved every 32 copies and by acks and the sweep,
//! so a user with fewer copies may have no document yet: see `batcher`)
//! and only moves forward, also when retention deletes old messages, so a
//! user's seq never restarts.
//!
//! Topic messages: see [`topics`].
//!
//! See [`log`] for how seqs stay gap-free and appends idempotent under
//! concurrent writers and crashes, and `batcher` (the group commit of user
//! message appends: the copies of concurrent requests stored with one
//! `insert` per round, and counter `update`s before answering or in the
//! background) for how that holds when
//! appends are batched.
//!
//! # Tests
//!
//! `tests/contract.rs` runs the `MessageStore` contract suite
//! (`edgepush-testkit`) on a real MongoDB wire server (FerretDB under
//! `scripts/test`); `tests/message_store.rs` covers what is this adapter's
//! own: crash repair, retention, malformed documents, failure to connect.

// The module docs are for maintainers and name the private types they
// describe (`SeqLog`, the batcher, the sweep);
// `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

mod batcher;
mod command;
pub mod config;
mod counters;
mod error;
mod locks;
pub mod log;
pub mod retention;
pub mod schema;
pub mod server;
pub mod store;
pub mod topics;

pub use config::MongoConfig;
pub use retention::RetentionMode;
pub use server::ServerKind;
pub use store::MongoMessageStore;
pub use topics::MongoTopicStore;
