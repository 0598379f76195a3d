//! The dashboard in a real browser: headless Chromium driven through
//! WebDriver (chromedriver, fantoccini) against `ursa up` with its own netd
//! and compute node in a network namespace made for the test.
//!
//! As a member of a fresh project: make a network, subnet and router and
//! see them in the topology drawing; launch an instance from `tiny` on
//! `private` (its name is `<script>alert(1)</script>`, which must render as
//! text) and see it go ACTIVE without a reload; find the address it leased
//! in its console log; create a volume and attach it; associate a floating
//! IP; take a snapshot; upload an image from a file (its property is an
//! HTML attack, shown as text); delete everything. Then the security
//! checks (CSRF, other projects' ids, login throttling, logout) and, as
//! admin, a flavor with extra specs and a project with a member. A failing
//! step saves a screenshot as `target/tmp/dashboard-<step>.png`.
//!
//! `URSA_DASHBOARD_SCREENSHOTS=DIR` also saves the Overview, Instances,
//! Launch Instance and Network Topology pages at 1366×768 into DIR (how
//! `docs/dashboard-*.png` are made).

mod common;

use common::{browser_missing, tiny_guest_missing, Cloud, Netns};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn browser(port: u16) -> R<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-crash-reporter", "--disable-breakpad",
                        "--disable-dev-shm-usage", "--window-size=1366,768"]}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await?;
    c.set_window_size(1366, 768).await?;
    Ok(c)
}

/// The dashboard as one browser sees it.
struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Ui {
    async fn go(&self, path: &str) -> R {
        self.c.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    async fn css(&self, sel: &str) -> R<fantoccini::elements::Element> {
        Ok(self
            .c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(sel))
            .await?)
    }

    async fn text(&self, sel: &str) -> R<String> {
        Ok(self.css(sel).await?.text().await?)
    }

    /// The page's visible text.
    async fn body(&self) -> R<String> {
        self.text("body").await
    }

    async fn login(&self, user: &str, password: &str) -> R {
        self.go("/dashboard/").await?;
        self.css("#id_username").await?.send_keys(user).await?;
        self.css("#id_password").await?.send_keys(password).await?;
        self.css("#loginBtn").await?.click().await?;
        self.css("nav.side").await?;
        Ok(())
    }

    /// Opens the folded form `title`, fills it and submits it.
    async fn submit(&self, title: &str, fields: &[(&str, &str)]) -> R<String> {
        let form = format!("form[data-form=\"{title}\"]");
        self.css(&format!("details:has({form}) > summary"))
            .await?
            .click()
            .await?;
        for (name, value) in fields {
            let el = self.css(&format!("{form} [name=\"{name}\"]")).await?;
            match el.tag_name().await?.as_str() {
                "select" => self.choose(&el, value).await?,
                _ => {
                    el.clear().await?;
                    el.send_keys(value).await?
                }
            }
        }
        let button = self.css(&format!("{form} button[type=submit]")).await?;
        self.mark().await?;
        button.click().await?;
        self.flash().await
    }

    /// Picks the option whose text is `label` (or, failing that, the first
    /// that contains it).
    async fn choose(&self, select: &fantoccini::elements::Element, label: &str) -> R {
        let ok = self
            .c
            .execute(
                "const s = arguments[0]; const opts = [...s.options]; \
                 const o = opts.find(o => o.text === arguments[1]) || opts.find(o => o.text.includes(arguments[1])); \
                 if (!o) return false; s.value = o.value; return true;",
                vec![serde_json::to_value(select)?, json!(label)],
            )
            .await?;
        if ok != json!(true) {
            return Err(format!("no option {label:?}").into());
        }
        Ok(())
    }

    /// Marks the page, so that [`Ui::flash`] waits for the next one.
    async fn mark(&self) -> R {
        self.c.execute("window.ursaOld = true;", vec![]).await?;
        Ok(())
    }

    /// The message the change left ("Success: …" / "Error: …") on the
    /// page that replaced the marked one.
    async fn flash(&self) -> R<String> {
        let t0 = Instant::now();
        loop {
            if self.c.get_alert_text().await.is_ok() {
                self.c.accept_alert().await?;
            }
            let old = self
                .c
                .execute("return window.ursaOld === true;", vec![])
                .await
                .unwrap_or(json!(true));
            if old == json!(false) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("the page never changed".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.text(".alert").await
    }

    /// Clicks a row's action button (confirming when it asks).
    async fn row_action(&self, row_text: &str, label: &str) -> R<String> {
        let rows = self.c.find_all(Locator::Css("table.data tbody tr")).await?;
        for r in rows {
            if r.text().await?.contains(row_text) {
                let b = r
                    .find(Locator::XPath(&format!(
                        ".//button[normalize-space()='{label}']"
                    )))
                    .await?;
                self.mark().await?;
                b.click().await?;
                return self.flash().await;
            }
        }
        Err(format!("no row with {row_text:?}").into())
    }

    /// Waits (without reloading) until the cell `field` of the row that
    /// contains `row_text` reads `want`.
    async fn wait_cell(&self, row_text: &str, field: &str, want: &str, secs: u64) -> R<()> {
        let t0 = Instant::now();
        loop {
            let got: serde_json::Value = self
                .c
                .execute(
                    "for (const r of document.querySelectorAll('table.data tbody tr')) { \
                       if (r.textContent.includes(arguments[0])) { \
                         const c = r.querySelector('td[data-field=\"' + arguments[1] + '\"]'); \
                         return c ? c.textContent : null; } } return null;",
                    vec![json!(row_text), json!(field)],
                )
                .await?;
            // A deleted row may be gone before the page drew it.
            if got == want || (want == "DELETED" && got.is_null()) {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                return Err(format!("{row_text:?} {field} stayed {got} (wanted {want})").into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// No alert() opened (an injected script would have opened one).
    async fn no_dialog(&self) -> R {
        match self.c.get_alert_text().await {
            Ok(t) => Err(format!("a dialog opened: {t:?}").into()),
            Err(_) => Ok(()),
        }
    }

    async fn shot(&self, name: &str) {
        if let Ok(png) = self.c.screenshot().await {
            let _ = std::fs::create_dir_all(&self.shots);
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
    }

    async fn cookie(&self) -> R<String> {
        Ok(self
            .c
            .get_named_cookie("ursa_session")
            .await?
            .value()
            .to_string())
    }
}

/// Runs one step; on failure saves a screenshot named for it.
async fn step<F: std::future::Future<Output = R<T>>, T>(ui: &Ui, name: &str, f: F) -> T {
    eprintln!("dashboard step: {name}");
    match tokio::time::timeout(Duration::from_secs(240), f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            ui.shot(&format!("dashboard-{name}")).await;
            let url =
                ui.c.current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
            // The browser goes with the session (and the driver's process
            // group with the test).
            let _ = ui.c.clone().close().await;
            panic!(
                "step {name} failed at {url}: {e} (screenshot in {})",
                ui.shots.display()
            );
        }
        Err(_) => {
            ui.shot(&format!("dashboard-{name}")).await;
            let _ = ui.c.clone().close().await;
            panic!("step {name} timed out");
        }
    }
}

fn target_tmp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp")
}

#[test]
fn the_dashboard_runs_a_project_in_a_real_browser() {
    if let Some(why) = browser_missing().or_else(tiny_guest_missing) {
        eprintln!("SKIP dashboard e2e: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiny = common::build_tiny(&dir.path().join("tiny"));
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("udsh{}", std::process::id() % 100000), &state);
    let tiny_arg = format!("--tiny-image={}", tiny.display());
    let cloud = Cloud::start_with_nodes(&state, "secret", &[&tiny_arg]);
    let admin = cloud.admin_token();
    // What netd made outside the test's namespace (router namespaces)
    // goes at the end, also on failure.
    let _cleanup = common::Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };
    let base = cloud.url.trim_end_matches("/v3").to_string();
    // A fresh project with a member, and another project's server.
    let (_member_token, _pid) = cloud.member_of(&admin, "dashp");
    let (st, other) = cloud.service_call(
        "POST",
        "/compute/v2.1/servers",
        &admin,
        Some(json!({"server": {"name": "admins-secret-vm", "imageRef": image_id(&cloud, &admin, "tiny"),
                               "flavorRef": "1", "networks": "none"}})),
    );
    assert_eq!(st, 202, "{other}");
    let other_id = other["server"]["id"].as_str().unwrap().to_string();
    // A private flavor whose access the admin grants in the browser.
    let (st, pf) = cloud.service_call(
        "POST",
        "/compute/v2.1/flavors",
        &admin,
        Some(
            json!({"flavor": {"name": "dash.private", "ram": 64, "vcpus": 1, "disk": 1,
                               "os-flavor-access:is_public": false}}),
        ),
    );
    assert_eq!(st, 200, "{pf}");
    let private_flavor = pf["flavor"]["id"].as_str().unwrap().to_string();
    let upload_file = dir.path().join("upload.img");
    std::fs::write(&upload_file, vec![0x5a_u8; 3 << 20]).unwrap();

    let (_driver, port) = common::chromedriver();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shots_dir = std::env::var_os("URSA_DASHBOARD_SCREENSHOTS").map(PathBuf::from);
    rt.block_on(async {
        let c = browser(port).await.expect("chromium starts under chromedriver");
        let ui = Ui {
            c,
            base: base.clone(),
            shots: target_tmp(),
        };
        let doc_shot = |name: &'static str| {
            let dir = shots_dir.clone();
            let ui = &ui;
            async move {
                if let Some(d) = dir {
                    if let Ok(png) = ui.c.screenshot().await {
                        std::fs::create_dir_all(&d).unwrap();
                        std::fs::write(d.join(format!("dashboard-{name}.png")), png).unwrap();
                    }
                }
            }
        };

        step(&ui, "login", async {
            ui.login("dashp-user", "pw-pw-pw").await?;
            let body = ui.body().await?;
            if !body.contains("dashp") || !body.contains("Instances") {
                return Err(format!("not logged in: {body}").into());
            }
            Ok(())
        })
        .await;

        step(&ui, "network", async {
            ui.go("/dashboard/project/networks").await?;
            let m = ui
                .submit("Create Network", &[("name", "private"), ("cidr", "10.0.0.0/24")])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/project/routers").await?;
            let m = ui
                .submit("Create Router", &[("name", "router1"), ("external_network", "public")])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let m = ui
                .submit(
                    "Add Interface",
                    &[("router", "router1"), ("subnet", "private-subnet 10.0.0.0/24")],
                )
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            Ok(())
        })
        .await;

        let xss = "<script>alert(1)</script>";
        step(&ui, "launch", async {
            ui.go("/dashboard/project/instances").await?;
            ui.css("#launch").await?.click().await?;
            ui.css("#id_name").await?.send_keys(xss).await?;
            doc_shot("launch").await;
            ui.css("[data-wizard=next]").await?.click().await?;
            let image = ui.css("#id_image").await?;
            ui.choose(&image, "tiny").await?;
            for _ in 0..2 {
                ui.css("[data-wizard=next]").await?.click().await?;
            }
            ui.css("input[name=networks][data-name=private]").await?.click().await?;
            ui.mark().await?;
            ui.css("#launch-submit").await?.click().await?;
            let m = ui.flash().await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            Ok(())
        })
        .await;

        step(&ui, "active-without-reload", async {
            ui.c.execute("window.ursaMarker = 42;", vec![]).await?;
            ui.wait_cell(xss, "status", "ACTIVE", 180).await?;
            let marker = ui.c.execute("return window.ursaMarker;", vec![]).await?;
            if marker != json!(42) {
                return Err("the page reloaded".into());
            }
            // The name is text: the cell shows it, no script ran.
            ui.no_dialog().await?;
            if !ui.body().await?.contains(xss) {
                return Err("the server's name is not shown as text".into());
            }
            if ui.body().await?.contains("admins-secret-vm") {
                return Err("another project's server is listed".into());
            }
            doc_shot("instances").await;
            Ok(())
        })
        .await;

        let leased = step(&ui, "console", async {
            let link = ui
                .c
                .find(Locator::XPath(&format!(
                    "//table[@id='instances']//a[normalize-space()='{xss}']"
                )))
                .await?;
            link.click().await?;
            ui.css("#console-link").await?.click().await?;
            let t0 = Instant::now();
            loop {
                let log = ui.text("#console-log").await.unwrap_or_default();
                if let Some(rest) = log.split("URSA-TINY: address ").nth(1) {
                    let ip: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    if ip.starts_with("10.0.0.") {
                        return Ok(ip);
                    }
                }
                if t0.elapsed() > Duration::from_secs(180) {
                    return Err(format!("no address in the console log:\n{log}").into());
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                ui.c.refresh().await?;
            }
        })
        .await;

        step(&ui, "topology", async {
            ui.go("/dashboard/project/network_topology").await?;
            let svg = ui.text("#topology").await?;
            for want in ["private", "public", "router1", "<script>alert(1)"] {
                if !svg.contains(want) {
                    return Err(format!("the drawing lacks {want:?}: {svg}").into());
                }
            }
            ui.no_dialog().await?;
            doc_shot("topology").await;
            Ok(())
        })
        .await;

        step(&ui, "suspend-resume", async {
            ui.go("/dashboard/project/instances").await?;
            let m = ui.row_action(xss, "Suspend").await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.wait_cell(xss, "status", "SUSPENDED", 60).await?;
            ui.go("/dashboard/project/instances").await?;
            ui.row_action(xss, "Resume").await?;
            ui.wait_cell(xss, "status", "ACTIVE", 60).await?;
            Ok(())
        })
        .await;

        step(&ui, "volume", async {
            ui.go("/dashboard/project/volumes").await?;
            let m = ui.submit("Create Volume", &[("name", "vol1"), ("size", "1")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.wait_cell("vol1", "status", "available", 60).await?;
            ui.go("/dashboard/project/volumes").await?;
            let m = ui
                .submit("Manage Attachments", &[("volume", "vol1 (1 GiB)"), ("server", xss)])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.wait_cell("vol1", "status", "in-use", 120).await?;
            Ok(())
        })
        .await;

        // A backup of the volume (in use: forced), restored to a new
        // volume, both deleted again; statuses change live.
        step(&ui, "backup", async {
            ui.go("/dashboard/project/volumes").await?;
            let m = ui.row_action("vol1", "Create Backup").await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/project/backups").await?;
            ui.wait_cell("backup-of-", "status", "available", 60).await?;
            let m = ui.row_action("backup-of-", "Restore Backup").await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/project/volumes").await?;
            ui.wait_cell("restore-", "status", "available", 60).await?;
            ui.row_action("restore-", "Delete Volume").await?;
            ui.go("/dashboard/project/backups").await?;
            ui.wait_cell("backup-of-", "status", "available", 60).await?;
            let m = ui.row_action("backup-of-", "Delete Volume Backup").await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.wait_cell("backup-of-", "status", "DELETED", 60).await?;
            Ok(())
        })
        .await;

        step(&ui, "floating-ip", async {
            ui.go("/dashboard/project/floating_ips").await?;
            let m = ui.submit("Allocate IP To Project", &[("pool", "public")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let fip = m.trim_end_matches('.').rsplit(' ').next().unwrap_or("").to_string();
            let m = ui
                .submit("Associate", &[("id", &fip), ("port", &format!("{leased} ("))])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let t = ui.text("#floating_ips").await?;
            if !t.contains(&fip) || !t.contains(&leased) {
                return Err(format!("the floating IP is not mapped: {t}").into());
            }
            Ok(())
        })
        .await;

        step(&ui, "snapshot", async {
            ui.go("/dashboard/project/instances").await?;
            let link = ui
                .c
                .find(Locator::XPath(&format!(
                    "//table[@id='instances']//a[normalize-space()='{xss}']"
                )))
                .await?;
            link.click().await?;
            let m = ui.submit("Create Snapshot", &[("name", "snap1")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/project/images").await?;
            if !ui.text("#images").await?.contains("snap1") {
                return Err("the snapshot is not among the images".into());
            }
            Ok(())
        })
        .await;

        step(&ui, "upload", async {
            ui.go("/dashboard/project/images").await?;
            ui.css("details:has(form[data-form=\"Create Image\"]) > summary")
                .await?
                .click()
                .await?;
            ui.css("form[data-upload] [name=name]").await?.send_keys("uploaded").await?;
            let format = ui.css("form[data-upload] [name=disk_format]").await?;
            ui.choose(&format, "RAW").await?;
            ui.css("form[data-upload] input[type=file]")
                .await?
                .send_keys(&upload_file.display().to_string())
                .await?;
            ui.mark().await?;
            ui.css("form[data-upload] button[type=submit]").await?.click().await?;
            let m = ui.flash().await?;
            if !m.contains("uploaded") {
                return Err(m.into());
            }
            Ok(())
        })
        .await;

        step(&ui, "object-store", async {
            ui.go("/dashboard/project/containers").await?;
            let m = ui.submit("Create Container", &[("name", "dash-box")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/project/containers/dash-box").await?;
            ui.css("details:has(form[data-form=\"Upload Object\"]) > summary")
                .await?
                .click()
                .await?;
            ui.css("form[data-upload] [name=name]").await?.send_keys("dir/blob.bin").await?;
            ui.css("form[data-upload] input[type=file]")
                .await?
                .send_keys(&upload_file.display().to_string())
                .await?;
            ui.mark().await?;
            ui.css("form[data-upload] button[type=submit]").await?.click().await?;
            let m = ui.flash().await?;
            if !m.contains("dir/blob.bin") {
                return Err(m.into());
            }
            if !ui.text("#objects").await?.contains("dir/") {
                return Err("the pseudo-folder is not listed".into());
            }
            Ok(())
        })
        .await;
        tokio::task::block_in_place(|| {
            let member = cloud.token("dashp-user", "pw-pw-pw", Some("dashp")).unwrap();
            let (_, me) = cloud.call("GET", "/auth/projects", &member, None);
            let pid = me["projects"][0]["id"].as_str().unwrap().to_string();
            let got = cloud
                .http()
                .get(format!("{base}/v1/AUTH_{pid}/dash-box/dir/blob.bin"))
                .header("X-Auth-Token", &member)
                .send()
                .unwrap()
                .bytes()
                .unwrap();
            assert!(got.len() == 3 << 20 && got.iter().all(|b| *b == 0x5a), "the object's bytes differ");
        });

        // An image property that is an HTML attack, set through the API.
        let img = tokio::task::block_in_place(|| {
            let member = cloud.token("dashp-user", "pw-pw-pw", Some("dashp")).unwrap();
            let id = image_id(&cloud, &member, "uploaded");
            // The browser's upload arrived whole.
            let (_, v) = cloud.service_call("GET", &format!("/image/v2/images/{id}"), &member, None);
            assert_eq!((v["status"].as_str(), v["size"].as_u64()), (Some("active"), Some(3 << 20)), "{v}");
            let r = cloud
                .http()
                .patch(format!("{base}/image/v2/images/{id}"))
                .header("X-Auth-Token", &member)
                .header("content-type", "application/openstack-images-v2.1-json-patch")
                .body(json!([{"op": "add", "path": "/note", "value": "\"><img src=x onerror=alert(1)>"}]).to_string())
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            id
        });
        step(&ui, "image-property-is-text", async {
            ui.go("/dashboard/project/images").await?;
            let t = ui.text("#images").await?;
            ui.no_dialog().await?;
            if !t.contains("note=\"><img src=x onerror=alert(1)>") {
                return Err(format!("the property is not shown as text: {t}").into());
            }
            let imgs = ui.c.find_all(Locator::Css("#images img")).await?;
            if !imgs.is_empty() {
                return Err("an <img> was injected".into());
            }
            let _ = &img;
            Ok(())
        })
        .await;

        step(&ui, "isolation", async {
            ui.go(&format!("/dashboard/project/instances/{other_id}")).await?;
            let b = ui.body().await?;
            if !b.contains("404") || !b.contains("could not be found") {
                return Err(format!("another project's server id gave: {b}").into());
            }
            ui.go("/dashboard/admin/instances").await?;
            if ui.body().await?.contains("admins-secret-vm") {
                return Err("a member saw the admin's server".into());
            }
            Ok(())
        })
        .await;

        let cookie = step(&ui, "csrf", async {
            let cookie = ui.cookie().await?;
            let st = tokio::task::block_in_place(|| {
                cloud
                    .http()
                    .post(format!("{base}/dashboard/project/volumes"))
                    .header("cookie", format!("ursa_session={cookie}"))
                    .form(&[("name", "sneaky"), ("size", "1")])
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            });
            if st != 403 {
                return Err(format!("a POST without the CSRF token got {st}").into());
            }
            Ok(cookie)
        })
        .await;

        step(&ui, "delete-everything", async {
            ui.go("/dashboard/project/volumes").await?;
            let m = ui.submit("Detach Volume", &[("volume", "vol1 (1 GiB)")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.wait_cell("vol1", "status", "available", 180).await?;
            ui.go("/dashboard/project/volumes").await?;
            ui.row_action("vol1", "Delete Volume").await?;
            ui.go("/dashboard/project/floating_ips").await?;
            ui.row_action("172.24.4.", "Release Floating IP").await?;
            ui.go("/dashboard/project/instances").await?;
            ui.row_action(xss, "Delete Instance").await?;
            ui.wait_cell(xss, "status", "DELETED", 120).await?;
            for name in ["snap1", "uploaded"] {
                ui.go("/dashboard/project/images").await?;
                let m = ui.row_action(name, "Delete Image").await?;
                if !m.starts_with("Success") {
                    return Err(m.into());
                }
            }
            ui.go("/dashboard/project/volumes").await?;
            let t0 = Instant::now();
            while ui.text("#volumes").await?.contains("vol1") {
                if t0.elapsed() > Duration::from_secs(60) {
                    return Err("vol1 was never deleted".into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                ui.c.refresh().await?;
            }
            Ok(())
        })
        .await;

        step(&ui, "logout", async {
            ui.css("#logout").await?.click().await?;
            ui.css("#id_username").await?;
            let (st, loc) = tokio::task::block_in_place(|| {
                let r = reqwest::blocking::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap()
                    .get(format!("{base}/dashboard/project/instances"))
                    .header("cookie", format!("ursa_session={cookie}"))
                    .send()
                    .unwrap();
                let loc = r
                    .headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                (r.status().as_u16(), loc)
            });
            if st != 303 || !loc.starts_with("/dashboard/auth/login") {
                return Err(format!("the old cookie got {st} {loc}").into());
            }
            Ok(())
        })
        .await;

        step(&ui, "admin", async {
            ui.login("admin", "secret").await?;
            doc_shot("overview").await;
            ui.go("/dashboard/admin/flavors").await?;
            let m = ui
                .submit(
                    "Create Flavor",
                    &[("name", "dash.flavor"), ("vcpus", "2"), ("ram", "256"), ("disk", "1"),
                      ("extra_specs", "hw:cpu_policy=shared")],
                )
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let t = ui.text("#flavors").await?;
            if !t.contains("dash.flavor") || !t.contains("hw:cpu_policy=shared") {
                return Err(format!("the flavor is not listed: {t}").into());
            }
            let m = ui
                .submit(
                    "Update Flavor Access",
                    &[("id", "dash.private"), ("project", "dashp"), ("action", "Grant")],
                )
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/identity/projects").await?;
            let m = ui.submit("Create Project", &[("name", "dash-new")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/admin/aggregates").await?;
            let m = ui
                .submit("Create Host Aggregate", &[("name", "dash-agg"), ("zone", "dash-zone")])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let m = ui.submit("Manage Hosts", &[("aggregate", "dash-agg")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            if !ui.text("#aggregates").await?.contains("dash-zone") {
                return Err("the aggregate is not listed".into());
            }
            ui.go("/dashboard/identity/groups").await?;
            let m = ui.submit("Create Group", &[("name", "dash-group")]).await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            let m = ui
                .submit("Add Users", &[("id", "dash-group"), ("user", "dashp-user")])
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            ui.go("/dashboard/identity/projects").await?;
            let m = ui
                .submit(
                    "Manage Members",
                    &[("project", "dash-new"), ("user", "dashp-user"), ("role", "member")],
                )
                .await?;
            if !m.starts_with("Success") {
                return Err(m.into());
            }
            Ok(())
        })
        .await;
        let _ = ui.c.close().await;
    });
    // The member of dash-new can log in to it: the assignment is real.
    assert!(cloud
        .token("dashp-user", "pw-pw-pw", Some("dash-new"))
        .is_ok());
    // The grant is in the flavor's access list.
    let (_, access) = cloud.service_call(
        "GET",
        &format!("/compute/v2.1/flavors/{private_flavor}/os-flavor-access"),
        &admin,
        None,
    );
    let (_, p) = cloud.call("GET", "/projects?name=dashp", &admin, None);
    let dashp = p["projects"][0]["id"].clone();
    assert!(
        access["flavor_access"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["tenant_id"] == dashp)),
        "{access}"
    );
    login_is_slowed_down(&cloud, &base);
}

/// The id of the image named `name`, as `token` sees it.
fn image_id(cloud: &Cloud, token: &str, name: &str) -> String {
    let (_, v) = cloud.service_call("GET", &format!("/image/v2/images?name={name}"), token, None);
    v["images"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// After three wrong passwords in a row, a fourth attempt is refused
/// without trying the password (429), even with the right one.
fn login_is_slowed_down(cloud: &Cloud, base: &str) {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let attempt = |password: &str| {
        let page = http
            .get(format!("{base}/dashboard/auth/login"))
            .send()
            .unwrap();
        let csrf = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("ursa_login_csrf="))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        http.post(format!("{base}/dashboard/auth/login"))
            .header("cookie", format!("ursa_login_csrf={csrf}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("domain", "Default"),
                ("username", "admin"),
                ("password", password),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..3 {
        assert_eq!(attempt("wrong"), 401);
    }
    assert_eq!(
        attempt(&cloud.password),
        429,
        "the fourth try comes too soon"
    );
}
