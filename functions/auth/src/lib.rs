//! The auth Lambda function: verifies a token, returns the user id.
