#!/usr/bin/env bash
# Starts Debian's PostgreSQL on loopback and prints a URL for the store tests.
# Idempotent. Usage: .ci/postgres.sh  ->  postgres://ursa:ursa@127.0.0.1:5432/ursa_test
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
cluster=$(pg_lsclusters -h | awk -v v="$ver" '$1==v {print $2; exit}')
if [ -z "$cluster" ]; then pg_createcluster "$ver" main >/dev/null; cluster=main; fi
# The role the tests use may also log in over the Unix socket with its
# password: a test in a network namespace of its own cannot reach 127.0.0.1
# of the host, but the socket's directory is the same there.
hba=/etc/postgresql/$ver/$cluster/pg_hba.conf
if ! grep -q '^local all ursa scram-sha-256' "$hba"; then
  sed -i '0,/^local/s//local all ursa scram-sha-256\nlocal/' "$hba"
  pg_ctlcluster "$ver" "$cluster" reload >/dev/null 2>&1 || true
fi
pg_ctlcluster "$ver" "$cluster" start >/dev/null 2>&1 || true
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
port=$(pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1==v && $2==c {print $3}')
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname='ursa'\" | grep -q 1 || psql -q -p $port -c \"CREATE ROLE ursa LOGIN PASSWORD 'ursa'\"; psql -q -p $port -c 'ALTER ROLE ursa CREATEDB'" >&2
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='ursa_test'\" | grep -q 1 || psql -q -p $port -c 'CREATE DATABASE ursa_test OWNER ursa'" >&2
echo "postgres://ursa:ursa@127.0.0.1:$port/ursa_test"
