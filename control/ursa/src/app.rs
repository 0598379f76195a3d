//! The whole HTTP application: every service's routes, each service with
//! its own state, merged behind the layers every request passes
//! ([`ursa_core::http::finish`]). This is the one place that knows every
//! service.

use axum::Router;
use ursa_compute::Compute;
use ursa_core::http::{self, InProcess};
use ursa_identity::Identity;
use ursa_image::Images;
use ursa_network::Networks;
use ursa_object::Objects;
use ursa_volume::Volumes;

/// The services one controller runs.
#[derive(Clone)]
pub struct Services {
    pub identity: Identity,
    pub images: Images,
    pub objects: Objects,
    /// Absent when no storage node is configured or reachable.
    pub volumes: Option<Volumes>,
    pub networks: Networks,
    /// Absent when this host runs no compute node.
    pub compute: Option<Compute>,
    /// The control plane's database (the dashboard's sessions).
    pub store: ursa_core::store::Store,
    /// Base URL clients reach us at, without a trailing slash
    /// (e.g. `http://127.0.0.1:5000`).
    pub base_url: String,
}

/// Every service's routes in one application, and the dashboard over
/// them.
pub fn router(s: Services) -> Result<Router, ursa_dashboard::DashError> {
    let inproc = InProcess::default();
    let dashboard = ursa_dashboard::Dashboard::new(s.store.clone(), inproc.clone(), &s.base_url)?;
    let identity = ursa_identity::AppState {
        identity: s.identity.clone(),
        base_url: s.base_url.clone(),
    };
    let image = ursa_image::AppState {
        identity: s.identity.clone(),
        images: s.images.clone(),
        base_url: s.base_url.clone(),
    };
    let volume = ursa_volume::AppState {
        identity: s.identity.clone(),
        images: s.images.clone(),
        volumes: s.volumes.clone(),
        base_url: s.base_url.clone(),
    };
    let network = ursa_network::AppState {
        identity: s.identity.clone(),
        networks: s.networks.clone(),
        base_url: s.base_url.clone(),
    };
    let object = ursa_object::AppState {
        identity: s.identity.clone(),
        objects: s.objects.clone(),
    };
    let compute = ursa_compute::AppState {
        identity: s.identity,
        images: s.images,
        volumes: s.volumes,
        networks: s.networks,
        compute: s.compute,
        base_url: s.base_url,
        inproc: inproc.clone(),
    };
    let json = ursa_identity::api::routes()
        .with_state(identity)
        .merge(
            ursa_image::api::routes()
                .merge(ursa_image::metadefs::routes())
                .with_state(image.clone()),
        )
        .merge(ursa_volume::api::routes().with_state(volume))
        .merge(ursa_network::api::routes().with_state(network))
        .merge(ursa_compute::api::routes().with_state(compute));
    // Image data streams in without the JSON body limit.
    let app = ursa_object::api::routes(object)
        .merge(http::finish(
            http::limit_body(json).merge(ursa_image::api::data_routes().with_state(image)),
        ))
        .merge(http::traced(ursa_dashboard::routes(dashboard)));
    inproc.set(app.clone());
    Ok(app)
}
