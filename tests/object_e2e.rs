//! The object storage service (Swift API v1 at /v1/AUTH_<project>) end to
//! end with a real `ursa up`: bytes in and out with their ETag, ranges,
//! listings, isolation between projects and from anonymous callers,
//! referrer ACLs, temporary URLs, large objects, bad input refused with
//! Swift's statuses and nothing stored, and objects surviving a SIGKILL
//! of `ursa` in the middle of concurrent PUTs.

mod common;

use common::s3::S3Server;
use common::Cloud;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

struct Swift {
    http: reqwest::blocking::Client,
    /// `http://host:port/v1/AUTH_<project>`
    account: String,
}

impl Swift {
    fn new(cloud: &Cloud, project: &str) -> Swift {
        Swift {
            http: cloud.http(),
            account: format!("{}/v1/AUTH_{project}", cloud.url.trim_end_matches("/v3")),
        }
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::blocking::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let rb = self.http.request(m, format!("{}{path}", self.account));
        match token {
            Some(t) => rb.header("X-Auth-Token", t),
            None => rb,
        }
    }

    fn status(&self, method: &str, path: &str, token: Option<&str>) -> u16 {
        self.req(method, path, token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    fn put(&self, path: &str, token: &str, body: &[u8]) -> reqwest::blocking::Response {
        self.req("PUT", path, Some(token))
            .body(body.to_vec())
            .send()
            .unwrap()
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
        let r = self.req("GET", path, token).send().unwrap();
        let st = r.status().as_u16();
        (st, r.bytes().unwrap().to_vec())
    }

    fn listing(&self, container: &str, token: &str) -> Vec<Value> {
        let r = self
            .req(
                "GET",
                &format!(
                    "/{container}{}format=json",
                    if container.contains('?') { "&" } else { "?" }
                ),
                Some(token),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<Value>>().unwrap()
    }
}

/// The signature with its first hex digit changed.
fn wrong(sig: &str) -> String {
    let first = if sig.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &sig[1..])
}

fn temp_url_sig(key: &str, method: &str, expires: i64, path: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(format!("{method}\n{expires}\n{path}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Where the cloud under test keeps object bytes: its state directory, or
/// an S3 server the test runs (`--blob-store s3://…`). Every test here runs
/// on both.
enum Blobs {
    Dir,
    S3(S3Server),
}

impl Blobs {
    fn s3(root: &Path) -> Blobs {
        Blobs::S3(S3Server::start(root, "ursa-blobs"))
    }

    fn start(&self, dir: &Path, password: &str) -> Cloud {
        match self {
            Blobs::Dir => Cloud::start(dir, password),
            Blobs::S3(s3) => {
                let env = s3.ursa_env();
                let env: Vec<(&str, &std::ffi::OsStr)> =
                    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
                Cloud::start_env(dir, password, &[], &env)
            }
        }
    }
}

#[test]
fn objects_stream_list_isolate_and_refuse_bad_input() {
    stream_list_isolate_refuse(&Blobs::Dir);
}

/// The same with object bytes in S3: blobs land in the S3 server's
/// bucket and none in the state directory.
#[test]
fn objects_in_s3_stream_list_isolate_and_refuse_bad_input() {
    let s3_root = tempfile::tempdir().unwrap();
    let blobs = Blobs::s3(s3_root.path());
    let state = stream_list_isolate_refuse(&blobs);
    // The 300,000-byte object is a blob in the bucket (small ones are
    // kept inline in the database).
    let in_s3 = common::files_under(
        &s3_root.path().join("ursa-blobs/objects/blobs"),
        Some(300_000),
    );
    assert!(
        in_s3 >= 1,
        "the large object's blob is not in the S3 bucket"
    );
    assert_eq!(common::files_under(&state.path().join("objects"), None), 0);
}

fn stream_list_isolate_refuse(blobs: &Blobs) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cloud = blobs.start(dir.path(), "object-pw");
    let admin = cloud.admin_token();
    let (a, pa) = cloud.member_of(&admin, "obj-a");
    let (b, _pb) = cloud.member_of(&admin, "obj-b");
    let s = Swift::new(&cloud, &pa);

    // The catalog names the account of the token's project.
    let (st, cat) = cloud.call("GET", "/auth/catalog", &a, None);
    assert_eq!(st, 200);
    let url = cat["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "object-store")
        .and_then(|s| s["endpoints"][0]["url"].as_str())
        .expect("object-store in the catalog")
        .to_string();
    assert!(url.ends_with(&format!("/v1/AUTH_{pa}")), "{url}");

    // Container and object: bytes back equal bytes in, ETag is their MD5.
    assert_eq!(s.status("PUT", "/photos", Some(&a)), 201);
    assert_eq!(s.status("PUT", "/photos", Some(&a)), 202);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = s.put("/photos/cat.jpg", &a, &data);
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], md5_hex(&data).as_str());
    let (st, got) = s.get("/photos/cat.jpg", Some(&a));
    assert_eq!((st, got == data), (200, true));
    let r = s
        .req("GET", "/photos/cat.jpg", Some(&a))
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/300000");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);
    let r = s
        .req("GET", "/photos/cat.jpg", Some(&a))
        .header("Range", "bytes=400000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    let etag = md5_hex(&data);
    let r = s
        .req("GET", "/photos/cat.jpg", Some(&a))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    // Listings page by name with prefix and delimiter.
    for n in ["a/1", "a/2", "b/1", "c"] {
        assert_eq!(
            s.put(&format!("/docs/{n}"), &a, b"x").status(),
            404,
            "no container yet"
        );
    }
    assert_eq!(s.status("PUT", "/docs", Some(&a)), 201);
    for n in ["a/1", "a/2", "b/1", "c"] {
        assert_eq!(s.put(&format!("/docs/{n}"), &a, n.as_bytes()).status(), 201);
    }
    let names: Vec<String> = s
        .req("GET", "/docs?delimiter=/", Some(&a))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, ["a/", "b/", "c"]);
    let page = s.listing("docs?limit=2&marker=a/1", &a);
    assert_eq!(
        page.iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a/2", "b/1"]
    );
    let r = s.req("HEAD", "", Some(&a)).send().unwrap();
    assert_eq!(r.headers()["x-account-container-count"], "2");
    assert_eq!(r.headers()["x-account-object-count"], "5");
    assert_eq!(s.status("DELETE", "/docs", Some(&a)), 409, "not empty");

    // Another project's token, and no token, are kept out.
    assert_eq!(s.status("GET", "/photos/cat.jpg", Some(&b)), 403);
    assert_eq!(s.status("GET", "", Some(&b)), 403);
    assert_eq!(s.status("PUT", "/photos/x", Some(&b)), 403);
    assert_eq!(s.status("GET", "/photos/cat.jpg", None), 401);
    assert_eq!(s.status("GET", "/photos/cat.jpg", Some("not-a-token")), 401);
    // A referrer ACL lets anyone read, never write; listing needs .rlistings.
    let r = s
        .req("POST", "/photos", Some(&a))
        .header("X-Container-Read", ".r:*")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/photos/cat.jpg", None).0, 200);
    assert_eq!(s.status("GET", "/photos", None), 401);
    assert_eq!(s.put("/photos/evil", "", b"x").status(), 401);
    // A project:user ACL lets another project's user write.
    let r = s
        .req("POST", "/docs", Some(&a))
        .header("X-Container-Write", "*:obj-b-user")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.put("/docs/from-b", &b, b"hello").status(), 201);

    // Temporary URLs: right signature in, wrong one, method or time out.
    let r = s
        .req("POST", "", Some(&a))
        .header("X-Account-Meta-Temp-URL-Key", "s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let path = format!("/v1/AUTH_{pa}/photos/cat.jpg");
    let exp = chrono::Utc::now().timestamp() + 600;
    let sig = temp_url_sig("s3cret", "GET", exp, &path);
    let q =
        |sig: &str, exp: i64| format!("/photos/cat.jpg?temp_url_sig={sig}&temp_url_expires={exp}");
    let (st, got) = s.get(&q(&sig, exp), None);
    assert_eq!((st, got.len()), (200, data.len()));
    assert_eq!(s.get(&q(&wrong(&sig), exp), None).0, 401);
    assert_eq!(
        s.put(&q(&sig, exp), "", b"overwrite").status(),
        401,
        "a GET URL does not PUT"
    );
    let old = exp - 1200;
    assert_eq!(
        s.get(&q(&temp_url_sig("s3cret", "GET", old, &path), old), None)
            .0,
        401
    );

    // Bad input: Swift's statuses, and nothing stored.
    let long = "n".repeat(1025);
    assert_eq!(s.put(&format!("/photos/{long}"), &a, b"x").status(), 400);
    assert_eq!(s.put("/photos/bad%FFname", &a, b"x").status(), 412);
    assert_eq!(s.put("/photos/nul%00name", &a, b"x").status(), 412);
    let r = s
        .req("PUT", "/photos/wrong-etag", Some(&a))
        .header("ETag", md5_hex(b"something else"))
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(s.status("GET", "/photos/wrong-etag", Some(&a)), 404);
    let r = s
        .req("PUT", "/photos/m", Some(&a))
        .header("X-Object-Meta-Big", "v".repeat(300))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let tmp = dir.path().join("objects/tmp");
    assert_eq!(common::files_under(&tmp, None), 0, "no upload left behind");

    // Large objects: a DLO over its segments, an SLO over its parts.
    assert_eq!(s.status("PUT", "/segs", Some(&a)), 201);
    let mut whole = Vec::new();
    let mut parts = Vec::new();
    for i in 0..3u8 {
        let seg = vec![b'a' + i; 1000 + i as usize];
        assert_eq!(s.put(&format!("/segs/big/{i:03}"), &a, &seg).status(), 201);
        parts.push(serde_json::json!({"path": format!("/segs/big/{i:03}"), "etag": md5_hex(&seg), "size_bytes": seg.len()}));
        whole.extend(seg);
    }
    let r = s
        .req("PUT", "/photos/dlo", Some(&a))
        .header("X-Object-Manifest", "segs/big/")
        .body("")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.get("/photos/dlo", Some(&a)), (200, whole.clone()));
    let r = s
        .req("PUT", "/photos/slo?multipart-manifest=put", Some(&a))
        .body(serde_json::to_vec(&parts).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.get("/photos/slo", Some(&a)), (200, whole.clone()));
    let listed = s.listing("photos?prefix=slo", &a);
    assert_eq!(listed[0]["bytes"], whole.len());
    let r = s
        .req("DELETE", "/photos/slo?multipart-manifest=delete", Some(&a))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.listing("segs", &a).len(),
        0,
        "segments deleted with the manifest"
    );

    // Versioned writes keep what an overwrite replaces.
    assert_eq!(s.status("PUT", "/old", Some(&a)), 201);
    let r = s
        .req("PUT", "/kept", Some(&a))
        .header("X-Versions-Location", "old")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.put("/kept/doc", &a, b"v1").status(), 201);
    assert_eq!(s.put("/kept/doc", &a, b"v2").status(), 201);
    assert_eq!(s.listing("old", &a).len(), 1);
    assert_eq!(s.status("DELETE", "/kept/doc", Some(&a)), 204);
    assert_eq!(s.get("/kept/doc", Some(&a)), (200, b"v1".to_vec()));
    drop(cloud);
    dir
}

#[test]
fn objects_answered_201_survive_sigkill() {
    survive_sigkill(&Blobs::Dir);
}

#[test]
fn objects_in_s3_answered_201_survive_sigkill() {
    let s3_root = tempfile::tempdir().unwrap();
    survive_sigkill(&Blobs::s3(s3_root.path()));
}

fn survive_sigkill(blobs: &Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = blobs.start(dir.path(), "durable-pw");
    let admin = cloud.admin_token();
    let (mut tok, pid) = cloud.member_of(&admin, "durable");
    let mut s = Swift::new(&cloud, &pid);
    assert_eq!(s.status("PUT", "/d", Some(&tok)), 201);
    // The size is 1,000 concurrent PUTs for five rounds:
    // URSA_OBJECT_KILL_ROUNDS=5 URSA_OBJECT_KILL_CLIENTS=1000 (CI runs the small default).
    let knob = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, clients, per_client) = (
        knob("URSA_OBJECT_KILL_ROUNDS", 2),
        knob("URSA_OBJECT_KILL_CLIENTS", 16),
        knob("URSA_OBJECT_KILL_PUTS", 40),
    );
    for round in 0..rounds {
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let threads: Vec<_> = (0..clients)
            .map(|t| {
                let acked = acked.clone();
                let (account, tok) = (s.account.clone(), tok.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    for i in 0..per_client {
                        let name = format!("r{round}-t{t}-{i}");
                        let body = format!("{name}:{}", "z".repeat((i % 40) * 37));
                        let r = http
                            .put(format!("{account}/d/{name}"))
                            .header("X-Auth-Token", &tok)
                            .body(body.clone())
                            .send();
                        match r {
                            Ok(r) if r.status() == 201 => {
                                acked.lock().unwrap().push((name, md5_hex(body.as_bytes())))
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Kill while PUTs are in flight: once a few have been answered
        // (however slow the machine), not after a fixed time.
        let want = (clients * per_client / 5).clamp(1, 200);
        let t0 = std::time::Instant::now();
        while acked.lock().unwrap().len() < want
            && t0.elapsed() < std::time::Duration::from_secs(30)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pid_ursa = cloud.pid();
        std::process::Command::new("kill")
            .args(["-9", &pid_ursa.to_string()])
            .status()
            .unwrap();
        for t in threads {
            t.join().unwrap();
        }
        drop(cloud);
        cloud = blobs.start(dir.path(), "durable-pw");
        s = Swift::new(&cloud, &pid);
        tok = cloud
            .token("durable-user", "pw-pw-pw", Some("durable"))
            .unwrap();
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: some PUTs were answered before the kill"
        );
        for (name, etag) in &acked {
            let r = s
                .req("GET", &format!("/d/{name}"), Some(&tok))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "round {round}: {name} was answered 201");
            assert_eq!(r.headers()["etag"], etag.as_str());
            assert_eq!(md5_hex(&r.bytes().unwrap()), *etag);
        }
        // Every listed object reads back; the counts equal the listing.
        let mut listed = Vec::new();
        let mut marker = String::new();
        loop {
            let page = s.listing(&format!("d?marker={marker}"), &tok);
            if page.is_empty() {
                break;
            }
            marker = page.last().unwrap()["name"].as_str().unwrap().to_string();
            listed.extend(page);
        }
        for o in &listed {
            let name = o["name"].as_str().unwrap();
            let (st, body) = s.get(&format!("/d/{name}"), Some(&tok));
            assert_eq!(st, 200, "{name} is listed");
            assert_eq!(md5_hex(&body), o["hash"].as_str().unwrap());
        }
        let r = s.req("HEAD", "/d", Some(&tok)).send().unwrap();
        assert_eq!(
            r.headers()["x-container-object-count"],
            listed.len().to_string().as_str()
        );
        let bytes: u64 = listed.iter().map(|o| o["bytes"].as_u64().unwrap()).sum();
        assert_eq!(
            r.headers()["x-container-bytes-used"],
            bytes.to_string().as_str()
        );
        println!(
            "round {round}: {} answered 201 before the kill, {} listed after",
            acked.len(),
            listed.len()
        );
    }
}
