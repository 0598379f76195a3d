-- What Nova keeps of a deleted instance that its API still shows from
-- 2.21: the instance actions (`os-instance-actions` of a deleted server),
-- written in the transaction that deletes the server's row.
CREATE TABLE IF NOT EXISTS cmp_deleted_servers (
    id         TEXT NOT NULL PRIMARY KEY,
    project_id TEXT NOT NULL,
    deleted_at TEXT NOT NULL,
    actions    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cmp_deleted_servers_by_time ON cmp_deleted_servers (deleted_at);
