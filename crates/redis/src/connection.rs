//! [`RedisConnection`]: one handle over a single Redis or a Redis Cluster.
//!
//! Both kinds are multiplexed, cheap to clone and re-establish their
//! connections by themselves; the enum lets the store (and any other user of
//! [`RedisConfig`]) issue commands without caring which one it holds.

use edgepush_core::RouteError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::config::RedisConfig;

/// Retries the cluster client makes on its own (redirects during a
/// resharding or failover, a node briefly unreachable). Few and short: the
/// store's command timeout bounds every operation anyway, and a caller is
/// better served by a quick [`RouteError::Unavailable`] than by a long wait.
const CLUSTER_RETRIES: u32 = 3;
/// Shortest wait between two cluster retries, in milliseconds.
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
/// Longest wait between two cluster retries, in milliseconds.
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 100;

/// A multiplexed connection to a single Redis or to a Redis Cluster, as
/// [`RedisConfig::cluster`] says. Cheap to clone: clones share the
/// underlying connections.
///
/// It implements [`ConnectionLike`], so `redis::cmd(..).query_async(&mut
/// conn)` works on both. On a cluster a command is routed by its key; a
/// pipeline must keep to one hash slot (the cluster client refuses others
/// with [`ErrorKind::CrossSlot`]), see [`slot`](crate::keys::slot).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (or a primary endpoint), through the `redis` crate's
    /// self-healing connection manager.
    Single(ConnectionManager),
    /// A Redis Cluster: one multiplexed connection per node, following the
    /// slot map and its redirects.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects as `config` says, within about
    /// [`RedisConfig::connect_timeout`] (plus the command timeout for the
    /// handshake).
    ///
    /// Fails with [`RouteError::Unavailable`] when Redis cannot be reached,
    /// and with [`RouteError::Backend`] when the configuration is wrong (a
    /// malformed URL, no cluster seed, refused credentials).
    pub async fn connect(config: &RedisConfig) -> Result<Self, RouteError> {
        let url = config.redacted_url();
        let bound = config.connect_timeout + config.command_timeout;
        let connecting = async {
            if config.cluster {
                connect_cluster(config).await.map(Self::Cluster)
            } else {
                connect_single(config).await.map(Self::Single)
            }
        };
        match tokio::time::timeout(bound, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(map_err("connect", &url, e)),
            Err(_) => Err(RouteError::Unavailable(format!(
                "connect: no connection to Redis at {url} within {bound:?}"
            ))),
        }
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A connection manager for one server.
async fn connect_single(config: &RedisConfig) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(config.url.as_str())?;
    // No retries inside the connection manager: its backoff sleeps for
    // seconds, during which every caller would wait. Instead a failed
    // (re)connection fails the operations waiting on it, and the next
    // operation starts a fresh attempt, so service resumes as soon as Redis
    // is back.
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(config.connect_timeout)
        .set_number_of_retries(0);
    ConnectionManager::new_with_config(client, manager_config).await
}

/// A cluster connection discovered from the seeds in `config`.
async fn connect_cluster(config: &RedisConfig) -> Result<ClusterConnection, RedisError> {
    let seeds = config.urls();
    if seeds.is_empty() {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "no Redis Cluster seed URL given",
        )));
    }
    ClusterClientBuilder::new(seeds)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.command_timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
        .build()?
        .get_async_connection()
        .await
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Connection trouble (and the server saying "not now") is
/// [`RouteError::Unavailable`]; anything else the server refused is
/// [`RouteError::Backend`].
pub(crate) fn map_err(op: &str, url: &str, e: RedisError) -> RouteError {
    let transient = e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Moved
                | ErrorKind::Ask
        )
        || lost_cluster_node(&e);
    if transient {
        RouteError::Unavailable(format!("{op}: Redis at {url}: {e}"))
    } else {
        RouteError::Backend(format!("{op}: Redis at {url}: {e}"))
    }
}

/// Whether `e` is the cluster client saying it has no connection to the
/// node a command is routed to (the node died and was dropped from its
/// table). The `redis` crate reports that as a generic
/// [`ErrorKind::ClientError`]; only its text tells it apart.
fn lost_cluster_node(e: &RedisError) -> bool {
    e.kind() == ErrorKind::ClientError && e.to_string().contains("connection not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_trouble_is_transient() {
        for kind in [
            ErrorKind::ClusterDown,
            ErrorKind::ClusterConnectionNotFound,
            ErrorKind::TryAgain,
            ErrorKind::Moved,
        ] {
            let e = RedisError::from((kind, "test"));
            assert!(
                matches!(map_err("op", "u", e), RouteError::Unavailable(_)),
                "{kind:?}"
            );
        }
        let e = RedisError::from((
            ErrorKind::ClientError,
            "Requested connection not found",
            "127.0.0.1:7000".to_owned(),
        ));
        assert!(matches!(map_err("op", "u", e), RouteError::Unavailable(_)));
        let e = RedisError::from((ErrorKind::ClientError, "something else"));
        assert!(matches!(map_err("op", "u", e), RouteError::Backend(_)));
        let e = RedisError::from((ErrorKind::CrossSlot, "test"));
        assert!(matches!(map_err("op", "u", e), RouteError::Backend(_)));
        let e = RedisError::from((ErrorKind::TypeError, "test"));
        assert!(matches!(map_err("op", "u", e), RouteError::Backend(_)));
    }

    #[tokio::test]
    async fn a_cluster_without_seeds_is_a_configuration_error() {
        let config = RedisConfig::cluster(Vec::<String>::new());
        match RedisConnection::connect(&config).await {
            Err(RouteError::Backend(msg)) => assert!(msg.contains("seed"), "{msg}"),
            Err(e) => panic!("expected a Backend error, got {e:?}"),
            Ok(_) => panic!("connected to a cluster without seeds"),
        }
    }
}
