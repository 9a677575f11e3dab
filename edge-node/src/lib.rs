//! The edgepush edge node: holds client WebSockets, serves the push API.
