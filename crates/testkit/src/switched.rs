//! [`SwitchedRoutes`]: a route store that can be taken down, in front of
//! a [`MemoryRouteStore`], counting the calls tests ask about.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use edgepush_core::memory::MemoryRouteStore;
use edgepush_core::ports::{RouteError, RouteStore};
use edgepush_core::{ConnId, NodeId, UserId};

/// A [`RouteStore`] that answers from `inner` while up and
/// [`RouteError::Unavailable`] to every call while down (as an unreachable
/// Redis would), counting `ping` and `routes_of` calls either way.
pub struct SwitchedRoutes {
    inner: Arc<MemoryRouteStore>,
    down: AtomicBool,
    pings: AtomicUsize,
    routes_of_calls: AtomicUsize,
}

impl SwitchedRoutes {
    /// Up, in front of `inner`.
    pub fn new(inner: Arc<MemoryRouteStore>) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            pings: AtomicUsize::new(0),
            routes_of_calls: AtomicUsize::new(0),
        }
    }

    /// Takes it down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// `ping` calls so far.
    pub fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }

    /// `routes_of` calls so far.
    pub fn routes_of_calls(&self) -> usize {
        self.routes_of_calls.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), RouteError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RouteError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl RouteStore for SwitchedRoutes {
    async fn add_route(&self, u: &UserId, c: &ConnId, n: &NodeId) -> Result<(), RouteError> {
        self.check()?;
        self.inner.add_route(u, c, n).await
    }

    async fn add_routes(&self, r: &[(UserId, ConnId)], n: &NodeId) -> Result<(), RouteError> {
        self.check()?;
        self.inner.add_routes(r, n).await
    }

    async fn remove_routes(&self, r: &[(UserId, ConnId)]) -> Result<(), RouteError> {
        self.check()?;
        self.inner.remove_routes(r).await
    }

    async fn routes_of(&self, u: &[UserId]) -> Result<Vec<Vec<(ConnId, NodeId)>>, RouteError> {
        self.routes_of_calls.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.routes_of(u).await
    }

    async fn ping(&self) -> Result<(), RouteError> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        self.check()
    }
}
