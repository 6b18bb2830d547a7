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
echo "== services (PostgreSQL + SeaweedFS for the postgres+s3 configuration)" >&2
if [ "${ARTFS_TEST_SERVICES:-1}" = 1 ]; then
    trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
    eval "$(scripts/services.sh start)"
fi
# The whole suite twice: with FUSE passthrough (the default where the kernel allows it) and
# with it off, as on a kernel or filesystem without it (mount --no-passthrough).
echo "== pytest (passthrough on)" >&2
ARTFS_PASSTHROUGH=1 .venv/bin/pytest "$@"
echo "== pytest (passthrough off)" >&2
ARTFS_PASSTHROUGH=0 .venv/bin/pytest "$@"
