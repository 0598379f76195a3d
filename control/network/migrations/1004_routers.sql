-- Routers as rows (they were documents of kind "router"), by project and
-- name. Their interfaces and gateway are their ports' rows.
CREATE TABLE IF NOT EXISTS net_routers (
    id         TEXT NOT NULL PRIMARY KEY,
    project_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_routers_by_project ON net_routers (project_id, created_at, id);
