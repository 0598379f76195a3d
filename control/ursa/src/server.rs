//! `ursa up`: one process that serves a single-node cloud.
//!
//! It prepares the state directory (store, token keys, the admin password
//! when generated), bootstraps identity, writes `clouds.yaml` and `openrc`
//! there, prints the openrc block on standard output once the listener is
//! ready, and serves until SIGINT or SIGTERM, then drains and closes the
//! store.

use crate::app::{self, Services};
use anyhow::Context;
use rand::distributions::{Alphanumeric, DistString};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ursa_core::store::Store;
use ursa_identity::bootstrap::Bootstrap;
use ursa_identity::token::{KeyRepo, TokenCodec};
use ursa_identity::{password, Identity, Settings};

/// Everything `ursa up` needs to know.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub state_dir: PathBuf,
    /// The token keys' directory; `<state_dir>/keys` when None.
    pub keys_dir: Option<PathBuf>,
    pub bind: SocketAddr,
    pub database_url: Option<String>,
    pub admin_password: Option<String>,
    pub public_url: Option<String>,
    pub token_ttl: Duration,
    pub password_cost: password::Cost,
    /// NAME=ENDPOINT of storage nodes; empty: run one here.
    pub blockd: Vec<String>,
    /// NAME=ENDPOINT of network nodes; empty: run one here.
    pub netd: Vec<String>,
    /// No network node at all (not even a local one).
    pub no_netd: bool,
    /// Run no compute agent here.
    pub no_compute: bool,
    /// NAME=ENDPOINT of remote compute agents (`ursa agent`).
    pub compute: Vec<String>,
    /// A raw disk to register as the public image `tiny`.
    pub tiny_image: Option<PathBuf>,
    /// Do not build the image `tiny` when none is given and none exists.
    pub no_tiny_image: bool,
    /// The metadata API's listener.
    pub metadata_bind: std::net::SocketAddr,
    /// The interface the local netd bridges into the external network.
    pub external_interface: Option<String>,
    /// Segment ranges and physical networks for the network service.
    pub net: ursa_network::NetConfig,
    /// Where object bytes live: `dir` (None) or `s3://BUCKET[/PREFIX]`.
    pub blob_store: Option<String>,
    /// Where image data lives: `object` (in object storage) or `file`.
    pub image_store: String,
}

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PROJECT: &str = "admin";

/// The default state directory: `/var/lib/ursa` for root, else
/// `$XDG_DATA_HOME/ursa` (or `~/.local/share/ursa`).
pub fn default_state_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/ursa");
    }
    if let Ok(x) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(x).join("ursa");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".local/share/ursa")
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn admin_password(dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    let file = dir.join("admin-password");
    if let Some(p) = given {
        return Ok(p);
    }
    if let Ok(p) = std::fs::read_to_string(&file) {
        return Ok(p.trim().to_string());
    }
    let p = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
    write_private(&file, &format!("{p}\n"))?;
    Ok(p)
}

/// Takes `<dir>/lock` for as long as this `ursa up` runs (the lock goes
/// with the process, also on SIGKILL). A second `ursa up` on the same
/// state directory would share the first one's database, blockd pool and
/// guests, and each would undo what the other does; it stops here instead,
/// naming the process that holds the directory.
fn lock_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0)?;
            writeln!(f, "{}", std::process::id())?;
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another ursa up (pid {}) is using the state directory {}: stop it, or give this one another --state-dir",
                pid.trim(),
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The `OS_*` environment for the admin.
pub fn openrc(auth_url: &str, password: &str) -> String {
    format!(
        "export OS_AUTH_URL={auth_url}\nexport OS_IDENTITY_API_VERSION=3\nexport OS_USERNAME={ADMIN_USER}\n\
         export OS_PASSWORD='{password}'\nexport OS_PROJECT_NAME={ADMIN_PROJECT}\nexport OS_USER_DOMAIN_NAME=Default\n\
         export OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME=RegionOne\nexport OS_INTERFACE=public\n"
    )
}

fn clouds_yaml(auth_url: &str, password: &str) -> String {
    format!(
        "clouds:\n  ursa:\n    auth:\n      auth_url: {auth_url}\n      username: {ADMIN_USER}\n      password: '{password}'\n\
         \x20     project_name: {ADMIN_PROJECT}\n      user_domain_name: Default\n      project_domain_name: Default\n\
         \x20   region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n"
    )
}

/// Runs the cloud until SIGINT/SIGTERM.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    // Absolute from here on: paths under it go to qemu-img (a relative
    // backing file would be read relative to the overlay), QEMU and the
    // daemons, whatever their working directory.
    let dir = &std::fs::canonicalize(&opts.state_dir)
        .with_context(|| format!("resolving {}", opts.state_dir.display()))?;
    let _lock = lock_state_dir(dir)?;
    // The host's prerequisites, said once; what is missing is then shown
    // through the API (a router in ERROR, a port binding_failed), not
    // logged again.
    let host = crate::doctor::Report::probe();
    eprint!("{}", host.table());
    let privileged = host.has("privileges");
    let url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| Store::sqlite_url(dir));
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store at {url}"))?;
    ursa_network::prepare_store(&store)
        .await
        .context("preparing the network service's tables")?;
    ursa_compute::server_table::prepare_store(&store)
        .await
        .context("preparing the compute service's tables")?;
    ursa_volume::record_table::prepare_store(&store)
        .await
        .context("preparing the volume service's tables")?;
    ursa_image::image_table::prepare_store(&store)
        .await
        .context("preparing the image service's tables")?;
    let keys = opts.keys_dir.clone().unwrap_or_else(|| dir.join("keys"));
    let codec = TokenCodec::open(KeyRepo::new(keys))?;
    let identity = Identity::open(
        store.clone(),
        codec.clone(),
        Settings {
            token_ttl: opts.token_ttl,
            password_cost: opts.password_cost,
        },
    )
    .await?;

    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    let local = listener.local_addr()?;
    let base_url = opts.public_url.clone().unwrap_or_else(|| {
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            local.ip().to_string()
        };
        format!("http://{host}:{}", local.port())
    });
    let base_url = base_url.trim_end_matches('/').to_string();
    let auth_url = format!("{base_url}/v3");
    let password = admin_password(dir, opts.admin_password.clone())?;
    write_private(&dir.join("openrc"), &openrc(&auth_url, &password))?;
    write_private(&dir.join("clouds.yaml"), &clouds_yaml(&auth_url, &password))?;

    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let background = spawn_background(identity.clone(), &store, codec, changed_tx);
    let objects = ursa_object::Objects::open(
        store.clone(),
        ursa_object::blob::Blobs::from_spec(opts.blob_store.as_deref(), dir)
            .await
            .with_context(|| match &opts.blob_store {
                Some(b) => format!("opening the blob store {b}"),
                None => format!("opening the object store in {}", dir.display()),
            })?,
    )
    .await
    .context("opening the object service's tables")?;
    let expirer = objects.spawn_expirer();
    let image_store = match opts.image_store.as_str() {
        "file" => ursa_image::ImageStore::file(dir.join("images"))
            .with_context(|| format!("opening the image store in {}", dir.display()))?,
        _ => ursa_image::ImageStore::object(objects.clone(), dir.join("images"))
            .await
            .context("opening the image store in object storage")?,
    };
    let images = ursa_image::Images::with_store(identity.clone(), image_store);
    // This controller's name in the leases of the background duties, and
    // the lease that says it is alive (work it leaves when it dies is
    // taken over by the holder of that work's duty).
    let holder = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let alive = ursa_core::duty::Duty::start(
        store.clone(),
        &ursa_core::duty::alive_lease(&holder),
        &holder,
    )
    .await;
    let (nodes, mut local_blockd) = storage_nodes(dir, &opts.blockd).await?;
    let volumes = if nodes.is_empty() {
        None
    } else {
        let v = ursa_volume::Volumes {
            identity: identity.clone(),
            nodes,
            images: images.clone(),
            controller: holder.clone(),
            objects: Some(objects.clone()),
        };
        v.bootstrap().await?;
        Some(v)
    };
    // The metadata API netd's proxy forwards guests' requests to, signed
    // with a secret shared with the local netd.
    let md_listener = tokio::net::TcpListener::bind(opts.metadata_bind)
        .await
        .with_context(|| format!("binding the metadata API to {}", opts.metadata_bind))?;
    let md_url = format!("http://{}", md_listener.local_addr()?);
    let md_secret_file = dir.join("metadata-secret");
    if !md_secret_file.exists() {
        let s = Alphanumeric.sample_string(&mut rand::thread_rng(), 40);
        write_private(&md_secret_file, &s)?;
    }
    let md_secret = std::fs::read_to_string(&md_secret_file)?.trim().to_string();
    let (net_nodes, mut local_netd) = if opts.no_netd {
        (Vec::new(), None)
    } else if opts.netd.is_empty() && !privileged {
        eprintln!(
            "Not root: no local network node (networks are stored, nothing is plugged) and no compute; identity, images and volumes are served."
        );
        (Vec::new(), None)
    } else {
        network_nodes(
            dir,
            &opts.netd,
            opts.external_interface.as_deref(),
            (&md_url, &md_secret_file),
        )
        .await?
    };
    let pusher = ursa_network::push::Pusher::new(net_nodes);
    let networks = ursa_network::Networks::new(identity.clone(), opts.net.clone(), pusher.clone());
    // Another controller's change: push it too (when this one pushes).
    let kick_task = {
        let p = pusher.clone();
        tokio::spawn(async move {
            while changed_rx.recv().await.is_some() {
                p.kick();
            }
        })
    };
    let push_duty = ursa_core::duty::Duty::start(store.clone(), "netd-push", &holder).await;
    let power_duty = ursa_core::duty::Duty::start(store.clone(), "power-sync", &holder).await;
    let push_task = pusher.spawn(identity.clone(), push_duty.clone());
    let volume_duty = ursa_core::duty::Duty::start(store.clone(), "volume-tasks", &holder).await;
    let volume_task = volumes
        .as_ref()
        .map(|v| v.spawn_recovery(volume_duty.clone()));
    let compute_nodes = compute_nodes(dir, &opts, &pusher.node_names()).await?;
    let compute = if compute_nodes.is_empty() {
        None
    } else {
        let c = ursa_compute::Compute {
            identity: identity.clone(),
            networks: networks.clone(),
            images: images.clone(),
            volumes: volumes.clone(),
            nodes: std::sync::Arc::new(compute_nodes),
            image_base: base_url.clone(),
        };
        c.bootstrap().await?;
        Some(c)
    };
    let mut services: Vec<(&str, &str, &str)> = vec![
        ("image", "glance", "/image"),
        ("network", "neutron", "/network"),
        ("object-store", "swift", "/v1/AUTH_$(project_id)s"),
    ];
    if compute.is_some() {
        services.push(("compute", "nova", "/compute/v2.1"));
    }
    if volumes.is_some() {
        services.push(("volumev3", "cinderv3", "/volume/v3"));
        services.push(("block-storage", "cinder", "/volume/v3"));
    }
    Bootstrap {
        admin_user: ADMIN_USER,
        admin_project: ADMIN_PROJECT,
        admin_password: &password,
        identity_url: &auth_url,
        base_url: &base_url,
        services: &services,
    }
    .run(&identity)
    .await?;
    let admin_project = identity
        .model()
        .project_by_name("default", ADMIN_PROJECT)
        .map(|p| p.id.clone());
    if let Some(p) = &admin_project {
        ursa_network::api::bootstrap(&networks, p)
            .await
            .context("creating the public and private networks")?;
    }
    let md_task = compute.clone().map(|c| {
        let app = ursa_compute::metadata::router(ursa_compute::metadata::Metadata {
            compute: c,
            secret: std::sync::Arc::new(md_secret.clone().into_bytes()),
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(md_listener, app).await {
                tracing::error!(error = %e, "the metadata API stopped");
            }
        })
    });
    let power_task = match &compute {
        Some(c) => {
            c.adopt().await.context("adopting running guests")?;
            Some(c.spawn_power_sync(power_duty.clone()))
        }
        None => None,
    };
    let want_tiny = compute.is_some() && !opts.no_tiny_image && host.has("tiny image tools");
    let tiny = match &opts.tiny_image {
        Some(p) => Some(p.clone()),
        None if want_tiny && !has_public_image(&images, "tiny").await? => build_tiny(dir).await,
        None => None,
    };
    if let (Some(path), Some(p)) = (&tiny, &admin_project) {
        register_tiny(&images, p, path)
            .await
            .with_context(|| format!("registering {} as image tiny", path.display()))?;
    }
    ursa_dashboard::Dashboard::migrate(&store)
        .await
        .context("the dashboard's tables")?;
    let app = app::router(Services {
        store: store.clone(),
        images,
        objects,
        volumes,
        networks,
        compute: compute.clone(),
        identity,
        base_url: base_url.clone(),
    })
    .context("the dashboard's templates")?;

    tracing::info!(%local, %auth_url, state_dir = %dir.display(), "ursa is serving");
    eprintln!("Ursa is up: identity at {auth_url}");
    eprintln!(
        "State directory: {} (clouds.yaml and openrc are there)",
        dir.display()
    );
    eprintln!("Admin: user {ADMIN_USER}, project {ADMIN_PROJECT}, password {password}");
    let mut out = std::io::stdout().lock();
    out.write_all(openrc(&auth_url, &password).as_bytes())?;
    out.flush()?;
    drop(out);

    ursa_core::http::serve(listener, app, shutdown_signal()).await?;
    background.abort();
    expirer.abort();
    push_task.abort();
    kick_task.abort();
    if let Some(t) = volume_task {
        t.abort();
    }
    push_duty.release().await;
    power_duty.release().await;
    volume_duty.release().await;
    alive.release().await;
    if let Some(t) = md_task {
        t.abort();
    }
    if let Some(t) = power_task {
        t.abort();
    }
    if let Some(c) = local_blockd.as_mut() {
        stop_child(c).await;
    }
    if let Some(c) = local_netd.as_mut() {
        stop_child(c).await;
    }
    store.close().await;
    eprintln!("Ursa stopped cleanly.");
    Ok(())
}

/// The storage nodes: those given as NAME=ENDPOINT, or one `ursa-blockd`
/// run here (state, pool and sockets under `<state>/blockd`), returned so
/// that it stops with us. No blockd binary: no volume service, said once.
async fn storage_nodes(
    dir: &std::path::Path,
    given: &[String],
) -> anyhow::Result<(Vec<ursa_volume::Node>, Option<tokio::process::Child>)> {
    let mut nodes = Vec::new();
    for g in given {
        let (name, ep) = g
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--blockd wants NAME=ENDPOINT, got {g:?}"))?;
        let client = ursa_volume::connect(ep)
            .await
            .map_err(|e| anyhow::anyhow!("blockd {name} at {ep}: {e}"))?;
        nodes.push(ursa_volume::Node {
            name: name.to_string(),
            client,
        });
    }
    if !nodes.is_empty() {
        return Ok((nodes, None));
    }
    let Some(bin) = crate::doctor::daemon_bin("ursa-blockd") else {
        eprintln!("No ursa-blockd next to ursa or on PATH: the volume service is off.");
        return Ok((nodes, None));
    };
    let bdir = dir.join("blockd");
    std::fs::create_dir_all(&bdir)?;
    let sock = bdir.join("grpc.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--state-dir")
        .arg(bdir.join("state"))
        .arg("--pool")
        .arg(format!("default={}", bdir.join("pool").display()))
        .arg("--nbd-unix")
        .arg(bdir.join("nbd.sock"))
        .arg("--vhost-user-dir")
        .arg(bdir.join("vhost"));
    let log = bdir.join("blockd.log");
    let mut child = spawn_daemon(cmd, &log)?;
    let t0 = std::time::Instant::now();
    let client = loop {
        if died_at_start(&mut child, "ursa-blockd", &log, "the volume service is off") {
            return Ok((Vec::new(), None));
        }
        if sock.exists() {
            if let Ok(c) = ursa_volume::connect(&format!("unix:{}", sock.display())).await {
                break c;
            }
        }
        if t0.elapsed() > Duration::from_secs(20) {
            anyhow::bail!(
                "{} did not come up; see {}",
                bin.display(),
                bdir.join("blockd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    nodes.push(ursa_volume::Node {
        name: "local".into(),
        client,
    });
    Ok((nodes, Some(child)))
}

/// Whether a daemon `ursa up` started has exited; if so, says so once with
/// its error line and what is off without it.
fn died_at_start(child: &mut tokio::process::Child, name: &str, log: &Path, off: &str) -> bool {
    let Ok(Some(status)) = child.try_wait() else {
        return false;
    };
    eprintln!(
        "{name} exited at start ({status}): {}; {off} (log: {}).",
        last_line(log),
        log.display()
    );
    true
}

/// The last line of a daemon's log with text in it (its error, when it
/// died at start), without the tracing prefix's colour codes.
fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // anyhow's "Error: …" when the daemon failed (a backtrace may follow).
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("Error: "))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(nothing logged)");
    let mut out = String::with_capacity(line.len());
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out.trim().to_string()
}

/// Starts a node daemon that logs to `log` and dies with us.
fn spawn_daemon(
    mut cmd: tokio::process::Command,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // SAFETY: prctl is async-signal-safe; it makes the kernel send the
    // daemon SIGTERM when `ursa up` dies, even by SIGKILL, so it never
    // outlives us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(logf)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.as_std().get_program()))
}

/// Whether a public image of that name exists.
async fn has_public_image(images: &ursa_image::Images, name: &str) -> anyhow::Result<bool> {
    Ok(images
        .public()
        .await?
        .iter()
        .any(|i| i.get("name").and_then(|n| n.as_str()) == Some(name)))
}

/// Builds the tiny test guest (`images/tiny/build.sh`, carried in the
/// binary) into `<state>/tiny`; None, said in one line, when it fails.
async fn build_tiny(dir: &Path) -> Option<PathBuf> {
    const BUILD: &str = include_str!("../../../images/tiny/build.sh");
    const INIT: &str = include_str!("../../../images/tiny/init");
    let out = dir.join("tiny");
    let src = out.join("src");
    let prepared = std::fs::create_dir_all(&src)
        .and_then(|()| std::fs::write(src.join("build.sh"), BUILD))
        .and_then(|()| std::fs::write(src.join("init"), INIT));
    if let Err(e) = prepared {
        eprintln!("Not building the image tiny: {}: {e}", src.display());
        return None;
    }
    eprintln!("Building the image tiny into {} ...", out.display());
    let run = tokio::process::Command::new("bash")
        .arg(src.join("build.sh"))
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .output();
    match tokio::time::timeout(Duration::from_secs(300), run).await {
        Ok(Ok(o)) if o.status.success() && out.join("tiny.raw").is_file() => {
            Some(out.join("tiny.raw"))
        }
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "Could not build the image tiny: {}",
                err.lines().last().unwrap_or("no tiny.raw")
            );
            None
        }
        Ok(Err(e)) => {
            eprintln!("Could not build the image tiny: bash: {e}");
            None
        }
        Err(_) => {
            eprintln!("Could not build the image tiny: it took over 300 s");
            None
        }
    }
}

/// Registers a raw disk as the public image `tiny` (once: a public image
/// of that name already there is kept).
async fn register_tiny(
    images: &ursa_image::Images,
    owner: &str,
    path: &Path,
) -> anyhow::Result<()> {
    if has_public_image(images, "tiny").await? {
        return Ok(());
    }
    anyhow::ensure!(path.is_file(), "no such file");
    let id = uuid::Uuid::new_v4().to_string();
    let now = ursa_image::now();
    let img = serde_json::json!({"id": id, "name": "tiny", "status": "saving", "visibility": "public",
        "protected": false, "os_hidden": false, "checksum": null, "os_hash_algo": null,
        "os_hash_value": null, "owner": owner, "size": null, "virtual_size": null, "min_ram": 0,
        "min_disk": 0, "disk_format": "raw", "container_format": "bare", "created_at": now,
        "updated_at": now, "tags": []});
    images
        .put(img.as_object().cloned().unwrap_or_default())
        .await?;
    images.import_file(&id, path).await?;
    eprintln!(
        "Registered {} as the public image tiny ({id}).",
        path.display()
    );
    Ok(())
}

/// The compute nodes: the agents `--compute` names, or one agent in this
/// process when guests can run here (QEMU installed and a network node to
/// make their taps).
async fn compute_nodes(
    dir: &Path,
    opts: &UpOptions,
    net_nodes: &[String],
) -> anyhow::Result<Vec<ursa_compute::Node>> {
    use ursa_compute::node::NodeAgent;
    let mut nodes = Vec::new();
    for g in &opts.compute {
        let (name, ep) = g
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--compute wants NAME=ENDPOINT, got {g:?}"))?;
        if !net_nodes.iter().any(|n| n == name) {
            eprintln!(
                "Compute node {name} has no netd of the same name: its guests get no network."
            );
        }
        let (agent, ram_mb, vcpus) = NodeAgent::remote(name, ep)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        nodes.push(ursa_compute::Node {
            agent,
            ram_mb,
            vcpus,
        });
    }
    if !nodes.is_empty() || opts.no_compute {
        return Ok(nodes);
    }
    let qemu = crate::doctor::daemon_bin("qemu-system-x86_64").is_some();
    let Some(node) = net_nodes.first() else {
        eprintln!("No compute node: no network node (ursa-netd) runs.");
        return Ok(nodes);
    };
    if !qemu {
        eprintln!("No compute node: qemu-system-x86_64 is not installed.");
        return Ok(nodes);
    }
    let (ram_mb, vcpus) = ursa_compute::host_capacity();
    nodes.push(ursa_compute::Node {
        agent: NodeAgent::Local(ursa_compute::agent::Agent::new(node, &dir.join("compute"))),
        ram_mb,
        vcpus,
    });
    Ok(nodes)
}

async fn network_nodes(
    dir: &Path,
    given: &[String],
    external_interface: Option<&str>,
    (md_url, md_secret): (&str, &Path),
) -> anyhow::Result<(
    Vec<ursa_network::push::NetNode>,
    Option<tokio::process::Child>,
)> {
    use ursa_network::push::{connect, NetNode};
    let mut nodes = Vec::new();
    for g in given {
        let (name, ep) = g
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--netd wants NAME=ENDPOINT, got {g:?}"))?;
        let client = connect(ep)
            .await
            .map_err(|e| anyhow::anyhow!("netd {name} at {ep}: {e}"))?;
        nodes.push(NetNode {
            name: name.to_string(),
            client,
        });
    }
    if !nodes.is_empty() {
        return Ok((nodes, None));
    }
    let Some(bin) = crate::doctor::daemon_bin("ursa-netd") else {
        eprintln!("No ursa-netd next to ursa or on PATH: networks are not plugged anywhere.");
        return Ok((nodes, None));
    };
    let ndir = dir.join("netd");
    std::fs::create_dir_all(&ndir)?;
    let sock = ndir.join("grpc.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--state-dir")
        .arg(ndir.join("state"))
        .arg("--vtep-address")
        .arg("127.0.0.1")
        .arg("--physical-interface")
        .arg(format!(
            "public:{}",
            external_interface.unwrap_or("ursa-public")
        ))
        .arg("--metadata-upstream")
        .arg(md_url)
        .arg("--metadata-secret-file")
        .arg(md_secret);
    let log = ndir.join("netd.log");
    let mut child = spawn_daemon(cmd, &log)?;
    let client = connect(&format!("unix:{}", sock.display()))
        .await
        .map_err(|e| anyhow::anyhow!("netd: {e}"))?;
    let t0 = std::time::Instant::now();
    loop {
        if died_at_start(
            &mut child,
            "ursa-netd",
            &log,
            "networks are not plugged anywhere",
        ) {
            return Ok((Vec::new(), None));
        }
        if sock.exists()
            && client
                .clone()
                .get_capabilities(ursa_proto::netd::v1::CapabilitiesRequest {})
                .await
                .is_ok()
        {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            anyhow::bail!(
                "{} did not come up; see {}",
                bin.display(),
                ndir.join("netd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.push(NetNode {
        name: "local".into(),
        client,
    });
    Ok((nodes, Some(child)))
}

/// SIGTERM, then a moment to finish, then SIGKILL.
async fn stop_child(c: &mut tokio::process::Child) {
    if let Some(pid) = c.id() {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(5), c.wait())
        .await
        .is_err()
    {
        let _ = c.kill().await;
    }
}

/// Key reloads, revocation and expired-session pruning and, with a shared database, picking up
/// other controllers' changes: at once when PostgreSQL announces a commit
/// (LISTEN/NOTIFY), and at least every 2 s whatever happens to the
/// announcements.
fn spawn_background(
    identity: Identity,
    store: &Store,
    codec: TokenCodec,
    changed: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let listening = store.listen(wake.clone());
    let store = store.clone();
    tokio::spawn(async move {
        // Ends with this task, which is aborted at shutdown.
        struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                if let Some(t) = &self.0 {
                    t.abort();
                }
            }
        }
        let _listening = AbortOnDrop(listening);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut n: u64 = 0;
        loop {
            let ticked = tokio::select! {
                _ = tick.tick() => true,
                _ = wake.notified() => false,
            };
            match identity.sync_from_store().await {
                Ok(true) => {
                    let _ = changed.try_send(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not check the store for changes"),
            }
            if !ticked {
                continue;
            }
            n += 1;
            codec.refresh();
            if n.is_multiple_of(1800) {
                if let Err(e) = identity.prune_changes().await {
                    tracing::warn!(error = %e, "change feed pruning failed");
                }
                match identity.prune_revocations().await {
                    Ok(k) if k > 0 => tracing::info!(pruned = k, "expired revocations removed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "revocation pruning failed"),
                }
                // Sessions whose token expired (any controller may: the
                // delete is one indexed range).
                if let Err(e) = ursa_dashboard::session::prune(&store).await {
                    tracing::warn!(error = %e, "dashboard session pruning failed");
                }
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
