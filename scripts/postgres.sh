#!/usr/bin/env bash
# A private PostgreSQL for the tests: Debian's postgresql, a throwaway
# cluster in a directory of its own (default $TMPDIR/declaw-test-postgres),
# listening only on a unix socket in that directory (no TCP port at all),
# trust auth (the socket directory is reachable only by postgres and root).
#
#   scripts/postgres.sh [start]  install if needed, start (or reuse) the
#                                cluster, print its DSN: the tests read it
#                                from DECLAW_TEST_POSTGRES
#   scripts/postgres.sh stop     stop the cluster and remove its directory
#
# Must run as root (initdb and postgres run as the postgres user).
set -euo pipefail
dir=${DECLAW_TEST_PG_DIR:-${TMPDIR:-/tmp}/declaw-test-postgres}
port=${DECLAW_TEST_PG_PORT:-54329} # names the socket file only: no TCP listener
db=declaw_test

if [ "$(id -u)" != 0 ]; then
	echo "postgres.sh: must run as root" >&2
	exit 1
fi
as_pg() { runuser -u postgres -- "$@"; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

case ${1:-start} in
start) ;;
stop)
	if [ -d "$dir/data" ] && [ -n "$(bindir)" ]; then
		as_pg "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	exit 0
	;;
*)
	echo "usage: $0 [start|stop]" >&2
	exit 2
	;;
esac

if [ -z "$(bindir)" ]; then
	echo "postgres.sh: installing postgresql" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
bin=$(bindir)

mkdir -p "$dir"
chown postgres: "$dir"
chmod 0700 "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
	as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2
		exit 1
	}
fi
if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
	# A throwaway cluster: durability settings off for speed.
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
		-o "-c listen_addresses='' -k $dir -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
		start >/dev/null || {
		tail -20 "$dir/postgres.log" >&2
		exit 1
	}
fi
if ! as_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" postgres | grep -q 1; then
	as_pg "$bin/createdb" -h "$dir" -p "$port" -U postgres "$db"
fi
echo "postgres://postgres@/$db?host=$dir&port=$port&sslmode=disable"
