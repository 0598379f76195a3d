//! The control plane's one error type, and the one place where it becomes an
//! OpenStack error body: `{"error": {"code", "title", "message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A failure that is ours, not the client's; the message is logged only.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn not_found(what: &str, id: &str) -> Error {
        Error::NotFound(format!("Could not find {what}: {id}."))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Store(crate::store::StoreError::Conflict(_)) => StatusCode::CONFLICT,
            // The database is out of reach (not a fault of this request).
            Error::Store(crate::store::StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            )) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // Details go to the log, not to the client.
            tracing::error!(error = %self, "request failed");
            "An unexpected error prevented the server from fulfilling your request.".to_string()
        } else {
            self.to_string()
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = serde_json::json!({
            "error": {"code": status.as_u16(), "title": title, "message": message}
        });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Keystone uri=\"/v3\""),
            );
        }
        resp
    }
}
