//! What the compute service asks of the network service.

use super::*;

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
        access_rules: None,
    })
}

/// The networks a project may plug a server into without naming one: its
/// own and the shared ones (never external ones).
pub async fn usable_networks(s: &Networks, auth: &Auth) -> Result<Vec<String>> {
    let nets = rows::select(
        &mut *s.conn().await?,
        "SELECT body FROM net_networks WHERE project_id = $1 AND external <> 'true' \
         UNION SELECT body FROM net_networks WHERE shared = 'true' AND external <> 'true'",
        &[project(auth)],
    )
    .await?;
    let nets = crate::by_creation(nets.iter().collect());
    Ok(nets.iter().map(|n| st(n, "id").to_string()).collect())
}

/// Whether `auth` may plug into this network (404 otherwise).
pub async fn check_network(s: &Networks, auth: &Auth, net_id: &str) -> Result<()> {
    let n = find_network(&mut *s.conn().await?, auth, net_id).await?;
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
    check_network(s, auth, net_id).await?;
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
    let mut w = s.write().await?;
    let p = insert_port(&mut w, &svc_auth, &body).await?;
    w.commit(&[]).await?;
    Ok(p)
}

/// The names of the security groups `ids` (those that exist), by id.
pub async fn security_group_names(
    s: &Networks,
    ids: &[String],
) -> Result<std::collections::HashMap<String, String>> {
    let groups = sg_table::groups(&mut *s.conn().await?, ids).await?;
    Ok(groups
        .into_iter()
        .map(|(id, g)| (id, st(&g, "name").to_string()))
        .collect())
}

/// The id of the security group a server asks for by `name` (or id): the
/// project's own group of that name, else its group with that id (any
/// project's, for an admin).
pub async fn security_group_for(
    s: &Networks,
    project: &str,
    admin: bool,
    name: &str,
) -> Result<Option<String>> {
    let mut c = s.conn().await?;
    if let Some(g) = sg_table::named(&mut c, project, name).await? {
        return Ok(Some(st(&g, "id").to_string()));
    }
    Ok(sg_table::group(&mut c, name)
        .await?
        .filter(|g| st(g, "project_id") == project || admin)
        .map(|g| st(&g, "id").to_string()))
}

/// The ports of these devices (servers), from their table.
pub async fn device_ports(s: &Networks, devices: &[String]) -> Result<Vec<Rec>> {
    port_table::of_devices(&mut *s.conn().await?, devices).await
}

/// A port by id (None when there is none).
pub async fn port(s: &Networks, id: &str) -> Result<Option<Rec>> {
    port_table::get(&mut *s.conn().await?, id).await
}

/// The ports holding an address (any subnet).
pub async fn ports_with_address(s: &Networks, address: &str) -> Result<Vec<Rec>> {
    port_table::with_address(&mut *s.conn().await?, address).await
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
    let mut w = s.write().await?;
    let got = port_table::get(w.conn(), port_id).await?;
    let mut p = find_port(w.conn(), auth, port_id, got).await?;
    if !st(&p, "device_id").is_empty() {
        return Err(Error::Conflict(format!("Port {port_id} is still in use.")));
    }
    p.insert("device_id".into(), json!(server_id));
    p.insert("device_owner".into(), json!("compute:nova"));
    p.insert("binding:host_id".into(), json!(host));
    p.insert("ursa:given".into(), json!(true));
    bump(&mut p);
    port_table::put(w.tx(), &p).await?;
    w.commit(&[]).await?;
    Ok(p)
}

/// A server's ports when it goes: the ones it made are deleted (their
/// floating IPs let go), the ones it was given are unbound and kept.
pub async fn delete_device_ports(s: &Networks, device_id: &str) -> Result<()> {
    let mut w = s.write().await?;
    let ports = port_table::of_device(w.conn(), device_id).await?;
    let fips = fips_of(w.conn(), &ports).await?;
    let ops: Vec<Op> = ports
        .into_iter()
        .flat_map(|p| plan_release(p, &fips))
        .collect();
    w.commit(&ops).await
}

/// One port taken off its server (interface detach), as above.
pub async fn release_port(s: &Networks, port_id: &str) -> Result<()> {
    let mut w = s.write().await?;
    let Some(p) = port_table::get(w.conn(), port_id).await? else {
        return Ok(());
    };
    let fips = fips_of(w.conn(), std::slice::from_ref(&p)).await?;
    let ops = plan_release(p, &fips);
    w.commit(&ops).await
}

/// The floating IPs of these ports.
pub(super) async fn fips_of(c: &mut sqlx::AnyConnection, ports: &[Rec]) -> Result<Vec<Rec>> {
    let ids: Vec<String> = ports.iter().map(|p| st(p, "id").to_string()).collect();
    rows::FIPS.where_in(c, "port_id", &ids).await
}

/// What a server's addresses show besides its ports: their floating IPs
/// and their networks' names.
#[derive(Debug, Default, Clone)]
pub struct AddressBook {
    pub fips: Vec<Rec>,
    /// network id → name
    pub names: std::collections::HashMap<String, String>,
}

/// The [`AddressBook`] of these ports.
pub async fn address_book(s: &Networks, ports: &[Rec]) -> Result<AddressBook> {
    let mut c = s.conn().await?;
    let ids: Vec<String> = ports
        .iter()
        .map(|p| st(p, "network_id").to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let names = rows::NETWORKS
        .by_ids(&mut c, &ids)
        .await?
        .into_iter()
        .map(|(id, n)| (id, st(&n, "name").to_string()))
        .collect();
    Ok(AddressBook {
        fips: fips_of(&mut c, ports).await?,
        names,
    })
}

/// What a port's release commits; `fips` holds (at least) its floating
/// IPs, which are let go.
pub(super) fn plan_release(p: Rec, fips: &[Rec]) -> Vec<Op> {
    let port_id = st(&p, "id").to_string();
    let port_id = port_id.as_str();
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
    for f in fips.iter().filter(|f| st(f, "port_id") == port_id) {
        let mut f = f.clone();
        disassociate(&mut f);
        ops.push(put(FIP, &f));
    }
    ops.push(Op::delete(PORT, port_id));
    ops
}

/// A server's addresses as Nova shows them, by network name; `ports`
/// holds (at least) the server's ports and `book` their
/// [`address_book`].
pub fn addresses(book: &AddressBook, ports: &[Rec], device_id: &str) -> Value {
    let mut out = Map::new();
    let mut ports: Vec<&Rec> = ports
        .iter()
        .filter(|p| st(p, "device_id") == device_id)
        .collect();
    ports.sort_by_key(|p| st(p, "created_at").to_string());
    for p in ports {
        let name = book
            .names
            .get(st(p, "network_id"))
            .cloned()
            .unwrap_or_default();
        let mac = st(p, "mac_address").to_string();
        let list = out.entry(name).or_insert_with(|| json!([]));
        for (_, ip) in fixed_ips(p) {
            let v = if ip.contains(':') { 6 } else { 4 };
            list.as_array_mut()
                .expect("list")
                .push(json!({"version": v, "addr": ip,
                "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}));
            for f in book
                .fips
                .iter()
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
