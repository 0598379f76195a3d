//! The compute API (Nova v2.1) end to end with real guests: `ursa up` with
//! its own netd and compute agent, all inside a network namespace made for
//! the test (bridges, taps, nftables tables and guests stay in it), boots
//! the tiny guest (images/tiny/build.sh: a Debian kernel and busybox on a
//! syslinux disk) under QEMU TCG. The guest takes its address from netd by
//! DHCP and prints it on the serial console, which the API returns; the
//! agent re-adopts the running guest after `ursa up` is killed; a guest
//! that cannot start leaves the server in ERROR with a fault and nothing
//! behind; deleting a server removes its QEMU, tap, port and disk.

mod common;
mod netlab;

use common::{guests_under, link_exists, tiny_guest_missing, Cloud, Netns};
use netlab::{ok, Lab};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

struct Api<'a>(&'a Cloud);

impl Api<'_> {
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.0.service_call(method, path, token, body)
    }

    fn upload_image(&self, token: &str, name: &str, fmt: &str, file: &Path) -> String {
        let (st, img) = self.call(
            "POST",
            "/image/v2/images",
            token,
            Some(json!({"name": name, "disk_format": fmt, "container_format": "bare", "visibility": "public"})),
        );
        assert_eq!(st, 201, "{img}");
        let id = img["id"].as_str().unwrap().to_string();
        let base = self.0.url.trim_end_matches("/v3");
        let r = self
            .0
            .http()
            .put(format!("{base}/image/v2/images/{id}/file"))
            .header("X-Auth-Token", token)
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(file).unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        id
    }

    /// A compute call at microversion `mv`.
    fn call_mv(
        &self,
        mv: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let base = self.0.url.trim_end_matches("/v3");
        let r = self
            .0
            .http()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{path}"),
            )
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", format!("compute {mv}"))
            .json(&body)
            .send()
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }

    fn server_status(&self, token: &str, id: &str) -> (u16, Value) {
        let (st, v) = self.call("GET", &format!("/compute/v2.1/servers/{id}"), token, None);
        (st, v["server"].clone())
    }

    fn wait_status(&self, token: &str, id: &str, want: &[&str], within: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let (_, s) = self.server_status(token, id);
            if want.iter().any(|w| s["status"] == *w) {
                return s;
            }
            assert!(
                t0.elapsed() < within,
                "server {id} never became {want:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn wait_volume(&self, token: &str, id: &str, want: &str) {
        let t0 = Instant::now();
        loop {
            let (_, v) = self.call("GET", &format!("/volume/v3/volumes/{id}"), token, None);
            if v["volume"]["status"] == want {
                return;
            }
            // A detach waits for the guest to let the disk go: a TCG guest
            // on a busy machine may take a while (compute asks for 120 s).
            assert!(
                t0.elapsed() < Duration::from_secs(150),
                "volume {id} never became {want}: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_console(&self, token: &str, id: &str, want: &str) {
        let t0 = Instant::now();
        loop {
            let out = self.console(token, id);
            if out.contains(want) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{id}'s console never said {want:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn console(&self, token: &str, id: &str) -> String {
        let (_, v) = self.call(
            "POST",
            &format!("/compute/v2.1/servers/{id}/action"),
            token,
            Some(json!({"os-getConsoleOutput": {"length": null}})),
        );
        v["output"].as_str().unwrap_or("").to_string()
    }
}

#[test]
fn servers_boot_real_guests_that_take_their_address_from_netd() {
    if let Some(why) = tiny_guest_missing() {
        eprintln!("SKIP compute e2e: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiny_disk = common::build_tiny(&dir.path().join("tiny"));
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("ucmp{}", std::process::id() % 100000), &state);
    // No external network: nothing outside the namespace.
    let args = ["--physical-network=ext"];
    let cloud = Cloud::start_with_nodes(&state, "secret", &args);
    let admin = cloud.admin_token();
    let api = Api(&cloud);

    let tiny = api.upload_image(&admin, "tiny", "raw", &tiny_disk);
    let (st, net) = api.call(
        "POST",
        "/network/v2.0/networks",
        &admin,
        Some(json!({"network": {"name": "cn"}})),
    );
    assert_eq!(st, 201, "{net}");
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    let (st, _) = api.call(
        "POST",
        "/network/v2.0/subnets",
        &admin,
        Some(json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.78.0.0/24"}})),
    );
    assert_eq!(st, 201);

    // Bad input: OpenStack-shaped 400s, and no server appears.
    let good =
        json!({"name": "vm1", "imageRef": tiny, "flavorRef": "1", "networks": [{"uuid": net_id}]});
    for (field, bad) in [
        ("flavorRef", json!("no-such-flavor")),
        ("imageRef", json!(uuid::Uuid::new_v4().to_string())),
        (
            "networks",
            json!([{"uuid": uuid::Uuid::new_v4().to_string()}]),
        ),
        ("name", json!("")),
    ] {
        let mut b = good.clone();
        b[field] = bad;
        let (st, v) = api.call(
            "POST",
            "/compute/v2.1/servers",
            &admin,
            Some(json!({"server": b})),
        );
        assert_eq!(st, 400, "bad {field}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (_, list) = api.call("GET", "/compute/v2.1/servers", &admin, None);
    assert_eq!(list["servers"], json!([]));

    // A real boot.
    let (st, created) = api.call(
        "POST",
        "/compute/v2.1/servers",
        &admin,
        Some(json!({"server": good})),
    );
    assert_eq!(st, 202, "{created}");
    let id = created["server"]["id"].as_str().unwrap().to_string();
    let srv = api.wait_status(&admin, &id, &["ACTIVE", "ERROR"], Duration::from_secs(90));
    assert_eq!(
        srv["status"],
        "ACTIVE",
        "{srv}\nnetd log:\n{}",
        std::fs::read_to_string(state.join("netd/netd.log")).unwrap_or_default()
    );
    let ip = srv["addresses"]["cn"][0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.78.0."), "{srv}");
    let t0 = Instant::now();
    loop {
        let out = api.console(&admin, &id);
        // The guest read its name through netd's metadata proxy.
        if out.contains(&format!("URSA-TINY: address {ip}"))
            && out.contains("URSA-TINY: metadata hostname vm1")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the guest never said it holds {ip}; console:\n{out}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let (_, ports) = api.call(
        "GET",
        &format!("/network/v2.0/ports?device_id={id}"),
        &admin,
        None,
    );
    let port_id = ports["ports"][0]["id"].as_str().unwrap().to_string();
    let tap = ursa_proto::netd::tap_device(&port_id);
    assert!(link_exists(&tap), "no tap {tap}");
    assert_eq!(guests_under(&state).len(), 1, "one QEMU runs the guest");

    // A volume goes from one guest to another with its data: vm1 marks
    // the blank disk with its name, vm2 reads the mark.
    // vm2 boots from a volume made from the image (blockd serves it over
    // vhost-user-blk), which goes when the server goes.
    let mut b2 = good.clone();
    b2["name"] = json!("vm2");
    b2["imageRef"] = json!("");
    // It reads its root disk every 2 s (past the page cache), so the test
    // sees the disk answer, also after blockd restarts under it.
    b2["user_data"] = json!(b64(
        "#!/bin/sh\nwhile true; do dd if=/dev/vda of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null \
         && echo URSA-TINY: root read ok; sleep 2; done\n"
    ));
    for bad in [
        json!([{"boot_index": 0, "source_type": "image", "destination_type": "volume", "uuid": tiny}]),
        json!([{"boot_index": 0, "source_type": "snapshot", "destination_type": "volume", "uuid": tiny, "volume_size": 1}]),
        json!([{"boot_index": 0, "source_type": "volume", "destination_type": "volume", "uuid": uuid::Uuid::new_v4().to_string()}]),
    ] {
        let mut b = b2.clone();
        b["block_device_mapping_v2"] = bad.clone();
        let (st, v) = api.call(
            "POST",
            "/compute/v2.1/servers",
            &admin,
            Some(json!({"server": b})),
        );
        assert_eq!(st, 400, "{bad}: {v}");
    }
    b2["block_device_mapping_v2"] = json!([{"boot_index": 0, "source_type": "image",
        "destination_type": "volume", "uuid": tiny, "volume_size": 1,
        "delete_on_termination": true}]);
    // Deleted while its root volume is being made: the volume goes too.
    let mut gone = b2.clone();
    gone["name"] = json!("vm-gone");
    let (st, created) = api.call(
        "POST",
        "/compute/v2.1/servers",
        &admin,
        Some(json!({"server": gone})),
    );
    assert_eq!(st, 202, "{created}");
    let gone_id = created["server"]["id"].as_str().unwrap().to_string();
    let (st, _) = api.call(
        "DELETE",
        &format!("/compute/v2.1/servers/{gone_id}"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let t0 = Instant::now();
    loop {
        let (_, vols) = api.call("GET", "/volume/v3/volumes", &admin, None);
        if api.server_status(&admin, &gone_id).0 == 404 && vols["volumes"] == json!([]) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "a server deleted while being built left {vols}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (st, created) = api.call(
        "POST",
        "/compute/v2.1/servers",
        &admin,
        Some(json!({"server": b2})),
    );
    assert_eq!(st, 202, "{created}");
    let id2 = created["server"]["id"].as_str().unwrap().to_string();
    let srv2 = api.wait_status(&admin, &id2, &["ACTIVE", "ERROR"], Duration::from_secs(180));
    assert_eq!(srv2["status"], "ACTIVE", "{srv2}");
    assert_eq!(
        srv2["image"], "",
        "a volume-backed server has no image: {srv2}"
    );
    let root_vol = srv2["os-extended-volumes:volumes_attached"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("vm2 lists its root volume: {srv2}"))
        .to_string();
    let (_, rv) = api.call(
        "GET",
        &format!("/volume/v3/volumes/{root_vol}"),
        &admin,
        None,
    );
    assert_eq!(rv["volume"]["status"], "in-use", "{rv}");
    assert_eq!(rv["volume"]["bootable"], "true", "{rv}");
    assert_eq!(rv["volume"]["attachments"][0]["device"], "/dev/vda", "{rv}");
    assert_eq!(
        rv["volume"]["attachments"][0]["server_id"],
        id2.as_str(),
        "{rv}"
    );
    let (st, v) = api.call(
        "DELETE",
        &format!("/compute/v2.1/servers/{id2}/os-volume_attachments/{root_vol}"),
        &admin,
        None,
    );
    assert_eq!(st, 400, "the root volume stays: {v}");
    let (st, vol) = api.call(
        "POST",
        "/volume/v3/volumes",
        &admin,
        Some(json!({"volume": {"size": 1, "name": "shared"}})),
    );
    assert_eq!(st, 202, "{vol}");
    let vol_id = vol["volume"]["id"].as_str().unwrap().to_string();
    api.wait_volume(&admin, &vol_id, "available");
    api.wait_console(&admin, &id2, "URSA-TINY: ready");
    for (server, want) in [
        (&id, "URSA-TINY: disk vdb marked by vm1"),
        (&id2, "URSA-TINY: disk vdb holds URSA-TINY-MARK by vm1"),
    ] {
        let (st, a) = api.call(
            "POST",
            &format!("/compute/v2.1/servers/{server}/os-volume_attachments"),
            &admin,
            Some(json!({"volumeAttachment": {"volumeId": vol_id}})),
        );
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["volumeAttachment"]["device"], "/dev/vdb");
        api.wait_volume(&admin, &vol_id, "in-use");
        api.wait_console(&admin, server, want);
        let (st, _) = api.call(
            "DELETE",
            &format!("/compute/v2.1/servers/{server}/os-volume_attachments/{vol_id}"),
            &admin,
            None,
        );
        assert_eq!(st, 202);
        api.wait_volume(&admin, &vol_id, "available");
    }
    let qemu = guests_under(&state);
    assert_eq!(qemu.len(), 2, "two QEMUs run the guests");

    // Another project sees nothing of it.
    let (b, _) = cloud.member_of(&admin, "cmp-b");
    let (st, _) = api.call("GET", &format!("/compute/v2.1/servers/{id}"), &b, None);
    assert_eq!(st, 404);
    let (_, list) = api.call("GET", "/compute/v2.1/servers", &b, None);
    assert_eq!(list["servers"], json!([]));

    // Kill the control plane (and with it netd); the guest keeps running
    // and the new process adopts it.
    api.wait_console(&admin, &id2, "URSA-TINY: root read ok");
    drop(cloud);
    let cloud = Cloud::start_with_nodes(&state, "secret", &args);
    let admin = cloud.admin_token();
    let api = Api(&cloud);
    let (_, srv) = api.server_status(&admin, &id);
    assert_eq!(srv["status"], "ACTIVE", "{srv}");
    assert_eq!(
        guests_under(&state),
        qemu,
        "the same QEMU still runs the guest"
    );
    // blockd went down with the control plane and came back: vm2's QEMU
    // reconnects to it, and the guest reads its root disk again.
    let reads = |api: &Api| api.console(&admin, &id2).matches("root read ok").count();
    let before = reads(&api);
    let t0 = Instant::now();
    while reads(&api) < before + 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "vm2 no longer reads its root volume after blockd restarted:\n{}",
            api.console(&admin, &id2)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Rebuilt with another image: below 2.93 refused (a volume-backed
    // server keeps the image its root volume has); from 2.93 the root
    // volume is re-imaged, stays attached, and the guest boots from it.
    let tiny2 = api.upload_image(&admin, "tiny-2", "raw", &tiny_disk);
    let rebuild = |mv: &str| {
        api.call_mv(
            mv,
            "POST",
            &format!("/compute/v2.1/servers/{id2}/action"),
            &admin,
            json!({"rebuild": {"imageRef": tiny2, "name": "vm2-rebuilt"}}),
        )
    };
    let (st, e) = rebuild("2.92");
    assert_eq!(st, 400, "{e}");
    let (st, r) = rebuild("2.93");
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["server"]["image"], "", "{r}");
    let srv2 = api.wait_status(&admin, &id2, &["ACTIVE", "ERROR"], Duration::from_secs(180));
    assert_eq!(srv2["status"], "ACTIVE", "{srv2}");
    assert_eq!(srv2["name"], "vm2-rebuilt");
    let (_, rv) = api.call(
        "GET",
        &format!("/volume/v3/volumes/{root_vol}"),
        &admin,
        None,
    );
    assert_eq!(rv["volume"]["status"], "in-use", "{rv}");
    assert_eq!(
        rv["volume"]["volume_image_metadata"]["image_id"],
        tiny2.as_str(),
        "{rv}"
    );
    assert_eq!(rv["volume"]["attachments"][0]["server_id"], id2.as_str());
    api.wait_console(&admin, &id2, "URSA-TINY: root read ok");
    let qemu = guests_under(&state);
    assert_eq!(qemu.len(), 2, "vm2 runs again after its rebuild");

    // A guest that cannot start: ERROR with a fault, nothing left behind.
    let junk = dir.path().join("junk.qcow2");
    std::fs::write(&junk, vec![7u8; 65536]).unwrap();
    let bad_img = api.upload_image(&admin, "junk", "qcow2", &junk);
    let mut b = good.clone();
    b["name"] = json!("broken");
    b["imageRef"] = json!(bad_img);
    let (st, created) = api.call(
        "POST",
        "/compute/v2.1/servers",
        &admin,
        Some(json!({"server": b})),
    );
    assert_eq!(st, 202, "{created}");
    let bad_id = created["server"]["id"].as_str().unwrap().to_string();
    let srv = api.wait_status(
        &admin,
        &bad_id,
        &["ERROR", "ACTIVE"],
        Duration::from_secs(90),
    );
    assert_eq!(srv["status"], "ERROR", "{srv}");
    assert!(
        srv["fault"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{srv}"
    );
    let t0 = Instant::now();
    loop {
        let (_, ports) = api.call(
            "GET",
            &format!("/network/v2.0/ports?device_id={bad_id}"),
            &admin,
            None,
        );
        if ports["ports"] == json!([]) && !state.join("compute").join(&bad_id).exists() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the failed server left {ports}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(guests_under(&state), qemu, "no QEMU for the failed server");

    // A guest whose QEMU dies becomes SHUTOFF (the power-state sync), and
    // starts again on request, with its volume on QEMU's command line at
    // power-on: the firmware still boots the root disk, not the volume.
    let (st, a) = api.call(
        "POST",
        &format!("/compute/v2.1/servers/{id2}/os-volume_attachments"),
        &admin,
        Some(json!({"volumeAttachment": {"volumeId": vol_id}})),
    );
    assert_eq!(st, 200, "{a}");
    api.wait_volume(&admin, &vol_id, "in-use");
    let pid: i32 = std::fs::read_to_string(state.join("compute").join(&id2).join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    api.wait_status(&admin, &id2, &["SHUTOFF"], Duration::from_secs(30));
    let (st, _) = api.call(
        "POST",
        &format!("/compute/v2.1/servers/{id2}/action"),
        &admin,
        Some(json!({"os-start": null})),
    );
    assert_eq!(st, 202);
    api.wait_status(&admin, &id2, &["ACTIVE"], Duration::from_secs(30));
    assert_eq!(guests_under(&state).len(), 2, "vm2 runs again");
    api.wait_console(
        &admin,
        &id2,
        "URSA-TINY: disk vdb holds URSA-TINY-MARK by vm1",
    );

    // Delete: QEMU, tap, port and disk go.
    for sid in [&id, &id2, &bad_id] {
        let (st, _) = api.call(
            "DELETE",
            &format!("/compute/v2.1/servers/{sid}"),
            &admin,
            None,
        );
        assert_eq!(st, 204);
    }
    let t0 = Instant::now();
    while [&id, &id2, &bad_id]
        .iter()
        .any(|s| api.server_status(&admin, s).0 != 404)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "servers were not deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(guests_under(&state).is_empty(), "QEMU still runs");
    // The root volume went with vm2 (delete_on_termination).
    let t0 = Instant::now();
    while api
        .call(
            "GET",
            &format!("/volume/v3/volumes/{root_vol}"),
            &admin,
            None,
        )
        .0
        != 404
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "vm2's root volume was not deleted"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !state.join("compute").join(&id).exists(),
        "the disk is still there"
    );
    let (_, ports) = api.call(
        "GET",
        &format!("/network/v2.0/ports?device_id={id}"),
        &admin,
        None,
    );
    assert_eq!(ports["ports"], json!([]));
    let t0 = Instant::now();
    while link_exists(&tap) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tap {tap} is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The network goes too (and with it netd's metadata namespace for it).
    let (st, _) = api.call(
        "DELETE",
        &format!("/network/v2.0/networks/{net_id}"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let bridge = format!("ubr-{}", &net_id.replace('-', "")[..11]);
    let t0 = Instant::now();
    while link_exists(&bridge) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "bridge {bridge} is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Compute agents (`ursa agent`) and their netd run in child processes;
/// they and the guests they started are killed when the test ends, also
/// on failure.
struct Nodes {
    children: Vec<std::process::Child>,
    dir: std::path::PathBuf,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in guests_under(&self.dir) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Two compute nodes, each a namespace with its own `ursa-netd` and
/// `ursa agent`, joined by an underlay; the control plane runs in the
/// underlay's namespace. Two servers, one per node, ping each other over
/// the VXLAN overlay (each guest's user-data script pings the other and
/// says so on its console); a floating IP reaches one from an "outside"
/// namespace behind node 1's external interface.
#[test]
fn servers_on_two_compute_nodes_ping_each_other_and_a_floating_ip_reaches_one() {
    if let Some(why) = tiny_guest_missing() {
        eprintln!("SKIP two-node compute e2e: {why}");
        return;
    }
    if !netlab::netd_bin().exists() {
        eprintln!("SKIP two-node compute e2e: ursa-netd is not built beside the tests");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiny_disk = common::build_tiny(&dir.path().join("tiny"));
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lab = Lab::new("cn", 2);
    // The control plane lives on the underlay (198.18.0.254), where the
    // nodes' metadata proxies reach its metadata API.
    let ul = format!("{}ul", lab.p);
    ok(&[
        "ip",
        "-n",
        &ul,
        "addr",
        "add",
        "198.18.0.254/24",
        "dev",
        "ul",
    ]);
    ok(&["ip", "-n", &ul, "link", "set", "lo", "up"]);
    let f = std::fs::File::open(format!("/run/netns/{ul}")).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    // The outside: 203.0.113.1 behind node 1's ext0.
    let outside = lab.vm("x");
    ok(&[
        "ip",
        "-n",
        &lab.hv(1),
        "link",
        "add",
        "ext0",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
        "netns",
        &outside,
    ]);
    ok(&["ip", "-n", &lab.hv(1), "link", "set", "ext0", "up"]);
    ok(&[
        "ip",
        "-n",
        &outside,
        "addr",
        "add",
        "203.0.113.1/24",
        "dev",
        "x0",
    ]);
    ok(&["ip", "-n", &outside, "link", "set", "x0", "up"]);

    let secret = state.join("metadata-secret");
    std::fs::write(&secret, "two-node-test-secret").unwrap();
    let md = [
        "--metadata-upstream",
        "http://198.18.0.254:8775",
        "--metadata-secret-file",
        secret.to_str().unwrap(),
    ];
    // Each node's agent keeps its guests and image cache in a directory
    // of its own, which shares no path with the controller's state: it
    // fetches images (and uploads snapshots) over HTTP.
    let nodes_dir = dir.path().join("nodes");
    let mut nodes = Nodes {
        children: Vec::new(),
        dir: nodes_dir.clone(),
    };
    let mut lab = lab;
    let mut with_ext = vec!["--physical-interface", "ext:ext0"];
    with_ext.extend(md);
    lab.start_netd_with(1, &with_ext);
    lab.start_netd_with(2, &md);
    let agent_sock = |i: usize| lab.dir.path().join(format!("a{i}.sock"));
    for i in 1..=2 {
        let log = std::fs::File::create(lab.dir.path().join(format!("a{i}.log"))).unwrap();
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.hv(i)))
            .arg(common::ursa_bin())
            .args(["agent", "--node", &format!("h{i}"), "--listen"])
            .arg(format!("unix:{}", agent_sock(i).display()))
            .arg("--dir")
            .arg(nodes_dir.join(format!("h{i}")))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ursa agent starts");
        nodes.children.push(child);
    }
    let args = [
        format!("--netd=h1=unix:{}", lab.sock(1).display()),
        format!("--netd=h2=unix:{}", lab.sock(2).display()),
        format!("--compute=h1=unix:{}", agent_sock(1).display()),
        format!("--compute=h2=unix:{}", agent_sock(2).display()),
        "--physical-network=ext".to_string(),
        "--metadata-bind=198.18.0.254:8775".to_string(),
        // The APIs on the underlay, where the nodes reach the image API.
        "--bind=198.18.0.254:0".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cloud = Cloud::start_with(&state, "secret", &args);
    let admin = cloud.admin_token();
    let api = Api(&cloud);
    let tiny = api.upload_image(&admin, "tiny", "raw", &tiny_disk);
    // The image's bytes are in object storage (a blob of its size), not in
    // an image directory.
    let tiny_len = std::fs::metadata(&tiny_disk).unwrap().len();
    assert!(
        !state.join("images").join(&tiny).exists(),
        "the image is not a file of the image service"
    );
    assert!(
        common::files_under(&state.join("objects"), Some(tiny_len)) >= 1,
        "the image's bytes are an object's blob"
    );
    let create = |path: &str, key: &str, body: Value| -> Value {
        let (st, v) = api.call(
            "POST",
            &format!("/network/v2.0/{path}"),
            &admin,
            Some(json!({ key: body })),
        );
        assert_eq!(st, 201, "{path}: {v}");
        v[key].clone()
    };
    let net = create("networks", "network", json!({"name": "two"}));
    let net_id = net["id"].as_str().unwrap().to_string();
    let sub = create(
        "subnets",
        "subnet",
        json!({"network_id": net_id, "ip_version": 4, "cidr": "10.77.0.0/24"}),
    );
    let ext = create(
        "networks",
        "network",
        json!({"name": "ext", "router:external": true, "provider:network_type": "flat",
               "provider:physical_network": "ext"}),
    );
    create(
        "subnets",
        "subnet",
        json!({"network_id": ext["id"], "ip_version": 4, "cidr": "203.0.113.0/24", "enable_dhcp": false,
               "gateway_ip": "203.0.113.1", "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.99"}]}),
    );
    let router = create(
        "routers",
        "router",
        json!({"name": "two-r", "external_gateway_info": {"network_id": ext["id"]}}),
    );
    let rid = router["id"].as_str().unwrap().to_string();
    lab.extra_ns
        .borrow_mut()
        .push(format!("urt-{}", &rid.replace('-', "")[..11]));
    let (st, v) = api.call(
        "PUT",
        &format!("/network/v2.0/routers/{rid}/add_router_interface"),
        &admin,
        Some(json!({"subnet_id": sub["id"]})),
    );
    assert_eq!(st, 200, "{v}");
    // Ports made first, so each guest knows the other's address.
    let ports: Vec<Value> = (0..2)
        .map(|i| {
            create(
                "ports",
                "port",
                json!({"network_id": net_id, "name": format!("p{i}")}),
            )
        })
        .collect();
    let ip = |i: usize| {
        ports[i]["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    create(
        "security-group-rules",
        "security_group_rule",
        json!({"security_group_id": ports[0]["security_groups"][0], "direction": "ingress",
               "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"}),
    );
    let mut servers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peer = ip(1 - i);
        let script = format!(
            "#!/bin/sh\nfor i in $(seq 90); do\n  if ping -c 1 -W 1 {peer} >/dev/null 2>&1; then echo \"URSA-TINY: ping {peer} ok\"; exit 0; fi\n  sleep 1\ndone\necho \"URSA-TINY: ping {peer} failed\"\n"
        );
        let (st, v) = api.call(
            "POST",
            "/compute/v2.1/servers",
            &admin,
            Some(
                json!({"server": {"name": format!("vm{i}"), "imageRef": tiny, "flavorRef": "1",
                                   "networks": [{"port": port["id"]}], "user_data": b64(&script)}}),
            ),
        );
        assert_eq!(st, 202, "{v}");
        servers.push(v["server"]["id"].as_str().unwrap().to_string());
    }
    let mut hosts = Vec::new();
    for (i, id) in servers.iter().enumerate() {
        let s = api.wait_status(&admin, id, &["ACTIVE", "ERROR"], Duration::from_secs(120));
        assert_eq!(
            s["status"],
            "ACTIVE",
            "{s}\nagent log:\n{}",
            std::fs::read_to_string(lab.dir.path().join(format!("a{}.log", i + 1)))
                .unwrap_or_default()
        );
        assert_eq!(s["addresses"]["two"][0]["addr"], ip(i).as_str(), "{s}");
        hosts.push(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string());
    }
    hosts.sort();
    assert_eq!(hosts, ["h1", "h2"], "the scheduler spreads the two servers");
    // Each guest got its lease from netd (on node 1, over VXLAN for the
    // other), read its user data through the metadata proxy, and pinged
    // the other guest across the overlay.
    for (i, id) in servers.iter().enumerate() {
        api.wait_console(&admin, id, &format!("URSA-TINY: address {}", ip(i)));
        api.wait_console(&admin, id, &format!("URSA-TINY: ping {} ok", ip(1 - i)));
    }
    // A floating IP reaches the first server from outside.
    let fip = create(
        "floatingips",
        "floatingip",
        json!({"floating_network_id": ext["id"], "port_id": ports[0]["id"]}),
    );
    let fip_ip = fip["floating_ip_address"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    while !lab.ping(&outside, &fip_ip) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the outside never reached {fip_ip}"
        );
    }
    // An interface hot-plugged into the first guest (a tap on its node and
    // a virtio NIC through QMP), listed, then unplugged and gone.
    let node_of = |i: usize| {
        let (_, s) = api.server_status(&admin, &servers[i]);
        lab.hv(if s["OS-EXT-SRV-ATTR:host"] == "h1" {
            1
        } else {
            2
        })
    };
    let tap_on = |ns: &str, tap: &str| {
        netlab::sh(&["ip", "-n", ns, "link", "show", tap])
            .status
            .success()
    };
    let (st, att) = api.call(
        "POST",
        &format!("/compute/v2.1/servers/{}/os-interface", servers[0]),
        &admin,
        Some(json!({"interfaceAttachment": {"net_id": net_id}})),
    );
    assert_eq!(st, 200, "{att}");
    let extra = att["interfaceAttachment"]["port_id"]
        .as_str()
        .unwrap()
        .to_string();
    let extra_tap = ursa_proto::netd::tap_device(&extra);
    assert!(
        tap_on(&node_of(0), &extra_tap),
        "no tap {extra_tap} on the guest's node"
    );
    let (_, list) = api.call(
        "GET",
        &format!("/compute/v2.1/servers/{}/os-interface", servers[0]),
        &admin,
        None,
    );
    assert_eq!(
        list["interfaceAttachments"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    let (st, _) = api.call(
        "DELETE",
        &format!("/compute/v2.1/servers/{}/os-interface/{extra}", servers[0]),
        &admin,
        None,
    );
    assert_eq!(st, 202);
    let (st, _) = api.call("GET", &format!("/network/v2.0/ports/{extra}"), &admin, None);
    assert_eq!(st, 404, "the interface's port goes with it");
    let t0 = Instant::now();
    while tap_on(&node_of(0), &extra_tap) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tap {extra_tap} stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Pause freezes the guest and unpause lets it run on (same QEMU).
    let before = guests_under(&nodes_dir);
    for (action, want) in [("pause", "PAUSED"), ("unpause", "ACTIVE")] {
        let (st, v) = api.call(
            "POST",
            &format!("/compute/v2.1/servers/{}/action", servers[1]),
            &admin,
            Some(json!({ action: null })),
        );
        assert_eq!(st, 202, "{action}: {v}");
        api.wait_status(&admin, &servers[1], &[want], Duration::from_secs(30));
    }
    assert_eq!(guests_under(&nodes_dir), before);
    // A snapshot of the second guest's disk becomes an image, and a new
    // server boots from it (on either node), takes its lease and reads its
    // config drive.
    let resp = cloud
        .http()
        .post(format!(
            "{}/compute/v2.1/servers/{}/action",
            cloud.url.trim_end_matches("/v3"),
            servers[1]
        ))
        .header("X-Auth-Token", &admin)
        .json(&json!({"createImage": {"name": "snap"}}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let snap = loc.rsplit('/').next().unwrap().to_string();
    let t0 = Instant::now();
    loop {
        let (_, img) = api.call("GET", &format!("/image/v2/images/{snap}"), &admin, None);
        if img["status"] == "active" {
            assert!(img["size"].as_u64().unwrap_or(0) > 0, "{img}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "snapshot never became active: {img}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Both nodes fetched tiny into their caches; the snapshot boots on the
    // node that did not take it (2.74's requested host), which fetches it.
    for i in 1..=2 {
        let cached = nodes_dir.join(format!("h{i}/images/{tiny}"));
        assert_eq!(
            std::fs::metadata(&cached).map(|m| m.len()).ok(),
            Some(tiny_len)
        );
    }
    let (_, s1) = api.server_status(&admin, &servers[1]);
    let other = if s1["OS-EXT-SRV-ATTR:host"] == "h1" {
        "h2"
    } else {
        "h1"
    };
    let resp = cloud
        .http()
        .post(format!(
            "{}/compute/v2.1/servers",
            cloud.url.trim_end_matches("/v3")
        ))
        .header("X-Auth-Token", &admin)
        .header("X-OpenStack-Nova-API-Version", "2.74")
        .json(
            &json!({"server": {"name": "from-snap", "imageRef": snap, "flavorRef": "1",
                                 "networks": [{"uuid": net_id}], "config_drive": true,
                                 "host": other}}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let v: Value = resp.json().unwrap();
    let from_snap = v["server"]["id"].as_str().unwrap().to_string();
    let s = api.wait_status(
        &admin,
        &from_snap,
        &["ACTIVE", "ERROR"],
        Duration::from_secs(120),
    );
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], other, "{s}");
    assert!(nodes_dir.join(format!("{other}/images/{snap}")).exists());
    let addr = s["addresses"]["two"][0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_console(&admin, &from_snap, &format!("URSA-TINY: address {addr}"));
    // It also has a config drive, which its init found and read.
    assert_eq!(s["config_drive"], "True", "{s}");
    api.wait_console(
        &admin,
        &from_snap,
        "URSA-TINY: config-drive vdb hostname from-snap",
    );
    servers.push(from_snap);

    // Deleting the servers stops their guests on both nodes and gives the
    // ports back unbound (they were given, not made, by the servers).
    for id in &servers {
        let (st, _) = api.call(
            "DELETE",
            &format!("/compute/v2.1/servers/{id}"),
            &admin,
            None,
        );
        assert_eq!(st, 204);
    }
    let t0 = Instant::now();
    while !guests_under(&nodes_dir).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "QEMU outlived its server"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for p in &ports {
        let t0 = Instant::now();
        loop {
            let (st, v) = api.call(
                "GET",
                &format!("/network/v2.0/ports/{}", p["id"].as_str().unwrap()),
                &admin,
                None,
            );
            assert_eq!(st, 200, "a given port survives its server: {v}");
            if v["port"]["device_id"] == "" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(cloud);
    drop(nodes);
}
