//! Swift's constraints (`/info`'s `swift` section) and the checks of names
//! and metadata they imply.

use axum::http::HeaderMap;
use serde_json::{json, Value};

pub const MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024 + 2;
pub const MAX_META_NAME_LENGTH: usize = 128;
pub const MAX_META_VALUE_LENGTH: usize = 256;
pub const MAX_META_COUNT: usize = 90;
pub const MAX_META_OVERALL_SIZE: usize = 4096;
pub const MAX_HEADER_SIZE: usize = 8192;
pub const MAX_OBJECT_NAME_LENGTH: usize = 1024;
pub const CONTAINER_LISTING_LIMIT: usize = 10_000;
pub const ACCOUNT_LISTING_LIMIT: usize = 10_000;
pub const MAX_ACCOUNT_NAME_LENGTH: usize = 256;
pub const MAX_CONTAINER_NAME_LENGTH: usize = 256;

/// The `swift` section of `/info`.
pub fn info() -> Value {
    json!({
        "version": "2.38.0",
        "max_file_size": MAX_FILE_SIZE,
        "max_meta_name_length": MAX_META_NAME_LENGTH,
        "max_meta_value_length": MAX_META_VALUE_LENGTH,
        "max_meta_count": MAX_META_COUNT,
        "max_meta_overall_size": MAX_META_OVERALL_SIZE,
        "max_header_size": MAX_HEADER_SIZE,
        "max_object_name_length": MAX_OBJECT_NAME_LENGTH,
        "container_listing_limit": CONTAINER_LISTING_LIMIT,
        "account_listing_limit": ACCOUNT_LISTING_LIMIT,
        "max_account_name_length": MAX_ACCOUNT_NAME_LENGTH,
        "max_container_name_length": MAX_CONTAINER_NAME_LENGTH,
        "extra_header_count": 0,
        "valid_api_versions": ["v1", "v1.0"],
        "policies": [{"name": "Policy-0", "default": true, "aliases": "Policy-0"}],
        "strict_cors_mode": true,
        "allow_account_management": false,
        "account_autocreate": true,
    })
}

/// Checks the metadata headers with `prefix` (`x-container-meta-`, …)
/// against the limits, as Swift's `check_metadata` does; the message is a
/// 400's body.
pub fn check_metadata(headers: &HeaderMap, prefix: &str) -> Result<(), String> {
    let mut count = 0;
    let mut size = 0;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(prefix) else {
            continue;
        };
        let value = value.as_bytes();
        if key.is_empty() {
            return Err("Metadata name cannot be empty".into());
        }
        count += 1;
        size += key.len() + value.len();
        if key.len() > MAX_META_NAME_LENGTH {
            return Err(format!(
                "Metadata name too long: {}{}",
                prefix,
                &key[..key.len().min(64)]
            ));
        }
        if value.len() > MAX_META_VALUE_LENGTH {
            return Err(format!(
                "Metadata value longer than {MAX_META_VALUE_LENGTH}: {prefix}{key}"
            ));
        }
        if count > MAX_META_COUNT {
            return Err(format!("Too many metadata items; max {MAX_META_COUNT}"));
        }
        if size > MAX_META_OVERALL_SIZE {
            return Err(format!(
                "Total metadata too large; max {MAX_META_OVERALL_SIZE}"
            ));
        }
    }
    Ok(())
}

/// The stored and the new metadata together stay within the overall limits
/// (a POST adds to what is there).
pub fn check_merged<'a>(
    items: impl Iterator<Item = (&'a String, &'a String)>,
    prefix: &str,
) -> Result<(), String> {
    let mut count = 0;
    let mut size = 0;
    for (k, v) in items {
        if let Some(key) = k.strip_prefix(prefix) {
            count += 1;
            size += key.len() + v.len();
        }
    }
    if count > MAX_META_COUNT {
        return Err(format!("Too many metadata items; max {MAX_META_COUNT}"));
    }
    if size > MAX_META_OVERALL_SIZE {
        return Err(format!(
            "Total metadata too large; max {MAX_META_OVERALL_SIZE}"
        ));
    }
    Ok(())
}
