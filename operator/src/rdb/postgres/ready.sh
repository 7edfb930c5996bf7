#!/bin/sh
# Berth's readiness probe: a primary is ready when it accepts connections; a replica only once it streams
# from the primary, so a replica that is still syncing gets no <name>-ro traffic.
set -eu
. "$(dirname "$0")/common.sh"
berth_drop_root sh "$0" "$@"
pg_isready -q -h "$BERTH_PG_SOCKET_DIR" -p "$PGPORT"
if [ "$(berth_psql -c 'select pg_is_in_recovery()')" = t ]; then
  [ "$(berth_psql -c "select count(*) from pg_stat_wal_receiver where status = 'streaming'")" = 1 ]
fi
