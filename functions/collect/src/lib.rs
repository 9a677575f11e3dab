//! The collect Lambda function: validates, stores, hands off.
