//! MongoDB backend of the message store port.
