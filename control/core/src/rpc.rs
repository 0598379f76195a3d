//! gRPC channels to the node daemons (netd, blockd, compute agents), at
//! `unix:/path` or `http://host:port`.

use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint};

fn endpoint(ep: &str) -> Result<(Endpoint, Option<PathBuf>), String> {
    match ep.strip_prefix("unix:") {
        Some(path) => Ok((
            Endpoint::try_from("http://node.invalid").map_err(|e| e.to_string())?,
            Some(PathBuf::from(path)),
        )),
        None => Ok((
            Endpoint::from_shared(ep.to_string()).map_err(|e| e.to_string())?,
            None,
        )),
    }
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

/// A channel that connects now (an unreachable daemon is an error).
pub async fn connect(ep: &str) -> Result<Channel, String> {
    let (e, path) = endpoint(ep)?;
    match path {
        Some(p) => e.connect_with_connector(unix_connector(p)).await,
        None => e.connect().await,
    }
    .map_err(|e| format!("{ep}: {e}"))
}

/// A channel that connects on first use and reconnects after a daemon
/// restarts.
pub fn lazy(ep: &str) -> Result<Channel, String> {
    let (e, path) = endpoint(ep)?;
    Ok(match path {
        Some(p) => e.connect_with_connector_lazy(unix_connector(p)),
        None => e.connect_lazy(),
    })
}
