#!/bin/sh
# The public postgres image's entrypoint contract, for `postgres [options]` (or options
# alone): started as root, PGDATA and the socket directory are handed to postgres (999) and
# the script runs again as postgres; an empty PGDATA is initialised with POSTGRES_USER
# (default postgres), POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
# POSTGRES_DB, POSTGRES_INITDB_ARGS and the files in /docker-entrypoint-initdb.d (*.sql, *.sh);
# then postgres runs, listening on every address with password authentication from anywhere.
# Any other command runs as given.
set -eu
case "$1" in -*) set -- postgres "$@" ;; esac
[ "$1" = postgres ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo 'docker-entrypoint: the database is uninitialised and POSTGRES_PASSWORD is not set' >&2
    echo '  (set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without a password)' >&2
    exit 1
  fi
  # The password through a pipe: never in a file, and the root filesystem may be read-only.
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, split as given
  printf '%s' "${POSTGRES_PASSWORD:-}" | initdb -D "$PGDATA" --username="$user" --pwfile=/dev/stdin ${POSTGRES_INITDB_ARGS:-}
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  # Set-up runs on the socket only, so nothing connects before it is done.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  export PGUSER="$user" PGPASSWORD="${POSTGRES_PASSWORD:-}"
  if [ "$db" != postgres ]; then
    echo 'CREATE DATABASE :"db";' | psql -q -v ON_ERROR_STOP=1 -d postgres -v db="$db"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) psql -v ON_ERROR_STOP=1 -d "$db" -f "$f" ;;
      *.sh) . "$f" ;;
    esac
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec "$@"
