#!/usr/bin/env bash
# Install everything artfs needs on a fresh Debian machine: system packages for FUSE,
# a virtualenv in .venv with libfuse 3.17 and a pyfuse3 with FUSE passthrough built into it
# (scripts/build_fuse.sh), artfs (editable) and its development tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(fuse3 pkg-config attr curl gcc patch xz-utils rsync chromium chromium-driver)  # chromium: tests/test_ui_browser.py
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: artfs needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
./scripts/build_fuse.sh .venv
stamp=.venv/.artfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import artfs, pyfuse3, trio, httpx' 
    touch "$stamp"
fi
