//! A client's view of one frame from the server: a reply to one of its requests, or an
//! event.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ErrorBody;
use crate::event::Event;

/// A reply as a client receives it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReplyFrame {
    /// The rid of the request, `null` when it had none or could not be read.
    #[serde(default)]
    pub rid: Value,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<ErrorBody>,
    /// The other fields of the reply.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ReplyFrame {
    /// The body of a successful reply as its type (see [`crate::reply`]).
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(Value::Object(self.fields.clone()))
    }
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Reply(ReplyFrame),
    Event(Event),
}

impl Incoming {
    /// Parses one frame (without the line ending).
    pub fn parse(frame: &[u8]) -> Result<Incoming, serde_json::Error> {
        let value: Value = serde_json::from_slice(frame)?;
        if value.get("event").is_some() {
            Ok(Incoming::Event(Event::deserialize(value)?))
        } else {
            Ok(Incoming::Reply(ReplyFrame::deserialize(value)?))
        }
    }
}
