//! An S3 server for tests that keep object bytes in S3: crates.io's
//! `s3s-fs` (an S3 API over a directory) on a free loopback port, in a
//! runtime of its own that stops with the value.

use std::ffi::OsString;
use std::path::Path;

pub struct S3Server {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub bucket: String,
    _runtime: tokio::runtime::Runtime,
}

pub const ACCESS_KEY: &str = "ursa-test-access";
pub const SECRET_KEY: &str = "ursa-test-secret";

impl S3Server {
    /// Serves `root` (a bucket is a directory in it) and makes `bucket`.
    pub fn start(root: &Path, bucket: &str) -> S3Server {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            while let Ok((sock, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            bucket: bucket.to_string(),
            _runtime: rt,
        }
    }

    /// The environment that points `ursa up` at this server.
    pub fn ursa_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            (
                "URSA_BLOB_STORE",
                format!("s3://{}/objects", self.bucket).into(),
            ),
            ("AWS_ENDPOINT_URL", self.endpoint.clone().into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}
