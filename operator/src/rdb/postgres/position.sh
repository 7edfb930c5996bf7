#!/bin/sh
# Berth's position hook: prints how far this member has replicated as an integer (WAL bytes); the operator
# promotes the most advanced replica and waits for a switchover target to reach the old primary's position.
set -eu
. "$(dirname "$0")/common.sh"
berth_drop_root sh "$0" "$@"
berth_psql -c "select pg_wal_lsn_diff(case when pg_is_in_recovery()
  then greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'))
  else pg_current_wal_insert_lsn() end, '0/0')::bigint"
