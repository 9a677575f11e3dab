//! Helpers for typed configuration read through a lookup function.
//!
//! Every component parses its configuration once from `lookup(name) ->
//! Option<String>`: the process environment in binaries, a map in tests (so
//! tests never mutate the process environment).

use std::collections::HashMap;

/// A lookup over fixed `(name, value)` pairs, for tests and tools.
pub fn lookup_from_pairs(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_given_pairs_only() {
        let lookup = lookup_from_pairs(&[("A", "1")]);
        assert_eq!(lookup("A").as_deref(), Some("1"));
        assert_eq!(lookup("B"), None);
    }
}
