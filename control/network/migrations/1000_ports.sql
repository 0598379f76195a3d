-- The network service's ports as rows (they were documents of kind
-- "port"): the attributes its queries select, sort and join on are columns
-- with the indexes those queries need; the whole record as Neutron shows
-- it (plus its internal ursa: attributes) is `body`. Portable between
-- SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS net_ports (
    id           TEXT NOT NULL PRIMARY KEY,
    project_id   TEXT NOT NULL,
    network_id   TEXT NOT NULL,
    mac_address  TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    device_owner TEXT NOT NULL,
    name         TEXT NOT NULL,
    host         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (network_id, mac_address)
);
CREATE INDEX IF NOT EXISTS net_ports_by_project ON net_ports (project_id, id);
CREATE INDEX IF NOT EXISTS net_ports_by_network ON net_ports (network_id, id);
CREATE INDEX IF NOT EXISTS net_ports_by_device ON net_ports (device_id);
CREATE INDEX IF NOT EXISTS net_ports_by_host ON net_ports (host);
CREATE INDEX IF NOT EXISTS net_ports_by_name ON net_ports (name, id);
CREATE INDEX IF NOT EXISTS net_ports_by_created ON net_ports (created_at, id);

-- Every fixed IP of every port: an address is taken once per subnet by the
-- primary key. `ip_offset` is the address's distance from the subnet's
-- network address (-1 past 2^63, which only a requested IPv6 address can
-- be); allocation reads the highest offset in a pool, then a gap.
CREATE TABLE IF NOT EXISTS net_ip_allocations (
    subnet_id  TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    ip_offset  BIGINT NOT NULL,
    port_id    TEXT NOT NULL,
    network_id TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX IF NOT EXISTS net_ip_by_offset ON net_ip_allocations (subnet_id, ip_offset);
CREATE INDEX IF NOT EXISTS net_ip_by_port ON net_ip_allocations (port_id);
CREATE INDEX IF NOT EXISTS net_ip_by_address ON net_ip_allocations (ip_address);
