//! The volume API (Cinder v3 at /volume/v3) end to end: `ursa up` runs its
//! own ursa-blockd; a volume made from an image reads back the image's
//! bytes over NBD, a snapshot and a volume from it keep them, another
//! project sees none of it, bad input gets Cinder-shaped errors, and a
//! restart keeps everything.

mod common;

use common::Cloud;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

struct Api<'a> {
    cloud: &'a Cloud,
    base: String,
}

impl Api<'_> {
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.call_at("3.60", method, path, token, body)
    }

    /// A call at block storage microversion `version`.
    fn call_at(
        &self,
        version: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .cloud
            .http()
            .request(m, format!("{}{path}", self.base))
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", format!("volume {version}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }

    /// Waits for a volume or snapshot to reach `want`.
    fn wait(&self, path: &str, key: &str, token: &str, want: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let (st, v) = self.call("GET", path, token, None);
            assert_eq!(st, 200, "{v}");
            let s = v[key]["status"].as_str().unwrap_or("").to_string();
            if s == want {
                return v[key].clone();
            }
            assert!(!s.starts_with("error"), "{path} went to {s}: {v}");
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{path} stuck in {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn gone(&self, path: &str, token: &str) {
        let t0 = Instant::now();
        while self.call("GET", path, token, None).0 != 404 {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{path} never went away"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A new image (`meta` as created) holding `bytes`; its id.
fn upload_image(cloud: &Cloud, token: &str, meta: Value, bytes: Vec<u8>) -> String {
    let base = cloud.url.trim_end_matches("/v3");
    let img: Value = cloud
        .http()
        .post(format!("{base}/image/v2/images"))
        .header("X-Auth-Token", token)
        .json(&meta)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = img["id"].as_str().unwrap().to_string();
    let r = cloud
        .http()
        .put(format!("{base}/image/v2/images/{id}/file"))
        .header("X-Auth-Token", token)
        .header("Content-Type", "application/octet-stream")
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    id
}

/// The first `len` bytes of a volume, read over its NBD export.
fn read_nbd(api: &Api, token: &str, vol: &str, len: usize, dir: &std::path::Path) -> Vec<u8> {
    let (st, c) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        token,
        Some(json!({"os-initialize_connection": {"connector": {}}})),
    );
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["connection_info"]["driver_volume_type"], "nbd");
    let uri = c["connection_info"]["data"]["uri"].as_str().unwrap();
    let out = dir.join(format!("{vol}.raw"));
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", uri])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b = std::fs::read(&out).unwrap();
    b.truncate(len);
    b
}

#[test]
fn volumes_from_images_snapshots_isolation_and_restart() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("SKIP volume e2e: qemu-img (qemu-utils) is not installed");
        return;
    }
    let blockd = std::path::Path::new(common::ursa_bin()).with_file_name("ursa-blockd");
    if !blockd.exists() {
        eprintln!(
            "SKIP volume e2e: {} is not built (cargo build --workspace)",
            blockd.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "vol-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (a, _) = cloud.member_of(&admin, "vol-a");
    let (b, _) = cloud.member_of(&admin, "vol-b");
    let (_, cat) = cloud.call("GET", "/auth/catalog", &a, None);
    assert!(cat.to_string().contains("volumev3"), "{cat}");

    // An image with 2 MiB of data.
    let data: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let image = upload_image(
        &cloud,
        &a,
        json!({"name": "src", "disk_format": "raw", "container_format": "bare", "visibility": "private"}),
        data.clone(),
    );

    // A volume from it.
    let (st, v) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"size": 1, "name": "boot", "imageRef": image}})),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["volume"]["status"], "creating");
    let vol = v["volume"]["id"].as_str().unwrap().to_string();
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    assert_eq!(v["bootable"], "true");
    assert_eq!(v["size"], 1);
    assert!(
        read_nbd(&api, &a, &vol, data.len(), work.path()) == data,
        "volume lacks the image's bytes"
    );

    // The summary (3.12) counts what the caller sees: one volume, 1 GiB;
    // the other project sees none.
    let (st, sum) = api.call("GET", "/volumes/summary", &a, None);
    assert_eq!(st, 200, "{sum}");
    assert_eq!(sum["volume-summary"]["total_count"], 1, "{sum}");
    assert_eq!(sum["volume-summary"]["total_size"], 1, "{sum}");
    let (_, sum) = api.call("GET", "/volumes/summary", &b, None);
    assert_eq!(sum["volume-summary"]["total_count"], 0, "{sum}");

    // No backups yet; another project cannot back this volume up (its
    // backups are tested in `backups_full_incremental_restore_compare_over_nbd`).
    let (st, bk) = api.call("GET", "/backups/detail", &a, None);
    assert_eq!((st, &bk["backups"]), (200, &json!([])), "{bk}");
    let (st, bk) = api.call(
        "POST",
        "/backups",
        &b,
        Some(json!({"backup": {"volume_id": vol}})),
    );
    assert_eq!(st, 404, "{bk}");

    // A snapshot, and a bigger volume from it.
    let (st, s) = api.call(
        "POST",
        "/snapshots",
        &a,
        Some(json!({"snapshot": {"volume_id": vol, "name": "s1"}})),
    );
    assert_eq!(st, 202, "{s}");
    let snap = s["snapshot"]["id"].as_str().unwrap().to_string();
    api.wait(&format!("/snapshots/{snap}"), "snapshot", &a, "available");
    let (st, v2) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"snapshot_id": snap, "size": 2}})),
    );
    assert_eq!(st, 202, "{v2}");
    let vol2 = v2["volume"]["id"].as_str().unwrap().to_string();
    let v2 = api.wait(&format!("/volumes/{vol2}"), "volume", &a, "available");
    assert_eq!(v2["size"], 2);
    assert!(read_nbd(&api, &a, &vol2, data.len(), work.path()) == data);
    // Extend.
    let (st, e) = api.call(
        "POST",
        &format!("/volumes/{vol2}/action"),
        &a,
        Some(json!({"os-extend": {"new_size": 3}})),
    );
    assert_eq!(st, 202, "{e}");
    let v2 = api.wait(&format!("/volumes/{vol2}"), "volume", &a, "available");
    assert_eq!(v2["size"], 3);

    // Project B sees none of it.
    for p in [
        format!("/volumes/{vol}"),
        format!("/snapshots/{snap}"),
        format!("/volumes/{vol2}"),
    ] {
        let (st, body) = api.call("GET", &p, &b, None);
        assert_eq!(st, 404, "{p}: {body}");
        let (st, _) = api.call("DELETE", &p, &b, None);
        assert_eq!(st, 404, "B deleted {p}");
    }
    let (_, l) = api.call("GET", "/volumes/detail", &b, None);
    assert_eq!(l["volumes"].as_array().unwrap().len(), 0, "{l}");
    let (_, l) = api.call("GET", "/volumes/detail", &a, None);
    assert_eq!(l["volumes"].as_array().unwrap().len(), 2, "{l}");

    // Bad input changes nothing.
    for (body, want) in [
        (json!({"volume": {"size": 0}}), 400),
        (json!({"volume": {"size": "x"}}), 400),
        (json!({"volume": {}}), 400),
        (json!({"nothing": {}}), 400),
        (json!({"volume": {"size": 2000}}), 413),
        (
            json!({"volume": {"size": 1, "imageRef": "00000000-0000-0000-0000-000000000000"}}),
            400,
        ),
        (json!({"volume": {"size": 1, "volume_type": "gold"}}), 404),
        (
            json!({"volume": {"size": 1, "availability_zone": "mars"}}),
            400,
        ),
    ] {
        let (st, e) = api.call("POST", "/volumes", &a, Some(body.clone()));
        assert_eq!(st, want, "{body}: {e}");
    }
    let (st, _) = api.call("DELETE", &format!("/volumes/{vol}"), &a, None);
    assert_eq!(st, 400, "a volume with snapshots was deleted");
    let (st, _) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        &a,
        Some(json!({"os-extend": {"new_size": 1}})),
    );
    assert_eq!(st, 400, "shrink accepted");
    let (_, l) = api.call("GET", "/volumes/detail", &a, None);
    assert_eq!(
        l["volumes"].as_array().unwrap().len(),
        2,
        "bad input made volumes: {l}"
    );

    // Restart: everything is there and still reads back.
    drop(api);
    let state = cloud.state_dir.clone();
    assert!(cloud.stop().success());
    let cloud = Cloud::start(&state, "vol-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let a = cloud
        .token("vol-a-user", "pw-pw-pw", Some("vol-a"))
        .unwrap();
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    assert_eq!(v["name"], "boot");
    assert!(
        read_nbd(&api, &a, &vol2, data.len(), work.path()) == data,
        "data lost across restart"
    );

    // Delete: snapshots first (or cascade), then volumes.
    let (st, _) = api.call("DELETE", &format!("/volumes/{vol}?cascade=true"), &a, None);
    assert_eq!(st, 202);
    let (st, _) = api.call("DELETE", &format!("/volumes/{vol2}"), &a, None);
    assert_eq!(st, 202);
    api.gone(&format!("/volumes/{vol}"), &a);
    api.gone(&format!("/volumes/{vol2}"), &a);
    api.gone(&format!("/snapshots/{snap}"), &a);
}

/// Work a controller left in flight when it died (a volume in `creating`,
/// another in `deleting`, naming a controller that no longer runs) is
/// carried on by the controller holding the `volume-tasks` duty: the one
/// is made on blockd and becomes available, the other is deleted.
#[test]
fn volume_work_a_dead_controller_left_is_carried_on() {
    let blockd = std::path::Path::new(common::ursa_bin()).with_file_name("ursa-blockd");
    if !blockd.exists() {
        eprintln!("SKIP volume task takeover: ursa-blockd is not built");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "task-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (st, v) = api.call(
        "POST",
        "/volumes",
        &admin,
        Some(json!({"volume": {"name": "kept", "size": 1}})),
    );
    assert_eq!(st, 202, "{v}");
    let kept = v["volume"]["id"].as_str().unwrap().to_string();
    api.wait(&format!("/volumes/{kept}"), "volume", &admin, "available");
    drop(api);
    assert!(cloud.stop().success());

    // What a controller that was killed mid-work leaves in the store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use ursa_core::store::Store;
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let doc = ursa_volume::record_table::get(
            &mut store.pool().acquire().await.unwrap(),
            "volume",
            &kept,
        )
        .await
        .unwrap()
        .unwrap();
        let mut left = doc.clone();
        let left_id = "0c0ffee0-0000-4000-8000-000000000001";
        left.insert("id".into(), json!(left_id));
        left.insert("name".into(), json!("left-creating"));
        left.insert("status".into(), json!("creating"));
        left.insert("ursa:task_by".into(), json!("999999-deadbeef"));
        let mut doomed = doc.clone();
        doomed.insert("status".into(), json!("deleting"));
        doomed.insert("ursa:task_by".into(), json!("999999-deadbeef"));
        let mut w = store.begin_write().await.unwrap();
        ursa_volume::record_table::put(&mut w, "volume", &left)
            .await
            .unwrap();
        ursa_volume::record_table::put(&mut w, "volume", &doomed)
            .await
            .unwrap();
        w.commit(&[]).await.unwrap();
        store.close().await;
    });

    let cloud = Cloud::start(dir.path(), "task-pw");
    let api = Api {
        cloud: &cloud,
        base: format!(
            "{base_of}/volume/v3",
            base_of = cloud.url.trim_end_matches("/v3")
        ),
    };
    let admin = cloud.admin_token();
    let v = api.wait(
        "/volumes/0c0ffee0-0000-4000-8000-000000000001",
        "volume",
        &admin,
        "available",
    );
    assert_eq!(v["name"], "left-creating");
    api.gone(&format!("/volumes/{kept}"), &admin);
    assert!(
        cloud
            .stderr()
            .contains("carrying on a volume task a stopped controller left"),
        "the takeover is logged"
    );
}

/// A volume's NBD URI (its export, made on first ask).
fn nbd_uri(api: &Api, token: &str, vol: &str) -> String {
    let (st, c) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        token,
        Some(json!({"os-initialize_connection": {"connector": {}}})),
    );
    assert_eq!(st, 200, "{c}");
    c["connection_info"]["data"]["uri"]
        .as_str()
        .unwrap()
        .to_string()
}

fn qemu(tool: &str, args: &[&str]) -> String {
    let o = Command::new(tool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Backups into object storage: a full backup of a 1 GiB volume with
/// 100 MiB written stores about 100 MiB; after 10 MiB more, an incremental
/// one stores about 10 MiB; each restores (to a new volume, and over an
/// existing one) to the bytes the volume had, compared over NBD; a backup
/// an incremental depends on cannot be deleted; another project sees none.
#[test]
fn backups_full_incremental_restore_compare_over_nbd() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP backup e2e: qemu-io/qemu-img (qemu-utils) are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "backup-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (a, a_project) = cloud.member_of(&admin, "bk-a");
    let (b, _) = cloud.member_of(&admin, "bk-b");
    let new_volume = |name: &str| {
        let (st, v) = api.call(
            "POST",
            "/volumes",
            &a,
            Some(json!({"volume": {"size": 1, "name": name}})),
        );
        assert_eq!(st, 202, "{v}");
        let id = v["volume"]["id"].as_str().unwrap().to_string();
        api.wait(&format!("/volumes/{id}"), "volume", &a, "available");
        id
    };
    let vol = new_volume("data");
    let uri = nbd_uri(&api, &a, &vol);
    // 100 MiB at the start (not a pattern a chunk could dedupe).
    let first: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let first_file = work.path().join("first.raw");
    std::fs::write(&first_file, &first).unwrap();
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            first_file.to_str().unwrap(),
            &uri,
        ],
    );
    let backup = |incremental: bool| {
        let (st, v) = api.call(
            "POST",
            "/backups",
            &a,
            Some(
                json!({"backup": {"volume_id": vol, "name": format!("bk-{incremental}"),
                                   "incremental": incremental, "force": true}}),
            ),
        );
        assert_eq!(st, 202, "{v}");
        let id = v["backup"]["id"].as_str().unwrap().to_string();
        (
            id.clone(),
            api.wait(&format!("/backups/{id}"), "backup", &a, "available"),
        )
    };
    let (full, fb) = backup(false);
    assert_eq!(fb["is_incremental"], false, "{fb}");
    assert_eq!(fb["size"], 1);
    // 1 MiB objects: 100 of data and the manifest.
    assert_eq!(fb["object_count"], 101, "{fb}");
    // 10 MiB more at 500 MiB; the incremental moves those only.
    qemu(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 500M 10M", &uri],
    );
    let (incr, ib) = backup(true);
    assert_eq!(ib["is_incremental"], true, "{ib}");
    assert_eq!(ib["object_count"], 11, "{ib}");
    // What object storage holds: 110 chunks of 1 MiB.
    assert_eq!(
        common::files_under(&dir.path().join("objects"), Some(1 << 20)),
        110
    );
    let (_, fb) = api.call("GET", &format!("/backups/{full}"), &a, None);
    assert_eq!(fb["backup"]["has_dependent_backups"], true, "{fb}");
    let (_, list) = api.call("GET", "/backups/detail", &a, None);
    assert_eq!(list["backups"].as_array().unwrap().len(), 2, "{list}");
    // Backups count against backup_gigabytes: 2 GiB kept, a quota of 2.
    let (st, q) = api.call(
        "PUT",
        &format!("/os-quota-sets/{a_project}"),
        &admin,
        Some(json!({"quota_set": {"backup_gigabytes": 2}})),
    );
    assert_eq!(st, 200, "{q}");
    let (st, e) = api.call(
        "POST",
        "/backups",
        &a,
        Some(json!({"backup": {"volume_id": vol, "name": "over", "force": true}})),
    );
    assert_eq!(st, 413, "{e}");
    let (st, _) = api.call(
        "PUT",
        &format!("/os-quota-sets/{a_project}"),
        &admin,
        Some(json!({"quota_set": {"backup_gigabytes": -1}})),
    );
    assert_eq!(st, 200);

    // The full backup onto a new volume: the first 100 MiB, zeros after.
    let (st, r) = api.call(
        "POST",
        &format!("/backups/{full}/restore"),
        &a,
        Some(json!({"restore": {"name": "from-full"}})),
    );
    assert_eq!(st, 202, "{r}");
    let restored = r["restore"]["volume_id"].as_str().unwrap().to_string();
    assert_eq!(r["restore"]["volume_name"], "from-full");
    api.wait(&format!("/volumes/{restored}"), "volume", &a, "available");
    api.wait(&format!("/backups/{full}"), "backup", &a, "available");
    let restored_uri = nbd_uri(&api, &a, &restored);
    qemu(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            first_file.to_str().unwrap(),
            &restored_uri,
        ],
    );
    // The incremental over an existing volume that had other bytes: the
    // volume as it is now, byte for byte (its old bytes zeroed).
    let target = new_volume("target");
    let target_uri = nbd_uri(&api, &a, &target);
    qemu(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xff 800M 1M", &target_uri],
    );
    let (st, r) = api.call(
        "POST",
        &format!("/backups/{incr}/restore"),
        &a,
        Some(json!({"restore": {"volume_id": target}})),
    );
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["restore"]["volume_id"], target.as_str());
    api.wait(&format!("/volumes/{target}"), "volume", &a, "available");
    api.wait(&format!("/backups/{incr}"), "backup", &a, "available");
    qemu(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &uri, &target_uri],
    );

    // Another project sees none of it; bad input is refused.
    let (st, _) = api.call("GET", &format!("/backups/{full}"), &b, None);
    assert_eq!(st, 404);
    let (_, lb) = api.call("GET", "/backups", &b, None);
    assert_eq!(lb["backups"].as_array().map(Vec::len), Some(0), "{lb}");
    let (st, _) = api.call(
        "POST",
        "/backups",
        &b,
        Some(json!({"backup": {"volume_id": vol}})),
    );
    assert_eq!(st, 404, "another project's volume");
    let (st, _) = api.call(
        "POST",
        "/backups",
        &a,
        Some(json!({"backup": {"volume_id": vol, "bogus": 1}})),
    );
    assert_eq!(st, 400);
    let (st, _) = api.call(
        "POST",
        &format!("/backups/{full}/restore"),
        &a,
        Some(json!({"restore": {"volume_id": restored, "extra": true}})),
    );
    assert_eq!(st, 400);

    // The full one has a dependent: it stays until the incremental goes.
    let (st, v) = api.call("DELETE", &format!("/backups/{full}"), &a, None);
    assert_eq!(st, 400, "{v}");
    let (st, _) = api.call("DELETE", &format!("/backups/{incr}"), &a, None);
    assert_eq!(st, 202);
    api.gone(&format!("/backups/{incr}"), &a);
    let (st, _) = api.call("DELETE", &format!("/backups/{full}"), &a, None);
    assert_eq!(st, 202);
    api.gone(&format!("/backups/{full}"), &a);
    // Their objects went with them.
    assert_eq!(
        common::files_under(&dir.path().join("objects"), Some(1 << 20)),
        0
    );
}

/// Cinder's attachments API (3.27/3.44/3.54) as Nova drives it: reserve
/// (the volume `reserved`, not yet listed on it), connect with a connector
/// (an NBD export whose bytes read back what was written), complete (the
/// volume `in-use`, the attachment on it), delete (available again, the
/// export gone); another project sees none of it; bad input gets 400.
#[test]
fn attachments_reserve_connect_complete_delete() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP attachments e2e: qemu-io/qemu-img (qemu-utils) are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "attach-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (a, _) = cloud.member_of(&admin, "at-a");
    let (b, _) = cloud.member_of(&admin, "at-b");
    let (st, v) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"size": 1, "name": "att"}})),
    );
    assert_eq!(st, 202, "{v}");
    let vol = v["volume"]["id"].as_str().unwrap().to_string();
    api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    let server = "5f1c1f0e-6f7e-4d3a-9a53-0c1d2e3f4a5b";

    // Bad input first: each a 400, nothing reserved.
    for body in [
        json!({"attachment": {"volume_uuid": vol}}),
        json!({"attachment": {"instance_uuid": server}}),
        json!({"attachment": {"volume_uuid": vol, "instance_uuid": server, "bogus": 1}}),
        json!({"attachment": {"volume_uuid": vol, "instance_uuid": server, "mode": "rx"}}),
    ] {
        let (st, e) = api.call("POST", "/attachments", &a, Some(body.clone()));
        assert_eq!(st, 400, "{body} → {e}");
    }
    // Another project cannot reserve it.
    let (st, _) = api.call(
        "POST",
        "/attachments",
        &b,
        Some(json!({"attachment": {"volume_uuid": vol, "instance_uuid": server}})),
    );
    assert_eq!(st, 404);

    // 1. Reserve.
    let (st, r) = api.call(
        "POST",
        "/attachments",
        &a,
        Some(json!({"attachment": {"volume_uuid": vol, "instance_uuid": server}})),
    );
    assert_eq!(st, 200, "{r}");
    let att = r["attachment"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["attachment"]["status"], "reserved", "{r}");
    assert_eq!(r["attachment"]["instance"], server);
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "reserved");
    assert_eq!(
        v["attachments"],
        json!([]),
        "a reservation is not listed: {v}"
    );
    // Not multiattach: a second reservation is refused.
    let (st, e) = api.call(
        "POST",
        "/attachments",
        &a,
        Some(json!({"attachment": {"volume_uuid": vol, "instance_uuid": "other"}})),
    );
    assert_eq!(st, 400, "{e}");
    assert_eq!(
        api.call("GET", &format!("/attachments/{att}"), &b, None).0,
        404
    );
    // Below 3.27 there is no attachments API.
    let (st, _) = {
        let r = cloud
            .http()
            .get(format!("{}/attachments", api.base))
            .header("X-Auth-Token", &a)
            .header("OpenStack-API-Version", "volume 3.26")
            .send()
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(st, 404);

    // 2. Connect: an export whose bytes are the volume's.
    let (st, e) = api.call(
        "PUT",
        &format!("/attachments/{att}"),
        &a,
        Some(json!({"attachment": {}})),
    );
    assert_eq!(st, 400, "a connector is required: {e}");
    let (st, r) = api.call(
        "PUT",
        &format!("/attachments/{att}"),
        &a,
        Some(json!({"attachment": {"connector": {"host": "h1", "mountpoint": "/dev/vdc"}}})),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["attachment"]["status"], "attaching", "{r}");
    let ci = &r["attachment"]["connection_info"];
    assert_eq!(ci["driver_volume_type"], "nbd", "{r}");
    let uri = ci["data"]["uri"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let src = work.path().join("data.raw");
    std::fs::write(&src, &data).unwrap();
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    let back = work.path().join("back.raw");
    qemu(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            back.to_str().unwrap(),
        ],
    );
    let mut got = std::fs::read(&back).unwrap();
    got.truncate(data.len());
    assert!(got == data, "the bytes read back differ from those written");

    // 3. Complete: in use, and listed on the volume.
    let (st, e) = api.call(
        "POST",
        &format!("/attachments/{att}/action"),
        &a,
        Some(json!({"os-complete": null})),
    );
    assert_eq!(st, 204, "{e}");
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "in-use");
    assert_eq!(v["attachments"][0]["attachment_id"], att.as_str(), "{v}");
    assert_eq!(v["attachments"][0]["server_id"], server);
    assert_eq!(v["attachments"][0]["device"], "/dev/vdc");
    assert_eq!(v["attachments"][0]["host_name"], "h1");
    let (st, l) = api.call("GET", &format!("/attachments?volume_id={vol}"), &a, None);
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["attachments"].as_array().unwrap().len(), 1, "{l}");
    assert_eq!(l["attachments"][0]["status"], "attached");
    let (_, d) = api.call("GET", "/attachments/detail", &a, None);
    assert_eq!(d["attachments"][0]["attach_mode"], "rw", "{d}");
    let (_, none) = api.call("GET", "/attachments", &b, None);
    assert_eq!(none["attachments"], json!([]), "{none}");
    let (st, _) = api.call("DELETE", &format!("/volumes/{vol}"), &a, None);
    assert_eq!(st, 400, "an attached volume is not deleted");

    // 4. Delete: available again, no attachment left.
    let (st, e) = api.call("DELETE", &format!("/attachments/{att}"), &a, None);
    assert_eq!(st, 200, "{e}");
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    assert_eq!(v["attachments"], json!([]));
    assert_eq!(
        api.call("GET", &format!("/attachments/{att}"), &a, None).0,
        404
    );
    let (_, l) = api.call("GET", "/attachments", &a, None);
    assert_eq!(l["attachments"], json!([]), "{l}");
}

/// A volume into an image (`os-volume_upload_image`): the image's bytes
/// are the volume's; the volume is available again afterwards. Then the
/// readonly flag shows in its metadata, and a retype changes its type.
#[test]
fn volume_upload_to_image_readonly_retype_and_reimage() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP upload e2e: qemu-io/qemu-img (qemu-utils) are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "upload-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (a, _) = cloud.member_of(&admin, "up-a");
    let (st, v) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"size": 1, "name": "up"}})),
    );
    assert_eq!(st, 202, "{v}");
    let vol = v["volume"]["id"].as_str().unwrap().to_string();
    api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    let uri = nbd_uri(&api, &a, &vol);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 + 5) as u8).collect();
    let src = work.path().join("data.raw");
    std::fs::write(&src, &data).unwrap();
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    let (st, e) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        &a,
        Some(json!({"os-volume_upload_image": {"image_name": "from-vol", "disk_format": "bogus"}})),
    );
    assert_eq!(st, 400, "{e}");
    let (st, r) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        &a,
        // qcow2: only the written MiB is stored (a raw image would be the
        // whole GiB).
        Some(json!({"os-volume_upload_image": {"image_name": "from-vol", "disk_format": "qcow2"}})),
    );
    assert_eq!(st, 202, "{r}");
    let image = r["os-volume_upload_image"]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    let img = loop {
        let i: Value = cloud
            .http()
            .get(format!("{base}/image/v2/images/{image}"))
            .header("X-Auth-Token", &a)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if i["status"] == "active" {
            break i;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{i}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(img["name"], "from-vol");
    assert_eq!(img["disk_format"], "qcow2");
    let bytes = cloud
        .http()
        .get(format!("{base}/image/v2/images/{image}/file"))
        .header("X-Auth-Token", &a)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let (q, raw) = (work.path().join("img.qcow2"), work.path().join("img.raw"));
    std::fs::write(&q, &bytes).unwrap();
    qemu(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            q.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let mut got = std::fs::read(&raw).unwrap();
    assert_eq!(got.len(), 1 << 30, "the image is the volume's size");
    got.truncate(data.len());
    assert!(got == data, "the image is not the volume's bytes");
    api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");

    for ro in [true, false] {
        let (st, e) = api.call(
            "POST",
            &format!("/volumes/{vol}/action"),
            &a,
            Some(json!({"os-update_readonly_flag": {"readonly": ro}})),
        );
        assert_eq!(st, 202, "{e}");
        let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
        assert_eq!(v["metadata"]["readonly"], if ro { "True" } else { "False" });
    }

    let (st, t) = api.call(
        "POST",
        "/types",
        &admin,
        Some(json!({"volume_type": {"name": "gold"}})),
    );
    assert_eq!(st, 200, "{t}");
    let (st, e) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        &a,
        Some(json!({"os-retype": {"new_type": "gold", "migration_policy": "never"}})),
    );
    assert_eq!(st, 202, "{e}");
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    assert_eq!(v["volume_type"], "gold");
    let (st, _) = api.call(
        "POST",
        &format!("/volumes/{vol}/action"),
        &a,
        Some(json!({"os-retype": {"new_type": "no-such-type"}})),
    );
    assert_eq!(st, 404);

    // Re-imaged (3.68) with another image: the volume holds its bytes and
    // names it. Another project's private image is refused, and so is the
    // action below 3.68.
    let upload = |token: &str, name: &str, bytes: Vec<u8>| {
        let meta = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
        upload_image(&cloud, token, meta, bytes)
    };
    let data2: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let img2 = upload(&a, "reimage-src", data2.clone());
    let (b, _) = cloud.member_of(&admin, "up-b");
    let theirs = upload(&b, "not-yours", vec![1u8; 4096]);
    let reimage = |version: &str, image: &str| {
        api.call_at(
            version,
            "POST",
            &format!("/volumes/{vol}/action"),
            &a,
            Some(json!({"os-reimage": {"image_id": image, "reimage_reserved": false}})),
        )
    };
    assert_eq!(reimage("3.67", &img2).0, 404);
    let (st, e) = reimage("3.68", &theirs);
    assert_eq!(st, 400, "{e}");
    let (st, e) = reimage("3.68", &img2);
    assert_eq!(st, 202, "{e}");
    let v = api.wait(&format!("/volumes/{vol}"), "volume", &a, "available");
    assert_eq!(v["volume_image_metadata"]["image_id"], img2.as_str(), "{v}");
    assert_eq!(v["bootable"], "true", "{v}");
    assert!(
        read_nbd(&api, &a, &vol, data2.len(), work.path()) == data2,
        "the re-imaged volume lacks the new image's bytes"
    );
}

/// Volume transfers, private volume types and generic volume groups:
/// a transfer moves a volume to the project that accepts it with its key
/// (not with another); a private type is usable only by the projects
/// given it; a group snapshot of a group's volume makes a new group whose
/// clone reads back the bytes written, and deleting a group with
/// `delete-volumes` removes its volumes.
#[test]
fn transfers_private_types_and_groups() {
    if Command::new("qemu-io").arg("--version").output().is_err() {
        eprintln!("SKIP groups e2e: qemu-io/qemu-img (qemu-utils) are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "groups-pw");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let api = Api {
        cloud: &cloud,
        base: format!("{base}/volume/v3"),
    };
    let admin = cloud.admin_token();
    let (a, pa) = cloud.member_of(&admin, "gr-a");
    let (b, _) = cloud.member_of(&admin, "gr-b");
    let volume = |tok: &str, body: Value| {
        let (st, v) = api.call("POST", "/volumes", tok, Some(json!({ "volume": body })));
        assert_eq!(st, 202, "{v}");
        let id = v["volume"]["id"].as_str().unwrap().to_string();
        api.wait(&format!("/volumes/{id}"), "volume", tok, "available");
        id
    };

    // Transfers.
    let vol = volume(&a, json!({"size": 1, "name": "moving"}));
    let (st, t) = api.call(
        "POST",
        "/volume-transfers",
        &a,
        Some(json!({"transfer": {"volume_id": vol, "name": "tr"}})),
    );
    assert_eq!(st, 202, "{t}");
    let (tid, key) = (
        t["transfer"]["id"].as_str().unwrap().to_string(),
        t["transfer"]["auth_key"].as_str().unwrap().to_string(),
    );
    api.wait(
        &format!("/volumes/{vol}"),
        "volume",
        &a,
        "awaiting-transfer",
    );
    let (st, e) = api.call(
        "POST",
        &format!("/volume-transfers/{tid}/accept"),
        &b,
        Some(json!({"accept": {"auth_key": "0000000000000000"}})),
    );
    assert_eq!(st, 400, "a wrong key is refused: {e}");
    let (st, e) = api.call(
        "POST",
        &format!("/volume-transfers/{tid}/accept"),
        &b,
        Some(json!({"accept": {"auth_key": key}})),
    );
    assert_eq!(st, 202, "{e}");
    api.wait(&format!("/volumes/{vol}"), "volume", &b, "available");
    assert_eq!(api.call("GET", &format!("/volumes/{vol}"), &a, None).0, 404);
    assert_eq!(
        api.call("GET", &format!("/volume-transfers/{tid}"), &a, None)
            .0,
        404
    );

    // A private type: only for projects given it.
    let (st, t) = api.call(
        "POST",
        "/types",
        &admin,
        Some(json!({"volume_type": {"name": "private-gold", "os-volume-type-access:is_public": false}})),
    );
    assert_eq!(st, 200, "{t}");
    let ptype = t["volume_type"]["id"].as_str().unwrap().to_string();
    let (st, _) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"size": 1, "volume_type": "private-gold"}})),
    );
    assert_eq!(st, 404, "a private type is not a's yet");
    let (st, e) = api.call(
        "POST",
        &format!("/types/{ptype}/action"),
        &admin,
        Some(json!({"addProjectAccess": {"project": pa}})),
    );
    assert_eq!(st, 202, "{e}");
    let (_, acc) = api.call(
        "GET",
        &format!("/types/{ptype}/os-volume-type-access"),
        &admin,
        None,
    );
    assert_eq!(
        acc["volume_type_access"][0]["project_id"],
        pa.as_str(),
        "{acc}"
    );
    let listed = |tok: &str| {
        let (_, l) = api.call("GET", "/types", tok, None);
        l["volume_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ptype.as_str())
    };
    assert!(listed(&a) && !listed(&b));

    // A default type for project a (3.62): its volumes made without a
    // type get it, and /types/default shows it to a.
    let at = |method: &str, path: &str, tok: &str, v: &str, body: Option<Value>| {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = cloud
            .http()
            .request(m, format!("{}{path}", api.base))
            .header("X-Auth-Token", tok)
            .header("OpenStack-API-Version", format!("volume {v}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (st, d) = at(
        "PUT",
        &format!("/default-types/{pa}"),
        &admin,
        "3.62",
        Some(json!({"default_type": {"volume_type": "private-gold"}})),
    );
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["default_type"]["volume_type_id"], ptype.as_str());
    let (st, _) = at(
        "PUT",
        &format!("/default-types/{pa}"),
        &a,
        "3.62",
        Some(json!({"default_type": {"volume_type": "private-gold"}})),
    );
    assert_eq!(st, 403, "only admins set defaults");
    let (_, t) = at("GET", "/types/default", &a, "3.62", None);
    assert_eq!(t["volume_type"]["name"], "private-gold", "{t}");
    let typed = volume(&a, json!({"size": 1}));
    let (_, v) = api.call("GET", &format!("/volumes/{typed}"), &a, None);
    assert_eq!(v["volume"]["volume_type"], "private-gold", "{v}");
    let (st, _) = at(
        "DELETE",
        &format!("/default-types/{pa}"),
        &admin,
        "3.62",
        None,
    );
    assert_eq!(st, 204);
    let (st, _) = at("GET", &format!("/default-types/{pa}"), &admin, "3.62", None);
    assert_eq!(st, 404);
    let (st, f) = at("GET", "/resource_filters?resource=volume", &a, "3.33", None);
    assert_eq!(st, 200, "{f}");
    assert!(f["resource_filters"][0]["filters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "status"));
    let (st, _) = api.call("DELETE", &format!("/volumes/{typed}"), &a, None);
    assert_eq!(st, 202);
    api.gone(&format!("/volumes/{typed}"), &a);

    // Groups: a group of one volume, snapshotted, and a group made from
    // that snapshot whose volume reads back the same bytes.
    let (st, gt) = api.call(
        "POST",
        "/group_types",
        &admin,
        Some(json!({"group_type": {"name": "gt1"}})),
    );
    assert_eq!(st, 202, "{gt}");
    let (st, g) = api.call(
        "POST",
        "/groups",
        &a,
        Some(
            json!({"group": {"name": "g1", "group_type": "gt1", "volume_types": ["private-gold"]}}),
        ),
    );
    assert_eq!(st, 202, "{g}");
    let gid = g["group"]["id"].as_str().unwrap().to_string();
    let member = volume(
        &a,
        json!({"size": 1, "volume_type": "private-gold", "group_id": gid}),
    );
    let (_, v) = api.call("GET", &format!("/volumes/{member}"), &a, None);
    assert_eq!(v["volume"]["group_id"], gid.as_str());
    let (st, _) = api.call(
        "POST",
        "/volumes",
        &a,
        Some(json!({"volume": {"size": 1, "group_id": gid}})),
    );
    assert_eq!(st, 400, "the default type is not one of the group's");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 + 7) as u8).collect();
    let src = work.path().join("data.raw");
    std::fs::write(&src, &data).unwrap();
    let uri = nbd_uri(&api, &a, &member);
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    let (st, gs) = api.call(
        "POST",
        "/group_snapshots",
        &a,
        Some(json!({"group_snapshot": {"group_id": gid, "name": "gs1"}})),
    );
    assert_eq!(st, 202, "{gs}");
    let gsid = gs["group_snapshot"]["id"].as_str().unwrap().to_string();
    api.wait(
        &format!("/group_snapshots/{gsid}"),
        "group_snapshot",
        &a,
        "available",
    );
    let (st, g2) = api.call(
        "POST",
        "/groups/action",
        &a,
        Some(json!({"create-from-src": {"name": "g2", "group_snapshot_id": gsid}})),
    );
    assert_eq!(st, 202, "{g2}");
    let g2id = g2["group"]["id"].as_str().unwrap().to_string();
    let g2 = api.wait(&format!("/groups/{g2id}"), "group", &a, "available");
    let clone = g2["volumes"][0]
        .as_str()
        .expect("a volume in the new group")
        .to_string();
    api.wait(&format!("/volumes/{clone}"), "volume", &a, "available");
    assert!(read_nbd(&api, &a, &clone, data.len(), work.path()) == data);
    // b sees none of it.
    assert_eq!(api.call("GET", &format!("/groups/{gid}"), &b, None).0, 404);
    // A group with volumes goes only with delete-volumes, after its
    // snapshots.
    let (st, e) = api.call(
        "POST",
        &format!("/groups/{gid}/action"),
        &a,
        Some(json!({"delete": {"delete-volumes": true}})),
    );
    assert_eq!(st, 400, "gs1 is still a snapshot of it: {e}");
    let (st, _) = api.call(
        "POST",
        &format!("/groups/{g2id}/action"),
        &a,
        Some(json!({"delete": {"delete-volumes": false}})),
    );
    assert_eq!(st, 400);
    let (st, e) = api.call(
        "POST",
        &format!("/groups/{g2id}/action"),
        &a,
        Some(json!({"delete": {"delete-volumes": true}})),
    );
    assert_eq!(st, 202, "{e}");
    api.gone(&format!("/volumes/{clone}"), &a);
    assert_eq!(api.call("GET", &format!("/groups/{g2id}"), &a, None).0, 404);
    let (st, _) = api.call("DELETE", &format!("/group_snapshots/{gsid}"), &a, None);
    assert_eq!(st, 202);
    api.gone(&format!("/group_snapshots/{gsid}"), &a);
}
