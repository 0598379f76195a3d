-- The object service's accounts, containers and objects as rows. Names
-- compare byte-wise (SQLite's BINARY; on PostgreSQL the service sets the
-- name columns to COLLATE "C" after this runs), so listings page by name in
-- Swift's order. Counts of a container change in the transaction that
-- changes its objects; an account's counts are the sum of its containers.
-- Times are Swift timestamps in units of 10 µs.
CREATE TABLE IF NOT EXISTS obj_accounts (
    account TEXT NOT NULL PRIMARY KEY,
    created BIGINT NOT NULL,
    put_ts  BIGINT NOT NULL,
    meta    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS obj_containers (
    account      TEXT NOT NULL,
    name         TEXT NOT NULL,
    created      BIGINT NOT NULL,
    put_ts       BIGINT NOT NULL,
    object_count BIGINT NOT NULL,
    bytes_used   BIGINT NOT NULL,
    meta         TEXT NOT NULL,
    PRIMARY KEY (account, name)
);

CREATE TABLE IF NOT EXISTS obj_objects (
    account      TEXT NOT NULL,
    container    TEXT NOT NULL,
    name         TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    etag         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    blob         TEXT NOT NULL,
    meta         TEXT NOT NULL,
    delete_at    BIGINT,
    PRIMARY KEY (account, container, name)
);
CREATE INDEX IF NOT EXISTS obj_objects_expiring ON obj_objects (delete_at) WHERE delete_at IS NOT NULL;

-- Blobs no row names any more, deleted after the commit that dropped them
-- (and at start-up, for a crash between the two).
CREATE TABLE IF NOT EXISTS obj_garbage (
    blob  TEXT NOT NULL PRIMARY KEY,
    since BIGINT NOT NULL
);
