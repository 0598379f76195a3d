//! netd's error type, and the one place it becomes a gRPC status.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The desired-state file could not be read or written.
    #[error("state: {0}")]
    State(String),
    /// The kernel refused a netlink request.
    #[error("netlink: {0}")]
    Netlink(String),
    /// nft refused a transaction (nothing of it was applied).
    #[error("nftables: {0}")]
    Nft(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<rtnetlink::Error> for Error {
    fn from(e: rtnetlink::Error) -> Self {
        Error::Netlink(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::State(_) | Error::Netlink(_) | Error::Nft(_) | Error::Io { .. } => {
                tonic::Status::internal(msg)
            }
        }
    }
}
