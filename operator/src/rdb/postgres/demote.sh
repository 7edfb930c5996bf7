#!/bin/sh
# Berth's demote hook, run in the old primary of a switchover after it left <name>-rw: stop writes (read-only
# default, client sessions ended), checkpoint, and print the final WAL position (an integer, last line).
# The database keeps running so the replicas can fetch everything; the operator then deletes the Pod.
set -eu
. "$(dirname "$0")/common.sh"
berth_drop_root sh "$0" "$@"
# Recorded first: if the container restarts in this Pod, the entrypoint must not start a primary again.
echo "${BERTH_POD_UID:-fenced}" > "$PGDATA/berth.fenced"
berth_psql >/dev/null <<'SQL'
ALTER SYSTEM SET default_transaction_read_only = on;
SELECT pg_reload_conf();
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();
CHECKPOINT;
SQL
berth_psql -c "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
