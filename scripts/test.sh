#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check CI runs: ruff, mypy, the whole pytest suite
# (with FUSE passthrough on, then off), on SQLite + local blobs and on PostgreSQL + SeaweedFS (started by scripts/services.sh;
# ARTFS_TEST_SERVICES=0 skips that configuration).
# Extra arguments go to pytest (e.g. scripts/test.sh -k cache -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check artfs tests scripts
.venv/bin/ruff format --check artfs tests scripts
echo "== mypy" >&2
.venv/bin/mypy
cleanup=()
trap 'for step in "${cleanup[@]}"; do eval "$step"; done' EXIT
echo "== services (PostgreSQL + SeaweedFS for the postgres+s3 configuration)" >&2
if [ "${ARTFS_TEST_SERVICES:-1}" = 1 ]; then
    cleanup+=("scripts/services.sh stop >/dev/null 2>&1 || true")
    eval "$(scripts/services.sh start)"
fi
# The whole suite twice: with FUSE passthrough (the default where the kernel allows it) and
# with it off, as on a kernel or filesystem without it (mount --no-passthrough). The daemon's
# READ replies are copied in the first pass; in the second they are spliced from the cache
# file where pipes may grow to 2 MiB (fs/splicing.py): raised here for that pass, as a daemon
# with CAP_SYS_RESOURCE has it, and put back after.
echo "== pytest (passthrough on)" >&2
ARTFS_PASSTHROUGH=1 .venv/bin/pytest "$@"
echo "== pytest (passthrough off, spliced replies)" >&2
pipe_max=$(cat /proc/sys/fs/pipe-max-size)
if [ "$pipe_max" -lt 4194304 ] && (echo 4194304 >/proc/sys/fs/pipe-max-size) 2>/dev/null; then
    cleanup+=("echo $pipe_max >/proc/sys/fs/pipe-max-size")
fi
ARTFS_PASSTHROUGH=0 .venv/bin/pytest "$@"
