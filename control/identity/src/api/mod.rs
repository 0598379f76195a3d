//! Keystone v3 over HTTP, one module per resource. Handlers parse the
//! request, check policy against the caller, and then read the model or
//! commit a change through [`crate::Identity`].

mod access_rules;
mod assignments;
mod auth;
mod catalog;
mod credentials;
mod discovery;
mod domains;
mod endpoint_filter;
mod groups;
pub mod limits;
mod projects;
mod roles;
mod users;

use crate::AppState;
use axum::Router;
use serde_json::{Map, Value};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(discovery::routes())
        .merge(auth::routes())
        .merge(domains::routes())
        .merge(projects::routes())
        .merge(users::routes())
        .merge(groups::routes())
        .merge(roles::routes())
        .merge(assignments::routes())
        .merge(catalog::routes())
        .merge(endpoint_filter::routes())
        .merge(credentials::routes())
        .merge(limits::routes())
}

pub type Query = axum::extract::Query<HashMap<String, String>>;

pub fn self_link(state: &AppState, path: &str) -> Value {
    serde_json::json!({"self": format!("{}/{}", state.v3(), path)})
}

pub fn collection_links(state: &AppState, path: &str) -> Value {
    serde_json::json!({"self": format!("{}/{}", state.v3(), path), "previous": null, "next": null})
}

/// A name as Keystone accepts it: non-empty after trimming, at most `max`
/// characters.
pub fn check_name(
    v: Option<&Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Error::BadRequest(format!(
            "'{field}' is a required property."
        ))),
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                Err(Error::BadRequest(format!("'{field}' must not be empty.")))
            } else if s.chars().count() > max {
                Err(Error::BadRequest(format!(
                    "'{field}' is longer than {max} characters."
                )))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(Error::BadRequest(format!("'{field}' must be a string."))),
    }
}

pub fn opt_str(v: Option<&Value>, field: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::BadRequest(format!(
            "'{field}' must be a string or null."
        ))),
    }
}

pub fn opt_bool(v: Option<&Value>, field: &str) -> Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::BadRequest(format!("'{field}' must be a boolean."))),
    }
}

/// The object under `key` of a request body (`{"user": {...}}`).
pub fn member(body: Value, key: &str) -> Result<Map<String, Value>> {
    match body {
        Value::Object(mut o) => match o.remove(key) {
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(Error::BadRequest(format!("'{key}' must be an object."))),
            None => Err(Error::BadRequest(format!(
                "'{key}' is a required property."
            ))),
        },
        _ => Err(Error::BadRequest(
            "The request body must be a JSON object.".into(),
        )),
    }
}

/// Query-string truth as Keystone reads it.
pub fn query_bool(v: &str) -> bool {
    !matches!(
        v.to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off" | ""
    )
}

/// Moves the keys not in `known` into an "extra" map.
pub fn take_extra(m: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()) && *k != "links" && *k != "id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn merge_extra(mut v: Value, extra: &Map<String, Value>) -> Value {
    if let Value::Object(o) = &mut v {
        for (k, x) in extra {
            o.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v
}
