-- Networks and subnets as rows (they were documents of kinds "network"
-- and "subnet"). A network's columns are what lists select on (owner,
-- shared, external) and its segment (type, physical network and id, as
-- text, "" where it has none; segment ids are allocated by query on
-- them). Subnets are read by network, by project and by subnet pool.
CREATE TABLE IF NOT EXISTS net_networks (
    id               TEXT NOT NULL PRIMARY KEY,
    project_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    shared           TEXT NOT NULL,
    external         TEXT NOT NULL,
    network_type     TEXT NOT NULL,
    physical_network TEXT NOT NULL,
    segmentation_id  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    body             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_networks_by_project ON net_networks (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS net_networks_by_shared ON net_networks (shared);
CREATE INDEX IF NOT EXISTS net_networks_by_external ON net_networks (external);
CREATE INDEX IF NOT EXISTS net_networks_by_name ON net_networks (name);
CREATE INDEX IF NOT EXISTS net_networks_by_segment ON net_networks (network_type, physical_network, segmentation_id);

CREATE TABLE IF NOT EXISTS net_subnets (
    id            TEXT NOT NULL PRIMARY KEY,
    project_id    TEXT NOT NULL,
    network_id    TEXT NOT NULL,
    name          TEXT NOT NULL,
    subnetpool_id TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_subnets_by_network ON net_subnets (network_id, created_at, id);
CREATE INDEX IF NOT EXISTS net_subnets_by_project ON net_subnets (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS net_subnets_by_pool ON net_subnets (subnetpool_id);
