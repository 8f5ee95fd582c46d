//! The crate's one error enum.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A configuration that cannot work; `at` names the offending key
    /// (`tail_sampling.policies[2].status_code.status_codes`).
    #[error("{at}: {message}")]
    Config { at: String, message: String },
}

impl Error {
    pub fn config(at: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config { at: at.into(), message: message.into() }
    }
}
