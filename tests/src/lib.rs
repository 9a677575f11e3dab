//! End-to-end tests of edgepush on real servers.
