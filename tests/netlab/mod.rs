//! The namespace lab the netd end-to-end tests share: "hypervisor"
//! namespaces joined by an underlay bridge, each running its own
//! `ursa-netd` (entered with nsenter, so that the namespaces netd mounts
//! under /run/netns are visible to the test), "VM" namespaces plugged
//! through netd ports. Everything is named with a test-unique prefix and
//! deleted on drop, also when a test fails.
#![allow(dead_code)]
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};
use ursa_proto::netd::v1 as pb;
use ursa_proto::netd::v1::netd_client::NetdClient;

pub const NET_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const NET_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// The netd binary: Cargo's for netd's own tests, else the one built
/// beside the test executable (target/<profile>/ursa-netd).
pub fn netd_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_ursa-netd")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable");
            exe.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("ursa-netd"))
                .expect("target directory")
        })
}

pub fn can_run() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "ping"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if !root || !tools {
        eprintln!("SKIP netd e2e: needs root, `ip` and `ping` (iputils-ping)");
    }
    root && tools
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs")
}

pub fn ok(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub struct Lab {
    pub p: String,
    pub dir: tempfile::TempDir,
    pub netds: Vec<Option<Child>>,
    pub rt: tokio::runtime::Runtime,
    /// Other namespaces the test made netd create (routers), removed on drop.
    pub extra_ns: std::cell::RefCell<Vec<String>>,
}

impl Lab {
    pub fn new(name: &str, hypervisors: usize) -> Lab {
        let p = format!("u{name}{}", std::process::id() % 10000);
        let lab = Lab {
            p: p.clone(),
            dir: tempfile::tempdir().unwrap(),
            netds: (0..hypervisors).map(|_| None).collect(),
            rt: tokio::runtime::Runtime::new().unwrap(),
            extra_ns: Default::default(),
        };
        let ul = format!("{p}ul");
        ok(&["ip", "netns", "add", &ul]);
        ok(&["ip", "-n", &ul, "link", "add", "ul", "type", "bridge"]);
        ok(&["ip", "-n", &ul, "link", "set", "ul", "up"]);
        for i in 1..=hypervisors {
            let hv = lab.hv(i);
            ok(&["ip", "netns", "add", &hv]);
            let outer = format!("{p}u{i}");
            ok(&[
                "ip", "-n", &ul, "link", "add", &outer, "type", "veth", "peer", "name", "ul0",
                "netns", &hv,
            ]);
            ok(&["ip", "-n", &ul, "link", "set", &outer, "master", "ul", "up"]);
            ok(&[
                "ip",
                "-n",
                &hv,
                "addr",
                "add",
                &format!("{}/24", lab.vtep(i)),
                "dev",
                "ul0",
            ]);
            ok(&["ip", "-n", &hv, "link", "set", "ul0", "up"]);
            ok(&["ip", "-n", &hv, "link", "set", "lo", "up"]);
        }
        lab
    }

    pub fn hv(&self, i: usize) -> String {
        format!("{}h{i}", self.p)
    }

    pub fn vtep(&self, i: usize) -> String {
        format!("198.18.0.{i}")
    }

    pub fn sock(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("h{i}.sock"))
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("h{i}.log"))
    }

    pub fn start_netd(&mut self, i: usize) {
        self.start_netd_with(i, &[]);
    }

    pub fn start_netd_with(&mut self, i: usize, extra: &[&str]) {
        let _ = std::fs::remove_file(self.sock(i));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.hv(i)))
            .arg(netd_bin())
            .arg("--listen")
            .arg(format!("unix:{}", self.sock(i).display()))
            .args(["--vtep-address", &self.vtep(i)])
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("h{i}")))
            .args(extra)
            .env("URSA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.netds[i - 1] = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if std::os::unix::net::UnixStream::connect(self.sock(i)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "netd on {} did not start: {}",
            self.hv(i),
            std::fs::read_to_string(self.log(i)).unwrap_or_default()
        );
    }

    pub fn stop_netd(&mut self, i: usize, sig: i32) {
        if let Some(mut c) = self.netds[i - 1].take() {
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }

    pub fn client(&self, i: usize) -> NetdClient<Channel> {
        let path = self.sock(i);
        self.rt.block_on(async move {
            let ch = Endpoint::try_from("http://netd.invalid")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .expect("connect to netd");
            NetdClient::new(ch)
        })
    }

    pub fn vm(&self, name: &str) -> String {
        let ns = format!("{}{name}", self.p);
        ok(&["ip", "netns", "add", &ns]);
        ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    pub fn ping(&self, vm: &str, ip: &str) -> bool {
        sh(&[
            "ip", "netns", "exec", vm, "ping", "-c", "2", "-i", "0.2", "-W", "2", ip,
        ])
        .status
        .success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.netds.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.extra_ns.borrow().iter() {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let list = sh(&["ip", "netns", "list"]);
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&self.p) {
                let _ = sh(&["ip", "netns", "del", name]);
            }
        }
    }
}

pub fn vxlan(id: &str, vni: u32) -> pb::Network {
    pb::Network {
        id: id.into(),
        segment: Some(pb::network::Segment::Vxlan(pb::Vxlan { vni })),
        mtu: 0,
        ..Default::default()
    }
}

pub fn veth_port(id: &str, net: &str, mac: &str, ip: &str, netns: &str) -> pb::Port {
    pb::Port {
        id: id.into(),
        network_id: net.into(),
        mac: mac.into(),
        fixed_ips: vec![format!("{ip}/24")],
        kind: Some(pb::port::Kind::Veth(pb::Veth {
            netns: netns.into(),
            ifname: "eth0".into(),
            up: true,
        })),
        admin_down: false,
        ..Default::default()
    }
}

pub fn remotes(net: &str, vtep: &str, mac: &str, ip: &str) -> pb::NetworkRemotes {
    pb::NetworkRemotes {
        network_id: net.into(),
        vteps: vec![vtep.into()],
        ports: vec![pb::RemotePort {
            mac: mac.into(),
            ips: vec![ip.into()],
            vtep: vtep.into(),
            ..Default::default()
        }],
    }
}

/// Plugs a VM: the port through netd, the address by the "guest".
pub fn plug(lab: &Lab, c: &mut NetdClient<Channel>, port: pb::Port, ip: &str, vm: &str) {
    lab.rt.block_on(c.ensure_port(port)).expect("ensure port");
    ok(&[
        "ip",
        "-n",
        vm,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        "eth0",
    ]);
}
