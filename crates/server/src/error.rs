//! Errors of an op, each mapped to a protocol error code.

use std::borrow::Cow;

use chat_proto::request::Rid;
use chat_proto::ErrorCode;

use crate::store::StoreError;

/// Why an op failed, as the client will see it.
#[derive(Debug, Clone)]
pub struct OpError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

pub type OpResult = Result<Vec<u8>, OpError>;

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> OpError {
        OpError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> OpError {
        OpError::new(ErrorCode::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> OpError {
        OpError::new(ErrorCode::Forbidden, message)
    }

    pub fn auth_failed() -> OpError {
        OpError::new(ErrorCode::AuthFailed, "wrong user, password or token")
    }

    pub fn internal() -> OpError {
        OpError::new(ErrorCode::Internal, "internal error")
    }

    /// This error as a reply frame.
    pub fn frame(&self, rid: &Rid) -> Vec<u8> {
        chat_proto::reply::error_frame(rid, self.code, &self.message)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        match e {
            StoreError::NotFound(m) => OpError::new(ErrorCode::NotFound, m),
            StoreError::Forbidden(m) => OpError::new(ErrorCode::Forbidden, m),
            StoreError::Conflict(m) => OpError::new(ErrorCode::Conflict, m),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                OpError::new(
                    ErrorCode::Unavailable,
                    "the store is unavailable; try again later",
                )
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store failure");
                OpError::internal()
            }
        }
    }
}
