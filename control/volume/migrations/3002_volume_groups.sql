-- The generic group a volume belongs to, as a column: a group's members
-- are found by an index, not by reading every volume of its project.
-- Volumes and group snapshots stored before this column get it at start (see
-- record_table::index_group_members).
ALTER TABLE vol_records ADD COLUMN group_id TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS vol_records_by_group ON vol_records (kind, group_id);
