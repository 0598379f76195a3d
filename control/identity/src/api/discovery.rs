//! Version discovery: `GET /` (300 Multiple Choices, as Keystone answers;
//! a browser is sent to the dashboard) and `GET /v3`.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(v3))
        .route("/v3/", get(v3))
}

fn version(state: &AppState) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/", state.v3())}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

/// A browser (asking for HTML, not JSON) is sent to the dashboard.
async fn versions(State(state): State<AppState>, headers: HeaderMap) -> axum::response::Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/html") && !accept.contains("json") {
        return axum::response::Redirect::to("/dashboard/").into_response();
    }
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [version(&state)]}})),
    )
        .into_response()
}

async fn v3(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"version": version(&state)}))
}
