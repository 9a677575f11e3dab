//! The [`RouteStore`] contract: routes read back as written, `routes_of`
//! answering many users in one call in the order asked, moves, removals of
//! exactly what was named, bulk writes and concurrent writers.

use std::collections::BTreeSet;

use anyhow::ensure;
use edgepush_core::{ConnId, NodeId, RouteStore, UserId};

use super::{Backend, Report, Rule};
use crate::unique;

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn RouteStore>] = crate::rules![dyn RouteStore:
    added_routes_are_read_back,
    routes_of_answers_every_user_asked_in_order,
    a_re_added_connection_points_to_its_new_node,
    remove_routes_forgets_only_the_given_routes,
    thousands_of_routes_are_added_and_removed_in_one_call,
    routes_added_concurrently_all_land,
    ping_answers,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn RouteStore>) -> Report {
    super::check("RouteStore", RULES, backend).await
}

fn user(tag: &str) -> anyhow::Result<UserId> {
    Ok(UserId::new(unique(tag))?)
}

fn node(tag: &str) -> anyhow::Result<NodeId> {
    Ok(NodeId::new(unique(tag))?)
}

fn conn(name: &str) -> ConnId {
    ConnId::new(name).expect("valid connection id")
}

/// One user's routes as a set of (connection, node) names.
fn names(routes: &[(ConnId, NodeId)]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .map(|(c, n)| (c.to_string(), n.to_string()))
        .collect()
}

fn want(list: &[(&str, &NodeId)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(c, n)| ((*c).to_owned(), n.to_string()))
        .collect()
}

/// Routes added one at a time ([`RouteStore::add_route`]) or together
/// ([`RouteStore::add_routes`]) are read back: each user gets every
/// connection it has, with the node holding it, and no route is listed twice.
async fn added_routes_are_read_back(backend: &Backend<dyn RouteStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (alice, bob, carol) = (user("alice")?, user("bob")?, user("carol")?);
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    store
        .add_routes(
            &[
                (alice.clone(), conn("a1")),
                (bob.clone(), conn("b1")),
                (alice.clone(), conn("a2")),
            ],
            &n1,
        )
        .await?;
    store.add_route(&alice, &conn("a3"), &n2).await?;
    store.add_route(&carol, &conn("c1"), &n2).await?;
    store.add_route(&carol, &conn("c1"), &n2).await?;
    let got = store
        .routes_of(&[alice.clone(), bob.clone(), carol.clone()])
        .await?;
    assert_eq!(got.len(), 3);
    assert_eq!(
        names(&got[0]),
        want(&[("a1", &n1), ("a2", &n1), ("a3", &n2)])
    );
    assert_eq!(names(&got[1]), want(&[("b1", &n1)]));
    assert_eq!(got[2].len(), 1, "a route added twice is listed once");
    assert_eq!(names(&got[2]), want(&[("c1", &n2)]));
    Ok(())
}

/// [`RouteStore::routes_of`] answers many users in one call: one entry per
/// user asked, in the order asked, empty for a user without routes, the
/// same twice for a user asked twice, and nothing when asked for nothing.
async fn routes_of_answers_every_user_asked_in_order(
    backend: &Backend<dyn RouteStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let n = node("edge")?;
    let users: Vec<UserId> = (0..300)
        .map(|i| user(&format!("many-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let routes: Vec<(UserId, ConnId)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), conn(&format!("c{i}"))))
        .collect();
    store.add_routes(&routes, &n).await?;

    let mut asked: Vec<UserId> = users.iter().rev().cloned().collect();
    asked.insert(10, user("nobody")?);
    asked.push(users[7].clone());
    let got = store.routes_of(&asked).await?;
    assert_eq!(got.len(), asked.len(), "one entry per user asked");
    for (u, routes) in asked.iter().zip(&got) {
        match users.iter().position(|x| x == u) {
            Some(i) => {
                let c = format!("c{i}");
                assert_eq!(names(routes), want(&[(&c, &n)]), "routes of {u}");
            }
            None => ensure!(routes.is_empty(), "{u} has no routes, got {routes:?}"),
        }
    }
    let first = asked.iter().position(|x| *x == users[7]).expect("asked");
    assert_eq!(
        names(&got[first]),
        names(&got[asked.len() - 1]),
        "a user asked twice"
    );
    ensure!(
        store.routes_of(&[]).await?.is_empty(),
        "nothing asked, nothing answered"
    );
    Ok(())
}

/// Adding a connection again with another node moves it there.
async fn a_re_added_connection_points_to_its_new_node(
    backend: &Backend<dyn RouteStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let u = user("moved")?;
    let (old, new) = (node("old")?, node("new")?);
    store.add_route(&u, &conn("c"), &old).await?;
    store.add_route(&u, &conn("c"), &new).await?;
    let got = store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(names(&got[0]), want(&[("c", &new)]));
    store.add_routes(&[(u.clone(), conn("c"))], &old).await?;
    let got = store.routes_of(std::slice::from_ref(&u)).await?;
    assert_eq!(
        names(&got[0]),
        want(&[("c", &old)]),
        "add_routes moves it too"
    );
    Ok(())
}

/// [`RouteStore::remove_routes`] forgets exactly the routes named, of any
/// number of users at once; routes that do not exist are ignored, and a user
/// whose last route went has none.
async fn remove_routes_forgets_only_the_given_routes(
    backend: &Backend<dyn RouteStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (alice, bob, carol) = (user("rm-alice")?, user("rm-bob")?, user("rm-carol")?);
    let n = node("edge")?;
    store
        .add_routes(
            &[
                (alice.clone(), conn("a1")),
                (alice.clone(), conn("a2")),
                (bob.clone(), conn("b1")),
                (carol.clone(), conn("c1")),
            ],
            &n,
        )
        .await?;
    store
        .remove_routes(&[
            (alice.clone(), conn("a1")),
            (carol.clone(), conn("c1")),
            (bob.clone(), conn("no-such-conn")),
            (user("rm-nobody")?, conn("x")),
        ])
        .await?;
    let got = store
        .routes_of(&[alice.clone(), bob.clone(), carol.clone()])
        .await?;
    assert_eq!(names(&got[0]), want(&[("a2", &n)]));
    assert_eq!(names(&got[1]), want(&[("b1", &n)]));
    ensure!(
        got[2].is_empty(),
        "carol's last route is gone: {:?}",
        got[2]
    );
    store.remove_routes(&[]).await?;
    store.remove_routes(&[(carol.clone(), conn("c1"))]).await?;
    ensure!(store.routes_of(&[carol]).await?[0].is_empty());
    Ok(())
}

/// Thousands of routes (re-registration after a route store loss) are
/// written by one [`RouteStore::add_routes`] and removed by one
/// [`RouteStore::remove_routes`].
async fn thousands_of_routes_are_added_and_removed_in_one_call(
    backend: &Backend<dyn RouteStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let users = [user("bulk-x")?, user("bulk-y")?, user("bulk-z")?];
    let n = node("edge")?;
    let routes: Vec<(UserId, ConnId)> = (0..2500)
        .map(|i| (users[i % 3].clone(), conn(&format!("c{i}"))))
        .collect();
    store.add_routes(&routes, &n).await?;
    let counts: Vec<usize> = store
        .routes_of(&users)
        .await?
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(counts, [834, 833, 833]);
    store.remove_routes(&routes[..2400]).await?;
    let left: Vec<BTreeSet<(String, String)>> = store
        .routes_of(&users)
        .await?
        .iter()
        .map(|r| names(r))
        .collect();
    let want_left: Vec<BTreeSet<(String, String)>> = (0..3)
        .map(|u| {
            (2400..2500)
                .filter(|i| i % 3 == u)
                .map(|i| (format!("c{i}"), n.to_string()))
                .collect()
        })
        .collect();
    assert_eq!(left, want_left);
    Ok(())
}

/// Routes added at the same time from several handles all land.
async fn routes_added_concurrently_all_land(
    backend: &Backend<dyn RouteStore>,
) -> anyhow::Result<()> {
    let u = user("popular")?;
    let n = node("edge")?;
    let handles = backend.handles(2).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = handles[i % handles.len()].clone();
        let (u, n) = (u.clone(), n.clone());
        tasks.spawn(async move { store.add_route(&u, &conn(&format!("c{i}")), &n).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let got = handles[0].routes_of(std::slice::from_ref(&u)).await?;
    let all: BTreeSet<(String, String)> =
        (0..20).map(|i| (format!("c{i}"), n.to_string())).collect();
    assert_eq!(names(&got[0]), all);
    Ok(())
}

/// `ping` succeeds while the backend answers.
async fn ping_answers(backend: &Backend<dyn RouteStore>) -> anyhow::Result<()> {
    backend.handle().await?.ping().await?;
    Ok(())
}
