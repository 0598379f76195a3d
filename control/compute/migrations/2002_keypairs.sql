-- Key pairs as rows (they were documents of kind "keypair" in the
-- identity model, every one held in memory): by id (`<user>/<name>`),
-- listed per user in name order.
CREATE TABLE IF NOT EXISTS cmp_keypairs (
    id      TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cmp_keypairs_by_user ON cmp_keypairs (user_id, name);
