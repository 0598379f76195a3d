//! A compute node as the control plane sees it: an agent in this process
//! ([`Agent`]) or one reached over gRPC (`ursa agent`, [`serve`]), behind
//! one interface ([`NodeAgent`]). The gRPC server is the same [`Agent`]
//! code, so a remote node behaves exactly as the local one.

use super::agent::{Agent, GuestSpec};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use ursa_proto::compute::v1 as pb;
use ursa_proto::compute::v1::agent_client::AgentClient;
use ursa_proto::compute::v1::agent_server::{self, AgentServer};

type R<T> = std::result::Result<T, String>;

/// A compute node's agent: here or over gRPC.
#[derive(Clone)]
pub enum NodeAgent {
    Local(Agent),
    Remote {
        node: String,
        client: AgentClient<Channel>,
    },
}

fn msg(s: Status) -> String {
    s.message().to_string()
}

impl NodeAgent {
    /// Connects to `ursa agent` at `endpoint` and asks its capacity:
    /// (agent, RAM in MiB, vCPUs).
    pub async fn remote(name: &str, endpoint: &str) -> R<(NodeAgent, u64, u64)> {
        let mut client = AgentClient::new(ursa_core::rpc::lazy(endpoint)?);
        let mut last = String::new();
        // The agent may still be starting.
        for _ in 0..100 {
            match client.get_capacity(pb::GetCapacityRequest {}).await {
                Ok(c) => {
                    let c = c.into_inner();
                    let agent = NodeAgent::Remote {
                        node: name.to_string(),
                        client,
                    };
                    return Ok((agent, c.ram_mb, c.vcpus));
                }
                Err(e) => last = e.message().to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("compute agent {name} at {endpoint}: {last}"))
    }

    pub fn node(&self) -> &str {
        match self {
            NodeAgent::Local(a) => &a.node,
            NodeAgent::Remote { node, .. } => node,
        }
    }

    fn client(&self) -> Option<AgentClient<Channel>> {
        match self {
            NodeAgent::Local(_) => None,
            NodeAgent::Remote { client, .. } => Some(client.clone()),
        }
    }

    fn gref(id: &str) -> pb::GuestRef {
        pb::GuestRef { id: id.to_string() }
    }

    pub async fn boot(&self, g: &GuestSpec) -> R<()> {
        match self.client() {
            None => self.local().boot(g).await,
            Some(mut c) => c.boot(spec_to_pb(g)).await.map(|_| ()).map_err(msg),
        }
    }

    pub async fn launch(&self, id: &str) -> R<()> {
        match self.client() {
            None => self.local().launch(id).await,
            Some(mut c) => c.start(Self::gref(id)).await.map(|_| ()).map_err(msg),
        }
    }

    pub async fn power_off(&self, id: &str) {
        match self.client() {
            None => self.local().power_off(id).await,
            Some(mut c) => {
                if let Err(e) = c.power_off(Self::gref(id)).await {
                    tracing::warn!(server = id, error = %e.message(), "powering off");
                }
            }
        }
    }

    pub async fn reboot(&self, id: &str) -> R<()> {
        match self.client() {
            None => self.local().reboot(id).await,
            Some(mut c) => c.reboot(Self::gref(id)).await.map(|_| ()).map_err(msg),
        }
    }

    pub async fn pause(&self, id: &str) -> R<()> {
        match self.client() {
            None => self.local().pause(id).await,
            Some(mut c) => c.pause(Self::gref(id)).await.map(|_| ()).map_err(msg),
        }
    }

    pub async fn unpause(&self, id: &str) -> R<()> {
        match self.client() {
            None => self.local().unpause(id).await,
            Some(mut c) => c.unpause(Self::gref(id)).await.map(|_| ()).map_err(msg),
        }
    }

    pub async fn snapshot(&self, id: &str, upload_url: &str) -> R<()> {
        match self.client() {
            None => self.local().snapshot(id, upload_url).await,
            Some(mut c) => c
                .snapshot(pb::SnapshotRequest {
                    id: id.to_string(),
                    upload_url: upload_url.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    pub async fn destroy(&self, id: &str) {
        match self.client() {
            None => self.local().destroy(id).await,
            Some(mut c) => {
                if let Err(e) = c.destroy(Self::gref(id)).await {
                    tracing::warn!(server = id, error = %e.message(), "destroying a guest");
                }
            }
        }
    }

    /// Whether the guest's QEMU runs (false when the node does not answer).
    pub async fn running(&self, id: &str) -> bool {
        match self.client() {
            None => self.local().running(id),
            Some(mut c) => c
                .get_status(Self::gref(id))
                .await
                .is_ok_and(|s| s.into_inner().running),
        }
    }

    /// Whether the guest's QEMU runs; None when the node does not answer.
    pub async fn probe(&self, id: &str) -> Option<bool> {
        match self.client() {
            None => Some(self.local().running(id)),
            Some(mut c) => c
                .get_status(Self::gref(id))
                .await
                .ok()
                .map(|s| s.into_inner().running),
        }
    }

    pub async fn console(&self, id: &str, lines: Option<usize>) -> R<String> {
        match self.client() {
            None => Ok(self.local().console(id, lines)),
            Some(mut c) => c
                .get_console(pb::ConsoleRequest {
                    id: id.to_string(),
                    lines: lines.unwrap_or(0).min(u32::MAX as usize) as u32,
                })
                .await
                .map(|r| r.into_inner().text)
                .map_err(msg),
        }
    }

    pub async fn attach_disk(&self, id: &str, volume_id: &str, socket: &str) -> R<()> {
        match self.client() {
            None => self.local().attach_disk(id, volume_id, socket).await,
            Some(mut c) => c
                .attach_disk(disk(id, volume_id, socket))
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    pub async fn detach_disk(&self, id: &str, volume_id: &str) -> R<()> {
        match self.client() {
            None => self.local().detach_disk(id, volume_id).await,
            Some(mut c) => c
                .detach_disk(disk(id, volume_id, ""))
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    pub async fn attach_nic(&self, id: &str, tap: &str, mac: &str) -> R<()> {
        match self.client() {
            None => self.local().attach_nic(id, tap, mac).await,
            Some(mut c) => c
                .attach_nic(nic(id, tap, mac))
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    pub async fn detach_nic(&self, id: &str, tap: &str) -> R<()> {
        match self.client() {
            None => self.local().detach_nic(id, tap).await,
            Some(mut c) => c
                .detach_nic(nic(id, tap, ""))
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    pub async fn wait_tap(&self, tap: &str, within: Duration) -> R<()> {
        match self.client() {
            None => self.local().wait_tap(tap, within).await,
            Some(mut c) => c
                .wait_tap(pb::WaitTapRequest {
                    tap: tap.to_string(),
                    timeout_ms: within.as_millis().min(u32::MAX as u128) as u32,
                })
                .await
                .map(|_| ())
                .map_err(msg),
        }
    }

    fn local(&self) -> &Agent {
        match self {
            NodeAgent::Local(a) => a,
            // Callers check `client()` first.
            NodeAgent::Remote { .. } => unreachable!("a remote node has no local agent"),
        }
    }
}

fn nic(id: &str, tap: &str, mac: &str) -> pb::NicRequest {
    pb::NicRequest {
        id: id.to_string(),
        tap: tap.to_string(),
        mac: mac.to_string(),
    }
}

/// A tap name as netd makes them (`utp-` and hex digits), nothing else.
fn checked_tap(tap: &str) -> Result<&str, Status> {
    let ok = tap.len() <= 15
        && tap
            .strip_prefix("utp-")
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then_some(tap)
        .ok_or_else(|| Status::invalid_argument(format!("{tap:?} is not a tap device name")))
}

fn disk(id: &str, volume_id: &str, socket: &str) -> pb::DiskRequest {
    pb::DiskRequest {
        id: id.to_string(),
        volume_id: volume_id.to_string(),
        socket: socket.to_string(),
    }
}

fn spec_to_pb(g: &GuestSpec) -> pb::GuestSpec {
    pb::GuestSpec {
        id: g.id.clone(),
        image: Some(pb::ImageRef {
            id: g.image.id.clone(),
            url: g.image.url.clone(),
            md5: g.image.md5.clone(),
        }),
        image_format: g.image_format.clone(),
        ram_mb: g.ram_mb,
        vcpus: g.vcpus,
        disk_gb: g.disk_gb,
        nics: g
            .nics
            .iter()
            .map(|(tap, mac)| pb::Nic {
                tap: tap.clone(),
                mac: mac.clone(),
            })
            .collect(),
        standalone: g.standalone,
        config_drive: g
            .config_drive
            .iter()
            .map(|(path, data)| pb::ConfigFile {
                path: path.clone(),
                data: data.clone(),
            })
            .collect(),
        root_socket: g.root_socket.clone(),
    }
}

/// The image of a boot: none for a volume root; else an id that is a file
/// name and an http(s) URL.
fn image_ref(i: Option<pb::ImageRef>) -> Result<crate::image_cache::ImageRef, Status> {
    let Some(i) = i else {
        return Ok(Default::default());
    };
    if !i.id.is_empty() {
        crate::image_cache::checked(&i.id).map_err(Status::invalid_argument)?;
        if !i.url.starts_with("http://") && !i.url.starts_with("https://") {
            return Err(Status::invalid_argument("image.url must be an http(s) URL"));
        }
    }
    Ok(crate::image_cache::ImageRef {
        id: i.id,
        url: i.url,
        md5: i.md5,
    })
}

/// A server id as a path component: a UUID-like string, nothing else.
fn checked_id(id: &str) -> Result<&str, Status> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then_some(id)
        .ok_or_else(|| Status::invalid_argument(format!("{id:?} is not a server id")))
}

/// The gRPC face of an [`Agent`] (`ursa agent`).
pub struct AgentService {
    pub agent: Agent,
    pub ram_mb: u64,
    pub vcpus: u64,
}

fn failed(e: String) -> Status {
    Status::failed_precondition(e)
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn get_capacity(
        &self,
        _: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::Capacity>, Status> {
        Ok(Response::new(pb::Capacity {
            node_name: self.agent.node.clone(),
            ram_mb: self.ram_mb,
            vcpus: self.vcpus,
            accel: self.agent.effective_accel(),
        }))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn boot(&self, r: Request<pb::GuestSpec>) -> Result<Response<pb::Done>, Status> {
        let g = r.into_inner();
        checked_id(&g.id)?;
        if !matches!(g.image_format.as_str(), "raw" | "qcow2") {
            return Err(Status::invalid_argument("image_format is raw or qcow2"));
        }
        let spec = GuestSpec {
            id: g.id,
            image: image_ref(g.image)?,
            image_format: g.image_format,
            ram_mb: g.ram_mb.clamp(16, 1 << 20),
            vcpus: g.vcpus.clamp(1, 255),
            disk_gb: g.disk_gb.clamp(1, 1 << 16),
            nics: g.nics.into_iter().map(|n| (n.tap, n.mac)).collect(),
            standalone: g.standalone,
            config_drive: g
                .config_drive
                .into_iter()
                .map(|f| (f.path, f.data))
                .collect(),
            root_socket: g.root_socket,
        };
        self.agent.boot(&spec).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn start(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        let id = checked_id(&r.get_ref().id)?;
        self.agent.launch(id).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn power_off(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        self.agent.power_off(checked_id(&r.get_ref().id)?).await;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn reboot(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        let id = checked_id(&r.get_ref().id)?;
        self.agent.reboot(id).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn pause(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        let id = checked_id(&r.get_ref().id)?;
        self.agent.pause(id).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn unpause(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        let id = checked_id(&r.get_ref().id)?;
        self.agent.unpause(id).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn snapshot(
        &self,
        r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        let id = checked_id(&r.id)?;
        if !r.upload_url.starts_with("http://") && !r.upload_url.starts_with("https://") {
            return Err(Status::invalid_argument(
                "upload_url must be an http(s) URL",
            ));
        }
        self.agent
            .snapshot(id, &r.upload_url)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn destroy(&self, r: Request<pb::GuestRef>) -> Result<Response<pb::Done>, Status> {
        self.agent.destroy(checked_id(&r.get_ref().id)?).await;
        Ok(Response::new(pb::Done {}))
    }

    async fn get_status(
        &self,
        r: Request<pb::GuestRef>,
    ) -> Result<Response<pb::GuestStatus>, Status> {
        let pid = self.agent.pid(checked_id(&r.get_ref().id)?);
        Ok(Response::new(pb::GuestStatus {
            running: pid.is_some(),
            pid: pid.unwrap_or(0),
        }))
    }

    async fn get_console(
        &self,
        r: Request<pb::ConsoleRequest>,
    ) -> Result<Response<pb::ConsoleReply>, Status> {
        let r = r.into_inner();
        let lines = (r.lines > 0).then_some(r.lines as usize);
        Ok(Response::new(pb::ConsoleReply {
            text: self.agent.console(checked_id(&r.id)?, lines),
        }))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn attach_disk(&self, r: Request<pb::DiskRequest>) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        self.agent
            .attach_disk(checked_id(&r.id)?, &r.volume_id, &r.socket)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn detach_disk(&self, r: Request<pb::DiskRequest>) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        self.agent
            .detach_disk(checked_id(&r.id)?, &r.volume_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn attach_nic(&self, r: Request<pb::NicRequest>) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        let id = checked_id(&r.id)?;
        let tap = checked_tap(&r.tap)?;
        if !r.mac.chars().all(|c| c.is_ascii_hexdigit() || c == ':') || r.mac.len() != 17 {
            return Err(Status::invalid_argument("mac is not a MAC address"));
        }
        self.agent
            .attach_nic(id, tap, &r.mac)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    #[tracing::instrument(skip_all, fields(server = %r.get_ref().id))]
    async fn detach_nic(&self, r: Request<pb::NicRequest>) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        let id = checked_id(&r.id)?;
        let tap = checked_tap(&r.tap)?;
        self.agent.detach_nic(id, tap).await.map_err(failed)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn wait_tap(&self, r: Request<pb::WaitTapRequest>) -> Result<Response<pb::Done>, Status> {
        let r = r.into_inner();
        let within = Duration::from_millis(r.timeout_ms.min(120_000) as u64);
        self.agent
            .wait_tap(&r.tap, within)
            .await
            .map_err(Status::deadline_exceeded)?;
        Ok(Response::new(pb::Done {}))
    }
}

/// Runs `ursa agent`: serves the agent on `listen` (`unix:/path` or
/// `host:port`) until Ctrl-C or SIGTERM. Guests keep running after it
/// stops and are found again by the next agent on the same directory.
pub async fn serve(agent: Agent, listen: &str) -> anyhow::Result<()> {
    let (ram_mb, vcpus) = super::host_capacity();
    let svc = AgentServer::new(AgentService {
        agent,
        ram_mb,
        vcpus,
    });
    let router = tonic::transport::Server::builder()
        .trace_fn(|_| tracing::info_span!("agent"))
        .add_service(svc);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match listen.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)?;
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(l),
                    stop,
                )
                .await?
        }
        None => router.serve_with_shutdown(listen.parse()?, stop).await?,
    }
    Ok(())
}
