# Source this: installs PostgreSQL from Debian's packages when missing, starts a throwaway
# server on 127.0.0.1:${PGPORT:-54329} and exports CRYPTOJ_TEST_POSTGRES_URL. Returns non-zero on failure.
_cj_pg_start() {
  local bindir port datadir logfile
  port="${PGPORT:-54329}"
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    command -v apt-get >/dev/null 2>&1 || return 1
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || return 1
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$bindir/initdb" ] || return 1
  fi
  datadir=$(mktemp -d /tmp/cryptoj-pg.XXXXXX)
  logfile="$datadir.log"
  local run=()
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || return 1
    chown postgres "$datadir"
    touch "$logfile" && chown postgres "$logfile"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bindir/initdb" -D "$datadir" -U cryptoj --auth=trust >/dev/null || return 1
  "${run[@]}" "$bindir/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $datadir" start >/dev/null || return 1
  "$bindir/createdb" -h 127.0.0.1 -p "$port" -U cryptoj cryptoj_test || return 1
  export CRYPTOJ_TEST_POSTGRES_URL="postgresql+asyncpg://cryptoj@127.0.0.1:$port/cryptoj_test"
  export CRYPTOJ_PG_DATADIR="$datadir"
  return 0
}
_cj_pg_start
