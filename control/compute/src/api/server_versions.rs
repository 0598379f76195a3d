//! What the microversions above 2.1 add to a server's representation, in
//! one place: each field appears from the version Nova's history gives
//! it, and never below (Tempest's schemas forbid unknown fields).

use super::*;

/// Where a server's view is shown: Nova shows some fields on a single
/// server (show, update, rebuild) that listings leave out (2.71's
/// `server_groups`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    List,
    One,
}

/// The flavor a server was booted with, as 2.47 embeds it: kept in the
/// record at create (`ursa:flavor`), the current flavor for older records.
pub(crate) fn embedded_flavor(s: &Compute, r: &Rec) -> Value {
    let f = match r.get("ursa:flavor") {
        Some(Value::Object(f)) => f.clone(),
        _ => s.doc(FLAVOR, st(r, "ursa:flavor_id")).unwrap_or_default(),
    };
    flavor_snapshot(&f)
}

/// A flavor record as a server embeds it.
pub(crate) fn flavor_snapshot(f: &Rec) -> Value {
    let num = |k: &str| f.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    json!({
        "vcpus": num("vcpus"), "ram": num("ram"), "disk": num("disk"),
        "ephemeral": f.get("OS-FLV-EXT-DATA:ephemeral").and_then(|v| v.as_u64())
            .or_else(|| f.get("ephemeral").and_then(|v| v.as_u64())).unwrap_or(0),
        "swap": num("swap"),
        "original_name": f.get("original_name").or_else(|| f.get("name")).cloned().unwrap_or(json!("")),
        "extra_specs": f.get("extra_specs").cloned().unwrap_or(json!({})),
    })
}

/// The guest's host name: the one given at create or update (2.90), else
/// the server's name made DNS-safe.
pub(crate) fn hostname(r: &Rec) -> String {
    match r.get("hostname").and_then(|v| v.as_str()) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => crate::metadata::hostname(r),
    }
}

/// Adds to a detailed view `v` of server `r` what version `mv` shows.
pub(crate) fn add_versioned(
    v: &mut Value,
    s: &Compute,
    auth: &Auth,
    r: &Rec,
    mv: Mv,
    shown: Shown,
) {
    let Some(o) = v.as_object_mut() else { return };
    let admin = auth.0.is_admin();
    if mv.at(3) && admin {
        o.insert(
            "OS-EXT-SRV-ATTR:reservation_id".into(),
            r.get("reservation_id").cloned().unwrap_or(Value::Null),
        );
        o.insert(
            "OS-EXT-SRV-ATTR:launch_index".into(),
            r.get("ursa:launch_index").cloned().unwrap_or(json!(0)),
        );
        o.insert("OS-EXT-SRV-ATTR:kernel_id".into(), json!(""));
        o.insert("OS-EXT-SRV-ATTR:ramdisk_id".into(), json!(""));
        o.insert("OS-EXT-SRV-ATTR:root_device_name".into(), json!("/dev/vda"));
        o.insert(
            "OS-EXT-SRV-ATTR:user_data".into(),
            r.get("ursa:user_data").cloned().unwrap_or(Value::Null),
        );
    }
    if (mv.at(3) && admin) || mv.at(90) {
        o.insert("OS-EXT-SRV-ATTR:hostname".into(), json!(hostname(r)));
    }
    if mv.at(9) {
        o.insert(
            "locked".into(),
            json!(r.get("locked") == Some(&json!(true))),
        );
    }
    if mv.at(16) && admin {
        let up = s.node(st(r, "ursa:node")).is_some();
        o.insert(
            "host_status".into(),
            json!(if up { "UP" } else { "UNKNOWN" }),
        );
    }
    if mv.at(19) {
        o.insert(
            "description".into(),
            r.get("description").cloned().unwrap_or(Value::Null),
        );
    }
    if mv.at(26) {
        o.insert("tags".into(), r.get("tags").cloned().unwrap_or(json!([])));
    }
    if mv.at(47) {
        o.insert("flavor".into(), embedded_flavor(s, r));
    }
    if mv.at(63) {
        o.insert("trusted_image_certificates".into(), Value::Null);
    }
    if mv.at(71) && shown == Shown::One {
        let groups: Vec<&str> = r
            .get("ursa:group")
            .and_then(|g| g.as_str())
            .into_iter()
            .collect();
        o.insert("server_groups".into(), json!(groups));
    }
    if mv.at(73) {
        o.insert(
            "locked_reason".into(),
            r.get("locked_reason").cloned().unwrap_or(Value::Null),
        );
    }
    if mv.at(96) {
        o.insert(
            "pinned_availability_zone".into(),
            r.get("ursa:availability_zone")
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    if mv.at(100) {
        o.insert(
            "scheduler_hints".into(),
            r.get("ursa:scheduler_hints").cloned().unwrap_or(json!({})),
        );
    }
}

/// The attributes an update or a rebuild answers with: below 2.75 the
/// core ones (and what later versions add to every view); from 2.75 the
/// whole view, as GET shows it.
pub(crate) fn update_view(mut v: Value, mv: Mv) -> Value {
    if mv.at(75) {
        // Nova leaves the user data out of these two answers.
        if let Some(o) = v.as_object_mut() {
            o.remove("OS-EXT-SRV-ATTR:user_data");
        }
        return v;
    }
    if let Some(o) = v.as_object_mut() {
        const CORE: &[&str] = &[
            "OS-DCF:diskConfig",
            "accessIPv4",
            "accessIPv6",
            "addresses",
            "created",
            "fault",
            "flavor",
            "hostId",
            "id",
            "image",
            "links",
            "metadata",
            "name",
            "progress",
            "status",
            "tenant_id",
            "updated",
            "user_id",
            // Added to every view by 2.9, 2.19, 2.26, 2.63, 2.71, 2.73.
            "locked",
            "description",
            "tags",
            "trusted_image_certificates",
            "server_groups",
            "locked_reason",
        ];
        o.retain(|k, _| CORE.contains(&k.as_str()));
    }
    v
}

/// A server description (2.19): at most 255 characters, or null.
pub(crate) fn description(b: &Rec, mv: Mv) -> Result<Option<Value>> {
    match b.get("description") {
        None => Ok(None),
        Some(_) if !mv.at(19) => Err(unexpected("description")),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(d)) if d.chars().count() <= 255 && !d.chars().any(char::is_control) => {
            Ok(Some(json!(d)))
        }
        Some(_) => Err(Error::BadRequest(
            "Invalid input for field/attribute description.".into(),
        )),
    }
}

/// A host name given at create, update or rebuild (2.90).
pub(crate) fn hostname_field(b: &Rec, mv: Mv) -> Result<Option<String>> {
    match b.get("hostname") {
        None => Ok(None),
        Some(_) if !mv.at(90) => Err(unexpected("hostname")),
        Some(Value::String(h))
            if !h.is_empty()
                && h.len() <= 255
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                })
                && (mv.at(94) || !h.contains('.')) =>
        {
            Ok(Some(h.to_string()))
        }
        Some(_) => Err(Error::BadRequest(
            "Invalid input for field/attribute hostname.".into(),
        )),
    }
}

/// The 400 Nova's schema check gives a field its version does not know.
/// 2.102: GETs whose query schema was open (a server, its addresses,
/// the extensions) refuse query parameters they do not define.
pub(crate) fn strict_query(mv: Mv, raw: &Option<String>) -> Result<()> {
    match raw.as_deref().filter(|q| !q.is_empty()) {
        Some(q) if mv.at(102) => {
            let name = q
                .split('&')
                .next()
                .unwrap_or(q)
                .split('=')
                .next()
                .unwrap_or(q);
            Err(Error::BadRequest(format!(
                "Invalid input for query parameters {name}. Value: Additional properties are not allowed ('{name}' was unexpected)"
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn unexpected(field: &str) -> Error {
    Error::BadRequest(format!(
        "Invalid input for field/attribute server. Value: Additional properties are not allowed ('{field}' was unexpected)"
    ))
}
