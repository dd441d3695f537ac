//! The classic muduo chat server's JSON `msgid` protocol, served on the same port as
//! protocol version 1 so that existing classic clients work unchanged.
//!
//! A connection whose first object has a `msgid` field is classic (see
//! [`crate::dialect::sniff`]). It runs the same session loop as a native one, with
//! [`ClassicCodec`] for the framing (JSON objects separated by NUL bytes, whitespace or
//! nothing) and [`ClassicDialect`] translating between classic messages and version 1.
//!
//! - [`codec`]: where one object ends in the byte stream, whatever the reads are.
//! - [`wire`]: the `msgid`s, classic requests read as version 1 requests, the objects out.
//! - [`dialect`]: the translation, including LOGIN_ACK with the offline messages.
//!
//! What differs from the classic server on purpose: the acting user is the session's,
//! never the `id` a request carries; messages to a classic session count as delivered
//! once written (its clients cannot ack); malformed input is dropped, not fatal.

pub(crate) mod codec;
pub(crate) mod dialect;
pub(crate) mod wire;

pub(crate) use codec::ClassicCodec;
pub(crate) use dialect::ClassicDialect;
