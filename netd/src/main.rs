//! `ursa-netd`: the network node daemon.

use clap::Parser;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use ursa_netd::model::NodeConfig;
use ursa_netd::service::{Config, Netd};
use ursa_proto::netd::v1::netd_server::NetdServer;

#[derive(Parser)]
#[command(name = "ursa-netd", version, about = "Ursa's network node daemon")]
struct Args {
    /// gRPC listen address: HOST:PORT, or unix:/path/to/socket.
    #[arg(long, env = "URSA_NETD_LISTEN", default_value = "127.0.0.1:9701")]
    listen: String,
    /// This node's underlay (VTEP) address; an interface must hold it.
    #[arg(long, env = "URSA_NETD_VTEP")]
    vtep_address: Option<Ipv4Addr>,
    /// Where the desired state is kept.
    #[arg(
        long,
        env = "URSA_NETD_STATE_DIR",
        default_value = "/var/lib/ursa/netd"
    )]
    state_dir: PathBuf,
    /// PHYSNET:INTERFACE for flat and VLAN networks (repeatable).
    #[arg(long = "physical-interface", value_name = "PHYSNET:IFACE")]
    physical_interfaces: Vec<String>,
    /// Seconds between drift-repairing reconcile passes.
    #[arg(long, default_value_t = 30)]
    resync_interval: u64,
    /// Where the metadata proxy forwards guests' requests (control's
    /// metadata API), e.g. http://127.0.0.1:8775.
    #[arg(long, env = "URSA_METADATA_UPSTREAM")]
    metadata_upstream: Option<String>,
    /// A file holding the secret shared with the metadata API; requests are
    /// signed with it (X-Instance-ID-Signature).
    #[arg(long, env = "URSA_METADATA_SECRET_FILE")]
    metadata_secret_file: Option<PathBuf>,
    /// Print what a reconcile of the stored desired state would change, then exit.
    #[arg(long)]
    plan: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("URSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Two packet sockets per DHCP network and a netlink socket per router
/// namespace: a node with a thousand networks needs more descriptors than
/// the usual soft limit of 1024, so take the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut physnets = BTreeMap::new();
    for p in &args.physical_interfaces {
        let (net, ifc) = p.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("--physical-interface wants PHYSNET:IFACE, got {p:?}")
        })?;
        physnets.insert(net.to_string(), ifc.to_string());
    }
    let upstream = match &args.metadata_upstream {
        Some(u) => Some(
            u.parse::<hyper::Uri>()
                .map_err(|e| anyhow::anyhow!("--metadata-upstream {u:?}: {e}"))?,
        ),
        None => None,
    };
    let secret = match &args.metadata_secret_file {
        Some(f) => std::fs::read(f)
            .map_err(|e| anyhow::anyhow!("--metadata-secret-file {}: {e}", f.display()))?
            .trim_ascii()
            .to_vec(),
        None => Vec::new(),
    };
    if upstream.is_some() && secret.is_empty() {
        anyhow::bail!("--metadata-upstream needs --metadata-secret-file (requests are signed)");
    }
    let netd = Netd::open(Config {
        state_dir: args.state_dir.clone(),
        node: NodeConfig {
            vtep: args.vtep_address,
            physnets,
            isolated_metadata: upstream.is_some(),
            ..Default::default()
        },
        metadata: ursa_netd::metadata::Config { upstream, secret },
    })
    .await?;
    if args.plan {
        let r = netd.reconcile(true).await?;
        for a in &r.actions {
            println!("{a}");
        }
        println!(
            "plan: {} to add, {} to change, {} to remove",
            r.added, r.changed, r.removed
        );
        return Ok(());
    }
    let r = netd.reconcile(false).await?;
    eprintln!(
        "ursa-netd: start reconcile added={} changed={} removed={} errors={} in {} us",
        r.added,
        r.changed,
        r.removed,
        r.errors.len(),
        r.duration_us
    );
    // Its errors were logged by the pass itself (each once).
    for a in &r.actions {
        eprintln!("ursa-netd:   {a}");
    }
    let _kernel_watch = netd.watch_kernel()?;
    let periodic = {
        let netd = netd.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(args.resync_interval.max(1)));
            t.tick().await;
            loop {
                t.tick().await;
                if let Err(e) = netd.reconcile(false).await {
                    tracing::warn!(error = %e, "periodic reconcile failed");
                }
            }
        })
    };
    let svc = NetdServer::new(ursa_netd::grpc::Service(netd));
    let router = tonic::transport::Server::builder().add_service(svc);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let server = if let Some(path) = args.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let uds = tokio::net::UnixListener::bind(path)?;
        eprintln!("ursa-netd: serving on unix:{path}");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(uds);
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
    } else {
        let addr = args.listen.parse()?;
        eprintln!("ursa-netd: serving on {addr}");
        tokio::spawn(router.serve_with_shutdown(addr, stopped))
    };
    shutdown().await;
    let _ = stop_tx.send(());
    // Requests in flight get a moment to finish; watch streams never do, so
    // they are cut after the grace period instead of holding the exit.
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(r) => r??,
        Err(_) => eprintln!("ursa-netd: closing streams still open after 3 s"),
    }
    periodic.abort();
    eprintln!("ursa-netd: stopped; the kernel state is left as it is");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
