//! `ursa-blockd`: the storage node daemon. Serves proto/ursa/blockd/v1 over
//! gRPC and the exported volumes over NBD. `--export NAME=PATH[:SIZE]` also
//! serves a plain file (created thin with SIZE if missing), like qemu-nbd.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use ursa_blockd::export::nbd::{self, ExportTable};
use ursa_blockd::service::{Blockd, Config, NbdEndpoint};
use ursa_blockd::volume::FileVolume;
use ursa_proto::blockd::v1::blockd_server::BlockdServer;

#[derive(Parser)]
#[command(name = "ursa-blockd", version, about = "Ursa's storage node daemon")]
struct Args {
    /// gRPC listen address: HOST:PORT or unix:/path (omit to serve NBD only).
    #[arg(long, env = "URSA_BLOCKD_LISTEN")]
    listen: Option<String>,
    /// Where the volume registry is kept.
    #[arg(
        long,
        env = "URSA_BLOCKD_STATE_DIR",
        default_value = "/var/lib/ursa/blockd"
    )]
    state_dir: PathBuf,
    /// NAME=DIR: a storage pool (repeatable).
    #[arg(long = "pool", value_name = "NAME=DIR")]
    pools: Vec<String>,
    /// NBD over a unix socket at this path.
    #[arg(long)]
    nbd_unix: Option<PathBuf>,
    /// NBD over TCP at HOST:PORT.
    #[arg(long)]
    nbd_listen: Option<std::net::SocketAddr>,
    /// Directory for vhost-user-blk sockets (`<dir>/<volume>.sock`).
    #[arg(long)]
    vhost_user_dir: Option<PathBuf>,
    /// NAME=PATH[:SIZE]: serve a file as it is (repeatable), over NBD and,
    /// with --vhost-user-dir, over vhost-user-blk at `<dir>/NAME.sock`.
    #[arg(long = "export")]
    exports: Vec<String>,
    /// Microseconds an NBD connection keeps polling its socket and ring
    /// after it last had work, before it sleeps (0: never poll). Polling
    /// spares a wake-up per request at the cost of CPU while it lasts.
    #[arg(long, env = "URSA_BLOCKD_NBD_POLL_US", default_value_t = 200)]
    nbd_poll_us: u64,
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('K') | Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('G') | Some('g') => (&s[..s.len() - 1], 1 << 30),
        Some('T') | Some('t') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()?
        .checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s} overflows"))
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
    ursa_blockd::engine::raise_nofile_limit();
    nbd::set_poll(std::time::Duration::from_micros(args.nbd_poll_us));
    let table = ExportTable::default();
    // Files served as they are: over NBD, and over vhost-user-blk too
    // when there is a socket directory.
    let mut vhost = Vec::new();
    for e in &args.exports {
        let (name, rest) = e
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--export wants NAME=PATH[:SIZE], got {e:?}"))?;
        let (path, size) = match rest.rsplit_once(':') {
            Some((p, s)) => (PathBuf::from(p), Some(parse_size(s)?)),
            None => (PathBuf::from(rest), None),
        };
        let v = match (path.exists(), size) {
            (true, _) => FileVolume::open(&path)?,
            (false, Some(sz)) => FileVolume::create(&path, sz)?,
            (false, None) => anyhow::bail!(
                "{} does not exist; give a size to create it",
                path.display()
            ),
        };
        let v: Arc<dyn ursa_blockd::volume::Volume> = Arc::new(v);
        if let Some(dir) = &args.vhost_user_dir {
            std::fs::create_dir_all(dir)?;
            let sock = dir.join(format!("{name}.sock"));
            vhost.push(ursa_blockd::export::vhost_user::VhostExport::start(
                &sock,
                name,
                v.clone(),
            )?);
            eprintln!("ursa-blockd: vhost-user-blk {name} on {}", sock.display());
        }
        table.insert(name, v);
    }
    let rt = tokio::runtime::Runtime::new()?;
    let r = rt.block_on(run(args, table));
    // Stopping must not wait on a client: what is acknowledged after a
    // FLUSH is on disk, so nothing needs a clean stop.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(vhost);
    r
}

fn serve_nbd<L, S>(accept: L, table: ExportTable) -> tokio::task::JoinHandle<()>
where
    L: FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<S>> + Send>>
        + Send
        + 'static,
    S: nbd::Stream,
{
    let mut accept = accept;
    tokio::spawn(async move {
        loop {
            let Ok(s) = accept().await else { continue };
            let t = table.clone();
            tokio::spawn(async move {
                if let Err(e) = nbd::serve(s, t).await {
                    tracing::debug!(error = %e, "nbd connection ended");
                }
            });
        }
    })
}

async fn run(args: Args, table: ExportTable) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    if let Some(p) = &args.nbd_unix {
        let _ = std::fs::remove_file(p);
        let l = Arc::new(tokio::net::UnixListener::bind(p)?);
        eprintln!("ursa-blockd: NBD on unix:{}", p.display());
        tasks.push(serve_nbd(
            move || {
                let l = l.clone();
                Box::pin(async move { l.accept().await.map(|(s, _)| s) })
            },
            table.clone(),
        ));
    }
    if let Some(a) = args.nbd_listen {
        let l = Arc::new(tokio::net::TcpListener::bind(a).await?);
        eprintln!("ursa-blockd: NBD on {a}");
        tasks.push(serve_nbd(
            move || {
                let l = l.clone();
                Box::pin(async move {
                    let (s, _) = l.accept().await?;
                    let _ = s.set_nodelay(true);
                    Ok(s)
                })
            },
            table.clone(),
        ));
    }
    anyhow::ensure!(!tasks.is_empty(), "give --nbd-unix or --nbd-listen");
    let grpc = if let Some(listen) = &args.listen {
        let mut pools = BTreeMap::new();
        for p in &args.pools {
            let (n, d) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--pool wants NAME=DIR, got {p:?}"))?;
            pools.insert(n.to_string(), PathBuf::from(d));
        }
        let nbd = NbdEndpoint {
            socket: args.nbd_unix.clone(),
            tcp: args.nbd_listen,
        };
        let blockd = Blockd::open(
            Config {
                state_dir: args.state_dir.clone(),
                pools,
                nbd,
                vhost_user_dir: args.vhost_user_dir.clone(),
            },
            table.clone(),
        )?;
        let router = tonic::transport::Server::builder()
            .add_service(BlockdServer::new(ursa_blockd::grpc::Service(blockd)));
        Some(if let Some(path) = listen.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let uds = tokio::net::UnixListener::bind(path)?;
            eprintln!("ursa-blockd: gRPC on unix:{path}");
            tokio::spawn(async move {
                let _ = router
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(uds))
                    .await;
            })
        } else {
            let addr = listen.parse()?;
            eprintln!("ursa-blockd: gRPC on {addr}");
            tokio::spawn(async move {
                let _ = router.serve(addr).await;
            })
        })
    } else {
        None
    };
    eprintln!("ursa-blockd: ready");
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if let Some(g) = grpc {
        g.abort();
    }
    eprintln!("ursa-blockd: stopped");
    Ok(())
}
