//! Error codes carried by failed replies: `{"ok": false, "error": {"code", "message"}}`.

use serde::{Deserialize, Serialize};

/// The machine-readable reason a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown op, a field missing, of the wrong type or out of range.
    BadRequest,
    /// The op needs a login.
    Unauthenticated,
    /// Wrong id, name, password or token.
    AuthFailed,
    /// No such user or group.
    NotFound,
    /// Not a member, not the creator, not allowed.
    Forbidden,
    /// Name taken, already friends, already a member.
    Conflict,
    /// The frame is over the size limit; the server closes the connection after this reply.
    TooLarge,
    /// Too many requests.
    RateLimited,
    /// A backing service is down; try again later.
    Unavailable,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Text for a person; never contains internal details such as SQL or paths.
    pub message: String,
}
