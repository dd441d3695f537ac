//! Wire types of the chatd protocol, version 1, independent of the transport.
//!
//! Every frame is one JSON object. Over TCP frames are separated by `\n`
//! ([`codec::LineCodec`]); over WebSocket each text frame carries one object.
//!
//! - [`request`]: what a client sends (`{"op": ..., "rid": ..., fields}`), one type per op,
//!   and [`request::parse`], which turns one frame into a typed [`Request`].
//! - [`reply`]: the bodies of successful replies, and the writer of whole reply frames.
//! - [`event`]: what the server pushes without being asked (`{"event": ...}`).
//! - [`error`]: the error codes a reply can carry.
//! - [`types`]: values shared by replies and events (users, friends, groups, messages).
//! - [`incoming`]: a client's view of one server frame (reply or event).

pub mod codec;
pub mod error;
pub mod event;
pub mod incoming;
pub mod reply;
pub mod request;
pub mod types;

pub use error::{ErrorBody, ErrorCode};
pub use event::Event;
pub use request::Request;

/// Numeric id of a user.
pub type UserId = i64;
/// Numeric id of a group.
pub type GroupId = i64;
/// Numeric id of a message: assigned by the server, unique, never reused.
pub type MsgId = i64;
/// Numeric id of a conversation: a pair of users, or a group. Opaque to clients.
pub type ConvId = i64;
/// A message's place in its conversation: 1, 2, 3, ... without gaps, in commit order.
pub type Seq = i64;
