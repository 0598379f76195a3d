-- A container's revision: bumped in the transaction of every object write,
-- metadata change and delete, so a cached listing page is valid exactly
-- while (created, rev) is unchanged (on any controller).
ALTER TABLE obj_containers ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
