//! Redis backends of the route store and node directory ports.
