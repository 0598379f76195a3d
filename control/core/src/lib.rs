//! What every service of Ursa's control plane shares, and nothing that
//! belongs to one service. Each service crate (identity, network, image,
//! volume, compute) depends on this one and on `ursa-proto`; the `ursa`
//! binary crate assembles them.
//!
//! - [`http`]: the HTTP plumbing: the typed body extractor, the [`http::Auth`]
//!   extractor (over any state that can [`http::Authenticate`] a token), the
//!   request id, the layers every request passes (span, body limit, error
//!   shape, fallbacks) and [`http::InProcess`], the call to another service
//!   of this process as the caller.
//! - [`policy`]: the authenticated [`policy::Caller`] and the default admin /
//!   member / reader rules.
//! - [`error`]: the control plane's one error type, turned into OpenStack's
//!   error body in exactly one place.
//! - [`store`]: SQLite (embedded, the default) or PostgreSQL behind one
//!   interface, with the migrations and the change feed.
//! - [`duty`]: background duties held by one controller at a time under a
//!   lease in the database.
//! - [`rpc`]: gRPC channels to the node daemons (TCP or unix sockets).

pub mod duty;
pub mod error;
pub mod http;
pub mod policy;
pub mod rpc;
pub mod store;
