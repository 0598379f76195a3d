//! The compute agent: runs guests with QEMU on this node.
//!
//! Each server has a directory `<dir>/<server id>/` holding its root disk
//! (a qcow2 overlay whose backing file is the image), the serial console
//! log, the QMP socket, QEMU's pid file and the command line it was started
//! with. QEMU daemonizes, so guests outlive the agent: an agent that
//! restarts finds them again by their pid files (re-adoption) and never
//! starts a second QEMU on the same disk. Networking is the tap device
//! netd made for the server's port (by name); the agent only opens it.
//!
//! Acceleration: `URSA_ACCEL=kvm` or `tcg` forces one; by default
//! ("auto") a guest starts under KVM when /dev/kvm opens, and the agent
//! watches its first seconds: a guest KVM cannot run (on this machine
//! /dev/kvm opens but guests stop in a KVM internal error) is restarted
//! under TCG, and the node remembers (`<dir>/kvm-broken`) so later guests
//! start under TCG at once.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A guest to start.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub id: String,
    /// Fetched into this node's image cache unless it is there.
    pub image: crate::image_cache::ImageRef,
    /// "raw" or "qcow2"
    pub image_format: String,
    pub ram_mb: u64,
    pub vcpus: u64,
    pub disk_gb: u64,
    /// (tap device, MAC)
    pub nics: Vec<(String, String)>,
    /// A root disk that is a full copy of the image rather than an overlay
    /// on it (the image may go away: unshelve).
    pub standalone: bool,
    /// Config drive files (relative path, contents); empty: none.
    pub config_drive: Vec<(String, Vec<u8>)>,
    /// The root disk is a volume served over vhost-user-blk at this socket
    /// (boot from volume); empty: a local disk made from `image`.
    pub root_socket: String,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub node: String,
    pub dir: PathBuf,
    pub accel: String,
    pub qemu: String,
    /// Fetches images and uploads snapshots.
    http: reqwest::Client,
    /// Held while an image is fetched into the cache.
    fetching: std::sync::Arc<tokio::sync::Mutex<()>>,
}

type R<T> = std::result::Result<T, String>;

impl Agent {
    pub fn new(node: &str, dir: &Path) -> Agent {
        let accel = std::env::var("URSA_ACCEL").unwrap_or_else(|_| "auto".into());
        Agent {
            node: node.to_string(),
            dir: dir.to_path_buf(),
            accel,
            qemu: "qemu-system-x86_64".into(),
            http: reqwest::Client::new(),
            fetching: Default::default(),
        }
    }

    /// What the next guest starts under: "kvm" or "tcg".
    pub fn effective_accel(&self) -> String {
        match self.accel.as_str() {
            "auto" => {
                let kvm_ok = !self.dir.join("kvm-broken").exists()
                    && std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/kvm")
                        .is_ok();
                if kvm_ok { "kvm" } else { "tcg" }.to_string()
            }
            other => other.to_string(),
        }
    }

    fn guest_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn console_path(&self, id: &str) -> PathBuf {
        self.guest_dir(id).join("console.log")
    }

    /// The last `lines` lines of the serial console (all when None).
    pub fn console(&self, id: &str, lines: Option<usize>) -> String {
        let text = std::fs::read(self.console_path(id)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text).replace('\r', "");
        match lines {
            Some(n) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(n)..].join("\n")
            }
            None => text,
        }
    }

    /// QEMU's pid, if it runs.
    pub fn pid(&self, id: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.guest_dir(id).join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd).contains(id).then_some(pid)
    }

    pub fn running(&self, id: &str) -> bool {
        self.pid(id).is_some()
    }

    /// Creates the root disk and starts the guest.
    pub async fn boot(&self, g: &GuestSpec) -> R<()> {
        let d = self.guest_dir(&g.id);
        std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        let disk = d.join("disk.qcow2");
        if g.root_socket.is_empty() && !disk.exists() {
            let image =
                crate::image_cache::ensure(&self.dir, &self.http, &g.image, &self.fetching).await?;
            let mut steps: Vec<Vec<std::ffi::OsString>> = Vec::new();
            let size = format!("{}G", g.disk_gb.max(1));
            if g.standalone {
                steps.push(
                    ["convert", "-q", "-f", &g.image_format, "-O", "qcow2"]
                        .iter()
                        .map(Into::into)
                        .chain([image.clone().into(), disk.clone().into()])
                        .collect(),
                );
                steps.push(vec![
                    "resize".into(),
                    "-q".into(),
                    disk.clone().into(),
                    size.clone().into(),
                ]);
            } else {
                steps.push(
                    ["create", "-q", "-f", "qcow2", "-F", &g.image_format, "-b"]
                        .iter()
                        .map(Into::into)
                        .chain([image.clone().into(), disk.clone().into(), size.into()])
                        .collect(),
                );
            }
            for args in steps {
                let out = tokio::process::Command::new("qemu-img")
                    .args(&args)
                    .output()
                    .await
                    .map_err(|e| format!("qemu-img (qemu-utils) is needed: {e}"))?;
                // A disk already larger than the flavor's stays as it is.
                let shrink = String::from_utf8_lossy(&out.stderr).contains("shrink");
                if !out.status.success() && !shrink {
                    let _ = std::fs::remove_file(&disk);
                    return Err(format!(
                        "creating the root disk: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        let mut args: Vec<String> = vec![
            "-name".into(),
            format!("guest={},debug-threads=on", g.id),
            "-accel".into(),
            self.effective_accel(),
            "-m".into(),
            g.ram_mb.to_string(),
            "-smp".into(),
            g.vcpus.max(1).to_string(),
            "-display".into(),
            "none".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-serial".into(),
            format!("file:{}", d.join("console.log").display()),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", d.join("qmp.sock").display()),
            // Guest RAM a vhost-user backend (blockd) can map: volumes.
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={}M,share=on", g.ram_mb),
            "-numa".into(),
            "node,memdev=mem".into(),
            "-pidfile".into(),
            d.join("qemu.pid").display().to_string(),
            "-daemonize".into(),
        ];
        // The root disk boots first: the firmware (SeaBIOS) boots only the
        // first hard disk it finds, which could be a blank volume. Volumes'
        // chardevs reconnect (every second) to a blockd that restarted: the
        // guest's requests that were in flight are taken up again, as QEMU
        // resets the queue to what was completed.
        if g.root_socket.is_empty() {
            args.extend([
                "-drive".into(),
                format!("file={},format=qcow2,if=none,id=root", disk.display()),
                "-device".into(),
                "virtio-blk-pci,drive=root,bootindex=0".into(),
            ]);
        } else {
            args.extend([
                "-chardev".into(),
                format!("socket,id=croot,path={},reconnect=1", g.root_socket),
                "-device".into(),
                "vhost-user-blk-pci,id=vroot,chardev=croot,bootindex=0".into(),
            ]);
        }
        for (tap, mac) in &g.nics {
            args.extend(nic_args(tap, mac));
        }
        if !g.config_drive.is_empty() {
            let img = d.join("config-drive.img");
            make_config_drive(&img, &g.config_drive)?;
            args.push("-drive".into());
            args.push(format!(
                "file={},format=raw,if=virtio,readonly=on",
                img.display()
            ));
        }
        std::fs::write(d.join("cmdline.json"), json!(args).to_string())
            .map_err(|e| format!("saving the command line: {e}"))?;
        self.launch(&g.id).await
    }

    /// Starts QEMU with the saved command line (boot, or start after stop).
    pub async fn launch(&self, id: &str) -> R<()> {
        if self.running(id) {
            return Ok(());
        }
        let d = self.guest_dir(id);
        let args: Vec<String> = std::fs::read_to_string(d.join("cmdline.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or("the guest has no saved command line")?;
        let _ = std::fs::remove_file(d.join("qmp.sock"));
        let out = tokio::process::Command::new(&self.qemu)
            .args(&args)
            .output()
            .await
            .map_err(|e| format!("{} (qemu-system-x86) is needed: {e}", self.qemu))?;
        if !out.status.success() {
            return Err(format!(
                "QEMU did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // QEMU is up once its monitor answers and the VM runs.
        let st = self.qmp(id, "query-status", json!({})).await?;
        let kvm = args.windows(2).any(|w| w[0] == "-accel" && w[1] == "kvm");
        if kvm && self.accel == "auto" && !self.kvm_runs(id, &st).await {
            // KVM opened but cannot run this guest: TCG from now on.
            tracing::warn!(
                server = id,
                "the guest stopped under KVM; falling back to TCG"
            );
            let _ = std::fs::write(
                self.dir.join("kvm-broken"),
                "a guest stopped in a KVM internal error; guests run under TCG\n",
            );
            self.power_off(id).await;
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    if a == "kvm" {
                        "tcg".to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            self.save_args(id, &args)?;
            return Box::pin(self.launch(id)).await;
        }
        if st["status"] != "running" {
            return Err(format!("QEMU started but the guest is {}", st["status"]));
        }
        Ok(())
    }

    /// Watches a guest's first seconds under KVM: false when it stops in
    /// an internal error (here that comes 4 to 6 s in, when the boot
    /// loader starts the kernel); true once it writes to its console, or
    /// after 20 s of running.
    async fn kvm_runs(&self, id: &str, first: &Value) -> bool {
        let mut st = first.clone();
        let console = self.console_path(id);
        for _ in 0..100 {
            match st["status"].as_str() {
                Some("internal-error") | Some("guest-panicked") | Some("shutdown") => return false,
                _ => {}
            }
            if std::fs::metadata(&console).is_ok_and(|m| m.len() > 0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match self.qmp(id, "query-status", json!({})).await {
                Ok(v) => st = v,
                Err(_) => return false,
            }
        }
        st["status"] == "running"
    }

    /// One QMP command on the guest's monitor.
    pub async fn qmp(&self, id: &str, cmd: &str, args: Value) -> R<Value> {
        let sock = self.guest_dir(id).join("qmp.sock");
        let mut stream = None;
        for _ in 0..100 {
            if let Ok(s) = tokio::net::UnixStream::connect(&sock).await {
                stream = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stream = stream.ok_or_else(|| format!("no QMP monitor at {}", sock.display()))?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        next_line(&mut lines).await?; // greeting
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await
            .map_err(|e| format!("QMP: {e}"))?;
        loop {
            let l = next_line(&mut lines).await?;
            if l.contains("\"return\"") {
                break;
            }
        }
        let req = json!({"execute": cmd, "arguments": args}).to_string() + "\n";
        w.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("QMP: {e}"))?;
        loop {
            let l = match next_line(&mut lines).await {
                Ok(l) => l,
                // `quit` closes the monitor before it answers.
                Err(_) if cmd == "quit" => return Ok(Value::Null),
                Err(e) => return Err(e),
            };
            let v: Value = serde_json::from_str(&l).unwrap_or(Value::Null);
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {cmd}: {}", e["desc"]));
            }
        }
    }

    /// Stops the guest's QEMU (quit, then SIGKILL) and waits for it to go.
    pub async fn power_off(&self, id: &str) {
        let Some(pid) = self.pid(id) else { return };
        let _ = tokio::time::timeout(Duration::from_secs(5), self.qmp(id, "quit", json!({}))).await;
        for _ in 0..50 {
            if self.pid(id).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // SAFETY: a plain signal to the guest's QEMU, found by its pid file.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for _ in 0..50 {
            if self.pid(id).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn saved_args(&self, id: &str) -> R<Vec<String>> {
        std::fs::read_to_string(self.guest_dir(id).join("cmdline.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| "the guest has no saved command line".to_string())
    }

    fn save_args(&self, id: &str, args: &[String]) -> R<()> {
        std::fs::write(
            self.guest_dir(id).join("cmdline.json"),
            json!(args).to_string(),
        )
        .map_err(|e| format!("saving the command line: {e}"))
    }

    /// Hot-plugs a volume served over vhost-user-blk at `socket`; it stays
    /// in the saved command line, so a stopped guest starts with it.
    pub async fn attach_disk(&self, id: &str, volume_id: &str, socket: &str) -> R<()> {
        let tag = tag(volume_id);
        if self.running(id) {
            self.plug_disk(id, &tag, socket).await?;
        }
        let mut args = self.saved_args(id)?;
        args.extend([
            "-chardev".to_string(),
            format!("socket,id=c{tag},path={socket},reconnect=1"),
            "-device".to_string(),
            format!("vhost-user-blk-pci,id=v{tag},chardev=c{tag}"),
        ]);
        self.save_args(id, &args)
    }

    /// Hot-plugs a vhost-user-blk disk through QMP.
    async fn plug_disk(&self, id: &str, tag: &str, socket: &str) -> R<()> {
        let chardev = json!({"id": format!("c{tag}"), "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": socket}}, "server": false, "reconnect": 1}}});
        if self.qmp(id, "chardev-add", chardev.clone()).await.is_err() {
            // The same volume's chardev from an earlier attachment may still
            // be on its way out: wait for it to go, then add again.
            self.release_chardev(id, &format!("c{tag}")).await?;
            self.qmp(id, "chardev-add", chardev).await?;
        }
        if let Err(e) = self
            .qmp(
                id,
                "device_add",
                json!({"driver": "vhost-user-blk-pci", "id": format!("v{tag}"),
                       "chardev": format!("c{tag}")}),
            )
            .await
        {
            let _ = self
                .qmp(id, "chardev-remove", json!({"id": format!("c{tag}")}))
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Unplugs a volume (the guest acknowledges the eject) and forgets it.
    pub async fn detach_disk(&self, id: &str, volume_id: &str) -> R<()> {
        let tag = tag(volume_id);
        if self.running(id) {
            self.unplug(id, &format!("v{tag}"), Duration::from_secs(120))
                .await
                .map_err(|_| "the guest did not release the volume".to_string())?;
            self.release_chardev(id, &format!("c{tag}")).await?;
        }
        self.forget_args(id, &format!("c{tag}"))
    }

    /// Removes a chardev once nothing holds it: QEMU lets go of an
    /// unplugged device's chardev only when the device is finalized, which
    /// can come a little after the device left the QOM tree.
    async fn release_chardev(&self, id: &str, chardev: &str) -> R<()> {
        let t0 = std::time::Instant::now();
        loop {
            match self
                .qmp(id, "chardev-remove", json!({ "id": chardev }))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.contains("not found") => return Ok(()),
                Err(e) if t0.elapsed() > Duration::from_secs(10) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Asks the guest to let a device go until it has (asking again is
    /// fine: a guest still booting may have missed the first request; a
    /// device already gone is unplugged).
    async fn unplug(&self, id: &str, device: &str, within: Duration) -> R<()> {
        let path = format!("/machine/peripheral/{device}");
        let t0 = std::time::Instant::now();
        let mut asked = std::time::Instant::now() - Duration::from_secs(60);
        while self
            .qmp(id, "qom-list", json!({ "path": path }))
            .await
            .is_ok()
        {
            if t0.elapsed() > within {
                tracing::warn!(server = id, device, "the guest did not release the device");
                return Err(format!("the guest did not release {device}"));
            }
            // A guest often misses the first request (it is still busy
            // with the hot-add, or booting) and answers the next at once.
            if asked.elapsed() > Duration::from_secs(3) {
                let r = self.qmp(id, "device_del", json!({ "id": device })).await;
                tracing::info!(server = id, device, waited = ?t0.elapsed(), answer = ?r.err(), "asking the guest to release a device");
                asked = std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(server = id, device, took = ?t0.elapsed(), "the guest released a device");
        Ok(())
    }

    /// Drops the `-chardev`/`-netdev`/`-device` pairs naming `needle` from
    /// the saved command line.
    fn forget_args(&self, id: &str, needle: &str) -> R<()> {
        let args = self.saved_args(id)?;
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let pair = matches!(args[i].as_str(), "-chardev" | "-netdev" | "-device");
            if pair && args.get(i + 1).is_some_and(|a| mentions(a, needle)) {
                i += 2;
                continue;
            }
            out.push(args[i].clone());
            i += 1;
        }
        self.save_args(id, &out)
    }

    pub async fn pause(&self, id: &str) -> R<()> {
        self.qmp(id, "stop", json!({})).await.map(|_| ())
    }

    pub async fn unpause(&self, id: &str) -> R<()> {
        self.qmp(id, "cont", json!({})).await.map(|_| ())
    }

    /// Writes the root disk, flattened onto its image, as qcow2 (readable
    /// while the guest runs: `-U` shares the disk) and uploads it to
    /// `upload_url`.
    pub async fn snapshot(&self, id: &str, upload_url: &str) -> R<()> {
        let disk = self.guest_dir(id).join("disk.qcow2");
        if !disk.exists() {
            return Err(format!("server {id} has no root disk here"));
        }
        let dest = self
            .guest_dir(id)
            .join(format!("snapshot-{}.qcow2", uuid::Uuid::new_v4().simple()));
        let out = tokio::process::Command::new("qemu-img")
            .args(["convert", "-U", "-q", "-O", "qcow2"])
            .arg(&disk)
            .arg(&dest)
            .output()
            .await
            .map_err(|e| format!("qemu-img (qemu-utils) is needed: {e}"));
        let r = match out {
            Ok(o) if o.status.success() => {
                crate::image_cache::upload(&self.http, &dest, upload_url).await
            }
            Ok(o) => Err(format!(
                "snapshotting the root disk: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&dest).await;
        r
    }

    /// Hot-plugs a NIC on `tap`; it stays in the saved command line.
    pub async fn attach_nic(&self, id: &str, tap: &str, mac: &str) -> R<()> {
        let t = nic_tag(tap);
        if self.running(id) {
            self.qmp(
                id,
                "netdev_add",
                json!({"type": "tap", "id": format!("n{t}"), "ifname": tap,
                       "script": "no", "downscript": "no"}),
            )
            .await?;
            if let Err(e) = self
                .qmp(
                    id,
                    "device_add",
                    json!({"driver": "virtio-net-pci", "id": format!("d{t}"),
                           "netdev": format!("n{t}"), "mac": mac}),
                )
                .await
            {
                let _ = self
                    .qmp(id, "netdev_del", json!({"id": format!("n{t}")}))
                    .await;
                return Err(e);
            }
        }
        let mut args = self.saved_args(id)?;
        args.extend(nic_args(tap, mac));
        self.save_args(id, &args)
    }

    /// Unplugs the NIC on `tap` (the guest acknowledges) and forgets it.
    pub async fn detach_nic(&self, id: &str, tap: &str) -> R<()> {
        let t = nic_tag(tap);
        if self.running(id) {
            self.unplug(id, &format!("d{t}"), Duration::from_secs(60))
                .await
                .map_err(|_| "the guest did not release the interface".to_string())?;
            let _ = self
                .qmp(id, "netdev_del", json!({"id": format!("n{t}")}))
                .await;
        }
        self.forget_args(id, &format!("n{t}"))
    }

    pub async fn reboot(&self, id: &str) -> R<()> {
        self.qmp(id, "system_reset", json!({})).await.map(|_| ())
    }

    /// Stops the guest and removes its disk and files.
    pub async fn destroy(&self, id: &str) {
        self.power_off(id).await;
        let _ = std::fs::remove_dir_all(self.guest_dir(id));
    }

    /// Waits for a tap device netd is making.
    pub async fn wait_tap(&self, tap: &str, within: Duration) -> R<()> {
        let t0 = std::time::Instant::now();
        while !link_exists(tap) {
            if t0.elapsed() > within {
                return Err(format!(
                    "the tap device {tap} did not appear (is ursa-netd running on node {}?)",
                    self.node
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> R<String> {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "QMP timed out".to_string())?
        .map_err(|e| format!("QMP: {e}"))?
        .ok_or_else(|| "QMP closed".to_string())
}

/// Whether a network device exists in this process's network namespace
/// (asked of the kernel: /sys/class/net shows the namespace sysfs was
/// mounted in, which may be another).
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated string the call only reads.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Writes a config drive: a 16 MiB VFAT disk labelled `config-2` holding
/// `files` (Nova's vfat config drive format).
fn make_config_drive(path: &Path, files: &[(String, Vec<u8>)]) -> R<()> {
    use std::io::Write;
    let err = |e: std::io::Error| format!("writing the config drive: {e}");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.set_len(16 << 20).map_err(err)?;
    fatfs::format_volume(
        &f,
        fatfs::FormatVolumeOptions::new().volume_label(*b"config-2   "),
    )
    .map_err(err)?;
    let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).map_err(err)?;
    for (rel, data) in files {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(format!("bad config drive path {rel:?}"));
        }
        let mut dir = fs.root_dir();
        for p in &parts[..parts.len() - 1] {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(_) => dir.create_dir(p).map_err(err)?,
            };
        }
        let mut file = dir.create_file(parts[parts.len() - 1]).map_err(err)?;
        file.truncate().map_err(err)?;
        file.write_all(data).map_err(err)?;
    }
    fs.unmount().map_err(err)?;
    f.sync_all().map_err(err)
}

/// Whether a `-chardev`/`-netdev`/`-device` value names QEMU id `id`
/// (as its own id, or as the chardev or netdev it uses).
fn mentions(arg: &str, id: &str) -> bool {
    arg.split(',').any(|kv| {
        let v = kv.split_once('=').map(|(_, v)| v).unwrap_or(kv);
        v == id
    })
}

/// QEMU ids for a NIC's netdev (`n…`) and device (`d…`): the tap's
/// port part.
fn nic_tag(tap: &str) -> String {
    tap.trim_start_matches("utp-").to_string()
}

/// The command line of a NIC on `tap`.
fn nic_args(tap: &str, mac: &str) -> [String; 4] {
    let t = nic_tag(tap);
    [
        "-netdev".into(),
        format!("tap,id=n{t},ifname={tap},script=no,downscript=no"),
        "-device".into(),
        format!("virtio-net-pci,id=d{t},netdev=n{t},mac={mac}"),
    ]
}

/// QEMU ids for a volume's chardev (`c…`) and device (`v…`).
fn tag(volume_id: &str) -> String {
    volume_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_volumes_and_nics_are_found_by_their_ids() {
        let mut args: Vec<String> = ["-m", "512"].iter().map(|s| s.to_string()).collect();
        args.extend(nic_args("utp-0123456789a", "fa:16:3e:00:00:01"));
        args.extend([
            "-chardev".to_string(),
            "socket,id=cabc,path=/run/v/abc.sock".to_string(),
            "-device".to_string(),
            "vhost-user-blk-pci,id=vabc,chardev=cabc".to_string(),
        ]);
        assert!(mentions("vhost-user-blk-pci,id=vabc,chardev=cabc", "cabc"));
        assert!(mentions(
            "virtio-net-pci,id=d0123456789a,netdev=n0123456789a,mac=x",
            "n0123456789a"
        ));
        assert!(!mentions(
            "virtio-net-pci,id=d0123456789a,netdev=n0123456789a",
            "n0123"
        ));
    }

    #[test]
    fn a_config_drive_is_vfat_labelled_config_2() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("cd.img");
        make_config_drive(
            &img,
            &[(
                "openstack/latest/meta_data.json".into(),
                b"{\"hostname\": \"h\"}".to_vec(),
            )],
        )
        .unwrap();
        let f = std::fs::File::open(&img).unwrap();
        let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim(), "config-2");
        let mut data = String::new();
        use std::io::Read;
        fs.root_dir()
            .open_file("openstack/latest/meta_data.json")
            .unwrap()
            .read_to_string(&mut data)
            .unwrap();
        assert!(data.contains("\"h\""));
        assert!(make_config_drive(&img, &[("../x".into(), vec![])]).is_err());
    }
}
