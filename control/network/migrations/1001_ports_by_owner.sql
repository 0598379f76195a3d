-- The pusher reads the ports a node can need: bound ones (host), the
-- service's own (device_owner network:*), and those of DHCP networks.
CREATE INDEX IF NOT EXISTS net_ports_by_owner ON net_ports (device_owner);
