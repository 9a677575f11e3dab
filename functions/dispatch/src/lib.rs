//! The dispatch Lambda function: routes stored messages to edge nodes.
