//! The Launch Instance wizard: Details, Source, Flavor, Networks (and
//! ports), Security Groups, Key Pair, Configuration (user data, config
//! drive) and Server Group, as steps of one form (the script shows one
//! step at a time; without it they are all shown). The request is the
//! compute API's own `POST /servers`.

use super::{options, Flavor, Flavors, Named, Networks, Ports, Volumes};
use crate::{back, Ctx, Form, Result};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Images {
    images: Vec<Named>,
}

#[derive(Deserialize)]
struct KeyPairs {
    keypairs: Vec<KeyPairItem>,
}

#[derive(Deserialize)]
struct KeyPairItem {
    keypair: KeyPairName,
}

#[derive(Deserialize)]
struct KeyPairName {
    name: String,
}

#[derive(Deserialize)]
struct Groups {
    security_groups: Vec<Named>,
}

#[derive(Deserialize)]
struct ServerGroups {
    server_groups: Vec<Named>,
}

#[derive(Deserialize, Default)]
struct Snapshots {
    #[serde(default)]
    snapshots: Vec<Named>,
}

/// What the wizard offers.
#[derive(Serialize)]
struct Choices {
    images: Vec<(String, String)>,
    volumes: Vec<(String, String)>,
    snapshots: Vec<(String, String)>,
    flavors: Vec<Flavor>,
    networks: Vec<(String, String)>,
    ports: Vec<(String, String)>,
    security_groups: Vec<(String, String)>,
    key_pairs: Vec<String>,
    server_groups: Vec<(String, String)>,
}

pub async fn page(c: Ctx) -> Result<Response> {
    let p = &c.s.project_id;
    let images: Images = c
        .api
        .get("/image/v2/images?status=active&limit=200&sort_key=name&sort_dir=asc")
        .await?;
    let flavors: Flavors = c.api.get("/compute/v2.1/flavors/detail").await?;
    let nets: Networks = c.api.get("/network/v2.0/networks?limit=200").await?;
    let ports: Ports = c
        .api
        .get(&format!(
            "/network/v2.0/ports?project_id={p}&device_owner=&limit=200"
        ))
        .await?;
    let groups: Groups = c
        .api
        .get(&format!("/network/v2.0/security-groups?project_id={p}"))
        .await?;
    let keys: KeyPairs = c.api.get("/compute/v2.1/os-keypairs").await?;
    let sgroups: ServerGroups =
        c.api
            .get("/compute/v2.1/os-server-groups")
            .await
            .unwrap_or(ServerGroups {
                server_groups: vec![],
            });
    // Without a volume service there is nothing to boot from but images.
    let vols: Volumes = c
        .api
        .get(&format!(
            "/volume/v3/{p}/volumes/detail?status=available&limit=200"
        ))
        .await
        .unwrap_or_default();
    let snaps: Snapshots = c
        .api
        .get(&format!(
            "/volume/v3/{p}/snapshots?status=available&limit=200"
        ))
        .await
        .unwrap_or_default();
    let choices = Choices {
        images: options(&images.images, |i| (i.id.clone(), i.name.clone())),
        volumes: options(&vols.volumes, |v| (v.id.clone(), v.label())),
        snapshots: options(&snaps.snapshots, |s| (s.id.clone(), s.name.clone())),
        flavors: flavors.flavors,
        networks: nets
            .networks
            .iter()
            .filter(|n| !n.external)
            .map(|n| (n.id.clone(), n.name.clone()))
            .collect(),
        ports: options(&ports.ports, |p| (p.id.clone(), p.label())),
        security_groups: options(&groups.security_groups, |g| {
            (g.name.clone(), g.name.clone())
        }),
        key_pairs: keys.keypairs.into_iter().map(|k| k.keypair.name).collect(),
        server_groups: options(&sgroups.server_groups, |g| (g.id.clone(), g.name.clone())),
    };
    c.page("launch.html", "Launch Instance", choices)
}

/// The wizard's answer (repeated fields are lists).
#[derive(Deserialize)]
pub struct LaunchForm {
    name: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    source_type: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    snapshot: String,
    #[serde(default)]
    create_volume: Option<String>,
    #[serde(default)]
    volume_size: Option<String>,
    #[serde(default)]
    delete_on_terminate: Option<String>,
    flavor: String,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    key_name: String,
    #[serde(default)]
    user_data: String,
    #[serde(default)]
    config_drive: Option<String>,
    #[serde(default)]
    server_group: String,
}

fn one() -> u32 {
    1
}

/// The compute API's `POST /servers` body for the wizard's answer.
fn request(f: &LaunchForm) -> Value {
    let mut s = json!({
        "name": f.name,
        "flavorRef": f.flavor,
        "min_count": f.count.max(1),
        "max_count": f.count.max(1),
    });
    let mut nets: Vec<Value> = f
        .networks
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| json!({"uuid": n}))
        .collect();
    nets.extend(
        f.ports
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| json!({"port": p})),
    );
    s["networks"] = if nets.is_empty() {
        json!("auto")
    } else {
        json!(nets)
    };
    let groups: Vec<Value> = f
        .security_groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| json!({"name": g}))
        .collect();
    if !groups.is_empty() {
        s["security_groups"] = json!(groups);
    }
    if !f.key_name.is_empty() {
        s["key_name"] = json!(f.key_name);
    }
    if !f.user_data.is_empty() {
        s["user_data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(f.user_data.as_bytes()));
    }
    if f.config_drive.is_some() {
        s["config_drive"] = json!(true);
    }
    let size: Option<i64> = f.volume_size.as_deref().and_then(|v| v.trim().parse().ok());
    let delete = f.delete_on_terminate.is_some();
    let bdm = |source: &str, uuid: &str| {
        let mut b = json!({"boot_index": 0, "uuid": uuid, "source_type": source,
                           "destination_type": "volume", "delete_on_termination": delete});
        if let Some(sz) = size {
            b["volume_size"] = json!(sz);
        }
        json!([b])
    };
    match f.source_type.as_str() {
        "volume" => s["block_device_mapping_v2"] = bdm("volume", &f.volume),
        "snapshot" => s["block_device_mapping_v2"] = bdm("snapshot", &f.snapshot),
        _ if f.create_volume.is_some() => s["block_device_mapping_v2"] = bdm("image", &f.image),
        _ => s["imageRef"] = json!(f.image),
    }
    let mut body = json!({ "server": s });
    if !f.server_group.is_empty() {
        body["os:scheduler_hints"] = json!({"group": f.server_group});
    }
    body
}

pub async fn launch(c: Ctx, Form(f): Form<LaunchForm>) -> Result<Response> {
    let r = c
        .api
        .act("/compute/v2.1/servers", &request(&f))
        .await
        .map(|_| format!("Launched instance \"{}\".", f.name));
    Ok(back("/dashboard/project/instances", r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(extra: &str) -> LaunchForm {
        serde_html_form::from_str(&format!("name=vm&flavor=1&image=img{extra}")).unwrap()
    }

    #[test]
    fn an_image_boot_names_the_image_and_networks() {
        let b = request(&form(
            "&networks=n1&networks=n2&security_groups=default&count=2",
        ));
        assert_eq!(b["server"]["imageRef"], "img");
        assert_eq!(
            b["server"]["networks"],
            json!([{"uuid": "n1"}, {"uuid": "n2"}])
        );
        assert_eq!(b["server"]["max_count"], 2);
        assert_eq!(b["server"]["security_groups"], json!([{"name": "default"}]));
    }

    #[test]
    fn create_new_volume_boots_from_a_volume_made_of_the_image() {
        let b = request(&form(
            "&create_volume=on&volume_size=2&user_data=hi&config_drive=on",
        ));
        let m = &b["server"]["block_device_mapping_v2"][0];
        assert_eq!(m["source_type"], "image");
        assert_eq!(m["volume_size"], 2);
        assert!(b["server"].get("imageRef").is_none());
        assert_eq!(b["server"]["user_data"], "aGk=");
        assert_eq!(b["server"]["config_drive"], true);
        assert_eq!(b["server"]["networks"], "auto");
    }
}
