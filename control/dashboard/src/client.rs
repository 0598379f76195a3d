//! Calls to the services' own APIs, in-process, as the logged-in user: the
//! request goes through the same routes, token check, policy and project
//! scoping as the CLI's. Answers are parsed once into the caller's typed
//! struct; a refusal becomes an [`ApiError`] with the service's status and
//! message, which the dashboard shows as Horizon does.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ursa_core::http::InProcess;

/// The compute microversion the dashboard speaks (flavor names inline in
/// servers, `locked` shown).
pub const COMPUTE_VERSION: &str = "compute 2.79";
/// Largest answer the dashboard reads (a page of a listing).
const MAX_BODY: usize = 32 << 20;

/// A service refused or failed: its status and its own message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (HTTP {status})")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, body: &[u8]) -> ApiError {
        ApiError {
            status,
            message: message_of(body).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("the service failed")
                    .into()
            }),
        }
    }
}

/// The message in an OpenStack error body, whatever its service's shape
/// (`{"itemNotFound": {"message"}}`, `{"NeutronError": {"message"}}`,
/// `{"error": {"message"}}`, or plain text).
fn message_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Inner {
        message: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    if let Ok(m) = serde_json::from_slice::<std::collections::BTreeMap<String, Inner>>(body) {
        if let Some(msg) = m.into_values().find_map(|i| i.message.or(i.detail)) {
            return Some(msg);
        }
    }
    if let Ok(i) = serde_json::from_slice::<Inner>(body) {
        if let Some(m) = i.message.or(i.detail) {
            return Some(m);
        }
    }
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    (!t.is_empty() && t.len() < 2000 && !t.starts_with('<')).then(|| t.to_string())
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// One user's view of the APIs.
#[derive(Clone)]
pub struct Api {
    app: InProcess,
    token: String,
}

/// A whole answer: status, headers and body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: axum::body::Bytes,
}

impl Api {
    pub fn new(app: InProcess, token: &str) -> Api {
        Api {
            app,
            token: token.to_string(),
        }
    }

    /// Sends a request with this user's token (unless `token` is empty)
    /// and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> ApiResult<Answer> {
        let mut req = Request::builder().method(method).uri(path);
        if !self.token.is_empty() {
            req = req.header("x-auth-token", &self.token);
        }
        if path.starts_with("/compute/") {
            req = req.header("openstack-api-version", COMPUTE_VERSION);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("bad request: {e}"),
        })?;
        let resp = self.app.call(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError {
                status: StatusCode::BAD_GATEWAY,
                message: format!("reading the answer: {e}"),
            })?;
        if !status.is_success() {
            return Err(ApiError::new(status, &body));
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A request whose answer's body is handed on as it streams
    /// (downloads); a refusal is an [`ApiError`] as with [`Api::send`].
    pub async fn stream(&self, method: Method, path: &str) -> ApiResult<axum::response::Response> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-auth-token", &self.token)
            .body(Body::empty())
            .map_err(|e| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("bad request: {e}"),
            })?;
        let resp = self.app.call(req).await;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Err(ApiError::new(status, &body))
    }

    /// A JSON request (or none) and a JSON answer parsed into `T`.
    pub async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ApiResult<T> {
        let a = self.send_json(method, path, body).await?;
        let bytes: &[u8] = if a.body.is_empty() { b"null" } else { &a.body };
        serde_json::from_slice(bytes).map_err(|e| ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("unexpected answer from {path}: {e}"),
        })
    }

    /// A JSON request whose answer's body does not matter.
    pub async fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ApiResult<Answer> {
        match body {
            Some(b) => {
                let text = serde_json::to_vec(b).map_err(|e| ApiError {
                    status: StatusCode::BAD_REQUEST,
                    message: e.to_string(),
                })?;
                self.send(
                    method,
                    path,
                    &[("content-type", "application/json")],
                    Body::from(text),
                )
                .await
            }
            None => self.send(method, path, &[], Body::empty()).await,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        self.json::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, b: &B) -> ApiResult<T> {
        self.json(Method::POST, path, Some(b)).await
    }

    /// A POST whose answer is not read (server actions answer 202 empty).
    pub async fn act<B: Serialize>(&self, path: &str, b: &B) -> ApiResult<()> {
        self.send_json(Method::POST, path, Some(b)).await.map(drop)
    }

    pub async fn put<B: Serialize>(&self, path: &str, b: &B) -> ApiResult<()> {
        self.send_json(Method::PUT, path, Some(b)).await.map(drop)
    }

    pub async fn delete(&self, path: &str) -> ApiResult<()> {
        self.send_json::<()>(Method::DELETE, path, None)
            .await
            .map(drop)
    }
}

/// Percent-encodes one query or path value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_every_error_shape() {
        let m = |b: &str| message_of(b.as_bytes());
        assert_eq!(
            m(r#"{"itemNotFound": {"message": "Instance x could not be found.", "code": 404}}"#)
                .as_deref(),
            Some("Instance x could not be found.")
        );
        assert_eq!(
            m(r#"{"NeutronError": {"type": "T", "message": "Quota exceeded", "detail": ""}}"#)
                .as_deref(),
            Some("Quota exceeded")
        );
        assert_eq!(
            m(r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#).as_deref(),
            Some("The request you have made requires authentication.")
        );
        assert_eq!(m("plain words").as_deref(), Some("plain words"));
        assert_eq!(m("<html>…</html>"), None);
    }
}
