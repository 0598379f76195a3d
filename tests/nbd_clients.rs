//! blockd's NBD export against real clients: qemu-io, qemu-img (and
//! nbdinfo when libnbd-bin is installed, as .ci/run does). Each test runs its
//! own `ursa-blockd` on a unix socket in a temp dir; the process is killed on
//! drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

struct Blockd {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Blockd {
    fn start(exports: &[(&str, &str)]) -> Blockd {
        Self::start_polling(exports, 200)
    }

    /// `poll_us`: how long connections poll before sleeping (0: they
    /// always sleep, so every wake-up path is exercised).
    fn start_polling(exports: &[(&str, &str)], poll_us: u64) -> Blockd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sock = path.join("nbd.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ursa-blockd"));
        cmd.arg("--nbd-unix")
            .arg(&sock)
            .arg("--nbd-poll-us")
            .arg(poll_us.to_string());
        for (name, size) in exports {
            cmd.arg("--export").arg(format!(
                "{name}={}:{size}",
                path.join(format!("{name}.vol")).display()
            ));
        }
        let child = cmd
            .env("URSA_LOG", "warn")
            .spawn()
            .expect("ursa-blockd starts");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ursa-blockd did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Blockd {
            child,
            sock,
            _dir: dir,
            dir: path,
        }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }
}

impl Drop for Blockd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("client runs")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn random_file(path: &Path, len: usize) {
    // A cheap deterministic pattern that differs in every 4 KiB block.
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    f.write_all(&buf).unwrap();
}

#[test]
fn qemu_io_writes_and_reads_back_patterns() {
    if !have("qemu-io") {
        eprintln!("SKIP: qemu-io (qemu-utils) is not installed");
        return;
    }
    let b = Blockd::start(&[("vol", "64M")]);
    let uri = b.uri("vol");
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &uri,
        "-c",
        "write -P 0xab 1M 4M",
        "-c",
        "write -P 0x5c 63M 1M",
        "-c",
        "flush",
    ]);
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &uri,
        "-c",
        "read -P 0xab 1M 4M",
        "-c",
        "read -P 0x5c 63M 1M",
        "-c",
        "read -P 0 0 1M",
        "-c",
        "read -P 0 5M 58M",
    ]);
    // FUA writes, trim and write-zeroes through the client.
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &uri,
        "-c",
        "write -f -P 0x11 0 64k",
        "-c",
        "discard 1M 1M",
        "-c",
        "write -z 2M 1M",
    ]);
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &uri,
        "-c",
        "read -P 0x11 0 64k",
        "-c",
        "read -P 0 1M 2M",
        "-c",
        "read -P 0xab 3M 2M",
    ]);
    // Past the end is refused, the connection and the data survive.
    let o = run(&["qemu-io", "-f", "raw", &uri, "-c", "read 64M 4k"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        text.contains("nput/output error") || text.contains("nvalid") || !o.status.success(),
        "{text}"
    );
    ok(&["qemu-io", "-f", "raw", &uri, "-c", "read -P 0x5c 63M 1M"]);
}

#[test]
fn qemu_img_converts_in_and_out_with_identical_bytes() {
    if !have("qemu-img") {
        eprintln!("SKIP: qemu-img (qemu-utils) is not installed");
        return;
    }
    let b = Blockd::start_polling(&[("img", "32M")], 0);
    let src = b.dir.join("src.raw");
    let back = b.dir.join("back.raw");
    random_file(&src, 24 << 20);
    ok(&[
        "qemu-img",
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &b.uri("img"),
    ]);
    ok(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &b.uri("img"),
        back.to_str().unwrap(),
    ]);
    let a = std::fs::read(&src).unwrap();
    let z = std::fs::read(&back).unwrap();
    assert_eq!(z.len(), 32 << 20);
    assert!(a == z[..a.len()], "bytes differ after the round trip");
    assert!(
        z[a.len()..].iter().all(|x| *x == 0),
        "never-written tail is not zero"
    );
    // Block status: the unwritten tail is a hole, the written part is data.
    let map = ok(&[
        "qemu-img",
        "map",
        "--output=json",
        "-f",
        "raw",
        &b.uri("img"),
    ]);
    assert!(
        map.contains("\"data\": false") && map.contains("\"data\": true"),
        "{map}"
    );
    let info = ok(&["qemu-img", "info", "-f", "raw", &b.uri("img")]);
    assert!(info.contains("33554432"), "{info}");
}

#[test]
fn unknown_exports_and_garbage_clients_disturb_nobody() {
    if !have("qemu-io") {
        eprintln!("SKIP: qemu-io (qemu-utils) is not installed");
        return;
    }
    let b = Blockd::start(&[("a", "8M"), ("b", "8M")]);
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &b.uri("a"),
        "-c",
        "write -P 0x42 0 1M",
    ]);
    // A garbage client and one that hangs up mid-request.
    let mut junk = std::os::unix::net::UnixStream::connect(&b.sock).unwrap();
    let _ = junk.write_all(&[0xffu8; 4096]);
    let mut half = std::os::unix::net::UnixStream::connect(&b.sock).unwrap();
    let _ = half.write_all(&3u32.to_be_bytes());
    let _ = half.write_all(b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x10\x00partial");
    drop(half);
    // Unknown export name: a clean refusal.
    let o = run(&["qemu-io", "-f", "raw", &b.uri("nope"), "-c", "read 0 4k"]);
    assert!(
        !o.status.success() || String::from_utf8_lossy(&o.stderr).contains("export"),
        "unknown export accepted"
    );
    // The others are unaffected.
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        &b.uri("a"),
        "-c",
        "read -P 0x42 0 1M",
    ]);
    ok(&["qemu-io", "-f", "raw", &b.uri("b"), "-c", "read -P 0 0 1M"]);
    drop(junk);
    if have("nbdinfo") {
        let list = ok(&[
            "nbdinfo",
            "--list",
            &format!("nbd+unix://?socket={}", b.sock.display()),
        ]);
        assert!(
            list.contains("export=\"a\"") || list.contains("a\n") || list.contains(": a"),
            "{list}"
        );
        let map = ok(&["nbdinfo", "--map", &b.uri("b")]);
        assert!(
            map.contains("hole"),
            "never-written volume should be a hole: {map}"
        );
    } else {
        eprintln!("note: nbdinfo (libnbd-bin) not installed; LIST/map checked through qemu only");
    }
}

#[test]
fn nbdcopy_moves_a_gibibyte_in_and_out_intact() {
    if !have("nbdcopy") {
        eprintln!("SKIP: nbdcopy (libnbd-bin) is not installed");
        return;
    }
    let b = Blockd::start_polling(&[("big", "1G")], 0);
    let src = b.dir.join("src.raw");
    let back = b.dir.join("back.raw");
    random_file(&src, 1 << 30);
    ok(&["nbdcopy", src.to_str().unwrap(), &b.uri("big")]);
    ok(&["nbdcopy", &b.uri("big"), back.to_str().unwrap()]);
    let same = Command::new("cmp")
        .arg(&src)
        .arg(&back)
        .status()
        .unwrap()
        .success();
    assert!(same, "1 GiB came back different");
}

#[test]
fn fio_verifies_crc32c_over_nbd_with_requests_in_flight() {
    if !have("fio") {
        eprintln!("SKIP fio over NBD: fio is not installed");
        return;
    }
    let engines = run(&["fio", "--enghelp"]);
    if !String::from_utf8_lossy(&engines.stdout).contains("nbd") {
        eprintln!("SKIP fio over NBD: this fio has no nbd engine");
        return;
    }
    let b = Blockd::start(&[("fiovol", "64M")]);
    // Random writes with 16 requests in flight on one connection, each block
    // stamped with a crc32c header, then every block read back and checked;
    // then the same with 64 KiB sequential writes.
    for (rw, bs) in [("randwrite", "4k"), ("write", "64k")] {
        let o = run(&[
            "fio",
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", b.uri("fiovol")),
            &format!("--rw={rw}"),
            &format!("--bs={bs}"),
            "--size=32M",
            "--iodepth=16",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--output-format=json",
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "fio {rw} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            out
        );
        // fio may print notes before its JSON document.
        let doc = out.find('{').map_or("", |i| &out[i..]);
        let v: serde_json::Value =
            serde_json::from_str(doc).unwrap_or_else(|e| panic!("fio JSON ({e}): {out}"));
        let job = &v["jobs"][0];
        assert_eq!(job["error"], 0, "{rw}: {job}");
        assert_eq!(
            job["write"]["io_bytes"].as_u64(),
            Some(32 << 20),
            "{rw}: wrote {}",
            job["write"]["io_bytes"]
        );
        assert_eq!(
            job["read"]["io_bytes"].as_u64(),
            Some(32 << 20),
            "{rw}: verified {}",
            job["read"]["io_bytes"]
        );
    }
}
