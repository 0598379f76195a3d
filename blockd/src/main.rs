//! `ursa-blockd`: serves volumes over NBD. Until the gRPC service lands,
//! exports are named on the command line: `--export NAME=PATH[:SIZE]`
//! (a missing file is created thin with SIZE bytes, e.g. `10G`).

use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use ursa_blockd::export::nbd::{self, Exports};
use ursa_blockd::volume::{FileVolume, Volume};

#[derive(Parser)]
#[command(name = "ursa-blockd", version, about = "Ursa's storage node daemon")]
struct Args {
    /// NBD over a unix socket at this path.
    #[arg(long)]
    nbd_unix: Option<PathBuf>,
    /// NBD over TCP at HOST:PORT.
    #[arg(long)]
    nbd_listen: Option<std::net::SocketAddr>,
    /// NAME=PATH[:SIZE] (repeatable).
    #[arg(long = "export", required = true)]
    exports: Vec<String>,
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
    let mut exports: Exports = BTreeMap::new();
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
        exports.insert(name.to_string(), Arc::new(v) as Arc<dyn Volume>);
    }
    let exports = Arc::new(exports);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        if let Some(p) = &args.nbd_unix {
            let _ = std::fs::remove_file(p);
            let l = tokio::net::UnixListener::bind(p)?;
            eprintln!("ursa-blockd: NBD on unix:{}", p.display());
            let ex = exports.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let ex = ex.clone();
                    tokio::spawn(async move {
                        if let Err(e) = nbd::serve(s, ex).await {
                            tracing::debug!(error = %e, "nbd connection ended");
                        }
                    });
                }
            }));
        }
        if let Some(a) = args.nbd_listen {
            let l = tokio::net::TcpListener::bind(a).await?;
            eprintln!("ursa-blockd: NBD on {a}");
            let ex = exports.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let ex = ex.clone();
                    tokio::spawn(async move {
                        if let Err(e) = nbd::serve(s, ex).await {
                            tracing::debug!(error = %e, "nbd connection ended");
                        }
                    });
                }
            }));
        }
        anyhow::ensure!(!tasks.is_empty(), "give --nbd-unix or --nbd-listen");
        eprintln!("ursa-blockd: ready");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
