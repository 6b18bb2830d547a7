#!/usr/bin/env bash
# Build .device-bundle/: what artfs needs to run on a lent GPU host that has no network,
# no Python 3.11, no pyfuse3 and no fusermount3 (see ../shared/notes/device.md).
#
#     scripts/device_bundle.sh            # here, after scripts/setup.sh
#     # then, with the device tool:  run  command="bash scripts/bench_device.sh"
#     #                                   carry=[".device-bundle"]  timeout_s=560
#
# Contents (all plain files, no links; under 64 MiB together with the working tree):
#   bin/python3.11          Debian's /usr/bin/python3.11
#   bin/fusermount3         /usr/bin/fusermount3 (artfs umount calls it)
#   bin/artfs-python, bin/artfs   launchers that set PYTHONHOME/PYTHONPATH/LD_LIBRARY_PATH/PATH
#                           for that one process (never set them globally there: the
#                           machine's own python3 would break)
#   lib/python3.11/         its standard library, trimmed (no test, config-*, idlelib, ...)
#   site/                   runtime dependencies (pip install --target, pinned to .venv's
#                           versions; no boto3/psycopg: SQLite + local blobs import neither)
#                           and the pyfuse3 with passthrough built here into .venv
#   fuselib/                the libfuse 3.17 that pyfuse3 was built against (.venv/fuse/lib)
#   syslib/                 shared libraries the interpreter's extension modules link
#                           (libssl, libsqlite3, ...): used there only for those the machine
#                           lacks (scripts/bench_device.sh decides)
#   MANIFEST                versions, sizes, the commit it was built at
# artfs itself is not copied: the launchers put the repository root (the bundle's parent)
# first on PYTHONPATH, so the code that travels with the working tree is the code measured.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-.device-bundle}
VENV=.venv
PY=${PYTHON311:-/usr/bin/python3.11}
LIMIT=$((64 << 20))

if [ ! -x "$PY" ]; then
    echo "device_bundle: $PY missing; installing python3.11" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3.11 >/dev/null
fi
[ -x "$VENV/bin/python" ] && [ -d "$VENV/fuse/lib" ] || {
    echo "device_bundle: no $VENV with libfuse; run scripts/setup.sh first" >&2
    exit 1
}
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
[ -f "$SITE/pyfuse3/__init__.cpython-311-x86_64-linux-gnu.so" ] || {
    echo "device_bundle: no built pyfuse3 in $SITE" >&2
    exit 1
}
# the bundle's interpreter must be ABI-compatible with the pyfuse3 built in .venv
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "device_bundle: $PY is not Python 3.11" >&2
    exit 1
}

TMP="$OUT.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"/{bin,lib,site,fuselib,syslib}

# --- the interpreter and a trimmed standard library -------------------------------------------
cp -L "$PY" "$TMP/bin/python3.11"
STDLIB=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
DYNLOAD=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("platstdlib"))')/lib-dynload
mkdir -p "$TMP/lib/python3.11"
tar -C "$STDLIB" -chf - \
    --exclude='./test' --exclude='./config-3.11*' --exclude='__pycache__' --exclude='./idlelib' \
    --exclude='./tkinter' --exclude='./turtledemo' --exclude='./turtle.py' --exclude='./ensurepip' \
    --exclude='./lib2to3' --exclude='./pydoc_data' --exclude='./distutils' \
    --exclude='./site-packages' --exclude='./dist-packages' --exclude='./lib-dynload' \
    --exclude='./sitecustomize.py' --exclude='*/tests' --exclude='*/idle_test' . |
    tar -C "$TMP/lib/python3.11" -xf -
# extension modules, without those for tests, Tk, curses, readline, dbm and NIS
mkdir -p "$TMP/lib/python3.11/lib-dynload"
for so in "$DYNLOAD"/*.so; do
    case "$(basename "$so")" in
    _test* | _xxtestfuzz* | xxlimited* | _ctypes_test* | _tkinter* | _curses* | readline* | \
        _dbm* | _gdbm* | nis* | audioop* | ossaudiodev* | _crypt*) continue ;;
    esac
    cp -L "$so" "$TMP/lib/python3.11/lib-dynload/"
done

# --- runtime dependencies, pinned to what .venv runs ------------------------------------------
"$VENV/bin/python" - >"$TMP/requirements.txt" <<'EOF'
import importlib.metadata as md
import re

from packaging.markers import Marker

# pyfuse3 comes built from .venv; artfs from the working tree; S3/PostgreSQL are not used
SKIP = {"artfs", "pyfuse3", "boto3", "psycopg", "psycopg-pool", "psycopg-binary"}
seen: dict[str, str] = {}


def walk(name: str) -> None:
    key = name.lower().replace("_", "-")
    if key in seen:
        return
    dist = md.distribution(name)
    seen[key] = dist.version
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        if marker and ("extra" in marker or not Marker(marker).evaluate()):
            continue
        dep = re.split(r"[ <>=!~\[(]", spec.strip(), maxsplit=1)[0]
        if dep.lower().replace("_", "-") not in SKIP:
            walk(dep)


walk("artfs")
for key, version in sorted(seen.items()):
    if key not in SKIP:
        print(f"{key}=={version}")
EOF
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --target "$TMP/site" -r "$TMP/requirements.txt" 2>&1 |
    { grep -v "^WARNING: Location" >&2 || true; }  # (noise from this host's pip config)
rm -rf "$TMP/site/bin" "$TMP/site/trio/_tests"
# pyfuse3 with passthrough (scripts/build_fuse.sh), without its C/Cython sources
mkdir -p "$TMP/site/pyfuse3"
for f in "$SITE"/pyfuse3/*.so "$SITE"/pyfuse3/*.py "$SITE"/pyfuse3/*.pyi "$SITE"/pyfuse3/py.typed; do
    [ -e "$f" ] && cp -L "$f" "$TMP/site/pyfuse3/"
done
cp -rL "$SITE"/pyfuse3-*.dist-info "$TMP/site/"
cp -L "$VENV/fuse/lib/libfuse3.so.4" "$TMP/fuselib/libfuse3.so.4"
if command -v strip >/dev/null; then
    strip --strip-unneeded "$TMP/site/pyfuse3/"*.so "$TMP/fuselib/libfuse3.so.4"
fi

# --- fusermount3 and the shared libraries the interpreter needs beyond glibc --------------
cp -L "$(command -v fusermount3)" "$TMP/bin/fusermount3"
chmod 755 "$TMP/bin/fusermount3"  # (no setuid bit: root there)
{
    ldd "$TMP/bin/python3.11" "$TMP/bin/fusermount3" "$TMP/fuselib/libfuse3.so.4" \
        "$TMP/lib/python3.11/lib-dynload/"*.so "$TMP/site/pyfuse3/"*.so 2>/dev/null || true
} | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r soname path; do
        case "$soname" in
        # glibc (the machine's is newer) and what the bundle itself provides
        libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
            libutil.so.* | ld-linux*.so.* | libfuse3.so.*) continue ;;
        esac
        cp -L "$path" "$TMP/syslib/$soname"
    done

# --- launchers --------------------------------------------------------------------------------
cat >"$TMP/bin/artfs-python" <<'EOF'
#!/bin/sh
# The bundle's Python 3.11 with artfs importable: repository root (the bundle's parent, or
# $ARTFS_REPO) first, then the bundled dependencies. The variables are set for this process
# and its children only. $ARTFS_BUNDLE_LIBS: extra library directories (scripts/bench_device.sh
# links there the syslib/ libraries the machine lacks).
B=$(cd "$(dirname "$0")/.." && pwd)
REPO=${ARTFS_REPO:-$(dirname "$B")}
export PYTHONHOME="$B"
export PYTHONPATH="$REPO:$B/site"
export PYTHONNOUSERSITE=1
export LD_LIBRARY_PATH="$B/fuselib${ARTFS_BUNDLE_LIBS:+:$ARTFS_BUNDLE_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
case ":$PATH:" in *":$B/bin:"*) ;; *) export PATH="$B/bin:$PATH" ;; esac
exec "$B/bin/python3.11" "$@"
EOF
cat >"$TMP/bin/artfs" <<'EOF'
#!/bin/sh
exec "$(dirname "$0")/artfs-python" -m artfs.cli "$@"
EOF
chmod 755 "$TMP/bin/"*

# --- check it here: imports, and no file of the host's Python leaks in ------------------------
probe=$(env -i PATH=/usr/bin:/bin HOME="$HOME" BUNDLE="$(cd "$TMP" && pwd)" REPO="$REPO" \
    "$TMP/bin/artfs-python" -c '
import os, sys, ssl, sqlite3, hashlib, ctypes, lzma, bz2, json, uuid
import trio, httpx, hypercorn, starlette, cachetools, pyfuse3, artfs.cli, artfs.server
assert hasattr(pyfuse3, "passthrough_granted"), "pyfuse3 without passthrough"
ok = (os.environ["BUNDLE"] + "/", os.environ["REPO"] + "/artfs/")
bad = [f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))
       and not os.path.realpath(f).startswith(ok)]
assert not bad, bad
print(sys.version.split()[0])
')
echo "device_bundle: imports fine ($probe)" >&2

{
    echo "built $(date -u +%FT%TZ) on $(uname -srm) at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "python: $PY ($("$PY" -V 2>&1)); stdlib from $STDLIB"
    echo "libfuse: $(readlink -f "$VENV/fuse/lib/libfuse3.so.4")"
    echo "dependencies:"
    sed 's/^/  /' "$TMP/requirements.txt"
    echo "  pyfuse3 (built with passthrough) from $SITE"
    echo "syslib: $(cd "$TMP/syslib" && echo *)"
    du -sh "$TMP"/* | sed "s#$TMP/##; s/^/size: /"
} >"$TMP/MANIFEST"

rm -rf "$OUT"
mv "$TMP" "$OUT"

# --- size: the bundle plus what else travels (tracked and untracked, not ignored) ---------
bundle=$(du -sb "$OUT" | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((bundle + tree))
printf 'device_bundle: %s: %d MiB; with the working tree: %d MiB (limit 64 MiB)\n' \
    "$OUT" $((bundle >> 20)) $((total >> 20)) >&2
if [ "$total" -ge "$LIMIT" ]; then
    echo "device_bundle: too large for the device tool's 64 MiB" >&2
    exit 1
fi
