//! `cargo bench --bench nbd`: ../shared/bench/fio-jobs.sh in one run
//! against (a) the raw backing file with io_uring and O_DIRECT, (b)
//! qemu-storage-daemon exporting the same file over NBD on a unix socket,
//! (c) ursa-blockd exporting the same file over NBD on a unix socket, and
//! (d) a blockd volume in a thin pool on the same filesystem (10 GiB,
//! SIZE of it written first), over NBD on a unix socket.
//!
//! Prints the table, one `BENCH <job> ours=… peer=… ratio=…` line per job
//! for the thin volume against qemu-storage-daemon (IOPS, or MiB/s for the
//! sequential jobs; for randread1 the p50 latency, ratio = peer/ours),
//! `BENCH <job>-raw` lines against the raw file, and `BENCH <job>-file` for
//! blockd's file export against qemu-storage-daemon. Then the cost of a
//! snapshot and a clone of the thin volume against `qemu-img create` of a
//! qcow2 overlay (both metadata only).
//!
//! With randread1 among the jobs it also measures the floor for that job
//! on this machine (`nbd_floor.rs`): one minimal client against blockd's
//! thin volume and against a server that does nothing but the read, and
//! prints `BENCH randread1-floor` and how the floor compares with twice
//! the raw p50 (issue 5's QD1 target). RUNTIME (default 5 s per job),
//! SIZE (default 1g) and JOBS pass through to fio-jobs.sh; TARGETS (a
//! comma list of raw, qsd, file, thin; default all) picks what runs.

use std::collections::BTreeMap;
use ursa_proto::blockd::v1 as pb;
use ursa_proto::blockd::v1::blockd_client::BlockdClient;

async fn client(path: &std::path::Path) -> BlockdClient<tonic::transport::Channel> {
    let path = path.to_path_buf();
    let ch = tonic::transport::Endpoint::try_from("http://blockd.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("gRPC connects");
    BlockdClient::new(ch)
}
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
struct Job {
    iops: f64,
    bw: f64,
    p50: f64,
}

struct Kill(Option<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fio_jobs(
    script: &str,
    kind: &str,
    target: &str,
    size: &str,
    runtime: &str,
) -> BTreeMap<String, Job> {
    let o = Command::new("bash")
        .args([script, kind, target])
        .env("SIZE", size)
        .env("RUNTIME", runtime)
        .output()
        .expect("fio-jobs.sh runs");
    let text = String::from_utf8_lossy(&o.stdout);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut j = Job::default();
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                let v: f64 = v.parse().unwrap_or(0.0);
                match k {
                    "iops" => j.iops = v,
                    "bw_MiBps" => j.bw = v,
                    "p50_us" => j.p50 = v,
                    _ => {}
                }
            }
        }
        println!("  {kind:4} {line}");
        out.insert(name.to_string(), j);
    }
    if !o.status.success() {
        println!(
            "  fio-jobs.sh {kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    out
}

fn wait_socket(p: &std::path::Path) {
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(p).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} never listened",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[path = "nbd_floor.rs"]
mod floor;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.get(1).map(String::as_str) == Some("--floor-server") {
        if let Err(e) = floor::server(
            std::path::Path::new(&args[2]),
            std::path::Path::new(&args[3]),
        ) {
            eprintln!("floor server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/bench/fio-jobs.sh"
    );
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("fio") || !have("qemu-storage-daemon") || !std::path::Path::new(script).exists() {
        println!("SKIP nbd bench: needs fio, qemu-storage-daemon and {script}");
        return;
    }
    let size = std::env::var("SIZE").unwrap_or_else(|_| "1g".into());
    let runtime = std::env::var("RUNTIME").unwrap_or_else(|_| "5".into());
    let bytes: u64 = match size.trim_end_matches(['g', 'G']).parse::<u64>() {
        Ok(g) if size.ends_with(['g', 'G']) => g << 30,
        _ => 1 << 30,
    };
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir");
    let file = dir.path().join("backing.img");
    // Written data, not holes: reads must touch the disk for every target.
    let o = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", file.display()),
            "bs=1M",
            &format!("count={}", bytes >> 20),
            "conv=fsync",
        ])
        .stderr(Stdio::null())
        .status()
        .expect("dd");
    assert!(o.success());
    let path = file.display().to_string();

    let targets = std::env::var("TARGETS").unwrap_or_else(|_| "raw,qsd,file,thin".into());
    let on = |t: &str| targets.split(',').any(|x| x.trim() == t);
    let mut raw = BTreeMap::new();
    if on("raw") {
        println!("raw file (io_uring, O_DIRECT):");
        raw = fio_jobs(script, "file", &path, &size, &runtime);
    }

    let qsock = dir.path().join("qsd.sock");
    let mut peer = BTreeMap::new();
    if on("qsd") {
        let qsd = Kill(Some(
            Command::new("qemu-storage-daemon")
                .arg("--blockdev")
                .arg(format!(
                    "driver=file,node-name=f,filename={path},cache.direct=on,aio=io_uring"
                ))
                .arg("--nbd-server")
                .arg(format!("addr.type=unix,addr.path={}", qsock.display()))
                .arg("--export")
                .arg("type=nbd,id=e,node-name=f,name=vol,writable=on")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("qemu-storage-daemon starts"),
        ));
        wait_socket(&qsock);
        println!("qemu-storage-daemon over NBD:");
        peer = fio_jobs(
            script,
            "nbd",
            &format!("nbd+unix:///vol?socket={}", qsock.display()),
            &size,
            &runtime,
        );
        drop(qsd);
    }

    let bsock = dir.path().join("blockd.sock");
    let mut ours = BTreeMap::new();
    if on("file") {
        let blockd = Kill(Some(
            Command::new(env!("CARGO_BIN_EXE_ursa-blockd"))
                .arg("--nbd-unix")
                .arg(&bsock)
                .arg("--export")
                .arg(format!("vol={path}"))
                .env("URSA_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("ursa-blockd starts"),
        ));
        wait_socket(&bsock);
        println!("ursa-blockd over NBD:");
        ours = fio_jobs(
            script,
            "nbd",
            &format!("nbd+unix:///vol?socket={}", bsock.display()),
            &size,
            &runtime,
        );
        drop(blockd);
    }
    if !on("thin") {
        return;
    }

    // (d) A thin volume.
    let tdir = dir.path().join("thin");
    let gsock = tdir.join("grpc.sock");
    let tsock = tdir.join("nbd.sock");
    std::fs::create_dir_all(&tdir).unwrap();
    let thin = Kill(Some(
        Command::new(env!("CARGO_BIN_EXE_ursa-blockd"))
            .arg("--listen")
            .arg(format!("unix:{}", gsock.display()))
            .arg("--state-dir")
            .arg(tdir.join("state"))
            .arg("--pool")
            .arg(format!("bench={}", tdir.join("pool").display()))
            .arg("--nbd-unix")
            .arg(&tsock)
            .env("URSA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("ursa-blockd starts"),
    ));
    wait_socket(&gsock);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(client(&gsock));
    const VOL: &str = "be0c0000-0000-4000-8000-000000000001";
    rt.block_on(c.create_volume(pb::CreateVolumeRequest {
        id: VOL.into(),
        size_bytes: 10 << 30,
        pool: String::new(),
        qos: None,
    }))
    .expect("create volume");
    let uri = rt
        .block_on(c.export_volume(pb::ExportVolumeRequest {
            id: VOL.into(),
            kind: 0,
        }))
        .expect("export")
        .into_inner()
        .uri;
    // Written data, as for the others.
    let o = Command::new("qemu-img")
        .args([
            "convert", "-n", "-S", "0", "-f", "raw", "-O", "raw", "-t", "none",
        ])
        .arg(&file)
        .arg(&uri)
        .output()
        .expect("qemu-img");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("ursa-blockd thin volume over NBD:");
    let vol = fio_jobs(script, "nbd", &uri, &size, &runtime);

    // The floor for randread1 here, and blockd beside it, with one
    // minimal client (see nbd_floor.rs).
    let jobs = std::env::var("JOBS").unwrap_or_default();
    let floor_p50 = if jobs.is_empty() || jobs.split_whitespace().any(|j| j == "randread1") {
        let secs: f64 = runtime.parse().unwrap_or(5.0);
        let name = uri
            .split_once(":///")
            .and_then(|(_, r)| r.split_once('?'))
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let fsock = dir.path().join("floor.sock");
        let fserver = Kill(Some(
            Command::new(std::env::current_exe().expect("bench path"))
                .arg("--floor-server")
                .arg(&fsock)
                .arg(&file)
                .spawn()
                .expect("floor server starts"),
        ));
        wait_socket(&fsock);
        let floor = floor::client(&fsock, "floor", bytes, secs).expect("floor client");
        drop(fserver);
        let ours = floor::client(&tsock, &name, bytes, secs).expect("client of blockd");
        println!("randread1, one minimal client (4 KiB, QD1, p50 from request sent to whole reply, as fio's clat):");
        println!(
            "  floor server (a polled O_DIRECT read per request, nothing else): {floor:.1} us"
        );
        println!("  ursa-blockd thin volume:                                         {ours:.1} us");
        Some((floor, ours))
    } else {
        None
    };

    // Snapshot and clone of the written volume vs a qcow2 overlay.
    let t0 = Instant::now();
    rt.block_on(c.create_snapshot(pb::CreateSnapshotRequest {
        volume_id: VOL.into(),
        snapshot_id: "be0c0000-0000-4000-8000-0000000000a1".into(),
    }))
    .expect("snapshot");
    let t_snap = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    rt.block_on(c.clone_volume(pb::CloneVolumeRequest {
        source_id: "be0c0000-0000-4000-8000-0000000000a1".into(),
        id: "be0c0000-0000-4000-8000-0000000000c1".into(),
    }))
    .expect("clone");
    let t_clone = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&file)
        .arg(dir.path().join("overlay.qcow2"))
        .output()
        .expect("qemu-img");
    assert!(o.status.success());
    let t_qcow = t0.elapsed().as_secs_f64() * 1e3;
    drop(thin);

    println!(
        "BENCH snapshot ours={t_snap:.2} peer={t_qcow:.2} ratio={:.2} unit=ms (peer/ours; 10 GiB volume, {size} written; peer: qemu-img create qcow2 overlay)",
        t_qcow / t_snap.max(1e-9)
    );
    println!(
        "BENCH clone ours={t_clone:.2} peer={t_qcow:.2} ratio={:.2} unit=ms (peer/ours)",
        t_qcow / t_clone.max(1e-9)
    );

    let figure = |name: &str, j: &Job| match name {
        "seqread" | "seqwrite" => (j.bw, "MiB/s"),
        _ => (j.iops, "IOPS"),
    };
    for (name, f) in &ours {
        let p = peer.get(name).copied().unwrap_or_default();
        if name == "randread1" {
            println!(
                "BENCH {name}-file ours={:.1} peer={:.1} ratio={:.2} unit=p50_us (peer/ours)",
                f.p50,
                p.p50,
                p.p50 / f.p50.max(1e-9)
            );
        } else {
            let (fv, unit) = figure(name, f);
            let (pv, _) = figure(name, &p);
            println!(
                "BENCH {name}-file ours={fv:.1} peer={pv:.1} ratio={:.2} unit={unit}",
                fv / pv.max(1e-9)
            );
        }
    }
    for (name, o) in &vol {
        let p = peer.get(name).copied().unwrap_or_default();
        let r = raw.get(name).copied().unwrap_or_default();
        if name == "randread1" {
            println!(
                "BENCH {name} ours={:.1} peer={:.1} ratio={:.2} unit=p50_us (peer/ours)",
                o.p50,
                p.p50,
                p.p50 / o.p50.max(1e-9)
            );
            println!(
                "BENCH {name}-raw ours={:.1} peer={:.1} ratio={:.2} unit=p50_us (raw/ours)",
                o.p50,
                r.p50,
                r.p50 / o.p50.max(1e-9)
            );
            if let Some((floor, ours)) = floor_p50 {
                println!(
                    "BENCH {name}-floor ours={ours:.1} peer={floor:.1} ratio={:.2} unit=p50_us (peer/ours; peer: a server that does only the read, same minimal client)",
                    floor / ours.max(1e-9)
                );
                if r.p50 > 0.0 {
                    println!(
                        "  the floor is {:.2}x raw in this run: {}",
                        floor / r.p50,
                        if floor > 2.0 * r.p50 {
                            "QD1 p50 <= 2x raw is out of reach here for any NBD server on a unix socket"
                        } else {
                            "a server at the floor meets QD1 p50 <= 2x raw here"
                        }
                    );
                }
            }
            continue;
        }
        let (ov, unit) = figure(name, o);
        let (pv, _) = figure(name, &p);
        let (rv, _) = figure(name, &r);
        println!(
            "BENCH {name} ours={ov:.1} peer={pv:.1} ratio={:.2} unit={unit}",
            ov / pv.max(1e-9)
        );
        println!(
            "BENCH {name}-raw ours={ov:.1} peer={rv:.1} ratio={:.2} unit={unit}",
            ov / rv.max(1e-9)
        );
    }
}
