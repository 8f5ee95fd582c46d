/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("block: {0}")]
    Block(#[from] spoor_block::Error),
    #[error("I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("block {path}: bad meta.json: {source}")]
    BadMeta { path: String, source: serde_json::Error },
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}
