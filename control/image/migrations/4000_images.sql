-- Images and their members as rows (they were documents of kinds "image"
-- and "image_member" in the identity model, every one held in memory).
-- A list reads the images a project may see by these indexes: its own,
-- the public and community ones, and those it is a member of.
CREATE TABLE IF NOT EXISTS img_images (
    id         TEXT NOT NULL PRIMARY KEY,
    owner      TEXT NOT NULL,
    visibility TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS img_images_by_owner ON img_images (owner);
CREATE INDEX IF NOT EXISTS img_images_by_visibility ON img_images (visibility);

CREATE TABLE IF NOT EXISTS img_members (
    image_id  TEXT NOT NULL,
    member_id TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX IF NOT EXISTS img_members_by_member ON img_members (member_id);
