-- Security groups and their rules as rows (they were documents of kinds
-- "security_group" and "security_group_rule"): the columns are what the
-- service selects and joins on, `body` is the record as Neutron shows it.
-- A project has one group named "default" (its default group), kept so by
-- the partial unique index. Portable between SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS net_security_groups (
    id         TEXT NOT NULL PRIMARY KEY,
    project_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_sg_by_project ON net_security_groups (project_id, name);
CREATE UNIQUE INDEX IF NOT EXISTS net_sg_one_default ON net_security_groups (project_id) WHERE name = 'default';

CREATE TABLE IF NOT EXISTS net_sg_rules (
    id                TEXT NOT NULL PRIMARY KEY,
    security_group_id TEXT NOT NULL,
    remote_group_id   TEXT NOT NULL,
    project_id        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    body              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_sg_rules_by_group ON net_sg_rules (security_group_id, created_at, id);
CREATE INDEX IF NOT EXISTS net_sg_rules_by_remote ON net_sg_rules (remote_group_id);
CREATE INDEX IF NOT EXISTS net_sg_rules_by_project ON net_sg_rules (project_id);
