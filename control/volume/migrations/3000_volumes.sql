-- The volume service's volumes and snapshots as rows (they were documents
-- of kinds "volume" and "volume_snapshot"): one table, by kind, with what
-- lists, quotas and the task duty select on as columns and the record as
-- `body`; and which server each volume is attached to. Portable between
-- SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS vol_records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    project_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    volume_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS vol_records_by_project ON vol_records (kind, project_id, created_at, id);
CREATE INDEX IF NOT EXISTS vol_records_by_status ON vol_records (kind, status);
CREATE INDEX IF NOT EXISTS vol_records_by_volume ON vol_records (kind, volume_id);

CREATE TABLE IF NOT EXISTS vol_attachments (
    volume_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    PRIMARY KEY (volume_id, server_id)
);
CREATE INDEX IF NOT EXISTS vol_attachments_by_server ON vol_attachments (server_id);
