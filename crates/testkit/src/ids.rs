//! Ids from a test's own literals, and routes as plain names to compare.

use edgepush_core::{ConnId, NodeId, UserId};

/// The user `name`; panics when a test wrote an invalid id.
pub fn user(name: &str) -> UserId {
    UserId::new(name).expect("a test's user id must be valid")
}

/// The connection `name`; panics when a test wrote an invalid id.
pub fn conn(name: &str) -> ConnId {
    ConnId::new(name).expect("a test's connection id must be valid")
}

/// The node `name`; panics when a test wrote an invalid id.
pub fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a test's node id must be valid")
}

/// One user's routes as sorted (connection, node) names.
pub fn route_names(routes: &[(ConnId, NodeId)]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = routes
        .iter()
        .map(|(c, n)| (c.to_string(), n.to_string()))
        .collect();
    names.sort();
    names
}

/// `list` as [`route_names`] gives it.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = list
        .iter()
        .map(|(c, n)| ((*c).to_owned(), (*n).to_owned()))
        .collect();
    names.sort();
    names
}
