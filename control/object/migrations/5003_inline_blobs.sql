-- Small objects' bytes, kept in the database instead of the blob store:
-- written in the transaction of the object row that names them (so one
-- group commit makes a batch of small PUTs durable), named like blobs
-- (`i` and a random id) and collected like them.
CREATE TABLE IF NOT EXISTS obj_inline (
    blob TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
