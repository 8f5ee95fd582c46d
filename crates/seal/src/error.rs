//! The crate's one error type: what went wrong (a [`Kind`]), where, and the I/O error behind it.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The key file is missing, unreadable or does not hold 32 bytes.
    KeyFile,
    /// No key slot of a sealed file opens with the key given.
    WrongKey,
    /// Sealed bytes that fail authentication or framing: damage or tampering.
    Corrupt,
    /// The file is not sealed at all (plaintext where a sealed file was expected).
    NotSealed,
    Io,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    #[source]
    pub source: Option<std::io::Error>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
        Error::new(Kind::Corrupt, format!("{what}: authentication failed (damaged or tampered with)"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error { kind: Kind::Io, message: format!("{}: {source}", path.display()), source: Some(source) }
}
