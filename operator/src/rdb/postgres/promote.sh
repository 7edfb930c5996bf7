#!/bin/sh
# Berth's promote hook: makes this replica the primary. Idempotent (a primary is left as it is).
set -eu
. "$(dirname "$0")/common.sh"
berth_drop_root sh "$0" "$@"
if [ "$(berth_psql -c 'select pg_is_in_recovery()')" = t ]; then
  pg_ctl promote -D "$PGDATA" -w -t 60 >/dev/null
fi
# pg_rewind reads the new timeline from the control file, which only a checkpoint updates: without this an
# old primary rejoining right away is told "no rewind required" while it has diverged.
berth_psql -c 'CHECKPOINT' >/dev/null
# A member demoted earlier carries the read-only default it was fenced with.
berth_psql -c 'ALTER SYSTEM RESET default_transaction_read_only' -c 'SELECT pg_reload_conf()' >/dev/null
echo promoted
