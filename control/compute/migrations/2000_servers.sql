-- The compute service's servers as rows (they were documents of kind
-- "server"): what lists, quotas, the scheduler and the duties select on
-- are columns; the record as the API keeps it is `body`. Portable between
-- SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS cmp_servers (
    id         TEXT NOT NULL PRIMARY KEY,
    project_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL,
    node       TEXT NOT NULL,
    flavor_id  TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cmp_servers_by_project ON cmp_servers (project_id, created, id);
CREATE INDEX IF NOT EXISTS cmp_servers_by_created ON cmp_servers (created, id);
CREATE INDEX IF NOT EXISTS cmp_servers_by_node ON cmp_servers (node, status);
CREATE INDEX IF NOT EXISTS cmp_servers_by_status ON cmp_servers (status);
CREATE INDEX IF NOT EXISTS cmp_servers_by_group ON cmp_servers (group_id);
