//! Project → Network Topology: the project's networks (and the external
//! and shared ones it reaches), routers and servers drawn as SVG on the
//! server. Networks are horizontal bars; each router and server is a box
//! in its own column, with a line down or up to every network it has a
//! port on (found through the ports' `device_id`).

use super::{Networks, Ports};
use crate::page::Panel;
use crate::{escape, Ctx, Result};
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One box: what it is, its name, its link and the networks it is on.
pub struct Device {
    pub kind: &'static str,
    pub name: String,
    pub href: String,
    pub networks: Vec<usize>,
}

const ROW: i64 = 110;
const TOP: i64 = 40;
const COL: i64 = 150;
const LEFT: i64 = 190;

fn short(s: &str) -> String {
    let s: String = s.chars().take(16).collect();
    escape(&s)
}

/// The drawing: `nets` are (name, CIDRs); every text is escaped.
pub fn svg(nets: &[(String, String, bool)], devices: &[Device]) -> String {
    let width = LEFT + COL * devices.len().max(1) as i64 + 40;
    let height = TOP + ROW * nets.len().max(1) as i64;
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"topology\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Network topology\">"
    );
    let y_of = |i: usize| TOP + ROW * i as i64;
    for (i, (name, cidrs, external)) in nets.iter().enumerate() {
        let y = y_of(i);
        let class = if *external { "net ext" } else { "net" };
        let _ = write!(
            o,
            "<g class=\"{class}\"><rect x=\"10\" y=\"{}\" width=\"{}\" height=\"14\" rx=\"7\"/>\
             <text x=\"14\" y=\"{}\" class=\"netname\">{}</text>\
             <text x=\"14\" y=\"{}\" class=\"cidr\">{}</text></g>",
            y - 7,
            width - 20,
            y - 12,
            short(name),
            y + 22,
            escape(cidrs)
        );
    }
    for (j, d) in devices.iter().enumerate() {
        let x = LEFT + COL * j as i64;
        let (lo, hi) = match (d.networks.iter().min(), d.networks.iter().max()) {
            (Some(a), Some(b)) => (*a, *b),
            _ => (0, 0),
        };
        // Between its first and last network, or just below a lone one.
        let y = if lo == hi {
            y_of(lo) + 30
        } else {
            (y_of(lo) + y_of(hi)) / 2 - 22
        };
        for n in &d.networks {
            let ny = y_of(*n);
            let (y1, y2) = if ny < y { (ny, y) } else { (y + 44, ny) };
            let _ = write!(
                o,
                "<line class=\"link\" x1=\"{0}\" y1=\"{y1}\" x2=\"{0}\" y2=\"{y2}\"/>\
                 <circle class=\"port\" cx=\"{0}\" cy=\"{ny}\" r=\"4\"/>",
                x + 55
            );
        }
        let _ = write!(
            o,
            "<a href=\"{}\"><g class=\"device {}\"><rect x=\"{x}\" y=\"{y}\" width=\"110\" height=\"44\" rx=\"4\"/>\
             <text x=\"{}\" y=\"{}\" class=\"kind\">{}</text><text x=\"{}\" y=\"{}\">{}</text></g></a>",
            escape(&d.href),
            d.kind,
            x + 8,
            y + 16,
            d.kind,
            x + 8,
            y + 34,
            short(&d.name)
        );
    }
    o.push_str("</svg>");
    o
}

pub async fn page(c: Ctx) -> Result<Response> {
    let nets: Networks = c.api.get("/network/v2.0/networks?limit=200").await?;
    let subnets: super::network::Subnets = c.api.get("/network/v2.0/subnets?limit=500").await?;
    let routers: super::network::Routers = c
        .api
        .get(&format!(
            "/network/v2.0/routers?project_id={}",
            c.s.project_id
        ))
        .await?;
    let ports: Ports = c
        .api
        .get(&format!(
            "/network/v2.0/ports?project_id={}&limit=1000",
            c.s.project_id
        ))
        .await?;
    let servers: super::ServerNames = c
        .api
        .get("/compute/v2.1/servers?limit=200")
        .await
        .unwrap_or_default();
    let index: BTreeMap<&str, usize> = nets
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let on = |device: &str, gateway: Option<&str>| {
        let mut v: Vec<usize> = ports
            .ports
            .iter()
            .filter(|p| p.device_id == device)
            .filter_map(|p| index.get(p.network_id.as_str()).copied())
            .chain(gateway.and_then(|g| index.get(g).copied()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut devices: Vec<Device> = routers
        .routers
        .iter()
        .map(|r| Device {
            kind: "router",
            name: r.name.clone(),
            href: "/dashboard/project/routers".into(),
            networks: on(
                &r.id,
                r.external_gateway_info
                    .as_ref()
                    .map(|g| g.network_id.as_str()),
            ),
        })
        .collect();
    devices.extend(servers.servers.iter().map(|s| Device {
        kind: "server",
        name: s.name.clone(),
        href: format!("/dashboard/project/instances/{}", s.id),
        networks: on(&s.id, None),
    }));
    let drawn: Vec<(String, String, bool)> = nets
        .networks
        .iter()
        .map(|n| {
            let cidrs = subnets
                .subnets
                .iter()
                .filter(|s| s.network_id == n.id)
                .map(|s| s.cidr.clone())
                .collect::<Vec<_>>()
                .join(" ");
            (n.name.clone(), cidrs, n.external)
        })
        .collect();
    c.panel(Panel {
        title: "Network Topology".into(),
        svg: Some(svg(&drawn, &devices)),
        ..Panel::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_drawing_are_text() {
        let s = svg(
            &[("<script>x</script>".into(), "10.0.0.0/24".into(), false)],
            &[Device {
                kind: "server",
                name: "\"><img src=x>".into(),
                href: "/dashboard/project/instances/1".into(),
                networks: vec![0],
            }],
        );
        assert!(!s.contains("<script>") && !s.contains("<img"));
        assert!(s.contains("&lt;script&gt;x&lt;/sc"));
        assert!(s.contains("10.0.0.0/24"));
    }
}
