//! blockd's gRPC service end to end: a real `ursa-blockd` with a pool,
//! volumes created, exported and written through their NBD URI with
//! qemu-io, a SIGKILL restart that keeps registry and exports, and the
//! errors a control plane can get back.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;
use ursa_proto::blockd::v1 as pb;
use ursa_proto::blockd::v1::blockd_client::BlockdClient;

const VOL: &str = "0b10c000-0000-4000-8000-000000000001";

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    fn new() -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = Daemon {
            child: None,
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        d.start();
        d
    }

    fn grpc_sock(&self) -> PathBuf {
        self.dir.join("grpc.sock")
    }

    fn nbd_sock(&self) -> PathBuf {
        self.dir.join("nbd.sock")
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.grpc_sock());
        let child = Command::new(env!("CARGO_BIN_EXE_ursa-blockd"))
            .arg("--listen")
            .arg(format!("unix:{}", self.grpc_sock().display()))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--pool")
            .arg(format!("p1={}", self.dir.join("pool1").display()))
            .arg("--nbd-unix")
            .arg(self.nbd_sock())
            .arg("--vhost-user-dir")
            .arg(self.dir.join("vhost"))
            .env("URSA_LOG", "warn")
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.grpc_sock()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "blockd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> BlockdClient<Channel> {
        let path = self.grpc_sock();
        self.rt.block_on(async move {
            let ch = Endpoint::try_from("http://blockd.invalid")
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
                .unwrap();
            BlockdClient::new(ch)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn qemu_io(uri: &str, cmds: &[&str]) -> bool {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for x in cmds {
        c.args(["-c", x]);
    }
    c.output().is_ok_and(|o| {
        o.status.success()
            && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed")
    })
}

#[test]
fn volumes_are_created_exported_written_and_survive_a_kill() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP: qemu-io (qemu-utils) is not installed");
        return;
    }
    let mut d = Daemon::new();
    let mut c = d.client();
    let create = |c: &mut BlockdClient<Channel>,
                  rt: &tokio::runtime::Runtime,
                  id: &str,
                  size: u64,
                  pool: &str| {
        rt.block_on(c.create_volume(pb::CreateVolumeRequest {
            id: id.into(),
            size_bytes: size,
            pool: pool.into(),
            qos: None,
        }))
    };
    let v = create(&mut c, &d.rt, VOL, 64 << 20, "")
        .unwrap()
        .into_inner();
    assert_eq!((v.pool.as_str(), v.size_bytes), ("p1", 64 << 20));
    assert!(
        v.allocated_bytes < 1 << 20,
        "thin volume allocated {}",
        v.allocated_bytes
    );
    // Idempotent create; conflicting create and bad input.
    assert_eq!(
        create(&mut c, &d.rt, VOL, 64 << 20, "")
            .unwrap()
            .into_inner()
            .id,
        VOL
    );
    assert_eq!(
        create(&mut c, &d.rt, VOL, 32 << 20, "").unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(
        create(&mut c, &d.rt, "nope", 1 << 20, "")
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        create(
            &mut c,
            &d.rt,
            "0b10c000-0000-4000-8000-000000000002",
            1000,
            ""
        )
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        create(
            &mut c,
            &d.rt,
            "0b10c000-0000-4000-8000-000000000003",
            1 << 20,
            "p9"
        )
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    let conn =
        d.rt.block_on(c.export_volume(pb::ExportVolumeRequest {
            id: VOL.into(),
            kind: 0,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(conn.driver_volume_type, "nbd");
    assert!(
        qemu_io(&conn.uri, &["write -P 0x3c 1M 2M", "flush"]),
        "write through {}",
        conn.uri
    );
    let v =
        d.rt.block_on(c.get_volume(pb::VolumeRef { id: VOL.into() }))
            .unwrap()
            .into_inner();
    assert!(v.allocated_bytes >= 2 << 20 && v.exported, "{v:?}");
    // Never-written ranges read as zeros and block status calls them holes.
    assert!(qemu_io(&conn.uri, &["read -P 0 32M 1M"]));
    if have("nbdinfo") {
        let o = Command::new("nbdinfo")
            .args(["--map", &conn.uri])
            .output()
            .unwrap();
        let map = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{map}");
        assert!(
            map.lines().any(|l| l.contains("hole")) && map.lines().any(|l| l.contains("data")),
            "nbdinfo --map: {map}"
        );
        assert!(map.contains("1048576     2097152    0  data"), "{map}");
    }
    assert_eq!(
        d.rt.block_on(c.delete_volume(pb::VolumeRef { id: VOL.into() }))
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        d.rt.block_on(c.create_snapshot(pb::CreateSnapshotRequest {
            volume_id: VOL.into(),
            snapshot_id: "x".into()
        }))
        .unwrap_err()
        .code(),
        Code::InvalidArgument,
        "snapshot ids are UUIDs too"
    );

    // Grow (never shrink); new connections see the new size.
    let v =
        d.rt.block_on(c.resize_volume(pb::ResizeVolumeRequest {
            id: VOL.into(),
            size_bytes: 128 << 20,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(v.size_bytes, 128 << 20);
    assert_eq!(
        d.rt.block_on(c.resize_volume(pb::ResizeVolumeRequest {
            id: VOL.into(),
            size_bytes: 1 << 20
        }))
        .unwrap_err()
        .code(),
        Code::FailedPrecondition
    );
    assert!(qemu_io(
        &conn.uri,
        &["read -P 0x3c 1M 2M", "read -P 0 100M 1M"]
    ));
    let pools =
        d.rt.block_on(c.get_pools(pb::GetPoolsRequest {}))
            .unwrap()
            .into_inner()
            .pools;
    assert_eq!(pools[0].provisioned_bytes, 128 << 20);
    assert!(pools[0].capacity_bytes > 0 && pools[0].free_bytes > 0);

    // SIGKILL and restart: registry and export come back, data intact.
    d.kill();
    d.start();
    let mut c = d.client();
    let list =
        d.rt.block_on(c.list_volumes(pb::ListVolumesRequest {}))
            .unwrap()
            .into_inner()
            .volumes;
    assert_eq!(list.len(), 1);
    assert!(
        list[0].exported && list[0].size_bytes == 128 << 20,
        "{list:?}"
    );
    assert!(
        qemu_io(&conn.uri, &["read -P 0x3c 1M 2M"]),
        "export not back after restart"
    );

    // Unexport, then delete (twice: deletes are idempotent).
    d.rt.block_on(c.unexport_volume(pb::VolumeRef { id: VOL.into() }))
        .unwrap();
    assert!(
        !qemu_io(&conn.uri, &["read 0 4k"]),
        "unexported volume still served"
    );
    d.rt.block_on(c.delete_volume(pb::VolumeRef { id: VOL.into() }))
        .unwrap();
    d.rt.block_on(c.delete_volume(pb::VolumeRef { id: VOL.into() }))
        .unwrap();
    let pools =
        d.rt.block_on(c.get_pools(pb::GetPoolsRequest {}))
            .unwrap()
            .into_inner()
            .pools;
    assert_eq!(pools[0].allocated_bytes, 0, "space not given back");
    assert_eq!(
        d.rt.block_on(c.get_volume(pb::VolumeRef { id: VOL.into() }))
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[test]
fn qos_limits_hold_an_export_back_and_change_while_exported() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP: qemu-io (qemu-utils) is not installed");
        return;
    }
    const QV: &str = "0b10c000-0000-4000-8000-0000000000a5";
    let mut d = Daemon::new();
    let mut c = d.client();
    let v =
        d.rt.block_on(c.create_volume(pb::CreateVolumeRequest {
            id: QV.into(),
            size_bytes: 64 << 20,
            pool: String::new(),
            qos: Some(pb::Qos {
                iops: 0,
                bytes_per_second: 2 << 20,
            }),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(v.qos.unwrap().bytes_per_second, 2 << 20);
    let conn =
        d.rt.block_on(c.export_volume(pb::ExportVolumeRequest {
            id: QV.into(),
            kind: 0,
        }))
        .unwrap()
        .into_inner();
    // 8 MiB at 2 MiB/s with a 2 MiB burst cannot finish in under 2 s (a
    // lower bound: a slow machine only makes it longer).
    let t0 = Instant::now();
    assert!(qemu_io(&conn.uri, &["write -P 0x5a 0 8M", "flush"]));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "8 MiB at 2 MiB/s took only {took:?}"
    );
    // Lifted while exported; the data is all there.
    let v =
        d.rt.block_on(c.set_volume_qos(pb::SetVolumeQosRequest {
            id: QV.into(),
            qos: Some(pb::Qos::default()),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(v.qos.unwrap().bytes_per_second, 0);
    assert!(qemu_io(&conn.uri, &["read -P 0x5a 0 8M"]));
    // The export counted what went through it.
    let st =
        d.rt.block_on(c.get_volume(pb::VolumeRef { id: QV.into() }))
            .unwrap()
            .into_inner()
            .stats
            .expect("stats while exported");
    assert!(st.write_bytes >= 8 << 20 && st.write_ops >= 1, "{st:?}");
    assert!(st.read_bytes >= 8 << 20 && st.flush_ops >= 1, "{st:?}");
    // Limits are kept durably: set, restart, read back.
    d.rt.block_on(c.set_volume_qos(pb::SetVolumeQosRequest {
        id: QV.into(),
        qos: Some(pb::Qos {
            iops: 500,
            bytes_per_second: 0,
        }),
    }))
    .unwrap();
    d.kill();
    d.start();
    let mut c = d.client();
    let v =
        d.rt.block_on(c.get_volume(pb::VolumeRef { id: QV.into() }))
            .unwrap()
            .into_inner();
    assert_eq!(v.qos.unwrap().iops, 500);
    assert!(qemu_io(&conn.uri, &["read -P 0x5a 0 1M"]));
    assert_eq!(
        d.rt.block_on(c.set_volume_qos(pb::SetVolumeQosRequest {
            id: "0b10c000-0000-4000-8000-0000000000ff".into(),
            qos: None,
        }))
        .unwrap_err()
        .code(),
        Code::NotFound
    );
}

/// Writes batches through NBD (each batch: four fresh 64 KiB blocks, then
/// FLUSH; a batch counts only when qemu-io reports all of it done), while
/// blockd is SIGKILLed at a random moment; 20 rounds. After every restart
/// the registry answers, the export is back, and every acknowledged block
/// reads back exactly.
#[test]
fn acknowledged_flushed_writes_survive_sigkill_rounds() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP: qemu-io (qemu-utils) is not installed");
        return;
    }
    const DV: &str = "0b10c000-0000-4000-8000-0000000000d0";
    const BLOCK: u64 = 64 << 10;
    let mut d = Daemon::new();
    let mut c = d.client();
    d.rt.block_on(c.create_volume(pb::CreateVolumeRequest {
        id: DV.into(),
        size_bytes: 128 << 20,
        pool: String::new(),
        qos: None,
    }))
    .unwrap();
    let uri =
        d.rt.block_on(c.export_volume(pb::ExportVolumeRequest {
            id: DV.into(),
            kind: 0,
        }))
        .unwrap()
        .into_inner()
        .uri;
    let pattern = |b: u64| (b % 251) + 1;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut next_block = 0u64;
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..20 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, uri2) = (stop.clone(), uri.clone());
        let first = next_block;
        let writer = std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut b = first;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) && b + 4 <= 2048 {
                let mut cmds: Vec<String> = (b..b + 4)
                    .map(|x| format!("write -P {} {} {BLOCK}", pattern(x), x * BLOCK))
                    .collect();
                cmds.push("flush".into());
                let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
                let ok = qemu_io(&uri2, &refs);
                if !ok {
                    break;
                }
                done.extend(b..b + 4);
                b += 4;
            }
            (done, b)
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 400));
        d.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (done, reached) = writer.join().unwrap();
        acked.extend(done);
        // Blocks of a batch cut short are never reused or checked.
        next_block = reached + 4;
        d.start();
        let mut c = d.client();
        let v =
            d.rt.block_on(c.get_volume(pb::VolumeRef { id: DV.into() }))
                .unwrap_or_else(|e| panic!("round {round}: registry lost: {e}"))
                .into_inner();
        assert!(v.exported, "round {round}: the export did not come back");
        let cmds: Vec<String> = acked
            .iter()
            .map(|x| format!("read -P {} {} {BLOCK}", pattern(*x), x * BLOCK))
            .collect();
        for chunk in cmds.chunks(64) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            assert!(
                refs.is_empty() || qemu_io(&uri, &refs),
                "round {round}: an acknowledged, flushed block is not intact"
            );
        }
        if next_block + 4 > 2048 {
            break;
        }
    }
    assert!(
        acked.len() >= 20,
        "too few acknowledged blocks to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{} acknowledged blocks verified across the kills",
        acked.len()
    );
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One fio job over NBD with crc32c-stamped blocks; returns the job's JSON.
fn fio(uri: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new("fio")
        .args([
            "--name=cow",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randrepeat=1",
            "--output-format=json",
        ])
        .args(args)
        .output()
        .expect("fio runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "fio {args:?} on {uri}: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc = out.find('{').map_or("", |i| &out[i..]);
    let v: serde_json::Value =
        serde_json::from_str(doc).unwrap_or_else(|e| panic!("fio JSON ({e}): {out}"));
    let job = v["jobs"][0].clone();
    assert_eq!(job["error"], 0, "{args:?}: {job}");
    job
}

fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[test]
fn snapshots_and_clones_share_blocks_and_fio_verifies_all_three() {
    if !have("fio") {
        eprintln!("SKIP snapshot/clone test: fio is not installed");
        return;
    }
    const SNAP: &str = "0b10c000-0000-4000-8000-0000000000a1";
    const CLONE: &str = "0b10c000-0000-4000-8000-0000000000c1";
    let d = Daemon::new();
    let mut c = d.client();
    let rt = &d.rt;
    rt.block_on(c.create_volume(pb::CreateVolumeRequest {
        id: VOL.into(),
        size_bytes: 10 << 30,
        pool: String::new(),
        qos: None,
    }))
    .unwrap();
    let export = |c: &mut BlockdClient<Channel>, id: &str| {
        rt.block_on(c.export_volume(pb::ExportVolumeRequest {
            id: id.into(),
            kind: 0,
        }))
        .unwrap()
        .into_inner()
        .uri
    };
    let vol_uri = export(&mut c, VOL);
    // Fresh volume: 1 GiB of crc32c-stamped 64 KiB blocks, 16 in flight,
    // written and verified.
    let first = [
        "--rw=randwrite",
        "--bs=64k",
        "--size=1g",
        "--iodepth=16",
        "--randseed=1234",
    ];
    let job = fio(&vol_uri, &[&first[..], &["--do_verify=1"]].concat());
    assert_eq!(job["read"]["io_bytes"].as_u64(), Some(1 << 30));
    let pool_dir = d.dir.join("pool1");
    let used0 = disk_usage(&pool_dir);
    assert!(used0 >= 1 << 30, "1 GiB written uses {used0} bytes");

    // Snapshot and clone: metadata only.
    let t0 = Instant::now();
    let s = rt
        .block_on(c.create_snapshot(pb::CreateSnapshotRequest {
            volume_id: VOL.into(),
            snapshot_id: SNAP.into(),
        }))
        .unwrap()
        .into_inner();
    let t_snap = t0.elapsed();
    let t0 = Instant::now();
    let cl = rt
        .block_on(c.clone_volume(pb::CloneVolumeRequest {
            source_id: SNAP.into(),
            id: CLONE.into(),
        }))
        .unwrap()
        .into_inner();
    let t_clone = t0.elapsed();
    let used1 = disk_usage(&pool_dir);
    eprintln!(
        "snapshot of a 10 GiB volume with 1 GiB written: {t_snap:?}; clone: {t_clone:?}; new space {} bytes",
        used1.saturating_sub(used0)
    );
    assert!(
        used1 < used0 + (1 << 20),
        "snapshot+clone used {} new bytes",
        used1 - used0
    );
    assert_eq!(s.snapshot_of, VOL);
    assert_eq!(cl.clone_of, SNAP);
    assert_eq!((s.size_bytes, cl.size_bytes), (10 << 30, 10 << 30));
    assert_eq!(s.allocated_bytes, 1 << 30);
    let pools = rt
        .block_on(c.get_pools(pb::GetPoolsRequest {}))
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(
        pools[0].allocated_bytes,
        1 << 30,
        "shared chunks count once"
    );

    // Overwrite the origin and the clone with other blocks (4 KiB and
    // 16 KiB pieces of shared 64 KiB chunks: copy-on-write), verifying.
    fio(
        &vol_uri,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--size=256m",
            "--iodepth=16",
            "--randseed=99",
            "--do_verify=1",
        ],
    );
    let clone_uri = export(&mut c, CLONE);
    fio(
        &clone_uri,
        &[
            "--rw=randwrite",
            "--bs=16k",
            "--size=256m",
            "--offset=128m",
            "--iodepth=16",
            "--randseed=7",
            "--do_verify=1",
        ],
    );
    // The snapshot still holds the first job's blocks, every one.
    let snap_uri = export(&mut c, SNAP);
    let job = fio(&snap_uri, &[&first[..], &["--verify_only"]].concat());
    assert_eq!(job["read"]["io_bytes"].as_u64(), Some(1 << 30), "{job}");
    // It is read-only.
    assert!(
        !qemu_io(&snap_uri, &["write 0 4k"]),
        "snapshot took a write"
    );

    // Deleting the origin keeps snapshot and clone; deleting all gives
    // every chunk back.
    for id in [VOL, SNAP, CLONE] {
        rt.block_on(c.unexport_volume(pb::VolumeRef { id: id.into() }))
            .unwrap();
    }
    rt.block_on(c.delete_volume(pb::VolumeRef { id: VOL.into() }))
        .unwrap();
    let job = fio(
        &export(&mut c, SNAP),
        &[&first[..], &["--verify_only"]].concat(),
    );
    assert_eq!(job["read"]["io_bytes"].as_u64(), Some(1 << 30));
    rt.block_on(c.unexport_volume(pb::VolumeRef { id: SNAP.into() }))
        .unwrap();
    for id in [SNAP, CLONE] {
        rt.block_on(c.delete_volume(pb::VolumeRef { id: id.into() }))
            .unwrap();
    }
    let pools = rt
        .block_on(c.get_pools(pb::GetPoolsRequest {}))
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools[0].allocated_bytes, 0);
    assert!(
        disk_usage(&pool_dir) < 1 << 20,
        "pool files still use {} bytes",
        disk_usage(&pool_dir)
    );
}

/// A deterministic pattern, different in every 8 bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn md5_hex(b: &[u8]) -> String {
    use std::io::Write as _;
    let mut c = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_qemu_guest_writes_through_vhost_user_and_nbd_reads_it_back() {
    let kernel_ok = std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !have("qemu-system-x86_64") || !kernel_ok || !have("cpio") {
        eprintln!("SKIP vhost-user guest test: needs qemu-system-x86, linux-image-amd64, busybox-static and cpio");
        return;
    }
    let d = Daemon::new();
    let mut c = d.client();
    let rt = &d.rt;
    // The tiny guest, plus a second archive with the pattern it writes.
    let img = d.dir.join("tiny");
    let o = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../images/tiny/build.sh"
        ))
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let extra = d.dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let written = pattern(4 << 20, 77);
    std::fs::write(extra.join("pattern.bin"), &written).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && echo pattern.bin | cpio -o -H newc --quiet | gzip -1")
        .arg("sh")
        .arg(&extra)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut initrd = std::fs::read(img.join("initramfs.cpio.gz")).unwrap();
    initrd.extend_from_slice(&o.stdout);
    std::fs::write(d.dir.join("initrd"), &initrd).unwrap();

    rt.block_on(c.create_volume(pb::CreateVolumeRequest {
        id: VOL.into(),
        size_bytes: 64 << 20,
        pool: String::new(),
        qos: None,
    }))
    .unwrap();
    // Something for the guest to read: 1 MiB at 8 MiB, written over NBD.
    let nbd = rt
        .block_on(c.export_volume(pb::ExportVolumeRequest {
            id: VOL.into(),
            kind: 0,
        }))
        .unwrap()
        .into_inner();
    let host_data = pattern(1 << 20, 5);
    let hostfile = d.dir.join("host.bin");
    std::fs::write(&hostfile, &host_data).unwrap();
    assert!(qemu_io(
        &nbd.uri,
        &[&format!("write -s {} 8M 1M", hostfile.display()), "flush"]
    ));
    let vh = rt
        .block_on(c.export_volume(pb::ExportVolumeRequest {
            id: VOL.into(),
            kind: pb::export_volume_request::Kind::VhostUserBlk as i32,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(vh.driver_volume_type, "vhost_user_blk");
    assert!(std::path::Path::new(&vh.socket_path).exists());

    let serial = d.dir.join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-reboot",
        ])
        .args(["-display", "none"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!("socket,id=blk0,path={}", vh.socket_path))
        .args(["-device", "vhost-user-blk-pci,chardev=blk0,num-queues=1"])
        .arg("-kernel")
        .arg(img.join("vmlinuz"))
        .arg("-initrd")
        .arg(d.dir.join("initrd"))
        .args(["-append", "console=ttyS0 panic=-1 ursa.blktest"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = qemu.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(240) {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let mut err = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut err);
    }
    eprintln!("guest ran {:?}", t0.elapsed());
    assert!(
        status.is_some(),
        "guest did not power off in time:\n{log}\n{err}"
    );
    let tail: String = log
        .lines()
        .filter(|l| l.contains("URSA-TINY"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(log.contains("URSA-TINY: done"), "guest log:\n{log}\n{err}");
    assert!(tail.contains("vda 131072 sectors"), "{log}");
    assert!(
        tail.contains(&format!("wrote {}", md5_hex(&written))),
        "{tail}"
    );
    // Its 4 MiB end before 8 MiB: there it read the host's bytes.
    assert!(
        tail.contains(&format!("read {}", md5_hex(&host_data))),
        "{tail}"
    );
    assert!(tail.contains("discarded"), "{tail}");

    // After the guest is gone, the host reads the guest's bytes over NBD.
    let back = d.dir.join("back.bin");
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &nbd.uri])
        .arg(&back)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = std::fs::read(&back).unwrap();
    assert_eq!(back.len(), 64 << 20);
    assert!(
        back[..4 << 20] == written[..],
        "guest's pattern not on the volume"
    );
    assert!(back[8 << 20..9 << 20] == host_data[..]);
    assert!(
        back[16 << 20..17 << 20].iter().all(|b| *b == 0),
        "discard left data"
    );
    rt.block_on(c.unexport_volume(pb::VolumeRef { id: VOL.into() }))
        .unwrap();
    assert!(
        !std::path::Path::new(&vh.socket_path).exists(),
        "vhost socket left behind"
    );
}
