//! What a page is made of, as the templates see it: tables that page and
//! sort on the server, forms, detail lists, and the frame around them
//! (navigation by the catalog, project switcher, messages). Every text
//! here is escaped by the templates (auto-escaping is on for `.html`).

use crate::session::Session;
use serde::Serialize;

/// One column; `sort` is the API's sort key when the column sorts.
#[derive(Serialize, Clone)]
pub struct Col {
    pub title: &'static str,
    pub sort: Option<&'static str>,
}

pub fn col(title: &'static str) -> Col {
    Col { title, sort: None }
}

pub fn sortable(title: &'static str, key: &'static str) -> Col {
    Col {
        title,
        sort: Some(key),
    }
}

#[derive(Serialize, Clone, Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    /// A name the live-status script updates (`status`, `addresses`).
    pub field: Option<&'static str>,
}

pub fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        ..Cell::default()
    }
}

pub fn link(text: impl Into<String>, href: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        href: Some(href.into()),
        field: None,
    }
}

pub fn live(field: &'static str, text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        href: None,
        field: Some(field),
    }
}

/// A button that POSTs `fields` (and the CSRF token) to `url`.
#[derive(Serialize, Clone)]
pub struct Action {
    pub label: String,
    pub url: String,
    pub fields: Vec<(String, String)>,
    pub danger: bool,
}

pub fn action(label: &str, url: impl Into<String>, fields: &[(&str, &str)]) -> Action {
    Action {
        label: label.to_string(),
        url: url.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        danger: label.starts_with("Delete") || label.starts_with("Release"),
    }
}

#[derive(Serialize, Clone, Default)]
pub struct Row {
    pub id: String,
    pub cells: Vec<Cell>,
    pub actions: Vec<Action>,
    /// The row is changing state: the script polls it.
    pub busy: bool,
}

/// A table and how to get its next page.
#[derive(Serialize, Clone, Default)]
pub struct Table {
    pub name: String,
    pub cols: Vec<Col>,
    pub rows: Vec<Row>,
    /// The URL of the next page (`marker` = the last row), when full.
    pub next: Option<String>,
    /// The URL of the first page, when this is not it.
    pub first: Option<String>,
    /// Where the live-status script asks (`/dashboard/status?kind=…`).
    pub poll: Option<String>,
    /// Sorting and filtering: the current key, direction and filter.
    pub sort: String,
    pub dir: String,
    pub filter: Option<String>,
    pub base: String,
}

/// How a listing was asked for: `?limit=&marker=&sort=&dir=&name=`.
#[derive(serde::Deserialize, Default, Clone)]
pub struct Paging {
    pub marker: Option<String>,
    pub limit: Option<u32>,
    pub sort: Option<String>,
    pub dir: Option<String>,
    pub name: Option<String>,
}

pub const PAGE: u32 = 20;

impl Paging {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(PAGE).clamp(1, 200)
    }

    /// `asc` or `desc`.
    pub fn dir(&self) -> &'static str {
        match self.dir.as_deref() {
            Some("asc") => "asc",
            _ => "desc",
        }
    }

    /// The sort key if it is one of `allowed`, else the first.
    pub fn sort<'a>(&self, allowed: &[&'a str]) -> &'a str {
        let want = self.sort.as_deref().unwrap_or("");
        allowed
            .iter()
            .find(|k| **k == want)
            .copied()
            .unwrap_or(allowed[0])
    }

    pub fn filter(&self) -> Option<&str> {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The API query for this page: `limit`, `marker`, `sort_key`,
    /// `sort_dir` and the name filter under `name_param`.
    pub fn query(&self, allowed: &[&str], name_param: &str) -> String {
        let mut q = format!(
            "limit={}&sort_key={}&sort_dir={}",
            self.limit(),
            self.sort(allowed),
            self.dir()
        );
        if let Some(m) = &self.marker {
            q.push_str(&format!("&marker={}", crate::client::enc(m)));
        }
        if let Some(n) = self.filter() {
            q.push_str(&format!("&{name_param}={}", crate::client::enc(n)));
        }
        q
    }

    /// Fills in the table's paging links from the rows it got.
    pub fn finish(&self, t: &mut Table, base: &str, allowed: &[&str]) {
        let keep = |marker: Option<&str>| {
            let mut q = format!("{base}?sort={}&dir={}", self.sort(allowed), self.dir());
            if let Some(n) = self.filter() {
                q.push_str(&format!("&name={}", crate::client::enc(n)));
            }
            if self.limit.is_some() {
                q.push_str(&format!("&limit={}", self.limit()));
            }
            if let Some(m) = marker {
                q.push_str(&format!("&marker={}", crate::client::enc(m)));
            }
            q
        };
        if t.rows.len() as u32 >= self.limit() {
            t.next = t.rows.last().map(|r| keep(Some(&r.id)));
        }
        if self.marker.is_some() {
            t.first = Some(keep(None));
        }
        t.sort = self.sort(allowed).to_string();
        t.dir = self.dir().to_string();
        t.filter = Some(self.filter().unwrap_or("").to_string());
        t.base = base.to_string();
    }
}

/// One input of a form.
#[derive(Serialize, Clone)]
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    /// text, password, number, textarea, select, multiselect, checkbox, file
    pub kind: &'static str,
    pub value: String,
    pub options: Vec<(String, String)>,
    pub required: bool,
}

pub fn field(name: &'static str, label: &'static str, kind: &'static str) -> Field {
    Field {
        name,
        label,
        kind,
        value: String::new(),
        options: vec![],
        required: false,
    }
}

impl Field {
    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub fn value(mut self, v: impl Into<String>) -> Field {
        self.value = v.into();
        self
    }

    pub fn options(mut self, o: Vec<(String, String)>) -> Field {
        self.options = o;
        self
    }
}

/// A form that POSTs to `url`.
#[derive(Serialize, Clone)]
pub struct Form {
    pub title: String,
    pub url: String,
    pub fields: Vec<Field>,
    pub submit: &'static str,
    /// Starts folded (a "Create …" button opens it).
    pub folded: bool,
}

pub fn form(title: &str, url: impl Into<String>, fields: Vec<Field>) -> Form {
    Form {
        title: title.to_string(),
        url: url.into(),
        fields,
        submit: "Submit",
        folded: true,
    }
}

/// A panel page: title, forms, tables, a key/value overview.
#[derive(Serialize, Default)]
pub struct Panel {
    pub title: String,
    pub forms: Vec<Form>,
    pub tables: Vec<Table>,
    pub facts: Vec<(String, String)>,
    /// Preformatted text (a console log).
    pub pre: Option<String>,
    /// Raw SVG built by the dashboard itself (every text in it escaped).
    pub svg: Option<String>,
    /// Links shown as buttons above the tables: (label, href, element id).
    pub buttons: Vec<(String, String, String)>,
}

impl Panel {
    /// A panel of tables and nothing else.
    pub fn of(title: impl Into<String>, tables: Vec<Table>) -> Panel {
        Panel {
            title: title.into(),
            tables,
            ..Panel::default()
        }
    }
}

/// One entry of the side navigation.
#[derive(Serialize)]
pub struct Nav {
    pub group: &'static str,
    pub title: &'static str,
    pub href: &'static str,
}

/// A group of the side navigation (Project, Admin, Identity).
#[derive(Serialize)]
pub struct NavGroup {
    pub name: &'static str,
    pub items: Vec<Nav>,
}

/// The navigation in Horizon's order of groups.
pub fn grouped(s: &Session) -> Vec<NavGroup> {
    let mut out: Vec<NavGroup> = Vec::new();
    for n in navigation(s) {
        match out.last_mut() {
            Some(g) if g.name == n.group => g.items.push(n),
            _ => out.push(NavGroup {
                name: n.group,
                items: vec![n],
            }),
        }
    }
    out
}

/// The panels, each shown only when its service is in the catalog (and
/// the Admin ones only to admins).
pub fn navigation(s: &Session) -> Vec<Nav> {
    let mut v = Vec::new();
    let mut add = |group, title, href, ok: bool| {
        if ok {
            v.push(Nav { group, title, href })
        }
    };
    let (compute, volume, image, network, object) = (
        s.has("compute"),
        s.has("volumev3") || s.has("block-storage"),
        s.has("image"),
        s.has("network"),
        s.has("object-store"),
    );
    add("Project", "Overview", "/dashboard/project/", true);
    add(
        "Project",
        "Instances",
        "/dashboard/project/instances",
        compute,
    );
    add("Project", "Images", "/dashboard/project/images", image);
    add(
        "Project",
        "Key Pairs",
        "/dashboard/project/key_pairs",
        compute,
    );
    add("Project", "Volumes", "/dashboard/project/volumes", volume);
    add(
        "Project",
        "Snapshots",
        "/dashboard/project/snapshots",
        volume,
    );
    add("Project", "Backups", "/dashboard/project/backups", volume);
    add(
        "Project",
        "Networks",
        "/dashboard/project/networks",
        network,
    );
    add("Project", "Routers", "/dashboard/project/routers", network);
    add(
        "Project",
        "Security Groups",
        "/dashboard/project/security_groups",
        network,
    );
    add(
        "Project",
        "Floating IPs",
        "/dashboard/project/floating_ips",
        network,
    );
    add(
        "Project",
        "Network Topology",
        "/dashboard/project/network_topology",
        network,
    );
    add(
        "Project",
        "Containers",
        "/dashboard/project/containers",
        object,
    );
    let admin = s.is_admin();
    add("Admin", "Overview", "/dashboard/admin/", admin);
    add(
        "Admin",
        "Hypervisors",
        "/dashboard/admin/hypervisors",
        admin && compute,
    );
    add(
        "Admin",
        "Host Aggregates",
        "/dashboard/admin/aggregates",
        admin && compute,
    );
    add(
        "Admin",
        "Instances",
        "/dashboard/admin/instances",
        admin && compute,
    );
    add(
        "Admin",
        "Flavors",
        "/dashboard/admin/flavors",
        admin && compute,
    );
    add("Admin", "Images", "/dashboard/admin/images", admin && image);
    add(
        "Admin",
        "Volumes",
        "/dashboard/admin/volumes",
        admin && volume,
    );
    add(
        "Admin",
        "Volume Types",
        "/dashboard/admin/volume_types",
        admin && volume,
    );
    add(
        "Admin",
        "Networks",
        "/dashboard/admin/networks",
        admin && network,
    );
    add(
        "Admin",
        "Routers",
        "/dashboard/admin/routers",
        admin && network,
    );
    add(
        "Admin",
        "Floating IPs",
        "/dashboard/admin/floating_ips",
        admin && network,
    );
    add("Admin", "Defaults", "/dashboard/admin/defaults", admin);
    add(
        "Admin",
        "System Information",
        "/dashboard/admin/info",
        admin,
    );
    add("Identity", "Domains", "/dashboard/identity/domains", admin);
    add("Identity", "Projects", "/dashboard/identity/projects", true);
    add("Identity", "Users", "/dashboard/identity/users", admin);
    add("Identity", "Groups", "/dashboard/identity/groups", admin);
    add("Identity", "Roles", "/dashboard/identity/roles", admin);
    add(
        "Identity",
        "Application Credentials",
        "/dashboard/identity/application_credentials",
        true,
    );
    v
}

/// A human age ("3 minutes") from an ISO 8601 time.
pub fn age(iso: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(iso).or_else(|_| {
        chrono::DateTime::parse_from_rfc3339(&format!("{}Z", iso.trim_end_matches('Z')))
    }) else {
        return iso.to_string();
    };
    let s = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    match s {
        s if s < 60 => "0 minutes".into(),
        s if s < 3600 => format!("{} minute{}", s / 60, if s / 60 == 1 { "" } else { "s" }),
        s if s < 86400 => format!("{} hour{}", s / 3600, if s / 3600 == 1 { "" } else { "s" }),
        s => format!("{} day{}", s / 86400, if s / 86400 == 1 { "" } else { "s" }),
    }
}
