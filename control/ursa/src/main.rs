//! The `ursa` command: `ursa up` runs a single-node cloud; `ursa doctor`
//! checks the host's prerequisites; `ursa agent` runs a compute node; `ursa
//! keys rotate` rotates the token keys of a state directory.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use ursa::server::{default_state_dir, up, UpOptions};
use ursa_identity::password::Cost;
use ursa_identity::token::KeyRepo;

#[derive(Parser)]
#[command(name = "ursa", version, about = "Ursa: an OpenStack-compatible cloud")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the `up` variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run a single-node cloud until Ctrl-C or SIGTERM.
    Up {
        /// Where the store, token keys, clouds.yaml and openrc live.
        #[arg(long, env = "URSA_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The token keys' directory (default `<state-dir>/keys`): point
        /// every controller of one cloud at one shared directory, so that a
        /// key rotated on one is used by all within 2 s.
        #[arg(long, env = "URSA_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        /// Address of the one HTTP listener.
        #[arg(long, env = "URSA_BIND", default_value = "127.0.0.1:5000")]
        bind: SocketAddr,
        /// The admin's password; generated (and kept in the state directory) if absent.
        #[arg(long, env = "URSA_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// `postgres://…` to share state between controllers; SQLite in the state directory otherwise.
        #[arg(long, env = "URSA_DATABASE_URL")]
        database_url: Option<String>,
        /// The URL clients reach this listener at, if not the bind address.
        #[arg(long, env = "URSA_PUBLIC_URL")]
        public_url: Option<String>,
        /// Token lifetime in seconds.
        #[arg(long, env = "URSA_TOKEN_TTL", default_value_t = 3600)]
        token_ttl: u64,
        /// argon2id memory cost in KiB (OWASP minimum: 19456).
        #[arg(long, env = "URSA_ARGON2_MEMORY_KIB", default_value_t = Cost::default().memory_kib)]
        argon2_memory_kib: u32,
        /// argon2id iterations (OWASP minimum at 19 MiB: 2).
        #[arg(long, env = "URSA_ARGON2_ITERATIONS", default_value_t = Cost::default().iterations)]
        argon2_iterations: u32,
        /// NAME=ENDPOINT (unix:/path or http://host:port) of a storage node
        /// (`ursa-blockd`), repeatable. Without one, `ursa up` runs its own
        /// blockd (the binary next to `ursa`, or on PATH) in the state directory.
        #[arg(long = "blockd", value_name = "NAME=ENDPOINT")]
        blockd: Vec<String>,
        /// NAME=ENDPOINT (unix:/path or http://host:port) of a network node
        /// (`ursa-netd`), repeatable; the first hosts DHCP and routers.
        /// Without one, `ursa up` runs its own netd in the state directory.
        #[arg(long = "netd", value_name = "NAME=ENDPOINT")]
        netd: Vec<String>,
        /// Run no network node: the network API stores and answers, nothing
        /// is plugged (for API-only tests and control-only hosts).
        #[arg(long, conflicts_with = "netd")]
        no_netd: bool,
        /// Run no compute agent (no guests on this host).
        #[arg(long)]
        no_compute: bool,
        /// NAME=ENDPOINT (unix:/path or http://host:port) of a compute node
        /// (`ursa agent`), repeatable. NAME is also the node's netd name.
        /// Without one, `ursa up` runs guests itself.
        #[arg(
            long = "compute",
            value_name = "NAME=ENDPOINT",
            conflicts_with = "no_compute"
        )]
        compute: Vec<String>,
        /// A bootable raw disk (`images/tiny/build.sh OUT` makes
        /// `OUT/tiny.raw`) to register as the public image `tiny` when no
        /// image of that name exists.
        #[arg(long, env = "URSA_TINY_IMAGE", conflicts_with = "no_tiny_image")]
        tiny_image: Option<PathBuf>,
        /// Without --tiny-image, a fresh cloud with a compute node builds
        /// the image `tiny` from this host's packages (linux-image-amd64,
        /// busybox-static, syslinux, mtools, dosfstools, cpio) into
        /// `<state-dir>/tiny`; this turns that off.
        #[arg(long)]
        no_tiny_image: bool,
        /// Where object storage keeps object bytes: `dir` (under the state
        /// directory) or `s3://BUCKET[/PREFIX]`, an S3-compatible store
        /// (Garage, MinIO, AWS) that every controller reaches, with
        /// AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
        /// AWS_REGION from the environment.
        #[arg(long, env = "URSA_BLOB_STORE")]
        blob_store: Option<String>,
        /// Where image data lives: `object` (the object service, so the
        /// blob store above) or `file` (`<state-dir>/images`).
        #[arg(long, env = "URSA_IMAGE_STORE", default_value = "object",
              value_parser = ["object", "file"])]
        image_store: String,
        /// Where the metadata API listens for the netd nodes' metadata
        /// proxies (each is told the URL); the local netd reaches 127.0.0.1.
        #[arg(long, env = "URSA_METADATA_BIND", default_value = "127.0.0.1:0")]
        metadata_bind: SocketAddr,
        /// The interface the local netd bridges into the external network
        /// `public` (floating IPs and router gateways are reached through it).
        #[arg(long, env = "URSA_EXTERNAL_INTERFACE")]
        external_interface: Option<String>,
        /// VXLAN VNIs tenant networks take, as LOW:HIGH (repeatable).
        #[arg(
            long = "vxlan-vni-range",
            value_name = "LOW:HIGH",
            default_value = "1:65535"
        )]
        vni_ranges: Vec<String>,
        /// PHYSNET:LOW:HIGH VLAN ids tenant VLAN networks take (repeatable).
        #[arg(long = "vlan-range", value_name = "PHYSNET:LOW:HIGH")]
        vlan_ranges: Vec<String>,
        /// Physical networks flat and VLAN networks may name (repeatable).
        #[arg(
            long = "physical-network",
            value_name = "PHYSNET",
            default_value = "public"
        )]
        physnets: Vec<String>,
    },
    /// Run a compute agent: this node's guests under QEMU, driven by a
    /// control plane (`ursa up --compute NAME=ENDPOINT`) over gRPC.
    Agent {
        /// Where to serve: `unix:/path` or `host:port`.
        #[arg(long, env = "URSA_AGENT_LISTEN")]
        listen: String,
        /// Where the guests' disks, consoles and QMP sockets live.
        #[arg(long, env = "URSA_AGENT_DIR")]
        dir: PathBuf,
        /// The node's name: the same name its netd has, so that the ports
        /// of the guests placed here are plugged here.
        #[arg(long, env = "URSA_NODE_NAME")]
        node: String,
    },
    /// Check this host's prerequisites (root, nftables, QEMU, qemu-img,
    /// memlock, kernel modules): exits 1 when the default cloud lacks one.
    Doctor,
    /// Manage token keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a new primary key; keep at most --max-active keys. Live tokens stay
    /// valid while their key is kept.
    Rotate {
        #[arg(long, env = "URSA_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The token keys' directory (default `<state-dir>/keys`).
        #[arg(long, env = "URSA_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        max_active: usize,
    },
}

/// Pins glibc's mmap threshold. Each password hash allocates argon2id's
/// 19 MiB working memory; with glibc's default *dynamic* threshold, the first
/// free raises the threshold above that size, and from then on every thread
/// arena keeps a 19 MiB block for good (hundreds of MiB under a login burst).
/// A fixed threshold keeps such blocks mmapped, so they go back to the kernel
/// as soon as the hash is done.
fn pin_mmap_threshold() {
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> anyhow::Result<()> {
    pin_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("URSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Up {
            state_dir,
            keys_dir,
            bind,
            admin_password,
            database_url,
            public_url,
            token_ttl,
            argon2_memory_kib,
            argon2_iterations,
            blockd,
            netd,
            no_netd,
            no_compute,
            compute,
            tiny_image,
            no_tiny_image,
            metadata_bind,
            external_interface,
            vni_ranges,
            vlan_ranges,
            physnets,
            blob_store,
            image_store,
        } => {
            let net = parse_net_config(&vni_ranges, &vlan_ranges, physnets)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(up(UpOptions {
                state_dir: state_dir.unwrap_or_else(default_state_dir),
                keys_dir,
                bind,
                database_url,
                admin_password,
                public_url,
                token_ttl: Duration::from_secs(token_ttl),
                password_cost: Cost {
                    memory_kib: argon2_memory_kib,
                    iterations: argon2_iterations,
                },
                blockd,
                netd,
                no_netd,
                no_compute,
                compute,
                tiny_image,
                no_tiny_image,
                metadata_bind,
                external_interface,
                net,
                blob_store,
                image_store,
            }))
        }
        Cmd::Doctor => {
            let r = ursa::doctor::Report::probe();
            print!("{}", r.table());
            if r.complete() {
                println!("Everything the default cloud needs is here.");
                Ok(())
            } else {
                println!("Missing above (MISSING): ursa up serves without what each one provides.");
                std::process::exit(1);
            }
        }
        Cmd::Agent { listen, dir, node } => {
            std::fs::create_dir_all(&dir)?;
            let dir = std::fs::canonicalize(&dir)?;
            let agent = ursa_compute::agent::Agent::new(&node, &dir);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(ursa_compute::node::serve(agent, &listen))
        }
        Cmd::Keys {
            cmd:
                KeysCmd::Rotate {
                    state_dir,
                    keys_dir,
                    max_active,
                },
        } => {
            let dir = keys_dir
                .unwrap_or_else(|| state_dir.unwrap_or_else(default_state_dir).join("keys"));
            let id = KeyRepo::new(&dir).rotate(max_active)?;
            println!("new primary token key {id} in {}", dir.display());
            Ok(())
        }
    }
}

/// The segment ranges and physical networks of `ursa up`'s options.
fn parse_net_config(
    vni: &[String],
    vlan: &[String],
    physnets: Vec<String>,
) -> anyhow::Result<ursa_network::NetConfig> {
    let num = |s: &str, max: u32| -> anyhow::Result<u32> {
        let v: u32 = s
            .parse()
            .map_err(|_| anyhow::anyhow!("{s:?} is not a number"))?;
        anyhow::ensure!((1..=max).contains(&v), "{v} is outside 1 to {max}");
        Ok(v)
    };
    let mut cfg = ursa_network::NetConfig {
        vni_ranges: Vec::new(),
        physnets,
        ..Default::default()
    };
    for r in vni {
        let (lo, hi) = r
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--vxlan-vni-range wants LOW:HIGH, got {r:?}"))?;
        let (lo, hi) = (num(lo, 16_777_215)?, num(hi, 16_777_215)?);
        anyhow::ensure!(lo <= hi, "--vxlan-vni-range {r}: LOW is above HIGH");
        cfg.vni_ranges.push((lo, hi));
    }
    for r in vlan {
        let parts: Vec<&str> = r.split(':').collect();
        anyhow::ensure!(
            parts.len() == 3,
            "--vlan-range wants PHYSNET:LOW:HIGH, got {r:?}"
        );
        let (lo, hi) = (num(parts[1], 4094)?, num(parts[2], 4094)?);
        anyhow::ensure!(lo <= hi, "--vlan-range {r}: LOW is above HIGH");
        cfg.vlan_ranges
            .push((parts[0].to_string(), lo as u16, hi as u16));
        if !cfg.physnets.iter().any(|p| p == parts[0]) {
            cfg.physnets.push(parts[0].to_string());
        }
    }
    Ok(cfg)
}
