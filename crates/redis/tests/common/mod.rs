//! Shared by the Redis adapter's own tests.

use std::time::Duration;

/// Route TTL of the tests: long enough for any test, short enough that keys
/// left by a failed test disappear by themselves.
pub(crate) const TEST_ROUTE_TTL: Duration = Duration::from_secs(600);
