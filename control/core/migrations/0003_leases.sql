-- Background duties (the netd push, the power-state sync) are held by one
-- controller at a time: a lease names its holder until expires_at (unix
-- milliseconds); the holder renews it, another controller takes it once it
-- has expired.
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
