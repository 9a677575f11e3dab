//! Contract suites: one per port of [`edgepush_core::ports`], written once
//! and run against every backend of that port.
//!
//! A port's trait docs state the rules its callers rely on; its suite here
//! makes each rule one `async fn` that fails when a backend breaks it. Each
//! backend's crate runs the suite against the real thing:
//!
//! | suite | backends, and where they run it |
//! |---|---|
//! | [`message_store`] | in-memory (`crates/testkit/tests/memory.rs`), MongoDB wire (`crates/mongo/tests/contract.rs`) |
//! | [`route_store`] | in-memory, Redis and Redis Cluster (`crates/redis/tests/contract.rs`) |
//! | [`node_directory`] | in-memory, Redis and Redis Cluster (`crates/redis/tests/contract.rs`) |
//! | [`topic_store`] | in-memory, MongoDB wire (`crates/mongo/tests/contract.rs`) |
//! | [`topic_routes`] | in-memory, Redis and Redis Cluster (`crates/redis/tests/contract.rs`) |
//! | [`presence_store`] | in-memory, Redis and Redis Cluster (`crates/redis/tests/contract.rs`) |
//!
//! What is peculiar to one backend (outages, crash repair, Redis Cluster
//! slot grouping, FerretDB quirks, malformed stored documents) stays in that
//! backend's own tests.
//!
//! # Running a suite
//!
//! A suite takes a [`Backend`]: a factory of *handles onto the same data*
//! (for MongoDB, a new client on one database per call, so rules about
//! racing writers race real clients; for an in-memory backend, the same
//! `Arc` every time). It runs every rule concurrently, each isolated by
//! names of its own ([`crate::unique`]), and returns a [`Report`] naming
//! each broken rule:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use edgepush_core::memory::MemoryMessageStore;
//! use edgepush_testkit::contract::{Backend, message_store};
//!
//! let store = Arc::new(MemoryMessageStore::new());
//! message_store::check(Backend::single(store)).await.into_result()
//! # }
//! ```
//!
//! `crates/testkit/src/contract/broken.rs` shows that the suites can fail:
//! backends with one rule broken, and the rule each suite then reports.
//!
//! # Adding a suite for a new port
//!
//! 1. State the rules in the port trait's docs (`crates/core/src/ports.rs`),
//!    one bullet per rule, saying what callers rely on and naming its check
//!    as `` (`rule_name`) ``; list the suite's `RULES` in the unit test
//!    `every_rule_is_stated_in_the_port_docs` below, which checks that.
//! 2. Add `src/contract/<port>.rs` here, modelled on [`route_store`]: one
//!    `async fn rule_name(backend: &Backend<dyn Port>) -> anyhow::Result<()>`
//!    per rule, with a `///` line saying the rule; every name it stores made
//!    with [`crate::unique`], so rules and suites run side by side on a
//!    shared server. Then list them and add the entry point:
//!
//!    ```ignore
//!    pub const RULES: &[Rule<dyn Port>] = crate::rules![dyn Port: rule_one, rule_two];
//!
//!    pub async fn check(backend: Backend<dyn Port>) -> Report {
//!        super::check("Port", RULES, backend).await
//!    }
//!    ```
//! 3. Run `check` against every backend: the in-memory one in
//!    `crates/testkit/tests/memory.rs`, each real one in its crate's
//!    `tests/contract.rs` (one `#[tokio::test]` per backend and port).
//! 4. Add a broken backend to [`broken`](self) when a rule is one that a
//!    backend could plausibly break in silence.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

pub mod message_store;
pub mod node_directory;
pub mod presence_store;
pub mod route_store;
pub mod topic_routes;
pub mod topic_store;

#[cfg(test)]
mod broken;

type MakeHandle<P> = dyn Fn() -> BoxFuture<'static, anyhow::Result<Arc<P>>> + Send + Sync;

/// The backend a suite runs against: a factory of handles onto the same
/// data. Rules about concurrent writers take several handles and race them.
pub struct Backend<P: ?Sized> {
    make: Arc<MakeHandle<P>>,
}

impl<P: ?Sized> Clone for Backend<P> {
    fn clone(&self) -> Self {
        Self {
            make: self.make.clone(),
        }
    }
}

impl<P: ?Sized + Send + Sync + 'static> Backend<P> {
    /// A backend whose handles `make` opens (a new client each time, on the
    /// same database or key prefix).
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Arc<P>>> + Send + 'static,
    {
        Self {
            make: Arc::new(move || Box::pin(make())),
        }
    }

    /// A backend with one handle, shared by every rule (an in-memory store).
    pub fn single(handle: Arc<P>) -> Self {
        Self::new(move || {
            let handle = handle.clone();
            async move { Ok(handle) }
        })
    }

    /// A handle onto the backend's data.
    pub async fn handle(&self) -> anyhow::Result<Arc<P>> {
        (self.make)().await
    }

    /// `count` handles onto the backend's data.
    pub async fn handles(&self, count: usize) -> anyhow::Result<Vec<Arc<P>>> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.handle().await?);
        }
        Ok(out)
    }
}

/// How a rule is checked: fails (or panics) when the backend breaks it.
pub type Check<P> = for<'a> fn(&'a Backend<P>) -> BoxFuture<'a, anyhow::Result<()>>;

/// One rule of a port's contract.
pub struct Rule<P: ?Sized> {
    /// The rule's function name, which says the rule.
    pub name: &'static str,
    /// Its check.
    pub check: Check<P>,
}

/// The list of a suite's rules, named after their functions:
/// `rules![dyn MessageStore: rule_one, rule_two]`.
#[macro_export]
macro_rules! rules {
    ($port:ty: $($rule:ident),+ $(,)?) => {
        &[$($crate::contract::Rule::<$port> {
            name: stringify!($rule),
            check: |backend| Box::pin($rule(backend)),
        }),+]
    };
}

/// What one rule came to.
#[derive(Debug)]
pub struct Outcome {
    /// The rule.
    pub rule: &'static str,
    /// `Err` with what went wrong when the backend broke it.
    pub result: Result<(), String>,
}

/// What a suite found: one outcome per rule, in the suite's order.
#[derive(Debug)]
#[must_use = "a report does nothing until checked: call `into_result`"]
pub struct Report {
    /// The port, for messages.
    pub port: &'static str,
    /// One per rule.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// The names of the rules the backend broke, in the suite's order.
    pub fn failed(&self) -> Vec<&'static str> {
        self.outcomes
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.rule)
            .collect()
    }

    /// `Ok` when every rule held, else an error naming each broken rule and
    /// what went wrong.
    pub fn into_result(self) -> anyhow::Result<()> {
        let broken: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| match &o.result {
                Ok(()) => None,
                Err(e) => Some(format!("- {}: {e}", o.rule)),
            })
            .collect();
        if broken.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} contract: {} of {} rules broken:\n{}",
            self.port,
            broken.len(),
            self.outcomes.len(),
            broken.join("\n")
        )
    }
}

/// `Ok` when every report is clean, else one error naming every broken rule
/// of every report (for a test that runs several suites on one backend).
pub fn all(reports: impl IntoIterator<Item = Report>) -> anyhow::Result<()> {
    let errors: Vec<String> = reports
        .into_iter()
        .filter_map(|r| r.into_result().err())
        .map(|e| format!("{e:#}"))
        .collect();
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// Runs every rule of `rules` against `backend`, concurrently, each on a
/// task of its own; a rule that panics counts as broken.
pub async fn check<P>(port: &'static str, rules: &'static [Rule<P>], backend: Backend<P>) -> Report
where
    P: ?Sized + Send + Sync + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, rule) in rules.iter().enumerate() {
        let backend = backend.clone();
        let check = rule.check;
        tasks.spawn(async move {
            let result = AssertUnwindSafe(check(&backend)).catch_unwind().await;
            let result = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(panic) => Err(panic_text(panic.as_ref())),
            };
            (index, result)
        });
    }
    let mut results: Vec<Option<Result<(), String>>> = rules.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        // Panics are caught inside the task; only a cancelled runtime gets here.
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    Report {
        port,
        outcomes: rules
            .iter()
            .zip(results)
            .map(|(rule, result)| Outcome {
                rule: rule.name,
                result: result.unwrap_or_else(|| Err("the rule's task was cancelled".into())),
            })
            .collect(),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::{
        message_store, node_directory, presence_store, route_store, topic_routes, topic_store,
    };

    /// The trait docs state every rule, named after its check, so that a
    /// rule added here is documented where callers read.
    #[test]
    fn every_rule_is_stated_in_the_port_docs() {
        let docs = include_str!("../../../core/src/ports.rs");
        let names = message_store::RULES
            .iter()
            .map(|r| r.name)
            .chain(route_store::RULES.iter().map(|r| r.name))
            .chain(node_directory::RULES.iter().map(|r| r.name))
            .chain(topic_store::RULES.iter().map(|r| r.name))
            .chain(topic_routes::RULES.iter().map(|r| r.name))
            .chain(presence_store::RULES.iter().map(|r| r.name));
        for name in names {
            assert!(
                docs.contains(&format!("(`{name}`)")),
                "the rule {name} is not stated in crates/core/src/ports.rs"
            );
        }
    }
}
