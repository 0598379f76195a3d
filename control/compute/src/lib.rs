//! The compute service (Nova v2.1): flavors, key pairs and servers, placed
//! on compute nodes and run by their agent ([`agent`]) with QEMU.
//!
//! A server is stored first (`BUILD`) with its ports already created on
//! the networks it asked for and bound to the node the scheduler chose, so
//! that netd makes the tap devices while the agent prepares the disk. A
//! background task then boots the guest and records `ACTIVE`, or `ERROR`
//! with a fault after removing what it made (guest, disk, ports). Servers
//! and key pairs are rows ([`server_table`], [`keypair_table`]); flavors
//! are documents; all are written through the control plane's single
//! writer.
//!
//! A node's agent runs inside `ursa up` (one node, named after the local
//! netd) or on its own as `ursa agent`, reached over gRPC ([`node`]); the
//! scheduler filters nodes by free RAM and vCPUs and server-group policy,
//! and spreads by free RAM.
//!
//! - [`actions`]: server actions (a volume-backed server's rebuild
//!   re-images its root volume from 2.93).
//! - [`api`]: servers, flavors, key pairs, limits, zones,
//!   volume attachments, hypervisors, services.
//! - [`server_parts`]: metadata, ips, interfaces, instance actions,
//!   password, diagnostics, server groups.
//! - [`admin`]: quotas, flavor access, hosts, aggregates, usage.
//! - [`proxy`]: Nova's proxies to the network, image and volume APIs.
//! - [`snapshot`]: createImage/createBackup and shelving.
//! - [`metadata`]: the metadata API guests reach through netd.

pub mod actions;
pub mod admin;
pub mod agent;
pub mod api;
pub mod image_cache;
pub mod keypair_table;
pub mod metadata;
pub mod node;
pub mod proxy;
pub mod server_parts;
pub mod server_table;
pub mod server_tags;
pub mod snapshot;

use serde_json::{json, Map, Value};
use std::sync::Arc;
use ursa_core::error::{Error, Result};
use ursa_core::store::Op;
use ursa_identity::Identity;

pub const FLAVOR: &str = "flavor";
pub const KEYPAIR: &str = "keypair";
pub const SERVER: &str = "server";

pub type Rec = Map<String, Value>;

/// Per-project limits (Nova's defaults).
pub const QUOTA_INSTANCES: i64 = 10;
pub const QUOTA_CORES: i64 = 20;
pub const QUOTA_RAM: i64 = 51200;
pub const QUOTA_KEYPAIRS: i64 = 100;

/// A compute node: its agent and capacity.
#[derive(Clone)]
pub struct Node {
    pub agent: node::NodeAgent,
    pub ram_mb: u64,
    pub vcpus: u64,
}

/// What the compute API's handlers share: compute calls the network,
/// volume and image services (directly, or through their APIs as the
/// caller with [`ursa_core::http::internal`]).
#[derive(Clone)]
pub struct AppState {
    pub identity: Identity,
    pub images: ursa_image::Images,
    pub volumes: Option<ursa_volume::Volumes>,
    pub networks: ursa_network::Networks,
    /// Absent when this host runs no compute node.
    pub compute: Option<Compute>,
    /// Base URL clients reach us at, without a trailing slash.
    pub base_url: String,
    /// This process's whole API, for calls to the other services.
    pub inproc: ursa_core::http::InProcess,
}

impl ursa_core::http::Authenticate for AppState {
    fn authenticate(&self, token: &str) -> ursa_core::error::Result<ursa_core::policy::Caller> {
        self.identity.caller(token)
    }
}

#[derive(Clone)]
pub struct Compute {
    pub identity: Identity,
    pub networks: ursa_network::Networks,
    pub images: ursa_image::Images,
    /// For attaching volumes (absent without a storage node).
    pub volumes: Option<ursa_volume::Volumes>,
    pub nodes: Arc<Vec<Node>>,
    /// The base URL compute nodes reach the image API at (they fetch
    /// images and upload snapshots there).
    pub image_base: String,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn st<'a>(m: &'a Rec, k: &str) -> &'a str {
    m.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// The host's memory and CPUs, for the scheduler.
pub fn host_capacity() -> (u64, u64) {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    (ram, cpus)
}

impl Compute {
    pub fn docs(&self, kind: &str) -> Vec<Rec> {
        self.identity
            .model()
            .docs_of(kind)
            .filter_map(|v| v.as_object().cloned())
            .collect()
    }

    pub fn doc(&self, kind: &str, id: &str) -> Option<Rec> {
        self.identity
            .model()
            .doc(kind, id)
            .and_then(|v| v.as_object().cloned())
    }

    pub async fn put(&self, kind: &'static str, rec: Rec) -> Result<()> {
        let id = st(&rec, "id").to_string();
        let mut w = self.identity.write().await?;
        if kind == SERVER {
            server_table::put(w.tx(), &rec).await?;
            return w.commit(&[]).await;
        }
        w.commit(&[Op::put(kind, &id, "", &id, Value::Object(rec))])
            .await
    }

    /// A connection for reads of the compute tables.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.identity.store().conn().await?)
    }

    /// The key pair `name` of `user`.
    pub async fn keypair(&self, user: &str, name: &str) -> Result<Option<Rec>> {
        keypair_table::get(&mut *self.conn().await?, &keypair_table::id(user, name)).await
    }

    /// The server `id`'s record.
    pub async fn server(&self, id: &str) -> Result<Option<Rec>> {
        server_table::get(&mut *self.conn().await?, id).await
    }

    /// The servers a filter selects.
    pub async fn servers(&self, f: &server_table::Filter) -> Result<Vec<Rec>> {
        server_table::select(&mut *self.conn().await?, f).await
    }

    /// Removes a server's record.
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        let mut w = self.identity.write().await?;
        server_table::delete(w.tx(), id).await?;
        w.commit(&[]).await
    }

    /// Changes a server's record with `f` (inside one write, so against
    /// what is stored); None when there is no such server.
    pub async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Rec) -> Result<()>,
    ) -> Result<Option<Rec>> {
        let mut w = self.identity.write().await?;
        let Some(mut r) = server_table::get(w.tx().conn(), id).await? else {
            return Ok(None);
        };
        f(&mut r)?;
        r.insert("updated".into(), json!(now()));
        server_table::put(w.tx(), &r).await?;
        w.commit(&[]).await?;
        Ok(Some(r))
    }

    /// The default flavors, made once.
    pub async fn bootstrap(&self) -> Result<()> {
        for (id, name, ram, vcpus, disk) in [
            ("1", "m1.tiny", 512, 1, 1),
            ("2", "m1.small", 2048, 1, 20),
            ("3", "m1.medium", 4096, 2, 40),
        ] {
            if self.doc(FLAVOR, id).is_some() {
                continue;
            }
            self.put(FLAVOR, flavor_record(id, name, ram, vcpus, disk, true))
                .await?;
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.agent.node() == name)
    }

    /// Like [`Compute::schedule`], honouring a server group's policy:
    /// affinity keeps members on one node, anti-affinity on different
    /// nodes (the soft policies prefer, and fall back to any node).
    pub async fn schedule_in_group(
        &self,
        ram: u64,
        vcpus: u64,
        group: Option<&crate::server_parts::GroupHint>,
    ) -> Result<String> {
        let Some(crate::server_parts::GroupHint {
            id: gid,
            policy,
            max_per_host,
        }) = group
        else {
            return self.schedule(ram, vcpus).await;
        };
        let used: Vec<String> = self
            .servers(&server_table::Filter {
                group: Some(gid.clone()),
                ..Default::default()
            })
            .await?
            .iter()
            .map(|s| st(s, "ursa:node").to_string())
            .collect();
        let allowed = |n: &str| match policy.as_str() {
            "affinity" | "soft-affinity" => used.is_empty() || used.iter().any(|u| u == n),
            // Anti-affinity: at most max_server_per_host (2.64's rule,
            // else 1) of the group on one node.
            _ => used.iter().filter(|u| *u == n).count() < *max_per_host,
        };
        match self.schedule_where(ram, vcpus, &allowed).await {
            Err(_) if policy.starts_with("soft-") => self.schedule(ram, vcpus).await,
            other => other,
        }
    }

    /// Node `host` if the flavor fits on it (2.74's requested host).
    pub async fn schedule_on(&self, ram: u64, vcpus: u64, host: &str) -> Result<String> {
        self.schedule_where(ram, vcpus, &|n| n == host).await
    }

    /// Filters nodes that fit the flavor, then spreads by free RAM.
    pub async fn schedule(&self, ram: u64, vcpus: u64) -> Result<String> {
        self.schedule_where(ram, vcpus, &|_| true).await
    }

    async fn schedule_where(
        &self,
        ram: u64,
        vcpus: u64,
        allowed: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<String> {
        let counts = server_table::node_flavor_counts(&mut *self.conn().await?, false).await?;
        let flavors = self.docs(FLAVOR);
        let used = |node: &str| -> (u64, u64) {
            counts
                .iter()
                .filter(|(n, _, _)| n == node)
                .filter_map(|(_, fid, k)| {
                    flavors
                        .iter()
                        .find(|f| st(f, "id") == fid)
                        .map(|f| (f, *k as u64))
                })
                .fold((0, 0), |(r, c), (f, k)| {
                    (
                        r + k * f["ram"].as_u64().unwrap_or(0),
                        c + k * f["vcpus"].as_u64().unwrap_or(0),
                    )
                })
        };
        self.nodes
            .iter()
            .filter(|n| allowed(n.agent.node()))
            .filter_map(|n| {
                let (r, c) = used(n.agent.node());
                // Overcommit as Nova does by default: RAM 1.5x, CPU 16x.
                let free_ram = (n.ram_mb * 3 / 2).saturating_sub(r);
                let free_cpu = (n.vcpus * 16).saturating_sub(c);
                (free_ram >= ram && free_cpu >= vcpus)
                    .then_some((free_ram, n.agent.node().to_string()))
            })
            .max_by_key(|(f, _)| *f)
            .map(|(_, n)| n)
            .ok_or_else(|| {
                Error::Conflict(
                    "No valid host was found. There are not enough hosts available.".into(),
                )
            })
    }

    /// Boots a stored server on its node; runs in the background.
    pub fn spawn_boot(&self, srv: Rec) {
        self.spawn_boot_with(srv, BootOpts::default());
    }

    /// Rebuilds a server: its guest and disk go, and it boots again from
    /// the image its record now names (stopped again if it was); a
    /// volume-backed one from its root volume, re-imaged with `reimage`
    /// when given.
    pub fn spawn_rebuild(&self, srv: Rec, stop_after: bool, reimage: Option<String>) {
        self.spawn_boot_with(
            srv,
            BootOpts {
                destroy_first: true,
                stop_after,
                reimage_root: reimage,
                ..Default::default()
            },
        );
    }

    /// The id of a volume-backed server's root volume, once it has one.
    fn root_volume_id(srv: &Rec) -> Option<String> {
        let bv = srv.get("ursa:boot_volume")?;
        bv["volume_id"]
            .as_str()
            .or_else(|| match bv["source_type"].as_str() {
                Some("volume") => bv["uuid"].as_str(),
                _ => None,
            })
            .map(str::to_string)
    }

    /// The image a volume-backed server's root volume was made from.
    pub async fn root_image(&self, srv: &Rec) -> Option<String> {
        let vols = self.volumes.as_ref()?;
        let vol = vols
            .record(ursa_volume::VOLUME, &Self::root_volume_id(srv)?)
            .await
            .ok()??;
        vol.get("volume_image_metadata")?
            .get("image_id")?
            .as_str()
            .map(str::to_string)
    }

    /// Writes `image` onto a volume-backed server's root volume (its guest
    /// is gone; the volume stays attached, `downloading` meanwhile).
    async fn reimage_root(&self, srv: &Rec, image: &str) -> std::result::Result<(), String> {
        let vols = self
            .volumes
            .as_ref()
            .ok_or("there is no volume service here")?;
        let vol_id = Self::root_volume_id(srv).ok_or("the server has no root volume")?;
        let vol = vols
            .reimage(&vol_id, image, &["in-use"])
            .await
            .map_err(|e| format!("re-imaging the root volume: {e}"))?;
        vols.finish_reimage(vol).await
    }

    pub fn spawn_boot_with(&self, srv: Rec, opts: BootOpts) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&srv, "id").to_string();
            if opts.destroy_first {
                if let Some(n) = me.node(st(&srv, "ursa:node")) {
                    n.agent.destroy(&id).await;
                }
            }
            let mut r = match &opts.reimage_root {
                Some(img) => me.reimage_root(&srv, img).await,
                None => Ok(()),
            };
            if r.is_ok() {
                r = me.boot(&srv, opts.standalone).await;
            }
            if r.is_ok() && opts.stop_after {
                if let Some(n) = me.node(st(&srv, "ursa:node")) {
                    n.agent.power_off(&id).await;
                }
            }
            if r.is_ok() {
                if let Some(img) = &opts.delete_image_after {
                    if let Err(e) = me.images.delete(img).await {
                        tracing::warn!(image = %img, error = %e, "deleting the shelved image");
                    }
                }
            }
            let stopped = opts.stop_after;
            let outcome = me
                .update(&id, move |s| {
                    if s.get("status").and_then(|v| v.as_str()) == Some("DELETED") {
                        return Ok(());
                    }
                    match std::mem::replace(&mut r, Ok(())) {
                        Ok(()) if stopped => {
                            s.insert("status".into(), json!("SHUTOFF"));
                            s.insert("OS-EXT-STS:vm_state".into(), json!("stopped"));
                            s.insert("OS-EXT-STS:power_state".into(), json!(4));
                        }
                        Ok(()) => {
                            s.insert("status".into(), json!("ACTIVE"));
                            s.insert("OS-EXT-STS:vm_state".into(), json!("active"));
                            s.insert("OS-EXT-STS:power_state".into(), json!(1));
                            s.insert("OS-SRV-USG:launched_at".into(), json!(now()));
                        }
                        Err(e) => {
                            tracing::warn!(server = %st(s, "id"), error = %e, "boot failed");
                            s.insert("status".into(), json!("ERROR"));
                            s.insert("OS-EXT-STS:vm_state".into(), json!("error"));
                            s.insert("OS-EXT-STS:power_state".into(), json!(0));
                            s.insert(
                                "fault".into(),
                                json!({"code": 500, "created": now(), "message": e}),
                            );
                        }
                    }
                    s.remove("ursa:disk_image_id");
                    s.insert("OS-EXT-STS:task_state".into(), Value::Null);
                    Ok(())
                })
                .await;
            if let Err(e) = outcome {
                tracing::error!(error = %e, "recording a boot outcome");
            }
            // A failed boot leaves nothing behind but the record.
            if me
                .server(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| st(&s, "status") == "ERROR")
            {
                me.release(&id, st(&srv, "ursa:node")).await;
            }
        });
    }

    async fn boot(&self, srv: &Rec, standalone: bool) -> std::result::Result<(), String> {
        let id = st(srv, "id");
        let node = self
            .node(st(srv, "ursa:node"))
            .ok_or("No valid host was found: the server's node has no agent.")?;
        let flavor = self
            .doc(FLAVOR, st(srv, "ursa:flavor_id"))
            .ok_or("the flavor is gone")?;
        // The root disk is a volume (served by blockd over vhost-user-blk),
        // or made from the image, or from the snapshot a shelved server was
        // offloaded to.
        let root_socket = match srv.get("ursa:boot_volume").filter(|v| v.is_object()) {
            Some(bv) => Some(self.root_volume(srv, bv).await?),
            None => None,
        };
        let (image, fmt) = if root_socket.is_some() {
            (Default::default(), "raw")
        } else {
            let image_id = match st(srv, "ursa:disk_image_id") {
                "" => st(srv, "ursa:image_id"),
                other => other,
            };
            let image = self
                .images
                .get(image_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the image is gone")?;
            let fmt = match image.get("disk_format").and_then(|v| v.as_str()) {
                Some("qcow2") => "qcow2",
                _ => "raw",
            };
            let image = image_cache::ImageRef {
                id: image_id.to_string(),
                url: self.images.fetch_url(
                    &self.image_base,
                    image_id,
                    std::time::Duration::from_secs(3600),
                ),
                md5: st(&image, "checksum").to_string(),
            };
            (image, fmt)
        };
        let nics: Vec<(String, String)> = {
            ursa_network::api::device_ports(&self.networks, &[id.to_string()])
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|p| {
                    (
                        ursa_proto::netd::tap_device(st(p, "id")),
                        st(p, "mac_address").to_string(),
                    )
                })
                .collect()
        };
        self.networks.pusher.kick();
        for (tap, _) in &nics {
            node.agent
                .wait_tap(tap, std::time::Duration::from_secs(30))
                .await?;
        }
        let spec = agent::GuestSpec {
            id: id.to_string(),
            image,
            image_format: fmt.into(),
            root_socket: root_socket.unwrap_or_default(),
            ram_mb: flavor["ram"].as_u64().unwrap_or(512),
            vcpus: flavor["vcpus"].as_u64().unwrap_or(1),
            disk_gb: flavor["disk"].as_u64().unwrap_or(1),
            nics,
            standalone,
            config_drive: if srv.get("config_drive").and_then(|v| v.as_str()) == Some("True") {
                metadata::config_drive_files(self, srv).await
            } else {
                Vec::new()
            },
        };
        node.agent.boot(&spec).await?;
        self.plug_volumes(id, node).await;
        Ok(())
    }

    /// Plugs a freshly booted guest's attached data volumes (those
    /// attached while it was shelved, or before it was stopped): each is
    /// exported over vhost-user-blk and hot-plugged. A failure is logged;
    /// the attachment stays, as Nova leaves it.
    async fn plug_volumes(&self, id: &str, node: &Node) {
        let Some(vols) = &self.volumes else {
            return;
        };
        let attached = vols
            .attached_to(&[id.to_string()])
            .await
            .unwrap_or_default();
        for vol in attached {
            let entry = vol
                .get("attachments")
                .and_then(|a| a.as_array())
                .and_then(|a| a.iter().find(|x| x["server_id"] == id).cloned());
            let Some(a) = entry.filter(ursa_volume::attach::shown) else {
                continue;
            };
            if a["device"] == "/dev/vda" {
                continue; // the root volume, given at boot
            }
            let vid = st(&vol, "id").to_string();
            let r = async {
                let c = vols.export(&vol, true).await.map_err(|e| e.to_string())?;
                node.agent.attach_disk(id, &vid, &c.socket_path).await
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(server = id, volume = %vid, error = %e, "plugging a volume at boot");
            }
        }
    }

    /// The root volume of a volume-backed server, made from its image the
    /// first time (the volume's id is then kept in the server's record, so
    /// a boot tried again uses it), attached as /dev/vda and exported over
    /// vhost-user-blk: the socket QEMU connects to.
    async fn root_volume(&self, srv: &Rec, bv: &Value) -> std::result::Result<String, String> {
        use ursa_volume::VOLUME;
        let vols = self
            .volumes
            .as_ref()
            .ok_or("there is no volume service here")?;
        let id = st(srv, "id").to_string();
        let vol_id = match (bv["source_type"].as_str(), bv["volume_id"].as_str()) {
            (_, Some(v)) => v.to_string(),
            (Some("volume"), None) => bv["uuid"].as_str().unwrap_or("").to_string(),
            _ => {
                let image_id = bv["uuid"].as_str().unwrap_or("").to_string();
                let img = self
                    .images
                    .get(&image_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the image is gone")?;
                let vtype = vols
                    .doc(ursa_volume::TYPE, ursa_volume::DEFAULT_TYPE_ID)
                    .ok_or("there is no default volume type")?;
                let vol = ursa_volume::api::create_record(
                    vols,
                    ursa_volume::api::NewVolume {
                        group_id: None,
                        request_id: None,
                        project: st(srv, "tenant_id").to_string(),
                        user: st(srv, "user_id").to_string(),
                        name: json!(""),
                        description: Value::Null,
                        size: bv["volume_size"].as_u64().unwrap_or(1),
                        vtype,
                        snapshot_id: None,
                        source_volid: None,
                        image: Some((image_id.clone(), img)),
                        meta: json!({}),
                        host: None,
                    },
                    ursa_volume::Source::Image(image_id),
                )
                .await
                .map_err(|e| format!("making the root volume: {e}"))?;
                let vol_id = st(&vol, "id").to_string();
                let v2 = vol_id.clone();
                self.update(&id, move |r| {
                    if let Some(b) = r
                        .get_mut("ursa:boot_volume")
                        .and_then(|b| b.as_object_mut())
                    {
                        b.insert("volume_id".into(), json!(v2));
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?;
                vol_id
            }
        };
        // Wait for the volume (an image is being copied onto it), then
        // claim it for this server.
        // A volume compute made goes if the server goes before it boots.
        let drop_made = bv["source_type"] == "image" && bv["delete_on_termination"] == true;
        let t0 = std::time::Instant::now();
        loop {
            if self.server(&id).await.ok().flatten().is_none() {
                if drop_made {
                    self.drop_made_volume(vols, &vol_id).await;
                }
                return Err("the server was deleted while it was being built".into());
            }
            let vol = vols
                .record(VOLUME, &vol_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the root volume {vol_id} is gone"))?;
            let ours = vol
                .get("attachments")
                .and_then(|a| a.as_array())
                .is_some_and(|a| a.iter().any(|x| x["server_id"] == id.as_str()));
            match st(&vol, "status") {
                "in-use" if ours => break,
                "available" => {
                    let (sid, host) = (
                        id.clone(),
                        self.node(st(srv, "ursa:node"))
                            .map(|n| n.agent.node().to_string())
                            .unwrap_or_default(),
                    );
                    // Reserved and completed through the attachment steps
                    // (the export follows below).
                    let any = ursa_volume::attach::Asker::ANY;
                    let claimed = async {
                        let a = vols.attachment_create(&any, &vol_id, &sid, "rw").await?;
                        let aid = a["attachment_id"].as_str().unwrap_or_default().to_string();
                        let extra = json!({"device": "/dev/vda", "host_name": host});
                        vols.attachment_complete(
                            &any,
                            &aid,
                            extra.as_object().cloned().unwrap_or_default(),
                        )
                        .await
                    }
                    .await;
                    if let Ok(a) = claimed {
                        if self.server(&id).await.ok().flatten().is_none() {
                            // Deleted meanwhile: its release did not see
                            // this attachment, so let the volume go here.
                            let aid = a["attachment_id"].as_str().unwrap_or_default();
                            let _ = vols.attachment_delete(&any, aid).await;
                            if drop_made {
                                self.drop_made_volume(vols, &vol_id).await;
                            }
                            return Err("the server was deleted while it was being built".into());
                        }
                        break;
                    }
                }
                "creating" | "downloading"
                    if t0.elapsed() < std::time::Duration::from_secs(1800) => {}
                other => {
                    return Err(format!(
                        "the root volume {vol_id} is {other}, not available for this server"
                    ))
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let vol = vols
            .record(VOLUME, &vol_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the root volume {vol_id} is gone"))?;
        let conn = vols
            .export(&vol, true)
            .await
            .map_err(|e| format!("exporting the root volume: {e}"))?;
        Ok(conn.socket_path)
    }

    /// Deletes a root volume compute made for a server that is gone, once
    /// the image is copied onto it (a delete must not race the copy).
    async fn drop_made_volume(&self, vols: &ursa_volume::Volumes, vol_id: &str) {
        use ursa_volume::VOLUME;
        let t0 = std::time::Instant::now();
        while vols
            .record(VOLUME, vol_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|v| matches!(st(&v, "status"), "creating" | "downloading"))
            && t0.elapsed() < std::time::Duration::from_secs(1800)
        {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let r = vols
            .update(VOLUME, vol_id, |r| {
                if !matches!(st(r, "status"), "available" | "error") {
                    return Err(ursa_core::error::Error::Conflict("in use".into()));
                }
                r.insert("status".into(), json!("deleting"));
                Ok(())
            })
            .await;
        if let Ok(Some(rec)) = r {
            vols.spawn_delete(VOLUME, rec);
        }
    }

    /// Stops and removes a server's guest, disk and ports; its volumes are
    /// let go (available again).
    pub async fn release(&self, id: &str, node: &str) {
        if let Some(n) = self.node(node) {
            n.agent.destroy(id).await;
        }
        if let Some(v) = &self.volumes {
            let srv = self.server(id).await.ok().flatten();
            // Its volumes: the attached ones, and a root volume made for it
            // that never got attached.
            let mut vols = v.attached_to(&[id.to_string()]).await.unwrap_or_default();
            let root = srv
                .as_ref()
                .and_then(|s| s.get("ursa:boot_volume"))
                .and_then(|b| b["volume_id"].as_str().or(b["uuid"].as_str()))
                .map(str::to_string);
            if let Some(root) = root {
                if !vols.iter().any(|x| st(x, "id") == root) {
                    vols.extend(v.record(ursa_volume::VOLUME, &root).await.ok().flatten());
                }
            }
            for vol in vols {
                // A root volume made for the server that never got attached
                // (the boot failed first) goes with it when asked to.
                let unattached = vol
                    .get("attachments")
                    .and_then(|a| a.as_array())
                    .is_none_or(|a| a.is_empty());
                if unattached
                    && matches!(st(&vol, "status"), "available" | "error")
                    && root_volume_goes(&srv, st(&vol, "id"), true)
                {
                    self.drop_made_volume(v, st(&vol, "id")).await;
                    continue;
                }
                let mine = vol
                    .get("attachments")
                    .and_then(|a| a.as_array())
                    .and_then(|a| a.iter().find(|x| x["server_id"] == id).cloned());
                if let Some(att) = mine {
                    let aid = att["attachment_id"].as_str().unwrap_or_default();
                    if let Err(e) = v
                        .attachment_delete(&ursa_volume::attach::Asker::ANY, aid)
                        .await
                    {
                        tracing::warn!(server = id, error = %e, "letting go of a volume");
                    }
                    // A root volume asked to go with its server goes, and so
                    // does one attached with delete_on_termination (2.79).
                    let gone = root_volume_goes(&srv, st(&vol, "id"), false)
                        || att["ursa:delete_on_termination"] == true;
                    if gone {
                        let r = v
                            .update(ursa_volume::VOLUME, st(&vol, "id"), |r| {
                                r.insert("status".into(), json!("deleting"));
                                Ok(())
                            })
                            .await;
                        if let Ok(Some(rec)) = r {
                            v.spawn_delete(ursa_volume::VOLUME, rec);
                        }
                    }
                }
            }
        }
        if let Err(e) = ursa_network::api::delete_device_ports(&self.networks, id).await {
            tracing::warn!(server = id, error = %e, "could not delete the server's ports");
        }
    }

    /// Deletes a server: guest, disk, ports, then the record.
    pub fn spawn_delete(&self, srv: Rec) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&srv, "id").to_string();
            me.release(&id, st(&srv, "ursa:node")).await;
            if let Err(e) = me.delete_server(&id).await {
                tracing::error!(error = %e, "deleting a server record");
            }
        });
    }

    /// Every few seconds, as Nova's power-state sync does: a server whose
    /// guest is gone while nothing is being done to it (the guest powered
    /// itself off, or QEMU died) becomes SHUTOFF.
    pub fn spawn_power_sync(&self, duty: ursa_core::duty::Duty) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                if !duty.held() {
                    continue; // another controller syncs power states
                }
                // Only the servers it watches: running, paused or
                // suspended ones.
                let watched = me
                    .servers(&server_table::Filter {
                        status: vec!["ACTIVE".into(), "PAUSED".into(), "SUSPENDED".into()],
                        ..Default::default()
                    })
                    .await;
                let watched = match watched {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "power sync could not read the servers");
                        continue;
                    }
                };
                for s in watched {
                    let idle = s.get("OS-EXT-STS:task_state").is_none_or(|t| t.is_null());
                    if !idle || !matches!(st(&s, "status"), "ACTIVE" | "PAUSED" | "SUSPENDED") {
                        continue;
                    }
                    let Some(n) = me.node(st(&s, "ursa:node")) else {
                        continue;
                    };
                    let id = st(&s, "id").to_string();
                    // A node that does not answer says nothing about its guests.
                    if n.agent.probe(&id).await != Some(false) {
                        continue;
                    }
                    let was = st(&s, "status").to_string();
                    let r = me
                        .update(&id, move |r| {
                            // Only if nothing changed it meanwhile.
                            let same = st(r, "status") == was
                                && r.get("OS-EXT-STS:task_state").is_none_or(|t| t.is_null());
                            if same {
                                r.insert("status".into(), json!("SHUTOFF"));
                                r.insert("OS-EXT-STS:vm_state".into(), json!("stopped"));
                                r.insert("OS-EXT-STS:power_state".into(), json!(4));
                            }
                            Ok(())
                        })
                        .await;
                    match r {
                        Ok(Some(r)) if st(&r, "status") == "SHUTOFF" => {
                            tracing::info!(server = %id, "the guest is gone: SHUTOFF")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(server = %id, error = %e, "power sync"),
                    }
                }
            }
        })
    }

    /// After a restart: guests still running are adopted as they are;
    /// servers whose guest is gone are SHUTOFF (started again on request).
    pub async fn adopt(&self) -> Result<()> {
        for s in self.servers(&server_table::Filter::default()).await? {
            let Some(n) = self.node(st(&s, "ursa:node")) else {
                continue;
            };
            let id = st(&s, "id").to_string();
            match st(&s, "status") {
                "ACTIVE" if !n.agent.running(&id).await => {
                    self.update(&id, |r| {
                        r.insert("status".into(), json!("SHUTOFF"));
                        r.insert("OS-EXT-STS:vm_state".into(), json!("stopped"));
                        r.insert("OS-EXT-STS:power_state".into(), json!(4));
                        Ok(())
                    })
                    .await?;
                }
                "BUILD" => {
                    // The boot task died with the last process: try again.
                    self.spawn_boot(s.clone());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// How a background boot goes (see [`Compute::spawn_boot_with`]).
#[derive(Default)]
pub struct BootOpts {
    /// Remove the guest and its disk first (rebuild).
    pub destroy_first: bool,
    /// Power off once booted (rebuilding a stopped server).
    pub stop_after: bool,
    /// A root disk that is a full copy, not an overlay of the image.
    pub standalone: bool,
    /// An image to delete once booted (unshelve's snapshot).
    pub delete_image_after: Option<String>,
    /// An image to write onto the root volume first (rebuild of a
    /// volume-backed server from 2.93).
    pub reimage_root: Option<String>,
}

pub fn flavor_record(id: &str, name: &str, ram: u64, vcpus: u64, disk: u64, public: bool) -> Rec {
    json!({"id": id, "name": name, "ram": ram, "vcpus": vcpus, "disk": disk, "swap": "",
           "OS-FLV-EXT-DATA:ephemeral": 0, "rxtx_factor": 1.0, "os-flavor-access:is_public": public,
           "OS-FLV-DISABLED:disabled": false, "description": null, "extra_specs": {}})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Whether `volume` is the server's root volume, to be deleted with it
/// (`made`: only one compute made from the image).
fn root_volume_goes(srv: &Option<Rec>, volume: &str, made: bool) -> bool {
    let Some((s, bv)) = srv
        .as_ref()
        .and_then(|s| s.get("ursa:boot_volume").map(|bv| (s, bv)))
    else {
        return false;
    };
    let root = if made {
        bv["volume_id"].as_str().map(str::to_string)
    } else {
        Compute::root_volume_id(s)
    };
    root.as_deref() == Some(volume) && bv["delete_on_termination"] == true
}

/// Whether a server's root disk is a volume.
pub(crate) fn volume_backed(srv: &Rec) -> bool {
    srv.get("ursa:boot_volume").is_some_and(|v| v.is_object())
}
