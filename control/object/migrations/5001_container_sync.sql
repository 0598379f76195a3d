-- Container sync: the containers that sync to another, and how far each
-- has synced (the newest object timestamp it has copied). Kept by
-- container PUT and POST, so the sync duty reads only these rows; objects
-- are read past the cursor through their time index.
CREATE TABLE IF NOT EXISTS obj_sync (
    account   TEXT NOT NULL,
    container TEXT NOT NULL,
    sync_to   TEXT NOT NULL,
    sync_key  TEXT NOT NULL,
    cursor    BIGINT NOT NULL,
    PRIMARY KEY (account, container)
);
CREATE INDEX IF NOT EXISTS obj_objects_by_time ON obj_objects (account, container, ts);
