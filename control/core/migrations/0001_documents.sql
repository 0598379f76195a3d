-- Portable between SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS documents (
    kind  TEXT NOT NULL,
    id    TEXT NOT NULL,
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    body  TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, scope, name)
);

CREATE TABLE IF NOT EXISTS revision (
    id    INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO revision (id, value) VALUES (1, 0);
