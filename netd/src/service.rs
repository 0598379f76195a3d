//! The daemon's core: desired state, validation, durability, reconcile
//! passes and port status. Every change follows one path: validate against
//! the current desired state → write `desired.json` → reconcile the whole
//! node (observe, plan, apply). A change that fails validation changes
//! nothing, neither the file nor the kernel.

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::{Desired, Network, NodeConfig, Port, Remotes};
use crate::names;
use crate::reconcile::{plan, Change, Underlay};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, Mutex};

/// What a reconcile pass did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub added: u32,
    pub changed: u32,
    pub removed: u32,
    pub duration_us: u64,
    pub actions: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    Active,
    Down,
    Error,
    Removed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortEvent {
    pub port_id: String,
    pub status: PortStatus,
    pub device: String,
    pub detail: String,
}

pub struct Config {
    pub state_dir: PathBuf,
    pub node: NodeConfig,
    pub metadata: crate::metadata::Config,
}

#[derive(Clone)]
pub struct Netd {
    inner: Arc<Inner>,
}

struct Inner {
    desired: Mutex<Desired>,
    kernel: Kernel,
    node: NodeConfig,
    underlay: Option<Underlay>,
    state_file: PathBuf,
    events: broadcast::Sender<PortEvent>,
    status: std::sync::Mutex<BTreeMap<String, PortEvent>>,
    dhcp: crate::dhcp::Dhcp,
    firewall: crate::firewall::Firewall,
    metadata: crate::metadata::Metadata,
    /// Each router's last applied NAT table.
    router_nft: Mutex<BTreeMap<String, String>>,
    /// Router namespaces this netd made (`<state>/namespaces.json`): the
    /// only ones it removes, since /run/netns is shared by the whole host.
    owned_ns: std::sync::Mutex<std::collections::BTreeSet<String>>,
    owned_ns_file: PathBuf,
    /// The errors of the last pass, so that a lasting failure is logged
    /// once (when it starts) and once more when it clears.
    reported: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The digest of the state the last `Sync` gave, while nothing else
    /// changed the desired state (empty otherwise).
    synced: std::sync::Mutex<Vec<u8>>,
}

impl Netd {
    /// Loads the desired state and probes the node; does not touch the kernel yet.
    pub async fn open(mut cfg: Config) -> Result<Netd> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::Io {
            context: format!("{}", cfg.state_dir.display()),
            source: e,
        })?;
        let kernel = Kernel::connect()?;
        let underlay = match cfg.node.vtep {
            Some(v) => Some(kernel.underlay(v).await?),
            None => None,
        };
        cfg.node.underlay_mtu = underlay.as_ref().map_or(1500, |u| u.mtu);
        let (vlan, why) = kernel.probe_vlan().await;
        cfg.node.vlan_supported = vlan;
        cfg.node.vlan_missing_reason = why;
        let state_file = cfg.state_dir.join("desired.json");
        let owned_ns_file = cfg.state_dir.join("namespaces.json");
        let owned_ns = std::fs::read(&owned_ns_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let desired = Desired::load(&state_file)?;
        let (events, _) = broadcast::channel(1024);
        Ok(Netd {
            inner: Arc::new(Inner {
                desired: Mutex::new(desired),
                kernel,
                node: cfg.node,
                underlay,
                state_file,
                events,
                status: std::sync::Mutex::new(BTreeMap::new()),
                dhcp: crate::dhcp::Dhcp::default(),
                firewall: crate::firewall::Firewall::default(),
                metadata: crate::metadata::Metadata::new(cfg.metadata),
                router_nft: Mutex::new(BTreeMap::new()),
                owned_ns: std::sync::Mutex::new(owned_ns),
                owned_ns_file,
                reported: Default::default(),
                synced: Default::default(),
            }),
        })
    }

    pub fn node(&self) -> &NodeConfig {
        &self.inner.node
    }

    pub fn kernel(&self) -> &Kernel {
        &self.inner.kernel
    }

    pub fn underlay(&self) -> Option<&Underlay> {
        self.inner.underlay.as_ref()
    }

    pub async fn desired(&self) -> Desired {
        self.inner.desired.lock().await.clone()
    }

    pub fn subscribe(&self) -> (Vec<PortEvent>, broadcast::Receiver<PortEvent>) {
        let rx = self.inner.events.subscribe();
        let now = self
            .inner
            .status
            .lock()
            .expect("status lock")
            .values()
            .cloned()
            .collect();
        (now, rx)
    }

    /// Applies a validated change: persist, then reconcile.
    async fn change(&self, f: impl FnOnce(&mut Desired) -> Result<()>) -> Result<Report> {
        self.change_to(f, Vec::new()).await
    }

    /// [`Netd::change`], recording `digest` (when not empty) as the digest
    /// of the state it gives; a change without one forgets it.
    async fn change_to(
        &self,
        f: impl FnOnce(&mut Desired) -> Result<()>,
        digest: Vec<u8>,
    ) -> Result<Report> {
        let mut d = self.inner.desired.lock().await;
        let mut next = d.clone();
        f(&mut next)?;
        if next != *d {
            next.save(&self.inner.state_file)?;
            *d = next;
            if digest.is_empty() {
                self.inner.synced.lock().expect("synced").clear();
            }
        }
        if !digest.is_empty() {
            *self.inner.synced.lock().expect("synced") = digest;
        }
        self.reconcile_locked(&d, false).await
    }

    /// The digest the last `Sync` gave, empty when the desired state
    /// changed since by another call (or netd restarted).
    pub fn state_digest(&self) -> Vec<u8> {
        self.inner.synced.lock().expect("synced").clone()
    }

    pub async fn ensure_network(&self, n: Network) -> Result<Report> {
        let node = &self.inner.node;
        self.change(|d| {
            d.check_network(&n, node)?;
            d.networks.insert(n.id.clone(), n);
            Ok(())
        })
        .await
    }

    pub async fn delete_network(&self, id: &str) -> Result<Report> {
        crate::model::check_id("network", id)?;
        self.change(|d| {
            if d.ports.values().any(|p| p.network_id == id) {
                return Err(Error::FailedPrecondition(format!(
                    "network {id} still has ports on this node"
                )));
            }
            if let Some(r) = d
                .routers
                .values()
                .find(|r| r.legs().any(|(l, _)| l.network_id == id))
            {
                return Err(Error::FailedPrecondition(format!(
                    "network {id} is still joined by router {}",
                    r.id
                )));
            }
            d.networks.remove(id);
            d.remotes.remove(id);
            Ok(())
        })
        .await
    }

    pub async fn ensure_port(&self, p: Port) -> Result<Report> {
        self.change(|d| {
            d.check_port(&p)?;
            d.ports.insert(p.id.clone(), p);
            Ok(())
        })
        .await
    }

    pub async fn delete_port(&self, id: &str) -> Result<Report> {
        crate::model::check_id("port", id)?;
        self.change(|d| {
            d.ports.remove(id);
            Ok(())
        })
        .await
    }

    pub async fn set_remotes(&self, network_id: &str, r: Remotes) -> Result<Report> {
        self.change(|d| {
            d.check_remotes(network_id)?;
            d.remotes.insert(network_id.to_string(), r);
            Ok(())
        })
        .await
    }

    pub async fn ensure_router(&self, r: crate::model::Router) -> Result<Report> {
        self.change(|d| {
            d.check_router(&r)?;
            d.routers.insert(r.id.clone(), r);
            Ok(())
        })
        .await
    }

    pub async fn delete_router(&self, id: &str) -> Result<Report> {
        crate::model::check_id("router", id)?;
        self.change(|d| {
            d.routers.remove(id);
            Ok(())
        })
        .await
    }

    pub async fn ensure_security_group(&self, g: crate::model::SecurityGroup) -> Result<Report> {
        self.change(|d| {
            d.check_security_group(&g)?;
            d.security_groups.insert(g.id.clone(), g);
            Ok(())
        })
        .await
    }

    pub async fn delete_security_group(&self, id: &str) -> Result<Report> {
        crate::model::check_id("security group", id)?;
        self.change(|d| {
            d.security_groups.remove(id);
            Ok(())
        })
        .await
    }

    /// Changes the held DHCP reservations (see [`crate::dhcp_hosts`]).
    pub fn update_dhcp_hosts(
        &self,
        u: ursa_proto::netd::v1::DhcpHostsUpdate,
    ) -> Result<ursa_proto::netd::v1::DhcpHostsReply> {
        self.inner.dhcp.held.update(u)
    }

    /// Replaces the whole desired state (or, with `dry_run`, plans it);
    /// `digest` is the state's (see [`Netd::state_digest`]).
    pub async fn sync(&self, want: Desired, dry_run: bool, digest: Vec<u8>) -> Result<Report> {
        want.check_all(&self.inner.node)?;
        if dry_run {
            return self.reconcile_locked(&want, true).await;
        }
        self.change_to(
            |d| {
                *d = want;
                Ok(())
            },
            digest,
        )
        .await
    }

    /// Follows the kernel's link notifications and republishes port status
    /// soon after a port's device changes behind netd's back (a guest's tap
    /// going down, a veth whose namespace vanished).
    pub fn watch_kernel(&self) -> Result<tokio::task::JoinHandle<()>> {
        use futures::StreamExt;
        let mut changes = Kernel::link_changes()?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while changes.next().await.is_some() {
                // Coalesce a burst (a reconcile creates many links at once).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                while changes.try_recv().is_ok() {}
                let want = me.inner.desired.lock().await.clone();
                let links = me.inner.kernel.links().await.unwrap_or_default();
                me.publish_status(&want, &[], &links);
                drop(links);
                give_back_memory();
            }
        }))
    }

    /// Reconciles the kernel against the current desired state.
    pub async fn reconcile(&self, dry_run: bool) -> Result<Report> {
        let d = self.inner.desired.lock().await;
        self.reconcile_locked(&d, dry_run).await
    }

    async fn reconcile_locked(&self, want: &Desired, dry_run: bool) -> Result<Report> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "reconcile",
            dry_run,
            added = tracing::field::Empty,
            changed = tracing::field::Empty,
            removed = tracing::field::Empty,
            errors = tracing::field::Empty,
            duration_us = tracing::field::Empty
        );
        self.reconcile_pass(want, dry_run, &span)
            .instrument(span.clone())
            .await
    }

    async fn reconcile_pass(
        &self,
        want: &Desired,
        dry_run: bool,
        span: &tracing::Span,
    ) -> Result<Report> {
        let t0 = Instant::now();
        let mut report = Report::default();
        let user_want = want;
        let eff = want.effective(self.inner.node.isolated_metadata);
        let want: &Desired = &eff;
        if !dry_run {
            // Router namespaces first: their legs are born inside them.
            for r in want.routers.values() {
                let ns = names::router_ns(&r.id);
                self.own_ns(&ns, true);
                if let Err(e) = crate::router::create_ns(&ns) {
                    report.errors.push(format!("router {} ({ns}): {e}", r.id));
                } else if !crate::router::ns_path(&r.id).exists() {
                    report
                        .errors
                        .push(format!("router {} ({ns}): namespace missing", r.id));
                }
            }
        }
        let obs = self.inner.kernel.observe().await?;
        let actions = plan(want, &obs, &self.inner.node, self.inner.underlay.as_ref());
        let count = |r: &mut Report, a: &crate::reconcile::Action| match a.kind() {
            Change::Added => r.added += 1,
            Change::Changed => r.changed += 1,
            Change::Removed => r.removed += 1,
        };
        if dry_run {
            for a in &actions {
                count(&mut report, a);
                report.actions.push(a.to_string());
            }
        } else if !actions.is_empty() {
            let applied = self.inner.kernel.apply(actions, &obs).await;
            for a in &applied.done {
                count(&mut report, a);
                report.actions.push(a.to_string());
            }
            for (a, e) in &applied.errors {
                report.errors.push(format!("{a}: {e}"));
            }
            let links = self.inner.kernel.links().await.unwrap_or_default();
            self.publish_status(user_want, &applied.errors, &links);
            self.serve_dhcp(want, &links);
            self.services(want, &mut report).await;
        } else {
            let links: Vec<_> = obs.links.into_values().collect();
            self.publish_status(user_want, &[], &links);
            self.serve_dhcp(want, &links);
            self.services(want, &mut report).await;
        }
        report.duration_us = t0.elapsed().as_micros() as u64;
        if report.added + report.removed > 0 {
            give_back_memory();
        }
        span.record("added", report.added);
        span.record("changed", report.changed);
        span.record("removed", report.removed);
        span.record("errors", report.errors.len());
        span.record("duration_us", report.duration_us);
        let errors_changed = !dry_run && self.log_errors(&report.errors);
        if report.added + report.changed + report.removed > 0 || errors_changed {
            tracing::info!(
                added = report.added,
                changed = report.changed,
                removed = report.removed,
                errors = report.errors.len(),
                duration_us = report.duration_us,
                "reconciled"
            );
        }
        Ok(report)
    }

    /// Logs what failed this pass and did not fail the last one (a missing
    /// `nft` once, for everything it fails), and what failed then and no
    /// longer does. Returns whether the set changed.
    fn log_errors(&self, errors: &[String]) -> bool {
        use std::collections::BTreeSet;
        let nft_missing = |e: &String| e.contains(crate::nft::NOT_INSTALLED);
        let now: BTreeSet<String> = errors.iter().cloned().collect();
        let mut last = self.inner.reported.lock().expect("reported");
        if *last == now {
            return false;
        }
        if now.iter().any(nft_missing) && !last.iter().any(nft_missing) {
            tracing::warn!(
                "{}: routers' NAT and floating IPs and security groups are not applied (shown as failed through the API) until it is",
                crate::nft::NOT_INSTALLED
            );
        }
        for e in now.difference(&last).filter(|e| !nft_missing(e)) {
            tracing::warn!(error = %e, "could not apply");
        }
        for e in last.difference(&now) {
            tracing::info!(error = %e, "applied now (failed before)");
        }
        *last = now;
        true
    }

    /// Routers (inside their namespaces), security groups and the metadata
    /// proxies, after the links they sit on exist.
    async fn services(&self, want: &Desired, report: &mut Report) {
        {
            let mut last = self.inner.router_nft.lock().await;
            for r in want.routers.values() {
                if let Err(e) = crate::router::configure(&self.inner.kernel, r, &mut last).await {
                    report.errors.push(format!(
                        "router {} ({}): {e}",
                        r.id,
                        names::router_ns(&r.id)
                    ));
                }
            }
            let keep: std::collections::BTreeSet<String> =
                want.routers.keys().map(|id| names::router_ns(id)).collect();
            let owned = self.inner.owned_ns.lock().expect("owned").clone();
            for ns in owned {
                if keep.contains(&ns) {
                    continue;
                }
                if let Some(id) = last.keys().find(|id| names::router_ns(id) == ns).cloned() {
                    last.remove(&id);
                    self.inner.metadata.stop(&id);
                }
                self.inner.kernel.forget_ns(&crate::model::netns_path(&ns));
                match crate::router::delete_ns(&ns) {
                    Ok(()) => {
                        self.own_ns(&ns, false);
                        report.removed += 1;
                        report.actions.push(format!("delete router namespace {ns}"));
                    }
                    Err(e) => report.errors.push(format!("{ns}: {e}")),
                }
            }
        }
        match self.inner.firewall.sync(want).await {
            Ok(a) if a.commands == 0 => {}
            Ok(a) => {
                report.changed += 1;
                report.actions.push(format!(
                    "security groups: {} nftables commands in one transaction (compiled in {} us, applied in {} us)",
                    a.commands, a.compile_us, a.nft_us
                ));
            }
            Err(e) => report.errors.push(format!("security groups: {e}")),
        }
        for (id, e) in self.inner.metadata.sync(want).await {
            report.errors.push(format!(
                "router {id} ({}): metadata proxy: {e}",
                names::router_ns(&id)
            ));
        }
    }

    /// Records (or forgets) a namespace as netd's own, durably, before it
    /// is made (after it is gone).
    fn own_ns(&self, ns: &str, own: bool) {
        let mut set = self.inner.owned_ns.lock().expect("owned");
        let changed = if own {
            set.insert(ns.to_string())
        } else {
            set.remove(ns)
        };
        if changed {
            if let Err(e) = crate::model::save_json(&self.inner.owned_ns_file, &*set) {
                tracing::warn!(error = %e, "cannot record namespaces");
            }
        }
    }

    /// Points the DHCP responders at the current bridges and reservations.
    fn serve_dhcp(&self, want: &Desired, links: &[crate::reconcile::LinkState]) {
        let mtus = want
            .networks
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    crate::reconcile::network_mtu(n, self.inner.underlay.as_ref()),
                )
            })
            .collect();
        let bridges = links
            .iter()
            .filter(|l| l.name.starts_with(names::BRIDGE))
            .map(|l| (l.name.clone(), l.index))
            .collect();
        // Networks served from their metadata namespace's leg instead.
        let in_ns = want
            .routers
            .values()
            .filter(|r| r.isolated)
            .filter_map(|r| {
                let l = r.interfaces.first()?;
                Some((
                    l.network_id.clone(),
                    (crate::router::ns_path(&r.id), names::router_leg(&l.port_id)),
                ))
            })
            .collect();
        self.inner.dhcp.sync(want, &mtus, &bridges, &in_ns);
    }

    /// Works out each port's status and announces the ones that changed.
    fn publish_status(
        &self,
        want: &Desired,
        errors: &[(crate::reconcile::Action, String)],
        links: &[crate::reconcile::LinkState],
    ) {
        let by_name: BTreeMap<&str, &crate::reconcile::LinkState> =
            links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut now: BTreeMap<String, PortEvent> = BTreeMap::new();
        for p in want.ports.values() {
            let dev = match p.kind {
                crate::model::PortKind::Tap => names::tap(&p.id),
                crate::model::PortKind::Veth { .. } => names::veth(&p.id),
            };
            let err = errors.iter().find(|(a, _)| a.device() == dev);
            let (status, detail) = match (err, by_name.get(dev.as_str())) {
                (Some((_, e)), _) => (PortStatus::Error, e.clone()),
                (None, None) => (PortStatus::Error, "device missing".to_string()),
                (None, Some(_)) if p.admin_down => (PortStatus::Down, String::new()),
                (None, Some(l)) if l.up => (PortStatus::Active, String::new()),
                (None, Some(_)) => (PortStatus::Down, "device down".to_string()),
            };
            now.insert(
                p.id.clone(),
                PortEvent {
                    port_id: p.id.clone(),
                    status,
                    device: dev,
                    detail,
                },
            );
        }
        let mut old = self.inner.status.lock().expect("status lock");
        for (id, ev) in &now {
            if old.get(id) != Some(ev) {
                let _ = self.inner.events.send(ev.clone());
            }
        }
        for (id, ev) in old.iter() {
            if !now.contains_key(id) {
                let _ = self.inner.events.send(PortEvent {
                    status: PortStatus::Removed,
                    detail: String::new(),
                    ..ev.clone()
                });
            }
        }
        *old = now;
    }
}

/// A pass that built or tore down many objects leaves freed heap behind
/// (netlink dumps of thousands of links); hand it back to the kernel so a
/// node's resident size reflects what netd keeps, not its peak.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
