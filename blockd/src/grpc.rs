//! The gRPC face of blockd (proto/ursa/blockd/v1): message conversion and
//! calls into the service; errors become statuses in `service.rs`.

use crate::service::{Blockd, VolumeInfo};
use tonic::{Request, Response, Status};
use ursa_proto::blockd::v1 as pb;

pub struct Service(pub Blockd);

fn volume(v: VolumeInfo) -> pb::Volume {
    pb::Volume {
        id: v.record.id,
        pool: v.record.pool,
        size_bytes: v.record.size,
        allocated_bytes: v.allocated,
        exported: v.record.exported,
        qos: Some(pb::Qos {
            iops: v.record.qos.iops,
            bytes_per_second: v.record.qos.bytes_per_second,
        }),
        stats: v.stats.map(|s| pb::VolumeStats {
            read_ops: s.read_ops,
            read_bytes: s.read_bytes,
            write_ops: s.write_ops,
            write_bytes: s.write_bytes,
            flush_ops: s.flush_ops,
        }),
        snapshot_of: v.record.snapshot_of.unwrap_or_default(),
        clone_of: v.record.clone_of.unwrap_or_default(),
    }
}

fn limits(q: Option<pb::Qos>) -> crate::qos::Limits {
    q.map(|q| crate::qos::Limits {
        iops: q.iops,
        bytes_per_second: q.bytes_per_second,
    })
    .unwrap_or_default()
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::blockd_server::Blockd for Service {
    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn create_volume(&self, req: Request<pb::CreateVolumeRequest>) -> R<pb::Volume> {
        let r = req.into_inner();
        Ok(Response::new(volume(
            self.0
                .create(&r.id, r.size_bytes, &r.pool, limits(r.qos))
                .await?,
        )))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn delete_volume(&self, req: Request<pb::VolumeRef>) -> R<pb::DeleteReply> {
        self.0.delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteReply {}))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn resize_volume(&self, req: Request<pb::ResizeVolumeRequest>) -> R<pb::Volume> {
        let r = req.into_inner();
        Ok(Response::new(volume(
            self.0.resize(&r.id, r.size_bytes).await?,
        )))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn set_volume_qos(&self, req: Request<pb::SetVolumeQosRequest>) -> R<pb::Volume> {
        let r = req.into_inner();
        Ok(Response::new(volume(
            self.0.set_qos(&r.id, limits(r.qos)).await?,
        )))
    }

    async fn get_volume(&self, req: Request<pb::VolumeRef>) -> R<pb::Volume> {
        Ok(Response::new(volume(
            self.0.get(&req.into_inner().id).await?,
        )))
    }

    async fn list_volumes(&self, _: Request<pb::ListVolumesRequest>) -> R<pb::ListVolumesReply> {
        let volumes = self.0.list().await.into_iter().map(volume).collect();
        Ok(Response::new(pb::ListVolumesReply { volumes }))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().volume_id, snapshot = %req.get_ref().snapshot_id))]
    async fn create_snapshot(&self, req: Request<pb::CreateSnapshotRequest>) -> R<pb::Volume> {
        let r = req.into_inner();
        let v = self.0.snapshot(&r.volume_id, &r.snapshot_id).await?;
        Ok(Response::new(volume(v)))
    }

    #[tracing::instrument(skip_all, fields(source = %req.get_ref().source_id, volume = %req.get_ref().id))]
    async fn clone_volume(&self, req: Request<pb::CloneVolumeRequest>) -> R<pb::Volume> {
        let r = req.into_inner();
        let v = self.0.clone_volume(&r.source_id, &r.id).await?;
        Ok(Response::new(volume(v)))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn export_volume(&self, req: Request<pb::ExportVolumeRequest>) -> R<pb::ConnectionInfo> {
        let r = req.into_inner();
        if r.kind == pb::export_volume_request::Kind::VhostUserBlk as i32 {
            let sock = self.0.export_vhost_user(&r.id).await?;
            return Ok(Response::new(pb::ConnectionInfo {
                driver_volume_type: "vhost_user_blk".into(),
                uri: format!("unix:{}", sock.display()),
                export_name: r.id,
                socket_path: sock.display().to_string(),
                host: String::new(),
                port: 0,
            }));
        }
        if r.kind != pb::export_volume_request::Kind::Nbd as i32 {
            return Err(Status::invalid_argument(format!(
                "unknown export kind {}",
                r.kind
            )));
        }
        let c = self.0.export_nbd(&r.id).await?;
        Ok(Response::new(pb::ConnectionInfo {
            driver_volume_type: "nbd".into(),
            uri: c.uri,
            export_name: c.export_name,
            socket_path: c
                .socket
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            host: c.tcp.map(|a| a.ip().to_string()).unwrap_or_default(),
            port: c.tcp.map_or(0, |a| a.port() as u32),
        }))
    }

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn unexport_volume(&self, req: Request<pb::VolumeRef>) -> R<pb::DeleteReply> {
        self.0.unexport(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteReply {}))
    }

    async fn get_pools(&self, _: Request<pb::GetPoolsRequest>) -> R<pb::GetPoolsReply> {
        let pools = self
            .0
            .pools()
            .await
            .into_iter()
            .map(|p| pb::Pool {
                name: p.name,
                path: p.path.display().to_string(),
                capacity_bytes: p.capacity,
                free_bytes: p.free,
                provisioned_bytes: p.provisioned,
                allocated_bytes: p.allocated,
            })
            .collect();
        Ok(Response::new(pb::GetPoolsReply { pools }))
    }
}
