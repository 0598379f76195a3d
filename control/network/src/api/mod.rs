//! Neutron v2.0 over HTTP at `/network/v2.0`: networks, subnets, ports,
//! routers (interfaces, gateway, extra routes), floating IPs, security
//! groups and rules, quotas, tags, extensions and availability zones.
//! Lists filter, sort and page as [`crate::query`] describes; creates
//! accept Neutron's bulk form (`{"networks": [...]}`).

use crate::query::{self, ListQuery};
use crate::{
    bump, fixed_ips, ipam, public, put, rec, recs, st, standard, str_list, IfMatch, IpRequest,
    Networks, Rec, FIP, NETWORK, OWNER_DHCP, OWNER_FIP, OWNER_ROUTER_GW, OWNER_ROUTER_IF, PORT,
    QUOTA, QUOTA_DEFAULTS, ROUTER, RULE, SG, SUBNET,
};
use crate::{port_table, rows, sg_table, AppState, NetWriter};
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

mod bootstrap;
mod floating_ips;
mod for_compute;
mod networks;
mod ports;
mod quotas;
mod routers;
mod security_groups;
mod subnet_pools;
mod subnets;
mod tags;
mod views;
pub use bootstrap::*;
use floating_ips::*;
pub use for_compute::*;
use networks::*;
use ports::*;
use quotas::*;
use routers::*;
use security_groups::*;
use subnet_pools::*;
use subnets::*;
use tags::*;
use views::*;

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
    "port_details",
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
    ("address-scope", "Address scope", "Address scopes extension."),
    ("agent", "agent", "The agent management extension (netd nodes)."),
    ("default-subnetpools", "Default Subnetpools", "Provides ability to mark and use a subnetpool as the default."),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource"),
    ("service-type", "Neutron Service Type Management", "API for retrieving service providers for Neutron advanced services"),
    ("subnet_allocation", "Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
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
        .route("/subnetpools", get(list_pools).post(create_pool))
        .route(
            "/subnetpools/{id}",
            get(show_pool).put(update_pool).delete(delete_pool),
        )
        .route("/address-scopes", get(list_scopes).post(create_scope))
        .route(
            "/address-scopes/{id}",
            get(show_scope).put(update_scope).delete(delete_scope),
        )
        .route("/service-providers", get(service_providers))
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
    let q = ListQuery::parse(raw.as_deref())?;
    Ok(Json(query::answer(
        &q,
        items,
        known,
        coll,
        &url(app, coll),
    )?))
}

fn show_fields(raw: &Option<String>, v: Rec) -> Rec {
    let q = ListQuery::parse(raw.as_deref()).unwrap_or_default();
    query::select(v, &q.all("fields"))
}

fn created(key: &str, v: Value) -> Response {
    (StatusCode::CREATED, Json(json!({ key: v }))).into_response()
}
