-- Which security groups each port is in, one row per (port, group): a
-- group's member ports are found by an index (whether a group is in use,
-- its members' addresses), not by reading every port. Kept by
-- port_table::put and delete. Ports stored before this table get their rows
-- once at start (port_table::fill_groups, while 'port_groups' is pending).
CREATE TABLE IF NOT EXISTS net_port_groups (
    port_id  TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (port_id, group_id)
);
CREATE INDEX IF NOT EXISTS net_port_groups_by_group ON net_port_groups (group_id);
CREATE TABLE IF NOT EXISTS net_pending (name TEXT NOT NULL PRIMARY KEY);
INSERT INTO net_pending (name) VALUES ('port_groups');
