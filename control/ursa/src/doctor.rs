//! The host's prerequisites: what `ursa up` prints once at start and
//! `ursa doctor` prints (and exits non-zero on when the default cloud
//! lacks something).
//!
//! Each check says what it found, the Debian package or setting that
//! provides it, and what is off without it. Tools are looked up on the
//! PATH this process was given (so a PATH without `nft` shows nftables
//! missing, as the daemons `ursa up` starts will find it), daemons next to
//! the `ursa` binary or on PATH, kernel features through /sys and /proc.

use std::path::{Path, PathBuf};

/// One prerequisite.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    /// Whether it is there.
    pub ok: bool,
    /// Whether the default cloud (`ursa up` with no flags) needs it.
    pub required: bool,
    /// What was found (a path, a version, a value), or why not.
    pub found: String,
    /// The package or setting that provides it.
    pub fix: String,
    /// What is off, or reduced, without it.
    pub without: &'static str,
}

/// Every check, in the order of the table.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

/// The capabilities netd needs when it does not run as root: links and
/// nftables (NET_ADMIN), DHCP's packet sockets (NET_RAW), namespaces
/// (SYS_ADMIN).
const NET_ADMIN: u32 = 12;
const NET_RAW: u32 = 13;
const IPC_LOCK: u32 = 14;
const SYS_ADMIN: u32 = 21;

/// What one blockd ring registers (engine::CHUNK × BUFFERS: 8 MiB).
const RING_ARENA_KIB: u64 = 8 * 1024;

impl Report {
    /// Probes this host.
    pub fn probe() -> Report {
        let caps = effective_caps();
        let has_cap = |c: u32| caps & (1u64 << c) != 0;
        let root = nix_euid() == 0;
        let mut checks = Vec::new();

        let priv_ok = root || (has_cap(NET_ADMIN) && has_cap(NET_RAW) && has_cap(SYS_ADMIN));
        checks.push(Check {
            name: "privileges",
            ok: priv_ok,
            required: true,
            found: if root {
                "root".into()
            } else if priv_ok {
                format!(
                    "uid {} with CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN",
                    nix_euid()
                )
            } else {
                format!("uid {} without CAP_NET_ADMIN/NET_RAW/SYS_ADMIN", nix_euid())
            },
            fix: "run as root (or grant CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN)".into(),
            without: "no network node (networks are stored, nothing is plugged) and no compute",
        });
        for (bin, without) in [
            (
                "ursa-netd",
                "no network node: nothing is plugged, no compute",
            ),
            ("ursa-blockd", "no volume service"),
        ] {
            let p = daemon_bin(bin);
            checks.push(Check {
                name: bin,
                ok: p.is_some(),
                required: true,
                found: p.map_or("not next to ursa nor on PATH".into(), |p| {
                    p.display().to_string()
                }),
                fix: "cargo build --release --bins".into(),
                without,
            });
        }
        let nft = on_path("nft");
        checks.push(Check {
            name: "nftables",
            ok: nft.is_some(),
            required: true,
            found: nft.map_or("no nft on PATH".into(), |p| p.display().to_string()),
            fix: "apt-get install nftables".into(),
            without: "routers' SNAT and floating IPs, security groups (routers show ERROR, ports binding_failed)",
        });
        let qemu = on_path("qemu-system-x86_64");
        checks.push(Check {
            name: "QEMU",
            ok: qemu.is_some(),
            required: true,
            found: qemu.as_deref().map_or("no qemu-system-x86_64 on PATH".into(), version_of),
            fix: "apt-get install qemu-system-x86 (one version with qemu-utils: scripts/host-packages.sh)"
                .into(),
            without: "no compute node (no servers)",
        });
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        checks.push(Check {
            name: "accelerator",
            ok: true,
            required: false,
            found: if kvm {
                "KVM (/dev/kvm opens; TCG if guests fault under it)".into()
            } else {
                "TCG (no usable /dev/kvm: guests are emulated, slower)".into()
            },
            fix: "/dev/kvm (kvm_intel or kvm_amd), readable and writable".into(),
            without: "guests run under TCG",
        });
        let img = on_path("qemu-img");
        checks.push(Check {
            name: "qemu-img",
            ok: img.is_some(),
            required: true,
            found: img
                .as_deref()
                .map_or("no qemu-img on PATH".into(), version_of),
            fix: "apt-get install qemu-utils (the version of qemu-system-x86)".into(),
            without: "guest disks and images onto volumes (compute and volume-from-image fail)",
        });
        let (soft, _) = memlock();
        let unlimited = root || has_cap(IPC_LOCK) || soft == u64::MAX;
        let need = RING_ARENA_KIB * blockd_rings();
        checks.push(Check {
            name: "memlock limit",
            ok: unlimited || soft / 1024 >= need,
            required: false,
            found: if unlimited {
                "not limited (root or CAP_IPC_LOCK)".into()
            } else {
                format!("{} KiB (blockd registers {need} KiB)", soft / 1024)
            },
            fix: format!("ulimit -l {need} (LimitMEMLOCK= in a systemd unit)"),
            without: "blockd uses unregistered I/O buffers (a little slower)",
        });
        for (m, probe, without) in [
            (
                "bridge",
                "/sys/module/bridge",
                "every network (Linux bridges)",
            ),
            ("vxlan", "/sys/module/vxlan", "VXLAN tenant networks"),
            ("veth", "", "router and DHCP legs, namespace ports"),
            ("tun", "/dev/net/tun", "guest NICs (taps)"),
            (
                "br_netfilter",
                "/proc/sys/net/bridge",
                "security groups on bridged traffic",
            ),
            (
                "nf_conntrack",
                "/proc/sys/net/netfilter/nf_conntrack_max",
                "SNAT, floating IPs, stateful security groups",
            ),
        ] {
            let found = kernel_module(m, probe);
            checks.push(Check {
                name: m,
                ok: found.is_some(),
                required: true,
                found: found.unwrap_or_else(|| "not in this kernel".into()),
                fix: format!("kernel module {m} (modprobe {m})"),
                without,
            });
        }
        let tiny = tiny_image_tools();
        checks.push(Check {
            name: "tiny image tools",
            ok: tiny.is_ok(),
            required: false,
            found: match &tiny {
                Ok(()) => "kernel, busybox-static, cpio, syslinux, mtools, dosfstools".into(),
                Err(m) => format!("missing: {m}"),
            },
            fix: "apt-get install linux-image-amd64 busybox-static cpio syslinux syslinux-common mtools dosfstools".into(),
            without: "ursa up does not build the test image `tiny` (bring your own)",
        });
        Report { checks }
    }

    /// The check of that name, if any.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Whether the check of that name passed (unknown: false).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some_and(|c| c.ok)
    }

    /// Whether everything the default cloud needs is here.
    pub fn complete(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }

    /// The table: one line per check.
    pub fn table(&self) -> String {
        let w = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let fw = self
            .checks
            .iter()
            .map(|c| c.found.len())
            .max()
            .unwrap_or(0)
            .min(60);
        let mut out = format!(
            "{:w$}  {:7}  {:fw$}  provided by / off without it\n",
            "host check", "status", "found"
        );
        for c in &self.checks {
            let status = match (c.ok, c.required) {
                (true, _) => "ok",
                (false, true) => "MISSING",
                (false, false) => "reduced",
            };
            out.push_str(&format!("{:w$}  {status:7}  {:fw$}", c.name, c.found));
            if !c.ok {
                out.push_str(&format!("  {} / off: {}", c.fix, c.without));
            }
            let keep = out.trim_end().len();
            out.truncate(keep);
            out.push('\n');
        }
        out
    }
}

/// A daemon next to the running binary, or on PATH.
pub fn daemon_bin(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .or_else(|| on_path(name))
}

/// An executable on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn version_of(p: &Path) -> String {
    let out = std::process::Command::new(p)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let line = out
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    // "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"
    match line.split_once("version ") {
        Some((_, v)) => format!(
            "{} {}",
            p.display(),
            v.split_whitespace().next().unwrap_or("")
        ),
        None => p.display().to_string(),
    }
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective capability set, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// RLIMIT_MEMLOCK (soft, hard) in bytes; u64::MAX is unlimited.
fn memlock() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return (0, 0);
    }
    let f = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    (f(r.rlim_cur), f(r.rlim_max))
}

/// blockd's ring count (its engine: one per CPU, 1 to 4).
fn blockd_rings() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// How a kernel feature is there: its probe path, loaded, built in, or
/// loadable (the kernel loads it when netd first uses it).
fn kernel_module(name: &str, probe: &str) -> Option<String> {
    if !probe.is_empty() && Path::new(probe).exists() {
        return Some(format!("present ({probe})"));
    }
    if Path::new("/sys/module").join(name).exists() {
        return Some("loaded".into());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release.trim());
    let listed = |file: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|s| {
            s.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                base.split('.').next() == Some(name)
            })
        })
    };
    if listed("modules.builtin") {
        return Some("built in".into());
    }
    if listed("modules.dep") {
        return Some("loadable".into());
    }
    if kernel_config(name) {
        return Some("built in (kernel config)".into());
    }
    None
}

/// Whether /proc/config.gz (as `zcat` reads it) sets the module's option to y.
fn kernel_config(name: &str) -> bool {
    let opt = match name {
        "bridge" => "CONFIG_BRIDGE=y",
        "vxlan" => "CONFIG_VXLAN=y",
        "veth" => "CONFIG_VETH=y",
        "tun" => "CONFIG_TUN=y",
        "br_netfilter" => "CONFIG_BRIDGE_NETFILTER=y",
        "nf_conntrack" => "CONFIG_NF_CONNTRACK=y",
        _ => return false,
    };
    kernel_config_text().lines().any(|l| l == opt)
}

/// /proc/config.gz as text (read once per process; empty when absent).
fn kernel_config_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        if !Path::new("/proc/config.gz").exists() {
            return String::new();
        }
        std::process::Command::new("zcat")
            .arg("/proc/config.gz")
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
}

/// The tools `images/tiny/build.sh` needs, or the first that is missing.
fn tiny_image_tools() -> Result<(), String> {
    let kernel = std::fs::read_dir("/boot").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
    });
    if !kernel {
        return Err("a kernel in /boot (linux-image-amd64)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("busybox (busybox-static)".into());
    }
    for (tool, pkg) in [
        ("cpio", "cpio"),
        ("syslinux", "syslinux"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
    ] {
        if on_path(tool).is_none() {
            return Err(format!("{tool} ({pkg})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_every_check_and_what_provides_a_missing_one() {
        let r = Report {
            checks: vec![
                Check {
                    name: "nftables",
                    ok: false,
                    required: true,
                    found: "no nft on PATH".into(),
                    fix: "apt-get install nftables".into(),
                    without: "security groups",
                },
                Check {
                    name: "memlock limit",
                    ok: false,
                    required: false,
                    found: "64 KiB".into(),
                    fix: "ulimit -l 16384".into(),
                    without: "unregistered buffers",
                },
            ],
        };
        let t = r.table();
        let nft = t.lines().find(|l| l.starts_with("nftables")).unwrap();
        assert!(
            nft.contains("MISSING") && nft.contains("apt-get install nftables"),
            "{t}"
        );
        let ml = t.lines().find(|l| l.starts_with("memlock")).unwrap();
        assert!(ml.contains("reduced"), "{t}");
        assert!(!r.complete());
    }
}
