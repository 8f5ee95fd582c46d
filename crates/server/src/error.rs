//! The server's errors: one type for every refusal a client hears ([`Error`]: a [`Kind`], a
//! message, an optional source and an optional retry hint), the one place that maps a kind to
//! an HTTP status and a gRPC code, and a separate [`StartupError`] for what stops a process
//! from starting (it never reaches a client, so it has no status).

use axum::http::StatusCode;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, as far as a client is concerned: it decides the status code, whether a
/// retry can help, and the label on `spoor_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Malformed input: 400 / INVALID_ARGUMENT.
    BadRequest,
    /// A media type we do not accept: 415 (gRPC: INVALID_ARGUMENT).
    UnsupportedMediaType,
    /// An encoding or gRPC method this server does not speak: 400 / UNIMPLEMENTED.
    Unsupported,
    /// Missing or unusable credentials or tenant: 401 / UNAUTHENTICATED.
    Unauthenticated,
    /// Known caller, not allowed: 403 / PERMISSION_DENIED.
    Forbidden,
    /// 404 / NOT_FOUND.
    NotFound,
    /// A body or message over the configured size: 413 / RESOURCE_EXHAUSTED, not retryable.
    TooLarge,
    /// A per-tenant limit: 429 / RESOURCE_EXHAUSTED, with a retry hint.
    RateLimited,
    /// Not ready, shutting down, overloaded, a WAL that cannot write, or a peer out of reach:
    /// 503 / UNAVAILABLE, with a retry hint when one helps.
    Unavailable,
    /// A bug or a broken store: 500 / INTERNAL.
    Internal,
}

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl Kind {
    pub fn http_status(self) -> StatusCode {
        match self {
            Kind::BadRequest | Kind::Unsupported => StatusCode::BAD_REQUEST,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> i32 {
        match self {
            Kind::BadRequest | Kind::UnsupportedMediaType => code::INVALID_ARGUMENT,
            Kind::Unsupported => code::UNIMPLEMENTED,
            Kind::Unauthenticated => code::UNAUTHENTICATED,
            Kind::Forbidden => code::PERMISSION_DENIED,
            Kind::NotFound => code::NOT_FOUND,
            Kind::TooLarge | Kind::RateLimited => code::RESOURCE_EXHAUSTED,
            Kind::Unavailable => code::UNAVAILABLE,
            Kind::Internal => code::INTERNAL,
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::UnsupportedMediaType => "unsupported_media_type",
            Kind::Unsupported => "unsupported_encoding",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::TooLarge => "too_large",
            Kind::RateLimited => "limited",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }
}

/// A refusal or failure to report to a client.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Source>,
    retry_after_secs: Option<u64>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Internal => write!(f, "internal error: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None, retry_after_secs: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(Kind::BadRequest, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Error {
        Error::new(Kind::UnsupportedMediaType, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(Kind::Unsupported, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::new(Kind::Unauthenticated, message)
    }

    /// A known caller without the right to do this.
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(Kind::Forbidden, message)
    }

    pub fn not_found() -> Error {
        Error::new(Kind::NotFound, "not found")
    }

    pub fn too_large(message: impl Into<String>) -> Error {
        Error::new(Kind::TooLarge, message)
    }

    /// A limit the client should back off from for `retry_after_secs`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Error {
        Error::new(Kind::RateLimited, message).retry_after(retry_after_secs)
    }

    /// Unavailable for now; worth retrying after `retry_after_secs`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Error {
        Error::new(Kind::Unavailable, message).retry_after(retry_after_secs)
    }

    /// A peer (an OTLP server, a remote_write endpoint) that could not be reached or understood.
    pub fn transport(message: impl std::fmt::Display) -> Error {
        Error::new(Kind::Unavailable, format!("transport error: {message}"))
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, message)
    }

    /// Keeps the error this one was made from, for logs that walk the chain.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Error {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn http_status(&self) -> StatusCode {
        self.kind.http_status()
    }

    pub fn grpc_code(&self) -> i32 {
        self.kind.grpc_code()
    }

    /// The delay a client should wait before retrying, when retrying makes sense.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
}

/// Why a process could not start: a port taken, a data dir locked or unreadable, a
/// configuration its components refuse. Printed once, then the process exits non-zero.
#[derive(Debug)]
pub struct StartupError {
    message: String,
    source: Option<Source>,
}

impl StartupError {
    pub fn new(message: impl Into<String>) -> StartupError {
        StartupError { message: message.into(), source: None }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> StartupError {
        self.source = Some(Box::new(source));
        self
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_http_and_grpc() {
        let e = Error::rate_limited("tenant over its rate", 5);
        assert_eq!((e.http_status(), e.grpc_code(), e.retry_after_secs()), (StatusCode::TOO_MANY_REQUESTS, 8, Some(5)));
        assert_eq!(Error::unsupported("zip").grpc_code(), code::UNIMPLEMENTED);
        assert_eq!(Error::unsupported("zip").http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(Error::internal("x").to_string(), "internal error: x");
        assert_eq!(Error::not_found().http_status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn keeps_its_source() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::unavailable("cannot make spans durable", 1).with_source(io);
        assert_eq!(std::error::Error::source(&e).map(|s| s.to_string()).as_deref(), Some("disk on fire"));
    }
}
