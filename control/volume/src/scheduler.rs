//! Where a new volume goes: Cinder's capabilities filter over what a
//! blockd node offers, then the node with the most free pool space.
//!
//! A volume type's extra specs that name a capability (unscoped, or with
//! the `capabilities:` scope) must match the node's: plain values by
//! equality, and Cinder's operators `<is>`, `<in>`, `<or>`, `s==`, `==`,
//! `>=`, `<=`. Specs of other scopes (`qos:`, `multiattach` aside) and keys
//! that are no capability of blockd's are not scheduling constraints.

use serde_json::{Map, Value};

/// What every blockd node reports (also in `scheduler-stats/get_pools`).
pub const CAPABILITIES: &[(&str, &str)] = &[
    ("volume_backend_name", "blockd"),
    ("storage_protocol", "nbd"),
    ("vendor_name", "Open Source"),
    ("driver_version", "0.1"),
    ("thin_provisioning_support", "True"),
    ("thick_provisioning_support", "False"),
    ("QoS_support", "True"),
    ("multiattach", "False"),
];

/// Whether one spec value accepts the capability `cap`.
fn accepts(spec: &str, cap: &str) -> bool {
    let spec = spec.trim();
    let num = |s: &str| s.trim().parse::<f64>().ok();
    if let Some(rest) = spec.strip_prefix("<is>") {
        return rest.trim().eq_ignore_ascii_case(cap);
    }
    if let Some(rest) = spec.strip_prefix("<in>") {
        return cap.contains(rest.trim());
    }
    if spec.starts_with("<or>") {
        return spec
            .split("<or>")
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .any(|x| x == cap);
    }
    if let Some(rest) = spec.strip_prefix("s==") {
        return rest.trim() == cap;
    }
    if let Some(rest) = spec.strip_prefix(">=") {
        return matches!((num(cap), num(rest)), (Some(c), Some(r)) if c >= r);
    }
    if let Some(rest) = spec.strip_prefix("<=") {
        return matches!((num(cap), num(rest)), (Some(c), Some(r)) if c <= r);
    }
    if let Some(rest) = spec.strip_prefix("==") {
        return matches!((num(cap), num(rest)), (Some(c), Some(r)) if c == r);
    }
    spec == cap
}

/// The first of a type's extra specs a blockd node does not meet, if any.
pub fn unmet(specs: &Map<String, Value>) -> Option<String> {
    for (k, v) in specs {
        let key = k.strip_prefix("capabilities:").unwrap_or(k);
        if key.contains(':') {
            continue;
        }
        let Some((_, cap)) = CAPABILITIES.iter().find(|(c, _)| *c == key) else {
            continue;
        };
        let want = v.as_str().unwrap_or_default();
        if !accepts(want, cap) {
            return Some(format!("{k}={want} (blockd offers {cap})"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_match_blockd_capabilities() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            unmet(&m(
                json!({"storage_protocol": "nbd", "vendor_name": "Open Source"})
            )),
            None
        );
        assert!(unmet(&m(json!({"storage_protocol": "iSCSI"}))).is_some());
        assert_eq!(
            unmet(&m(
                json!({"capabilities:volume_backend_name": "<or> lvm <or> blockd"})
            )),
            None
        );
        assert_eq!(
            unmet(&m(json!({"thin_provisioning_support": "<is> True"}))),
            None
        );
        assert!(unmet(&m(json!({"multiattach": "<is> True"}))).is_some());
        // Other scopes and unknown keys do not constrain placement.
        assert_eq!(
            unmet(&m(json!({"qos:read_iops_sec": "10", "spec1": "val1"}))),
            None
        );
        assert_eq!(unmet(&m(json!({"driver_version": ">= 0.05"}))), None);
    }
}
