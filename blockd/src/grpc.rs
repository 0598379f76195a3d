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

/// Bytes per piece of a [`pb::DataPiece`] stream.
const PIECE: u64 = 1 << 20;

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

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn changed_extents(
        &self,
        req: Request<pb::ChangedExtentsRequest>,
    ) -> R<pb::ChangedExtentsReply> {
        let r = req.into_inner();
        let base = (!r.base.is_empty()).then_some(r.base.as_str());
        let (ranges, size) = self.0.changed(&r.id, base).await?;
        Ok(Response::new(pb::ChangedExtentsReply {
            ranges: ranges
                .into_iter()
                .map(|(offset, length)| pb::ByteRange { offset, length })
                .collect(),
            size_bytes: size,
        }))
    }

    type ReadVolumeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::DataPiece, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(volume = %req.get_ref().id))]
    async fn read_volume(&self, req: Request<pb::ReadVolumeRequest>) -> R<Self::ReadVolumeStream> {
        let r = req.into_inner();
        let v = self.0.handle(&r.id).await?;
        let size = v.size();
        if let Some(bad) = r
            .ranges
            .iter()
            .find(|x| x.offset.checked_add(x.length).is_none_or(|end| end > size))
        {
            return Err(Status::out_of_range(format!(
                "range {}+{} is past the volume's {size} bytes",
                bad.offset, bad.length
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for x in r.ranges {
                let mut at = x.offset;
                let end = x.offset + x.length;
                while at < end {
                    let n = (end - at).min(PIECE);
                    let piece = v
                        .read_vec(at, n as usize)
                        .await
                        .map(|data| pb::DataPiece {
                            id: String::new(),
                            offset: at,
                            data,
                            zero_length: 0,
                        })
                        .map_err(|e| Status::internal(format!("reading at {at}: {e}")));
                    let failed = piece.is_err();
                    if tx.send(piece).await.is_err() || failed {
                        return;
                    }
                    at += n;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn write_volume(
        &self,
        req: Request<tonic::Streaming<pb::DataPiece>>,
    ) -> R<pb::DeleteReply> {
        let mut pieces = req.into_inner();
        let Some(first) = pieces.message().await? else {
            return Ok(Response::new(pb::DeleteReply {}));
        };
        let v = self.0.handle(&first.id).await?;
        if v.read_only() {
            return Err(Status::failed_precondition(format!(
                "{} is a snapshot",
                first.id
            )));
        }
        let size = v.size();
        let mut next = Some(first);
        while let Some(p) = next {
            let len = if p.zero_length > 0 {
                p.zero_length
            } else {
                p.data.len() as u64
            };
            if p.offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(Status::out_of_range(format!(
                    "piece {}+{len} is past the volume's {size} bytes",
                    p.offset
                )));
            }
            let r = if p.zero_length > 0 {
                let v = v.clone();
                tokio::task::spawn_blocking(move || v.write_zeroes(p.offset, p.zero_length, true))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r)
            } else {
                v.write_vec(p.data, p.offset, false).await
            };
            r.map_err(|e| Status::internal(format!("writing at {}: {e}", p.offset)))?;
            next = pieces.message().await?;
        }
        let v2 = v.clone();
        tokio::task::spawn_blocking(move || v2.flush())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("flushing: {e}")))?;
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
