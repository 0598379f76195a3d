//! The metadata proxy: guests reach 169.254.169.254:80 through their
//! router, whose NAT table redirects it to this proxy listening inside the
//! router's namespace (port 9697; one listener per router, all in netd's
//! one process, where Neutron runs a haproxy per router). The proxy knows
//! the caller from the leg the request arrived on and its source address,
//! looks up the port, and forwards the request to the configured upstream
//! (control's metadata API) with the identity headers Neutron's metadata
//! agent sends: `X-Forwarded-For`, `X-Instance-ID`, `X-Tenant-ID` and
//! `X-Instance-ID-Signature` (hex HMAC-SHA256 of the instance id under the
//! shared secret), plus `X-Ursa-Port-ID` and `X-Ursa-Network-ID`. Whatever
//! identity headers the guest sent are dropped first, so a guest cannot
//! claim to be another; a source address that is no known port gets 404.

use crate::model::Desired;
use crate::router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use tracing::Instrument;

/// Largest request body a guest may send upstream.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// "http://127.0.0.1:8775"; None: the proxy answers 503.
    pub upstream: Option<hyper::Uri>,
    pub secret: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Caller {
    port_id: String,
    network_id: String,
    device_id: String,
    project_id: String,
}

/// What one router's proxy needs: its internal legs and the ports behind them.
#[derive(Debug, Default, PartialEq)]
struct View {
    legs: Vec<(ipnet::Ipv4Net, String)>,
    ports: HashMap<(String, Ipv4Addr), (String, String, String)>,
}

type Views = Arc<RwLock<HashMap<String, Arc<View>>>>;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub struct Metadata {
    cfg: Arc<Config>,
    views: Views,
    listeners: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    client: Client,
}

impl Metadata {
    pub fn new(cfg: Config) -> Metadata {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Metadata {
            cfg: Arc::new(cfg),
            views: Default::default(),
            listeners: Default::default(),
            client,
        }
    }

    /// Points the proxies at the current routers and ports; starts a
    /// listener in each new router and stops those of removed ones.
    /// Returns (router, error) for listeners that could not start.
    pub async fn sync(&self, want: &Desired) -> Vec<(String, String)> {
        let mut views = HashMap::new();
        for r in want.routers.values() {
            let legs: Vec<_> = r
                .interfaces
                .iter()
                .map(|l| (l.net(), l.network_id.clone()))
                .collect();
            let mut ports = HashMap::new();
            for p in want.ports.values() {
                if !legs.iter().any(|(_, n)| *n == p.network_id) {
                    continue;
                }
                for ip in &p.fixed_ips {
                    if let Ok((IpAddr::V4(a), _)) = crate::model::parse_cidr(ip) {
                        ports.insert(
                            (p.network_id.clone(), a),
                            (p.id.clone(), p.device_id.clone(), p.project_id.clone()),
                        );
                    }
                }
            }
            // Guests on other nodes reach this router over the overlay.
            for (net, remotes) in &want.remotes {
                if !legs.iter().any(|(_, n)| n == net) {
                    continue;
                }
                for p in remotes.ports.iter().filter(|p| !p.device_id.is_empty()) {
                    for ip in &p.ips {
                        if let IpAddr::V4(a) = ip {
                            ports.entry((net.clone(), *a)).or_insert_with(|| {
                                (p.port_id.clone(), p.device_id.clone(), p.project_id.clone())
                            });
                        }
                    }
                }
            }
            views.insert(r.id.clone(), Arc::new(View { legs, ports }));
        }
        *self.views.write().expect("views") = views;
        let mut errors = Vec::new();
        let mut ls = self.listeners.lock().expect("listeners");
        ls.retain(|id, task| {
            let keep = want.routers.contains_key(id) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for id in want.routers.keys() {
            if ls.contains_key(id) {
                continue;
            }
            match self.listen(id) {
                Ok(task) => {
                    ls.insert(id.clone(), task);
                }
                Err(e) => errors.push((id.clone(), e.to_string())),
            }
        }
        errors
    }

    /// Stops a router's listener (before its namespace goes).
    pub fn stop(&self, router_id: &str) {
        if let Some(t) = self.listeners.lock().expect("listeners").remove(router_id) {
            t.abort();
        }
    }

    fn listen(&self, router_id: &str) -> crate::error::Result<tokio::task::JoinHandle<()>> {
        let std_listener = router::in_ns(&router::ns_path(router_id), || {
            let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, router::METADATA_PORT))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| {
            crate::error::Error::Io {
                context: "metadata listener".into(),
                source: e,
            }
        })?;
        let views = self.views.clone();
        let cfg = self.cfg.clone();
        let client = self.client.clone();
        let rid = router_id.to_string();
        Ok(tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let local = stream.local_addr().ok();
                let caller = local.and_then(|l| identify(&views, &rid, l, peer));
                let cfg = cfg.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (cfg, client, caller) = (cfg.clone(), client.clone(), caller.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                proxy(req, peer, caller, &cfg, &client)
                                    .instrument(tracing::info_span!(
                                        "metadata",
                                        peer = %peer.ip()
                                    ))
                                    .await,
                            )
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        }))
    }
}

fn identify(views: &Views, router: &str, local: SocketAddr, peer: SocketAddr) -> Option<Caller> {
    let (IpAddr::V4(l), IpAddr::V4(p)) = (local.ip(), peer.ip()) else {
        return None;
    };
    let v = views.read().expect("views").get(router)?.clone();
    let (_, net) = v
        .legs
        .iter()
        .find(|(n, _)| n.contains(&l) && n.contains(&p))?;
    let (port, dev, proj) = v.ports.get(&(net.clone(), p))?;
    Some(Caller {
        port_id: port.clone(),
        network_id: net.clone(),
        device_id: dev.clone(),
        project_id: proj.clone(),
    })
}

/// Neutron's signature: hex HMAC-SHA256 of the instance id.
pub fn sign(secret: &[u8], instance_id: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    m.update(instance_id.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn plain(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r
}

async fn proxy(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    caller: Option<Caller>,
    cfg: &Config,
    client: &Client,
) -> Response<Full<Bytes>> {
    let Some(c) = caller else {
        return plain(
            StatusCode::NOT_FOUND,
            "no port with this address on this network",
        );
    };
    let Some(up) = &cfg.upstream else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metadata upstream configured",
        );
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: hyper::Uri = match format!("{}{}", up.to_string().trim_end_matches('/'), pq).parse() {
        Ok(u) => u,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request path"),
    };
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter() {
        let n = k.as_str();
        if n.starts_with("x-instance-id")
            || n.starts_with("x-tenant-id")
            || n.starts_with("x-forwarded-for")
            || n.starts_with("x-ursa-")
            || n == "host"
            || n == "connection"
        {
            continue;
        }
        out = out.header(k, v);
    }
    out = out
        .header("x-forwarded-for", peer.ip().to_string())
        .header("x-instance-id", &c.device_id)
        .header("x-tenant-id", &c.project_id)
        .header("x-instance-id-signature", sign(&cfg.secret, &c.device_id))
        .header("x-ursa-port-id", &c.port_id)
        .header("x-ursa-network-id", &c.network_id);
    let Ok(out) = out.body(Full::new(body)) else {
        return plain(StatusCode::BAD_REQUEST, "bad request headers");
    };
    match client.request(out).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            match Limited::new(body, 64 << 20).collect().await {
                Ok(b) => Response::from_parts(parts, Full::new(b.to_bytes())),
                Err(_) => plain(StatusCode::BAD_GATEWAY, "upstream response failed"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metadata upstream unreachable");
            plain(StatusCode::BAD_GATEWAY, "metadata upstream unreachable")
        }
    }
}
