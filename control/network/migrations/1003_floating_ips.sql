-- Floating IPs as rows (they were documents of kind "floatingip"), by
-- project, external network, port and router. Their addresses are taken
-- by their service ports' rows in net_ip_allocations.
CREATE TABLE IF NOT EXISTS net_floating_ips (
    id                  TEXT NOT NULL PRIMARY KEY,
    project_id          TEXT NOT NULL,
    floating_network_id TEXT NOT NULL,
    port_id             TEXT NOT NULL,
    router_id           TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS net_fip_by_project ON net_floating_ips (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS net_fip_by_network ON net_floating_ips (floating_network_id);
CREATE INDEX IF NOT EXISTS net_fip_by_port ON net_floating_ips (port_id);
CREATE INDEX IF NOT EXISTS net_fip_by_router ON net_floating_ips (router_id);
