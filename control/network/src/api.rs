//! Neutron v2.0 over HTTP at `/network/v2.0`: networks, subnets, ports,
//! routers (interfaces, gateway, extra routes), floating IPs, security
//! groups and rules, quotas, tags, extensions and availability zones.
//! Lists filter, sort and page as [`super::query`] describes; creates
//! accept Neutron's bulk form (`{"networks": [...]}`).

use super::query::{self, ListQuery};
use super::{
    allocate, bump, fixed_ips, ipam, public, put, rec, recs, st, standard, str_list, IfMatch,
    IpRequest, Networks, Rec, FIP, NETWORK, OWNER_DHCP, OWNER_FIP, OWNER_ROUTER_GW,
    OWNER_ROUTER_IF, PORT, QUOTA, QUOTA_DEFAULTS, ROUTER, RULE, SG, SUBNET,
};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put as put_route};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};
use ursa_core::store::Op;
use ursa_identity::model::Model;

const NETWORK_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "admin_state_up",
    "status",
    "shared",
    "router:external",
    "mtu",
    "port_security_enabled",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "availability_zone_hints",
    "availability_zones",
    "ipv4_address_scope",
    "ipv6_address_scope",
    "dns_domain",
    "l2_adjacency",
    "subnets",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const SUBNET_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "segment_id",
    "service_types",
    "dns_publish_fixed_ip",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const PORT_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "network_id",
    "mac_address",
    "admin_state_up",
    "status",
    "device_id",
    "device_owner",
    "fixed_ips",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "security_groups",
    "port_security_enabled",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "binding:vif_type",
    "binding:vif_details",
    "ip_allocation",
    "propagate_uplink_status",
    "dns_name",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const ROUTER_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "admin_state_up",
    "status",
    "external_gateway_info",
    "routes",
    "distributed",
    "ha",
    "availability_zone_hints",
    "availability_zones",
    "flavor_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const FIP_FIELDS: &[&str] = &[
    "id",
    "description",
    "tenant_id",
    "project_id",
    "floating_network_id",
    "floating_ip_address",
    "fixed_ip_address",
    "port_id",
    "router_id",
    "status",
    "dns_domain",
    "dns_name",
    "port_forwardings",
    "qos_policy_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const SG_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "security_group_rules",
    "stateful",
    "shared",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const RULE_FIELDS: &[&str] = &[
    "id",
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "normalized_cidr",
    "description",
    "tenant_id",
    "project_id",
    "belongs_to_default_sg",
    "created_at",
    "updated_at",
    "revision_number",
];

/// The extensions Ursa implements, as (alias, name, description).
pub const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("agent", "agent", "The agent management extension (netd nodes)."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("extraroute-atomic", "Atomically add/remove extra routes", "Edit extra routes of a router on server side by atomically adding/removing extra routes"),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter parameters."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource."),
    ("network", "Network", "Core networks"),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("port", "Port", "Core ports"),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway."),
    ("router_availability_zone", "Router Availability Zone", "Availability zone support for router."),
    ("security-group", "security-group", "The security groups extension."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip", "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group is stateful or not"),
    ("subnet", "Subnet", "Core subnets"),
];

const COLLECTIONS: &[(&str, &str)] = &[
    ("network", "networks"),
    ("subnet", "subnets"),
    ("port", "ports"),
    ("router", "routers"),
    ("floatingip", "floatingips"),
    ("security_group", "security-groups"),
    ("security_group_rule", "security-group-rules"),
    ("quota", "quotas"),
];

pub fn routes() -> Router<AppState> {
    let v2 = Router::new()
        .route("/", get(resources))
        .route("/extensions", get(list_extensions))
        .route("/extensions/{alias}", get(show_extension))
        .route("/networks", get(list_networks).post(create_networks))
        .route(
            "/networks/{id}",
            get(show_network).put(update_network).delete(delete_network),
        )
        .route("/subnets", get(list_subnets).post(create_subnets))
        .route(
            "/subnets/{id}",
            get(show_subnet).put(update_subnet).delete(delete_subnet),
        )
        .route("/ports", get(list_ports).post(create_ports))
        .route(
            "/ports/{id}",
            get(show_port).put(update_port).delete(delete_port),
        )
        .route("/routers", get(list_routers).post(create_router))
        .route(
            "/routers/{id}",
            get(show_router).put(update_router).delete(delete_router),
        )
        .route(
            "/routers/{id}/add_router_interface",
            put_route(add_interface),
        )
        .route(
            "/routers/{id}/remove_router_interface",
            put_route(remove_interface),
        )
        .route("/routers/{id}/add_extraroutes", put_route(add_extraroutes))
        .route(
            "/routers/{id}/remove_extraroutes",
            put_route(remove_extraroutes),
        )
        .route("/floatingips", get(list_fips).post(create_fip))
        .route(
            "/floatingips/{id}",
            get(show_fip).put(update_fip).delete(delete_fip),
        )
        .route("/security-groups", get(list_sgs).post(create_sg))
        .route(
            "/security-groups/{id}",
            get(show_sg).put(update_sg).delete(delete_sg),
        )
        .route("/security-group-rules", get(list_rules).post(create_rule))
        .route(
            "/security-group-rules/{id}",
            get(show_rule).delete(delete_rule),
        )
        .route("/quotas", get(list_quotas))
        .route(
            "/quotas/{project}",
            get(show_quota).put(update_quota).delete(delete_quota),
        )
        .route("/quotas/{project}/default", get(default_quota))
        .route("/quotas/{project}/details", get(quota_details))
        .route("/availability_zones", get(zones))
        .route("/agents", get(agents))
        .route(
            "/{collection}/{id}/tags",
            get(get_tags).put(set_tags).delete(clear_tags),
        )
        .route(
            "/{collection}/{id}/tags/{tag}",
            get(has_tag).put(add_tag).delete(remove_tag),
        );
    Router::new()
        .route("/network", get(versions))
        .route("/network/v2.0/", get(resources))
        .route("/network/", get(versions))
        .nest("/network/v2.0", v2)
}

fn version_doc(app: &AppState) -> Value {
    json!({"id": "v2.0", "status": "CURRENT",
           "links": [{"rel": "self", "href": format!("{}/network/v2.0/", app.base_url)}]})
}

async fn versions(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [version_doc(&app)]}))
}

async fn resources(State(app): State<AppState>) -> Json<Value> {
    let r: Vec<Value> = COLLECTIONS
        .iter()
        .map(|(n, c)| {
            json!({"name": n, "collection": c,
                   "links": [{"rel": "self", "href": format!("{}/network/v2.0/{c}", app.base_url)}]})
        })
        .collect();
    Json(json!({"resources": r}))
}

fn ext_doc(a: &(&str, &str, &str)) -> Value {
    json!({"alias": a.0, "name": a.1, "description": a.2, "updated": "2013-01-01T00:00:00-00:00", "links": []})
}

async fn list_extensions(_auth: Auth) -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().map(ext_doc).collect::<Vec<_>>()}))
}

async fn show_extension(_auth: Auth, Path(alias): Path<String>) -> Result<Json<Value>> {
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| Json(json!({"extension": ext_doc(e)})))
        .ok_or_else(|| Error::NotFound(format!("Extension with alias {alias} does not exist")))
}

// ---------------------------------------------------------------------
// Shared helpers: policy, body parsing, lookups.

fn svc(app: &AppState) -> &Networks {
    &app.networks
}

fn url(app: &AppState, coll: &str) -> String {
    format!("{}/network/v2.0/{coll}", app.base_url)
}

fn is_admin(auth: &Auth) -> bool {
    auth.0.is_admin()
}

fn project(auth: &Auth) -> &str {
    auth.0.project_id().unwrap_or("")
}

fn owns(auth: &Auth, r: &Rec) -> bool {
    is_admin(auth) || (!project(auth).is_empty() && st(r, "project_id") == project(auth))
}

fn write_access(auth: &Auth) -> Result<()> {
    if auth.0.has("member") || is_admin(auth) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "rule:create is disallowed by policy".into(),
        ))
    }
}

fn net_visible(auth: &Auth, n: &Rec) -> bool {
    owns(auth, n) || n["shared"] == true || n["router:external"] == true
}

fn not_found(what: &str, id: &str) -> Error {
    Error::NotFound(format!("{what} {id} could not be found."))
}

/// The object under `key` of a request body.
fn body_obj(bytes: &Bytes, key: &str) -> Result<Rec> {
    let v: Value = parse_body(bytes)?;
    match v.get(key) {
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(Error::BadRequest(format!(
            "Invalid input: '{key}' must be an object."
        ))),
        None => Err(Error::BadRequest(format!(
            "Resource body required: '{key}' is missing."
        ))),
    }
}

/// One object or Neutron's bulk list.
fn body_many(bytes: &Bytes, one: &str, many: &str) -> Result<(Vec<Rec>, bool)> {
    let v: Value = parse_body(bytes)?;
    if let Some(Value::Array(a)) = v.get(many) {
        let mut out = Vec::new();
        for x in a {
            match x {
                Value::Object(o) => out.push(o.clone()),
                _ => {
                    return Err(Error::BadRequest(format!(
                        "Invalid input: items of '{many}' must be objects."
                    )))
                }
            }
        }
        if out.is_empty() {
            return Err(Error::BadRequest(format!(
                "Resources required: '{many}' is empty."
            )));
        }
        return Ok((out, true));
    }
    body_obj(bytes, one).map(|o| (vec![o], false))
}

fn check_keys(b: &Rec, allowed: &[&str]) -> Result<()> {
    let bad: Vec<&str> = b
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "Unrecognized attribute(s) '{}'",
            bad.join(", ")
        )))
    }
}

fn opt_str(b: &Rec, k: &str) -> Result<Option<String>> {
    match b.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => {
            if s.len() > 255 {
                return Err(Error::BadRequest(format!(
                    "Invalid input for {k}. Reason: '{s}' exceeds maximum length of 255."
                )));
            }
            Ok(Some(s.clone()))
        }
        Some(Value::Null) if k == "name" || k == "description" => Ok(Some(String::new())),
        Some(Value::Null) => Ok(None),
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid input for {k}. Reason: '{v}' is not a valid string."
        ))),
    }
}

fn opt_bool(b: &Rec, k: &str) -> Result<Option<bool>> {
    match b.get(k) {
        None => Ok(None),
        Some(Value::Bool(x)) => Ok(Some(*x)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid input for {k}. Reason: '{v}' cannot be converted to boolean."
        ))),
    }
}

fn opt_int(b: &Rec, k: &str) -> Result<Option<i64>> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid input for {k}. Reason: '{v}' is not an integer."
        ))),
    }
}

/// The project a new resource belongs to: the caller's, or for an admin
/// the one named in the body.
fn owner_for(auth: &Auth, b: &Rec) -> Result<String> {
    let named = opt_str(b, "project_id")?.or(opt_str(b, "tenant_id")?);
    if let (Some(p), Some(t)) = (opt_str(b, "project_id")?, opt_str(b, "tenant_id")?) {
        if p != t {
            return Err(Error::BadRequest(
                "'project_id' and 'tenant_id' do not match".into(),
            ));
        }
    }
    match named {
        Some(p) if p != project(auth) => {
            if is_admin(auth) {
                Ok(p)
            } else {
                Err(Error::Forbidden(
                    "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges".into(),
                ))
            }
        }
        Some(p) => Ok(p),
        None => {
            let p = project(auth);
            if p.is_empty() {
                return Err(Error::BadRequest(
                    "A project-scoped token is needed to create resources.".into(),
                ));
            }
            Ok(p.to_string())
        }
    }
}

fn list_response(
    app: &AppState,
    raw: Option<String>,
    coll: &str,
    known: &[&str],
    items: Vec<Rec>,
) -> Result<Json<Value>> {
    let q = ListQuery::parse(raw.as_deref());
    Ok(Json(query::answer(
        &q,
        items,
        known,
        coll,
        &url(app, coll),
    )?))
}

fn show_fields(raw: &Option<String>, v: Rec) -> Rec {
    let q = ListQuery::parse(raw.as_deref());
    query::select(v, &q.all("fields"))
}

fn created(key: &str, v: Value) -> Response {
    (StatusCode::CREATED, Json(json!({ key: v }))).into_response()
}

// ---------------------------------------------------------------------
// Views.

fn network_view(m: &Model, auth: &Auth, n: &Rec) -> Rec {
    let mut v = public(n);
    let subnets: Vec<Value> = super::subnets_of(m, st(n, "id"))
        .iter()
        .map(|s| json!(st(s, "id")))
        .collect();
    v.insert("subnets".into(), Value::Array(subnets));
    if !is_admin(auth) {
        v.retain(|k, _| !k.starts_with("provider:"));
    }
    v
}

fn port_view(s: &Networks, auth: &Auth, p: &Rec) -> Rec {
    let mut v = public(p);
    let host = st(p, "binding:host_id");
    let owner = st(p, "device_owner");
    // Security groups its node cannot apply: the port is not bound, as
    // Neutron shows a port no agent could wire (binding_failed).
    let sg_failed = !host.is_empty()
        && p["port_security_enabled"] != false
        && !owner.starts_with("network:")
        && s.pusher.security_group_error(host).is_some();
    let router_failed = (owner == super::OWNER_ROUTER_IF || owner == super::OWNER_ROUTER_GW)
        && s.pusher.router_error(st(p, "device_id")).is_some();
    let status = if p["admin_state_up"] == false || sg_failed || router_failed {
        "DOWN"
    } else if owner.starts_with("network:")
        || (!host.is_empty() && s.pusher.node_ok(host) == Some(true))
    {
        "ACTIVE"
    } else {
        "DOWN"
    };
    v.insert("status".into(), json!(status));
    let vif = if host.is_empty() {
        "unbound"
    } else if sg_failed {
        "binding_failed"
    } else if p
        .get("binding:profile")
        .and_then(|x| x.get("ursa_netns"))
        .is_some()
    {
        "other"
    } else {
        "tap"
    };
    v.insert("binding:vif_type".into(), json!(vif));
    if !is_admin(auth) {
        for k in [
            "binding:host_id",
            "binding:profile",
            "binding:vif_type",
            "binding:vif_details",
        ] {
            v.remove(k);
        }
    }
    v
}

fn router_view(s: &Networks, m: &Model, auth: &Auth, r: &Rec) -> Rec {
    let mut v = public(r);
    // A router its node could not apply (e.g. no nftables for its NAT) is
    // in ERROR, as Neutron's L3 agent leaves it; admins see why.
    if let Some(why) = s.pusher.router_error(st(r, "id")) {
        v.insert("status".into(), json!("ERROR"));
        if is_admin(auth) {
            v.insert("ursa:fault".into(), json!(why));
        }
    }
    if let Some(Value::Object(g)) = r.get("external_gateway_info") {
        let mut g = g.clone();
        let ips: Vec<Value> = recs(m, PORT)
            .filter(|p| {
                st(p, "device_id") == st(r, "id") && st(p, "device_owner") == OWNER_ROUTER_GW
            })
            .flat_map(fixed_ips)
            .map(|(s, ip)| json!({"subnet_id": s, "ip_address": ip}))
            .collect();
        g.insert("external_fixed_ips".into(), Value::Array(ips));
        v.insert("external_gateway_info".into(), Value::Object(g));
    }
    if !is_admin(auth) {
        v.remove("distributed");
        v.remove("ha");
    }
    v
}

fn fip_view(f: &Rec) -> Rec {
    let mut v = public(f);
    let status = if st(f, "port_id").is_empty() {
        "DOWN"
    } else {
        "ACTIVE"
    };
    v.insert("status".into(), json!(status));
    v
}

fn sg_view(m: &Model, g: &Rec) -> Rec {
    let mut v = public(g);
    let rules: Vec<Value> = super::by_creation(
        recs(m, RULE)
            .filter(|r| st(r, "security_group_id") == st(g, "id"))
            .collect(),
    )
    .into_iter()
    .map(|r| Value::Object(public(r)))
    .collect();
    v.insert("security_group_rules".into(), Value::Array(rules));
    v
}

// ---------------------------------------------------------------------
// Networks.

const NETWORK_CREATE: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "mtu",
    "port_security_enabled",
    "tenant_id",
    "project_id",
    "availability_zone_hints",
    "dns_domain",
];

async fn list_networks(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, NETWORK)
            .filter(|n| net_visible(&auth, n))
            .map(|n| network_view(&m, &auth, n))
            .collect()
    };
    list_response(&app, raw, "networks", NETWORK_FIELDS, items)
}

fn find_network(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, NETWORK, id)
        .filter(|n| net_visible(auth, n))
        .ok_or_else(|| not_found("Network", id))
}

async fn show_network(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let n = find_network(&m, &auth, &id)?;
    Ok(Json(
        json!({"network": show_fields(&raw, network_view(&m, &auth, &n))}),
    ))
}

fn validate_mtu(ty: &str, mtu: i64) -> Result<()> {
    let max = if ty == "vxlan" { 1450 } else { 1500 };
    if !(68..=max).contains(&mtu) {
        return Err(Error::BadRequest(format!(
            "Invalid input for operation: Requested MTU {mtu} is not valid for a {ty} network (68 to {max})."
        )));
    }
    Ok(())
}

fn plan_network(s: &Networks, m: &Model, auth: &Auth, b: &Rec) -> Result<(Vec<Op>, Rec)> {
    check_keys(b, NETWORK_CREATE)?;
    let owner = owner_for(auth, b)?;
    for k in [
        "shared",
        "router:external",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ] {
        if b.contains_key(k) && !is_admin(auth) {
            return Err(Error::Forbidden(format!(
                "(rule:create_network and rule:create_network:{k}) is disallowed by policy"
            )));
        }
    }
    Networks::check_quota(m, &owner, "network", 1)?;
    let physnet = opt_str(b, "provider:physical_network")?;
    let seg = opt_int(b, "provider:segmentation_id")?;
    let ty = opt_str(b, "provider:network_type")?.unwrap_or_else(|| "vxlan".into());
    let (physnet, seg): (Option<String>, Option<i64>) = match ty.as_str() {
        "vxlan" => {
            if physnet.is_some() {
                return Err(Error::BadRequest(
                    "provider:physical_network specified for vxlan network".into(),
                ));
            }
            let id = match seg {
                Some(v) if (1..=16_777_215).contains(&v) => {
                    if recs(m, NETWORK).any(|n| st(n, "provider:network_type") == "vxlan" && n["provider:segmentation_id"] == v) {
                        return Err(Error::Conflict(format!(
                            "Unable to create the network. The tunnel ID {v} is in use."
                        )));
                    }
                    v
                }
                Some(v) => {
                    return Err(Error::BadRequest(format!(
                        "Invalid input for operation: VXLAN segmentation_id {v} is outside 1 to 16777215."
                    )))
                }
                None => s.allocate_segment(m, "vxlan", None)? as i64,
            };
            (None, Some(id))
        }
        "flat" => {
            let p = physnet.ok_or_else(|| {
                Error::BadRequest("provider:physical_network required for flat network".into())
            })?;
            if seg.is_some() {
                return Err(Error::BadRequest(
                    "provider:segmentation_id specified for flat network".into(),
                ));
            }
            if !s.cfg.physnets.contains(&p) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: physical_network '{p}' unknown for flat provider network."
                )));
            }
            if recs(m, NETWORK).any(|n| {
                st(n, "provider:network_type") == "flat" && st(n, "provider:physical_network") == p
            }) {
                return Err(Error::Conflict(format!(
                    "Unable to create the flat network. Physical network {p} is in use."
                )));
            }
            (Some(p), None)
        }
        "vlan" => {
            let (p, v) = match (physnet, seg) {
                (Some(p), Some(v)) => (p, v),
                (None, None) => {
                    let p = s
                        .cfg
                        .vlan_ranges
                        .first()
                        .map(|r| r.0.clone())
                        .ok_or_else(|| {
                            Error::ServiceUnavailable("No VLAN ranges are configured.".into())
                        })?;
                    let v = s.allocate_segment(m, "vlan", Some(&p))? as i64;
                    (p, v)
                }
                (Some(p), None) => {
                    let v = s.allocate_segment(m, "vlan", Some(&p))? as i64;
                    (p, v)
                }
                (None, Some(_)) => {
                    return Err(Error::BadRequest(
                        "provider:physical_network required for vlan network".into(),
                    ))
                }
            };
            if !(1..=4094).contains(&v) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: VLAN id {v} is outside 1 to 4094."
                )));
            }
            if !s.cfg.physnets.contains(&p) {
                return Err(Error::BadRequest(format!("Invalid input for operation: physical_network '{p}' unknown for VLAN provider network.")));
            }
            if recs(m, NETWORK).any(|n| {
                st(n, "provider:network_type") == "vlan"
                    && st(n, "provider:physical_network") == p
                    && n["provider:segmentation_id"] == v
            }) {
                return Err(Error::Conflict(format!(
                    "Unable to create the network. The VLAN {v} on physical network {p} is in use."
                )));
            }
            (Some(p), Some(v))
        }
        other => {
            return Err(Error::BadRequest(format!(
                "Invalid input for operation: network_type value '{other}' not supported."
            )))
        }
    };
    let mtu = match opt_int(b, "mtu")? {
        Some(v) => {
            validate_mtu(&ty, v)?;
            v
        }
        None if ty == "vxlan" => 1450,
        None => 1500,
    };
    let mut n = standard(&owner);
    n.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    n.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    n.insert(
        "admin_state_up".into(),
        json!(opt_bool(b, "admin_state_up")?.unwrap_or(true)),
    );
    n.insert("status".into(), json!("ACTIVE"));
    n.insert(
        "shared".into(),
        json!(opt_bool(b, "shared")?.unwrap_or(false)),
    );
    n.insert(
        "router:external".into(),
        json!(opt_bool(b, "router:external")?.unwrap_or(false)),
    );
    n.insert("mtu".into(), json!(mtu));
    n.insert(
        "port_security_enabled".into(),
        json!(opt_bool(b, "port_security_enabled")?.unwrap_or(true)),
    );
    n.insert("provider:network_type".into(), json!(ty));
    n.insert("provider:physical_network".into(), json!(physnet));
    n.insert("provider:segmentation_id".into(), json!(seg));
    n.insert(
        "availability_zone_hints".into(),
        b.get("availability_zone_hints")
            .cloned()
            .unwrap_or(json!([])),
    );
    n.insert("availability_zones".into(), json!(["nova"]));
    n.insert("ipv4_address_scope".into(), Value::Null);
    n.insert("ipv6_address_scope".into(), Value::Null);
    n.insert(
        "dns_domain".into(),
        json!(opt_str(b, "dns_domain")?.unwrap_or_default()),
    );
    n.insert("l2_adjacency".into(), json!(true));
    let mut ops = Networks::default_sg_ops(m, &owner);
    ops.push(put(NETWORK, &n));
    Ok((ops, n))
}

async fn create_networks(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "network", "networks")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let n = s.change(|m| plan_network(s, m, a, &b)).await?;
        let m = app.identity.model();
        out.push(Value::Object(network_view(&m, &auth, &n)));
    }
    Ok(if bulk {
        created("networks", Value::Array(out))
    } else {
        created("network", out.pop().unwrap_or(Value::Null))
    })
}

async fn update_network(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "network")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "shared",
            "router:external",
            "mtu",
            "port_security_enabled",
            "dns_domain",
        ],
    )?;
    for k in [
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ] {
        if b.contains_key(k) {
            return Err(Error::BadRequest(format!("Invalid input for operation: Plugin does not support updating provider attributes ({k}).")));
        }
    }
    let s = svc(&app);
    let a = &auth;
    let n = s
        .change(|m| {
            let mut n = find_network(m, a, &id)?;
            if_match.check(&n)?;
            if !owns(a, &n) {
                return Err(Error::Forbidden(format!("Network {id}: changing it is disallowed by policy")));
            }
            for k in ["shared", "router:external"] {
                if b.contains_key(k) && !is_admin(a) {
                    return Err(Error::Forbidden(format!("rule:update_network:{k} is disallowed by policy")));
                }
            }
            if opt_bool(&b, "router:external")? == Some(false) && n["router:external"] == true {
                let used = recs(m, PORT).any(|p| {
                    st(p, "network_id") == id && matches!(st(p, "device_owner"), OWNER_ROUTER_GW | OWNER_FIP)
                });
                if used {
                    return Err(Error::Conflict(format!(
                        "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."
                    )));
                }
            }
            for k in ["name", "description", "dns_domain"] {
                if let Some(v) = opt_str(&b, k)? {
                    n.insert(k.into(), json!(v));
                }
            }
            for k in ["admin_state_up", "shared", "router:external", "port_security_enabled"] {
                if let Some(v) = opt_bool(&b, k)? {
                    n.insert(k.into(), json!(v));
                }
            }
            if let Some(mtu) = opt_int(&b, "mtu")? {
                validate_mtu(st(&n, "provider:network_type"), mtu)?;
                n.insert("mtu".into(), json!(mtu));
            }
            bump(&mut n);
            Ok((vec![put(NETWORK, &n)], n))
        })
        .await?;
    let m = app.identity.model();
    Ok(Json(json!({"network": network_view(&m, &auth, &n)})))
}

async fn delete_network(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        let n = find_network(m, a, &id)?;
        if_match.check(&n)?;
        if !owns(a, &n) {
            return Err(Error::Forbidden(format!("Network {id}: deleting it is disallowed by policy")));
        }
        let ports = super::ports_of(m, &id);
        if ports.iter().any(|p| !matches!(st(p, "device_owner"), OWNER_DHCP | OWNER_FIP)) {
            return Err(Error::Conflict(format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            )));
        }
        let mut ops: Vec<Op> = ports.iter().map(|p| Op::delete(PORT, st(p, "id"))).collect();
        // Floating IPs of an external network go with it.
        ops.extend(
            recs(m, FIP)
                .filter(|f| st(f, "floating_network_id") == id)
                .map(|f| Op::delete(FIP, st(f, "id"))),
        );
        ops.extend(super::subnets_of(m, &id).iter().map(|x| Op::delete(SUBNET, st(x, "id"))));
        ops.push(Op::delete(NETWORK, &id));
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Subnets.

const SUBNET_CREATE: &[&str] = &[
    "name",
    "description",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "tenant_id",
    "project_id",
    "subnetpool_id",
    "segment_id",
    "service_types",
    "use_default_subnetpool",
    "prefixlen",
    "dns_publish_fixed_ip",
];

/// Subnets of shared networks are everyone's to see; those of an external
/// network only its owner's (Neutron without subnet-external-network).
fn subnet_visible(m: &Model, auth: &Auth, s: &Rec) -> bool {
    owns(auth, s) || rec(m, NETWORK, st(s, "network_id")).is_some_and(|n| n["shared"] == true)
}

fn find_subnet(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, SUBNET, id)
        .filter(|s| subnet_visible(m, auth, s))
        .ok_or_else(|| not_found("Subnet", id))
}

async fn list_subnets(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, SUBNET)
            .filter(|s| subnet_visible(&m, &auth, s))
            .map(public)
            .collect()
    };
    list_response(&app, raw, "subnets", SUBNET_FIELDS, items)
}

async fn show_subnet(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let s = find_subnet(&m, &auth, &id)?;
    Ok(Json(json!({"subnet": show_fields(&raw, public(&s))})))
}

fn parse_pools(v: &Value, net: &ipnet::IpNet) -> Result<ipam::Pools> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for allocation_pools: a list is expected.".into())
    })?;
    let mut out = Vec::new();
    for p in a {
        let (Some(s), Some(e)) = (
            p.get("start").and_then(|x| x.as_str()),
            p.get("end").and_then(|x| x.as_str()),
        ) else {
            return Err(Error::BadRequest(
                "Invalid input for allocation_pools: each pool needs start and end.".into(),
            ));
        };
        let (s, e) = (
            ipam::parse_ip(s, "allocation_pools")?,
            ipam::parse_ip(e, "allocation_pools")?,
        );
        if ipam::version(&s) != ipam::version(&net.network())
            || ipam::version(&e) != ipam::version(&net.network())
        {
            return Err(Error::BadRequest(
                "Invalid input for allocation_pools: the IP version does not match the subnet."
                    .into(),
            ));
        }
        out.push((ipam::to_u128(s), ipam::to_u128(e)));
    }
    Ok(out)
}

fn pools_json(p: &ipam::Pools, version: u8) -> Value {
    Value::Array(
        p.iter()
            .map(|(s, e)| json!({"start": ipam::from_u128(*s, version).to_string(), "end": ipam::from_u128(*e, version).to_string()}))
            .collect(),
    )
}

fn parse_dns(v: &Value, version: u8) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for dns_nameservers: a list is expected.".into())
    })?;
    let mut seen = Vec::new();
    for x in a {
        let s = x.as_str().ok_or_else(|| {
            Error::BadRequest("Invalid input for dns_nameservers: strings expected.".into())
        })?;
        let ip = ipam::parse_ip(s, "dns_nameservers")?;
        let _ = version;
        if seen.contains(&ip) {
            return Err(Error::BadRequest(format!(
                "Invalid input for dns_nameservers. Reason: Duplicate nameserver '{s}'."
            )));
        }
        seen.push(ip);
    }
    if seen.len() > 5 {
        return Err(Error::BadRequest(
            "Quota exceeded for resources: too many DNS nameservers (5 at most).".into(),
        ));
    }
    Ok(v.clone())
}

fn parse_routes(v: &Value, version: u8) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for host_routes: a list is expected.".into())
    })?;
    let mut out: Vec<Value> = Vec::new();
    for r in a {
        let d = r.get("destination").and_then(|x| x.as_str()).unwrap_or("");
        let n = r.get("nexthop").and_then(|x| x.as_str()).unwrap_or("");
        let dn: ipnet::IpNet = d.parse().map_err(|_| {
            Error::BadRequest(format!(
                "Invalid input for destination. Reason: '{d}' is not a valid IP subnet."
            ))
        })?;
        let nh = ipam::parse_ip(n, "nexthop")?;
        if ipam::version(&dn.network()) != version || ipam::version(&nh) != version {
            return Err(Error::BadRequest(
                "Invalid input: the route's IP version does not match the subnet.".into(),
            ));
        }
        let item = json!({"destination": dn.trunc().to_string(), "nexthop": nh.to_string()});
        if out.contains(&item) {
            return Err(Error::BadRequest(format!(
                "Invalid input: duplicate host route {d} via {n}."
            )));
        }
        out.push(item);
    }
    if out.len() > 20 {
        return Err(Error::BadRequest(
            "Too many host routes (20 at most).".into(),
        ));
    }
    Ok(Value::Array(out))
}

fn gateway_of(v: &Value, net: &ipnet::IpNet) -> Result<Option<std::net::IpAddr>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let ip = ipam::parse_ip(s, "gateway_ip")?;
            if ipam::version(&ip) != ipam::version(&net.network()) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for gateway_ip: {s} is not an address of {net}'s IP version."
                )));
            }
            if net.contains(&ip) {
                let (lo, hi) = ipam::host_range(net);
                let x = ipam::to_u128(ip);
                if x < lo || x > hi {
                    return Err(Error::BadRequest(format!("Invalid input for operation: Gateway is not valid on subnet. Reason: {s} is the network or broadcast address of {net}.")));
                }
            }
            Ok(Some(ip))
        }
        _ => Err(Error::BadRequest(
            "Invalid input for gateway_ip: a string or null is expected.".into(),
        )),
    }
}

fn check_v6_modes(b: &Rec, version: u8) -> Result<()> {
    let ra = opt_str(b, "ipv6_ra_mode")?;
    let addr = opt_str(b, "ipv6_address_mode")?;
    for v in [&ra, &addr].into_iter().flatten() {
        if !["slaac", "dhcpv6-stateful", "dhcpv6-stateless"].contains(&v.as_str()) {
            return Err(Error::BadRequest(format!(
                "Invalid input for operation: '{v}' is not a valid IPv6 mode."
            )));
        }
        if version != 6 {
            return Err(Error::BadRequest("Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or the subnet is IPv4.".into()));
        }
    }
    if let (Some(r), Some(a)) = (&ra, &addr) {
        if r != a {
            return Err(Error::BadRequest(format!("Invalid input for operation: ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid.")));
        }
    }
    Ok(())
}

fn plan_subnet(m: &Model, auth: &Auth, b: &Rec) -> Result<(Vec<Op>, Rec)> {
    check_keys(b, SUBNET_CREATE)?;
    let net_id = opt_str(b, "network_id")?
        .ok_or_else(|| Error::BadRequest("Invalid input: 'network_id' is required.".into()))?;
    let n = find_network(m, auth, &net_id)?;
    let owner = owner_for(auth, b)?;
    if !owns(auth, &n) {
        return Err(Error::Forbidden(format!(
            "Creating a subnet on network {net_id} is disallowed by policy"
        )));
    }
    if b.get("subnetpool_id").is_some_and(|v| !v.is_null())
        || b.get("use_default_subnetpool") == Some(&Value::Bool(true))
    {
        return Err(Error::BadRequest(
            "Subnet pools are not supported here: give a cidr.".into(),
        ));
    }
    let cidr_s = opt_str(b, "cidr")?.ok_or_else(|| {
        Error::BadRequest(
            "Bad subnets request: a cidr must be specified in the absence of a subnet pool.".into(),
        )
    })?;
    let net = ipam::parse_cidr(&cidr_s)?;
    let version = ipam::version(&net.network());
    let asked = opt_int(b, "ip_version")?.unwrap_or(4);
    if asked != 4 && asked != 6 {
        return Err(Error::BadRequest(format!(
            "Invalid input for ip_version. Reason: {asked} is not in [4, 6]."
        )));
    }
    if asked as u8 != version {
        return Err(Error::BadRequest(
            "Invalid input for operation: the cidr's IP version does not match ip_version.".into(),
        ));
    }
    for other in super::subnets_of(m, &net_id) {
        if let Ok(o) = st(other, "cidr").parse::<ipnet::IpNet>() {
            if o.contains(&net.network()) || net.contains(&o.network()) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: Requested subnet with cidr: {net} for network: {net_id} overlaps with another subnet."
                )));
            }
        }
    }
    check_v6_modes(b, version)?;
    Networks::check_quota(m, &owner, "subnet", 1)?;
    let gateway = match b.get("gateway_ip") {
        None => Some(ipam::from_u128(ipam::host_range(&net).0, version)),
        Some(v) => gateway_of(v, &net)?,
    };
    let g = gateway.map(ipam::to_u128);
    let pools = match b.get("allocation_pools") {
        Some(v) if !v.is_null() => {
            let p = parse_pools(v, &net)?;
            ipam::check_pools(&net, &p, g)?;
            p
        }
        _ => ipam::default_pools(&net, g),
    };
    let mut s = standard(&owner);
    s.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    s.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    s.insert("network_id".into(), json!(net_id));
    s.insert("ip_version".into(), json!(version));
    s.insert("cidr".into(), json!(net.to_string()));
    s.insert("gateway_ip".into(), json!(gateway.map(|x| x.to_string())));
    s.insert("allocation_pools".into(), pools_json(&pools, version));
    s.insert(
        "dns_nameservers".into(),
        match b.get("dns_nameservers") {
            Some(v) if !v.is_null() => parse_dns(v, version)?,
            _ => json!([]),
        },
    );
    s.insert(
        "host_routes".into(),
        match b.get("host_routes") {
            Some(v) if !v.is_null() => parse_routes(v, version)?,
            _ => json!([]),
        },
    );
    s.insert(
        "enable_dhcp".into(),
        json!(opt_bool(b, "enable_dhcp")?.unwrap_or(true)),
    );
    s.insert("ipv6_ra_mode".into(), json!(opt_str(b, "ipv6_ra_mode")?));
    s.insert(
        "ipv6_address_mode".into(),
        json!(opt_str(b, "ipv6_address_mode")?),
    );
    s.insert("subnetpool_id".into(), Value::Null);
    s.insert("segment_id".into(), Value::Null);
    s.insert("service_types".into(), json!([]));
    s.insert("dns_publish_fixed_ip".into(), json!(false));
    Ok((vec![put(SUBNET, &s)], s))
}

/// Keeps the network's DHCP port holding one address on each IPv4 subnet
/// that has DHCP on (the address netd answers from).
async fn sync_dhcp_port(s: &Networks, net_id: &str) {
    let r = s
        .change(|m| {
            let Some(n) = rec(m, NETWORK, net_id) else {
                return Ok((vec![], ()));
            };
            let want: Vec<&Rec> = super::subnets_of(m, net_id)
                .into_iter()
                .filter(|x| x["ip_version"] == 4 && x["enable_dhcp"] == true)
                .collect();
            let port = super::ports_of(m, net_id)
                .into_iter()
                .find(|p| st(p, "device_owner") == OWNER_DHCP)
                .cloned();
            let have: Vec<(String, String)> = port.as_ref().map(fixed_ips).unwrap_or_default();
            let mut keep: Vec<Value> = have
                .iter()
                .filter(|(sid, _)| want.iter().any(|w| st(w, "id") == sid))
                .map(|(sid, ip)| json!({"subnet_id": sid, "ip_address": ip}))
                .collect();
            let missing: Vec<IpRequest> = want
                .iter()
                .filter(|w| !have.iter().any(|(sid, _)| sid == st(w, "id")))
                .map(|w| IpRequest {
                    subnet_id: Some(st(w, "id").to_string()),
                    ip_address: None,
                })
                .collect();
            if missing.is_empty() && keep.len() == have.len() {
                return Ok((vec![], ()));
            }
            let mac = port
                .as_ref()
                .map(|p| st(p, "mac_address").to_string())
                .unwrap_or_else(ipam::random_mac);
            if !missing.is_empty() {
                keep.extend(allocate(
                    m,
                    net_id,
                    &mac,
                    Some(&missing),
                    port.as_ref().map(|p| st(p, "id")),
                )?);
            }
            if keep.is_empty() {
                return Ok((
                    port.iter().map(|p| Op::delete(PORT, st(p, "id"))).collect(),
                    (),
                ));
            }
            let mut p = match port {
                Some(p) => p,
                None => service_port(
                    st(&n, "project_id"),
                    net_id,
                    OWNER_DHCP,
                    &format!("dhcp-{net_id}"),
                    mac,
                    Vec::new(),
                ),
            };
            p.insert("fixed_ips".into(), Value::Array(keep));
            bump(&mut p);
            Ok((vec![put(PORT, &p)], ()))
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(network = net_id, error = %e, "could not give the network's DHCP port an address");
    }
}

async fn create_subnets(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "subnet", "subnets")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let sub = s.change(|m| plan_subnet(m, a, &b)).await?;
        sync_dhcp_port(s, super::st(&sub, "network_id")).await;
        out.push(Value::Object(public(&sub)));
    }
    Ok(if bulk {
        created("subnets", Value::Array(out))
    } else {
        created("subnet", out.pop().unwrap_or(Value::Null))
    })
}

async fn update_subnet(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "subnet")?;
    for k in [
        "cidr",
        "ip_version",
        "network_id",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
        "tenant_id",
        "project_id",
    ] {
        if b.contains_key(k) {
            return Err(Error::BadRequest(format!(
                "Cannot update read-only attribute {k}"
            )));
        }
    }
    check_keys(
        &b,
        &[
            "name",
            "description",
            "gateway_ip",
            "allocation_pools",
            "dns_nameservers",
            "host_routes",
            "enable_dhcp",
            "service_types",
            "segment_id",
            "dns_publish_fixed_ip",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let sub = s
        .change(|m| {
            let mut sub = find_subnet(m, a, &id)?;
            if_match.check(&sub)?;
            if !owns(a, &sub) {
                return Err(Error::Forbidden(format!(
                    "Subnet {id}: changing it is disallowed by policy"
                )));
            }
            let net: ipnet::IpNet = st(&sub, "cidr")
                .parse()
                .map_err(|_| Error::Internal("bad stored cidr".into()))?;
            let version = ipam::version(&net.network());
            for k in ["name", "description"] {
                if let Some(v) = opt_str(&b, k)? {
                    sub.insert(k.into(), json!(v));
                }
            }
            if let Some(v) = opt_bool(&b, "enable_dhcp")? {
                sub.insert("enable_dhcp".into(), json!(v));
            }
            if let Some(v) = b.get("dns_nameservers") {
                sub.insert(
                    "dns_nameservers".into(),
                    if v.is_null() {
                        json!([])
                    } else {
                        parse_dns(v, version)?
                    },
                );
            }
            if let Some(v) = b.get("host_routes") {
                sub.insert(
                    "host_routes".into(),
                    if v.is_null() {
                        json!([])
                    } else {
                        parse_routes(v, version)?
                    },
                );
            }
            let gw = match b.get("gateway_ip") {
                Some(v) => gateway_of(v, &net)?,
                None => sub
                    .get("gateway_ip")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok()),
            };
            let pools = match b.get("allocation_pools") {
                Some(v) if !v.is_null() => parse_pools(v, &net)?,
                _ => super::pools_of(&sub),
            };
            ipam::check_pools(&net, &pools, gw.map(ipam::to_u128))?;
            if b.contains_key("gateway_ip") {
                if let Some(g) = gw {
                    let used_by_port = recs(m, PORT).any(|p| {
                        st(p, "device_owner") != OWNER_ROUTER_IF
                            && fixed_ips(p)
                                .iter()
                                .any(|(sid, ip)| sid == &id && ip == &g.to_string())
                    });
                    if used_by_port {
                        return Err(Error::Conflict(format!(
                            "Gateway ip {g} conflicts with an address in use on subnet {id}."
                        )));
                    }
                }
                sub.insert("gateway_ip".into(), json!(gw.map(|x| x.to_string())));
            }
            sub.insert("allocation_pools".into(), pools_json(&pools, version));
            bump(&mut sub);
            Ok((vec![put(SUBNET, &sub)], sub))
        })
        .await?;
    sync_dhcp_port(s, super::st(&sub, "network_id")).await;
    Ok(Json(json!({"subnet": public(&sub)})))
}

async fn delete_subnet(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let net = s
        .change(|m| {
            let sub = find_subnet(m, a, &id)?;
            if_match.check(&sub)?;
            if !owns(a, &sub) {
                return Err(Error::Forbidden(format!("Subnet {id}: deleting it is disallowed by policy")));
            }
            let mut ops = Vec::new();
            for p in recs(m, PORT) {
                let ips = fixed_ips(p);
                if !ips.iter().any(|(sid, _)| sid == &id) {
                    continue;
                }
                if st(p, "device_owner") == OWNER_DHCP {
                    let rest: Vec<Value> = ips
                        .iter()
                        .filter(|(sid, _)| sid != &id)
                        .map(|(sid, ip)| json!({"subnet_id": sid, "ip_address": ip}))
                        .collect();
                    if rest.is_empty() {
                        ops.push(Op::delete(PORT, st(p, "id")));
                    } else {
                        let mut p = p.clone();
                        p.insert("fixed_ips".into(), Value::Array(rest));
                        ops.push(put(PORT, &p));
                    }
                    continue;
                }
                return Err(Error::Conflict(format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                )));
            }
            ops.push(Op::delete(SUBNET, &id));
            Ok((ops, st(&sub, "network_id").to_string()))
        })
        .await?;
    let _ = net;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Ports.

const PORT_CREATE: &[&str] = &[
    "name",
    "description",
    "network_id",
    "mac_address",
    "admin_state_up",
    "fixed_ips",
    "device_id",
    "device_owner",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "tenant_id",
    "project_id",
    "dns_name",
    "propagate_uplink_status",
];

fn port_visible(m: &Model, auth: &Auth, p: &Rec) -> bool {
    owns(auth, p) || rec(m, NETWORK, st(p, "network_id")).is_some_and(|n| owns(auth, &n))
}

fn find_port(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, PORT, id)
        .filter(|p| port_visible(m, auth, p))
        .ok_or_else(|| not_found("Port", id))
}

async fn list_ports(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app);
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, PORT)
            .filter(|p| port_visible(&m, &auth, p))
            .map(|p| port_view(s, &auth, p))
            .collect()
    };
    list_response(&app, raw, "ports", PORT_FIELDS, items)
}

async fn show_port(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let p = find_port(&m, &auth, &id)?;
    Ok(Json(
        json!({"port": show_fields(&raw, port_view(svc(&app), &auth, &p))}),
    ))
}

fn parse_fixed_ips(v: &Value) -> Result<Vec<IpRequest>> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for fixed_ips. Reason: a list is expected.".into())
    })?;
    let mut out = Vec::new();
    for x in a {
        let o = x.as_object().ok_or_else(|| {
            Error::BadRequest("Invalid input for fixed_ips. Reason: objects are expected.".into())
        })?;
        if let Some(k) = o.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
            return Err(Error::BadRequest(format!(
                "Invalid input for fixed_ips. Reason: unexpected key '{k}'."
            )));
        }
        out.push(IpRequest {
            subnet_id: opt_str(o, "subnet_id")?,
            ip_address: opt_str(o, "ip_address")?,
        });
    }
    Ok(out)
}

fn parse_pairs(v: &Value) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for allowed_address_pairs: a list is expected.".into())
    })?;
    let mut out: Vec<Value> = Vec::new();
    for x in a {
        let o = x.as_object().ok_or_else(|| {
            Error::BadRequest(
                "Invalid input for allowed_address_pairs: objects are expected.".into(),
            )
        })?;
        if let Some(k) = o.keys().find(|k| *k != "ip_address" && *k != "mac_address") {
            return Err(Error::BadRequest(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let ip = opt_str(o, "ip_address")?.ok_or_else(|| {
            Error::BadRequest("AllowedAddressPair must contain ip_address".into())
        })?;
        if ip.parse::<std::net::IpAddr>().is_err() && ip.parse::<ipnet::IpNet>().is_err() {
            return Err(Error::BadRequest(format!(
                "'{ip}' is not a valid IP address or CIDR."
            )));
        }
        let mut item = json!({"ip_address": ip});
        if let Some(mac) = opt_str(o, "mac_address")? {
            if !ipam::valid_mac(&mac) {
                return Err(Error::BadRequest(format!(
                    "'{mac}' is not a valid MAC address"
                )));
            }
            item["mac_address"] = json!(mac.to_lowercase());
        }
        if out.iter().any(|y| {
            y["ip_address"] == item["ip_address"] && y.get("mac_address") == item.get("mac_address")
        }) {
            return Err(Error::BadRequest(
                "Request contains duplicate address pair.".into(),
            ));
        }
        out.push(item);
    }
    Ok(Value::Array(out))
}

/// Security groups named for a port: each must be one the caller may use.
fn check_groups(m: &Model, auth: &Auth, v: &Value) -> Result<Vec<String>> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for security_groups: a list is expected.".into())
    })?;
    let mut out = Vec::new();
    for x in a {
        let id = x.as_str().ok_or_else(|| {
            Error::BadRequest("Invalid input for security_groups: ids expected.".into())
        })?;
        match rec(m, SG, id) {
            Some(g) if owns(auth, &g) => {
                if !out.contains(&id.to_string()) {
                    out.push(id.to_string());
                }
            }
            _ => {
                return Err(Error::NotFound(format!(
                    "Security group {id} does not exist"
                )))
            }
        }
    }
    Ok(out)
}

fn default_sg_id(m: &Model, project: &str) -> Option<String> {
    recs(m, SG)
        .find(|g| st(g, "project_id") == project && st(g, "name") == "default")
        .map(|g| st(g, "id").to_string())
}

fn check_binding_policy(auth: &Auth, b: &Rec) -> Result<()> {
    for k in ["binding:host_id", "binding:profile"] {
        if b.contains_key(k) && !is_admin(auth) {
            return Err(Error::Forbidden(format!(
                "rule:create_port:{k} is disallowed by policy"
            )));
        }
    }
    if let Some(v) = b.get("binding:profile") {
        if !v.is_object() && !v.is_null() {
            return Err(Error::BadRequest(
                "Invalid input for binding:profile: an object is expected.".into(),
            ));
        }
    }
    if let Some(v) = opt_str(b, "binding:vnic_type")? {
        if ![
            "normal",
            "direct",
            "macvtap",
            "baremetal",
            "direct-physical",
            "virtio-forwarder",
            "smart-nic",
            "remote-managed",
            "vdpa",
        ]
        .contains(&v.as_str())
        {
            return Err(Error::BadRequest(format!(
                "Invalid input for binding:vnic_type. Reason: '{v}' is not in the valid values."
            )));
        }
    }
    Ok(())
}

fn plan_port(m: &Model, auth: &Auth, b: &Rec) -> Result<(Vec<Op>, Rec)> {
    check_keys(b, PORT_CREATE)?;
    let net_id = opt_str(b, "network_id")?
        .ok_or_else(|| Error::BadRequest("Invalid input: 'network_id' is required.".into()))?;
    let n = find_network(m, auth, &net_id)?;
    let owner = owner_for(auth, b)?;
    check_binding_policy(auth, b)?;
    let device_owner = opt_str(b, "device_owner")?.unwrap_or_default();
    if device_owner.starts_with("network:") && !is_admin(auth) && !owns(auth, &n) {
        return Err(Error::Forbidden(
            "rule:create_port:device_owner is disallowed by policy".into(),
        ));
    }
    if n["shared"] != true && !owns(auth, &n) && !n["router:external"].as_bool().unwrap_or(false) {
        return Err(not_found("Network", &net_id));
    }
    Networks::check_quota(m, &owner, "port", 1)?;
    let mac = match opt_str(b, "mac_address")? {
        Some(mac) => {
            if !ipam::valid_mac(&mac) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address."
                )));
            }
            let mac = mac.to_lowercase();
            if super::ports_of(m, &net_id)
                .iter()
                .any(|p| st(p, "mac_address") == mac)
            {
                return Err(Error::Conflict(format!(
                    "Unable to complete operation for network {net_id}. The mac address {mac} is in use."
                )));
            }
            mac
        }
        None => loop {
            let mac = ipam::random_mac();
            if !recs(m, PORT).any(|p| st(p, "mac_address") == mac) {
                break mac;
            }
        },
    };
    let reqs = match b.get("fixed_ips") {
        Some(v) if !v.is_null() => Some(parse_fixed_ips(v)?),
        _ => None,
    };
    let ips = allocate(m, &net_id, &mac, reqs.as_deref(), None)?;
    let security =
        opt_bool(b, "port_security_enabled")?.unwrap_or(n["port_security_enabled"] != false);
    let mut ops = Vec::new();
    let groups = match b.get("security_groups") {
        Some(v) if !v.is_null() => check_groups(m, auth, v)?,
        _ if device_owner.starts_with("network:") || !security => Vec::new(),
        _ => match default_sg_id(m, &owner) {
            Some(g) => vec![g],
            None => {
                let new = Networks::default_sg_ops(m, &owner);
                let gid = new
                    .iter()
                    .find_map(|o| match o {
                        Op::Put(d) if d.kind == SG => Some(d.id.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                ops.extend(new);
                vec![gid]
            }
        },
    };
    let pairs = match b.get("allowed_address_pairs") {
        Some(v) if !v.is_null() => parse_pairs(v)?,
        _ => json!([]),
    };
    if !security && (!groups.is_empty() || pairs.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(Error::Conflict(
            "Port security must be enabled and port must have an IP address in order to use security groups or allowed address pairs.".into(),
        ));
    }
    let mut p = standard(&owner);
    p.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    p.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    p.insert("network_id".into(), json!(net_id));
    p.insert("mac_address".into(), json!(mac));
    p.insert(
        "admin_state_up".into(),
        json!(opt_bool(b, "admin_state_up")?.unwrap_or(true)),
    );
    p.insert(
        "device_id".into(),
        json!(opt_str(b, "device_id")?.unwrap_or_default()),
    );
    p.insert("device_owner".into(), json!(device_owner));
    p.insert("fixed_ips".into(), Value::Array(ips));
    p.insert("allowed_address_pairs".into(), pairs);
    p.insert(
        "extra_dhcp_opts".into(),
        b.get("extra_dhcp_opts")
            .cloned()
            .filter(|v| v.is_array())
            .unwrap_or(json!([])),
    );
    p.insert("security_groups".into(), json!(groups));
    p.insert("port_security_enabled".into(), json!(security));
    p.insert(
        "binding:host_id".into(),
        json!(opt_str(b, "binding:host_id")?.unwrap_or_default()),
    );
    p.insert(
        "binding:profile".into(),
        b.get("binding:profile")
            .cloned()
            .filter(|v| v.is_object())
            .unwrap_or(json!({})),
    );
    p.insert(
        "binding:vnic_type".into(),
        json!(opt_str(b, "binding:vnic_type")?.unwrap_or_else(|| "normal".into())),
    );
    p.insert("binding:vif_details".into(), json!({}));
    p.insert("ip_allocation".into(), json!("immediate"));
    p.insert(
        "propagate_uplink_status".into(),
        json!(opt_bool(b, "propagate_uplink_status")?.unwrap_or(false)),
    );
    p.insert(
        "dns_name".into(),
        json!(opt_str(b, "dns_name")?.unwrap_or_default()),
    );
    ops.push(put(PORT, &p));
    Ok((ops, p))
}

async fn create_ports(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "port", "ports")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let p = s.change(|m| plan_port(m, a, &b)).await?;
        out.push(Value::Object(port_view(s, &auth, &p)));
    }
    Ok(if bulk {
        created("ports", Value::Array(out))
    } else {
        created("port", out.pop().unwrap_or(Value::Null))
    })
}

async fn update_port(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "port")?;
    if b.contains_key("network_id") {
        return Err(Error::BadRequest(
            "Cannot update read-only attribute network_id".into(),
        ));
    }
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "fixed_ips",
            "device_id",
            "device_owner",
            "security_groups",
            "port_security_enabled",
            "allowed_address_pairs",
            "extra_dhcp_opts",
            "binding:host_id",
            "binding:profile",
            "binding:vnic_type",
            "mac_address",
            "dns_name",
            "propagate_uplink_status",
        ],
    )?;
    check_binding_policy(&auth, &b)?;
    let s = svc(&app);
    let a = &auth;
    let p = s
        .change(|m| {
            let mut p = find_port(m, a, &id)?;
            if_match.check(&p)?;
            if !owns(a, &p) && !rec(m, NETWORK, st(&p, "network_id")).is_some_and(|n| owns(a, &n)) {
                return Err(Error::Forbidden(format!("Port {id}: changing it is disallowed by policy")));
            }
            let net_id = st(&p, "network_id").to_string();
            for k in ["name", "description", "device_id", "device_owner", "dns_name", "binding:host_id", "binding:vnic_type"] {
                if let Some(v) = opt_str(&b, k)? {
                    p.insert(k.into(), json!(v));
                }
            }
            if let Some(v) = opt_bool(&b, "admin_state_up")? {
                p.insert("admin_state_up".into(), json!(v));
            }
            if let Some(v) = opt_bool(&b, "propagate_uplink_status")? {
                p.insert("propagate_uplink_status".into(), json!(v));
            }
            if let Some(v) = b.get("binding:profile") {
                p.insert("binding:profile".into(), if v.is_null() { json!({}) } else { v.clone() });
            }
            if let Some(mac) = opt_str(&b, "mac_address")? {
                if !is_admin(a) {
                    return Err(Error::Forbidden("rule:update_port:mac_address is disallowed by policy".into()));
                }
                if !ipam::valid_mac(&mac) {
                    return Err(Error::BadRequest(format!("Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address.")));
                }
                let mac = mac.to_lowercase();
                if super::ports_of(m, &net_id).iter().any(|o| st(o, "id") != id && st(o, "mac_address") == mac) {
                    return Err(Error::Conflict(format!("Unable to complete operation for network {net_id}. The mac address {mac} is in use.")));
                }
                p.insert("mac_address".into(), json!(mac));
            }
            if let Some(v) = b.get("fixed_ips") {
                let reqs = if v.is_null() { Vec::new() } else { parse_fixed_ips(v)? };
                // Addresses the port keeps stay as they are.
                let ips = allocate(m, &net_id, st(&p, "mac_address"), Some(&reqs), Some(&id))?;
                p.insert("fixed_ips".into(), Value::Array(ips));
            }
            if let Some(v) = b.get("extra_dhcp_opts") {
                p.insert("extra_dhcp_opts".into(), if v.is_array() { v.clone() } else { json!([]) });
            }
            if let Some(v) = opt_bool(&b, "port_security_enabled")? {
                p.insert("port_security_enabled".into(), json!(v));
            }
            if let Some(v) = b.get("security_groups") {
                let g = if v.is_null() { Vec::new() } else { check_groups(m, a, v)? };
                p.insert("security_groups".into(), json!(g));
            }
            if let Some(v) = b.get("allowed_address_pairs") {
                p.insert("allowed_address_pairs".into(), if v.is_null() { json!([]) } else { parse_pairs(v)? });
            }
            let secure = p["port_security_enabled"] != false;
            let has_groups = p["security_groups"].as_array().is_some_and(|x| !x.is_empty());
            let has_pairs = p["allowed_address_pairs"].as_array().is_some_and(|x| !x.is_empty());
            if !secure && (has_groups || has_pairs) {
                return Err(Error::Conflict(
                    "Port security must be enabled and port must have an IP address in order to use security groups or allowed address pairs.".into(),
                ));
            }
            bump(&mut p);
            // A floating IP follows its fixed address: drop it when the address goes.
            let mut ops = vec![put(PORT, &p)];
            let now: Vec<String> = fixed_ips(&p).into_iter().map(|(_, ip)| ip).collect();
            for f in recs(m, FIP).filter(|f| st(f, "port_id") == id) {
                if !now.iter().any(|ip| ip == st(f, "fixed_ip_address")) {
                    let mut f = f.clone();
                    disassociate(&mut f);
                    ops.push(put(FIP, &f));
                }
            }
            Ok((ops, p))
        })
        .await?;
    Ok(Json(json!({"port": port_view(s, &auth, &p)})))
}

fn disassociate(f: &mut Rec) {
    f.insert("port_id".into(), Value::Null);
    f.insert("fixed_ip_address".into(), Value::Null);
    f.insert("router_id".into(), Value::Null);
    bump(f);
}

async fn delete_port(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        let p = find_port(m, a, &id)?;
        if_match.check(&p)?;
        if !owns(a, &p) && !rec(m, NETWORK, st(&p, "network_id")).is_some_and(|n| owns(a, &n)) {
            return Err(Error::Forbidden(format!(
                "Port {id}: deleting it is disallowed by policy"
            )));
        }
        let owner = st(&p, "device_owner");
        if owner == OWNER_ROUTER_IF || owner == OWNER_ROUTER_GW || owner == OWNER_FIP {
            return Err(Error::Conflict(format!(
                "Port {id} cannot be deleted directly via the port API: has device owner {owner}."
            )));
        }
        let mut ops = vec![Op::delete(PORT, &id)];
        for f in recs(m, FIP).filter(|f| st(f, "port_id") == id) {
            let mut f = f.clone();
            disassociate(&mut f);
            ops.push(put(FIP, &f));
        }
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Routers.

fn find_router(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, ROUTER, id)
        .filter(|r| owns(auth, r))
        .ok_or_else(|| not_found("Router", id))
}

async fn list_routers(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, ROUTER)
            .filter(|r| owns(&auth, r))
            .map(|r| router_view(svc(&app), &m, &auth, r))
            .collect()
    };
    list_response(&app, raw, "routers", ROUTER_FIELDS, items)
}

async fn show_router(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let r = find_router(&m, &auth, &id)?;
    Ok(Json(
        json!({"router": show_fields(&raw, router_view(svc(&app), &m, &auth, &r))}),
    ))
}

fn service_port(
    project: &str,
    net: &str,
    owner: &str,
    device: &str,
    mac: String,
    ips: Vec<Value>,
) -> Rec {
    let mut p = standard(project);
    for (k, v) in [
        ("name", json!("")),
        ("description", json!("")),
        ("network_id", json!(net)),
        ("mac_address", json!(mac)),
        ("admin_state_up", json!(true)),
        ("device_owner", json!(owner)),
        ("device_id", json!(device)),
        ("fixed_ips", Value::Array(ips)),
        ("allowed_address_pairs", json!([])),
        ("extra_dhcp_opts", json!([])),
        ("security_groups", json!([])),
        ("port_security_enabled", json!(false)),
        ("binding:host_id", json!("")),
        ("binding:profile", json!({})),
        ("binding:vnic_type", json!("normal")),
        ("binding:vif_details", json!({})),
        ("ip_allocation", json!("immediate")),
        ("propagate_uplink_status", json!(false)),
        ("dns_name", json!("")),
    ] {
        p.insert(k.into(), v);
    }
    p
}

fn fresh_mac(m: &Model) -> String {
    loop {
        let mac = ipam::random_mac();
        if !recs(m, PORT).any(|p| st(p, "mac_address") == mac) {
            return mac;
        }
    }
}

/// Sets, replaces or clears a router's external gateway.
fn plan_gateway(m: &Model, auth: &Auth, r: &mut Rec, g: &Value, ops: &mut Vec<Op>) -> Result<()> {
    let rid = st(r, "id").to_string();
    let old_port = recs(m, PORT)
        .find(|p| st(p, "device_id") == rid && st(p, "device_owner") == OWNER_ROUTER_GW)
        .cloned();
    let clear = g.is_null()
        || g.as_object()
            .is_some_and(|o| o.is_empty() || o.get("network_id").is_none_or(|v| v.is_null()));
    if clear {
        if recs(m, FIP).any(|f| st(f, "router_id") == rid) {
            return Err(Error::Conflict(format!(
                "Gateway cannot be updated for router {rid}, since a gateway to an external network is required by one or more floating IPs."
            )));
        }
        if let Some(p) = old_port {
            ops.push(Op::delete(PORT, st(&p, "id")));
        }
        r.insert("external_gateway_info".into(), Value::Null);
        return Ok(());
    }
    let o = g.as_object().ok_or_else(|| {
        Error::BadRequest("Invalid input for external_gateway_info: an object is expected.".into())
    })?;
    check_keys(o, &["network_id", "enable_snat", "external_fixed_ips"])?;
    let net_id = opt_str(o, "network_id")?.unwrap_or_default();
    let n = rec(m, NETWORK, &net_id).ok_or_else(|| not_found("Network", &net_id))?;
    if n["router:external"] != true {
        return Err(Error::BadRequest(format!(
            "Bad router request: Network {net_id} is not an external network."
        )));
    }
    let snat = opt_bool(o, "enable_snat")?;
    if snat.is_some() && !is_admin(auth) {
        return Err(Error::Forbidden(
            "rule:update_router:external_gateway_info:enable_snat is disallowed by policy".into(),
        ));
    }
    let fixed = match o.get("external_fixed_ips") {
        Some(v) if !v.is_null() => {
            if !is_admin(auth) {
                return Err(Error::Forbidden("rule:update_router:external_gateway_info:external_fixed_ips is disallowed by policy".into()));
            }
            Some(parse_fixed_ips(v)?)
        }
        _ => None,
    };
    let same_net = old_port
        .as_ref()
        .is_some_and(|p| st(p, "network_id") == net_id);
    if let Some(p) = &old_port {
        if !same_net || fixed.is_some() {
            if !same_net && recs(m, FIP).any(|f| st(f, "router_id") == rid) {
                return Err(Error::Conflict(format!(
                    "Gateway cannot be updated for router {rid}, since a gateway to an external network is required by one or more floating IPs."
                )));
            }
            ops.push(Op::delete(PORT, st(p, "id")));
        }
    }
    if !same_net || fixed.is_some() {
        let mac = fresh_mac(m);
        let ips = match &fixed {
            Some(f) => allocate(
                m,
                &net_id,
                &mac,
                Some(f),
                old_port.as_ref().map(|p| st(p, "id")),
            )?,
            None => {
                let v4: Vec<&Rec> = super::subnets_of(m, &net_id)
                    .into_iter()
                    .filter(|s| s["ip_version"] == 4)
                    .collect();
                let mut got = Err(Error::BadRequest(format!(
                    "Bad router request: No IPv4 subnet on external network {net_id}."
                )));
                for s in v4 {
                    got = allocate(
                        m,
                        &net_id,
                        &mac,
                        Some(&[IpRequest {
                            subnet_id: Some(st(s, "id").into()),
                            ip_address: None,
                        }]),
                        None,
                    );
                    if got.is_ok() {
                        break;
                    }
                }
                got?
            }
        };
        ops.push(put(
            PORT,
            &service_port("", &net_id, OWNER_ROUTER_GW, &rid, mac, ips),
        ));
    }
    let prev_snat = r
        .get("external_gateway_info")
        .and_then(|g| g.get("enable_snat"))
        .and_then(|v| v.as_bool());
    r.insert(
        "external_gateway_info".into(),
        json!({"network_id": net_id, "enable_snat": snat.or(if same_net { prev_snat } else { None }).unwrap_or(true)}),
    );
    Ok(())
}

async fn create_router(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "router")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "distributed",
            "ha",
            "availability_zone_hints",
            "flavor_id",
            "tenant_id",
            "project_id",
        ],
    )?;
    for k in ["distributed", "ha"] {
        if b.contains_key(k) && !is_admin(&auth) {
            return Err(Error::Forbidden(format!(
                "rule:create_router:{k} is disallowed by policy"
            )));
        }
        if opt_bool(&b, k)? == Some(true) {
            return Err(Error::BadRequest(format!(
                "Routers here are neither distributed nor HA ({k})."
            )));
        }
    }
    let s = svc(&app);
    let a = &auth;
    let r = s
        .change(|m| {
            let owner = owner_for(a, &b)?;
            Networks::check_quota(m, &owner, "router", 1)?;
            let mut r = standard(&owner);
            r.insert(
                "name".into(),
                json!(opt_str(&b, "name")?.unwrap_or_default()),
            );
            r.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            r.insert(
                "admin_state_up".into(),
                json!(opt_bool(&b, "admin_state_up")?.unwrap_or(true)),
            );
            r.insert("status".into(), json!("ACTIVE"));
            r.insert("external_gateway_info".into(), Value::Null);
            r.insert("routes".into(), json!([]));
            r.insert("distributed".into(), json!(false));
            r.insert("ha".into(), json!(false));
            r.insert(
                "availability_zone_hints".into(),
                b.get("availability_zone_hints")
                    .cloned()
                    .unwrap_or(json!([])),
            );
            r.insert("availability_zones".into(), json!(["nova"]));
            r.insert("flavor_id".into(), Value::Null);
            let mut ops = Vec::new();
            if let Some(g) = b.get("external_gateway_info") {
                plan_gateway(m, a, &mut r, g, &mut ops)?;
            }
            ops.push(put(ROUTER, &r));
            Ok((ops, r))
        })
        .await?;
    let m = app.identity.model();
    Ok(created(
        "router",
        Value::Object(router_view(svc(&app), &m, &auth, &r)),
    ))
}

/// Subnets a router is attached to (interfaces and gateway).
fn router_subnets(m: &Model, rid: &str) -> Vec<Rec> {
    let ids: Vec<String> = recs(m, PORT)
        .filter(|p| {
            st(p, "device_id") == rid
                && matches!(st(p, "device_owner"), OWNER_ROUTER_IF | OWNER_ROUTER_GW)
        })
        .flat_map(fixed_ips)
        .map(|(s, _)| s)
        .collect();
    ids.iter().filter_map(|i| rec(m, SUBNET, i)).collect()
}

fn parse_extra_routes(m: &Model, rid: &str, v: &Value) -> Result<Vec<Value>> {
    let a = v
        .as_array()
        .ok_or_else(|| Error::BadRequest("Invalid input for routes: a list is expected.".into()))?;
    let nets: Vec<ipnet::IpNet> = router_subnets(m, rid)
        .iter()
        .filter_map(|s| st(s, "cidr").parse().ok())
        .collect();
    let mut out: Vec<Value> = Vec::new();
    for r in a {
        let o = r.as_object().ok_or_else(|| {
            Error::BadRequest("Invalid input for routes: objects are expected.".into())
        })?;
        check_keys(o, &["destination", "nexthop"])?;
        let d = opt_str(o, "destination")?.unwrap_or_default();
        let n = opt_str(o, "nexthop")?.unwrap_or_default();
        let dn: ipnet::IpNet = d.parse().map_err(|_| {
            Error::BadRequest(format!(
                "Invalid input for routes. Reason: '{d}' is not a valid IP subnet."
            ))
        })?;
        let nh = ipam::parse_ip(&n, "routes")?;
        if !nets.iter().any(|x| x.contains(&nh)) {
            return Err(Error::BadRequest(format!(
                "Invalid format for routes: [{{'destination': '{d}', 'nexthop': '{n}'}}], the nexthop is not connected with router"
            )));
        }
        let item = json!({"destination": dn.trunc().to_string(), "nexthop": nh.to_string()});
        if !out.contains(&item) {
            out.push(item);
        }
    }
    if out.len() > 30 {
        return Err(Error::BadRequest("Too many routes (30 at most).".into()));
    }
    Ok(out)
}

async fn update_router(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "router")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "routes",
            "distributed",
            "ha",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let r = s
        .change(|m| {
            let mut r = find_router(m, a, &id)?;
            if_match.check(&r)?;
            for k in ["distributed", "ha"] {
                if b.contains_key(k) && !is_admin(a) {
                    return Err(Error::Forbidden(format!(
                        "rule:update_router:{k} is disallowed by policy"
                    )));
                }
                if opt_bool(&b, k)? == Some(true) {
                    return Err(Error::BadRequest(format!(
                        "Routers here are neither distributed nor HA ({k})."
                    )));
                }
            }
            for k in ["name", "description"] {
                if let Some(v) = opt_str(&b, k)? {
                    r.insert(k.into(), json!(v));
                }
            }
            if let Some(v) = opt_bool(&b, "admin_state_up")? {
                r.insert("admin_state_up".into(), json!(v));
            }
            let mut ops = Vec::new();
            if let Some(g) = b.get("external_gateway_info") {
                plan_gateway(m, a, &mut r, g, &mut ops)?;
            }
            if let Some(v) = b.get("routes") {
                let routes = if v.is_null() {
                    Vec::new()
                } else {
                    parse_extra_routes(m, &id, v)?
                };
                r.insert("routes".into(), Value::Array(routes));
            }
            bump(&mut r);
            ops.push(put(ROUTER, &r));
            Ok((ops, r))
        })
        .await?;
    let m = app.identity.model();
    Ok(Json(
        json!({"router": router_view(svc(&app), &m, &auth, &r)}),
    ))
}

async fn delete_router(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        let cur = find_router(m, a, &id)?;
        if_match.check(&cur)?;
        if recs(m, PORT)
            .any(|p| st(p, "device_id") == id && st(p, "device_owner") == OWNER_ROUTER_IF)
        {
            return Err(Error::Conflict(format!("Router {id} still has ports")));
        }
        if recs(m, FIP).any(|f| st(f, "router_id") == id) {
            return Err(Error::Conflict(format!(
                "Router {id} still has floating IPs associated"
            )));
        }
        let mut ops: Vec<Op> = recs(m, PORT)
            .filter(|p| st(p, "device_id") == id && st(p, "device_owner") == OWNER_ROUTER_GW)
            .map(|p| Op::delete(PORT, st(p, "id")))
            .collect();
        ops.push(Op::delete(ROUTER, &id));
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn interface_info(r: &Rec, p: &Rec) -> Value {
    let subnets: Vec<String> = fixed_ips(p).into_iter().map(|(s, _)| s).collect();
    json!({
        "id": st(r, "id"),
        "tenant_id": st(r, "project_id"),
        "project_id": st(r, "project_id"),
        "port_id": st(p, "id"),
        "network_id": st(p, "network_id"),
        "subnet_id": subnets.first().cloned().unwrap_or_default(),
        "subnet_ids": subnets,
    })
}

fn interface_target(body: &Bytes) -> Result<(Option<String>, Option<String>)> {
    let v: Value = parse_body(body)?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::BadRequest("Invalid input: a JSON object is expected.".into()))?;
    let sid = opt_str(o, "subnet_id")?;
    let pid = opt_str(o, "port_id")?;
    Ok((sid, pid))
}

async fn add_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let (sid, pid) = interface_target(&body)?;
    let s = svc(&app);
    let a = &auth;
    let info = s
        .change(|m| {
            let r = find_router(m, a, &id)?;
            let attached = router_subnets(m, &id);
            let overlaps = |cidr: &str| -> Option<String> {
                let n: ipnet::IpNet = cidr.parse().ok()?;
                attached
                    .iter()
                    .find(|x| {
                        st(x, "cidr")
                            .parse::<ipnet::IpNet>()
                            .is_ok_and(|o| o.contains(&n.network()) || n.contains(&o.network()))
                    })
                    .map(|x| st(x, "cidr").to_string())
            };
            match (sid.clone(), pid.clone()) {
                (Some(_), Some(_)) => Err(Error::BadRequest("Bad router request: Cannot specify both subnet-id and port-id".into())),
                (None, None) => Err(Error::BadRequest("Bad router request: Either subnet_id or port_id must be specified".into())),
                (Some(sid), None) => {
                    let sub = find_subnet(m, a, &sid)?;
                    let net = rec(m, NETWORK, st(&sub, "network_id")).ok_or_else(|| not_found("Network", st(&sub, "network_id")))?;
                    if net["router:external"] == true && !is_admin(a) {
                        return Err(Error::BadRequest(format!("Bad router request: Router {id} cannot be connected to external network subnet {sid}.")));
                    }
                    let gw = sub
                        .get("gateway_ip")
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| Error::BadRequest(format!("Bad router request: Subnet {sid} does not have a gateway IP.")))?
                        .to_string();
                    if attached.iter().any(|x| st(x, "id") == sid) {
                        return Err(Error::BadRequest(format!("Bad router request: Router already has a port on subnet {sid}.")));
                    }
                    if let Some(c) = overlaps(st(&sub, "cidr")) {
                        return Err(Error::BadRequest(format!(
                            "Bad router request: Cidr {} of subnet {sid} overlaps with cidr {c} of another subnet of the router.",
                            st(&sub, "cidr")
                        )));
                    }
                    let net_id = st(&sub, "network_id").to_string();
                    let mac = fresh_mac(m);
                    let ips = allocate(m, &net_id, &mac, Some(&[IpRequest { subnet_id: Some(sid.clone()), ip_address: Some(gw) }]), None)?;
                    let p = service_port(st(&r, "project_id"), &net_id, OWNER_ROUTER_IF, &id, mac, ips);
                    Ok((vec![put(PORT, &p)], interface_info(&r, &p)))
                }
                (None, Some(pid)) => {
                    let mut p = find_port(m, a, &pid)?;
                    if !st(&p, "device_id").is_empty() || !st(&p, "device_owner").is_empty() {
                        return Err(Error::Conflict(format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                            st(&p, "network_id"),
                            st(&p, "device_id")
                        )));
                    }
                    let ips = fixed_ips(&p);
                    if ips.is_empty() {
                        return Err(Error::BadRequest(format!("Bad router request: Router port {pid} must have at least one fixed IP.")));
                    }
                    for (s2, _) in &ips {
                        if let Some(sub) = rec(m, SUBNET, s2) {
                            if let Some(c) = overlaps(st(&sub, "cidr")) {
                                return Err(Error::BadRequest(format!(
                                    "Bad router request: Cidr {} of subnet {s2} overlaps with cidr {c} of another subnet of the router.",
                                    st(&sub, "cidr")
                                )));
                            }
                        }
                    }
                    p.insert("device_owner".into(), json!(OWNER_ROUTER_IF));
                    p.insert("device_id".into(), json!(id));
                    p.insert("security_groups".into(), json!([]));
                    p.insert("allowed_address_pairs".into(), json!([]));
                    p.insert("port_security_enabled".into(), json!(false));
                    bump(&mut p);
                    Ok((vec![put(PORT, &p)], interface_info(&r, &p)))
                }
            }
        })
        .await?;
    Ok(Json(info))
}

async fn remove_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let (sid, pid) = interface_target(&body)?;
    let s = svc(&app);
    let a = &auth;
    let info = s
        .change(|m| {
            let r = find_router(m, a, &id)?;
            let ifaces: Vec<&Rec> = recs(m, PORT)
                .filter(|p| st(p, "device_id") == id && st(p, "device_owner") == OWNER_ROUTER_IF)
                .collect();
            let port = match (&sid, &pid) {
                (None, None) => return Err(Error::BadRequest("Bad router request: Either subnet_id or port_id must be specified".into())),
                (_, Some(pid)) => {
                    let p = ifaces.iter().find(|p| st(p, "id") == pid).ok_or_else(|| {
                        Error::NotFound(format!("Router {id} does not have an interface with id {pid}"))
                    })?;
                    if let Some(sid) = &sid {
                        if !fixed_ips(p).iter().any(|(s2, _)| s2 == sid) {
                            return Err(Error::Conflict(format!("Subnet {sid} is not on port {pid}.")));
                        }
                    }
                    (*p).clone()
                }
                (Some(sid), None) => {
                    find_subnet(m, a, sid)?;
                    ifaces
                        .iter()
                        .find(|p| fixed_ips(p).iter().any(|(s2, _)| s2 == sid))
                        .map(|p| (*p).clone())
                        .ok_or_else(|| Error::NotFound(format!("Router {id} has no interface on subnet {sid}")))?
                }
            };
            let on: Vec<String> = fixed_ips(&port).into_iter().map(|(s, _)| s).collect();
            let fip_uses = recs(m, FIP).filter(|f| st(f, "router_id") == id).any(|f| {
                recs(m, PORT)
                    .find(|p| st(p, "id") == st(f, "port_id"))
                    .is_some_and(|p| fixed_ips(p).iter().any(|(s2, ip)| on.contains(s2) && ip == st(f, "fixed_ip_address")))
            });
            if fip_uses {
                return Err(Error::Conflict(format!(
                    "Router interface for subnet {} on router {id} cannot be deleted, as it is required by one or more floating IPs.",
                    on.first().cloned().unwrap_or_default()
                )));
            }
            let info = interface_info(&r, &port);
            Ok((vec![Op::delete(PORT, st(&port, "id"))], info))
        })
        .await?;
    Ok(Json(info))
}

async fn change_extraroutes(
    app: &AppState,
    auth: &Auth,
    id: &str,
    body: &Bytes,
    add: bool,
) -> Result<Json<Value>> {
    write_access(auth)?;
    let b = body_obj(body, "router")?;
    check_keys(&b, &["routes"])?;
    let s = svc(app);
    let r = s
        .change(|m| {
            let mut r = find_router(m, auth, id)?;
            let given =
                parse_extra_routes(m, id, b.get("routes").unwrap_or(&json!([]))).or_else(|e| {
                    if add {
                        Err(e)
                    } else {
                        Ok(b.get("routes")
                            .and_then(|v| v.as_array())
                            .cloned()
                            .unwrap_or_default())
                    }
                })?;
            let mut routes = r
                .get("routes")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            if add {
                for x in given {
                    if !routes.contains(&x) {
                        routes.push(x);
                    }
                }
            } else {
                routes.retain(|x| !given.contains(x));
            }
            r.insert("routes".into(), Value::Array(routes));
            bump(&mut r);
            Ok((vec![put(ROUTER, &r)], r))
        })
        .await?;
    let m = app.identity.model();
    Ok(Json(json!({"router": router_view(svc(app), &m, auth, &r)})))
}

async fn add_extraroutes(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    change_extraroutes(&app, &auth, &id, &body, true).await
}

async fn remove_extraroutes(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    change_extraroutes(&app, &auth, &id, &body, false).await
}

// ---------------------------------------------------------------------
// Floating IPs.

fn find_fip(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, FIP, id)
        .filter(|f| owns(auth, f))
        .ok_or_else(|| not_found("Floating IP", id))
}

async fn list_fips(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, FIP)
            .filter(|f| owns(&auth, f))
            .map(fip_view)
            .collect()
    };
    list_response(&app, raw, "floatingips", FIP_FIELDS, items)
}

async fn show_fip(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let f = find_fip(&m, &auth, &id)?;
    Ok(Json(json!({"floatingip": show_fields(&raw, fip_view(&f))})))
}

/// Points a floating IP at a port (and one of its addresses), through the
/// router that joins the port's subnet to the floating IP's network.
fn associate(
    m: &Model,
    auth: &Auth,
    f: &mut Rec,
    port_id: &str,
    fixed: Option<String>,
) -> Result<()> {
    let p = find_port(m, auth, port_id)?;
    if !owns(auth, &p) {
        return Err(not_found("Port", port_id));
    }
    let v4: Vec<(String, String)> = fixed_ips(&p)
        .into_iter()
        .filter(|(_, ip)| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    let (sid, ip) = match fixed {
        Some(want) => {
            ipam::parse_ip(&want, "fixed_ip_address")?;
            v4.iter()
                .find(|(_, ip)| *ip == want)
                .cloned()
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "Bad floatingip request: Port {port_id} does not have fixed ip {want}."
                    ))
                })?
        }
        None => v4.first().cloned().ok_or_else(|| {
            Error::BadRequest(format!(
                "Bad floatingip request: Port {port_id} does not have any IPv4 address."
            ))
        })?,
    };
    let ext = st(f, "floating_network_id").to_string();
    let router = recs(m, ROUTER).find(|r| {
        r.get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .and_then(|v| v.as_str())
            == Some(ext.as_str())
            && recs(m, PORT).any(|q| {
                st(q, "device_id") == st(r, "id")
                    && st(q, "device_owner") == OWNER_ROUTER_IF
                    && fixed_ips(q).iter().any(|(s2, _)| *s2 == sid)
            })
    });
    let router = router.ok_or_else(|| {
        Error::NotFound(format!(
            "External network {ext} is not reachable from subnet {sid}. Therefore, cannot associate Port {port_id} with a Floating IP."
        ))
    })?;
    if let Some(other) = recs(m, FIP).find(|o| {
        st(o, "id") != st(f, "id")
            && st(o, "port_id") == port_id
            && st(o, "fixed_ip_address") == ip
            && st(o, "floating_network_id") == ext
    }) {
        return Err(Error::Conflict(format!(
            "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {ip}, as that fixed IP already has a floating IP on external network {ext}.",
            st(f, "floating_ip_address"),
            st(other, "id")
        )));
    }
    f.insert("port_id".into(), json!(port_id));
    f.insert("fixed_ip_address".into(), json!(ip));
    f.insert("router_id".into(), json!(st(router, "id")));
    Ok(())
}

async fn create_fip(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "floatingip")?;
    check_keys(
        &b,
        &[
            "floating_network_id",
            "floating_ip_address",
            "subnet_id",
            "port_id",
            "fixed_ip_address",
            "description",
            "tenant_id",
            "project_id",
            "dns_domain",
            "dns_name",
            "qos_policy_id",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let f = s
        .change(|m| {
            let owner = owner_for(a, &b)?;
            let net_id = opt_str(&b, "floating_network_id")?.ok_or_else(|| {
                Error::BadRequest("Invalid input: 'floating_network_id' is required.".into())
            })?;
            let n = rec(m, NETWORK, &net_id)
                .filter(|n| net_visible(a, n))
                .ok_or_else(|| not_found("Network", &net_id))?;
            if n["router:external"] != true {
                return Err(Error::BadRequest(format!(
                    "Bad floatingip request: Network {net_id} is not a valid external network."
                )));
            }
            Networks::check_quota(m, &owner, "floatingip", 1)?;
            let mac = fresh_mac(m);
            let want = opt_str(&b, "floating_ip_address")?;
            let sub = opt_str(&b, "subnet_id")?;
            let ips = if want.is_some() || sub.is_some() {
                if let Some(sid) = &sub {
                    let s2 = rec(m, SUBNET, sid).ok_or_else(|| not_found("Subnet", sid))?;
                    if st(&s2, "network_id") != net_id {
                        return Err(Error::BadRequest(format!(
                            "Bad floatingip request: Subnet {sid} is not on network {net_id}."
                        )));
                    }
                }
                allocate(
                    m,
                    &net_id,
                    &mac,
                    Some(&[IpRequest {
                        subnet_id: sub.clone(),
                        ip_address: want.clone(),
                    }]),
                    None,
                )?
            } else {
                let mut got = Err(Error::Conflict(format!(
                    "No more IP addresses available on network {net_id}."
                )));
                for s2 in super::subnets_of(m, &net_id)
                    .into_iter()
                    .filter(|x| x["ip_version"] == 4)
                {
                    got = allocate(
                        m,
                        &net_id,
                        &mac,
                        Some(&[IpRequest {
                            subnet_id: Some(st(s2, "id").into()),
                            ip_address: None,
                        }]),
                        None,
                    );
                    if got.is_ok() {
                        break;
                    }
                }
                got?
            };
            let (sid, addr) = ips
                .first()
                .map(|v| {
                    (
                        v["subnet_id"].as_str().unwrap_or("").to_string(),
                        v["ip_address"].as_str().unwrap_or("").to_string(),
                    )
                })
                .ok_or_else(|| Error::Conflict("No address could be allocated.".into()))?;
            let _ = sid;
            let mut f = standard(&owner);
            f.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            f.insert("floating_network_id".into(), json!(net_id));
            f.insert("floating_ip_address".into(), json!(addr));
            f.insert("fixed_ip_address".into(), Value::Null);
            f.insert("port_id".into(), Value::Null);
            f.insert("router_id".into(), Value::Null);
            f.insert("dns_domain".into(), json!(""));
            f.insert("dns_name".into(), json!(""));
            f.insert("port_forwardings".into(), json!([]));
            f.insert("qos_policy_id".into(), Value::Null);
            if let Some(pid) = opt_str(&b, "port_id")? {
                associate(m, a, &mut f, &pid, opt_str(&b, "fixed_ip_address")?)?;
            }
            let port = service_port("", &net_id, OWNER_FIP, st(&f, "id"), mac, ips);
            Ok((vec![put(PORT, &port), put(FIP, &f)], f))
        })
        .await?;
    Ok(created("floatingip", Value::Object(fip_view(&f))))
}

async fn update_fip(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "floatingip")?;
    check_keys(
        &b,
        &[
            "port_id",
            "fixed_ip_address",
            "description",
            "qos_policy_id",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let f = s
        .change(|m| {
            let mut f = find_fip(m, a, &id)?;
            if_match.check(&f)?;
            if let Some(v) = opt_str(&b, "description")? {
                f.insert("description".into(), json!(v));
            }
            match b.get("port_id") {
                Some(Value::Null) => disassociate(&mut f),
                Some(Value::String(pid)) => {
                    associate(m, a, &mut f, pid, opt_str(&b, "fixed_ip_address")?)?
                }
                Some(_) => return Err(Error::BadRequest("Invalid input for port_id.".into())),
                None => {}
            }
            bump(&mut f);
            Ok((vec![put(FIP, &f)], f))
        })
        .await?;
    Ok(Json(json!({"floatingip": fip_view(&f)})))
}

async fn delete_fip(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        let cur = find_fip(m, a, &id)?;
        if_match.check(&cur)?;
        let mut ops: Vec<Op> = recs(m, PORT)
            .filter(|p| st(p, "device_id") == id && st(p, "device_owner") == OWNER_FIP)
            .map(|p| Op::delete(PORT, st(p, "id")))
            .collect();
        ops.push(Op::delete(FIP, &id));
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Security groups and rules.

fn find_sg(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, SG, id)
        .filter(|g| owns(auth, g))
        .ok_or_else(|| Error::NotFound(format!("Security group {id} does not exist")))
}

/// Makes the caller's default group exist before it is looked for.
async fn ensure_default_sg(s: &Networks, auth: &Auth) -> Result<()> {
    let p = project(auth).to_string();
    if p.is_empty() {
        return Ok(());
    }
    let missing = {
        let m = s.identity.model();
        default_sg_id(&m, &p).is_none()
    };
    if missing {
        s.change(|m| Ok((Networks::default_sg_ops(m, &p), ())))
            .await?;
    }
    Ok(())
}

async fn list_sgs(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    if auth.0.has("member") || is_admin(&auth) {
        ensure_default_sg(svc(&app), &auth).await?;
    }
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, SG)
            .filter(|g| owns(&auth, g))
            .map(|g| sg_view(&m, g))
            .collect()
    };
    list_response(&app, raw, "security_groups", SG_FIELDS, items)
}

async fn show_sg(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let g = find_sg(&m, &auth, &id)?;
    Ok(Json(
        json!({"security_group": show_fields(&raw, sg_view(&m, &g))}),
    ))
}

async fn create_sg(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "security_group")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "tenant_id",
            "project_id",
            "stateful",
            "shared",
        ],
    )?;
    let s = svc(&app);
    ensure_default_sg(s, &auth).await?;
    let a = &auth;
    let g = s
        .change(|m| {
            let owner = owner_for(a, &b)?;
            let name = opt_str(&b, "name")?.unwrap_or_default();
            let mut ops = Networks::default_sg_ops(m, &owner);
            if name == "default" && (!ops.is_empty() || default_sg_id(m, &owner).is_some()) {
                return Err(Error::Conflict(
                    "Default security group already exists.".into(),
                ));
            }
            Networks::check_quota(m, &owner, "security_group", 1)?;
            let mut g = standard(&owner);
            g.insert("name".into(), json!(name));
            g.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            g.insert(
                "stateful".into(),
                json!(opt_bool(&b, "stateful")?.unwrap_or(true)),
            );
            g.insert("shared".into(), json!(false));
            let gid = st(&g, "id").to_string();
            ops.push(put(SG, &g));
            for eth in ["IPv4", "IPv6"] {
                let mut r = standard(&owner);
                r.remove("tags");
                for (k, v) in [
                    ("security_group_id", json!(gid)),
                    ("direction", json!("egress")),
                    ("ethertype", json!(eth)),
                    ("protocol", Value::Null),
                    ("port_range_min", Value::Null),
                    ("port_range_max", Value::Null),
                    ("remote_ip_prefix", Value::Null),
                    ("remote_group_id", Value::Null),
                    ("remote_address_group_id", Value::Null),
                    ("normalized_cidr", Value::Null),
                    ("description", json!("")),
                    ("belongs_to_default_sg", json!(false)),
                ] {
                    r.insert(k.into(), v);
                }
                ops.push(put(RULE, &r));
            }
            Ok((ops, g))
        })
        .await?;
    let m = app.identity.model();
    Ok(created("security_group", Value::Object(sg_view(&m, &g))))
}

async fn update_sg(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "security_group")?;
    check_keys(&b, &["name", "description", "stateful"])?;
    let s = svc(&app);
    let a = &auth;
    let g = s
        .change(|m| {
            let mut g = find_sg(m, a, &id)?;
            if_match.check(&g)?;
            if let Some(n) = opt_str(&b, "name")? {
                if st(&g, "name") == "default" && n != "default" {
                    return Err(Error::Conflict(
                        "Updating default security group not allowed.".into(),
                    ));
                }
                if n == "default" && st(&g, "name") != "default" {
                    return Err(Error::Conflict(
                        "Default security group already exists.".into(),
                    ));
                }
                g.insert("name".into(), json!(n));
            }
            if let Some(v) = opt_str(&b, "description")? {
                g.insert("description".into(), json!(v));
            }
            if let Some(v) = opt_bool(&b, "stateful")? {
                g.insert("stateful".into(), json!(v));
            }
            bump(&mut g);
            Ok((vec![put(SG, &g)], g))
        })
        .await?;
    let m = app.identity.model();
    Ok(Json(json!({"security_group": sg_view(&m, &g)})))
}

async fn delete_sg(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        let g = find_sg(m, a, &id)?;
        if_match.check(&g)?;
        if st(&g, "name") == "default" && !is_admin(a) {
            return Err(Error::Conflict(
                "Removing default security group not allowed.".into(),
            ));
        }
        if recs(m, PORT).any(|p| str_list(p.get("security_groups")).contains(&id)) {
            return Err(Error::Conflict(format!("Security Group {id} in use.")));
        }
        // Its rules go, and so do other groups' rules naming it as their
        // remote group (Neutron cascades them).
        let mut ops: Vec<Op> = recs(m, RULE)
            .filter(|r| st(r, "security_group_id") == id || st(r, "remote_group_id") == id)
            .map(|r| Op::delete(RULE, st(r, "id")))
            .collect();
        ops.push(Op::delete(SG, &id));
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn list_rules(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, RULE)
            .filter(|r| {
                owns(&auth, r)
                    || rec(&m, SG, st(r, "security_group_id")).is_some_and(|g| owns(&auth, &g))
            })
            .map(public)
            .collect()
    };
    list_response(&app, raw, "security_group_rules", RULE_FIELDS, items)
}

fn find_rule(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, RULE, id)
        .filter(|r| {
            owns(auth, r) || rec(m, SG, st(r, "security_group_id")).is_some_and(|g| owns(auth, &g))
        })
        .ok_or_else(|| Error::NotFound(format!("Security group rule {id} does not exist")))
}

async fn show_rule(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let r = find_rule(&m, &auth, &id)?;
    Ok(Json(
        json!({"security_group_rule": show_fields(&raw, public(&r))}),
    ))
}

const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// The protocol as stored (a name, or a number as a string) and its number.
fn parse_protocol(v: Option<&Value>) -> Result<(Value, Option<u8>)> {
    let s = match v {
        None | Some(Value::Null) => return Ok((Value::Null, None)),
        Some(Value::String(s)) if s.is_empty() || s == "any" => return Ok((Value::Null, None)),
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "Security group rule protocol {v} not supported."
            )))
        }
    };
    if let Some((name, n)) = PROTOCOLS.iter().find(|(p, _)| *p == s) {
        return Ok((json!(name), Some(*n)));
    }
    match s.parse::<u16>() {
        Ok(n) if n <= 255 => Ok((json!(s), Some(n as u8))),
        _ => Err(Error::BadRequest(format!(
            "Security group rule protocol {s} not supported. Only protocol values [None, {}] and integer representations [0 to 255] are supported.",
            PROTOCOLS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn plan_rule(m: &Model, auth: &Auth, b: &Rec) -> Result<(Vec<Op>, Rec)> {
    check_keys(
        b,
        &[
            "security_group_id",
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
            "remote_address_group_id",
            "description",
            "tenant_id",
            "project_id",
        ],
    )?;
    let gid = opt_str(b, "security_group_id")?.ok_or_else(|| {
        Error::BadRequest("Invalid input: 'security_group_id' is required.".into())
    })?;
    let g = find_sg(m, auth, &gid)?;
    let owner = owner_for(auth, b).unwrap_or_else(|_| st(&g, "project_id").to_string());
    let owner = if owner.is_empty() {
        st(&g, "project_id").to_string()
    } else {
        owner
    };
    let direction = opt_str(b, "direction")?.unwrap_or_default();
    if direction != "ingress" && direction != "egress" {
        return Err(Error::BadRequest(format!(
            "Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress']."
        )));
    }
    let ethertype = opt_str(b, "ethertype")?.unwrap_or_else(|| "IPv4".into());
    let ethertype = match ethertype.to_lowercase().as_str() {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        _ => {
            return Err(Error::BadRequest(format!(
                "Invalid input for ethertype. Reason: '{ethertype}' is not in ['IPv4', 'IPv6']."
            )))
        }
    };
    let (protocol, number) = parse_protocol(b.get("protocol"))?;
    let min = opt_int(b, "port_range_min")?;
    let max = opt_int(b, "port_range_max")?;
    match number {
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => {
            for v in [min, max].into_iter().flatten() {
                if !(1..=65535).contains(&v) {
                    return Err(Error::BadRequest(format!("Invalid value for port {v}")));
                }
            }
            match (min, max) {
                (None, Some(_)) => {
                    return Err(Error::BadRequest(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(Error::BadRequest(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ))
                }
                _ => {}
            }
        }
        Some(1) | Some(58) => {
            if max.is_some() && min.is_none() {
                return Err(Error::BadRequest(format!(
                    "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                    max.unwrap_or(0)
                )));
            }
            if let Some(v) = min.filter(|v| !(0..=255).contains(v)) {
                return Err(Error::BadRequest(format!(
                    "Invalid value for ICMP type (port-range-min): {v}. It must be 0 to 255."
                )));
            }
            if let Some(v) = max.filter(|v| !(0..=255).contains(v)) {
                return Err(Error::BadRequest(format!(
                    "Invalid value for ICMP code (port-range-max): {v}. It must be 0 to 255."
                )));
            }
        }
        _ => {
            if min.is_some() || max.is_some() {
                return Err(Error::BadRequest(
                    "Port range is only allowed for protocols TCP, UDP, UDP-Lite, SCTP, DCCP, ICMP and ICMPv6.".into(),
                ));
            }
        }
    }
    if number == Some(58) && ethertype == "IPv4" {
        return Err(Error::BadRequest(
            "Protocol ipv6-icmp is not supported with IPv4 ethertype.".into(),
        ));
    }
    let prefix = opt_str(b, "remote_ip_prefix")?;
    let remote_group = opt_str(b, "remote_group_id")?;
    if prefix.is_some() && remote_group.is_some() {
        return Err(Error::BadRequest(
            "Only remote_ip_prefix or remote_group_id may be provided.".into(),
        ));
    }
    let (prefix, normalized) = match prefix {
        Some(p) => {
            let net: ipnet::IpNet = p
                .parse()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| Error::BadRequest(format!("Invalid input for remote_ip_prefix. Reason: '{p}' is not a valid IP subnet.")))?;
            let v = if net.max_prefix_len() == 32 {
                "IPv4"
            } else {
                "IPv6"
            };
            if v != ethertype {
                return Err(Error::BadRequest(format!(
                    "Conflicting value ethertype {ethertype} for CIDR {p}"
                )));
            }
            (json!(net.to_string()), json!(net.trunc().to_string()))
        }
        None => (Value::Null, Value::Null),
    };
    if let Some(rg) = &remote_group {
        if rec(m, SG, rg).filter(|x| owns(auth, x)).is_none() {
            return Err(Error::NotFound(format!(
                "Security group {rg} does not exist"
            )));
        }
    }
    let max = match number {
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => max.or(min),
        _ => max,
    };
    let (pmin, pmax) = (
        min.map(|v| json!(v)).unwrap_or(Value::Null),
        max.map(|v| json!(v)).unwrap_or(Value::Null),
    );
    let same = |r: &Rec| {
        st(r, "security_group_id") == gid
            && st(r, "direction") == direction
            && st(r, "ethertype") == ethertype
            && r.get("protocol").unwrap_or(&Value::Null) == &protocol
            && r.get("port_range_min").unwrap_or(&Value::Null) == &pmin
            && r.get("port_range_max").unwrap_or(&Value::Null) == &pmax
            && r.get("normalized_cidr").unwrap_or(&Value::Null) == &normalized
            && r.get("remote_group_id").and_then(|v| v.as_str()) == remote_group.as_deref()
    };
    if let Some(dup) = recs(m, RULE).find(|r| same(r)) {
        return Err(Error::Conflict(format!(
            "Security group rule already exists. Rule id is {}.",
            st(dup, "id")
        )));
    }
    Networks::check_quota(m, &owner, "security_group_rule", 1)?;
    let mut r = standard(&owner);
    r.remove("tags");
    for (k, v) in [
        ("security_group_id", json!(gid)),
        ("direction", json!(direction)),
        ("ethertype", json!(ethertype)),
        ("protocol", protocol),
        ("port_range_min", pmin),
        ("port_range_max", pmax),
        ("remote_ip_prefix", prefix),
        ("remote_group_id", json!(remote_group)),
        ("remote_address_group_id", Value::Null),
        ("normalized_cidr", normalized),
        (
            "description",
            json!(opt_str(b, "description")?.unwrap_or_default()),
        ),
        ("belongs_to_default_sg", json!(st(&g, "name") == "default")),
    ] {
        r.insert(k.into(), v);
    }
    Ok((vec![put(RULE, &r)], r))
}

async fn create_rule(State(app): State<AppState>, auth: Auth, body: Bytes) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "security_group_rule", "security_group_rules")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let r = s.change(|m| plan_rule(m, a, &b)).await?;
        out.push(Value::Object(public(&r)));
    }
    Ok(if bulk {
        created("security_group_rules", Value::Array(out))
    } else {
        created("security_group_rule", out.pop().unwrap_or(Value::Null))
    })
}

async fn delete_rule(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        find_rule(m, a, &id)?;
        Ok((vec![Op::delete(RULE, &id)], ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Quotas.

fn quota_doc(m: &Model, project: &str) -> Map<String, Value> {
    QUOTA_DEFAULTS
        .iter()
        .map(|(k, _)| (k.to_string(), json!(Networks::quota(m, project, k))))
        .collect()
}

fn may_read_quota(auth: &Auth, p: &str) -> Result<()> {
    if is_admin(auth) || project(auth) == p {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ))
    }
}

async fn list_quotas(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ));
    }
    let m = app.identity.model();
    let q: Vec<Value> = m
        .docs_of(QUOTA)
        .filter_map(|v| {
            v.get("project_id")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .map(|p| {
            let mut d = quota_doc(&m, &p);
            d.insert("project_id".into(), json!(p));
            d.insert("tenant_id".into(), json!(p));
            Value::Object(d)
        })
        .collect();
    Ok(Json(json!({"quotas": q})))
}

async fn show_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let m = app.identity.model();
    Ok(Json(json!({"quota": quota_doc(&m, &p)})))
}

async fn default_quota(
    _app: State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let d: Map<String, Value> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(Json(json!({"quota": d})))
}

async fn quota_details(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let m = app.identity.model();
    let d: Map<String, Value> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, _)| {
            (
                k.to_string(),
                json!({"limit": Networks::quota(&m, &p, k), "used": Networks::used(&m, &p, k), "reserved": 0}),
            )
        })
        .collect();
    Ok(Json(json!({"quota": d})))
}

async fn update_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:update_quota is disallowed by policy".into(),
        ));
    }
    let b = body_obj(&body, "quota")?;
    let mut vals = Vec::new();
    for (k, v) in &b {
        if k == "force" || k == "check_limit" {
            continue;
        }
        if !QUOTA_DEFAULTS.iter().any(|(q, _)| q == k) {
            return Err(Error::BadRequest(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .filter(|n| *n >= -1)
        .ok_or_else(|| Error::BadRequest(format!("Invalid input for {k}. Reason: '{v}' is not a valid quota (an integer, -1 for unlimited).")))?;
        vals.push((k.clone(), n));
    }
    let s = svc(&app);
    let doc = s
        .change(|m| {
            let mut d: Rec = m
                .doc(QUOTA, &p)
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            d.insert("id".into(), json!(p));
            d.insert("project_id".into(), json!(p));
            for (k, n) in vals.clone() {
                d.insert(k, json!(n));
            }
            Ok((vec![put(QUOTA, &d)], ()))
        })
        .await;
    doc?;
    let m = app.identity.model();
    Ok(Json(json!({"quota": quota_doc(&m, &p)})))
}

async fn delete_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Response> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:delete_quota is disallowed by policy".into(),
        ));
    }
    svc(&app)
        .change(|_| Ok((vec![Op::delete(QUOTA, &p)], ())))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Zones, agents, tags.

async fn zones(_auth: Auth) -> Json<Value> {
    Json(json!({"availability_zones": [
        {"name": "nova", "resource": "network", "state": "available"},
        {"name": "nova", "resource": "router", "state": "available"}
    ]}))
}

async fn agents(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        // Neutron filters what policy hides: a member sees no agents.
        return Ok(Json(json!({"agents": []})));
    }
    let s = svc(&app);
    let nn = s.pusher.network_node().unwrap_or("").to_string();
    let mut out = Vec::new();
    for (name, alive, error) in s.pusher.status() {
        let mut kinds = vec![("Open vSwitch agent", "ursa-netd")];
        if name == nn {
            kinds.push(("DHCP agent", "ursa-netd-dhcp"));
            kinds.push(("L3 agent", "ursa-netd-l3"));
            kinds.push(("Metadata agent", "ursa-netd-metadata"));
        }
        for (ty, binary) in kinds {
            out.push(json!({
                "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{name}/{ty}").as_bytes()).to_string(),
                "agent_type": ty, "binary": binary, "host": name, "alive": alive,
                "admin_state_up": true, "availability_zone": "nova", "topic": "N/A",
                "description": error, "configurations": {}, "resources_synced": alive,
                "created_at": "", "started_at": "", "heartbeat_timestamp": ""
            }));
        }
    }
    Ok(Json(json!({"agents": out})))
}

fn tag_kind(coll: &str) -> Result<&'static str> {
    Ok(match coll {
        "networks" => NETWORK,
        "subnets" => SUBNET,
        "ports" => PORT,
        "routers" => ROUTER,
        "floatingips" => FIP,
        "security-groups" => SG,
        _ => return Err(Error::NotFound("The resource could not be found.".into())),
    })
}

fn tag_target(m: &Model, auth: &Auth, kind: &str, id: &str) -> Result<Rec> {
    match kind {
        NETWORK => find_network(m, auth, id),
        SUBNET => find_subnet(m, auth, id),
        PORT => find_port(m, auth, id),
        ROUTER => find_router(m, auth, id),
        FIP => find_fip(m, auth, id),
        _ => find_sg(m, auth, id),
    }
}

fn check_tag(t: &str) -> Result<()> {
    if t.is_empty() || t.len() > 255 || t.contains(',') || t.contains('/') {
        return Err(Error::BadRequest(format!(
            "Invalid input for tags: '{t}' is not a valid tag."
        )));
    }
    Ok(())
}

async fn retag(
    app: &AppState,
    auth: &Auth,
    coll: &str,
    id: &str,
    mut f: impl FnMut(&mut Vec<String>) -> Result<()>,
) -> Result<Vec<String>> {
    write_access(auth)?;
    let kind = tag_kind(coll)?;
    svc(app)
        .change(|m| {
            let mut r = tag_target(m, auth, kind, id)?;
            if !owns(auth, &r) {
                return Err(Error::Forbidden(
                    "Changing tags of this resource is disallowed by policy".into(),
                ));
            }
            let mut tags = str_list(r.get("tags"));
            f(&mut tags)?;
            r.insert("tags".into(), json!(tags));
            bump(&mut r);
            Ok((vec![put(kind, &r)], tags))
        })
        .await
}

type TagPath = Path<(String, String)>;
type TagItemPath = Path<(String, String, String)>;

async fn get_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
) -> Result<Json<Value>> {
    let kind = tag_kind(&coll)?;
    let m = app.identity.model();
    let r = tag_target(&m, &auth, kind, &id)?;
    Ok(Json(json!({"tags": str_list(r.get("tags"))})))
}

async fn has_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    let kind = tag_kind(&coll)?;
    let m = app.identity.model();
    let r = tag_target(&m, &auth, kind, &id)?;
    if str_list(r.get("tags")).contains(&tag) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(Error::NotFound(format!(
            "Tag {tag} could not be found for {coll} {id}."
        )))
    }
}

async fn set_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
    body: Bytes,
) -> Result<Json<Value>> {
    let v: Value = parse_body(&body)?;
    let tags = v
        .get("tags")
        .and_then(|t| t.as_array())
        .ok_or_else(|| Error::BadRequest("Invalid input: 'tags' must be a list.".into()))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::BadRequest("Invalid input: tags are strings.".into()))
        })
        .collect::<Result<Vec<String>>>()?;
    for t in &tags {
        check_tag(t)?;
    }
    let tags = retag(&app, &auth, &coll, &id, |cur| {
        let mut uniq: Vec<String> = Vec::new();
        for t in tags.clone() {
            if !uniq.contains(&t) {
                uniq.push(t);
            }
        }
        *cur = uniq;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"tags": tags})))
}

async fn add_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    check_tag(&tag)?;
    retag(&app, &auth, &coll, &id, |cur| {
        if !cur.contains(&tag) {
            cur.push(tag.clone());
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::CREATED))
}

async fn remove_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    retag(&app, &auth, &coll, &id, |cur| {
        let before = cur.len();
        cur.retain(|t| *t != tag);
        if cur.len() == before {
            return Err(Error::NotFound(format!("Tag {tag} could not be found.")));
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn clear_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
) -> Result<Response> {
    retag(&app, &auth, &coll, &id, |cur| {
        cur.clear();
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// What `ursa up` creates on a fresh cloud.

/// Creates, once, the external flat network `public` (172.24.4.0/24, as
/// devstack does) and, in the admin project, a `private` network
/// (10.0.0.0/24) with a router `router1` joining it to `public`.
pub async fn bootstrap(s: &Networks, admin_project: &str) -> Result<()> {
    let exists = {
        let m = s.identity.model();
        let found = recs(&m, NETWORK).any(|n| st(n, "name") == "public");
        found
    };
    if exists || !s.cfg.physnets.iter().any(|p| p == "public") {
        return Ok(());
    }
    let auth = service_caller(admin_project);
    let a = &auth;
    let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
    let public_net = s
        .change(|m| {
            plan_network(
                s,
                m,
                a,
                &obj(
                    json!({"name": "public", "router:external": true, "shared": false,
                "provider:network_type": "flat", "provider:physical_network": "public"}),
                ),
            )
        })
        .await?;
    let pid = st(&public_net, "id").to_string();
    s.change(|m| {
        plan_subnet(
            m,
            a,
            &obj(
                json!({"name": "public-subnet", "network_id": pid, "ip_version": 4,
            "cidr": "172.24.4.0/24", "gateway_ip": "172.24.4.1", "enable_dhcp": false,
            "allocation_pools": [{"start": "172.24.4.2", "end": "172.24.4.254"}]}),
            ),
        )
    })
    .await?;
    let private = s
        .change(|m| plan_network(s, m, a, &obj(json!({"name": "private"}))))
        .await?;
    let nid = st(&private, "id").to_string();
    let sub = s
        .change(|m| {
            plan_subnet(
                m,
                a,
                &obj(
                    json!({"name": "private-subnet", "network_id": nid, "ip_version": 4,
                "cidr": "10.0.0.0/24", "dns_nameservers": []}),
                ),
            )
        })
        .await?;
    sync_dhcp_port(s, &nid).await;
    let sid = st(&sub, "id").to_string();
    s.change(|m| {
        let mut r = standard(admin_project);
        for (k, v) in [
            ("name", json!("router1")),
            ("description", json!("")),
            ("admin_state_up", json!(true)),
            ("status", json!("ACTIVE")),
            ("external_gateway_info", Value::Null),
            ("routes", json!([])),
            ("distributed", json!(false)),
            ("ha", json!(false)),
            ("availability_zone_hints", json!([])),
            ("availability_zones", json!(["nova"])),
            ("flavor_id", Value::Null),
        ] {
            r.insert(k.into(), v);
        }
        let mut ops = Vec::new();
        plan_gateway(m, a, &mut r, &json!({"network_id": pid}), &mut ops)?;
        let mac = fresh_mac(m);
        let ips = allocate(
            m,
            &nid,
            &mac,
            Some(&[IpRequest {
                subnet_id: Some(sid.clone()),
                ip_address: Some("10.0.0.1".into()),
            }]),
            None,
        )?;
        ops.push(put(
            PORT,
            &service_port(admin_project, &nid, OWNER_ROUTER_IF, st(&r, "id"), mac, ips),
        ));
        ops.push(put(ROUTER, &r));
        Ok((ops, ()))
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------
// What the compute service asks of the network service.

/// An admin caller acting for `project` (internal steps after the user's
/// own rights were checked).
pub fn service_caller(project: &str) -> Auth {
    Auth(ursa_core::policy::Caller {
        user_id: "ursa-compute".into(),
        user_domain_id: "default".into(),
        scope: ursa_identity::token::Scope::Project(project.into()),
        project_domain_id: Some("default".into()),
        roles: ["admin", "member", "reader"]
            .iter()
            .map(|r| r.to_string())
            .collect(),
        audit_ids: Vec::new(),
        app_cred_id: None,
    })
}

/// The networks a project may plug a server into without naming one: its
/// own and the shared ones (never external ones).
pub fn usable_networks(s: &Networks, auth: &Auth) -> Vec<String> {
    let m = s.identity.model();
    recs(&m, NETWORK)
        .filter(|n| n["router:external"] != true && (owns(auth, n) || n["shared"] == true))
        .map(|n| st(n, "id").to_string())
        .collect()
}

/// Whether `auth` may plug into this network (404 otherwise).
pub fn check_network(s: &Networks, auth: &Auth, net_id: &str) -> Result<()> {
    let m = s.identity.model();
    let n = find_network(&m, auth, net_id)?;
    if n["shared"] != true && !owns(auth, &n) {
        return Err(not_found("Network", net_id));
    }
    Ok(())
}

/// Creates a server's port on `net_id`, bound to compute node `host`.
pub async fn create_server_port(
    s: &Networks,
    auth: &Auth,
    net_id: &str,
    fixed_ip: Option<&str>,
    security_groups: &[String],
    server_id: &str,
    host: &str,
) -> Result<Rec> {
    check_network(s, auth, net_id)?;
    let owner = project(auth).to_string();
    let mut body = json!({"network_id": net_id, "device_id": server_id, "device_owner": "compute:nova",
                          "binding:host_id": host, "project_id": owner});
    if !security_groups.is_empty() {
        body["security_groups"] = json!(security_groups);
    }
    if let Some(ip) = fixed_ip {
        body["fixed_ips"] = json!([{ "ip_address": ip }]);
    }
    let body = body.as_object().cloned().unwrap_or_default();
    let svc_auth = service_caller(&owner);
    s.change(|m| plan_port(m, &svc_auth, &body)).await
}

/// Binds a port the caller can see to a server on `host` (a server booted
/// with `{"port": …}`). The port is marked as given, so that deleting the
/// server unbinds it instead of deleting it, as Nova does.
pub async fn bind_server_port(
    s: &Networks,
    auth: &Auth,
    port_id: &str,
    server_id: &str,
    host: &str,
) -> Result<Rec> {
    s.change(|m| {
        let mut p = find_port(m, auth, port_id)?;
        if !st(&p, "device_id").is_empty() {
            return Err(Error::Conflict(format!("Port {port_id} is still in use.")));
        }
        p.insert("device_id".into(), json!(server_id));
        p.insert("device_owner".into(), json!("compute:nova"));
        p.insert("binding:host_id".into(), json!(host));
        p.insert("ursa:given".into(), json!(true));
        bump(&mut p);
        Ok((vec![put(PORT, &p)], p))
    })
    .await
}

/// A server's ports when it goes: the ones it made are deleted (their
/// floating IPs let go), the ones it was given are unbound and kept.
pub async fn delete_device_ports(s: &Networks, device_id: &str) -> Result<()> {
    s.change(|m| {
        let ids: Vec<String> = recs(m, PORT)
            .filter(|p| st(p, "device_id") == device_id)
            .map(|p| st(p, "id").to_string())
            .collect();
        Ok((ids.iter().flat_map(|id| plan_release(m, id)).collect(), ()))
    })
    .await
}

/// One port taken off its server (interface detach), as above.
pub async fn release_port(s: &Networks, port_id: &str) -> Result<()> {
    s.change(|m| Ok((plan_release(m, port_id), ()))).await
}

fn plan_release(m: &Model, port_id: &str) -> Vec<Op> {
    let Some(p) = rec(m, PORT, port_id) else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    if p.get("ursa:given") == Some(&json!(true)) {
        let mut p = p.clone();
        p.remove("ursa:given");
        for k in ["device_id", "device_owner", "binding:host_id"] {
            p.insert(k.into(), json!(""));
        }
        bump(&mut p);
        ops.push(put(PORT, &p));
        return ops;
    }
    for f in recs(m, FIP).filter(|f| st(f, "port_id") == port_id) {
        let mut f = f.clone();
        disassociate(&mut f);
        ops.push(put(FIP, &f));
    }
    ops.push(Op::delete(PORT, port_id));
    ops
}

/// A server's addresses as Nova shows them, by network name.
pub fn addresses(m: &Model, device_id: &str) -> Value {
    let mut out = Map::new();
    let mut ports: Vec<&Rec> = recs(m, PORT)
        .filter(|p| st(p, "device_id") == device_id)
        .collect();
    ports.sort_by_key(|p| st(p, "created_at").to_string());
    for p in ports {
        let name = rec(m, NETWORK, st(p, "network_id"))
            .map(|n| st(&n, "name").to_string())
            .unwrap_or_default();
        let mac = st(p, "mac_address").to_string();
        let list = out.entry(name).or_insert_with(|| json!([]));
        for (_, ip) in fixed_ips(p) {
            let v = if ip.contains(':') { 6 } else { 4 };
            list.as_array_mut()
                .expect("list")
                .push(json!({"version": v, "addr": ip,
                "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}));
            for f in recs(m, FIP)
                .filter(|f| st(f, "port_id") == st(p, "id") && st(f, "fixed_ip_address") == ip)
            {
                list.as_array_mut().expect("list").push(json!({"version": 4,
                    "addr": st(f, "floating_ip_address"), "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": mac}));
            }
        }
    }
    Value::Object(out)
}
