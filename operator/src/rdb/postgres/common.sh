# Shared by Berth's PostgreSQL profile scripts (sourced). Everything comes from the environment the
# operator sets in member Pods (the postgres profile test sets the same variables on 127.0.0.1).
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
: "${PGPORT:=5432}"
: "${BERTH_PRIMARY_HOST:?BERTH_PRIMARY_HOST is not set}"
: "${BERTH_PRIMARY_PORT:=$PGPORT}"
: "${BERTH_PODINFO:=/etc/berth/podinfo}"
: "${BERTH_PG_SOCKET_DIR:=/var/run/postgresql}"
if [ -n "${BERTH_PG_BIN:-}" ]; then PATH="$BERTH_PG_BIN:$PATH"; fi
export PGDATA PGPORT PATH

# The role this member has now: the downward-API labels file follows relabelling (a promoted replica whose
# container restarts must come back as primary), the environment is the role the Pod was created with.
berth_role() {
  if [ -f "$BERTH_PODINFO/labels" ]; then
    r=$(sed -n 's/^berth\.dev\/role="\(.*\)"$/\1/p' "$BERTH_PODINFO/labels")
    if [ -n "$r" ]; then echo "$r"; return; fi
  fi
  echo "${BERTH_ROLE:-replica}"
}

# psql over the local socket (trusted locally; the hooks run inside the member).
berth_psql() {
  psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$BERTH_PG_SOCKET_DIR" -p "$PGPORT" -U postgres -d postgres "$@"
}

berth_conninfo() {
  echo "host=$BERTH_PRIMARY_HOST port=$BERTH_PRIMARY_PORT user=postgres password=${POSTGRES_PASSWORD:-} application_name=${HOSTNAME:-berth}"
}

# initdb, pg_ctl and postgres refuse to run as root (the official image's default user): re-run the calling
# script as the postgres user. setpriv and gosu replace the process, so signals reach postgres directly.
berth_drop_root() {
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" "$BERTH_PG_SOCKET_DIR"
    chown postgres:postgres "$(dirname "$PGDATA")" "$PGDATA" "$BERTH_PG_SOCKET_DIR"
    if command -v gosu >/dev/null; then exec gosu postgres "$@"; fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
  fi
}
