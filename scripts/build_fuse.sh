#!/usr/bin/env bash
# Build libfuse 3.17 and a pyfuse3 with FUSE passthrough (and READ replies from a file) into
# the project's virtualenv.
#
#   scripts/build_fuse.sh VENV        (run by scripts/setup.sh; idempotent)
#
# Why: FUSE passthrough (the kernel reads and writes a backing file itself, no daemon round
# trip) needs libfuse >= 3.17 and backing ids in pyfuse3; Debian 12 ships libfuse 3.14 and
# pyfuse3 has no backing ids (docs/decisions.md, "FUSE passthrough in pyfuse3").
#   1. libfuse: Debian's source package fuse3 3.17.2 (trixie), fetched by apt-get through a
#      temporary source list (the system's apt configuration is left as it is), with Debian's
#      patches applied; built with meson and ninja from PyPI into VENV/fuse.
#   2. pyfuse3: the released 3.5.0 sdist from PyPI, patched by scripts/pyfuse3_passthrough.py,
#      built against VENV/fuse (found through pkg-config, run-path set) into VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(realpath "$1")
FUSE_VERSION=3.17.2
FUSE_DEB=3.17.2-3
PYFUSE3_VERSION=3.5.0
prefix="$venv/fuse"
stamp="$venv/.artfs-fuse-$FUSE_VERSION-pyfuse3-$PYFUSE3_VERSION-$(sha256sum scripts/pyfuse3_passthrough.py | cut -c1-12)"
py="$venv/bin/python"

if [ -f "$stamp" ] && "$py" -c 'import pyfuse3, sys; sys.exit(not hasattr(pyfuse3, "splice_write_granted"))' 2>/dev/null; then
    exit 0
fi
say() { echo "setup: $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$prefix/lib/pkgconfig/fuse3.pc" ] || ! grep -q "Version: $FUSE_VERSION" "$prefix/lib/pkgconfig/fuse3.pc"; then
    say "fetching Debian's source of fuse3 $FUSE_DEB (temporary apt source list)"
    mkdir -p "$work/apt/lists/partial" "$work/apt/parts" "$work/src"
    echo "deb-src http://deb.debian.org/debian trixie main" >"$work/apt/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o "Dir::Etc::sourceparts=$work/apt/parts"
        -o "Dir::State::Lists=$work/apt/lists" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only -qq "fuse3=$FUSE_DEB" >/dev/null)
    tar xzf "$work/src/fuse3_$FUSE_VERSION.orig.tar.gz" -C "$work/src"
    tar xJf "$work/src/fuse3_$FUSE_DEB.debian.tar.xz" -C "$work/src/fuse-$FUSE_VERSION"
    src="$work/src/fuse-$FUSE_VERSION"
    while read -r p; do
        [ -n "$p" ] && [ "${p#\#}" = "$p" ] && patch -s -p1 -d "$src" <"$src/debian/patches/$p"
    done <"$src/debian/patches/series"
    say "building libfuse $FUSE_VERSION into $prefix (meson, ninja)"
    "$py" -m pip install -q meson ninja 2>&1 | grep -v "^WARNING: Location" || true
    PATH="$venv/bin:$PATH" meson setup "$work/build" "$src" --prefix="$prefix" --libdir=lib \
        -Dutils=false -Dexamples=false -Dtests=false -Dinitscriptdir= >/dev/null
    PATH="$venv/bin:$PATH" ninja -C "$work/build" install >/dev/null
fi

say "building pyfuse3 $PYFUSE3_VERSION with passthrough against libfuse $FUSE_VERSION"
"$py" -m pip download -q --no-deps --no-binary :all: "pyfuse3==$PYFUSE3_VERSION" -d "$work/pyfuse3" 2>&1 | grep -v "^WARNING: Location" || true
tar xzf "$work/pyfuse3/pyfuse3-$PYFUSE3_VERSION.tar.gz" -C "$work/pyfuse3"
"$py" scripts/pyfuse3_passthrough.py "$work/pyfuse3/pyfuse3-$PYFUSE3_VERSION"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LDFLAGS="-Wl,-rpath,$prefix/lib" \
    "$py" -m pip install -q --no-deps --force-reinstall "$work/pyfuse3/pyfuse3-$PYFUSE3_VERSION" 2>&1 |
    grep -v '^WARNING: Location' || true
# --no-deps above keeps the reinstall to pyfuse3 alone; its one runtime dependency is trio,
# which a fresh venv does not have yet (the import below needs it).
"$py" -m pip install -q "trio>=0.15" 2>&1 | grep -v '^WARNING: Location' || true
"$py" -c 'import pyfuse3; assert hasattr(pyfuse3, "backing_open") and hasattr(pyfuse3, "splice_write_granted"), "pyfuse3 built without our patch"'
rm -f "$venv"/.artfs-fuse-*
touch "$stamp"
say "libfuse $FUSE_VERSION and pyfuse3 $PYFUSE3_VERSION (passthrough) are in $venv"
