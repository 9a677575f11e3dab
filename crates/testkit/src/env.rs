//! The environment tests run in: the shared servers' addresses and names no
//! other test uses.
//!
//! # When a server is missing
//!
//! There is one policy, here: a test that needs a server whose variable is
//! unset **fails**, with an error naming the variable and how to set it
//! (`scripts/test` starts every server and exports every variable). It never
//! skips and passes, on a laptop or under CI (`CI=true`) alike: a suite that
//! silently ran nothing would look green while proving nothing.
//!
//! | variable | what | set by |
//! |---|---|---|
//! | `EDGEPUSH_TEST_REDIS_URL` | the shared Redis | `scripts/test` (a private `redis-server`) |
//! | `EDGEPUSH_TEST_MONGODB_URI` | the shared MongoDB / FerretDB | `scripts/test` (FerretDB, `mongod` or `$MONGODB_URI`) |
//! | `EDGEPUSH_TEST_AWS_ENDPOINT` | the AWS emulator (LocalStack or moto) | `scripts/start-localstack` |
//!
//! # Isolation
//!
//! Test binaries run in parallel and share these servers (also with other
//! worktrees' runs), so every test names its users, nodes, key prefixes,
//! databases and queues with [`unique`] (or [`unique_db`],
//! [`unique_prefix`]) and never looks at anything it did not create.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

/// The shared Redis of the test run.
pub const ENV_REDIS_URL: &str = "EDGEPUSH_TEST_REDIS_URL";
/// The shared MongoDB (or FerretDB) of the test run.
pub const ENV_MONGODB_URI: &str = "EDGEPUSH_TEST_MONGODB_URI";
/// The AWS emulator (LocalStack or moto) of the test run.
pub const ENV_AWS_ENDPOINT: &str = "EDGEPUSH_TEST_AWS_ENDPOINT";

/// The value of `name`, trimmed; an error saying how to set it when it is
/// unset or blank (see the module docs: a missing server fails the test).
pub fn required(name: &str, example: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!("{name} is not set: set it (for example {name}={example}), or run scripts/test"),
    }
}

/// The shared Redis URL, from `EDGEPUSH_TEST_REDIS_URL`.
pub fn redis_url() -> anyhow::Result<String> {
    required(ENV_REDIS_URL, "redis://127.0.0.1:6390")
}

/// The shared MongoDB URI, from `EDGEPUSH_TEST_MONGODB_URI`.
pub fn mongodb_uri() -> anyhow::Result<String> {
    required(ENV_MONGODB_URI, "mongodb://127.0.0.1:27090")
}

/// The AWS emulator's URL, from `EDGEPUSH_TEST_AWS_ENDPOINT`
/// (`scripts/start-localstack` prints it).
pub fn aws_endpoint() -> anyhow::Result<String> {
    required(ENV_AWS_ENDPOINT, "http://127.0.0.1:4566")
}

/// A name no other test (of this run or another) uses: `tag`, the process
/// id, a counter and random bits. Only characters valid in user, node and
/// connection ids, Redis key prefixes, SQS queue and secret names
/// (`[A-Za-z0-9-]` besides `tag`'s own), at most `tag.len() + 26` bytes.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits: u32 = rand::random();
    format!("{tag}-{:x}-{n}-{bits:08x}", std::process::id())
}

/// A MongoDB database name no other test uses (letters, digits and `_`,
/// short enough for every server).
pub fn unique_db() -> String {
    unique("ept").replace('-', "_")
}

/// A Redis key prefix no other test uses, under `eptest:` so that a look at
/// a shared Redis tells test keys from real ones.
pub fn unique_prefix(tag: &str) -> String {
    format!("eptest:{}", unique(tag))
}

/// The program a test runs: the path in variable `var` when set (it must be
/// a file), else `name` on `PATH`; an error saying how to install it
/// (`install`) when neither is there.
pub fn program(var: &str, name: &str, install: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{var}={} is not a file", path.display());
        }
        return Ok(path);
    }
    on_path(name).with_context(|| {
        format!("{name} is not installed: {install} (or set {var}), or run scripts/test")
    })
}

/// `name` in one of the directories of `PATH`, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it
/// right away).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` free TCP ports on 127.0.0.1, all different (bound together, then
/// released).
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The resident memory (`VmRSS`) of process `pid`, in KiB; `None` when the
/// process is gone or `/proc` is not there.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use edgepush_core::{ConnId, NodeId, UserId};

    use super::*;

    #[test]
    fn unique_names_are_valid_ids_and_differ() {
        let a = unique("contract-user");
        let b = unique("contract-user");
        assert_ne!(a, b);
        assert!(UserId::new(&a).is_ok() && NodeId::new(&a).is_ok() && ConnId::new(&a).is_ok());
        let db = unique_db();
        assert!(
            db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{db}"
        );
        assert!(unique_prefix("x").starts_with("eptest:x-"));
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let err = required("EDGEPUSH_TEST_SURELY_UNSET_VARIABLE", "x://y").unwrap_err();
        assert!(
            err.to_string()
                .contains("EDGEPUSH_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
    }

    #[test]
    fn programs_come_from_their_variable_or_path() {
        // `sh` is on every PATH the tests run with.
        assert!(program("EDGEPUSH_TEST_SURELY_UNSET_VARIABLE", "sh", "x").is_ok());
        let err = program(
            "EDGEPUSH_TEST_SURELY_UNSET_VARIABLE",
            "surely-not-an-installed-program",
            "apt-get install it",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "surely-not-an-installed-program is not installed: apt-get install it \
                 (or set EDGEPUSH_TEST_SURELY_UNSET_VARIABLE)"
            ),
            "{err}"
        );
    }

    #[test]
    fn rss_of_this_process_is_known() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn free_ports_differ() {
        let ports = free_ports(4).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
    }
}
