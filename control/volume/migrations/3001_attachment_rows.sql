-- Each attachment of a volume as a row (Cinder's attachments API finds
-- one by id, lists a project's, filters by volume, server and status):
-- the attachment itself stays an entry of its volume's `attachments`, and
-- this table is rewritten with the volume. It replaces vol_attachments
-- (volume -> server), which start-up empties once its volumes are
-- rewritten here.
CREATE TABLE IF NOT EXISTS vol_attachment_rows (
    attachment_id TEXT NOT NULL PRIMARY KEY,
    volume_id     TEXT NOT NULL,
    server_id     TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS vol_attachment_rows_by_volume ON vol_attachment_rows (volume_id);
CREATE INDEX IF NOT EXISTS vol_attachment_rows_by_server ON vol_attachment_rows (server_id);
CREATE INDEX IF NOT EXISTS vol_attachment_rows_by_project ON vol_attachment_rows (project_id, created_at, attachment_id);
