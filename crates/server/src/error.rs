//! The server's one error enum, and the one place that maps it to HTTP status and gRPC code.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    BadRequest(String),
    /// A body or message over the configured size: 413 / RESOURCE_EXHAUSTED, not retryable.
    #[error("{0}")]
    TooLarge(String),
    /// 415; HTTP only.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An encoding we do not speak: 400 on HTTP, UNIMPLEMENTED on gRPC.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// Missing or unusable tenant: 401 / UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A per-tenant limit: 429 / RESOURCE_EXHAUSTED with a retry hint.
    #[error("{message}")]
    Limited { message: String, retry_after_secs: u64 },
    /// Not ready, shutting down, or the WAL cannot write: 503 / UNAVAILABLE with a retry hint.
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    #[error("internal error: {0}")]
    Internal(String),
    /// An OTLP client could not reach or understand its server.
    #[error("transport error: {0}")]
    Transport(String),
    /// The server cannot start (port taken, data dir locked or unreadable).
    #[error("{0}")]
    Startup(String),
}

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl Error {
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::UnsupportedEncoding(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable { .. } | Error::Transport(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Internal(_) | Error::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> i32 {
        match self {
            Error::BadRequest(_) | Error::UnsupportedMediaType(_) => code::INVALID_ARGUMENT,
            Error::TooLarge(_) | Error::Limited { .. } => code::RESOURCE_EXHAUSTED,
            Error::UnsupportedEncoding(_) => code::UNIMPLEMENTED,
            Error::Unauthenticated(_) => code::UNAUTHENTICATED,
            Error::Unavailable { .. } | Error::Transport(_) => code::UNAVAILABLE,
            Error::NotFound => code::NOT_FOUND,
            Error::Internal(_) | Error::Startup(_) => code::INTERNAL,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::TooLarge(_) => "too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::UnsupportedEncoding(_) => "unsupported_encoding",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Limited { .. } => "limited",
            Error::Unavailable { .. } => "unavailable",
            Error::Transport(_) => "transport",
            Error::NotFound => "not_found",
            Error::Internal(_) | Error::Startup(_) => "internal",
        }
    }

    /// The delay a client should wait before retrying, when retrying makes sense.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Limited { retry_after_secs, .. } | Error::Unavailable { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }
}
