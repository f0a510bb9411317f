#!/bin/sh
# Runs once, when the `db` container initialises its data directory: lets the `genloom` role
# stream WAL to a standby (the `replica` profile), with its password (scram-sha-256), never trust.
set -e
echo "host replication genloom all scram-sha-256" >> "$PGDATA/pg_hba.conf"
