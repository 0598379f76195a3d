//! Container sync (Swift's `X-Container-Sync-To` with
//! `X-Container-Sync-Key`): a duty copies each syncing container's new
//! objects to its target container in this cloud, keeping their
//! timestamps, when the target names the same key. The sync target is a
//! realm path (`//realm/cluster/AUTH_<project>/<container>`) or a URL
//! ending in `/v1/AUTH_<project>/<container>`; how far each container has
//! synced is a cursor row, so a round reads only what changed.

use crate::table::{self, Object, Stored};
use crate::Objects;

/// The (account, container) a sync target names.
pub fn target(to: &str) -> Option<(String, String)> {
    let mut parts = to.trim_end_matches('/').rsplit('/');
    let container = parts.next()?.to_string();
    let account = parts.next()?.to_string();
    (account.starts_with("AUTH_") && !container.is_empty()).then_some((account, container))
}

impl Objects {
    /// One round of container sync; how many objects it copied.
    pub async fn sync_once(&self) -> Result<usize, table::TableError> {
        let mut copied = 0;
        for row in table::syncs(&self.store).await? {
            let Some((account, container)) = target(&row.sync_to) else {
                continue;
            };
            let Some(dest) = table::container(&self.store, &account, &container).await? else {
                continue;
            };
            // The target must agree to receive: the same key on its side.
            if dest.meta.get("x-container-sync-key") != Some(&row.sync_key) {
                continue;
            }
            let new =
                table::objects_since(&self.store, &row.account, &row.container, row.cursor, 500)
                    .await?;
            let mut cursor = row.cursor;
            for o in new {
                cursor = cursor.max(o.ts);
                let there = table::object(&self.store, &account, &container, &o.name).await?;
                if there.is_some_and(|t| t.ts >= o.ts) {
                    continue;
                }
                let blob = match self.blobs.duplicate(&o.blob).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "container sync: copying a blob");
                        continue;
                    }
                };
                let copy = Object {
                    blob: blob.clone(),
                    ..o.clone()
                };
                match table::put_object(&self.store, &account, &container, &copy, |_| {
                    Ok::<(), ()>(())
                })
                .await?
                {
                    Stored::Done { replaced } => {
                        if let Some(b) = replaced {
                            self.blobs.delete(&b).await;
                            table::forget_garbage(&self.store, &b).await?;
                        }
                        copied += 1;
                    }
                    _ => self.blobs.delete(&blob).await,
                }
            }
            table::set_cursor(&self.store, &row.account, &row.container, cursor).await?;
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets() {
        assert_eq!(
            super::target("//realm/cluster/AUTH_p/c"),
            Some(("AUTH_p".into(), "c".into()))
        );
        assert_eq!(
            super::target("http://h:8080/v1/AUTH_p/c"),
            Some(("AUTH_p".into(), "c".into()))
        );
        assert_eq!(super::target("nowhere"), None);
    }
}
