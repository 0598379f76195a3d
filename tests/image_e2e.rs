//! The image API (Glance v2 at /image) end to end with a real `ursa up`:
//! data in and out with checksums, JSON-patch updates, sharing between
//! projects, isolation (another project's private image is a 404), and
//! bad input getting OpenStack-shaped errors that change nothing.

mod common;

use common::Cloud;
use serde_json::{json, Value};

struct Api<'a> {
    cloud: &'a Cloud,
    base: String,
}

impl Api<'_> {
    fn req(&self, method: &str, path: &str, token: &str) -> reqwest::blocking::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.cloud
            .http()
            .request(m, format!("{}/image/v2{path}", self.base))
            .header("X-Auth-Token", token)
    }

    fn json(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.req(method, path, token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }

    fn patch(&self, id: &str, token: &str, ops: Value, ct: &str) -> (u16, Value) {
        let r = self
            .req("PATCH", &format!("/images/{id}"), token)
            .header("Content-Type", ct)
            .body(ops.to_string())
            .send()
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }
}

const PATCH: &str = "application/openstack-images-v2.1-json-patch";

#[test]
fn images_upload_share_isolate_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "image-pw");
    let api = Api {
        cloud: &cloud,
        base: cloud.url.trim_end_matches("/v3").to_string(),
    };
    let admin = cloud.admin_token();
    let (a, _pa) = cloud.member_of(&admin, "img-a");
    let (b, pb) = cloud.member_of(&admin, "img-b");

    // The catalog names the image service.
    let (st, cat) = cloud.call("GET", "/auth/catalog", &a, None);
    assert_eq!(st, 200);
    assert!(
        cat["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["type"] == "image"),
        "{cat}"
    );

    // Create, upload 3 MiB, download the same bytes with their checksum.
    let (st, img) = api.json(
        "POST",
        "/images",
        &a,
        Some(
            json!({"name": "tiny", "disk_format": "raw", "container_format": "bare",
                    "visibility": "private", "os_distro": "busybox"}),
        ),
    );
    assert_eq!(st, 201, "{img}");
    assert_eq!(img["status"], "queued");
    assert_eq!(img["os_distro"], "busybox");
    let id = img["id"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let r = api
        .req("PUT", &format!("/images/{id}/file"), &a)
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, img) = api.json("GET", &format!("/images/{id}"), &a, None);
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 3 << 20);
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["checksum"].as_str().unwrap().len(), 32);
    let r = api
        .req("GET", &format!("/images/{id}/file"), &a)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-md5"].to_str().unwrap(),
        img["checksum"].as_str().unwrap()
    );
    assert!(
        r.bytes().unwrap()[..] == data[..],
        "downloaded bytes differ"
    );
    // Its bytes are an object in object storage (the default image
    // store): a blob of its size under the state dir's objects, no file in
    // an images directory.
    let state = cloud.state_dir.clone();
    assert!(!state.join("images").join(&id).exists());
    assert_eq!(
        common::files_under(&state.join("objects"), Some(3 << 20)),
        1
    );
    // The node-facing data URLs take no token: the ticket in them is the
    // credential, and a made-up or altered one is a 404.
    for ticket in ["nonsense", &"A".repeat(120)] {
        for m in ["GET", "PUT"] {
            let r = cloud
                .http()
                .request(
                    reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                    format!("{}/image/ursa/data/{ticket}", api.base),
                )
                .body("x")
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 404, "{m} with ticket {ticket}");
        }
    }
    // A second upload to an active image conflicts.
    let r = api
        .req("PUT", &format!("/images/{id}/file"), &a)
        .header("Content-Type", "application/octet-stream")
        .body(vec![1u8; 10])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);

    // Project B: a 404 by id, absent from lists, cannot delete or download.
    for (m, p) in [
        ("GET", format!("/images/{id}")),
        ("DELETE", format!("/images/{id}")),
        ("GET", format!("/images/{id}/file")),
    ] {
        let (st, body) = api.json(m, &p, &b, None);
        assert_eq!(st, 404, "{m} {p}: {body}");
        assert_eq!(body["error"]["code"], 404);
    }
    let (_, list) = api.json("GET", "/images", &b, None);
    assert!(!list.to_string().contains(&id), "B lists A's private image");

    // JSON patch: add a property, replace the name, bad patches change nothing.
    let (st, img) = api.patch(
        &id,
        &a,
        json!([{"op": "replace", "path": "/name", "value": "tiny2"},
               {"op": "add", "path": "/hw_disk_bus", "value": "virtio"}]),
        PATCH,
    );
    assert_eq!(st, 200, "{img}");
    assert_eq!(
        (img["name"].as_str(), img["hw_disk_bus"].as_str()),
        (Some("tiny2"), Some("virtio"))
    );
    for (ops, ct, want) in [
        (json!({"op": "replace"}), PATCH, 400),
        (json!([{"op": "move", "path": "/name"}]), PATCH, 400),
        (
            json!([{"op": "replace", "path": "/status", "value": "active"}]),
            PATCH,
            403,
        ),
        (
            json!([{"op": "add", "path": "/os_glance_x", "value": "y"}]),
            PATCH,
            403,
        ),
        (
            json!([{"op": "replace", "path": "/nope", "value": "y"}]),
            PATCH,
            409,
        ),
        (
            json!([{"op": "replace", "path": "/name", "value": "x"}]),
            "application/json",
            415,
        ),
        (
            json!([{"op": "replace", "path": "/disk_format", "value": "floppy"}]),
            PATCH,
            400,
        ),
    ] {
        let (st, body) = api.patch(&id, &a, ops.clone(), ct);
        assert_eq!(st, want, "{ops} ({ct}): {body}");
    }
    let (_, img) = api.json("GET", &format!("/images/{id}"), &a, None);
    assert_eq!(img["name"], "tiny2", "a refused patch changed the image");
    // B may not patch it either (it cannot see it).
    let (st, _) = api.patch(
        &id,
        &b,
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
        PATCH,
    );
    assert_eq!(st, 404);

    // Share with B: visible once B is a member, listed once accepted.
    let (st, _) = api.patch(
        &id,
        &a,
        json!([{"op": "replace", "path": "/visibility", "value": "shared"}]),
        PATCH,
    );
    assert_eq!(st, 200);
    let (st, m) = api.json(
        "POST",
        &format!("/images/{id}/members"),
        &a,
        Some(json!({"member": pb})),
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["status"], "pending");
    let (st, _) = api.json("GET", &format!("/images/{id}"), &b, None);
    assert_eq!(st, 200);
    let (_, list) = api.json("GET", "/images", &b, None);
    assert!(
        !list.to_string().contains(&id),
        "pending member lists the image"
    );
    let (st, _) = api.json(
        "PUT",
        &format!("/images/{id}/members/{pb}"),
        &b,
        Some(json!({"status": "accepted"})),
    );
    assert_eq!(st, 200);
    let (_, list) = api.json("GET", "/images", &b, None);
    assert!(
        list.to_string().contains(&id),
        "accepted member does not list it"
    );
    let r = api
        .req("GET", &format!("/images/{id}/file"), &b)
        .send()
        .unwrap();
    assert!(r.bytes().unwrap()[..] == data[..]);
    let (st, _) = api.json("DELETE", &format!("/images/{id}"), &b, None);
    assert_eq!(st, 403, "a member deleted the owner's image");

    // Bad creates.
    for (body, want) in [
        (json!({"name": "x", "disk_format": "floppy"}), 400),
        (json!({"name": "x", "visibility": "public"}), 403),
        (json!({"name": "x", "os_glance_foo": "bar"}), 403),
        (json!({"name": "x", "min_ram": -1}), 400),
        (json!({"id": "not-a-uuid"}), 400),
        // Glance's schema: a property outside it is a string.
        (json!({"name": "x", "hw_disk_bus": 1}), 400),
        (json!({"name": "x", "image": null}), 400),
        (json!({"name": "x", "extra": {"a": "b"}}), 400),
    ] {
        let (st, e) = api.json("POST", "/images", &a, Some(body.clone()));
        assert_eq!(st, want, "{body}: {e}");
    }
    let (st, e) = api.patch(
        &id,
        &a,
        json!([{"op": "add", "path": "/hw_disk_bus", "value": ["virtio"]}]),
        PATCH,
    );
    assert_eq!(st, 400, "a list as a property value: {e}");
    let (st, e) = api.patch(
        &id,
        &a,
        json!([{"op": "add", "path": "/hw_disk_bus", "value": "virtio"}]),
        PATCH,
    );
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["hw_disk_bus"], "virtio");
    let r = api
        .req("POST", "/images", &a)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Restart: the image and its data are still there.
    drop(api);
    let state = cloud.state_dir.clone();
    assert!(cloud.stop().success());
    let cloud = Cloud::start(&state, "image-pw");
    let a = cloud
        .token("img-a-user", "pw-pw-pw", Some("img-a"))
        .unwrap();
    let api = Api {
        cloud: &cloud,
        base: cloud.url.trim_end_matches("/v3").to_string(),
    };
    let r = api
        .req("GET", &format!("/images/{id}/file"), &a)
        .send()
        .unwrap();
    assert!(
        r.bytes().unwrap()[..] == data[..],
        "data lost across restart"
    );
    let (st, _) = api.json("DELETE", &format!("/images/{id}"), &a, None);
    assert_eq!(st, 204);
    let (st, _) = api.json("GET", &format!("/images/{id}"), &a, None);
    assert_eq!(st, 404);
}

/// Interoperable image import and the tasks API: `glance-direct` makes
/// the staged bytes the image's, `web-download` and a `/v2/tasks` import
/// fetch them from a URL; each leaves a task that says so; the bytes read
/// back are those sent; a URL that is not http(s) fails its task and
/// leaves the image queued; only admins use `/v2/tasks`.
#[test]
fn image_import_methods_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "import-pw");
    let api = Api {
        cloud: &cloud,
        base: cloud.url.trim_end_matches("/v3").to_string(),
    };
    let admin = cloud.admin_token();
    let (a, _) = cloud.member_of(&admin, "imp-a");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (_, info) = api.json("GET", "/info/import", &a, None);
    assert_eq!(
        info["import-methods"]["value"],
        json!(["glance-direct", "web-download"])
    );
    let new_image = |name: &str| {
        let (st, img) = api.json(
            "POST",
            "/images",
            &a,
            Some(json!({"name": name, "disk_format": "raw", "container_format": "bare"})),
        );
        assert_eq!(st, 201, "{img}");
        img["id"].as_str().unwrap().to_string()
    };
    let wait_status = |id: &str, tok: &str, want: &str| {
        let t0 = std::time::Instant::now();
        loop {
            let (_, img) = api.json("GET", &format!("/images/{id}"), tok, None);
            if img["status"] == want {
                return img;
            }
            assert!(t0.elapsed().as_secs() < 60, "{id} never {want}: {img}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let bytes_of = |id: &str, tok: &str| {
        api.req("GET", &format!("/images/{id}/file"), tok)
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .to_vec()
    };

    // glance-direct: stage, then import.
    let id = new_image("direct");
    let (st, e) = api.json(
        "POST",
        &format!("/images/{id}/import"),
        &a,
        Some(json!({"method": {"name": "glance-direct"}})),
    );
    assert_eq!(st, 409, "nothing staged yet: {e}");
    let r = api
        .req("PUT", &format!("/images/{id}/stage"), &a)
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    wait_status(&id, &a, "uploading");
    let (st, e) = api.json(
        "POST",
        &format!("/images/{id}/import"),
        &a,
        Some(json!({"method": {"name": "glance-direct"}})),
    );
    assert_eq!(st, 202, "{e}");
    let img = wait_status(&id, &a, "active");
    assert_eq!(img["size"], json!(data.len()));
    assert!(bytes_of(&id, &a) == data);
    let (_, tasks) = api.json("GET", &format!("/images/{id}/tasks"), &a, None);
    assert_eq!(tasks["tasks"][0]["status"], "success", "{tasks}");
    assert_eq!(tasks["tasks"][0]["result"]["image_id"], id.as_str());

    // web-download from a URL, and from one that is not http(s).
    let url = common::serve_bytes(data.clone());
    let id = new_image("web");
    let (st, e) = api.json(
        "POST",
        &format!("/images/{id}/import"),
        &a,
        Some(json!({"method": {"name": "web-download", "uri": url}})),
    );
    assert_eq!(st, 202, "{e}");
    wait_status(&id, &a, "active");
    assert!(bytes_of(&id, &a) == data);
    let bad = new_image("bad-url");
    let (st, _) = api.json(
        "POST",
        &format!("/images/{bad}/import"),
        &a,
        Some(json!({"method": {"name": "web-download", "uri": "file:///etc/passwd"}})),
    );
    assert_eq!(st, 202);
    let t0 = std::time::Instant::now();
    loop {
        let (_, t) = api.json("GET", &format!("/images/{bad}/tasks"), &a, None);
        if t["tasks"][0]["status"] == "failure" {
            assert!(
                t["tasks"][0]["message"].as_str().unwrap().contains("http"),
                "{t}"
            );
            break;
        }
        assert!(t0.elapsed().as_secs() < 30, "{t}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let failed = wait_status(&bad, &a, "queued");
    assert_eq!(failed["os_glance_failed_import"], "default", "{failed}");

    // The tasks API: admins only; an import task makes a new image.
    let body = json!({"type": "import", "input": {"import_from": url,
        "import_from_format": "raw", "image_properties": {"name": "from-task"}}});
    let (st, _) = api.json("POST", "/tasks", &a, Some(body.clone()));
    assert_eq!(st, 403);
    let (st, t) = api.json("POST", "/tasks", &admin, Some(body));
    assert_eq!(st, 201, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    let done = loop {
        let (_, t) = api.json("GET", &format!("/tasks/{tid}"), &admin, None);
        if t["status"] == "success" {
            break t;
        }
        assert_ne!(t["status"], "failure", "{t}");
        assert!(t0.elapsed().as_secs() < 60, "{t}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let made = done["result"]["image_id"].as_str().unwrap().to_string();
    let img = wait_status(&made, &admin, "active");
    assert_eq!(img["name"], "from-task");
    assert!(bytes_of(&made, &admin) == data);
    let (_, list) = api.json("GET", "/tasks", &admin, None);
    assert!(list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == tid.as_str()));
}
