#!/bin/sh
# Berth's PostgreSQL entrypoint: initdb on a new primary, pg_basebackup on a new replica, pg_rewind when an
# old primary rejoins as a replica, then postgres in the foreground. Reads the member's role at every start.
set -eu
. "$(dirname "$0")/common.sh"

berth_drop_root sh "$0" "$@"

# A member demoted in this very Pod must not start again: the operator is about to delete the Pod.
while [ -f "$PGDATA/berth.fenced" ] && [ "$(cat "$PGDATA/berth.fenced")" = "${BERTH_POD_UID:-}" ]; do
  echo "berth: fenced (demoted in this Pod); waiting to be deleted"; sleep 5
done
rm -f "$PGDATA/berth.fenced"

role=$(berth_role)
while [ "$role" = fenced ]; do echo "berth: fenced; waiting to be deleted"; sleep 5; role=$(berth_role); done
echo "berth: starting as $role"

wait_for_primary() {
  until pg_isready -q -h "$BERTH_PRIMARY_HOST" -p "$BERTH_PRIMARY_PORT"; do
    echo "berth: waiting for the primary at $BERTH_PRIMARY_HOST:$BERTH_PRIMARY_PORT"; sleep 1
  done
}

configure() {
  cat >> "$PGDATA/postgresql.conf" <<CONF
# Berth: replication settings
listen_addresses = '*'
wal_level = replica
max_wal_senders = 16
max_replication_slots = 16
hot_standby = on
wal_log_hints = on
unix_socket_directories = '$BERTH_PG_SOCKET_DIR'
CONF
  cat > "$PGDATA/pg_hba.conf" <<HBA
local all all trust
host all all all scram-sha-256
host replication all all scram-sha-256
HBA
}

follow_primary() {
  touch "$PGDATA/standby.signal"
  echo "primary_conninfo = '$(berth_conninfo)'" >> "$PGDATA/postgresql.auto.conf"
}

clone() {
  wait_for_primary
  rm -rf "$PGDATA" && mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  PGPASSWORD=${POSTGRES_PASSWORD:-} pg_basebackup -h "$BERTH_PRIMARY_HOST" -p "$BERTH_PRIMARY_PORT" -U postgres \
    -D "$PGDATA" -X stream -c fast
  follow_primary
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$role" = primary ] || [ "$role" = peer ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}" > "$pwfile"
    mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    configure
  else
    clone
  fi
elif [ "$role" = replica ] && [ ! -f "$PGDATA/standby.signal" ]; then
  # An old primary rejoining: rewind onto the new primary's timeline (pg_rewind recovers a crashed data
  # directory first), or clone afresh when that is impossible.
  wait_for_primary
  if PGPASSWORD=${POSTGRES_PASSWORD:-} pg_rewind -D "$PGDATA" --source-server="$(berth_conninfo)"; then
    follow_primary
  else
    echo "berth: pg_rewind failed; cloning afresh"
    clone
  fi
elif [ "$role" = replica ]; then
  # The primary may have moved while this member was down: point it at the current one.
  echo "primary_conninfo = '$(berth_conninfo)'" >> "$PGDATA/postgresql.auto.conf"
elif [ "$role" = primary ] && [ -f "$PGDATA/standby.signal" ]; then
  # Labelled primary while its promotion was interrupted: start promoted.
  rm -f "$PGDATA/standby.signal"
fi
exec postgres -D "$PGDATA"
